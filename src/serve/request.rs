//! The generation fields of an OpenAI request body, checked: types, ranges, and what wmoe
//! does not support (`n` other than 1, logprobs, a JSON response format) refused by name.

use serde_json::{Map, Value as Json};

use super::openai::ApiError;
use crate::kernels::sample::SamplingParams;

/// Most stop strings a request may give.
const MAX_STOPS: usize = 16;

/// How a request generates.
#[derive(Clone, Debug)]
pub struct Generation {
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// `max_completion_tokens` or `max_tokens`; `None`: up to the context (or the server's
    /// limit).
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// vLLM's `ignore_eos`.
    pub ignore_eos: bool,
}

/// The request's `tool_choice`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

type Fields = Map<String, Json>;

/// The value of `key`, absent when null.
fn field<'a>(obj: &'a Fields, key: &str) -> Option<&'a Json> {
    obj.get(key).filter(|v| !v.is_null())
}

fn wrong(key: &str, want: &str) -> ApiError {
    ApiError::invalid(format!("'{key}' must be {want}"), Some(key))
}

pub fn boolean(obj: &Fields, key: &str) -> Result<Option<bool>, ApiError> {
    field(obj, key)
        .map(|v| v.as_bool().ok_or_else(|| wrong(key, "true or false")))
        .transpose()
}

fn number(obj: &Fields, key: &str) -> Result<Option<f32>, ApiError> {
    field(obj, key)
        .map(|v| {
            v.as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| wrong(key, "a number"))
        })
        .transpose()
}

fn integer(obj: &Fields, key: &str) -> Result<Option<i64>, ApiError> {
    field(obj, key)
        .map(|v| v.as_i64().ok_or_else(|| wrong(key, "an integer")))
        .transpose()
}

