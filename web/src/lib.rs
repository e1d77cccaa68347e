//! wmoe in a browser tab: the runtime compiled to wasm32 on the browser's WebGPU, with
//! wasm-bindgen bindings. A [`WebModel`] is a model on the tab's GPU with one sequence:
//! load the bundled model, a GGUF file streamed in byte ranges from a URL or a picked File
//! (`ranges`: the wasm heap never holds the weights), or a file's bytes; then prefill, decode
//! and generate, each call a promise (the browser reads the GPU back asynchronously).

mod ranges;

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;

use js_sys::{Float32Array, Function, Promise, Uint32Array, Uint8Array};
use serde_json::{json, Value as Json};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::future_to_promise;
use wmoe::model::RangeRead;
use wmoe::{
    generate_text_async, parse_output, ChatRequest, ChatTemplate, Conversation, DeviceOptions,
    Flow, GenerateOptions, GpuContext, LogitsMode, Model, ModelFiles, ParseEvent, Session,
    SessionOptions,
};

use ranges::{BlobReader, UrlReader};

/// The tab's GPU device, opened by the first load and kept for the page's life.
async fn device() -> Result<&'static GpuContext, JsValue> {
    thread_local! {
        static DEVICE: RefCell<Option<&'static GpuContext>> = const { RefCell::new(None) };
    }
    if let Some(ctx) = DEVICE.with_borrow(|d| *d) {
        return Ok(ctx);
    }
    let ctx = GpuContext::new_async(&DeviceOptions::default())
        .await
        .map_err(js_error)?;
    let ctx: &'static GpuContext = Box::leak(Box::new(ctx));
    DEVICE.with_borrow_mut(|d| *d = Some(ctx));
    Ok(ctx)
}

/// The error of a call made while another runs.
fn busy() -> JsValue {
    js_sys::Error::new("the model is busy with another call").into()
}

fn js_error(e: wmoe::Error) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

/// A loaded model, the session that runs its one sequence, and its chat.
struct Loaded {
    /// Leaked from a box in [`Loaded::new`] and reclaimed on drop, after the session that
    /// borrows it.
    model: &'static Model,
    session: Option<Session<'static>>,
    /// The chat over the session: messages rendered with the model's template.
    chat: Result<Conversation, String>,
}

impl Loaded {
    fn new(model: Model, template: Option<wmoe::Result<ChatTemplate>>) -> Self {
        let chat = match template {
            None => Err("this model has no chat template".to_string()),
            Some(t) => t
                .and_then(|t| Conversation::new(t, None, None))
                .map_err(|e| e.to_string()),
        };
        Loaded {
            model: Box::leak(Box::new(model)),
            session: None,
            chat,
        }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // The session borrows the model: it goes first.
        self.session = None;
        // SAFETY: `model` came from `Box::leak` in `Loaded::new`, nothing else holds it (the
        // session, its only borrower, is gone), and it is reclaimed only here, once.
        drop(unsafe { Box::from_raw(self.model as *const Model as *mut Model) });
    }
}

/// A model on the tab's GPU with one sequence. Calls that touch the GPU return promises;
/// one runs at a time (a call while another runs is refused).
#[wasm_bindgen]
pub struct WebModel {
    ctx: &'static GpuContext,
    /// The model `inner` owns (alive as long as this handle holds `inner`).
    model: &'static Model,
    inner: Rc<RefCell<Loaded>>,
    /// Set by `stop()`: the running generation ends at its next token.
    stop: Rc<Cell<bool>>,
}

async fn upload(
    mut files: ModelFiles,
    template: Option<wmoe::Result<ChatTemplate>>,
) -> Result<WebModel, JsValue> {
    let ctx = device().await?;
    let template = template.or(files.chat_template.take());
    let model = Model::upload(ctx, files, None, false).map_err(js_error)?;
    Ok(WebModel::new(ctx, model, template))
}

/// Loads the GGUF file `reader` reads in byte ranges: its header first, then each chunk of
/// weights read, converted, written to its GPU page and dropped. `on_progress(read, total)`
/// (bytes of weights) follows the load.
async fn stream_gguf(
    name: &str,
    reader: Box<dyn RangeRead>,
    on_progress: Option<Function>,
) -> Result<WebModel, JsValue> {
    let ctx = device().await?;
    let mut files = ModelFiles::from_gguf_ranges(Path::new(name), reader)
        .await
        .map_err(js_error)?;
    let template = files.chat_template.take();
    let report = |done: u64, total: u64| {
        if let Some(f) = &on_progress {
            let _ = f.call2(
                &JsValue::NULL,
                &(done as f64).into(),
                &(total as f64).into(),
            );
        }
    };
    let model = Model::upload_async(ctx, files, None, Some(&report))
        .await
        .map_err(js_error)?;
    Ok(WebModel::new(ctx, model, template))
}

