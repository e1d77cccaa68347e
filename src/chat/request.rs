//! An OpenAI chat request body as a chat template sees it: `messages`, `tools`, `documents`,
//! `add_generation_prompt` (default true) and `chat_template_kwargs`, prepared as transformers'
//! `apply_chat_template` prepares them: keys whose value is null dropped from each message,
//! and reasoning given as `reasoning_content`, `thinking` or `reasoning` also present as
//! `thinking` and `reasoning_content`. Everything else reaches the template as given (tool-call
//! arguments as a JSON string or an object, list-of-parts content), in the request's key order.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::Value;
use serde_json::{Map, Value as Json};

use super::jinja::from_json;
use crate::error::{Error, Result};

/// The names a message's reasoning may come under; the first present one is used.
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// The variables a request sets itself, which `chat_template_kwargs` may not set.
const RESERVED: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];

/// A chat request, ready to render.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    /// The messages after transformers' preparation (see the module doc).
    pub messages: Vec<Map<String, Json>>,
    pub tools: Option<Json>,
    pub documents: Option<Json>,
    pub add_generation_prompt: bool,
    /// Extra template variables (`chat_template_kwargs`); they override the special tokens.
    pub template_kwargs: Map<String, Json>,
}

impl ChatRequest {
    /// The request in the JSON file `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let v: Json = serde_json::from_slice(&bytes)
            .map_err(|e| Error::file(path, format!("not valid JSON: {e}")))?;
        Self::from_json(&v).map_err(|e| match e {
            Error::Input(msg) => Error::file(path, msg),
            other => other,
        })
    }

    /// The request in an OpenAI chat request body; other fields (`model`, sampling) are
    /// ignored.
    pub fn from_json(body: &Json) -> Result<Self> {
        let obj = body
            .as_object()
            .ok_or_else(|| bad("the request must be a JSON object with \"messages\"".into()))?;
        let messages = match obj.get("messages") {
            Some(Json::Array(m)) if !m.is_empty() => m,
            Some(Json::Array(_)) => {
                return Err(bad(
                    "\"messages\" is empty; give at least one message".into()
                ))
            }
            _ => return Err(bad("\"messages\" must be a list of message objects".into())),
        };
        let messages = messages
            .iter()
            .enumerate()
            .map(|(i, m)| match m {
                Json::Object(m) => Ok(prepare_message(m)),
                _ => Err(bad(format!("messages[{i}] is not an object"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let present = |key: &str| obj.get(key).filter(|v| !v.is_null());
        let add_generation_prompt = match present("add_generation_prompt") {
            None => true,
            Some(Json::Bool(b)) => *b,
            Some(_) => return Err(bad("\"add_generation_prompt\" must be true or false".into())),
        };
        let template_kwargs = match present("chat_template_kwargs") {
            None => Map::new(),
            Some(Json::Object(k)) => k.clone(),
            Some(_) => return Err(bad("\"chat_template_kwargs\" must be an object".into())),
        };
        if let Some(k) = RESERVED.iter().find(|k| template_kwargs.contains_key(**k)) {
            return Err(bad(format!("\"chat_template_kwargs\" may not set '{k}'; give it at the top level of the request")));
        }
        let tools = present("tools").cloned();
        if let Some(tools) = &tools {
            check_tools(tools)?;
        }
        Ok(ChatRequest {
            messages,
            tools,
            documents: present("documents").cloned(),
            add_generation_prompt,
            template_kwargs,
        })
    }

    /// A request of one user message, with the generation prompt.
    pub fn user(text: &str) -> Self {
        let mut m = Map::new();
        m.insert("role".into(), Json::from("user"));
        m.insert("content".into(), Json::from(text));
        ChatRequest {
            messages: vec![m],
            tools: None,
            documents: None,
            add_generation_prompt: true,
            template_kwargs: Map::new(),
        }
    }

    /// The template's variables: the special tokens, overridden by `chat_template_kwargs`,
    /// then `messages`, `tools`, `documents` and `add_generation_prompt`.
    pub(crate) fn context(&self, special_tokens: &[(String, String)]) -> Value {
        let mut vars: BTreeMap<String, Value> = special_tokens
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        for (k, v) in &self.template_kwargs {
            vars.insert(k.clone(), from_json(v));
        }
        let messages: Vec<Value> = self
            .messages
            .iter()
            .map(|m| from_json(&Json::Object(m.clone())))
            .collect();
        let opt = |v: &Option<Json>| v.as_ref().map(from_json).unwrap_or(Value::from(()));
        vars.insert("messages".into(), Value::from(messages));
        vars.insert("tools".into(), opt(&self.tools));
        vars.insert("documents".into(), opt(&self.documents));
        vars.insert(
            "add_generation_prompt".into(),
            Value::from(self.add_generation_prompt),
        );
        Value::from(vars)
    }
}

/// transformers accepts tools as JSON schemas (objects) only.
fn check_tools(tools: &Json) -> Result<()> {
    let Json::Array(list) = tools else {
        return Err(bad("\"tools\" must be a list of tool objects".into()));
    };
    match list.iter().position(|t| !t.is_object()) {
        Some(i) => Err(bad(format!(
            "tools[{i}] is not an object; give each tool as a JSON schema object"
        ))),
        None => Ok(()),
    }
}

fn bad(msg: String) -> Error {
    Error::Input(msg)
}

/// transformers' `_normalize_chat_messages` (null values dropped) then
/// `_alias_reasoning_fields` (`{"thinking": r, **message, "reasoning_content": r}`).
fn prepare_message(m: &Map<String, Json>) -> Map<String, Json> {
    let mut m: Map<String, Json> = m
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let Some(reasoning) = REASONING_FIELDS.iter().find_map(|f| m.get(*f)).cloned() else {
        return m;
    };
    let mut aliased = Map::new();
    aliased.insert("thinking".into(), reasoning.clone());
    aliased.append(&mut m);
    aliased.insert("reasoning_content".into(), reasoning);
    aliased
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_are_prepared_as_transformers_prepares_them() {
        let r = ChatRequest::from_json(&json!({"messages": [
            {"role": "assistant", "content": null, "reasoning": "r", "tool_calls": []},
            {"role": "assistant", "reasoning_content": "a", "thinking": "b"},
        ]}))
        .unwrap();
        let keys = |m: &Map<String, Json>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(&r.messages[0]),
            [
                "thinking",
                "role",
                "reasoning",
                "tool_calls",
                "reasoning_content"
            ]
        );
        // `thinking` keeps its first place and the message's value; reasoning_content wins.
        assert_eq!(r.messages[1]["thinking"], "b");
        assert_eq!(
            keys(&r.messages[1]),
            ["thinking", "role", "reasoning_content"]
        );
        assert!(r.add_generation_prompt);
    }

    #[test]
    fn malformed_requests_are_clear_errors() {
        for (body, needle) in [
            (json!([1]), "JSON object"),
            (json!({"messages": []}), "empty"),
            (json!({"messages": ["hi"]}), "messages[0]"),
            (json!({"messages": [{}], "tools": ["f"]}), "tools[0]"),
            (
                json!({"messages": [{}], "tools": {"f": 1}}),
                "list of tool objects",
            ),
            (
                json!({"messages": [{}], "add_generation_prompt": "yes"}),
                "add_generation_prompt",
            ),
            (
                json!({"messages": [{}], "chat_template_kwargs": {"messages": 1}}),
                "may not set 'messages'",
            ),
        ] {
            let e = ChatRequest::from_json(&body).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
