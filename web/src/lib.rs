//! wmoe in a browser tab: the runtime compiled to wasm32 on the browser's WebGPU, with
//! wasm-bindgen bindings. A [`WebModel`] is a model on the tab's GPU with one sequence:
//! load the bundled model, a GGUF file or a checkpoint's files from bytes, then prefill,
//! decode and generate greedily, each call a promise (the browser reads the GPU back
//! asynchronously).

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use js_sys::{Float32Array, Function, Promise, Uint32Array, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;
use wmoe::{
    DeviceOptions, Flow, GenerateOptions, GpuContext, LogitsMode, Model, ModelFiles, Session,
    SessionOptions,
};

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

/// A loaded model and the session that runs its one sequence.
struct Loaded {
    /// Leaked from a box in [`Loaded::new`] and reclaimed on drop, after the session that
    /// borrows it.
    model: &'static Model,
    session: Option<Session<'static>>,
}

impl Loaded {
    fn new(model: Model) -> Self {
        Loaded {
            model: Box::leak(Box::new(model)),
            session: None,
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
}

async fn upload(files: ModelFiles) -> Result<WebModel, JsValue> {
    let ctx = device().await?;
    let model = Model::upload(ctx, files, None, false).map_err(js_error)?;
    let loaded = Loaded::new(model);
    Ok(WebModel {
        ctx,
        model: loaded.model,
        inner: Rc::new(RefCell::new(loaded)),
    })
}

#[wasm_bindgen]
impl WebModel {
    /// The model compiled into wmoe (the small demo LFM2-MoE).
    #[wasm_bindgen(js_name = loadBundled)]
    pub async fn load_bundled() -> Result<WebModel, JsValue> {
        upload(ModelFiles::bundled().map_err(js_error)?).await
    }

    /// An `lfm2` / `lfm2moe` GGUF file's bytes; `name` names it in errors.
    #[wasm_bindgen(js_name = loadGguf)]
    pub async fn load_gguf(name: String, bytes: Vec<u8>) -> Result<WebModel, JsValue> {
        upload(ModelFiles::from_gguf_bytes(Path::new(&name), bytes).map_err(js_error)?).await
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
        )
        .await
    }

    /// The adapter and the device profile wmoe chose on it, in one line each.
    pub fn adapter(&self) -> String {
        let info = &self.ctx.info;
        format!(
            "{} ({:?}, {:?})\n{}",
            info.name,
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
    /// back, and returning `false` from it stops the generation. Resolves to the tokens.
    pub fn generate(
        &self,
        prompt: Vec<u32>,
        max_tokens: usize,
        ignore_eos: bool,
        on_token: Function,
    ) -> Promise {
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
                        Ok(v) if v == JsValue::FALSE => Flow::Stop,
                        _ => Flow::Continue,
                    }
                })
                .await?;
                Ok(Uint32Array::from(&tokens[..]).into())
            })
        })
    }
}

/// One GPU call on the session, as a future of its JS result.
type SessionCall = Box<
    dyn for<'s> FnOnce(
        &'s mut Session<'static>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = wmoe::Result<JsValue>> + 's>,
    >,
>;

impl WebModel {
    /// The loaded model, or an error while another call runs.
    fn busy_checked(&self) -> Result<std::cell::RefMut<'_, Loaded>, JsValue> {
        self.inner.try_borrow_mut().map_err(|_| busy())
    }

    /// Runs `call` on the session (one is made with the default context if there is none)
    /// as a promise.
    fn run(
        &self,
        call: impl for<'s> FnOnce(
                &'s mut Session<'static>,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = wmoe::Result<JsValue>> + 's>,
            > + 'static,
    ) -> Promise {
        let call: SessionCall = Box::new(call);
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
            let session = loaded.session.as_mut().expect("made above");
            call(session).await.map_err(js_error)
        })
    }
}
