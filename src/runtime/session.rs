//! A sequence's state on the GPU (KV cache per attention layer, conv state per conv layer,
//! activation scratch) and the prefill / decode / generate entry points.

use super::forward::{record_chunk, Scratch};
use super::Model;
use crate::error::{Error, Result};
use crate::gpu::{BindCache, GpuContext, Recorder};
use crate::kernels::qk_norm_rope::{self, KvType};
use crate::model::Mixer;

/// Sizes a session allocates for.
#[derive(Clone, Copy, Debug)]
pub struct SessionOptions {
    /// Longest sequence (prompt + generated tokens).
    pub max_context: usize,
    /// Prefill chunk size: longer prompts run in several chunks with identical results.
    pub chunk: usize,
    /// KV cache element type.
    pub kv: KvType,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            max_context: 4096,
            chunk: 256,
            kv: KvType::F16,
        }
    }
}

/// Which logits a forward chunk produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsMode {
    /// Every position of the chunk.
    All,
    /// Only the last position (generation).
    Last,
}

/// One layer's sequence state.
pub(crate) enum LayerState {
    Conv { state: wgpu::Buffer },
    Attn { k: wgpu::Buffer, v: wgpu::Buffer },
}

pub struct Session<'m> {
    pub(crate) ctx: &'m GpuContext,
    pub(crate) model: &'m Model,
    pub(crate) opts: SessionOptions,
    pub(crate) state: Vec<LayerState>,
    pub(crate) scratch: Scratch,
    pos: usize,
    /// Two host-mappable slots the generation loop reads sampled tokens back through, one
    /// step behind the GPU.
    readback: [wgpu::Buffer; 2],
    /// Bind groups of recent step shapes (a decode step builds its own once).
    binds: BindCache,
}

impl<'m> Session<'m> {
    pub fn new(ctx: &'m GpuContext, model: &'m Model, opts: SessionOptions) -> Result<Self> {
        let cfg = &model.config;
        if opts.max_context == 0 || opts.chunk == 0 {
            return Err(Error::Input(
                "context and chunk sizes must be at least 1".into(),
            ));
        }
        if opts.max_context > cfg.max_positions {
            return Err(Error::Input(format!(
                "context {} exceeds the model's max_position_embeddings {}",
                opts.max_context, cfg.max_positions
            )));
        }
        let kv_bytes = (opts.max_context * cfg.n_kv_heads * cfg.head_dim * opts.kv.bytes()) as u64;
        if kv_bytes > ctx.max_binding() {
            return Err(Error::Input(format!(
                "a KV cache of {} positions needs {} MiB per layer, over this device's {} MiB binding limit; use a shorter --ctx",
                opts.max_context,
                kv_bytes >> 20,
                ctx.max_binding() >> 20
            )));
        }
        let scratch = Scratch::new(ctx, cfg, opts.chunk)?;
        let opts = SessionOptions {
            chunk: scratch.chunk,
            ..opts
        };
        let state = model
            .weights
            .layers
            .iter()
            .map(|l| match l.mixer {
                Mixer::Conv(_) => LayerState::Conv {
                    state: ctx.storage("conv state", (4 * (cfg.conv_taps - 1) * cfg.hidden) as u64),
                },
                Mixer::Attn(_) => LayerState::Attn {
                    k: ctx.storage("k cache", kv_bytes),
                    v: ctx.storage("v cache", kv_bytes),
                },
            })
            .collect();
        let mut s = Session {
            ctx,
            model,
            opts,
            state,
            scratch,
            pos: 0,
            binds: BindCache::default(),
            readback: [0, 1].map(|i| {
                ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(if i == 0 {
                        "token readback 0"
                    } else {
                        "token readback 1"
                    }),
                    size: 4,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }),
        };
        s.reset();
        Ok(s)
    }

    /// Forgets the sequence: position 0, conv state zeroed (the KV cache is overwritten as it fills).
    pub fn reset(&mut self) {
        self.pos = 0;
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        for s in &self.state {
            if let LayerState::Conv { state } = s {
                enc.clear_buffer(state, 0, None);
            }
        }
        self.ctx.queue.submit([enc.finish()]);
    }

