//! GGUF output (`wmoe quantize --out FILE.gguf`, `wmoe synth --out FILE.gguf`): the metadata
//! and tokenizer llama.cpp's converter writes for the same checkpoint, the written file
//! loading into the same logits as its source quantized on load, and the tokenizer rebuilt
//! from it encoding like tokenizer.json. llama.cpp itself loading the files and greedy-decoding
//! the tokens wmoe does: the ignored `llama_cpp_greedy_tokens_match` (docs/PERF.md).

use std::path::{Path, PathBuf};

use wmoe::gpu::testing;
use wmoe::kernels::KvType;
use wmoe::model::gguf::{GgufFile, GgufValue};
use wmoe::model::gguf_tokenizer::tokenizer_from_gguf;
use wmoe::model::quantize::quantize_checkpoint;
use wmoe::model::synth::{synth, synth_config};
use wmoe::model::{Config, QuantPlan};
use wmoe::{GpuContext, LogitsMode, Model, Session, SessionOptions};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wmoe-gguf-out-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(name);
    let _ = std::fs::remove_file(&p);
    let _ = std::fs::remove_dir_all(&p);
    p
}

const PROMPT: [u32; 12] = [1, 17, 300, 42, 5, 99, 128, 7, 255, 256, 13, 31];

/// Prefill logits of every position, then decode logits of two more tokens.
fn run(ctx: &GpuContext, model: &Model) -> Vec<f32> {
    let opts = SessionOptions {
        max_context: 64,
        chunk: 8,
        kv: KvType::F32,
    };
    let mut s = Session::new(ctx, model, opts).unwrap();
    let mut logits = s.prefill(&PROMPT, LogitsMode::All).unwrap();
    logits.extend(s.decode(3).unwrap());
    logits.extend(s.decode(11).unwrap());
    logits
}

/// The tokenizer metadata and model keys equal those llama.cpp's converter wrote for the
/// same checkpoint (assets/gguf/llamacpp-tiny-moe-Q8_0.gguf), tensor names and dimensions too.
#[test]
fn quantize_writes_what_llama_cpps_converter_writes() {
    let out = tmp("tiny-q8.gguf");
    let plan = QuantPlan::parse("q8_0").unwrap();
    quantize_checkpoint(&assets().join("models/tiny-moe"), plan, &out).unwrap();
    let ours = GgufFile::open(&out).unwrap();
    let theirs = GgufFile::open(&assets().join("gguf/llamacpp-tiny-moe-Q8_0.gguf")).unwrap();
    // Keys the converter writes that describe the file, not the model.
    let descriptive = ["general.name", "general.size_label"];
    for (key, value) in theirs.metadata() {
        if descriptive.contains(&key.as_str()) || key == "tokenizer.ggml.add_sep_token" {
            continue;
        }
        assert_eq!(ours.get(key), Some(value), "{key}");
    }
    // tiny-moe scales routed weights by 1.5, which the converter leaves out.
    assert_eq!(
        ours.get("lfm2moe.expert_weights_scale"),
        Some(&GgufValue::F32(1.5))
    );
    let names = |g: &GgufFile| {
        let mut v: Vec<(String, Vec<u64>)> = g
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.ne.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&ours), names(&theirs));
    for t in ours.tensors() {
        let want = theirs.tensor(&t.name).unwrap().ggml_type;
        // The converter's fallback for rows that are not whole q8_0 blocks is f16; ours keeps
        // the source's bf16.
        let fallback = want.name() == "F16" && t.ggml_type.name() == "BF16";
        assert!(t.ggml_type == want || fallback, "{}", t.name);
    }
    assert_eq!(
        Config::from_gguf(&ours).unwrap(),
        Config::from_file(&assets().join("models/tiny-moe/config.json")).unwrap()
    );
}

