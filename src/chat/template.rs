//! A checkpoint's own chat template, rendered exactly as Hugging Face transformers'
//! `apply_chat_template(..., tokenize=False)` renders it.
//!
//! Where the template comes from, first found: `chat_template.jinja` in the checkpoint
//! directory (beside a `.gguf` file), the `chat_template` of `tokenizer_config.json` there (a
//! string, or a list of named templates), the GGUF metadata `tokenizer.chat_template`. The
//! special tokens (`bos_token`, `eos_token`, ...) come from `tokenizer_config.json`, else from
//! the GGUF token ids. A list of named templates renders `tool_use` when the request has
//! tools and `default` otherwise, as transformers chooses.

use std::path::{Path, PathBuf};

use minijinja::Environment;
use serde_json::Value as Json;

use super::jinja::{environment, raised_message, rewrite_generation_tags};
use super::request::ChatRequest;
use crate::bundled::BUNDLED_MODEL;
use crate::error::{Error, Result};
use crate::model::gguf::{GgufFile, GgufValue};

/// The special-token names transformers passes to a template (its `special_tokens_map`).
const SPECIAL_TOKENS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// The GGUF token-id keys of those tokens (llama.cpp spells `seperator`).
const GGUF_SPECIAL_IDS: [(&str, &str); 6] = [
    ("bos_token", "tokenizer.ggml.bos_token_id"),
    ("eos_token", "tokenizer.ggml.eos_token_id"),
    ("unk_token", "tokenizer.ggml.unknown_token_id"),
    ("sep_token", "tokenizer.ggml.seperator_token_id"),
    ("pad_token", "tokenizer.ggml.padding_token_id"),
    ("mask_token", "tokenizer.ggml.mask_token_id"),
];

/// A compiled chat template with the special tokens it is rendered with.
pub struct ChatTemplate {
    /// The file the template was read from, for error messages.
    pub origin: PathBuf,
    env: Environment<'static>,
    /// The template names, in the order given.
    names: Vec<String>,
    special_tokens: Vec<(String, String)>,
}

impl ChatTemplate {
    /// Compiles named templates (`[("default", source)]` for a single one); `origin` names
    /// the file in errors.
    pub fn new(
        templates: Vec<(String, String)>,
        special_tokens: Vec<(String, String)>,
        origin: impl Into<PathBuf>,
    ) -> Result<Self> {
        let origin = origin.into();
        let mut env = environment();
        let mut names = Vec::new();
        for (name, source) in templates {
            env.add_template_owned(name.clone(), rewrite_generation_tags(&source))
                .map_err(|e| {
                    Error::file(
                        &origin,
                        format!(
                            "the chat template '{name}' does not compile: {}",
                            one_line(&e)
                        ),
                    )
                })?;
            names.push(name);
        }
        if names.is_empty() {
            return Err(Error::file(&origin, "holds no chat template"));
        }
        Ok(ChatTemplate {
            origin,
            env,
            names,
            special_tokens,
        })
    }

    /// The template of the checkpoint at `path`: a Hugging Face directory or a `.gguf` file.
    pub fn from_model(path: &Path) -> Result<Self> {
        let gguf = path.is_file();
        let dir = if gguf {
            path.parent().unwrap_or(Path::new("."))
        } else {
            path
        };
        if !gguf && !dir.is_dir() {
            return Err(Error::file(
                path,
                "no such directory or file; pass a checkpoint directory or a .gguf file",
            ));
        }
        let config_path = dir.join("tokenizer_config.json");
        let config = match std::fs::read(&config_path) {
            Ok(bytes) => Some(parse_json(&bytes, &config_path)?),
            Err(_) => None,
        };
        let file = if gguf {
            Some(GgufFile::open(path)?)
        } else {
            None
        };
        let special = match (&config, &file) {
            (Some(c), _) => special_tokens_of_config(c),
            (None, Some(g)) => special_tokens_of_gguf(g),
            (None, None) => Vec::new(),
        };
        let jinja_path = dir.join("chat_template.jinja");
        if let Ok(text) = std::fs::read_to_string(&jinja_path) {
            return Self::new(vec![("default".into(), text)], special, jinja_path);
        }
        if let Some(templates) = config
            .as_ref()
            .map(|c| templates_of_config(c, &config_path))
            .transpose()?
            .flatten()
        {
            return Self::new(templates, special, config_path);
        }
        if let Some(templates) = file.as_ref().and_then(templates_of_gguf) {
            return Self::new(templates, special, path);
        }
        let looked = if gguf {
            ", nor GGUF metadata tokenizer.chat_template"
        } else {
            ""
        };
        Err(Error::file(path, format!(
            "has no chat template: no chat_template.jinja, no \"chat_template\" in tokenizer_config.json{looked}; put the model's chat_template.jinja beside it"
        )))
    }

