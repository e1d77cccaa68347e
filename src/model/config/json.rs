//! [`Config`] from a `config.json` in either key style (current Hugging Face keys, or the
//! legacy `block_*` / `full_attn_idxs` ones).

use std::path::Path;

use serde_json::Value;

use super::{in_range, Config, MoeConfig, MAX_LAYERS};
use crate::error::{Error, Result};

/// The keys of one parsed `config.json`; each read takes a key and its aliases.
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

    /// `model_type`, and whether it is the MoE one.
    fn model_type(&self) -> Result<(&str, bool)> {
        let model_type = self
            .v
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        match model_type {
            "lfm2" => Ok((model_type, false)),
            "lfm2_moe" => Ok((model_type, true)),
            other => Err(self.err(format!(
                "unsupported model_type '{other}': wmoe runs 'lfm2' and 'lfm2_moe' checkpoints"
            ))),
        }
    }

    /// Which layers are full attention: from `layer_types`, or the legacy `full_attn_idxs`.
    fn attention_layers(&self, n_layers: usize) -> Result<Vec<bool>> {
        let attention = if let Some(types) = self.get(&["layer_types"]) {
            self.layer_types(types)?
        } else if let Some(idx) = self.get(&["full_attn_idxs"]) {
            self.full_attn_idxs(idx, n_layers)?
        } else {
            return Err(self.err("missing 'layer_types' (or legacy 'full_attn_idxs')".into()));
        };
        if attention.len() != n_layers {
            return Err(self.err(format!(
                "'layer_types' has {} entries but num_hidden_layers is {n_layers}",
                attention.len()
            )));
        }
        Ok(attention)
    }

    fn layer_types(&self, types: &Value) -> Result<Vec<bool>> {
        let arr = types
            .as_array()
            .ok_or_else(|| self.err("'layer_types' must be a list".into()))?;
        arr.iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(true),
                Some("conv") => Ok(false),
                other => Err(self.err(format!("unknown layer type {other:?} in 'layer_types'"))),
            })
            .collect()
    }

    fn full_attn_idxs(&self, idx: &Value, n_layers: usize) -> Result<Vec<bool>> {
        let arr = idx
            .as_array()
            .ok_or_else(|| self.err("'full_attn_idxs' must be a list".into()))?;
        let mut a = vec![false; n_layers];
        for i in arr {
            let i = i
                .as_u64()
                .map(|i| i as usize)
                .filter(|&i| i < n_layers)
                .ok_or_else(|| {
                    self.err(format!(
                        "'full_attn_idxs' entry {i} is not a layer index below {n_layers}"
                    ))
                })?;
            a[i] = true;
        }
        Ok(a)
    }

    /// (query heads, key/value heads), checked to divide `hidden` and each other.
    fn head_counts(&self, hidden: usize) -> Result<(usize, usize)> {
        let n_heads = self.usize(&["num_attention_heads", "num_heads"])?;
        let n_kv_heads = self.usize_or(&["num_key_value_heads"], n_heads)?;
        if n_heads == 0
            || !hidden.is_multiple_of(n_heads)
            || n_kv_heads == 0
            || !n_heads.is_multiple_of(n_kv_heads)
        {
            return Err(self.err(format!(
                "head counts do not fit: hidden {hidden}, {n_heads} heads, {n_kv_heads} kv heads"
            )));
        }
        Ok((n_heads, n_kv_heads))
    }

    /// The dense FFN width, after LFM2's auto-adjust rule where the config asks for it.
    fn dense_ffn(&self, is_moe: bool) -> Result<usize> {
        let mut ffn = self.usize(&["block_ff_dim", "intermediate_size"])?;
        if is_moe {
            // LFM2-MoE uses intermediate_size as-is (block_ff_dim is a dense-only legacy key).
            return self.usize(&["intermediate_size", "block_ff_dim"]);
        }
        if self.bool_or(&["block_auto_adjust_ff_dim"], false)? {
            ffn = ffn.saturating_mul(2) / 3;
            let m = self.f64_or(&["block_ffn_dim_multiplier"], 1.0)?;
            if !(m.is_finite() && m > 0.0) {
                return Err(self.err(format!(
                    "key 'block_ffn_dim_multiplier' is {m}; it must be a finite number above 0"
                )));
            }
            ffn = (m * ffn as f64) as usize;
            let multiple = self.usize_or(&["block_multiple_of"], 256)?.max(1);
            ffn = ffn.checked_next_multiple_of(multiple).ok_or_else(|| {
                self.err(format!(
                    "the adjusted FFN width {ffn} overflows; fix 'block_ff_dim' or 'block_ffn_dim_multiplier'"
                ))
            })?;
        }
        Ok(ffn)
    }

    fn moe(&self) -> Result<MoeConfig> {
        Ok(MoeConfig {
            n_experts: self.usize(&["num_experts"])?,
            top_k: self.usize(&["num_experts_per_tok"])?,
            ffn: self.usize(&["moe_intermediate_size"])?,
            num_dense_layers: self.usize_or(&["num_dense_layers"], 0)?,
            use_expert_bias: self.bool_or(&["use_expert_bias"], true)?,
            norm_topk_prob: self.bool_or(&["norm_topk_prob"], true)?,
            routed_scaling_factor: self.f64_or(&["routed_scaling_factor"], 1.0)? as f32,
        })
    }

    /// The RoPE base, checked to be plain (`default`) RoPE.
    fn rope_theta(&self) -> Result<f64> {
        let v = self.v;
        let rope_theta = match v
            .get("rope_parameters")
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
        {
            Some(t) => t,
            None => self.f64_or(&["rope_theta", "theta"], 1e6)?,
        };
        let rope_type = v
            .get("rope_parameters")
            .or_else(|| v.get("rope_scaling"))
            .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if rope_type != "default" {
            return Err(self.err(format!(
                "rope_type '{rope_type}' is not supported (only 'default' RoPE)"
            )));
        }
        Ok(rope_theta)
    }

    fn check_no_conv_bias(&self) -> Result<()> {
        if self.bool_or(&["conv_bias"], false)? {
            return Err(
                self.err("conv_bias = true is not supported (no released LFM2 uses it)".into())
            );
        }
        Ok(())
    }

    /// Token ids of a key holding one id or a list of them (none when absent or null).
    fn ids(&self, key: &str) -> Result<Vec<u32>> {
        let bad = || {
            self.err(format!(
                "key '{key}' must be a token id (an integer below 2^32) or a list of them"
            ))
        };
        let id = |x: &Value| {
            x.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(bad)
        };
        match self.get(&[key]) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(id).collect(),
            Some(x) => Ok(vec![id(x)?]),
        }
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
        let (model_type, is_moe) = k.model_type()?;
        let hidden = k.usize(&["hidden_size", "block_dim", "conv_dim"])?;
        let n_layers = k.usize(&["num_hidden_layers"])?;
        // bounded before anything is sized by it
        in_range(path, "num_hidden_layers", n_layers, MAX_LAYERS)?;
        let attention = k.attention_layers(n_layers)?;
        let (n_heads, n_kv_heads) = k.head_counts(hidden)?;
        let ffn = k.dense_ffn(is_moe)?;
        let moe = if is_moe { Some(k.moe()?) } else { None };
        let rope_theta = k.rope_theta()?;
        k.check_no_conv_bias()?;
        let conv_taps = k.usize_or(&["conv_L_cache"], 3)?;
        let config = Config {
            model_type: model_type.to_string(),
            vocab: k.usize(&["vocab_size"])?,
            hidden,
            n_layers,
            attention,
            n_heads,
            n_kv_heads,
            head_dim: hidden / n_heads,
            ffn,
            moe,
            norm_eps: k.f64_or(&["norm_eps", "block_norm_eps"], 1e-5)? as f32,
            conv_taps,
            rope_theta,
            tie_embeddings: k.bool_or(&["tie_word_embeddings", "tie_embedding"], true)?,
            max_positions: k.usize_or(&["max_position_embeddings"], 128_000)?,
            bos: k.ids("bos_token_id")?.first().copied(),
            eos: k.ids("eos_token_id")?,
        };
        config.check_shapes(path)?;
        Ok(config)
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