#[test]
fn tokenizer_from_written_gguf_encodes_like_tokenizer_json() {
    let out = tmp("demo-q8.gguf");
    let plan = QuantPlan::parse("q8_0").unwrap();
    quantize_checkpoint(&assets().join("models/demo"), plan, &out).unwrap();
    let g = GgufFile::open(&out).unwrap();
    let ours = tokenizer_from_gguf(&g)
        .unwrap()
        .expect("tokenizer metadata");
    let hf = tokenizers::Tokenizer::from_file(assets().join("models/demo/tokenizer.json")).unwrap();
    let texts = [
        "The capital of France is",
        "Numbers like 1, 22, 333, 4444 and 65536; dates 2025-10-07 at 12:30.",
        "def main():\n    print(\"Hello, world!\")\n\n\treturn 0\r\n",
        "<|im_start|>user\nWhat is the weather like today?<|im_end|>\n<|im_start|>assistant\n",
        "Unicode: héllo wörld, 日本語, emoji 🦀 and ß.",
    ];
    for t in texts {
        for special in [false, true] {
            let a = ours.encode(t, special).unwrap();
            let b = hf.encode(t, special).unwrap();
            assert_eq!(a.get_ids(), b.get_ids(), "{t:?} (special {special})");
        }
    }
    let template = std::fs::read_to_string(assets().join("models/demo/chat_template.jinja"));
    assert_eq!(
        g.get("tokenizer.chat_template"),
        Some(&GgufValue::String(template.unwrap()))
    );
    // A checkpoint without tokenizer.json (dense-bf16) gets the placeholder vocabulary
    // llama.cpp needs to load a file: byte-level symbols, then `ab` and `<tN>`.
    let dense = tmp("dense-q8.gguf");
    quantize_checkpoint(&assets().join("models/dense-bf16"), plan, &dense).unwrap();
    let g = GgufFile::open(&dense).unwrap();
    let tokens = g.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap();
    assert_eq!(tokens.len(), 333);
    let token = |i: usize| tokens[i].as_str().unwrap();
    let (first, last) = (token(0), token(255));
    assert_eq!(
        (first, last, token(256), token(257)),
        ("!", "Ń", "ab", "<t257>")
    );
    assert_eq!(token(332), "<t332>");
    assert_eq!(
        g.get("tokenizer.ggml.bos_token_id"),
        Some(&GgufValue::U32(1))
    );
}

/// Written as GGUF at q8_0 / q4_0, loaded back: the logits of the source quantized on load.
#[test]
fn quantized_gguf_loads_like_its_source() {
    let Some(ctx) = testing::context() else {
        return;
    };
    for model in ["tiny-moe", "dense-bf16"] {
        let src = assets().join("models").join(model);
        for plan in ["q8_0", "q4_0"] {
            let plan = QuantPlan::parse(plan).unwrap();
            let out = tmp(&format!("{model}-{}.gguf", plan.name()));
            quantize_checkpoint(&src, plan, &out).unwrap();
            let want = run(
                ctx,
                &Model::load_with(ctx, &src, Some(plan), false).unwrap(),
            );
            let got = run(ctx, &Model::load_with(ctx, &out, None, false).unwrap());
            assert_eq!(got, want, "{model} {}", plan.name());
        }
    }
}

/// `synth --out FILE.gguf` holds the checkpoint `synth` writes as a directory.
#[test]
fn synth_gguf_equals_the_synth_checkpoint() {
    let cfg = synth_config("test-256", Some(2)).unwrap();
    let plan = QuantPlan::parse("q4_0").unwrap();
    let (dir, file) = (tmp("synth-dir"), tmp("synth.gguf"));
    synth(&dir, &cfg, Some(plan), 3, false).unwrap();
    synth(&file, &cfg, Some(plan), 3, false).unwrap();
    let g = GgufFile::open(&file).unwrap();
    assert_eq!(
        Config::from_gguf(&g).unwrap(),
        Config::from_file(&dir.join("config.json")).unwrap()
    );
    assert_eq!(
        g.get("tokenizer.ggml.model"),
        Some(&GgufValue::String("gpt2".into()))
    );
    let Some(ctx) = testing::context() else {
        return;
    };
    let want = run(ctx, &Model::load_with(ctx, &dir, None, false).unwrap());
    let got = run(ctx, &Model::load_with(ctx, &file, None, false).unwrap());
    assert_eq!(got, want);
}

/// An existing output file is refused, not overwritten.
#[test]
fn existing_gguf_output_is_refused() {
    let out = tmp("exists.gguf");
    std::fs::write(&out, b"keep").unwrap();
    let plan = QuantPlan::parse("q8_0").unwrap();
    let e = quantize_checkpoint(&assets().join("models/tiny-moe"), plan, &out).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
}
