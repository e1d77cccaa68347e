//! Continuous batching: up to `parallel` sequences (slots), each a [`Session`] with its own
//! KV cache, conv state, sampler, history and conv checkpoints, decoded together. A batched
//! step feeds one token of every generating slot: each matrix product (and the MoE experts,
//! grouped per expert as in prefill) takes the rows of all of them, so the weights read for one
//! token serve all; the conv and attention mixers and the sampler run per sequence on its own
//! state. Slots join (prefill, a chunk at a time, between steps) and leave at any step.

use std::rc::Rc;

use super::forward::{
    attention_core, attention_in, conv_core, conv_in, dense_ffn, logits, mixer_out,
};
use super::moe;
use super::sampling::Sampler;
use super::scratch::Scratch;
use super::state::{check_kv_fits, LayerState, SequenceState};
use super::step::{LogitsMode, StepView};
use super::{Model, Session, SessionOptions};
use crate::error::{Error, Result};
use crate::gpu::{Binding, BufferCopy, GpuContext, Plan, Recorder, StepVars};
use crate::kernels::sample::{self, SamplingParams};
use crate::kernels::{embedding, qk_norm_rope, row_copy};
use crate::model::{FfnWeights, Mixer};

/// Bytes between the slots' drawn tokens in `Batch::drawn` (a storage binding offset
/// alignment every device accepts).
const DRAWN_STRIDE: u64 = 256;

/// Batched step shapes kept planned (one per set of generating slots).
const PLANNED_SETS: usize = 4;

/// One sequence of a batch and where its generation stands.
struct Slot<'m> {
    session: Session<'m>,
    /// Prompt tokens still to prefill.
    pending: Vec<u32>,
    /// The token drawn last and not yet fed (set while the slot generates).
    last: Option<u32>,
    /// When the slot's request was admitted (the batch's admission count then): prefill
    /// serves the earliest first.
    admitted: u64,
}

/// Sequences decoded together; see the module docs.
pub struct Batch<'m> {
    ctx: &'m GpuContext,
    model: &'m Model,
    slots: Vec<Slot<'m>>,
    /// The activation buffers of the batched steps, shared with the slots' own sessions.
    scratch: Rc<Scratch>,
    /// One-token buffers a batched step's per-sequence kernels work in.
    single: Scratch,
    /// The token each slot's sampler draws in a batched step, `DRAWN_STRIDE` apart.
    drawn: wgpu::Buffer,
    /// Host-mappable copy of the drawn tokens.
    readback: wgpu::Buffer,
    /// Planned batched steps by their generating slots, most recent last.
    plans: Vec<(Vec<usize>, Plan<'m>)>,
    /// Requests admitted so far.
    admissions: u64,
}

impl<'m> Batch<'m> {
    /// `parallel` empty slots, each for sequences of up to `opts.max_context` positions.
    pub fn new(
        ctx: &'m GpuContext,
        model: &'m Model,
        opts: SessionOptions,
        parallel: usize,
    ) -> Result<Self> {
        if parallel == 0 {
            return Err(Error::Input("a batch needs at least one slot".into()));
        }
        let weights = (&model.config, &model.weights);
        check_kv_fits(ctx, weights, opts.kv, opts.max_context, parallel)?;
        let mut shared: Option<Rc<Scratch>> = None;
        let mut slots = Vec::with_capacity(parallel);
        for _ in 0..parallel {
            let session = Session::with_scratch(ctx, model, opts, |seq| match &shared {
                Some(s) => Ok(s.clone()),
                None => {
                    let pages = (seq.max_pages(), seq.page_positions);
                    let rows = opts.chunk.max(parallel);
                    let s = Rc::new(Scratch::new(ctx, &model.config, rows, pages)?);
                    shared = Some(s.clone());
                    Ok(s)
                }
            })?;
            slots.push(Slot {
                session,
                pending: Vec::new(),
                last: None,
                admitted: 0,
            });
        }
        let scratch = shared.expect("at least one slot");
        if scratch.chunk < parallel {
            return Err(Error::Input(format!(
                "{parallel} parallel sequences do not fit this device's binding limit (at most {})",
                scratch.chunk
            )));
        }
        let seq = &slots[0].session.seq;
        let single = Scratch::new(ctx, &model.config, 1, (seq.max_pages(), seq.page_positions))?;
        let bytes = DRAWN_STRIDE * parallel as u64;
        Ok(Batch {
            ctx,
            model,
            slots,
            scratch,
            single,
            drawn: ctx.storage("drawn tokens", bytes),
            readback: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("drawn tokens readback"),
                size: 4 * parallel as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            plans: Vec::new(),
            admissions: 0,
        })
    }

