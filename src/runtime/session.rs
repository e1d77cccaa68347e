//! A sequence's session: its state on the GPU (KV cache, conv state), activation scratch,
//! the steps it has planned, and the prefill / decode / generate entry points.

use std::rc::Rc;
use std::time::Duration;

use web_time::Instant;

use super::checkpoints::ConvCheckpoints;
use super::context_shift::ContextOverflow;
use super::forward::record_step;
use super::generation::GenerateOptions;
use super::loop_guard::LoopWatch;
use super::sampling::Sampler;
use super::scratch::Scratch;
use super::state::{check_kv_fits, SequenceState};
use super::step::{LogitsMode, StepShape, StepView};
use super::Model;
use crate::error::{Error, Result};
use crate::gpu::{block_on, BufferCopy, GpuContext, Plan, Recorder, StepVars};
use crate::kernels::sample::SamplingParams;
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

/// What a generation's token callback asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-sequence token (the callback's last token).
    Eos,
    /// The token callback asked to stop (a stop string, a closed stream).
    Stopped,
    /// `max_tokens` were generated.
    Length,
    /// The loop guard found the generation stuck repeating a cycle.
    Repetition,
}

impl FinishReason {
    /// The OpenAI `finish_reason` of a text generation that ended this way: "stop", or
    /// "length" at `max_tokens`. A loop cut short by the loop guard is "stop" too (OpenAI
    /// has no reason for it, and a client seeing "length" might retry with more tokens);
    /// [`Self::name`] tells it apart.
    pub fn openai(self) -> &'static str {
        match self {
            FinishReason::Eos | FinishReason::Stopped | FinishReason::Repetition => "stop",
            FinishReason::Length => "length",
        }
    }

    /// The reason in one word: "eos", "stopped", "length" or "repetition".
    pub fn name(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::Stopped => "stopped",
            FinishReason::Length => "length",
            FinishReason::Repetition => "repetition",
        }
    }
}

/// Step shapes a session keeps planned (decode, and the prefill chunk shapes around it).
const PLANNED_SHAPES: usize = 4;

/// Host time spent getting decode steps ready for the GPU: planning when needed, writing the
/// changed parameters and encoding, up to the submit call (which on some drivers, lavapipe
/// among them, runs the step itself).
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
    pub(super) ctx: &'m GpuContext,
    pub(super) model: &'m Model,
    opts: SessionOptions,
    pub(super) seq: SequenceState,
    /// Activation buffers, which the sessions of a batch share (they run one at a time).
    pub(super) scratch: Rc<Scratch>,
    pub(super) sampler: Sampler,
    pub(super) pos: usize,
    /// Two host-mappable slots the generation loop reads sampled tokens back through, one
    /// step behind the GPU.
    readback: [wgpu::Buffer; 2],
    /// Planned steps by shape, most recent last.
    plans: Vec<(StepShape, Plan<'m>)>,
    host: HostTime,
    /// The tokens fed so far, in order (`pos` of them).
    pub(super) history: Vec<u32>,
    /// Conv-state snapshots at chunk boundaries and turn ends, for prefix reuse.
    pub(super) checkpoints: ConvCheckpoints,
    /// What feeding a token into a full context does.
    pub(super) overflow: ContextOverflow,
    /// Positions up to which the state is that of the history fed from the start: all of
    /// them (`usize::MAX`) until a context shift, then the kept ones. Prefix reuse and conv
    /// checkpoints reach no further.
    pub(super) exact_until: usize,
    /// Context shifts made so far.
    pub(super) shifts: usize,
}

impl<'m> Session<'m> {
    pub fn new(ctx: &'m GpuContext, model: &'m Model, opts: SessionOptions) -> Result<Self> {
        let weights = (&model.config, &model.weights);
        check_kv_fits(ctx, weights, opts.kv, opts.max_context, 1)?;
        Self::with_scratch(ctx, model, opts, |seq| {
            let kv_pages = (seq.max_pages(), seq.page_positions);
            Scratch::new(ctx, &model.config, opts.chunk, kv_pages).map(Rc::new)
        })
    }

