//! Whole-model fidelity against HF transformers: every fixture under assets/models carries
//! transformers' logits at every prompt position (prefill), per-step decode logits (the demo
//! model: its prefill logits stand for both) and a 24-token greedy continuation, all computed
//! in f32 from the saved checkpoint (the demo: its q8_0 weights dequantized).

use std::path::{Path, PathBuf};

mod common;

use common::{compare, compare_within};
use safetensors::SafeTensors;
use wmoe::kernels::KvType;
use wmoe::{gpu::testing, LogitsMode, Model, Session, SessionOptions};

struct Reference {
    prompt: Vec<u32>,
    prefill: Vec<f32>,
    decode: Vec<f32>,
    greedy: Vec<u32>,
}

fn read_reference(dir: &Path) -> Reference {
    let bytes = std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("valid reference");
    let i32s = |n: &str| -> Vec<u32> {
        bytemuck::pod_collect_to_vec::<u8, i32>(st.tensor(n).unwrap().data())
            .into_iter()
            .map(|x| x as u32)
            .collect()
    };
    let f32s = |n: &str| -> Vec<f32> { bytemuck::pod_collect_to_vec(st.tensor(n).unwrap().data()) };
    Reference {
        prompt: i32s("prompt_tokens"),
        prefill: f32s("prefill_logits"),
        // The demo's reference stores one set: transformers' decode through its cache equals
        // its prefill there to 1e-6 (checked by tools/train_demo.py when it wrote the file).
        decode: match st.tensor("decode_logits") {
            Ok(_) => f32s("decode_logits"),
            Err(_) => f32s("prefill_logits"),
        },
        greedy: i32s("greedy_tokens"),
    }
}

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("reference.safetensors").exists())
        .collect();
    v.sort();
    assert!(
        v.len() >= 3,
        "expected at least three fixtures in {}",
        root.display()
    );
    v
}

#[test]
fn prefill_decode_and_greedy_match_transformers() {
    let Some(ctx) = testing::context() else {
        return;
    };
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let r = read_reference(&dir);
        let mut model = Model::load(ctx, &dir, false).unwrap_or_else(|e| panic!("{name}: {e}"));
        let v = model.config.vocab;
        let n = r.prompt.len();
        // Prefill in one chunk and in odd-sized chunks: both must match.
        for chunk in [512, 7] {
            let mut s = Session::new(
                ctx,
                &model,
                SessionOptions {
                    max_context: n + 32,
                    chunk,
                    kv: KvType::F32,
                },
            )
            .unwrap();
            let got = s.prefill(&r.prompt, LogitsMode::All).unwrap();
            compare(
                &name,
                &format!("prefill (chunk {chunk})"),
                &got,
                &r.prefill,
                v,
            );
        }
        // The f16 KV cache stays within the same bound (its rounding is the only difference).
        let mut s = Session::new(
            ctx,
            &model,
            SessionOptions {
                max_context: n + 32,
                chunk: 64,
                kv: KvType::F16,
            },
        )
        .unwrap();
        let got = s.prefill(&r.prompt, LogitsMode::All).unwrap();
        compare(&name, "prefill (f16 KV)", &got, &r.prefill, v);
        decode_and_greedy(ctx, &model, &r, &name, "");
        // Tokens are read back one step late: a stop at EOS still returns exactly the tokens
        // up to and including the first EOS.
        let stop = r.greedy[r.greedy.len() / 2];
        let first = r.greedy.iter().position(|&t| t == stop).unwrap();
        let eos = std::mem::replace(&mut model.config.eos, vec![stop]);
        let mut s = session(ctx, &model, n + 32);
        let got = s.generate(&r.prompt, r.greedy.len(), false).unwrap();
        assert_eq!(got, r.greedy[..=first], "{name}: greedy stops at EOS");
        drop(s);
        model.config.eos = eos;
    }
}

