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

/// The most layers a config may declare (released LFM2 models have at most 30).
pub const MAX_LAYERS: usize = 1024;
/// The largest hidden size, FFN width and head count a config may declare.
pub const MAX_WIDTH: usize = 1 << 20;
/// The largest vocabulary a config may declare (token ids are u32; LFM2's is 65536).
pub const MAX_VOCAB: usize = 1 << 24;
/// The most experts a config may declare (LFM2-MoE has 32).
pub const MAX_EXPERTS: usize = 1 << 16;
/// The most conv taps a config may declare (LFM2 has 3).
pub const MAX_CONV_TAPS: usize = 1024;

impl Config {
    /// True when layer `i` has an MoE feed-forward.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| i >= m.num_dense_layers)
    }

    /// Sizes and numbers that make a model (`path` names the config in errors): every count
    /// within its sane range, top-k within the experts, an even head size for RoPE, a
    /// positive finite epsilon, RoPE base and expert scale, token ids inside the vocabulary.
    /// The kernels' own maxima are checked where a model meets them (runtime/model.rs).
    pub(crate) fn check_shapes(&self, path: &Path) -> Result<()> {
        let err = |msg: String| Err(Error::file(path, msg));
        self.check_counts(path)?;
        if let Some(m) = &self.moe {
            if m.top_k == 0 || m.top_k > m.n_experts {
                return err(format!(
                    "num_experts_per_tok {} must be 1..=num_experts {}",
                    m.top_k, m.n_experts
                ));
            }
            positive(
                path,
                "routed_scaling_factor",
                m.routed_scaling_factor as f64,
            )?;
        }
        if !self.head_dim.is_multiple_of(2) {
            return err(format!("head_dim {} must be even", self.head_dim));
        }
        positive(path, "norm_eps", self.norm_eps as f64)?;
        positive(path, "rope_theta", self.rope_theta)?;
        let ids = self.bos.iter().map(|&b| ("bos_token_id", b));
        for (key, id) in ids.chain(self.eos.iter().map(|&e| ("eos_token_id", e))) {
            if id as usize >= self.vocab {
                return err(format!(
                    "{key} {id} is outside the vocabulary (vocab_size {}); fix the config",
                    self.vocab
                ));
            }
        }
        Ok(())
    }

    /// Every count within `1..=max` (the dense FFN width only where a layer is dense).
    fn check_counts(&self, path: &Path) -> Result<()> {
        let dense = (0..self.n_layers).any(|i| !self.is_moe_layer(i));
        let mut counts = vec![
            ("num_hidden_layers", self.n_layers, MAX_LAYERS),
            ("hidden_size", self.hidden, MAX_WIDTH),
            ("vocab_size", self.vocab, MAX_VOCAB),
            ("num_attention_heads", self.n_heads, MAX_WIDTH),
            ("conv_L_cache", self.conv_taps, MAX_CONV_TAPS),
            (
                "max_position_embeddings",
                self.max_positions,
                u32::MAX as usize,
            ),
        ];
        if dense {
            counts.push(("intermediate_size", self.ffn, MAX_WIDTH));
        }
        if let Some(m) = &self.moe {
            counts.push(("num_experts", m.n_experts, MAX_EXPERTS));
            counts.push(("moe_intermediate_size", m.ffn, MAX_WIDTH));
        }
        for (key, v, max) in counts {
            in_range(path, key, v, max)?;
        }
        Ok(())
    }
}

/// `v` is within `1..=max`, else an error naming `key`.
pub(crate) fn in_range(path: &Path, key: &str, v: usize, max: usize) -> Result<()> {
    if v == 0 || v > max {
        return Err(Error::file(
            path,
            format!("{key} is {v}; it must be 1..={max}: corrupt or wrong config; fix it or re-download the model"),
        ));
    }
    Ok(())
}

/// `v` is finite and above zero, else an error naming `key`.
fn positive(path: &Path, key: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::file(
            path,
            format!("{key} is {v}; it must be a finite number above 0: fix the config or re-download the model"),
        ));
    }
    Ok(())
}