    /// A session whose activation buffers `scratch` gives, for the session's sequence state
    /// (a batch hands all its sessions the same).
    pub(super) fn with_scratch(
        ctx: &'m GpuContext,
        model: &'m Model,
        opts: SessionOptions,
        scratch: impl FnOnce(&SequenceState) -> Result<Rc<Scratch>>,
    ) -> Result<Self> {
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
        let scratch = scratch(&seq)?;
        let opts = SessionOptions {
            chunk: scratch.chunk.min(opts.chunk),
            ..opts
        };
        let mut s = Session {
            ctx,
            model,
            opts,
            seq,
            scratch,
            sampler: Sampler::new(ctx, cfg.vocab),
            pos: 0,
            plans: Vec::new(),
            host: HostTime::default(),
            history: Vec::new(),
            checkpoints: ConvCheckpoints::default(),
            overflow: ContextOverflow::Error,
            exact_until: usize::MAX,
            shifts: 0,
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
        self.history.clear();
        self.checkpoints.clear();
        self.exact_until = usize::MAX;
        self.seq.clear(self.ctx);
    }

    /// The model the session runs.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// The tokens the sequence holds so far (prompts and the generated tokens fed back), in
    /// order.
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    /// Makes the session ready for `prompt` as the whole sequence (a conversation sent again
    /// in full, with a new turn at its end): keeps the longest prefix `prompt` shares with
    /// the history — the KV cache up to there, the conv states from the latest checkpoint at
    /// or before it (taken at chunk boundaries and turn ends) — and returns how many tokens
    /// of `prompt` are in place; feed the rest (`prefill` or `generate` of `&prompt[n..]`).
    /// At least the last token of `prompt` is always left to feed, for its logits. After a
    /// context shift only the kept tokens can be reused.
    pub fn reuse_prefix(&mut self, prompt: &[u32]) -> Result<usize> {
        let shared = self
            .history
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len().saturating_sub(1))
            .min(self.exact_until);
        if shared == self.history.len() {
            return Ok(shared);
        }
        let Some(at) = self.checkpoints.latest_at_or_before(shared) else {
            self.reset();
            return Ok(0);
        };
        self.checkpoints.restore(self.ctx, &self.seq, at);
        self.history.truncate(at);
        self.pos = at;
        self.exact_until = usize::MAX;
        Ok(at)
    }

    /// Tokens consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// One line on the context: its length, the KV cache type and page size, what a position
    /// costs, and that pages are allocated as the sequence grows.
    pub fn context_summary(&self) -> String {
        let seq = &self.seq;
        format!(
            "context {} positions; {:?} KV cache in pages of {} positions, {} KiB per 1K positions over all layers, allocated as the sequence grows",
            self.opts.max_context,
            seq.kv,
            seq.page_positions,
            seq.bytes_per_position() * 1000 / 1024
        )
    }

    /// Bytes of KV cache allocated so far (pages are allocated as the sequence grows).
    pub fn kv_bytes(&self) -> u64 {
        self.seq.kv_bytes()
    }

    pub fn options(&self) -> SessionOptions {
        self.opts
    }

    pub(super) fn check(&self, tokens: &[u32]) -> Result<()> {
        self.check_ids(tokens)?;
        let fits = self.pos + tokens.len() <= self.opts.max_context;
        if !fits && self.overflow == ContextOverflow::Error {
            return Err(Error::Input(format!(
                "{} tokens at position {} exceed the context of {} tokens; pass a larger --ctx or a shorter prompt",
                tokens.len(),
                self.pos,
                self.opts.max_context
            )));
        }
        Ok(())
    }

    /// Every token id of `tokens` lies in the vocabulary.
    pub(super) fn check_ids(&self, tokens: &[u32]) -> Result<()> {
        let v = self.model.config.vocab as u32;
        match tokens.iter().find(|&&t| t >= v) {
            Some(t) => Err(Error::Input(format!(
                "token id {t} is outside the vocabulary (size {v})"
            ))),
            None => Ok(()),
        }
    }

    /// How many of the next `want` tokens to feed now (at most a chunk): those that fit in
    /// the context, after a context shift when it is full (the history must hold every
    /// token fed so far).
    fn room(&mut self, want: usize) -> Result<usize> {
        if self.pos == self.opts.max_context {
            match self.overflow {
                ContextOverflow::Shift { keep } => self.shift_context(keep),
                ContextOverflow::Error => {
                    return Err(Error::Input(format!(
                        "the context of {} tokens is full; pass a larger --ctx or --context-overflow shift",
                        self.opts.max_context
                    )))
                }
            }
        }
        Ok(want
            .min(self.opts.chunk)
            .min(self.opts.max_context - self.pos))
    }