#[wasm_bindgen]
impl WebModel {
    /// An `lfm2` / `lfm2moe` GGUF file at `url`, streamed in byte ranges (the server must
    /// answer `Range` requests); `on_progress(read, total)` is called with the bytes of
    /// weights read so far.
    #[wasm_bindgen(js_name = loadGgufUrl)]
    pub async fn load_gguf_url(
        url: String,
        on_progress: Option<Function>,
    ) -> Result<WebModel, JsValue> {
        let reader = UrlReader::open(&url).await.map_err(js_error)?;
        stream_gguf(&url, Box::new(reader), on_progress).await
    }

    /// An `lfm2` / `lfm2moe` GGUF File or Blob (picked or dropped), read in slices; `name`
    /// names it in errors; `on_progress` as in `loadGgufUrl`.
    #[wasm_bindgen(js_name = loadGgufFile)]
    pub async fn load_gguf_file(
        file: web_sys::Blob,
        name: String,
        on_progress: Option<Function>,
    ) -> Result<WebModel, JsValue> {
        let reader = BlobReader::new(file, name.clone());
        stream_gguf(&name, Box::new(reader), on_progress).await
    }

    /// Bytes of the wasm heap: it only grows, so this is the peak so far (model files read in
    /// ranges keep it far below the model's size).
    #[wasm_bindgen(js_name = wasmMemoryBytes)]
    pub fn wasm_memory_bytes() -> f64 {
        let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
        memory
            .buffer()
            .unchecked_into::<js_sys::ArrayBuffer>()
            .byte_length() as f64
    }

    /// The model compiled into wmoe (the small demo LFM2-MoE).
    #[wasm_bindgen(js_name = loadBundled)]
    pub async fn load_bundled() -> Result<WebModel, JsValue> {
        upload(
            ModelFiles::bundled().map_err(js_error)?,
            Some(ChatTemplate::bundled()),
        )
        .await
    }

    /// An `lfm2` / `lfm2moe` GGUF file's bytes; `name` names it in errors.
    #[wasm_bindgen(js_name = loadGguf)]
    pub async fn load_gguf(name: String, bytes: Vec<u8>) -> Result<WebModel, JsValue> {
        upload(
            ModelFiles::from_gguf_bytes(Path::new(&name), bytes).map_err(js_error)?,
            None,
        )
        .await
    }

    /// A Hugging Face checkpoint's files: `config.json`, a single `model.safetensors`, and
    /// optionally `tokenizer.json` and `generation_config.json`; `name` names it in errors.
    #[wasm_bindgen(js_name = loadCheckpoint)]
    pub async fn load_checkpoint(
        name: String,
        config: Vec<u8>,
        model: Vec<u8>,
        tokenizer: Option<Uint8Array>,
        generation: Option<Uint8Array>,
    ) -> Result<WebModel, JsValue> {
        let (tokenizer, generation) = (
            tokenizer.map(|t| t.to_vec()),
            generation.map(|g| g.to_vec()),
        );
        upload(
            ModelFiles::from_checkpoint_bytes(
                Path::new(&name),
                &config,
                model,
                tokenizer.as_deref(),
                generation.as_deref(),
            )
            .map_err(js_error)?,
            None,
        )
        .await
    }

    /// The adapter and the device profile wmoe chose on it, in one line each (browsers may
    /// keep the adapter's name to themselves: then it is "unnamed adapter").
    pub fn adapter(&self) -> String {
        let info = &self.ctx.info;
        let name = match info.name.as_str() {
            "" => "unnamed adapter",
            name => name,
        };
        format!(
            "{name} ({:?}, {:?})\n{}",
            info.backend,
            info.device_type,
            self.ctx.profile()
        )
    }

    /// The vocabulary size (the length of one position's logits).
    pub fn vocab(&self) -> usize {
        self.model.config.vocab
    }