/// The q8_0 KV cache (llama.cpp's blocks) within 2e-2 of max |logit| through chunked prefill
/// and one-token decode, and the same greedy continuation, on the fixtures whose heads are
/// whole blocks (head_dim a multiple of 32, as in every LFM2 model; heads of 16 or 24 values
/// round coarser: 3.8e-2 already at the first position of dense-f16-legacy).
#[test]
fn q8_0_kv_matches_transformers_within_its_bound() {
    let Some(ctx) = testing::context() else {
        return;
    };
    let mut checked = 0;
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let r = read_reference(&dir);
        let model = Model::load(ctx, &dir, false).unwrap_or_else(|e| panic!("{name}: {e}"));
        if !model.config.head_dim.is_multiple_of(32) {
            continue;
        }
        checked += 1;
        let (v, n) = (model.config.vocab, r.prompt.len());
        let opts = SessionOptions {
            max_context: n + 32,
            chunk: 7,
            kv: KvType::Q8_0,
        };
        let mut s = Session::new(ctx, &model, opts).unwrap();
        let got = s.prefill(&r.prompt, LogitsMode::All).unwrap();
        compare_within(&name, "prefill (q8_0 KV)", &got, &r.prefill, v, 2e-2);
        let mut s = Session::new(ctx, &model, opts).unwrap();
        let got: Vec<f32> = r
            .prompt
            .iter()
            .flat_map(|&t| s.decode(t).unwrap())
            .collect();
        compare_within(&name, "decode (q8_0 KV)", &got, &r.decode, v, 2e-2);
        let mut s = Session::new(ctx, &model, opts).unwrap();
        let greedy = s.generate(&r.prompt, r.greedy.len(), true).unwrap();
        assert_eq!(greedy, r.greedy, "{name}: greedy continuation (q8_0 KV)");
    }
    assert!(checked > 0, "no fixture with whole q8_0 blocks per head");
}

/// The model compiled into the binary is the trained demo checkpoint of `assets/models/demo`:
/// loaded from the bundled bytes, its prefill, decode and greedy tokens match that directory's
/// transformers reference.
#[test]
fn the_bundled_model_matches_the_demo_reference() {
    let Some(ctx) = testing::context() else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/models")
        .join(wmoe::BUNDLED_MODEL.name);
    assert!(dir.ends_with("demo"), "{}", dir.display());
    let r = read_reference(&dir);
    let model = Model::load_bundled(ctx, None, false).unwrap();
    let mut s = session(ctx, &model, r.prompt.len() + 32);
    let got = s.prefill(&r.prompt, LogitsMode::All).unwrap();
    compare("bundled", "prefill", &got, &r.prefill, model.config.vocab);
    decode_and_greedy(ctx, &model, &r, "bundled", "");
}

/// The same comparison on a device whose bindings are capped at 32 KiB: embedding, LM head and
/// expert stacks are split into many pages, expert windows dispatch once per page, and the
/// chunk shrinks to fit the scratch rows.
#[test]
fn paged_weights_give_the_same_logits() {
    if testing::context().is_none() {
        return;
    }
    let mut opts = wmoe::DeviceOptions::from_env();
    opts.switches.max_binding = Some(32 << 10);
    let ctx = &wmoe::GpuContext::new(&opts).unwrap();
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let r = read_reference(&dir);
        let model = Model::load(ctx, &dir, false).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            model.weights.lm_head().pages.len() > 1,
            "{name}: LM head should be paged"
        );
        let v = model.config.vocab;
        let n = r.prompt.len();
        let mut s = Session::new(
            ctx,
            &model,
            SessionOptions {
                max_context: n + 1,
                chunk: 512,
                kv: KvType::F32,
            },
        )
        .unwrap();
        assert!(
            s.options().chunk < n.max(40),
            "{name}: chunk should shrink to fit capped rows"
        );
        let got = s.prefill(&r.prompt, LogitsMode::All).unwrap();
        compare(&name, "paged prefill", &got, &r.prefill, v);
        let last = s.decode(r.greedy[0]).unwrap();
        let mut s2 = Session::new(
            ctx,
            &model,
            SessionOptions {
                max_context: n + 1,
                chunk: 512,
                kv: KvType::F32,
            },
        )
        .unwrap();
        s2.prefill(&r.prompt, LogitsMode::Last).unwrap();
        assert_eq!(
            s2.decode(r.greedy[0]).unwrap(),
            last,
            "{name}: decode after paged prefill"
        );
        // Token by token through every KV page boundary (pages of at most the cap).
        decode_and_greedy(ctx, &model, &r, &name, "paged ");
    }
}