    /// Runs one chunk (≤ chunk size) through the model; with a logits mode it also computes
    /// logits and samples on the GPU. `snapshot` keeps a conv checkpoint after it (`Some`:
    /// whether it ends a turn).
    pub(super) fn run_chunk(
        &mut self,
        tokens: &[u32],
        mode: Option<LogitsMode>,
        snapshot: Option<bool>,
    ) -> Result<()> {
        self.ctx
            .write(&self.scratch.tokens, 0, bytemuck::cast_slice(tokens));
        self.submit_chunk(tokens.len(), mode, None, snapshot)?;
        self.history.extend_from_slice(tokens);
        Ok(())
    }

    /// Host time of the decode steps run so far.
    pub fn host_time(&self) -> HostTime {
        self.host
    }

    /// Runs the chunk of `len` tokens already in `scratch.tokens` at the current position,
    /// allocating the KV pages it reaches and planning its shape first if no plan holds for
    /// it. With `feed`, the sampled token is also copied into `scratch.tokens` (the next
    /// step's input, without a host round trip) and into readback slot `feed`.
    fn submit_chunk(
        &mut self,
        len: usize,
        mode: Option<LogitsMode>,
        feed: Option<usize>,
        snapshot: Option<bool>,
    ) -> Result<wgpu::SubmissionIndex> {
        let start = Instant::now();
        self.seq.reserve(self.ctx, self.pos + len)?;
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
        let mut copies: Vec<BufferCopy> = feed
            .map(|slot| vec![copy(&self.scratch.tokens), copy(&self.readback[slot])])
            .unwrap_or_default();
        let after = self.pos + len;
        if let Some(turn_end) = snapshot.filter(|_| after <= self.exact_until) {
            let seq = &self.seq;
            copies.extend(self.checkpoints.snapshot(self.ctx, seq, after, turn_end)?);
        }
        let plan = self.plan(shape, vars);
        let done = plan.run(vars, &copies);
        self.pos += len;
        if len == 1 {
            self.host.steps += 1;
            self.host.total += done.encoded.duration_since(start);
        }
        Ok(done.index)
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
                    sampler: &self.sampler,
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
    async fn read_slot(&self, slot: usize, done: wgpu::SubmissionIndex) -> Result<u32> {
        let token = self
            .ctx
            .read_mapped_u32_async(&self.readback[slot], 1, done)
            .await?;
        Ok(token[0])
    }

    /// Feeds `tokens` through the batched prefill path in chunks. With `LogitsMode::All` it
    /// returns `[len, vocab]` logits of every position, else the last position's `[vocab]`.
    pub fn prefill(&mut self, tokens: &[u32], mode: LogitsMode) -> Result<Vec<f32>> {
        block_on(self.prefill_async(tokens, mode), "Session::prefill_async")
    }

    /// [`Self::prefill`], awaiting the logits.
    pub async fn prefill_async(&mut self, tokens: &[u32], mode: LogitsMode) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(Error::Input("empty prompt".into()));
        }
        self.check(tokens)?;
        self.sampler
            .prepare(self.ctx, &SamplingParams::greedy(), &self.history, &[]);
        let v = self.model.config.vocab;
        let mut out = Vec::new();
        let mut rest = tokens;
        while !rest.is_empty() {
            let (c, r) = rest.split_at(self.room(rest.len())?);
            rest = r;
            // A conv checkpoint after every chunk; the last one ends the turn.
            let last = rest.is_empty();
            if mode == LogitsMode::All || last {
                self.run_chunk(c, Some(mode), Some(last))?;
                let rows = if mode == LogitsMode::All { c.len() } else { 1 };
                out.extend(
                    self.ctx
                        .read_f32_async(&self.scratch.logits, 0, rows * v)
                        .await?,
                );
            } else {
                self.run_chunk(c, None, Some(false))?;
            }
        }
        Ok(out)
    }

    /// One token through the single-token decode path; returns its `[vocab]` logits.
    pub fn decode(&mut self, token: u32) -> Result<Vec<f32>> {
        block_on(self.decode_async(token), "Session::decode_async")
    }

    /// [`Self::decode`], awaiting the logits.
    pub async fn decode_async(&mut self, token: u32) -> Result<Vec<f32>> {
        self.check(&[token])?;
        self.sampler
            .prepare(self.ctx, &SamplingParams::greedy(), &self.history, &[]);
        self.room(1)?;
        self.run_chunk(&[token], Some(LogitsMode::Last), None)?;
        self.ctx
            .read_f32_async(&self.scratch.logits, 0, self.model.config.vocab)
            .await
    }

    /// The token the GPU sampled after the last chunk or step (greedily after `prefill` and
    /// `decode`).
    pub fn sampled(&self) -> Result<u32> {
        block_on(self.sampled_async(), "Session::sampled_async")
    }

    /// [`Self::sampled`], awaiting the GPU.
    pub async fn sampled_async(&self) -> Result<u32> {
        Ok(self
            .ctx
            .read_u32_async(&self.scratch.next_token, 0, 1)
            .await?[0])
    }

    /// Greedy generation of up to `max_tokens` after `prompt` ([`Self::generate_with`] with
    /// [`SamplingParams::greedy`]).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        ignore_eos: bool,
    ) -> Result<Vec<u32>> {
        self.generate_with(prompt, max_tokens, ignore_eos, &SamplingParams::greedy())
    }

    /// Generation of up to `max_tokens` after `prompt`, each token drawn with `sampling`;
    /// stops at an EOS token unless `ignore_eos` ([`Self::generate_stream`], collecting the
    /// tokens).
    pub fn generate_with(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        ignore_eos: bool,
        sampling: &SamplingParams,
    ) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(max_tokens.min(self.opts.max_context));
        self.generate_stream(prompt, max_tokens, ignore_eos, sampling, &mut |t| {
            out.push(t);
            Flow::Continue
        })?;
        Ok(out)
    }

    /// Generation of up to `max_tokens` after `prompt`, each token drawn with `sampling` and
    /// handed to `on_token` as soon as it is read back ([`Self::generate_stream_with`] with
    /// no bias, DRY or loop guard).
    pub fn generate_stream(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        ignore_eos: bool,
        sampling: &SamplingParams,
        on_token: &mut dyn FnMut(u32) -> Flow,
    ) -> Result<FinishReason> {
        let opts = GenerateOptions {
            max_tokens,
            ignore_eos,
            sampling: *sampling,
            ..GenerateOptions::default()
        };
        self.generate_stream_with(prompt, &opts, on_token)
    }

    /// Generation of up to `opts.max_tokens` after `prompt`, each token drawn as `opts`
    /// says and handed to `on_token` as soon as it is read back (a final EOS token too);
    /// `on_token` may end the generation (a stop string, a closed stream). Stops at an EOS
    /// token unless `opts.ignore_eos`, where the loop guard finds it stuck, and says why it
    /// stopped. Routing and sampling stay on the GPU, each drawn token feeds the next step
    /// on the GPU, and the host reads token ids back one step late — except with DRY, whose
    /// penalties need each token before the next step is submitted. A stop before
    /// `max_tokens` leaves the last token fed into the sequence (as a chat's next turn needs
    /// it). The presence and frequency penalties count this call's tokens; the repetition
    /// penalty's window and DRY reach back into the prompt and earlier calls.
    pub fn generate_stream_with(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> Flow,
    ) -> Result<FinishReason> {
        block_on(
            self.generate_stream_async(prompt, opts, on_token),
            "Session::generate_stream_async",
        )
    }

    /// [`Self::generate_stream_with`], awaiting each token.
    pub async fn generate_stream_async(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> Flow,
    ) -> Result<FinishReason> {
        opts.check(self.model.config.vocab)?;
        let max_tokens = opts.max_tokens;
        if prompt.is_empty() {
            return Err(Error::Input("empty prompt".into()));
        }
        self.check(prompt)?;
        let needs = (self.pos + prompt.len()).saturating_add(max_tokens.saturating_sub(1));
        if needs > self.opts.max_context && self.overflow == ContextOverflow::Error {
            return Err(Error::Input(format!(
                "prompt of {} tokens plus {max_tokens} new tokens exceeds the context of {}; pass a larger --ctx or --context-overflow shift",
                prompt.len(),
                self.opts.max_context
            )));
        }
        if max_tokens == 0 {
            return Ok(FinishReason::Length);
        }
        self.sampler
            .prepare(self.ctx, &opts.sampling, &self.history, prompt);
        let mut last = prompt;
        loop {
            let n = self.room(last.len())?;
            if n == last.len() {
                break;
            }
            self.run_chunk(&last[..n], None, Some(false))?;
            last = &last[n..];
        }
        let sync = opts.dry.is_some();
        let mut bias_history: Vec<u32> = self.history.iter().chain(prompt).copied().collect();
        self.sampler
            .set_bias(self.ctx, &opts.bias_after(&bias_history));
        self.ctx
            .write(&self.scratch.tokens, 0, bytemuck::cast_slice(last));
        // Token i is sampled by submission i and read back while submission i + 1 (fed
        // token i on the GPU) already runs, so the GPU never waits for the host (with DRY,
        // submission i + 1 waits for token i's penalties). A conv checkpoint at the end of
        // the prompt, where the answer starts.
        let first = self.submit_chunk(last.len(), Some(LogitsMode::Last), Some(0), Some(true))?;
        self.history.extend_from_slice(last);
        let mut pending = (0, first);
        let mut submitted = 1;
        let mut generated = Vec::new();
        let mut watch = opts.loop_guard.map(LoopWatch::new);
        // Generated tokens before `generated[synced]` are in the history already.
        let mut synced = 0;
        let eos = self.model.config.eos.clone();
        // Submits the step that feeds the last drawn token (shifting a full context first,
        // once the history holds every token fed so far).
        let mut submit_next = |s: &mut Self,
                               generated: &[u32],
                               synced: &mut usize|
         -> Result<Option<(usize, wgpu::SubmissionIndex)>> {
            if submitted >= max_tokens {
                return Ok(None);
            }
            let slot = submitted % 2;
            submitted += 1;
            if s.pos == s.opts.max_context {
                *synced += s.sync_history(&generated[*synced..]);
                s.room(1)?;
            }
            let step = s.submit_chunk(1, Some(LogitsMode::Last), Some(slot), None)?;
            Ok(Some((slot, step)))
        };
        loop {
            let mut ahead = if sync {
                None
            } else {
                submit_next(self, &generated, &mut synced)?
            };
            let t = self.read_slot(pending.0, pending.1).await?;
            generated.push(t);
            let flow = on_token(t);
            let stuck = watch.as_mut().is_some_and(|w| w.push(t));
            let reason = if !opts.ignore_eos && eos.contains(&t) {
                Some(FinishReason::Eos)
            } else if flow == Flow::Stop {
                Some(FinishReason::Stopped)
            } else if stuck {
                Some(FinishReason::Repetition)
            } else if generated.len() >= max_tokens {
                Some(FinishReason::Length)
            } else {
                None
            };
            if sync {
                if reason.is_none() {
                    bias_history.push(t);
                    self.sampler
                        .set_bias(self.ctx, &opts.bias_after(&bias_history));
                }
                // As without DRY, a token before max_tokens is fed even when it ends the
                // generation.
                ahead = submit_next(self, &generated, &mut synced)?;
            }
            if let Some(reason) = reason {
                self.end_turn(&generated[synced..])?;
                return Ok(reason);
            }
            pending = ahead.expect("a step is in flight while tokens are owed");
        }
    }

    /// Adds to the history the first of `generated` (tokens not in it yet) that were fed
    /// back; returns how many.
    fn sync_history(&mut self, generated: &[u32]) -> usize {
        let fed = self.pos - self.history.len();
        self.history.extend_from_slice(&generated[..fed]);
        fed
    }

    /// After a generation: the generated tokens that were fed back (those before the last
    /// submitted step's) join the history, and a conv checkpoint marks the turn's end.
    pub(super) fn end_turn(&mut self, generated: &[u32]) -> Result<()> {
        self.sync_history(generated);
        if self.pos > self.exact_until {
            return Ok(());
        }
        let copies = self
            .checkpoints
            .snapshot(self.ctx, &self.seq, self.pos, true)?;
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        for c in &copies {
            enc.copy_buffer_to_buffer(&c.src, c.src_offset, &c.dst, c.dst_offset, c.size);
        }
        self.ctx.queue.submit([enc.finish()]);
        Ok(())
    }
}