    /// How many slots.
    pub fn parallel(&self) -> usize {
        self.slots.len()
    }

    /// The tokens slot `slot` holds (prompts and fed tokens), in order.
    pub fn history(&self, slot: usize) -> &[u32] {
        self.slots[slot].session.history()
    }

    /// Positions slot `slot` can still take.
    pub fn room(&self, slot: usize) -> usize {
        let s = &self.slots[slot].session;
        s.options().max_context - s.position()
    }

    /// Whether slot `slot` has prompt tokens left to prefill.
    pub fn prefilling(&self, slot: usize) -> bool {
        !self.slots[slot].pending.is_empty()
    }

    /// Whether slot `slot` is generating (its last drawn token waits to be fed).
    pub fn generating(&self, slot: usize) -> bool {
        self.slots[slot].last.is_some()
    }

    /// Begins a generation in slot `slot` for `prompt`, the whole sequence (a conversation
    /// sent again in full): the prefix the slot's history shares with it is kept
    /// ([`Session::reuse_prefix`]), the rest waits for [`Self::prefill`]. Returns how many
    /// tokens of `prompt` were kept.
    pub fn admit(
        &mut self,
        slot: usize,
        prompt: &[u32],
        sampling: &SamplingParams,
    ) -> Result<usize> {
        sampling.check()?;
        if prompt.is_empty() {
            return Err(Error::Input("empty prompt".into()));
        }
        self.admissions += 1;
        let s = &mut self.slots[slot];
        s.last = None;
        s.pending.clear();
        s.admitted = self.admissions;
        s.session.check_ids(prompt)?;
        let kept = s.session.reuse_prefix(prompt)?;
        let rest = &prompt[kept..];
        if s.session.position() + rest.len() > s.session.options().max_context {
            return Err(Error::Input(format!(
                "a prompt of {} tokens exceeds the context of {} tokens; pass a larger --ctx or a shorter prompt",
                prompt.len(),
                s.session.options().max_context
            )));
        }
        let (ctx, session) = (self.ctx, &mut s.session);
        session
            .sampler
            .prepare(ctx, sampling, &session.history, rest);
        s.pending = rest.to_vec();
        Ok(kept)
    }

    /// Feeds the next chunk of slot `slot`'s prompt; after the last one, returns the first
    /// token drawn (the slot then generates).
    pub fn prefill(&mut self, slot: usize) -> Result<Option<u32>> {
        let s = &mut self.slots[slot];
        let n = s.pending.len().min(s.session.options().chunk);
        if n == 0 {
            return Err(Error::Input(format!(
                "slot {slot} has no prompt to prefill"
            )));
        }
        let chunk: Vec<u32> = s.pending.drain(..n).collect();
        if !s.pending.is_empty() {
            s.session.run_chunk(&chunk, None, Some(false))?;
            return Ok(None);
        }
        // A conv checkpoint at the end of the prompt, where the answer starts.
        s.session
            .run_chunk(&chunk, Some(LogitsMode::Last), Some(true))?;
        let t = s.session.sampled()?;
        s.last = Some(t);
        Ok(Some(t))
    }

