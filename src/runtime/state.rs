//! A sequence's state on the GPU: the KV cache of each attention layer and the conv state of
//! each short-conv layer, which every step of the sequence reads and extends.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels::KvType;
use crate::model::{Config, Mixer, ModelWeights};

/// One layer's sequence state.
pub(crate) enum LayerState {
    Conv { state: wgpu::Buffer },
    Attn { k: wgpu::Buffer, v: wgpu::Buffer },
}

/// Every layer's state of one sequence, for up to `max_context` positions.
pub(crate) struct SequenceState {
    pub layers: Vec<LayerState>,
    pub kv: KvType,
}

impl SequenceState {
    pub fn new(
        ctx: &GpuContext,
        cfg: &Config,
        weights: &ModelWeights,
        kv: KvType,
        max_context: usize,
    ) -> Result<Self> {
        let kv_bytes = (max_context * cfg.n_kv_heads * cfg.head_dim * kv.bytes()) as u64;
        if kv_bytes > ctx.max_binding() {
            return Err(Error::Input(format!(
                "a KV cache of {} positions needs {} MiB per layer, over this device's {} MiB binding limit; use a shorter --ctx",
                max_context,
                kv_bytes >> 20,
                ctx.max_binding() >> 20
            )));
        }
        let conv_bytes = (4 * (cfg.conv_taps - 1) * cfg.hidden) as u64;
        let layers = weights
            .layers
            .iter()
            .map(|l| match l.mixer {
                Mixer::Conv(_) => LayerState::Conv {
                    state: ctx.storage("conv state", conv_bytes),
                },
                Mixer::Attn(_) => LayerState::Attn {
                    k: ctx.storage("k cache", kv_bytes),
                    v: ctx.storage("v cache", kv_bytes),
                },
            })
            .collect();
        Ok(SequenceState { layers, kv })
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
