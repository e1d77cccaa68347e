//! A `tokenizers::Tokenizer` from a GGUF file's tokenizer metadata, for GGUF models without a
//! tokenizer.json beside them: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with
//! `tokenizer.ggml.tokens`, `.merges`, `.token_type` (3 = control, 4 = user-defined: added
//! tokens), `.bos_token_id`, `.add_bos_token` and `.pre` (the pre-tokenizer, MODEL-SPEC §6.1).
//! It is built as the tokenizer.json Hugging Face would hold: Split(regex, isolated) then
//! ByteLevel(use_regex = false), a BPE model over the vocabulary and merges, a ByteLevel
//! decoder, and the control tokens as special added tokens.

use serde_json::{json, Map, Value};

use super::{GgufFile, GgufValue};
use crate::error::{Error, Result};

/// LFM2 v1's pre-tokenizer split (MODEL-SPEC §6.1), GGUF `tokenizer.ggml.pre = "lfm2"`.
pub const LFM2_PRETOKENIZER_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// The pre-tokenizer regex for a `tokenizer.ggml.pre` name.
pub fn pretokenizer_regex(pre: Option<&str>) -> &'static str {
    match pre {
        Some("lfm2") => LFM2_PRETOKENIZER_REGEX,
        // Other names (a fine-tune's own hash name, "default", LFM2.5's expanded tokenizer
        // whose exact regex is not known here) fall back to LFM2 v1's regex: it is
        // Llama-3-like, so for most text it splits the same way. A tokenizer.json beside the
        // GGUF file takes precedence over this reconstruction.
        _ => LFM2_PRETOKENIZER_REGEX,
    }
}

/// The tokenizer described by `g`'s metadata: `Ok(None)` when the file has none, an error
/// naming the file when it is malformed or not byte-level BPE.
pub fn tokenizer_from_gguf(g: &GgufFile) -> Result<Option<tokenizers::Tokenizer>> {
    let Some(model) = g.get("tokenizer.ggml.model") else {
        return Ok(None);
    };
    match model.as_str() {
        Some("gpt2") => {}
        other => {
            return Err(err(g, format!(
                "tokenizer.ggml.model is {other:?}; wmoe builds byte-level BPE ('gpt2') tokenizers from GGUF metadata; put the model's tokenizer.json next to the file"
            )))
        }
    }
    let tokens = strings(g, "tokenizer.ggml.tokens")?.ok_or_else(|| {
        err(
            g,
            "tokenizer.ggml.model is set but tokenizer.ggml.tokens is missing".into(),
        )
    })?;
    let merges = strings(g, "tokenizer.ggml.merges")?.unwrap_or_default();
    let types = token_types(g, tokens.len())?;
    let (vocab, added) = vocab_and_added_tokens(&tokens, &types);
    let merges = merge_pairs(g, &merges)?;
    let spec = tokenizer_json(TokenizerJson {
        added,
        post_processor: bos_post_processor(g, &tokens),
        regex: pretokenizer_regex(g.get("tokenizer.ggml.pre").and_then(GgufValue::as_str)),
        vocab,
        merges,
    });
    let bytes = serde_json::to_vec(&spec).expect("JSON");
    tokenizers::Tokenizer::from_bytes(bytes)
        .map(Some)
        .map_err(|e| {
            err(
                g,
                format!("cannot build a tokenizer from the GGUF tokenizer metadata: {e}"),
            )
        })
}

fn err(g: &GgufFile, msg: String) -> Error {
    Error::file(&g.path, msg)
}

/// The array of strings `key`, if the file has it.
fn strings<'a>(g: &'a GgufFile, key: &str) -> Result<Option<Vec<&'a str>>> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(GgufValue::as_str).collect::<Option<Vec<_>>>())
            .map(Some)
            .ok_or_else(|| err(g, format!("{key} must be an array of strings"))),
    }
}

/// `tokenizer.ggml.token_type` of each of the `n` tokens (all normal, 1, without it).
fn token_types(g: &GgufFile, n: usize) -> Result<Vec<i64>> {
    match g.get("tokenizer.ggml.token_type") {
        None => Ok(vec![1; n]),
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(GgufValue::as_i64).collect::<Option<Vec<_>>>())
            .filter(|t| t.len() == n)
            .ok_or_else(|| {
                err(
                    g,
                    format!("tokenizer.ggml.token_type must be an array of {n} integers"),
                )
            }),
    }
}

/// The BPE vocabulary (token -> id) and the added tokens: control tokens (special) and
/// user-defined ones.
fn vocab_and_added_tokens(tokens: &[&str], types: &[i64]) -> (Map<String, Value>, Vec<Value>) {
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (tok, ty)) in tokens.iter().zip(types).enumerate() {
        // a repeated token string keeps its first id
        if !vocab.contains_key(*tok) {
            vocab.insert(tok.to_string(), json!(id));
        }
        if *ty == TOKEN_CONTROL || *ty == TOKEN_USER_DEFINED {
            added.push(json!({
                "id": id,
                "content": tok,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": *ty == TOKEN_CONTROL,
            }));
        }
    }
    (vocab, added)
}

/// The merges `"a b"` as tokenizer.json's `["a", "b"]` pairs.
fn merge_pairs(g: &GgufFile, merges: &[&str]) -> Result<Vec<Value>> {
    merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| err(g, format!("tokenizer.ggml.merges entry {m:?} is not 'a b'")))
        })
        .collect()
}

/// As LFM2's tokenizer.json: BOS prepended when special tokens are added (where the file
/// has a BOS token and `add_bos_token`), else no post-processor.
fn bos_post_processor(g: &GgufFile, tokens: &[&str]) -> Value {
    let bos = g
        .get("tokenizer.ggml.bos_token_id")
        .and_then(GgufValue::as_u64)
        .and_then(|id| tokens.get(id as usize).map(|t| (id, *t)));
    let add_bos = g
        .get("tokenizer.ggml.add_bos_token")
        .and_then(GgufValue::as_bool)
        .unwrap_or(false);
    match bos.filter(|_| add_bos) {
        None => Value::Null,
        Some((id, t)) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}
            ],
            "special_tokens": {t: {"id": t, "ids": [id], "tokens": [t]}},
        }),
    }
}

/// The parts of the tokenizer.json that come from the file.
struct TokenizerJson {
    added: Vec<Value>,
    post_processor: Value,
    regex: &'static str,
    vocab: Map<String, Value>,
    merges: Vec<Value>,
}

/// The tokenizer.json Hugging Face would hold for a byte-level BPE tokenizer.
fn tokenizer_json(t: TokenizerJson) -> Value {
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": t.added,
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": t.regex}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]
        },
        "post_processor": t.post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": t.vocab,
            "merges": t.merges,
        },
    })
}
