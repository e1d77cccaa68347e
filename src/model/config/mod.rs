//! The model config of LFM2 (`lfm2`) and LFM2-MoE (`lfm2_moe`): the resolved [`Config`] and
//! the limits wmoe's kernels put on it. It is read from a `config.json` (`json`) or from a
//! GGUF file's metadata (`gguf`), which is resolved and validated as a `config.json`.

mod gguf;
mod json;

use std::path::Path;

use crate::error::{Error, Result};

/// MoE hyperparameters.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    pub n_experts: usize,
    pub top_k: usize,
    pub ffn: usize,
    pub num_dense_layers: usize,
    pub use_expert_bias: bool,
    pub norm_topk_prob: bool,
    pub routed_scaling_factor: f32,
}

/// Everything the forward pass needs, resolved from either key style.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub model_type: String,
    pub vocab: usize,
    pub hidden: usize,
    pub n_layers: usize,
    /// `true` where the layer is full attention, `false` for short conv.
    pub attention: Vec<bool>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Dense SwiGLU width (after LFM2's auto-adjust rule); checked against the tensors at load.
    pub ffn: usize,
    pub moe: Option<MoeConfig>,
    pub norm_eps: f32,
    pub conv_taps: usize,
    pub rope_theta: f64,
    pub tie_embeddings: bool,
    pub max_positions: usize,
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
}

impl Config {
    /// True when layer `i` has an MoE feed-forward.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| i >= m.num_dense_layers)
    }

    /// Sizes that make a model: top-k within the experts, a conv of at least one tap, an
    /// even head size for RoPE (`path` names the config in errors). The kernels' own maxima
    /// are checked where a model meets them (runtime/model.rs).
    pub(crate) fn check_shapes(&self, path: &Path) -> Result<()> {
        let err = |msg: String| Err(Error::file(path, msg));
        if let Some(m) = &self.moe {
            if m.top_k == 0 || m.top_k > m.n_experts {
                return err(format!(
                    "num_experts_per_tok {} must be 1..=num_experts {}",
                    m.top_k, m.n_experts
                ));
            }
        }
        if self.conv_taps == 0 {
            return err("conv_L_cache must be at least 1".into());
        }
        if !self.head_dim.is_multiple_of(2) {
            return err(format!("head_dim {} must be even", self.head_dim));
        }
        Ok(())
    }
}
