//! The HTTP side: routes, the API key, body and prompt limits, requests into engine jobs, and
//! engine events back into OpenAI responses or server-sent event streams.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value as Json};
use tokenizers::Tokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::engine::{Busy, Engine, Event};
use super::openai::{self, sse, ApiError, Envelope, SSE_DONE};
use super::pipeline::Pipeline;
use super::request::{fresh_seed, Generation, ToolChoice};
use super::ui;
use crate::chat::{AssistantMessage, ChatRequest, ChatTemplate, OutputParser, ParseEvent};
use crate::error::Error;
use crate::kernels::sample::SamplingParams;
use crate::runtime::{FinishReason, ModelFiles};

/// What the HTTP side knows of the model: its name, tokenizer, chat template and special
/// tokens, the context, and the checkpoint's sampling defaults.
pub struct ModelText {
    pub name: String,
    pub tokenizer: Arc<Tokenizer>,
    pub template: ChatTemplate,
    pub opens_reasoning: bool,
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
    pub vocab: usize,
    pub defaults: SamplingParams,
}

impl ModelText {
    /// The text side of `files` (which must have a tokenizer) with its chat `template`.
    pub fn new(files: &ModelFiles, template: ChatTemplate) -> crate::Result<Self> {
        let tokenizer = files.tokenizer.clone().ok_or_else(|| {
            Error::Input(format!(
                "{} has no tokenizer (no tokenizer.json, no GGUF tokenizer metadata); the server needs one",
                files.dir.display()
            ))
        })?;
        let name = files
            .dir
            .file_stem()
            .map_or("wmoe".into(), |n| n.to_string_lossy().into_owned());
        Ok(ModelText {
            name,
            tokenizer: Arc::new(tokenizer),
            opens_reasoning: template.opens_reasoning(),
            template,
            bos: files.config.bos,
            eos: files.config.eos.clone(),
            vocab: files.config.vocab,
            defaults: files.generation,
        })
    }
}

/// What the server accepts.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Positions per slot: prompt plus generated tokens.
    pub context: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest `max_tokens`, and the budget of a request that gives none.
    pub max_tokens: usize,
    /// Open connections served at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// How long a connection may take to send a request's head, or stay idle between
    /// requests, before it is dropped.
    pub idle_timeout: Duration,
    /// Required as `Authorization: Bearer KEY` on every route but `/health`.
    pub api_key: Option<String>,
}

/// The server's state: the model's text side, the engine, the limits.
pub struct App {
    pub text: ModelText,
    pub engine: Engine,
    pub limits: Limits,
}

/// The routes, behind the API key check and request counting.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(ui::routes())
        .fallback(|| async {
            ApiError::invalid("no such route; see / (the chat page), /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics", None)
                .with_code(StatusCode::NOT_FOUND, "not_found")
        })
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// The API key check (every route but `/health` and the chat page's files), then the request; `/v1` outcomes counted.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if let Some(key) = &app.limits.api_key {
        let given = bearer(req.headers()).unwrap_or_default();
        let open = path == "/health" || ui::is_asset(&path);
        if !open && !same_key(given.as_bytes(), key.as_bytes()) {
            return ApiError::invalid("missing or wrong API key: send 'Authorization: Bearer KEY' with the server's --api-key", None)
                .with_code(StatusCode::UNAUTHORIZED, "invalid_api_key")
                .into_response();
        }
    }
    let response = next.run(req).await;
    if path.starts_with("/v1/") {
        let s = &app.engine.stats;
        let counter = match response.status() {
            st if st.is_success() => &s.requests_ok,
            StatusCode::SERVICE_UNAVAILABLE => &s.requests_rejected_busy,
            st if st.is_client_error() => &s.requests_client_error,
            _ => return response, // engine failures are counted by the engine
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    response
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|k| k.trim().to_string())
}

/// `given == key` in a time that depends on `key`'s length only, not on where they differ.
fn same_key(given: &[u8], key: &[u8]) -> bool {
    let mut diff = given.len() ^ key.len();
    for (i, k) in key.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ k);
    }
    std::hint::black_box(diff) == 0
}

async fn health() -> Response {
    openai::json_response(StatusCode::OK, &json!({"status": "ok"}))
}

