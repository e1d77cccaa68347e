//! Quantized models: for every format, a model quantized while loading (and the same model
//! written by `quantize` and loaded back) gives the logits of the forward pass with the same
//! dequantized weights in f32, for prefill and decode.

mod common;

use std::path::{Path, PathBuf};

use common::compare;

use wmoe::gpu::testing;
use wmoe::kernels::KvType;
use wmoe::model::quantize::quantize_checkpoint;
use wmoe::model::synth::{synth, synth_config};
use wmoe::model::QuantPlan;
use wmoe::{GpuContext, LogitsMode, Model, Session, SessionOptions};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wmoe-quant-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

const PROMPT: [u32; 19] = [
    1, 17, 300, 42, 5, 99, 128, 7, 255, 256, 13, 400, 31, 2, 77, 501, 64, 8, 90,
];

/// Prefill logits of every position, then decode logits of two more tokens.
fn run(ctx: &GpuContext, model: &Model) -> (Vec<f32>, Vec<f32>) {
    let opts = SessionOptions {
        max_context: 64,
        chunk: 8,
        kv: KvType::F32,
    };
    let mut s = Session::new(ctx, model, opts).unwrap();
    let prefill = s.prefill(&PROMPT, LogitsMode::All).unwrap();
    let mut decode = s.decode(3).unwrap();
    decode.extend(s.decode(11).unwrap());
    (prefill, decode)
}

#[test]
fn every_format_matches_its_dequantized_f32_model() {
    let Some(ctx) = testing::context() else {
        return;
    };
    let base = tmp("base");
    synth(
        &base,
        &synth_config("test-256", None).unwrap(),
        None,
        7,
        false,
    )
    .unwrap();
    let base_model = Model::load(ctx, &base, false).unwrap();
    let (p_base, _) = run(ctx, &base_model);
    let base_bytes = base_model.weights.gpu_bytes();
    drop(base_model);
    for plan in [
        "q8_0", "q4_0", "q4_1", "q5_0", "q4_k", "q5_k", "q6_k", "q4_k_m",
    ] {
        let plan = QuantPlan::parse(plan).unwrap();
        let (q_dir, f_dir) = (
            tmp(&format!("{}-q", plan.name())),
            tmp(&format!("{}-f32", plan.name())),
        );
        let on_load = Model::load_with(ctx, &base, Some(plan), false).unwrap();
        let v = on_load.config.vocab;
        let (pa, da) = run(ctx, &on_load);
        // The test proves something only if quantization really changed weights and logits.
        assert!(
            on_load.weights.gpu_bytes() < base_bytes,
            "{}: not smaller than bf16",
            plan.name()
        );
        let moved = pa
            .iter()
            .zip(&p_base)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(
            moved > 1e-3,
            "{}: logits identical to the bf16 model ({moved})",
            plan.name()
        );
        // Written quantized, loaded without re-quantizing: bit-identical weights.
        quantize_checkpoint(&base, plan, &q_dir).unwrap();
        let stored = Model::load(ctx, &q_dir, false).unwrap();
        assert_eq!(stored.weights.gpu_bytes(), on_load.weights.gpu_bytes());
        let (pb, db) = run(ctx, &stored);
        assert_eq!(
            pa,
            pb,
            "{}: pre-quantized checkpoint differs from quantize-on-load",
            plan.name()
        );
        assert_eq!(da, db);
        // The same weights dequantized to f32.
        quantize_checkpoint(
            &q_dir,
            QuantPlan::Uniform(wmoe::gpu::WeightFormat::F32),
            &f_dir,
        )
        .unwrap();
        let f32_model = Model::load(ctx, &f_dir, false).unwrap();
        let (pf, df) = run(ctx, &f32_model);
        let w1 = compare(&plan.name(), "prefill", &pa, &pf, v);
        let w2 = compare(&plan.name(), "decode", &da, &df, v);
        eprintln!("{}: vs dequantized f32: worst max|Δ|/max|ref| prefill {w1:.2e} decode {w2:.2e}; vs bf16 max |Δ| {moved:.3}; weights {:.2} MiB (bf16 {:.2} MiB)", plan.name(), on_load.weights.gpu_bytes() as f64 / 1048576.0, base_bytes as f64 / 1048576.0);
        for d in [q_dir, f_dir] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    let _ = std::fs::remove_dir_all(base);
}

/// The entries of `tmp()`'s directory that belong to the output `name`.
fn leftovers(name: &str) -> Vec<String> {
    let out = tmp(name);
    let prefix = format!(".{}.tmp-", out.file_name().unwrap().to_string_lossy());
    std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix) || n == &out.file_name().unwrap().to_string_lossy())
        .collect()
}

#[test]
fn quantize_refuses_an_existing_output_and_leaves_nothing_behind() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/tiny-moe");
    let out = tmp("exists");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("mine"), "x").unwrap();
    let e = quantize_checkpoint(&src, QuantPlan::parse("q8_0").unwrap(), &out).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    let bad = tmp("bad-src");
    let e =
        quantize_checkpoint(&bad, QuantPlan::parse("q8_0").unwrap(), &tmp("never")).unwrap_err();
    assert!(e.to_string().contains("config.json"), "{e}");
    assert!(leftovers("never").is_empty());
    let _ = std::fs::remove_dir_all(out);
}

/// A tensor that fails while the output is being written (NaN in the last row of the last
/// quantized matrix): the error names it, and neither the output nor its temporary remains.
#[test]
fn a_quantize_failing_mid_write_leaves_nothing_behind() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/tiny-moe");
    let dir = tmp("nan-src");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let victim = names
        .iter()
        .rev()
        .find(|n| wmoe::model::Role::of_name(n).is_some())
        .unwrap()
        .clone();
    let mut data: Vec<(String, Vec<u8>, safetensors::Dtype, Vec<usize>)> = names
        .iter()
        .map(|n| {
            let t = st.tensor(n).unwrap();
            (n.clone(), t.data().to_vec(), t.dtype(), t.shape().to_vec())
        })
        .collect();
    let v = data.iter_mut().find(|d| d.0 == victim).unwrap();
    let nan: &[u8] = match v.2 {
        safetensors::Dtype::F32 => &[0, 0, 0xc0, 0x7f],
        _ => &[0xc0, 0x7f],
    };
    let n = v.1.len();
    v.1[n - nan.len()..].copy_from_slice(nan);
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, b, d, s)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let e = quantize_checkpoint(&dir, QuantPlan::parse("q8_0").unwrap(), &tmp("nan-out"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("tensor '{victim}': row ")) && e.contains("holds NaN"),
        "{e}"
    );
    assert!(
        leftovers("nan-out").is_empty(),
        "{:?}",
        leftovers("nan-out")
    );
    let _ = std::fs::remove_dir_all(dir);
}
