//! The fuzz targets' bodies: each hands arbitrary bytes to the library's parsers from bytes,
//! and walks what they accept as a loader would. Any outcome but a panic, an abort, a hang or
//! an allocation failure is fine: malformed input must come back as an `Err`.
//!
//! Shared by the `cargo fuzz` targets (`fuzz/fuzz_targets/*.rs`) and by
//! `tests/fuzz_corpus.rs`, which replays every committed corpus file on stable Rust.

use std::path::Path;

use wmoe::model::gguf::{GgufFile, GgufSource};
use wmoe::model::gguf_tokenizer::tokenizer_from_gguf;
use wmoe::model::{Checkpoint, Config, ModelWeights, TensorSource};

/// A target: its name (the corpus directory it reads) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 5] = [
    ("gguf", gguf),
    ("gguf_tokenizer", gguf_tokenizer),
    ("safetensors", safetensors),
    ("safetensors_index", safetensors_index),
    ("config_json", config_json),
];

/// Elements a target converts to f32 at most per tensor (keeps an execution fast).
const MAX_ELEMENTS: usize = 1 << 16;

/// Reads `v` as the loader would (bounded).
fn touch(v: &wmoe::model::TensorView) {
    if v.numel() <= MAX_ELEMENTS {
        let _ = v.to_f32();
    }
}

/// GGUF header, metadata and tensor table; the LFM2 config, the tensor source (first, second
/// and last expert of a stack) and the check of every tensor the config implies.
pub fn gguf(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()) else {
        return;
    };
    for t in file.tensors() {
        let _ = file.tensor_data(t);
    }
    let names: Vec<String> = file.tensors().iter().map(|t| t.name.clone()).collect();
    let config = Config::from_gguf(&file);
    let Ok(src) = GgufSource::new(file) else {
        return;
    };
    for g in names {
        let hf = match g.strip_prefix("blk.") {
            Some(rest) => {
                let (layer, rest) = rest.split_once('.').unwrap_or((rest, ""));
                let w = match rest {
                    "ffn_gate_exps.weight" => "w1",
                    "ffn_up_exps.weight" => "w3",
                    "ffn_down_exps.weight" => "w2",
                    _ => "",
                };
                [0, 1, usize::MAX / 2]
                    .map(|e| format!("model.layers.{layer}.feed_forward.experts.{e}.{w}.weight"))
                    .to_vec()
            }
            None => vec!["model.embed_tokens.weight".into(), "lm_head.weight".into()],
        };
        for name in hf {
            if let Ok(v) = src.get(&name) {
                touch(&v);
            }
        }
    }
    if let Ok(cfg) = config {
        let _ = ModelWeights::check(&src, &cfg);
    }
}

/// The tokenizer built from GGUF metadata, encoding and decoding a little text.
pub fn gguf_tokenizer(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()) else {
        return;
    };
    if let Ok(Some(t)) = tokenizer_from_gguf(&file) {
        if let Ok(e) = t.encode("Hello, wörld! 12345 <|im_start|>", true) {
            let _ = t.decode(e.get_ids(), false);
        }
        let _ = t.decode(&[0, 1, 2, 3, u32::MAX], true);
    }
}

/// A safetensors file (header, `wmoe.quant` metadata, data offsets) and its tensors.
pub fn safetensors(data: &[u8]) {
    let Ok(ck) = Checkpoint::from_bytes(Path::new("fuzz/model.safetensors"), data.to_vec()) else {
        return;
    };
    let _ = ck.total_bytes();
    for name in ck.names() {
        if let Ok(v) = ck.get(&name) {
            touch(&v);
        }
    }
}

/// A `model.safetensors.index.json`: the shard files it lists.
pub fn safetensors_index(data: &[u8]) {
    let dir = Path::new("fuzz");
    let _ = Checkpoint::shards(dir, &dir.join("model.safetensors.index.json"), data);
}

/// A `config.json`.
pub fn config_json(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice(data) {
        let _ = Config::from_json(&v, Path::new("fuzz/config.json"));
    }
}