    /// The template in a GGUF file's metadata (`tokenizer.chat_template`), with the special
    /// tokens its metadata names.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        match templates_of_gguf(file) {
            Some(templates) => Self::new(templates, special_tokens_of_gguf(file), &file.path),
            None => Err(Error::file(
                &file.path,
                "has no chat template (no GGUF metadata tokenizer.chat_template)",
            )),
        }
    }

    /// The bundled model's template (compiled into the binary).
    pub fn bundled() -> Result<Self> {
        let b = &BUNDLED_MODEL;
        let dir = b.dir();
        let file = |name: &str| b.require(name);
        let config_path = dir.join("tokenizer_config.json");
        let config = parse_json(file("tokenizer_config.json")?, &config_path)?;
        let jinja_path = dir.join("chat_template.jinja");
        let text = std::str::from_utf8(file("chat_template.jinja")?)
            .map_err(|_| Error::file(&jinja_path, "is not UTF-8"))?;
        Self::new(
            vec![("default".into(), text.to_string())],
            special_tokens_of_config(&config),
            jinja_path,
        )
    }

    /// The prompt text for `request`, byte for byte as transformers renders it. A template
    /// that calls `raise_exception` gives an [`Error::Input`] with its message.
    pub fn render(&self, request: &ChatRequest) -> Result<String> {
        let name = match request.tools {
            Some(_) if self.names.iter().any(|n| n == "tool_use") => "tool_use",
            _ => self
                .names
                .iter()
                .find(|n| *n == "default")
                .unwrap_or(&self.names[0]),
        };
        let template = self
            .env
            .get_template(name)
            .map_err(|e| Error::file(&self.origin, one_line(&e)))?;
        template
            .render(request.context(&self.special_tokens))
            .map_err(|e| match raised_message(&e) {
                Some(msg) => Error::Input(format!(
                    "the chat template ({}) rejects this request: {msg}",
                    self.origin.display()
                )),
                None => Error::file(
                    &self.origin,
                    format!(
                        "cannot render the chat template for this request: {}",
                        one_line(&e)
                    ),
                ),
            })
    }

    /// Whether the generation prompt leaves the model inside a `<think>` block, so its
    /// output starts with reasoning (a template that opens `<think>` itself).
    pub fn opens_reasoning(&self) -> bool {
        match self.render(&ChatRequest::user("Hi")) {
            Ok(p) => p.rfind("<think>") > p.rfind("</think>"),
            Err(_) => false,
        }
    }

    /// The special tokens the template is rendered with, as (name, text).
    pub fn special_tokens(&self) -> &[(String, String)] {
        &self.special_tokens
    }
}

/// A minijinja error on one line.
fn one_line(e: &minijinja::Error) -> String {
    e.to_string().replace('\n', " ")
}

fn parse_json(bytes: &[u8], path: &Path) -> Result<Json> {
    serde_json::from_slice(bytes).map_err(|e| Error::file(path, format!("not valid JSON: {e}")))
}

/// The special tokens of a tokenizer_config.json: strings, or added-token objects with a
/// `content`.
fn special_tokens_of_config(config: &Json) -> Vec<(String, String)> {
    SPECIAL_TOKENS
        .iter()
        .filter_map(|name| {
            let v = config.get(name)?;
            let text = v.as_str().or_else(|| v.get("content")?.as_str())?;
            Some((name.to_string(), text.to_string()))
        })
        .collect()
}

/// The special tokens a GGUF file names by id in `tokenizer.ggml.tokens`.
fn special_tokens_of_gguf(g: &GgufFile) -> Vec<(String, String)> {
    let Some(tokens) = g.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array) else {
        return Vec::new();
    };
    GGUF_SPECIAL_IDS
        .iter()
        .filter_map(|(name, key)| {
            let id = g.get(key)?.as_u64()? as usize;
            let text = tokens.get(id)?.as_str()?;
            Some((name.to_string(), text.to_string()))
        })
        .collect()
}

/// tokenizer_config.json's `chat_template`: a string, or `[{"name", "template"}, ...]`.
fn templates_of_config(config: &Json, path: &Path) -> Result<Option<Vec<(String, String)>>> {
    match config.get("chat_template") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(vec![("default".into(), s.clone())])),
        Some(Json::Array(list)) => list
            .iter()
            .map(|t| {
                match (
                    t.get("name").and_then(Json::as_str),
                    t.get("template").and_then(Json::as_str),
                ) {
                    (Some(n), Some(s)) => Ok((n.to_string(), s.to_string())),
                    _ => Err(Error::file(
                        path,
                        "\"chat_template\" list entries need a \"name\" and a \"template\" string",
                    )),
                }
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(_) => Err(Error::file(
            path,
            "\"chat_template\" must be a string or a list of named templates",
        )),
    }
}

/// `tokenizer.chat_template` and the named `tokenizer.chat_template.NAME` of a GGUF file.
fn templates_of_gguf(g: &GgufFile) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (key, value) in g.metadata() {
        let name = match key.strip_prefix("tokenizer.chat_template") {
            Some("") => "default",
            Some(rest) => match rest.strip_prefix('.') {
                Some(n) => n,
                None => continue,
            },
            None => continue,
        };
        if let Some(text) = value.as_str() {
            out.push((name.to_string(), text.to_string()));
        }
    }
    (!out.is_empty()).then_some(out)
}