    /// Tokens consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn options(&self) -> SessionOptions {
        self.opts
    }

    fn check(&self, tokens: &[u32]) -> Result<()> {
        let v = self.model.config.vocab as u32;
        if let Some(t) = tokens.iter().find(|&&t| t >= v) {
            return Err(Error::Input(format!(
                "token id {t} is outside the vocabulary (size {v})"
            )));
        }
        if self.pos + tokens.len() > self.opts.max_context {
            return Err(Error::Input(format!(
                "{} tokens at position {} exceed the context of {} tokens; pass a larger --ctx or a shorter prompt",
                tokens.len(),
                self.pos,
                self.opts.max_context
            )));
        }
        Ok(())
    }

    /// Runs one chunk (≤ chunk size) through the model; with a logits mode it also computes
    /// logits and samples greedily on the GPU.
    fn run_chunk(&mut self, tokens: &[u32], mode: Option<LogitsMode>) {
        self.ctx
            .write(&self.scratch.tokens, 0, bytemuck::cast_slice(tokens));
        self.submit_chunk(tokens.len(), mode, None);
    }

    /// Records and submits the chunk of `len` tokens already in `scratch.tokens`. With
    /// `feed`, the sampled token is also copied into `scratch.tokens` (the next step's input,
    /// without a host round trip) and into readback slot `feed`.
    fn submit_chunk(
        &mut self,
        len: usize,
        mode: Option<LogitsMode>,
        feed: Option<usize>,
    ) -> wgpu::SubmissionIndex {
        let ctx = self.ctx;
        let rope = qk_norm_rope::rope_table(&self.model.inv_freq, self.pos, len);
        ctx.write(&self.scratch.rope, 0, bytemuck::cast_slice(&rope));
        let mut rec = Recorder::new(ctx);
        record_chunk(&mut rec, self, len as u32, self.pos as u32, mode);
        if let Some(slot) = feed {
            let next = &self.scratch.next_token;
            rec.copy_after(next, 0, &self.scratch.tokens, 0, 4);
            rec.copy_after(next, 0, &self.readback[slot], 0, 4);
        }
        self.pos += len;
        rec.submit_cached(&mut self.binds)
    }

    /// The token in readback slot `slot`, once submission `done` has finished (later
    /// submissions keep the GPU busy meanwhile).
    fn read_slot(&self, slot: usize, done: wgpu::SubmissionIndex) -> Result<u32> {
        let buf = &self.readback[slot];
        let (tx, rx) = std::sync::mpsc::channel();
        buf.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.ctx
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(done),
                timeout: None,
            })
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
        rx.recv()
            .map_err(|_| Error::Gpu("token readback callback never ran".into()))?
            .map_err(|e| Error::Gpu(format!("token readback failed: {e}")))?;
        let token = {
            let data = buf
                .get_mapped_range(..)
                .map_err(|e| Error::Gpu(format!("token readback mapping failed: {e}")))?;
            u32::from_le_bytes([data[0], data[1], data[2], data[3]])
        };
        buf.unmap();
        Ok(token)
    }

    /// Feeds `tokens` through the batched prefill path in chunks. With `LogitsMode::All` it
    /// returns `[len, vocab]` logits of every position, else the last position's `[vocab]`.
    pub fn prefill(&mut self, tokens: &[u32], mode: LogitsMode) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(Error::Input("empty prompt".into()));
        }
        self.check(tokens)?;
        let v = self.model.config.vocab;
        let mut out = Vec::new();
        let chunks: Vec<&[u32]> = tokens.chunks(self.opts.chunk).collect();
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            if mode == LogitsMode::All || last {
                self.run_chunk(c, Some(mode));
                let rows = if mode == LogitsMode::All { c.len() } else { 1 };
                out.extend(self.ctx.read_f32(&self.scratch.logits, 0, rows * v)?);
            } else {
                self.run_chunk(c, None);
            }
        }
        Ok(out)
    }

    /// One token through the single-token decode path; returns its `[vocab]` logits.
    pub fn decode(&mut self, token: u32) -> Result<Vec<f32>> {
        self.check(&[token])?;
        self.run_chunk(&[token], Some(LogitsMode::Last));
        self.ctx
            .read_f32(&self.scratch.logits, 0, self.model.config.vocab)
    }

    /// The token the GPU sampled after the last chunk or step.
    pub fn sampled(&self) -> Result<u32> {
        Ok(self.ctx.read_u32(&self.scratch.next_token, 0, 1)?[0])
    }

    /// Greedy generation of up to `max_tokens` after `prompt`; stops at an EOS token unless
    /// `ignore_eos`. Routing and sampling stay on the GPU, each sampled token feeds the next
    /// step on the GPU, and the host reads token ids back one step late. A stop at EOS thus
    /// leaves the EOS token fed into the sequence (as a chat's next turn needs it).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        ignore_eos: bool,
    ) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(Error::Input("empty prompt".into()));
        }
        self.check(prompt)?;
        if self.pos + prompt.len() + max_tokens.saturating_sub(1) > self.opts.max_context {
            return Err(Error::Input(format!(
                "prompt of {} tokens plus {max_tokens} new tokens exceeds the context of {}; pass a larger --ctx",
                prompt.len(),
                self.opts.max_context
            )));
        }
        let mut out = Vec::with_capacity(max_tokens);
        if max_tokens == 0 {
            return Ok(out);
        }
        let chunks: Vec<&[u32]> = prompt.chunks(self.opts.chunk).collect();
        let (last, head) = chunks.split_last().expect("a non-empty prompt");
        for c in head {
            self.run_chunk(c, None);
        }
        self.ctx
            .write(&self.scratch.tokens, 0, bytemuck::cast_slice(last));
        // Token i is sampled by submission i and read back while submission i + 1 (fed
        // token i on the GPU) already runs, so the GPU never waits for the host.
        let mut pending = (
            0,
            self.submit_chunk(last.len(), Some(LogitsMode::Last), Some(0)),
        );
        let mut submitted = 1;
        let eos = self.model.config.eos.clone();
        loop {
            let ahead = (submitted < max_tokens).then(|| {
                let slot = submitted % 2;
                submitted += 1;
                (
                    slot,
                    self.submit_chunk(1, Some(LogitsMode::Last), Some(slot)),
                )
            });
            let t = self.read_slot(pending.0, pending.1)?;
            out.push(t);
            if out.len() >= max_tokens || (!ignore_eos && eos.contains(&t)) {
                return Ok(out);
            }
            pending = ahead.expect("a step is in flight while tokens are owed");
        }
    }
}
