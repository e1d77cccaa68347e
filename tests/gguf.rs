//! GGUF support: the reader against gguf-py's own files (assets/gguf, written by
//! tools/make_gguf_fixtures.py), the config and Hugging Face tensor names it yields, the
//! tokenizer rebuilt from GGUF metadata, whole-model logits of GGUF fixtures against
//! transformers, and clear errors for broken or unsupported files.

mod common;

use std::path::{Path, PathBuf};

use common::compare;

use safetensors::SafeTensors;
use wmoe::kernels::KvType;
use wmoe::model::gguf::{GgufFile, GgufSource, GgufValue};
use wmoe::model::gguf_tokenizer::tokenizer_from_gguf;
use wmoe::model::{Checkpoint, Config, TensorSource};
use wmoe::{gpu::testing, LogitsMode, Model, Session, SessionOptions};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

fn gguf(name: &str) -> PathBuf {
    assets().join("gguf").join(name)
}

fn tmpfile(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wmoe-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// The model fixtures: every `<name>.gguf` with a `<name>.reference.safetensors`.
fn model_fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(assets().join("gguf"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf") && reference_path(p).exists())
        .collect();
    v.sort();
    assert!(v.len() >= 2, "expected GGUF model fixtures in assets/gguf");
    v
}

fn reference_path(gguf: &Path) -> PathBuf {
    gguf.with_extension("reference.safetensors")
}

fn read_reference(gguf: &Path) -> (Vec<u32>, Vec<f32>) {
    let bytes = std::fs::read(reference_path(gguf)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let prompt =
        bytemuck::pod_collect_to_vec::<u8, i32>(st.tensor("prompt_tokens").unwrap().data())
            .into_iter()
            .map(|x| x as u32)
            .collect();
    let logits = bytemuck::pod_collect_to_vec(st.tensor("prefill_logits").unwrap().data());
    (prompt, logits)
}

#[test]
fn reads_every_metadata_value_type() {
    let g = GgufFile::open(&gguf("formats.gguf")).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 32);
    assert_eq!(g.architecture(), Some("wmoe-formats"));
    let v = |k: &str| g.get(k).unwrap_or_else(|| panic!("{k}")).clone();
    assert_eq!(v("test.u8"), GgufValue::U8(200));
    assert_eq!(v("test.i8"), GgufValue::I8(-100));
    assert_eq!(v("test.u16"), GgufValue::U16(60000));
    assert_eq!(v("test.i16"), GgufValue::I16(-30000));
    assert_eq!(v("test.u32"), GgufValue::U32(4_000_000_000));
    assert_eq!(v("test.i32"), GgufValue::I32(-2_000_000_000));
    assert_eq!(v("test.f32"), GgufValue::F32(0.25));
    assert_eq!(v("test.bool"), GgufValue::Bool(true));
    assert_eq!(v("test.string"), GgufValue::String("héllo wörld".into()));
    assert_eq!(v("test.u64"), GgufValue::U64((1 << 63) + 5));
    assert_eq!(v("test.i64"), GgufValue::I64(-(1 << 62)));
    assert_eq!(v("test.f64"), GgufValue::F64(1.0e-300));
    assert_eq!(
        v("test.array_i32"),
        GgufValue::Array(vec![
            GgufValue::I32(3),
            GgufValue::I32(0),
            GgufValue::I32(-2)
        ])
    );
    assert_eq!(
        v("test.array_str"),
        GgufValue::Array(
            ["a", "", "ccc"]
                .map(|s| GgufValue::String(s.into()))
                .to_vec()
        )
    );
    assert_eq!(
        v("test.array_f32"),
        GgufValue::Array(vec![GgufValue::F32(0.5), GgufValue::F32(-1.5)])
    );
    assert_eq!(
        v("test.array_u8"),
        GgufValue::Array(vec![GgufValue::U8(1), GgufValue::U8(2), GgufValue::U8(255)])
    );
    assert_eq!(
        v("test.array_nested"),
        GgufValue::Array(vec![
            GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(2)]),
            GgufValue::Array(vec![GgufValue::I32(3)]),
        ])
    );
    let t = g.tensor("f32_3d").unwrap();
    assert_eq!(t.ne, vec![5, 3, 2]);
    assert_eq!(t.shape(), vec![2, 3, 5]);
}