/// KV pages are allocated as the sequence grows: none before the first token, then about
/// what the positions so far need (pages of at most 32 KiB here), far below the context.
#[test]
fn kv_pages_grow_with_the_sequence() {
    if testing::context().is_none() {
        return;
    }
    let mut opts = wmoe::DeviceOptions::from_env();
    opts.switches.max_binding = Some(32 << 10);
    let ctx = wmoe::GpuContext::new(&opts).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/dense-bf16");
    let r = read_reference(&dir);
    let model = Model::load(&ctx, &dir, false).unwrap();
    let c = &model.config;
    let layers = c.attention.iter().filter(|a| **a).count() as u64;
    let per_position = 2 * layers * (c.n_kv_heads * c.head_dim * 4) as u64;
    let page = (32 << 10) / (c.n_kv_heads * c.head_dim * 4) as u64;
    let mut s = session(&ctx, &model, 4096);
    assert_eq!(s.kv_bytes(), 0, "no KV before the first token");
    let n = r.prompt.len() as u64;
    s.prefill(&r.prompt, LogitsMode::Last).unwrap();
    let held = s.kv_bytes();
    assert!(
        held >= n * per_position && held <= (n + page) * per_position,
        "{} bytes for {n} positions ({per_position} each, pages of {page})",
        held
    );
    assert!(held < 4096 * per_position / 4);
}

/// The GPU kernels (K-split matvec with the norm folded in, K-split expert down combine,
/// tiled prefill matmul and prefill attention, row-major pages, q6_K as is) on this CPU device, with the fused
/// decode kernels and without them: the same bounds.
#[test]
fn gpu_kernels_on_a_cpu_device_match_transformers() {
    if testing::context().is_none() {
        return;
    }
    for no_fusion in [false, true] {
        let mut opts = wmoe::DeviceOptions::from_env();
        opts.switches.no_lane_rows = true;
        opts.switches.no_fusion = no_fusion;
        gpu_kernels_case(&wmoe::GpuContext::new(&opts).unwrap());
    }
}

fn gpu_kernels_case(ctx: &wmoe::GpuContext) {
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let r = read_reference(&dir);
        let model = Model::load(ctx, &dir, false).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (v, n) = (model.config.vocab, r.prompt.len());
        let mut s = Session::new(
            ctx,
            &model,
            SessionOptions {
                max_context: n + 1,
                chunk: 7,
                kv: KvType::F32,
            },
        )
        .unwrap();
        let got = s.prefill(&r.prompt, LogitsMode::All).unwrap();
        compare(&name, "GPU-kernel prefill", &got, &r.prefill, v);
        decode_and_greedy(ctx, &model, &r, &name, "GPU-kernel ");
    }
}

/// Token-by-token decode logits and the greedy continuation against the reference.
fn decode_and_greedy(ctx: &wmoe::GpuContext, model: &Model, r: &Reference, name: &str, what: &str) {
    let (v, n) = (model.config.vocab, r.prompt.len());
    let mut s = session(ctx, model, n + 32);
    let got: Vec<f32> = r
        .prompt
        .iter()
        .flat_map(|&t| s.decode(t).unwrap())
        .collect();
    compare(name, &format!("{what}decode"), &got, &r.decode, v);
    let mut s = session(ctx, model, n + 32);
    let greedy = s.generate(&r.prompt, r.greedy.len(), true).unwrap();
    assert_eq!(greedy, r.greedy, "{name}: {what}greedy continuation");
}

/// A session with a 64-token chunk and an f32 KV cache.
fn session<'m>(
    ctx: &'m wmoe::gpu::GpuContext,
    model: &'m Model,
    max_context: usize,
) -> Session<'m> {
    Session::new(
        ctx,
        model,
        SessionOptions {
            max_context,
            chunk: 64,
            kv: KvType::F32,
        },
    )
    .unwrap()
}