async fn models(State(app): State<Arc<App>>) -> Response {
    let body = json!({"object": "list", "data": [{
        "id": app.text.name,
        "object": "model",
        "created": now(),
        "owned_by": "wmoe",
        "max_model_len": app.limits.context,
    }]});
    openai::json_response(StatusCode::OK, &body)
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app.engine.stats.prometheus(app.engine.queued());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The body as a JSON object, within the size limit.
async fn read_json(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<Map<String, Json>, ApiError> {
    let limit = app.limits.max_body_bytes;
    let too_large = || {
        ApiError::invalid(
            format!("the request body exceeds the server's limit of {limit} bytes"),
            None,
        )
        .with_code(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    json_object(&bytes)
}

/// A request body as a JSON object.
fn json_object(bytes: &[u8]) -> Result<Map<String, Json>, ApiError> {
    match serde_json::from_slice::<Json>(bytes) {
        Ok(Json::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::invalid(
            "the request body must be a JSON object",
            None,
        )),
        Err(e) => Err(ApiError::invalid(
            format!("the request body is not valid JSON: {e}"),
            None,
        )),
    }
}

/// A request ready for the engine.
struct Prepared {
    prompt: Vec<u32>,
    generation: Generation,
    max_tokens: usize,
    pipeline: Pipeline,
    /// Events of the preamble (a forced tool-call opening), emitted first.
    preamble_events: Vec<ParseEvent>,
    envelope: Envelope,
}

/// Which endpoint a stream answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

async fn chat(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let body = read_json(&app, &headers, body).await?;
        let p = prepare_chat(&app, &body)?;
        respond(&app, p, Kind::Chat).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let body = read_json(&app, &headers, body).await?;
        let p = prepare_completion(&app, &body)?;
        respond(&app, p, Kind::Completion).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// What a request body sent to `/v1/chat/completions` (`chat`) or `/v1/completions` comes
/// to before the engine, through the routes' own steps (JSON, fields, template, tokens,
/// limits): the prompt's length in tokens, or the status and message it is answered with.
/// The fuzz target `serve_request` drives it.
pub fn check_request(app: &App, chat: bool, body: &[u8]) -> Result<usize, (StatusCode, String)> {
    let body = json_object(body).map_err(|e| (e.status, e.message))?;
    let prepared = match chat {
        true => prepare_chat(app, &body),
        false => prepare_completion(app, &body),
    };
    prepared
        .map(|p| p.prompt.len())
        .map_err(|e| (e.status, e.message))
}

fn input_error(e: Error, param: Option<&str>) -> ApiError {
    match e {
        Error::Input(msg) => ApiError::invalid(msg, param),
        other => ApiError::server(other.to_string()),
    }
}

fn prepare_chat(app: &App, body: &Map<String, Json>) -> Result<Prepared, ApiError> {
    let generation = Generation::from_json(body, app.text.defaults)?;
    let choice = ToolChoice::from_json(body)?;
    let for_prompt = choice.tools_for_prompt(body);
    let request = ChatRequest::from_json(&Json::Object(for_prompt))
        .map_err(|e| input_error(e, Some("messages")))?;
    let mut text = app.text.template.render(&request).map_err(|e| match e {
        // A template that cannot render these messages (a shape it does not expect)
        // refuses the request, as vLLM does: the server is fine.
        Error::File { .. } => ApiError::invalid(e.to_string(), Some("messages")),
        e => input_error(e, Some("messages")),
    })?;
    let preamble = choice
        .forced_prefix()
        .map(|p| match app.text.opens_reasoning {
            true => format!("{}{p}", crate::chat::THINK_END),
            false => p,
        });
    if let Some(p) = &preamble {
        text.push_str(p);
    }
    let prompt = tokenize(&app.text.tokenizer, &text)?;
    let mut parser = OutputParser::new(app.text.opens_reasoning);
    if choice == ToolChoice::None {
        parser = parser.without_tool_calls();
    }
    finish_prepare(
        app,
        prompt,
        generation,
        Some(parser),
        preamble.as_deref(),
        "chatcmpl",
    )
}

fn prepare_completion(app: &App, body: &Map<String, Json>) -> Result<Prepared, ApiError> {
    let mut generation = Generation::from_json(body, app.text.defaults)?;
    // OpenAI's default for text completions.
    generation.max_tokens.get_or_insert(16);
    let bad = || {
        ApiError::invalid(
            "'prompt' must be a string, a list of token ids, or a list of one of those",
            Some("prompt"),
        )
    };
    let prompt = match body.get("prompt") {
        Some(Json::Array(list)) if list.len() == 1 && !list[0].is_number() => &list[0],
        Some(p) => p,
        None => return Err(ApiError::invalid("'prompt' is required", Some("prompt"))),
    };
    let prompt = match prompt {
        Json::String(s) => {
            let mut ids: Vec<u32> = app.text.bos.into_iter().collect();
            ids.extend(tokenize(&app.text.tokenizer, s)?);
            ids
        }
        Json::Array(list) => list
            .iter()
            .map(|t| {
                t.as_u64()
                    .filter(|&t| t < app.text.vocab as u64)
                    .map(|t| t as u32)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            format!(
                                "'prompt' token {t} is not a token id below the vocabulary size {}",
                                app.text.vocab
                            ),
                            Some("prompt"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    finish_prepare(app, prompt, generation, None, None, "cmpl")
}

fn tokenize(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, ApiError> {
    tokenizer
        .encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| ApiError::server(format!("cannot tokenize the prompt: {e}")))
}

/// Checks the prompt and budget against the context and limits, and builds the pipeline.
fn finish_prepare(
    app: &App,
    prompt: Vec<u32>,
    generation: Generation,
    parser: Option<OutputParser>,
    preamble: Option<&str>,
    id_prefix: &str,
) -> Result<Prepared, ApiError> {
    let ctx = app.limits.context;
    let n = prompt.len();
    let too_long = |msg: String| {
        ApiError::invalid(msg, Some("messages"))
            .with_code(StatusCode::BAD_REQUEST, "context_length_exceeded")
    };
    if n == 0 {
        return Err(ApiError::invalid("the prompt is empty", Some("prompt")));
    }
    if n >= ctx {
        return Err(too_long(format!(
            "the prompt is {n} tokens; the server's context is {ctx} tokens (prompt and completion together): shorten it, or restart the server with a larger --ctx"
        )));
    }
    let max_tokens = match generation.max_tokens {
        Some(m) if m > app.limits.max_tokens => {
            return Err(ApiError::invalid(
                format!("'max_tokens' is {m}; the server allows at most {}", app.limits.max_tokens),
                Some("max_tokens"),
            ))
        }
        Some(m) if n + m > ctx => {
            return Err(too_long(format!(
                "the prompt ({n} tokens) plus 'max_tokens' ({m}) exceed the server's context of {ctx} tokens; ask for at most {} tokens",
                ctx - n
            )))
        }
        Some(m) => m,
        None => app.limits.max_tokens.min(ctx - n),
    };
    let (pipeline, preamble_events) = Pipeline::new(
        app.text.tokenizer.clone(),
        generation.stop.clone(),
        parser,
        preamble,
        app.text.eos.clone(),
        generation.ignore_eos,
    );
    let envelope = Envelope {
        id: format!("{id_prefix}-{:016x}", fresh_seed()),
        created: now(),
        model: app.text.name.clone(),
    };
    Ok(Prepared {
        prompt,
        generation,
        max_tokens,
        pipeline,
        preamble_events,
        envelope,
    })
}

/// Submits the job, then answers whole or as a stream.
async fn respond(app: &App, p: Prepared, kind: Kind) -> Result<Response, ApiError> {
    let (tx, rx) = unbounded_channel();
    let prompt_tokens = p.prompt.len();
    app.engine
        .submit(
            p.prompt,
            p.generation.sampling,
            p.max_tokens,
            p.generation.ignore_eos,
            tx,
        )
        .map_err(|Busy| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "the server is busy: {} slot(s) generating and the queue full; retry later",
                app.engine.slots()
            ),
            kind: "server_error",
            param: None,
            code: Some("server_busy"),
        })?;
    let out = Output {
        rx: Some(rx),
        pipeline: p.pipeline,
        envelope: p.envelope,
        kind,
        prompt_tokens,
        cached_tokens: 0,
        calls: 0,
        include_usage: p.generation.include_usage,
        frames: VecDeque::new(),
        ended: false,
    };
    if p.generation.stream {
        Ok(stream(out, p.preamble_events))
    } else {
        whole(out, p.preamble_events).await
    }
}

/// One request's output on its way back: engine events in, OpenAI chunks out.
struct Output {
    /// Dropped (stopping the engine's job) when a stop string ends the output.
    rx: Option<UnboundedReceiver<Event>>,
    pipeline: Pipeline,
    envelope: Envelope,
    kind: Kind,
    prompt_tokens: usize,
    cached_tokens: usize,
    /// Tool calls emitted so far.
    calls: usize,
    include_usage: bool,
    /// Stream frames ready to send.
    frames: VecDeque<String>,
    ended: bool,
}

/// What the next engine event meant for the output.
enum Step {
    Events(Vec<ParseEvent>),
    Finished(Vec<ParseEvent>, FinishReason),
    Failed(String),
}

impl Output {
    async fn next(&mut self) -> Step {
        let Some(rx) = self.rx.as_mut() else {
            return Step::Failed("the output already ended".into());
        };
        match rx.recv().await {
            Some(Event::Started { cached_tokens }) => {
                self.cached_tokens = cached_tokens;
                Step::Events(Vec::new())
            }
            Some(Event::Token(t)) => match self.pipeline.token(t) {
                (events, true) => {
                    self.rx = None;
                    Step::Finished(events, FinishReason::Stopped)
                }
                (events, false) => Step::Events(events),
            },
            Some(Event::Finished(reason)) => {
                self.rx = None;
                Step::Finished(self.pipeline.finish(), reason)
            }
            Some(Event::Error(msg)) => Step::Failed(msg),
            None => Step::Failed("the engine stopped before the request finished".into()),
        }
    }

    fn usage(&self) -> Json {
        openai::usage(
            self.prompt_tokens,
            self.pipeline.completion_tokens,
            self.cached_tokens,
        )
    }

    /// The stream frames of `events`.
    fn push_events(&mut self, events: Vec<ParseEvent>) {
        for e in events {
            let frame = match (self.kind, e) {
                (Kind::Completion, ParseEvent::Content(t)) => {
                    self.envelope.completion_chunk(&t, None, self.include_usage)
                }
                (Kind::Completion, _) => continue,
                (Kind::Chat, ParseEvent::Content(t)) => self.chunk(json!({"content": t}), None),
                (Kind::Chat, ParseEvent::Reasoning(t)) => {
                    self.chunk(json!({"reasoning_content": t}), None)
                }
                (Kind::Chat, ParseEvent::ToolCall(c)) => {
                    self.calls += 1;
                    self.chunk(openai::tool_call_delta(self.calls - 1, &c), None)
                }
            };
            self.frames.push_back(sse(&frame));
        }
    }

    fn chunk(&self, delta: Json, finish: Option<&str>) -> Json {
        self.envelope.chat_chunk(delta, finish, self.include_usage)
    }

    /// The last frames: the finish reason, the usage when asked for, `[DONE]`.
    fn push_end(&mut self, reason: FinishReason) {
        let finish = openai::finish_reason(reason, self.calls > 0);
        let last = match self.kind {
            Kind::Chat => self.chunk(json!({}), Some(finish)),
            Kind::Completion => {
                self.envelope
                    .completion_chunk("", Some(finish), self.include_usage)
            }
        };
        self.frames.push_back(sse(&last));
        if self.include_usage {
            let object = match self.kind {
                Kind::Chat => "chat.completion.chunk",
                Kind::Completion => "text_completion",
            };
            let u = self.envelope.usage_chunk(object, self.usage());
            self.frames.push_back(sse(&u));
        }
        self.frames.push_back(SSE_DONE.into());
        self.ended = true;
    }

    /// Reads engine events until there are frames to send (or the stream ended).
    async fn advance(&mut self) {
        match self.next().await {
            Step::Events(events) => self.push_events(events),
            Step::Finished(events, reason) => {
                self.push_events(events);
                self.push_end(reason);
            }
            Step::Failed(msg) => {
                self.rx = None;
                let err = ApiError::server(msg).body();
                self.frames.push_back(sse(&err));
                self.frames.push_back(SSE_DONE.into());
                self.ended = true;
            }
        }
    }
}

/// The answer as server-sent events; dropping the body (the client left) drops the engine
/// receiver, which stops the job.
fn stream(mut out: Output, preamble: Vec<ParseEvent>) -> Response {
    if out.kind == Kind::Chat {
        let first = out.chunk(json!({"role": "assistant", "content": ""}), None);
        out.frames.push_back(sse(&first));
    }
    out.push_events(preamble);
    let frames = futures_util::stream::unfold(out, |mut out| async move {
        loop {
            if let Some(f) = out.frames.pop_front() {
                return Some((Ok::<_, Infallible>(f), out));
            }
            if out.ended {
                return None;
            }
            out.advance().await;
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}

/// The whole answer once generation ends.
async fn whole(mut out: Output, preamble: Vec<ParseEvent>) -> Result<Response, ApiError> {
    let mut events = preamble;
    let reason = loop {
        match out.next().await {
            Step::Events(e) => events.extend(e),
            Step::Finished(e, reason) => {
                events.extend(e);
                break reason;
            }
            Step::Failed(msg) => return Err(ApiError::server(msg)),
        }
    };
    let body = match out.kind {
        Kind::Chat => {
            let m = AssistantMessage::from_events(events);
            let finish = openai::finish_reason(reason, !m.tool_calls.is_empty());
            out.envelope.chat(m.to_json(), finish, out.usage())
        }
        Kind::Completion => {
            let text: String = events
                .into_iter()
                .filter_map(|e| match e {
                    ParseEvent::Content(t) => Some(t),
                    _ => None,
                })
                .collect();
            let finish = openai::finish_reason(reason, false);
            out.envelope.completion(&text, finish, out.usage())
        }
    };
    Ok(openai::json_response(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::same_key;

    #[test]
    fn keys_compare_whole() {
        assert!(same_key(b"secret", b"secret"));
        for given in [&b"secreT"[..], b"secret2", b"secre", b"", b"Secret"] {
            assert!(!same_key(given, b"secret"), "{given:?}");
        }
    }
}