/// Every type wmoe reads, decoded by wmoe's block decoders, equals gguf-py's dequantization
/// stored beside it: the canonical layouts are GGUF's.
#[test]
fn block_layouts_match_gguf_py() {
    let g = GgufFile::open(&gguf("formats.gguf")).unwrap();
    let mut seen = Vec::new();
    for name in [
        "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k",
    ] {
        let t = g.tensor(name).unwrap();
        let (format, bytes) = g.tensor_data(t).unwrap();
        let cols = t.ne[0] as usize;
        let got: Vec<f32> = bytes
            .chunks_exact(format.row_bytes(cols))
            .flat_map(|r| format.dequant_row(r, cols))
            .collect();
        let d = g.tensor(&format!("{name}.dequant")).unwrap();
        let (_, want) = g.tensor_data(d).unwrap();
        let want: Vec<f32> = bytemuck::pod_collect_to_vec(want);
        assert_eq!(got.len(), want.len(), "{name}");
        let scale = want.iter().fold(0f32, |a, x| a.max(x.abs()));
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * scale,
                "{name} element {i}: wmoe {a}, gguf-py {b}"
            );
        }
        seen.push(format);
    }
    assert_eq!(seen.len(), wmoe::gpu::ALL_FORMATS.len() - 1, "all but f32");
}

#[test]
fn config_from_gguf_matches_config_json() {
    for (file, dir) in [
        ("tiny-moe-mixed.gguf", "tiny-moe"),
        ("dense-bf16.gguf", "dense-bf16"),
    ] {
        let g = GgufFile::open(&gguf(file)).unwrap();
        let got = Config::from_gguf(&g).unwrap();
        let want =
            Config::from_file(&assets().join("models").join(dir).join("config.json")).unwrap();
        assert_eq!(got, want, "{file}");
    }
    let g = GgufFile::open(&gguf("tiny-moe-mixed.gguf")).unwrap();
    assert_eq!(
        g.alignment, 64,
        "the mixed fixture uses general.alignment 64"
    );
    assert_eq!(g.data_offset % 64, 0);
}

/// Every Hugging Face tensor of the checkpoint is served under its name with its shape; an
/// unquantized GGUF gives the checkpoint's values exactly, a quantized one within the
/// quantization error (a wrong expert slice or transposition would be far off).
#[test]
fn gguf_source_serves_the_checkpoints_tensors() {
    for (file, dir, exact) in [
        ("dense-bf16.gguf", "dense-bf16", true),
        ("tiny-moe-mixed.gguf", "tiny-moe", false),
    ] {
        let src = GgufSource::open(&gguf(file)).unwrap();
        let ck = Checkpoint::open(&assets().join("models").join(dir)).unwrap();
        assert_eq!(src.names(), ck.names(), "{file}: tensor names");
        assert!(src.total_bytes() > 0);
        for name in ck.names() {
            let a = src.get(&name).unwrap();
            let b = ck.get(&name).unwrap();
            let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
            assert_eq!(squeeze(&a.shape), squeeze(&b.shape), "{file} {name}");
            let (x, y) = (a.to_f32().unwrap(), b.to_f32().unwrap());
            let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = x
                .iter()
                .zip(&y)
                .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            if exact || !a.format.is_quantized() {
                // F16 holds bf16 values exactly unless they are tiny (subnormal in f16)
                assert!(err <= 1e-4 * scale, "{file} {name} ({:?}): {err}", a.format);
            } else {
                assert!(
                    err <= 0.1 * scale,
                    "{file} {name} ({:?}): {err} of {scale}",
                    a.format
                );
            }
        }
    }
}