    /// Token ids of `text` with the model's tokenizer (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Uint32Array, JsValue> {
        let ids = self.model.encode(text).map_err(js_error)?;
        Ok(Uint32Array::from(&ids[..]))
    }

    /// Text of `ids` with the model's tokenizer.
    pub fn detokenize(&self, ids: &[u32]) -> Result<String, JsValue> {
        self.model
            .decode(ids)
            .map_err(js_error)?
            .ok_or_else(|| js_sys::Error::new("this model has no tokenizer").into())
    }

    /// Starts a new sequence of at most `max_context` tokens (f32 KV cache: the reference
    /// precision).
    pub fn reset(&self, max_context: usize) -> Result<(), JsValue> {
        let mut loaded = self.busy_checked()?;
        loaded.session = None;
        let session = Session::new(
            self.ctx,
            self.model,
            SessionOptions {
                max_context,
                kv: wmoe::KvType::F32,
                ..SessionOptions::default()
            },
        )
        .map_err(js_error)?;
        loaded.session = Some(session);
        Ok(())
    }

    /// Feeds `tokens`; resolves to the logits of every position (`all`, `[len * vocab]`) or
    /// of the last (`[vocab]`) as a Float32Array.
    pub fn prefill(&self, tokens: Vec<u32>, all: bool) -> Promise {
        let mode = if all {
            LogitsMode::All
        } else {
            LogitsMode::Last
        };
        self.run(move |s| {
            Box::pin(async move {
                let logits = s.prefill_async(&tokens, mode).await?;
                Ok(Float32Array::from(&logits[..]).into())
            })
        })
    }

    /// Feeds one token through the decode path; resolves to its `[vocab]` logits.
    pub fn decode(&self, token: u32) -> Promise {
        self.run(move |s| {
            Box::pin(async move {
                let logits = s.decode_async(token).await?;
                Ok(Float32Array::from(&logits[..]).into())
            })
        })
    }

    /// Greedy generation of up to `max_tokens` after `prompt` (stopping at an end-of-sequence
    /// token unless `ignore_eos`); `on_token(id)` is called with each token as it is read
    /// back, and returning `false` from it (or calling `stop()`) stops the generation.
    /// Resolves to the tokens.
    pub fn generate(
        &self,
        prompt: Vec<u32>,
        max_tokens: usize,
        ignore_eos: bool,
        on_token: Function,
    ) -> Promise {
        self.stop.set(false);
        let stop = self.stop.clone();
        self.run(move |s| {
            Box::pin(async move {
                let opts = GenerateOptions {
                    max_tokens,
                    ignore_eos,
                    ..GenerateOptions::default()
                };
                let mut tokens = Vec::new();
                s.generate_stream_async(&prompt, &opts, &mut |t| {
                    tokens.push(t);
                    match on_token.call1(&JsValue::NULL, &t.into()) {
                        _ if stop.get() => Flow::Stop,
                        Ok(v) if v == JsValue::FALSE => Flow::Stop,
                        _ => Flow::Continue,
                    }
                })
                .await?;
                Ok(Uint32Array::from(&tokens[..]).into())
            })
        })
    }

    /// Ends the running generation (`generate`, `generateText`, `chat`) at its next token.
    pub fn stop(&self) {
        self.stop.set(true);
    }

    /// The model's chat template applied to an OpenAI chat request (a JSON string with
    /// `messages` and optionally `tools`), with the generation prompt: the prompt text
    /// byte for byte as transformers renders it.
    #[wasm_bindgen(js_name = applyTemplate)]
    pub fn apply_template(&self, request: &str) -> Result<String, JsValue> {
        let loaded = self.busy_checked()?;
        let chat = loaded.chat.as_ref().map_err(|e| js_sys::Error::new(e))?;
        let body: Json = serde_json::from_str(request)
            .map_err(|e| js_sys::Error::new(&format!("the request is not JSON: {e}")))?;
        let request = ChatRequest::from_json(&body).map_err(js_error)?;
        chat.template().render(&request).map_err(js_error)
    }

    /// Starts a new chat (the session's tokens are reused where the new chat's prompt
    /// matches them): an optional system prompt, and optionally tools (a JSON string of an
    /// OpenAI request's `tools` list).
    #[wasm_bindgen(js_name = startChat)]
    pub fn start_chat(&self, system: Option<String>, tools: Option<String>) -> Result<(), JsValue> {
        let mut loaded = self.busy_checked()?;
        let chat = loaded.chat.as_mut().map_err(|e| js_sys::Error::new(e))?;
        let tools = match tools {
            None => Json::Null,
            Some(t) => serde_json::from_str(&t)
                .map_err(|e| js_sys::Error::new(&format!("the tools are not JSON: {e}")))?,
        };
        let state = json!({ "system": system, "tools": tools, "messages": [] });
        chat.restore(&state).map_err(js_error)
    }

    /// One chat turn: `user` joins the chat, the whole chat is rendered with the model's
    /// template, and the answer is generated with `settings` (an object with any of
    /// `maxTokens`, `temperature`, `topP`, `topK`, `minP`, `repeatPenalty`, `seed`, `stop`: a
    /// list of strings, `ignoreEos`: keep generating past an end-of-sequence token; the rest
    /// from the model's defaults). `on_piece(kind, text)` gets each piece as the output
    /// parser makes it certain: kind `"content"`, `"reasoning"` or `"tool_call"` (text: the
    /// call as JSON); returning `false` stops. Resolves to the OpenAI assistant message with
    /// `finish_reason`, `usage` and the token ids.
    pub fn chat(&self, user: String, settings: JsValue, on_piece: Function) -> Promise {
        let (opts, stops) = match self.generate_options(&settings) {
            Ok(o) => o,
            Err(e) => return Promise::reject(&e),
        };
        let stop = self.stop.clone();
        self.run_loaded(move |loaded| {
            Box::pin(async move {
                let Loaded { session, chat, .. } = loaded;
                let session = session.as_mut().expect("made by run_loaded");
                let chat = chat.as_mut().map_err(|e| wmoe::Error::Input(e.clone()))?;
                chat.options = opts;
                chat.stops = stops;
                let mut on_event = |e: &ParseEvent| {
                    let (kind, text) = match e {
                        ParseEvent::Content(t) => ("content", t.clone()),
                        ParseEvent::Reasoning(t) => ("reasoning", t.clone()),
                        ParseEvent::ToolCall(c) => (
                            "tool_call",
                            json!({ "name": c.name, "arguments": c.arguments }).to_string(),
                        ),
                    };
                    piece_flow(&on_piece, &stop, kind, &text)
                };
                let r = chat.turn_async(session, &user, &mut on_event).await?;
                let mut out = r.message.to_json();
                out["finish_reason"] = json!(r.finish.name());
                out["tokens"] = json!(r.tokens);
                out["usage"] = json!({
                    "prompt_tokens": r.prompt_tokens,
                    "reused_tokens": r.reused,
                    "completion_tokens": r.tokens.len(),
                    "context": r.context,
                });
                Ok(json_value(&out))
            })
        })
    }

    /// Plain text generation (no template) after `prompt`, with `settings` as in `chat`;
    /// `on_text(text)` gets each certain piece; returning `false` stops. Resolves to
    /// `{ text, tokens, finish_reason }`.
    #[wasm_bindgen(js_name = generateText)]
    pub fn generate_text(&self, prompt: String, settings: JsValue, on_text: Function) -> Promise {
        let (opts, stops) = match self.generate_options(&settings) {
            Ok(o) => o,
            Err(e) => return Promise::reject(&e),
        };
        let stop = self.stop.clone();
        let model = self.model;
        self.run(move |s| {
            Box::pin(async move {
                let ids = model.encode(&prompt)?;
                let mut on_text = |t: &str| piece_flow(&on_text, &stop, "content", t);
                let done = generate_text_async(s, &ids, &opts, &stops, false, &mut on_text).await?;
                Ok(json_value(&json!({
                    "text": done.text,
                    "tokens": done.tokens,
                    "finish_reason": done.finish.name(),
                })))
            })
        })
    }

    /// Generated text parsed as the chat does: the OpenAI assistant message (content,
    /// reasoning, tool calls) it holds; `in_reasoning` when the prompt opened a reasoning
    /// block.
    #[wasm_bindgen(js_name = parseOutput)]
    pub fn parse_output(text: &str, in_reasoning: bool) -> JsValue {
        json_value(&parse_output(text, in_reasoning).to_json())
    }
}