impl Generation {
    /// The generation fields of `obj`, over the checkpoint's sampling `defaults`; without a
    /// `seed`, a fresh one.
    pub fn from_json(obj: &Fields, defaults: SamplingParams) -> Result<Self, ApiError> {
        if let Some(n) = integer(obj, "n")? {
            if n != 1 {
                return Err(ApiError::invalid(
                    format!("'n' is {n}; wmoe generates one choice per request (n = 1): send the request n times"),
                    Some("n"),
                ));
            }
        }
        for key in ["logprobs", "echo"] {
            if boolean(obj, key)? == Some(true) {
                return Err(ApiError::invalid(
                    format!("'{key}' is not supported by wmoe"),
                    Some(key),
                ));
            }
        }
        for key in ["top_logprobs", "best_of", "suffix", "logit_bias"] {
            if field(obj, key).is_some() && !(key == "best_of" && obj[key] == 1) {
                return Err(ApiError::invalid(
                    format!("'{key}' is not supported by wmoe; leave it out"),
                    Some(key),
                ));
            }
        }
        if let Some(f) = field(obj, "response_format") {
            match f.get("type").and_then(Json::as_str) {
                Some("text") => {}
                Some(t) => {
                    return Err(ApiError::invalid(
                        format!("response_format '{t}' is not supported by wmoe (no constrained decoding); use 'text'"),
                        Some("response_format"),
                    ))
                }
                None => return Err(wrong("response_format", "an object with a 'type'")),
            }
        }
        let stream = boolean(obj, "stream")?.unwrap_or(false);
        let include_usage = match field(obj, "stream_options") {
            None => false,
            Some(Json::Object(o)) => boolean(o, "include_usage")
                .map_err(|_| wrong("stream_options.include_usage", "true or false"))?
                .unwrap_or(false),
            Some(_) => return Err(wrong("stream_options", "an object")),
        };
        let max_tokens = match integer(obj, "max_completion_tokens")? {
            Some(n) => Some((n, "max_completion_tokens")),
            None => integer(obj, "max_tokens")?.map(|n| (n, "max_tokens")),
        };
        let max_tokens = match max_tokens {
            None => None,
            Some((n, key)) if n >= 1 => Some(usize::try_from(n).map_err(|_| wrong(key, "≥ 1"))?),
            Some((_, key)) => return Err(wrong(key, "an integer ≥ 1")),
        };
        let mut s = defaults;
        if let Some(t) = number(obj, "temperature")? {
            s.temperature = t;
        }
        if let Some(p) = number(obj, "top_p")? {
            s.top_p = p;
        }
        if let Some(p) = number(obj, "min_p")? {
            s.min_p = p;
        }
        if let Some(k) = integer(obj, "top_k")? {
            // vLLM: -1 (or 0) keeps every token.
            s.top_k = usize::try_from(k.max(0)).unwrap_or(0);
        }
        if let Some(p) = number(obj, "presence_penalty")? {
            s.presence_penalty = p;
        }
        if let Some(p) = number(obj, "frequency_penalty")? {
            s.frequency_penalty = p;
        }
        if let Some(p) = number(obj, "repetition_penalty")? {
            s.repeat_penalty = p;
        }
        for (key, v, lo, hi) in [
            ("temperature", s.temperature, 0.0, 2.0),
            ("top_p", s.top_p, f32::MIN_POSITIVE, 1.0),
            ("min_p", s.min_p, 0.0, 1.0),
            ("presence_penalty", s.presence_penalty, -2.0, 2.0),
            ("frequency_penalty", s.frequency_penalty, -2.0, 2.0),
            (
                "repetition_penalty",
                s.repeat_penalty,
                f32::MIN_POSITIVE,
                10.0,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                let lo = if lo == f32::MIN_POSITIVE {
                    "above 0".to_string()
                } else {
                    format!("≥ {lo}")
                };
                return Err(ApiError::invalid(
                    format!("'{key}' is {v}; it must be {lo} and ≤ {hi}"),
                    Some(key),
                ));
            }
        }
        s.seed = match integer(obj, "seed")? {
            Some(seed) => seed as u64,
            None => fresh_seed(),
        };
        let stop = match field(obj, "stop") {
            None => Vec::new(),
            Some(Json::String(s)) => vec![s.clone()],
            Some(Json::Array(list)) => list
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(String::from)
                        .ok_or_else(|| wrong("stop", "a string or a list of strings"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(wrong("stop", "a string or a list of strings")),
        };
        if stop.len() > MAX_STOPS {
            return Err(ApiError::invalid(
                format!("'stop' has {} strings; at most {MAX_STOPS}", stop.len()),
                Some("stop"),
            ));
        }
        Ok(Generation {
            stream,
            include_usage: stream && include_usage,
            max_tokens,
            sampling: s,
            stop,
            ignore_eos: boolean(obj, "ignore_eos")?.unwrap_or(false),
        })
    }
}

impl ToolChoice {
    /// `tool_choice`: "auto" (default), "none", "required", or `{"type": "function",
    /// "function": {"name": N}}` naming one of `tools`.
    pub fn from_json(obj: &Fields) -> Result<Self, ApiError> {
        let bad = || {
            wrong(
                "tool_choice",
                "\"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
            )
        };
        let choice = match field(obj, "tool_choice") {
            None => ToolChoice::Auto,
            Some(Json::String(s)) => match s.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                _ => return Err(bad()),
            },
            Some(Json::Object(o)) => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Json::as_str)
                    .ok_or_else(bad)?;
                ToolChoice::Function(name.to_string())
            }
            Some(_) => return Err(bad()),
        };
        let tools = field(obj, "tools").and_then(Json::as_array);
        let named = |name: &str| {
            tools.into_iter().flatten().any(|t| {
                t.get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Json::as_str)
                    == Some(name)
            })
        };
        match &choice {
            ToolChoice::Required if tools.is_none_or(|t| t.is_empty()) => Err(ApiError::invalid(
                "tool_choice 'required' needs 'tools'",
                Some("tool_choice"),
            )),
            ToolChoice::Function(name) if !named(name) => Err(ApiError::invalid(
                format!("tool_choice names the function '{name}', which is not among 'tools'"),
                Some("tool_choice"),
            )),
            _ => Ok(choice),
        }
    }

    /// The request body the chat template sees: `none` drops the tools, a named function
    /// keeps only its own.
    pub fn tools_for_prompt(&self, body: &Fields) -> Fields {
        let mut body = body.clone();
        match self {
            ToolChoice::None => {
                body.remove("tools");
            }
            ToolChoice::Function(name) => {
                if let Some(Json::Array(tools)) = body.get_mut("tools") {
                    tools.retain(|t| {
                        t.get("function")
                            .and_then(|f| f.get("name"))
                            .and_then(Json::as_str)
                            == Some(name.as_str())
                    });
                }
            }
            ToolChoice::Auto | ToolChoice::Required => {}
        }
        body
    }

    /// Text put after the generation prompt so the model writes a call: the opening of
    /// LFM2's call list, with the function's name for a named choice.
    pub fn forced_prefix(&self) -> Option<String> {
        use crate::chat::TOOL_CALL_START;
        match self {
            ToolChoice::Required => Some(format!("{TOOL_CALL_START}[")),
            ToolChoice::Function(name) => Some(format!("{TOOL_CALL_START}[{name}(")),
            ToolChoice::Auto | ToolChoice::None => None,
        }
    }
}

