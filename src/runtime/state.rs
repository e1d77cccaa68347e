//! A sequence's state on the GPU: the KV cache of each attention layer, in pages allocated as
//! the sequence grows, and the conv state of each short-conv layer, which every step of the
//! sequence reads and extends.

use crate::error::{Error, Result};
use crate::gpu::{Binding, GpuContext};
use crate::kernels::{KvPages, KvType};
use crate::model::{Config, Mixer, ModelWeights};

/// Most positions one KV page holds: the cache grows by at most this many positions at a time.
const MAX_PAGE_POSITIONS: usize = 16384;

/// One layer's sequence state.
pub(crate) enum LayerState {
    Conv { state: wgpu::Buffer },
    Attn { k: Vec<Binding>, v: Vec<Binding> },
}

/// Every layer's state of one sequence, for up to `max_context` positions.
pub(crate) struct SequenceState {
    pub layers: Vec<LayerState>,
    pub kv: KvType,
    /// Positions per KV page.
    pub page_positions: usize,
    /// Bytes one position takes in one layer's K (or V) cache.
    pub position_bytes: u64,
    max_context: usize,
    /// Positions the allocated pages hold.
    capacity: usize,
}

/// Positions per KV page for `position_bytes` per position: as many as one binding holds, at
/// most `MAX_PAGE_POSITIONS`, a multiple of 64 (the attention kernel's key block) where the
/// binding allows.
pub(crate) fn page_positions(position_bytes: u64, max_binding: u64) -> Result<usize> {
    let fit = (max_binding / position_bytes.max(1)) as usize;
    if fit == 0 {
        return Err(Error::Input(format!(
            "one KV cache position needs {position_bytes} bytes, over this device's {max_binding}-byte binding limit"
        )));
    }
    let p = fit.min(MAX_PAGE_POSITIONS);
    Ok(if p >= 64 { p / 64 * 64 } else { p })
}

/// Bytes one position takes in one attention layer's K (or V) cache.
fn position_bytes(cfg: &Config, kv: KvType) -> u64 {
    (4 * cfg.n_kv_heads * kv.head_words(cfg.head_dim)) as u64
}

/// Refuses the KV caches of `slots` sequences of `max_context` positions when, beside the
/// `weights`, they would exceed the device's memory budget; the error names the largest
/// context that fits.
pub(crate) fn check_kv_fits(
    ctx: &GpuContext,
    (cfg, weights): (&Config, &ModelWeights),
    kv: KvType,
    max_context: usize,
    slots: usize,
) -> Result<()> {
    let layers = cfg.attention.iter().filter(|a| **a).count() as u64;
    let per_position = 2 * layers * position_bytes(cfg, kv) * slots as u64;
    let what = format!(
        "the {} KV cache of {slots} sequence(s) of {max_context} positions",
        kv.name()
    );
    let needed = per_position.saturating_mul(max_context as u64);
    let in_use = (weights.gpu_bytes(), "the weights");
    ctx.check_fits(&what, needed, in_use, |free| {
        // A smaller KV type: f16 first (half of f32, ~1e-3 relative in logits), then q8_0.
        let smaller = match kv {
            KvType::F32 => Some("--kv-type f16 or q8_0"),
            KvType::F16 => Some("--kv-type q8_0"),
            KvType::Q8_0 => None,
        };
        let others = match (slots > 1, smaller) {
            (true, Some(k)) => format!(", a smaller --parallel or {k}"),
            (true, None) => " or a smaller --parallel".to_string(),
            (false, Some(k)) => format!(" or {k}"),
            (false, None) => String::new(),
        };
        match free / per_position.max(1) {
            0 => "not one position fits: load the model with a smaller --quant".into(),
            n => format!("use --ctx {n} or less{others}"),
        }
    })
}

impl SequenceState {
    /// The state of an empty sequence: conv states allocated, no KV page yet.
    pub fn new(
        ctx: &GpuContext,
        cfg: &Config,
        weights: &ModelWeights,
        kv: KvType,
        max_context: usize,
    ) -> Result<Self> {
        let position_bytes = position_bytes(cfg, kv);
        let page_positions = page_positions(position_bytes, ctx.max_binding())?;
        let conv_bytes = (4 * (cfg.conv_taps - 1) * cfg.hidden) as u64;
        let layers = weights
            .layers
            .iter()
            .map(|l| match l.mixer {
                Mixer::Conv(_) => LayerState::Conv {
                    state: ctx.storage("conv state", conv_bytes),
                },
                Mixer::Attn(_) => LayerState::Attn {
                    k: Vec::new(),
                    v: Vec::new(),
                },
            })
            .collect();
        Ok(SequenceState {
            layers,
            kv,
            page_positions,
            position_bytes,
            max_context,
            capacity: 0,
        })
    }

    /// Most pages a cache of `max_context` positions takes.
    pub fn max_pages(&self) -> usize {
        self.max_context.div_ceil(self.page_positions)
    }

    /// Bytes one position takes in the K and V caches of every attention layer.
    pub fn bytes_per_position(&self) -> u64 {
        let layers = self
            .layers
            .iter()
            .filter(|l| matches!(l, LayerState::Attn { .. }))
            .count() as u64;
        2 * layers * self.position_bytes
    }

    /// Bytes of KV cache allocated so far, over all layers.
    pub fn kv_bytes(&self) -> u64 {
        self.capacity as u64 * self.bytes_per_position()
    }

    /// Allocates the KV pages positions `0..positions` need (at most `max_context`).
    pub fn reserve(&mut self, ctx: &GpuContext, positions: usize) -> Result<()> {
        let positions = positions.min(self.max_context);
        while self.capacity < positions {
            let n = self.page_positions.min(self.max_context - self.capacity);
            let bytes = n as u64 * self.position_bytes;
            for layer in &mut self.layers {
                if let LayerState::Attn { k, v } = layer {
                    k.push(Binding::whole(&ctx.try_storage("k cache page", bytes)?));
                    v.push(Binding::whole(&ctx.try_storage("v cache page", bytes)?));
                }
            }
            self.capacity += n;
        }
        Ok(())
    }

    /// Layer `k`/`v` pages as the attention kernels read them.
    pub fn pages<'a>(&self, k: &'a [Binding], v: &'a [Binding]) -> KvPages<'a> {
        KvPages {
            k,
            v,
            page_positions: self.page_positions as u32,
        }
    }

    /// Zeroes the conv states (the KV cache is overwritten as it fills).
    pub fn clear(&self, ctx: &GpuContext) {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        for s in &self.layers {
            if let LayerState::Conv { state } = s {
                enc.clear_buffer(state, 0, None);
            }
        }
        ctx.queue.submit([enc.finish()]);
    }
}
