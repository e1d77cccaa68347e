//! Chat templates against Hugging Face transformers: every request of
//! `assets/chat/template-fixtures.json` (written by `tools/make_chat_fixtures.py`) rendered
//! with both real LFM2 templates must equal transformers' prompt byte for byte, or fail where
//! transformers raised. No GPU.

use std::path::{Path, PathBuf};

use serde_json::Value;
use wmoe::chat::{ChatRequest, ChatTemplate};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The special tokens of the tiny model's tokenizer_config.json, which the fixtures used.
fn special_tokens(fixtures: &Value) -> Vec<(String, String)> {
    let config = read_json(&repo().join(fixtures["special_tokens"].as_str().unwrap()));
    ["bos_token", "eos_token", "pad_token"]
        .iter()
        .map(|k| (k.to_string(), config[k].as_str().unwrap().to_string()))
        .collect()
}

/// Renders every fixture request with `t` and compares with transformers' result for the
/// template `name`; returns how many were checked.
fn check_cases(t: &ChatTemplate, name: &str, fixtures: &Value) -> usize {
    let mut checked = 0;
    for case in fixtures["cases"].as_array().unwrap() {
        let label = format!("{name} / {}", case["name"]);
        let expected = &case["expected"][name];
        let got = ChatRequest::from_json(&case["request"]).and_then(|r| t.render(&r));
        match (expected.get("prompt"), got) {
            (Some(want), Ok(got)) => assert_eq!(got, want.as_str().unwrap(), "{label}"),
            (None, Err(e)) => {
                let msg = e.to_string();
                let origin = t.origin.display().to_string();
                assert!(
                    !msg.contains('\n') && msg.contains(&origin),
                    "{label}: {msg}"
                );
            }
            (Some(_), Err(e)) => panic!("{label}: transformers renders it, wmoe fails: {e}"),
            (None, Ok(p)) => panic!(
                "{label}: transformers raised {}, wmoe rendered {p:?}",
                expected["error"]
            ),
        }
        checked += 1;
    }
    checked
}

fn fixtures() -> Value {
    read_json(&repo().join("assets/chat/template-fixtures.json"))
}

#[test]
fn templates_render_as_transformers_does() {
    let fixtures = fixtures();
    let special = special_tokens(&fixtures);
    let mut checked = 0;
    for (name, path) in fixtures["templates"].as_object().unwrap() {
        let path = repo().join(path.as_str().unwrap());
        let source = std::fs::read_to_string(&path).unwrap();
        let t =
            ChatTemplate::new(vec![("default".into(), source)], special.clone(), &path).unwrap();
        checked += check_cases(&t, name, &fixtures);
    }
    assert!(checked >= 36, "{checked} renders checked");
}

/// llama.cpp's converter copies the tiny model's template (LFM2-8B-A1B's) and its special
/// token ids into the GGUF metadata; a GGUF file without one is a clear error.
#[test]
fn gguf_metadata_template_renders_the_same() {
    let fixtures = fixtures();
    let gguf = repo().join("assets/gguf/llamacpp-tiny-moe-Q8_0.gguf");
    let t = ChatTemplate::from_model(&gguf).unwrap();
    assert_eq!(t.origin, gguf);
    let bos = ("bos_token".to_string(), "<|startoftext|>".to_string());
    assert!(
        t.special_tokens().contains(&bos),
        "{:?}",
        t.special_tokens()
    );
    assert!(check_cases(&t, "LFM2-8B-A1B", &fixtures) >= 18);
    let bare = repo().join("assets/gguf/dense-bf16.gguf");
    let e = ChatTemplate::from_model(&bare).err().unwrap().to_string();
    assert!(
        e.contains("dense-bf16.gguf") && e.contains("tokenizer.chat_template"),
        "{e}"
    );
}
