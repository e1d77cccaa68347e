//! A sequence's session: its state on the GPU (KV cache, conv state), activation scratch,
//! the steps it has planned, and the prefill / decode / generate entry points.

use std::time::{Duration, Instant};

use super::forward::record_step;
use super::scratch::Scratch;
use super::state::SequenceState;
use super::step::{LogitsMode, StepShape, StepView};
use super::Model;
use crate::error::{Error, Result};
use crate::gpu::{BufferCopy, GpuContext, Plan, Recorder, StepVars};
use crate::kernels::{qk_norm_rope, KvType};

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

/// Step shapes a session keeps planned (decode, and the prefill chunk shapes around it).
const PLANNED_SHAPES: usize = 4;

/// Host time spent getting decode steps to the GPU (planning when needed, writing the
/// changed parameters, encoding and submitting).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostTime {
    pub steps: u64,
    pub total: Duration,
}

impl HostTime {
    /// The steps since `earlier` (a reading of the same session).
    pub fn since(&self, earlier: &HostTime) -> HostTime {
        HostTime {
            steps: self.steps - earlier.steps,
            total: self.total.saturating_sub(earlier.total),
        }
    }

    /// Mean microseconds per decode step.
    pub fn micros_per_step(&self) -> f64 {
        self.total.as_secs_f64() * 1e6 / self.steps.max(1) as f64
    }
}

pub struct Session<'m> {
    ctx: &'m GpuContext,
    model: &'m Model,
    opts: SessionOptions,
    seq: SequenceState,
    scratch: Scratch,
    pos: usize,
    /// Two host-mappable slots the generation loop reads sampled tokens back through, one
    /// step behind the GPU.
    readback: [wgpu::Buffer; 2],
    /// Planned steps by shape, most recent last.
    plans: Vec<(StepShape, Plan<'m>)>,
    host: HostTime,
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
        let seq = SequenceState::new(ctx, cfg, &model.weights, opts.kv, opts.max_context)?;
        let scratch = Scratch::new(ctx, cfg, opts.chunk)?;
        let opts = SessionOptions {
            chunk: scratch.chunk,
            ..opts
        };
        let mut s = Session {
            ctx,
            model,
            opts,
            seq,
            scratch,
            pos: 0,
            plans: Vec::new(),
            host: HostTime::default(),
            readback: ["token readback 0", "token readback 1"].map(|label| {
                ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
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
        self.seq.clear(self.ctx);
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

    /// Host time of the decode steps run so far.
    pub fn host_time(&self) -> HostTime {
        self.host
    }

    /// Runs the chunk of `len` tokens already in `scratch.tokens` at the current position,
    /// planning its shape first if no plan holds for it. With `feed`, the sampled token is
    /// also copied into `scratch.tokens` (the next step's input, without a host round trip)
    /// and into readback slot `feed`.
    fn submit_chunk(
        &mut self,
        len: usize,
        mode: Option<LogitsMode>,
        feed: Option<usize>,
    ) -> wgpu::SubmissionIndex {
        let start = Instant::now();
        let rope = qk_norm_rope::rope_table(&self.model.inv_freq, self.pos, len);
        self.ctx
            .write(&self.scratch.rope, 0, bytemuck::cast_slice(&rope));
        let shape = StepShape {
            tokens: len as u32,
            logits: mode,
        };
        let vars = StepVars {
            pos0: self.pos as u32,
        };
        let next = &self.scratch.next_token;
        let copy = |dst: &wgpu::Buffer| BufferCopy {
            src: next.clone(),
            src_offset: 0,
            dst: dst.clone(),
            dst_offset: 0,
            size: 4,
        };
        let copies: Vec<BufferCopy> = feed
            .map(|slot| vec![copy(&self.scratch.tokens), copy(&self.readback[slot])])
            .unwrap_or_default();
        let plan = self.plan(shape, vars);
        let index = plan.run(vars, &copies);
        self.pos += len;
        if len == 1 {
            self.host.steps += 1;
            self.host.total += start.elapsed();
        }
        index
    }

    /// The plan of `shape` that holds at `vars`, recorded now if there is none.
    fn plan(&mut self, shape: StepShape, vars: StepVars) -> &mut Plan<'m> {
        let held = self
            .plans
            .iter()
            .position(|(s, p)| *s == shape && p.holds_for(&vars));
        let entry = match held {
            Some(i) => self.plans.remove(i),
            None => {
                let view = StepView {
                    cfg: &self.model.config,
                    weights: &self.model.weights,
                    scratch: &self.scratch,
                    seq: &self.seq,
                };
                let mut rec = Recorder::at(self.ctx, vars);
                record_step(&mut rec, &view, shape);
                self.plans.retain(|(s, _)| *s != shape);
                if self.plans.len() >= PLANNED_SHAPES {
                    self.plans.remove(0);
                }
                (shape, rec.finish())
            }
        };
        self.plans.push(entry);
        &mut self.plans.last_mut().expect("just pushed").1
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
        let needs = (self.pos + prompt.len()).saturating_add(max_tokens.saturating_sub(1));
        if needs > self.opts.max_context {
            return Err(Error::Input(format!(
                "prompt of {} tokens plus {max_tokens} new tokens exceeds the context of {}; pass a larger --ctx",
                prompt.len(),
                self.opts.max_context
            )));
        }
        let mut out = Vec::with_capacity(max_tokens.min(self.opts.max_context));
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
