//! `config.json` of LFM2 (`lfm2`) and LFM2-MoE (`lfm2_moe`) in both key styles.

use std::path::Path;

use serde_json::Value;

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

struct Keys<'a> {
    v: &'a Value,
    path: &'a Path,
}

impl Keys<'_> {
    fn get(&self, names: &[&str]) -> Option<&Value> {
        names
            .iter()
            .find_map(|n| self.v.get(*n).filter(|x| !x.is_null()))
    }
    fn err(&self, msg: String) -> Error {
        Error::file(self.path, msg)
    }
    fn usize(&self, names: &[&str]) -> Result<usize> {
        self.get(names)
            .ok_or_else(|| self.err(format!("missing key '{}'", names[0])))?
            .as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| self.err(format!("key '{}' must be a non-negative integer", names[0])))
    }
    fn usize_or(&self, names: &[&str], default: usize) -> Result<usize> {
        if self.get(names).is_some() {
            self.usize(names)
        } else {
            Ok(default)
        }
    }
    fn f64_or(&self, names: &[&str], default: f64) -> Result<f64> {
        match self.get(names) {
            None => Ok(default),
            Some(x) => x
                .as_f64()
                .ok_or_else(|| self.err(format!("key '{}' must be a number", names[0]))),
        }
    }
    fn bool_or(&self, names: &[&str], default: bool) -> Result<bool> {
        match self.get(names) {
            None => Ok(default),
            Some(x) => x
                .as_bool()
                .ok_or_else(|| self.err(format!("key '{}' must be true or false", names[0]))),
        }
    }
}

fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => Vec::new(),
    }
}

