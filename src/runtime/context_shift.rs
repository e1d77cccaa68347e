//! llama.cpp's context shift: when the context is full and one more token must be fed, the
//! first `keep` tokens stay, the next ⌊(n_past − keep) / 2⌋ are discarded, the positions
//! after them move down by that many in every attention layer's KV cache with their keys
//! re-rotated (RoPE of minus the discarded count), the conv states stay as they are, and the
//! token is fed at position n_past − discarded.

use super::state::LayerState;
use super::Session;
use crate::error::{Error, Result};
use crate::gpu::Recorder;
use crate::kernels::KvType;
use crate::kernels::{kv_shift, seen_shift, Heads};

/// What a session does when a token must be fed into a full context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContextOverflow {
    /// Stop with an error naming the context size.
    #[default]
    Error,
    /// Context shift keeping the first `keep` tokens.
    Shift { keep: usize },
}

impl Session<'_> {
    /// Sets what feeding a token into a full context does; a shift must leave at least two
    /// positions after the kept ones.
    pub fn set_context_overflow(&mut self, overflow: ContextOverflow) -> Result<()> {
        let ctx = self.options().max_context;
        if let ContextOverflow::Shift { keep } = overflow {
            if keep + 2 > ctx {
                return Err(Error::Input(format!(
                    "--keep {keep} leaves nothing to discard in a context of {ctx} tokens; keep at most {} tokens",
                    ctx.saturating_sub(2)
                )));
            }
            // The shift kernel moves f16 and f32 elements; a q8_0 block would have to be
            // requantized after the rotation.
            if self.seq.kv == KvType::Q8_0 {
                return Err(Error::Input(
                    "--context-overflow shift needs an f16 or f32 KV cache; pass --kv-type f16"
                        .into(),
                ));
            }
        }
        self.overflow = overflow;
        Ok(())
    }

    /// What feeding a token into a full context does.
    pub fn context_overflow(&self) -> ContextOverflow {
        self.overflow
    }

    /// Context shifts made since the session started.
    pub fn context_shifts(&self) -> usize {
        self.shifts
    }

    /// Shifts the context at the current position, keeping the first `keep` tokens; the
    /// history must hold every token fed. The history and the sampler's last-seen positions
    /// drop the discarded tokens, and the conv checkpoints after the kept ones go (the state
    /// no longer follows from the tokens).
    pub(super) fn shift_context(&mut self, keep: usize) {
        let n_past = self.pos;
        let discard = (n_past - keep) / 2;
        let cfg = &self.model.config;
        let heads = Heads {
            n_heads: cfg.n_heads as u32,
            n_kv: cfg.n_kv_heads as u32,
            head_dim: cfg.head_dim as u32,
            kv: self.seq.kv,
        };
        let rot = kv_shift::rotation(&self.model.inv_freq, discard);
        let rot = self.ctx.storage_with("kv shift rotation", &rot);
        let moved = (
            (keep + discard) as u32,
            keep as u32,
            (n_past - keep - discard) as u32,
        );
        let mut rec = Recorder::new(self.ctx);
        for layer in &self.seq.layers {
            if let LayerState::Attn { k, v } = layer {
                let pages = self.seq.pages(k, v);
                kv_shift::record(&mut rec, heads, &pages, &(&rot).into(), moved);
            }
        }
        let seen = (&self.sampler.seen).into();
        seen_shift::record(
            &mut rec,
            &seen,
            cfg.vocab as u32,
            keep as u32,
            discard as u32,
        );
        rec.submit();
        self.pos -= discard;
        self.history.drain(keep..keep + discard);
        self.checkpoints.forget_after(keep);
        self.exact_until = self.exact_until.min(keep);
        self.shifts += 1;
    }
}