#[test]
fn tokenizer_from_gguf_metadata_matches_tokenizer_json() {
    let g = GgufFile::open(&gguf("tiny-moe-mixed.gguf")).unwrap();
    let ours = tokenizer_from_gguf(&g)
        .unwrap()
        .expect("tokenizer metadata");
    let hf =
        tokenizers::Tokenizer::from_file(assets().join("models/tiny-moe/tokenizer.json")).unwrap();
    assert_eq!(ours.get_vocab_size(true), hf.get_vocab_size(true));
    let texts = [
        "Hello",
        "Hello, world! The quick brown fox jumps over the lazy dog.",
        "In a mixture of experts, a router scores every expert for every token.",
        "Numbers like 1, 22, 333, 4444 and 65536; dates 2025-10-07 at 12:30.",
        "def main():\n    print(\"Hello, world!\")\n\n\treturn 0\r\n",
        "  leading and trailing spaces  ",
        "I'm sure you've seen THEY'LL and it's, we'd.",
        "<|im_start|>user\nWhat is the weather like today?<|im_end|>\n<|im_start|>assistant\n",
        "Unicode: héllo wörld, 日本語, emoji 🦀 and ß.",
    ];
    for t in texts {
        for special in [false, true] {
            let a = ours.encode(t, special).unwrap();
            let b = hf.encode(t, special).unwrap();
            assert_eq!(a.get_ids(), b.get_ids(), "{t:?} (special {special})");
            assert_eq!(
                ours.decode(a.get_ids(), true).unwrap(),
                hf.decode(b.get_ids(), true).unwrap(),
                "{t:?}"
            );
        }
    }
    // reference_text.json: "Hello" is one token
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(assets().join("models/tiny-moe/reference_text.json")).unwrap(),
    )
    .unwrap();
    let ids: Vec<u32> = serde_json::from_value(r["token_ids"].clone()).unwrap();
    assert_eq!(ours.encode("Hello", false).unwrap().get_ids(), &ids[..]);
    // a GGUF without tokenizer metadata has none
    let g = GgufFile::open(&gguf("dense-bf16.gguf")).unwrap();
    assert!(tokenizer_from_gguf(&g).unwrap().is_none());
}

// ---------------------------------------------------------------------------------------------
// Whole models
// ---------------------------------------------------------------------------------------------

#[test]
fn gguf_models_match_their_references() {
    let Some(ctx) = testing::context() else {
        return;
    };
    for path in model_fixtures() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let (prompt, want) = read_reference(&path);
        let model =
            Model::load_with(ctx, &path, None, false).unwrap_or_else(|e| panic!("{name}: {e}"));
        let v = model.config.vocab;
        let n = prompt.len();
        let opts = |chunk| SessionOptions {
            max_context: n + 8,
            chunk,
            kv: KvType::F32,
        };
        for chunk in [512, 7] {
            let mut s = Session::new(ctx, &model, opts(chunk)).unwrap();
            let got = s.prefill(&prompt, LogitsMode::All).unwrap();
            compare(&name, &format!("prefill (chunk {chunk})"), &got, &want, v);
        }
        let mut s = Session::new(ctx, &model, opts(64)).unwrap();
        let got: Vec<f32> = prompt.iter().flat_map(|&t| s.decode(t).unwrap()).collect();
        compare(&name, "decode", &got, &want, v);
    }
}

/// Every large tensor split into many pages (experts by whole experts) on a device capped at
/// 32 KiB per binding: the expert slices of stacked GGUF tensors land in the right pages.
#[test]
fn paged_gguf_model_gives_the_same_logits() {
    if testing::context().is_none() {
        return;
    }
    let mut opts = wmoe::DeviceOptions::from_env();
    opts.switches.max_binding = Some(32 << 10);
    let ctx = wmoe::GpuContext::new(&opts).unwrap();
    let path = gguf("tiny-moe-mixed.gguf");
    let (prompt, want) = read_reference(&path);
    let model = Model::load_with(&ctx, &path, None, false).unwrap();
    assert!(
        model.weights.lm_head().pages.len() > 1,
        "LM head should be paged"
    );
    let mut s = Session::new(
        &ctx,
        &model,
        SessionOptions {
            max_context: prompt.len(),
            chunk: 512,
            kv: KvType::F32,
        },
    )
    .unwrap();
    let got = s.prefill(&prompt, LogitsMode::All).unwrap();
    compare(
        "tiny-moe-mixed.gguf",
        "paged prefill",
        &got,
        &want,
        model.config.vocab,
    );
}