/// A future of a call's JS result, borrowing what it runs on.
type CallFuture<'s> =
    std::pin::Pin<Box<dyn std::future::Future<Output = wmoe::Result<JsValue>> + 's>>;

impl WebModel {
    fn new(
        ctx: &'static GpuContext,
        model: Model,
        template: Option<wmoe::Result<ChatTemplate>>,
    ) -> Self {
        let loaded = Loaded::new(model, template);
        WebModel {
            ctx,
            model: loaded.model,
            inner: Rc::new(RefCell::new(loaded)),
            stop: Rc::new(Cell::new(false)),
        }
    }

    /// The generation options of a `settings` object (see `chat`) over the model's defaults,
    /// and its stop strings; clears an earlier `stop()`.
    fn generate_options(
        &self,
        settings: &JsValue,
    ) -> Result<(GenerateOptions, Vec<String>), JsValue> {
        self.stop.set(false);
        let mut opts = GenerateOptions {
            sampling: self.model.generation,
            ..GenerateOptions::default()
        };
        let mut stops = Vec::new();
        if settings.is_undefined() || settings.is_null() {
            return Ok((opts, stops));
        }
        let s = &mut opts.sampling;
        if let Some(v) = setting(settings, "maxTokens") {
            opts.max_tokens = v as usize;
        }
        if let Some(v) = setting(settings, "temperature") {
            s.temperature = v as f32;
        }
        if let Some(v) = setting(settings, "topP") {
            s.top_p = v as f32;
        }
        if let Some(v) = setting(settings, "topK") {
            s.top_k = v as usize;
        }
        if let Some(v) = setting(settings, "minP") {
            s.min_p = v as f32;
        }
        if let Some(v) = setting(settings, "repeatPenalty") {
            s.repeat_penalty = v as f32;
        }
        if let Some(v) = setting(settings, "seed") {
            s.seed = v as u64;
        }
        if let Some(v) = js_sys::Reflect::get(settings, &"ignoreEos".into())
            .ok()
            .and_then(|v| v.as_bool())
        {
            opts.ignore_eos = v;
        }
        if let Ok(list) = js_sys::Reflect::get(settings, &"stop".into()) {
            if let Some(list) = list.dyn_ref::<js_sys::Array>() {
                stops = list.iter().filter_map(|v| v.as_string()).collect();
            }
        }
        Ok((opts, stops))
    }