/// A seed nobody chose: the standard library's per-process random hasher keys.
pub fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gen(v: Json) -> Result<Generation, ApiError> {
        Generation::from_json(v.as_object().unwrap(), SamplingParams::greedy())
    }

    #[test]
    fn fields_are_read_with_their_types_and_ranges() {
        let g = gen(
            json!({"stream": true, "stream_options": {"include_usage": true},
            "max_tokens": 5, "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9,
            "seed": 3, "stop": "x", "presence_penalty": 1, "n": 1}),
        )
        .unwrap();
        assert!(g.stream && g.include_usage);
        assert_eq!(g.max_tokens, Some(7));
        assert_eq!(
            (g.sampling.temperature, g.sampling.top_p, g.sampling.seed),
            (0.5, 0.9, 3)
        );
        assert_eq!(g.stop, ["x"]);
        for (body, param) in [
            (json!({"n": 2}), "n"),
            (json!({"temperature": "hot"}), "temperature"),
            (json!({"temperature": 3}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": 1.5}), "max_tokens"),
            (json!({"stop": [1]}), "stop"),
            (json!({"stream": "yes"}), "stream"),
            (json!({"logprobs": true}), "logprobs"),
            (
                json!({"response_format": {"type": "json_object"}}),
                "response_format",
            ),
        ] {
            let e = gen(body.clone()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn tool_choice_shapes_the_prompt_and_the_forced_prefix() {
        let body = json!({"tools": [
            {"type": "function", "function": {"name": "a"}},
            {"type": "function", "function": {"name": "b"}}],
            "tool_choice": {"type": "function", "function": {"name": "b"}}});
        let obj = body.as_object().unwrap();
        let c = ToolChoice::from_json(obj).unwrap();
        assert_eq!(c, ToolChoice::Function("b".into()));
        assert_eq!(
            c.tools_for_prompt(obj)["tools"].as_array().unwrap().len(),
            1
        );
        assert_eq!(c.forced_prefix().unwrap(), "<|tool_call_start|>[b(");
        let none = json!({"tools": [], "tool_choice": "none"});
        let none = none.as_object().unwrap();
        let c = ToolChoice::from_json(none).unwrap();
        assert!(!c.tools_for_prompt(none).contains_key("tools"));
        let missing =
            json!({"tools": [], "tool_choice": {"type": "function", "function": {"name": "z"}}});
        assert!(ToolChoice::from_json(missing.as_object().unwrap()).is_err());
        let bad = json!({"tool_choice": 3});
        assert!(ToolChoice::from_json(bad.as_object().unwrap()).is_err());
    }
}