    /// One round of the batch's schedule: a chunk of the prompt of the earliest admitted
    /// slot still prefilling (so a request that arrives while others stream waits at most
    /// one decode step for each of its chunks), then a decode step of the slots that were
    /// generating before it. Returns the tokens drawn, (slot, token): a prefill's last chunk
    /// draws its slot's first token, which the caller sees (and may end the slot on) before
    /// any step feeds it.
    pub fn tick(&mut self) -> Result<Vec<(usize, u32)>> {
        let generating: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.generating(i))
            .collect();
        let mut out = Vec::new();
        let joining = (0..self.slots.len())
            .filter(|&i| self.prefilling(i))
            .min_by_key(|&i| self.slots[i].admitted);
        if let Some(slot) = joining {
            out.extend(self.prefill(slot)?.map(|t| (slot, t)));
        }
        out.extend(self.step_slots(&generating)?);
        Ok(out)
    }

    /// One decode step of every generating slot: each is fed its last drawn token and draws
    /// the next. Returns (slot, token) in slot order. A slot without room for one more
    /// position is an error: end its generation first ([`Self::room`]).
    pub fn step(&mut self) -> Result<Vec<(usize, u32)>> {
        let active: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.generating(i))
            .collect();
        self.step_slots(&active)
    }

    /// One decode step of the generating slots `active` (in slot order).
    fn step_slots(&mut self, active: &[usize]) -> Result<Vec<(usize, u32)>> {
        for &i in active {
            let s = &self.slots[i].session;
            s.check(&[self.slots[i].last.expect("generating")])?;
        }
        match active {
            [] => Ok(Vec::new()),
            [i] => {
                let s = &mut self.slots[*i];
                let fed = s.last.take().expect("generating");
                s.session.run_chunk(&[fed], Some(LogitsMode::Last), None)?;
                let t = s.session.sampled()?;
                s.last = Some(t);
                Ok(vec![(*i, t)])
            }
            _ => self.batched_step(active),
        }
    }

    /// Forgets slot `slot`'s sequence (after a failed step, which may have left half of it).
    pub fn reset(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        s.last = None;
        s.pending.clear();
        s.session.reset();
    }

    /// Bytes of KV cache allocated over all slots.
    pub fn kv_bytes(&self) -> u64 {
        self.slots.iter().map(|s| s.session.kv_bytes()).sum()
    }

    /// Ends slot `slot`'s generation (or its prompt's prefill): its last drawn token is not
    /// fed, and a conv checkpoint marks the turn's end for the next request's prefix reuse.
    /// Nothing to do for an idle slot.
    pub fn finish(&mut self, slot: usize) -> Result<()> {
        if !self.generating(slot) && !self.prefilling(slot) {
            return Ok(());
        }
        let s = &mut self.slots[slot];
        s.last = None;
        s.pending.clear();
        s.session.end_turn(&[])
    }

    /// The batched step over `active` (two or more generating slots).
    fn batched_step(&mut self, active: &[usize]) -> Result<Vec<(usize, u32)>> {
        let inv_freq = &self.model.inv_freq;
        let mut tokens = Vec::with_capacity(active.len());
        let mut rope = Vec::new();
        let mut vars = Vec::with_capacity(active.len());
        for &i in active {
            let s = &mut self.slots[i].session;
            let pos = s.position();
            s.seq.reserve(self.ctx, pos + 1)?;
            tokens.push(self.slots[i].last.expect("generating"));
            rope.extend(qk_norm_rope::rope_table(inv_freq, pos, 1));
            vars.push(StepVars { pos0: pos as u32 });
        }
        let sc = &self.scratch;
        self.ctx.write(&sc.tokens, 0, bytemuck::cast_slice(&tokens));
        self.ctx.write(&sc.rope, 0, bytemuck::cast_slice(&rope));
        let copies: Vec<BufferCopy> = (0..active.len())
            .map(|j| BufferCopy {
                src: self.drawn.clone(),
                src_offset: j as u64 * DRAWN_STRIDE,
                dst: self.readback.clone(),
                dst_offset: 4 * j as u64,
                size: 4,
            })
            .collect();
        let held = self
            .plans
            .iter()
            .position(|(set, p)| set == active && p.holds_for_batch(&vars));
        let mut entry = match held {
            Some(i) => self.plans.remove(i),
            None => {
                let seqs: Vec<(&SequenceState, &Sampler)> = active
                    .iter()
                    .map(|&i| (&self.slots[i].session.seq, &self.slots[i].session.sampler))
                    .collect();
                let mut rec = Recorder::batch(self.ctx, &vars);
                let bufs = BatchBuffers {
                    scratch: sc,
                    single: &self.single,
                    drawn: &self.drawn,
                };
                record_batched_step(&mut rec, self.model, &bufs, &seqs);
                self.plans.retain(|(set, _)| set != active);
                if self.plans.len() >= PLANNED_SETS {
                    self.plans.remove(0);
                }
                (active.to_vec(), rec.finish())
            }
        };
        let done = entry.1.run_batch(&vars, &copies);
        self.plans.push(entry);
        let drawn = self
            .ctx
            .read_mapped_u32(&self.readback, active.len(), done.index)?;
        let mut out = Vec::with_capacity(active.len());
        for (&i, t) in active.iter().zip(drawn) {
            let s = &mut self.slots[i];
            let fed = s.last.replace(t).expect("generating");
            s.session.history.push(fed);
            s.session.pos += 1;
            out.push((i, t));
        }
        Ok(out)
    }
}

