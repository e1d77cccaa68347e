//! OpenAI's JSON shapes: errors, chat completions and their stream chunks, text completions,
//! usage.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};

use crate::chat::ToolCall;
use crate::runtime::FinishReason;

/// An error as OpenAI returns it: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 `invalid_request_error`, about `param` when given.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(String::from),
            code: None,
        }
    }

    pub fn with_code(mut self, status: StatusCode, code: &'static str) -> Self {
        self.status = status;
        self.code = Some(code);
        self
    }

    /// A 500 `server_error`.
    pub fn server(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    pub fn body(&self) -> Json {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = json_response(self.status, &self.body());
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

pub fn json_response(status: StatusCode, body: &Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `usage`, with the prompt tokens a slot already held as `cached_tokens`.
pub fn usage(prompt: usize, completion: usize, cached: usize) -> Json {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// The OpenAI `finish_reason`: `tool_calls` when the message made calls and ended on its own.
pub fn finish_reason(reason: FinishReason, made_calls: bool) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        _ if made_calls => "tool_calls",
        _ => "stop",
    }
}

/// What every response and chunk of one request shares.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Envelope {
    fn with(&self, object: &str, choices: Json) -> Json {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// A whole `chat.completion`.
    pub fn chat(&self, message: Json, finish: &str, usage: Json) -> Json {
        let mut v = self.with(
            "chat.completion",
            json!([{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}]),
        );
        v["usage"] = usage;
        v
    }

    /// A `chat.completion.chunk` with `delta`; `usage: null` when usage will be streamed.
    pub fn chat_chunk(&self, delta: Json, finish: Option<&str>, with_usage: bool) -> Json {
        let mut v = self.with(
            "chat.completion.chunk",
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]),
        );
        if with_usage {
            v["usage"] = Json::Null;
        }
        v
    }

    /// The last chunk of a stream with `stream_options.include_usage`: no choices, the usage.
    pub fn usage_chunk(&self, object: &str, usage: Json) -> Json {
        let mut v = self.with(object, json!([]));
        v["usage"] = usage;
        v
    }

    /// A whole `text_completion`.
    pub fn completion(&self, text: &str, finish: &str, usage: Json) -> Json {
        let mut v = self.with(
            "text_completion",
            json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]),
        );
        v["usage"] = usage;
        v
    }

    /// A `text_completion` stream chunk.
    pub fn completion_chunk(&self, text: &str, finish: Option<&str>, with_usage: bool) -> Json {
        let mut v = self.with(
            "text_completion",
            json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]),
        );
        if with_usage {
            v["usage"] = Json::Null;
        }
        v
    }
}

/// A streamed tool call, whole (name and arguments in one delta, as vLLM and llama-server
/// send a call their parser completes at once); `index` is its place in the message and the
/// id is the one [`crate::chat::AssistantMessage::to_json`] gives it.
pub fn tool_call_delta(index: usize, call: &ToolCall) -> Json {
    json!({"tool_calls": [{
        "index": index,
        "id": format!("call_{index}"),
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }]})
}

/// One server-sent event carrying `data`.
pub fn sse(data: &Json) -> String {
    format!("data: {data}\n\n")
}

/// The end of a stream.
pub const SSE_DONE: &str = "data: [DONE]\n\n";