    /// The loaded model, or an error while another call runs.
    fn busy_checked(&self) -> Result<std::cell::RefMut<'_, Loaded>, JsValue> {
        self.inner.try_borrow_mut().map_err(|_| busy())
    }

    /// Runs `call` on the session (one is made with the default context if there is none)
    /// as a promise.
    fn run(
        &self,
        call: impl for<'s> FnOnce(&'s mut Session<'static>) -> CallFuture<'s> + 'static,
    ) -> Promise {
        self.run_loaded(move |loaded| call(loaded.session.as_mut().expect("made by run_loaded")))
    }

    /// Runs `call` on the loaded model, its session made with the default context if there
    /// is none, as a promise.
    fn run_loaded(
        &self,
        call: impl for<'s> FnOnce(&'s mut Loaded) -> CallFuture<'s> + 'static,
    ) -> Promise {
        let fresh = match self.busy_checked() {
            Ok(loaded) => loaded.session.is_none(),
            Err(e) => return Promise::reject(&e),
        };
        if fresh {
            if let Err(e) = self.reset(SessionOptions::default().max_context) {
                return Promise::reject(&e);
            }
        }
        let inner = self.inner.clone();
        // The borrow held across the GPU's awaits is the one-call-at-a-time lock: other
        // calls meanwhile try to borrow and are refused as busy, never panic.
        #[allow(clippy::await_holding_refcell_ref)]
        future_to_promise(async move {
            let mut loaded = inner.try_borrow_mut().map_err(|_| busy())?;
            call(&mut loaded).await.map_err(js_error)
        })
    }
}

/// `value` as a JavaScript value (through JSON).
fn json_value(value: &Json) -> JsValue {
    js_sys::JSON::parse(&value.to_string()).unwrap_or(JsValue::NULL)
}

/// Hands `(kind, text)` to `callback`; stop when it returns `false` or `stop()` was called.
fn piece_flow(callback: &Function, stop: &Cell<bool>, kind: &str, text: &str) -> Flow {
    let answer = callback.call2(&JsValue::NULL, &kind.into(), &text.into());
    if stop.get() || matches!(answer, Ok(v) if v == JsValue::FALSE) {
        Flow::Stop
    } else {
        Flow::Continue
    }
}

/// The number `key` of the settings object, if set.
fn setting(settings: &JsValue, key: &str) -> Option<f64> {
    js_sys::Reflect::get(settings, &key.into())
        .ok()
        .and_then(|v| v.as_f64())
}
