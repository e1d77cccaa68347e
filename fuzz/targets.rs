//! The fuzz targets' bodies: each hands arbitrary bytes to the library's parsers from bytes,
//! and walks what they accept as a loader would. Any outcome but a panic, an abort, a hang or
//! an allocation failure is fine: malformed input must come back as an `Err`.
//!
//! Shared by the `cargo fuzz` targets (`fuzz/fuzz_targets/*.rs`) and by
//! `tests/fuzz_corpus.rs`, which replays every committed corpus file on stable Rust.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use wmoe::chat::parse_calls;
use wmoe::model::gguf::{GgufFile, GgufSource};
use wmoe::model::gguf_tokenizer::tokenizer_from_gguf;
use wmoe::model::{Checkpoint, Config, ModelWeights, TensorSource};
use wmoe::serve::{check_request, App, Engine, Limits, ModelText};
use wmoe::{parse_output, AssistantMessage, ChatRequest, ChatTemplate, ModelFiles, OutputParser};

/// A target: its name (the corpus directory it reads) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 8] = [
    ("gguf", gguf),
    ("gguf_tokenizer", gguf_tokenizer),
    ("safetensors", safetensors),
    ("safetensors_index", safetensors_index),
    ("config_json", config_json),
    ("serve_request", serve_request),
    ("tool_calls", tool_calls),
    ("chat_template", chat_template),
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

/// A request body sent to `/v1/chat/completions` and to `/v1/completions`, through the
/// server's own steps before the engine (JSON, fields, chat template, tokens, limits) with
/// the bundled model's text side: never a panic, and never a 5xx (what a client sends is
/// the client's error).
pub fn serve_request(data: &[u8]) {
    static APP: OnceLock<App> = OnceLock::new();
    let app = APP.get_or_init(|| {
        let files = ModelFiles::bundled().expect("the bundled model");
        App {
            text: ModelText::new(&files, ChatTemplate::bundled().expect("its template"))
                .expect("its text side"),
            // No job reaches the engine: check_request stops before submitting.
            engine: Engine::with_worker(1, 0, |jobs, _| for _ in jobs {}),
            limits: Limits {
                context: 512,
                max_body_bytes: 64 << 10,
                max_tokens: 400,
                max_connections: 16,
                idle_timeout: Duration::from_secs(10),
                api_key: None,
            },
        }
    });
    for chat in [true, false] {
        if let Err((status, message)) = check_request(app, chat, data) {
            assert!(!status.is_server_error(), "{status}: {message}");
        }
    }
}

/// Generated text through the tool-call parser, whole and streamed in pieces of 1 to 8
/// characters (cut where the text's own bytes say), from content and from inside a think
/// block: never a panic, and the stream adds up to the whole text's message.
pub fn tool_calls(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_calls(text);
    for starts_in_reasoning in [false, true] {
        let whole = parse_output(text, starts_in_reasoning);
        let mut parser = OutputParser::new(starts_in_reasoning);
        let mut events = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let chars = 1 + usize::from(rest.as_bytes()[0] % 8);
            let cut = rest
                .char_indices()
                .nth(chars)
                .map_or(rest.len(), |(i, _)| i);
            events.extend(parser.feed(&rest[..cut]));
            rest = &rest[cut..];
        }
        events.extend(parser.finish());
        assert_eq!(
            AssistantMessage::from_events(events),
            whole,
            "streamed and whole differ for {text:?}"
        );
    }
}

/// A chat request body (messages, tools, documents, template kwargs) rendered with the
/// bundled chat template and with LFM2's and LFM2.5's (`assets/chat-templates/`): never a
/// panic.
pub fn chat_template(data: &[u8]) {
    static TEMPLATES: OnceLock<Vec<ChatTemplate>> = OnceLock::new();
    let templates = TEMPLATES.get_or_init(|| {
        let special = [
            ("bos_token", "<|startoftext|>"),
            ("eos_token", "<|im_end|>"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
        let lfm2 = |name: &str, source: &str| {
            ChatTemplate::new(
                vec![("default".into(), source.into())],
                special.clone(),
                name,
            )
            .expect("LFM2's template compiles")
        };
        vec![
            ChatTemplate::bundled().expect("the bundled template"),
            lfm2(
                "LFM2-8B-A1B.jinja",
                include_str!("../assets/chat-templates/LFM2-8B-A1B.jinja"),
            ),
            lfm2(
                "LFM2.5-8B-A1B.jinja",
                include_str!("../assets/chat-templates/LFM2.5-8B-A1B.jinja"),
            ),
        ]
    });
    let Ok(body) = serde_json::from_slice(data) else {
        return;
    };
    if let Ok(request) = ChatRequest::from_json(&body) {
        for t in templates {
            let _ = t.render(&request);
        }
    }
}