/// `wmoe generate --model FILE.gguf --prompt Hello` works, and a broken GGUF is a one-line
/// error with exit code 1.
#[test]
fn cli_runs_gguf_files() {
    if testing::context().is_none() {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_wmoe");
    let path = gguf("tiny-moe-mixed.gguf");
    let out = std::process::Command::new(bin)
        .args(["generate", "--model", path.to_str().unwrap()])
        .args([
            "--prompt",
            "Hello",
            "--max-tokens",
            "5",
            "--ignore-eos",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tokens"].as_array().unwrap().len(), 5);
    assert!(v["text"].is_string());

    let broken = patched("tiny-moe-mixed.gguf", "cli-iq2.gguf", |b| {
        set_type(b, "blk.3.ffn_down_exps.weight", 16)
    });
    let out = std::process::Command::new(bin)
        .args(["generate", "--model", broken.to_str().unwrap()])
        .args(["--tokens", "1,2,3", "--max-tokens", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_mentions(
        &err,
        &["blk.3.ffn_down_exps.weight", "IQ2_XXS", "does not support"],
    );
}

/// The GGUF tiny model tokenizes with the tokenizer rebuilt from its metadata (no
/// tokenizer.json beside the file) and generates.
#[test]
fn gguf_model_tokenizes_and_generates() {
    let Some(ctx) = testing::context() else {
        return;
    };
    let model = Model::load_with(ctx, &gguf("tiny-moe-mixed.gguf"), None, false).unwrap();
    assert!(model.tokenizer.is_some());
    assert_eq!(model.encode("Hello").unwrap(), vec![358]);
    let mut s = Session::new(
        ctx,
        &model,
        SessionOptions {
            max_context: 64,
            chunk: 64,
            kv: KvType::F32,
        },
    )
    .unwrap();
    let mut prompt = vec![model.config.bos.unwrap()];
    prompt.extend(model.encode("Hello").unwrap());
    let out = s.generate(&prompt, 8, true).unwrap();
    assert_eq!(out.len(), 8);
    assert!(model.decode(&out).unwrap().is_some());
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A copy of `src` with `edit` applied to its bytes.
fn patched(src: &str, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut b = std::fs::read(gguf(src)).unwrap();
    edit(&mut b);
    let p = tmpfile(name);
    std::fs::write(&p, b).unwrap();
    p
}

/// Byte offset just after the name of tensor info `name` (its n_dims field).
fn tensor_info_at(b: &[u8], name: &str) -> usize {
    let mut pat = (name.len() as u64).to_le_bytes().to_vec();
    pat.extend(name.as_bytes());
    b.windows(pat.len())
        .position(|w| w == pat)
        .unwrap_or_else(|| panic!("no tensor info {name}"))
        + pat.len()
}

/// Sets the ggml type id of tensor `name`.
fn set_type(b: &mut [u8], name: &str, ty: u32) {
    let p = tensor_info_at(b, name);
    let n_dims = u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) as usize;
    let q = p + 4 + 8 * n_dims;
    b[q..q + 4].copy_from_slice(&ty.to_le_bytes());
}

fn err_of<T>(r: wmoe::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} should mention {n:?}");
    }
}

#[test]
fn unsupported_tensor_types_are_named() {
    let iq = patched("tiny-moe-mixed.gguf", "iq2.gguf", |b| {
        set_type(b, "blk.3.ffn_down_exps.weight", 16)
    });
    let q2k = patched("tiny-moe-mixed.gguf", "q2k.gguf", |b| {
        set_type(b, "blk.2.attn_q.weight", 10)
    });
    for (path, tensor, hf, ty) in [
        (
            &iq,
            "blk.3.ffn_down_exps.weight",
            "model.layers.3.feed_forward.experts.0.w2.weight",
            "IQ2_XXS",
        ),
        (
            &q2k,
            "blk.2.attn_q.weight",
            "model.layers.2.self_attn.q_proj.weight",
            "Q2_K",
        ),
    ] {
        let src = GgufSource::open(path).unwrap();
        let msg = err_of(src.get(hf));
        assert_mentions(
            &msg,
            &[
                path.to_str().unwrap(),
                &format!("tensor '{tensor}'"),
                &format!("has type {ty}, which wmoe does not support"),
                "supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K",
            ],
        );
        if let Some(ctx) = testing::context() {
            let msg = err_of(Model::load_with(ctx, path, None, false));
            assert_mentions(&msg, &[tensor, ty, "does not support"]);
        }
    }
}

#[test]
fn truncated_files_name_the_file_and_tensor() {
    let len = std::fs::metadata(gguf("tiny-moe-mixed.gguf"))
        .unwrap()
        .len() as usize;
    let cut = patched("tiny-moe-mixed.gguf", "cut.gguf", |b| {
        b.truncate(len - 5000)
    });
    let msg = err_of(GgufFile::open(&cut));
    assert_mentions(
        &msg,
        &[cut.to_str().unwrap(), "tensor '", "the file ends before"],
    );
    let head = patched("tiny-moe-mixed.gguf", "head.gguf", |b| b.truncate(300));
    let msg = err_of(GgufFile::open(&head));
    assert_mentions(
        &msg,
        &[head.to_str().unwrap(), "truncated or corrupt GGUF header"],
    );
    if let Some(ctx) = testing::context() {
        let msg = err_of(Model::load_with(ctx, &cut, None, false));
        assert_mentions(&msg, &[cut.to_str().unwrap(), "truncated"]);
    }
}

#[test]
fn bad_magic_versions_and_missing_tensors_are_clear() {
    let text = tmpfile("text.gguf");
    std::fs::write(&text, "this is not a model file at all").unwrap();
    assert_mentions(
        &err_of(GgufFile::open(&text)),
        &[text.to_str().unwrap(), "not a GGUF file"],
    );
    let v1 = patched("dense-bf16.gguf", "v1.gguf", |b| b[4] = 1);
    assert_mentions(
        &err_of(GgufFile::open(&v1)),
        &[v1.to_str().unwrap(), "version 1 is not supported"],
    );
    let be = patched("dense-bf16.gguf", "be.gguf", |b| {
        b[4..8].copy_from_slice(&3u32.to_be_bytes())
    });
    assert_mentions(&err_of(GgufFile::open(&be)), &["big-endian"]);
    // version 2 has the same layout for little-endian files
    let v2 = patched("dense-bf16.gguf", "v2.gguf", |b| b[4] = 2);
    let g = GgufFile::open(&v2).unwrap();
    assert_eq!(g.version, 2);
    Config::from_gguf(&g).unwrap();
    // a renamed tensor: the error names the Hugging Face name and the GGUF name it expected
    let renamed = patched("dense-bf16.gguf", "renamed.gguf", |b| {
        let p = tensor_info_at(b, "blk.1.ffn_norm.weight");
        b[p - 1] = b'X';
    });
    let src = GgufSource::open(&renamed).unwrap();
    assert_mentions(
        &err_of(src.get("model.layers.1.ffn_norm.weight")),
        &[
            renamed.to_str().unwrap(),
            "model.layers.1.ffn_norm.weight",
            "expected tensor 'blk.1.ffn_norm.weight'",
        ],
    );
    if let Some(ctx) = testing::context() {
        let msg = err_of(Model::load_with(ctx, &renamed, None, false));
        assert_mentions(&msg, &["blk.1.ffn_norm.weight"]);
    }
}

// A minimal GGUF writer for files the fixtures do not cover.

enum Kv {
    Str(&'static str),
    U32(u32),
    F32(f32),
    U32s(Vec<u32>),
}

fn write_gguf(path: &Path, kvs: &[(&str, Kv)], tensors: &[(&str, Vec<u64>)]) {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    let s = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    for (k, v) in kvs {
        s(&mut b, k);
        match v {
            Kv::Str(x) => {
                b.extend(8u32.to_le_bytes());
                s(&mut b, x);
            }
            Kv::U32(x) => {
                b.extend(4u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
            Kv::F32(x) => {
                b.extend(6u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
            Kv::U32s(xs) => {
                b.extend(9u32.to_le_bytes());
                b.extend(4u32.to_le_bytes());
                b.extend((xs.len() as u64).to_le_bytes());
                for x in xs {
                    b.extend(x.to_le_bytes());
                }
            }
        }
    }
    // F32 tensors, zero-filled
    let mut offset = 0u64;
    for (name, ne) in tensors {
        s(&mut b, name);
        b.extend((ne.len() as u32).to_le_bytes());
        for d in ne {
            b.extend(d.to_le_bytes());
        }
        b.extend(0u32.to_le_bytes());
        b.extend(offset.to_le_bytes());
        offset += (ne.iter().product::<u64>() * 4).div_ceil(32) * 32;
    }
    b.resize(b.len().div_ceil(32) * 32 + offset as usize, 0);
    std::fs::write(path, b).unwrap();
}

#[test]
fn wrong_architecture_is_named() {
    let p = tmpfile("llama.gguf");
    write_gguf(
        &p,
        &[
            ("general.architecture", Kv::Str("llama")),
            ("llama.block_count", Kv::U32(2)),
        ],
        &[("token_embd.weight", vec![8, 4])],
    );
    let g = GgufFile::open(&p).unwrap();
    for msg in [err_of(Config::from_gguf(&g)), err_of(GgufSource::open(&p))] {
        assert_mentions(
            &msg,
            &[p.to_str().unwrap(), "architecture 'llama' is not supported"],
        );
    }
    if let Some(ctx) = testing::context() {
        assert_mentions(
            &err_of(Model::load_with(ctx, &p, None, false)),
            &["'llama'", "lfm2"],
        );
    }
}

/// A scalar `head_count_kv` (layer types then come from the tensors) and a raw, unadjusted
/// `feed_forward_length` (the width comes from the `ffn_gate` tensors); a sigmoid-less MoE is
/// refused.
#[test]
fn config_falls_back_to_tensor_shapes() {
    let p = tmpfile("scalar.gguf");
    let (h, f) = (16u64, 24u64);
    let mut tensors = vec![("token_embd.weight", vec![h, 10])];
    let names: Vec<String> = (0..3)
        .flat_map(|i| {
            let mixer = if i == 1 {
                "attn_q"
            } else {
                "shortconv.in_proj"
            };
            [
                format!("blk.{i}.{mixer}.weight"),
                format!("blk.{i}.ffn_gate.weight"),
            ]
        })
        .collect();
    for n in &names {
        let ne = if n.contains("ffn_gate") {
            vec![h, f]
        } else {
            vec![h, h]
        };
        tensors.push((n.as_str(), ne));
    }
    write_gguf(
        &p,
        &[
            ("general.architecture", Kv::Str("lfm2")),
            ("lfm2.block_count", Kv::U32(3)),
            ("lfm2.embedding_length", Kv::U32(h as u32)),
            ("lfm2.feed_forward_length", Kv::U32(999)),
            ("lfm2.attention.head_count", Kv::U32(4)),
            ("lfm2.attention.head_count_kv", Kv::U32(2)),
            ("lfm2.rope.freq_base", Kv::F32(5e6)),
        ],
        &tensors,
    );
    let c = Config::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
    assert_eq!(c.attention, vec![false, true, false]);
    assert_eq!((c.n_heads, c.n_kv_heads, c.head_dim), (4, 2, 4));
    assert_eq!(c.ffn, 24);
    assert_eq!(c.vocab, 10);
    assert_eq!(c.rope_theta, 5e6);
    assert!(c.tie_embeddings && c.moe.is_none());

    let p = tmpfile("softmax.gguf");
    write_gguf(
        &p,
        &[
            ("general.architecture", Kv::Str("lfm2moe")),
            ("lfm2moe.block_count", Kv::U32(2)),
            ("lfm2moe.embedding_length", Kv::U32(16)),
            ("lfm2moe.attention.head_count", Kv::U32(4)),
            ("lfm2moe.attention.head_count_kv", Kv::U32s(vec![0, 2])),
            ("lfm2moe.expert_count", Kv::U32(4)),
            ("lfm2moe.expert_used_count", Kv::U32(2)),
            ("lfm2moe.expert_feed_forward_length", Kv::U32(8)),
            ("lfm2moe.expert_gating_func", Kv::U32(1)),
            ("lfm2moe.vocab_size", Kv::U32(10)),
        ],
        &[],
    );
    assert_mentions(
        &err_of(Config::from_gguf(&GgufFile::open(&p).unwrap())),
        &["lfm2moe.expert_gating_func", "sigmoid"],
    );
}