/// The buffers of a batched step: the rows of all its tokens, the one-token buffers of its
/// per-sequence kernels, and where each sequence's drawn token goes.
struct BatchBuffers<'a> {
    scratch: &'a Scratch,
    single: &'a Scratch,
    drawn: &'a wgpu::Buffer,
}

/// Records a step that feeds token j of `scratch.tokens` (RoPE row j of `scratch.rope`) to
/// sequence j of `seqs` at its position (the recorder's sequence j): products over all rows,
/// the conv and attention mixers per sequence in the one-token buffers, logits of every row
/// and each sequence's draw into its slot of `drawn`.
fn record_batched_step(
    rec: &mut Recorder,
    model: &Model,
    bufs: &BatchBuffers,
    seqs: &[(&SequenceState, &Sampler)],
) {
    let (cfg, weights) = (&model.config, &model.weights);
    let n = seqs.len() as u32;
    // The products read only the config, weights and scratch; the first sequence stands in.
    let all = StepView {
        cfg,
        weights,
        scratch: bufs.scratch,
        seq: seqs[0].0,
        sampler: seqs[0].1,
    };
    let one = |j: usize| StepView {
        cfg,
        weights,
        scratch: bufs.single,
        seq: seqs[j].0,
        sampler: seqs[j].1,
    };
    let (sc, single) = (Binding::whole, Binding::whole);
    embedding::record(
        rec,
        &weights.embed,
        &sc(&bufs.scratch.tokens),
        &sc(&bufs.scratch.h),
        n,
    );
    // Row j of `from` (`width` words a row) to row 0 of `to`, or back.
    let copy = |rec: &mut Recorder, from: (&wgpu::Buffer, u32), to: (&wgpu::Buffer, u32), width| {
        let row = row_copy::Row {
            src: &Binding::whole(from.0),
            src_offset: from.1 * width,
            dst: &Binding::whole(to.0),
            dst_offset: to.1 * width,
            width,
        };
        row_copy::record(rec, &row);
    };
    let (b, s) = (bufs.scratch, bufs.single);
    let rope_width = 2 * model.inv_freq.len() as u32;
    for (l, layer) in weights.layers.iter().enumerate() {
        match &layer.mixer {
            Mixer::Conv(c) => {
                conv_in(rec, &all, layer, c, n);
                for (j, (seq, _)) in seqs.iter().enumerate() {
                    let LayerState::Conv { state } = &seq.layers[l] else {
                        unreachable!("layer state is built from the same weights")
                    };
                    rec.sequence(j);
                    let jj = j as u32;
                    copy(rec, (&b.proj, jj), (&s.proj, 0), c.in_proj.rows);
                    conv_core(rec, &one(j), c, state, 1);
                    copy(rec, (&s.act, 0), (&b.act, jj), c.out_proj.cols);
                }
                mixer_out(rec, &all, &c.out_proj, n);
            }
            Mixer::Attn(a) => {
                attention_in(rec, &all, layer, a, n);
                for (j, (seq, _)) in seqs.iter().enumerate() {
                    let LayerState::Attn { k, v } = &seq.layers[l] else {
                        unreachable!("layer state is built from the same weights")
                    };
                    rec.sequence(j);
                    let jj = j as u32;
                    copy(rec, (&b.proj, jj), (&s.proj, 0), a.qkv.rows);
                    copy(rec, (&b.rope, jj), (&s.rope, 0), rope_width);
                    attention_core(rec, &one(j), a, (k, v), 1);
                    copy(rec, (&s.act, 0), (&b.act, jj), a.out_proj.cols);
                }
                mixer_out(rec, &all, &a.out_proj, n);
            }
        }
        match &layer.ffn {
            FfnWeights::Dense { gate_up, down } => dense_ffn(rec, &all, layer, (gate_up, down), n),
            FfnWeights::Moe(m) => moe::per_token(rec, &all, layer, m, n),
        }
    }
    logits(rec, &all, n, LogitsMode::All);
    for (j, (_, sampler)) in seqs.iter().enumerate() {
        rec.sequence(j);
        let args = sample::Args {
            logits: &single(&b.logits),
            settings: &single(&sampler.settings),
            seen: &single(&sampler.seen),
            bias: &single(&sampler.bias),
            out: &Binding {
                buffer: bufs.drawn.clone(),
                offset: j as u64 * DRAWN_STRIDE,
                size: Some(4),
            },
        };
        sample::record(rec, &args, cfg.vocab as u32, j as u32, 1);
    }
}
