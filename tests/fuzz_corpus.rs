//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`, crashes found by
//! fuzzing included) through the fuzz targets' own bodies, on stable Rust: what the fuzzer
//! once found stays fixed. `cargo fuzz` itself needs nightly (docs/RELIABILITY.md).

#[path = "common/gguf_build.rs"]
mod gguf_build;
#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn every_corpus_file_replays_without_a_panic() {
    for (name, run) in targets::TARGETS {
        let mut files: Vec<PathBuf> = std::fs::read_dir(corpus(name))
            .unwrap_or_else(|e| panic!("fuzz/corpus/{name}: {e}"))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "fuzz/corpus/{name} is empty");
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            let r = std::panic::catch_unwind(|| run(&bytes));
            assert!(r.is_ok(), "{name}: {} panicked", f.display());
        }
        eprintln!("{name}: {} corpus files replayed", files.len());
    }
}

/// Writes the seed corpus (`cargo test --release --test fuzz_corpus -- --ignored`): small
/// valid inputs of every target that the fuzzer mutates.
#[test]
#[ignore]
fn write_seed_corpus() {
    use gguf_build::{tiny_lfm2, Gguf};
    let seed = |target: &str, name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(corpus(target)).unwrap();
        std::fs::write(corpus(target).join(name), bytes).unwrap();
    };
    let tiny = tiny_lfm2();
    seed("gguf", "seed-tiny-lfm2.gguf", &tiny.bytes());
    let mut meta_only = Gguf {
        kvs: tiny.kvs.clone(),
        tensors: Vec::new(),
    };
    seed("gguf_tokenizer", "seed-tokenizer.gguf", &meta_only.bytes());
    meta_only.set("tokenizer.ggml.add_bos_token", gguf_build::V::Bool(false));
    seed("gguf_tokenizer", "seed-no-bos.gguf", &meta_only.bytes());
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    seed(
        "gguf",
        "seed-formats.gguf",
        &std::fs::read(assets.join("gguf/formats.gguf")).unwrap(),
    );
    for dir in ["tiny-moe", "dense-f16-legacy", "moe-f32-sharded"] {
        let cfg = std::fs::read(assets.join("models").join(dir).join("config.json")).unwrap();
        seed("config_json", &format!("seed-{dir}.json"), &cfg);
    }
    let index = assets.join("models/moe-f32-sharded/model.safetensors.index.json");
    seed(
        "safetensors_index",
        "seed-sharded.json",
        &std::fs::read(index).unwrap(),
    );
    seed_safetensors(&|name, bytes| seed("safetensors", name, bytes));
    seed_chat(&seed);
}

/// Chat requests (the template fixtures' and a few the server reads), completion requests
/// and generated texts with reasoning and tool calls.
fn seed_chat(seed: &dyn Fn(&str, &str, &[u8])) {
    use serde_json::{json, Value as Json};
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/chat/template-fixtures.json");
    let fixtures: Json = serde_json::from_slice(&std::fs::read(fixtures).unwrap()).unwrap();
    for (i, case) in fixtures["cases"].as_array().unwrap().iter().enumerate() {
        let body = serde_json::to_vec(&case["request"]).unwrap();
        seed("chat_template", &format!("seed-fixture-{i:02}.json"), &body);
        seed("serve_request", &format!("seed-fixture-{i:02}.json"), &body);
    }
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let user = json!([{"role": "user", "content": "Weather in Paris?"}]);
    let requests = [
        json!({"messages": user, "stream": true, "stream_options": {"include_usage": true},
            "max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 3,
            "stop": ["\n", "END"], "presence_penalty": 0.5, "n": 1}),
        json!({"messages": user, "tools": tools, "tool_choice": "required"}),
        json!({"messages": user, "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        json!({"messages": user, "tools": tools, "tool_choice": "none",
            "response_format": {"type": "text"}, "max_completion_tokens": 4}),
        json!({"prompt": "Once upon a time", "max_tokens": 5, "echo": false}),
        json!({"prompt": [1, 2, 3], "stream": true, "ignore_eos": true}),
        json!({"prompt": ["The end"], "logprobs": false, "best_of": 1}),
    ];
    for (i, r) in requests.iter().enumerate() {
        seed(
            "serve_request",
            &format!("seed-request-{i}.json"),
            &serde_json::to_vec(r).unwrap(),
        );
    }
    let texts = [
        "Hello there.",
        "<think>The user wants weather.</think>\n\nLet me check.<|tool_call_start|>[get_weather(city='Zürich', days=[1, 2]), web.search(q=\"it's\", n=None)]<|tool_call_end|>",
        "Checking.\n<|tool_call_start|>[f(a=1.5e3, b={'k': (1, True)}, c=-0x1F)]<|tool_call_end|>\nDone.",
        "<|tool_call_start|>[broken(a=]<|tool_call_end|> and <think>open",
        "reasoning first</think>answer",
    ];
    for (i, t) in texts.iter().enumerate() {
        seed("tool_calls", &format!("seed-text-{i}.txt"), t.as_bytes());
    }
}

/// A small safetensors file of a float, a bf16 and a q8_0 (wmoe.quant) tensor.
fn seed_safetensors(seed: &dyn Fn(&str, &[u8])) {
    use wmoe::gpu::WeightFormat;
    use wmoe::model::writer::{write_safetensors, OutTensor};
    let dir = std::env::temp_dir().join(format!("wmoe-seed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let t = |name: &str, shape: Vec<usize>, format| OutTensor {
        name: name.into(),
        shape,
        format,
    };
    let tensors = [
        t("model.embedding_norm.weight", vec![8], WeightFormat::F32),
        t("model.embed_tokens.weight", vec![4, 8], WeightFormat::Bf16),
        t("lm_head.weight", vec![2, 32], WeightFormat::Q8_0),
    ];
    write_safetensors(&path, &tensors, |i, r, out| {
        let vals: Vec<f32> = (0..tensors[i].cols())
            .map(|c| (r * 7 + c) as f32 * 0.1)
            .collect();
        tensors[i].format.quantize_row(&vals, out);
        Ok(())
    })
    .unwrap();
    seed("seed-mixed.safetensors", &std::fs::read(&path).unwrap());
    let _ = std::fs::remove_dir_all(dir);
}