impl Config {
    /// Reads and validates `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::file(path, format!("cannot read the model config: {e}")))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("not valid JSON: {e}")))?;
        Self::from_json(&v, path)
    }

    /// Resolves a parsed config (`path` is only used in error messages).
    pub fn from_json(v: &Value, path: &Path) -> Result<Self> {
        let k = Keys { v, path };
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let is_moe = match model_type {
            "lfm2" => false,
            "lfm2_moe" => true,
            other => {
                return Err(k.err(format!(
                    "unsupported model_type '{other}': wmoe runs 'lfm2' and 'lfm2_moe' checkpoints"
                )))
            }
        };
        let hidden = k.usize(&["hidden_size", "block_dim", "conv_dim"])?;
        let n_layers = k.usize(&["num_hidden_layers"])?;
        let attention = if let Some(types) = k.get(&["layer_types"]) {
            let arr = types
                .as_array()
                .ok_or_else(|| k.err("'layer_types' must be a list".into()))?;
            arr.iter()
                .map(|t| match t.as_str() {
                    Some("full_attention") => Ok(true),
                    Some("conv") => Ok(false),
                    other => Err(k.err(format!("unknown layer type {other:?} in 'layer_types'"))),
                })
                .collect::<Result<Vec<_>>>()?
        } else if let Some(idx) = k.get(&["full_attn_idxs"]) {
            let arr = idx
                .as_array()
                .ok_or_else(|| k.err("'full_attn_idxs' must be a list".into()))?;
            let mut a = vec![false; n_layers];
            for i in arr {
                let i = i
                    .as_u64()
                    .map(|i| i as usize)
                    .filter(|&i| i < n_layers)
                    .ok_or_else(|| {
                        k.err(format!(
                            "'full_attn_idxs' entry {i} is not a layer index below {n_layers}"
                        ))
                    })?;
                a[i] = true;
            }
            a
        } else {
            return Err(k.err("missing 'layer_types' (or legacy 'full_attn_idxs')".into()));
        };
        if attention.len() != n_layers {
            return Err(k.err(format!(
                "'layer_types' has {} entries but num_hidden_layers is {n_layers}",
                attention.len()
            )));
        }
        let n_heads = k.usize(&["num_attention_heads", "num_heads"])?;
        let n_kv_heads = k.usize_or(&["num_key_value_heads"], n_heads)?;
        if n_heads == 0 || hidden % n_heads != 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(k.err(format!(
                "head counts do not fit: hidden {hidden}, {n_heads} heads, {n_kv_heads} kv heads"
            )));
        }
        let head_dim = hidden / n_heads;
        let mut ffn = k.usize(&["block_ff_dim", "intermediate_size"])?;
        if !is_moe && k.bool_or(&["block_auto_adjust_ff_dim"], false)? {
            ffn = 2 * ffn / 3;
            if let Some(m) = k.get(&["block_ffn_dim_multiplier"]).and_then(Value::as_f64) {
                ffn = (m * ffn as f64) as usize;
            }
            let multiple = k.usize_or(&["block_multiple_of"], 256)?.max(1);
            ffn = ffn.div_ceil(multiple) * multiple;
        }
        if is_moe {
            // LFM2-MoE uses intermediate_size as-is (block_ff_dim is a dense-only legacy key).
            ffn = k.usize(&["intermediate_size", "block_ff_dim"])?;
        }
        let moe = if is_moe {
            Some(MoeConfig {
                n_experts: k.usize(&["num_experts"])?,
                top_k: k.usize(&["num_experts_per_tok"])?,
                ffn: k.usize(&["moe_intermediate_size"])?,
                num_dense_layers: k.usize_or(&["num_dense_layers"], 0)?,
                use_expert_bias: k.bool_or(&["use_expert_bias"], true)?,
                norm_topk_prob: k.bool_or(&["norm_topk_prob"], true)?,
                routed_scaling_factor: k.f64_or(&["routed_scaling_factor"], 1.0)? as f32,
            })
        } else {
            None
        };
        if let Some(m) = &moe {
            if m.top_k == 0
                || m.top_k > m.n_experts
                || m.top_k > crate::kernels::moe_router::MAX_TOP_K
            {
                return Err(k.err(format!(
                    "num_experts_per_tok {} must be 1..={} and at most num_experts {}",
                    m.top_k,
                    crate::kernels::moe_router::MAX_TOP_K,
                    m.n_experts
                )));
            }
            if m.n_experts > crate::kernels::moe_gather::MAX_EXPERTS {
                return Err(k.err(format!(
                    "num_experts {} exceeds the supported {}",
                    m.n_experts,
                    crate::kernels::moe_gather::MAX_EXPERTS
                )));
            }
        }
        let rope_theta = match v
            .get("rope_parameters")
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
        {
            Some(t) => t,
            None => k.f64_or(&["rope_theta", "theta"], 1e6)?,
        };
        let rope_type = v
            .get("rope_parameters")
            .or_else(|| v.get("rope_scaling"))
            .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if rope_type != "default" {
            return Err(k.err(format!(
                "rope_type '{rope_type}' is not supported (only 'default' RoPE)"
            )));
        }
        if k.bool_or(&["conv_bias"], false)? {
            return Err(
                k.err("conv_bias = true is not supported (no released LFM2 uses it)".into())
            );
        }
        let conv_taps = k.usize_or(&["conv_L_cache"], 3)?;
        if !(1..=crate::kernels::shortconv::MAX_TAPS).contains(&conv_taps) {
            return Err(k.err(format!("conv_L_cache {conv_taps} must be 1..=8")));
        }
        if head_dim % 2 != 0 || head_dim > crate::kernels::qk_norm_rope::MAX_HEAD_DIM {
            return Err(k.err(format!("head_dim {head_dim} must be even and at most 256")));
        }
        Ok(Config {
            model_type: model_type.to_string(),
            vocab: k.usize(&["vocab_size"])?,
            hidden,
            n_layers,
            attention,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn,
            moe,
            norm_eps: k.f64_or(&["norm_eps", "block_norm_eps"], 1e-5)? as f32,
            conv_taps,
            rope_theta,
            tie_embeddings: k.bool_or(&["tie_word_embeddings", "tie_embedding"], true)?,
            max_positions: k.usize_or(&["max_position_embeddings"], 128_000)?,
            bos: ids(v.get("bos_token_id")).first().copied(),
            eos: ids(v.get("eos_token_id")),
        })
    }

    /// True when layer `i` has an MoE feed-forward.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| i >= m.num_dense_layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn legacy_and_modern_dense_keys_agree() {
        let p = Path::new("config.json");
        let legacy = json!({"model_type": "lfm2", "block_dim": 1024, "num_hidden_layers": 4, "full_attn_idxs": [2],
            "num_attention_heads": 16, "num_key_value_heads": 8, "block_ff_dim": 6656, "block_auto_adjust_ff_dim": true,
            "block_ffn_dim_multiplier": 1.0, "block_multiple_of": 256, "rope_theta": 1e6, "tie_embedding": true, "vocab_size": 65536});
        let modern = json!({"model_type": "lfm2", "hidden_size": 1024, "num_hidden_layers": 4,
            "layer_types": ["conv", "conv", "full_attention", "conv"], "num_attention_heads": 16, "num_key_value_heads": 8,
            "intermediate_size": 4608, "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}, "tie_word_embeddings": true, "vocab_size": 65536});
        let a = Config::from_json(&legacy, p).unwrap();
        let b = Config::from_json(&modern, p).unwrap();
        assert_eq!(a.ffn, 4608);
        assert_eq!(a, b);
    }

    #[test]
    fn unknown_model_type_is_a_clear_error() {
        let e = Config::from_json(&json!({"model_type": "llama"}), Path::new("x/config.json"))
            .unwrap_err();
        assert!(
            e.to_string().contains("x/config.json") && e.to_string().contains("'llama'"),
            "{e}"
        );
    }
}
