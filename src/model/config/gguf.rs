//! [`Config`] from the metadata of an `lfm2` / `lfm2moe` GGUF file (llama.cpp's keys,
//! MODEL-SPEC §5.2) and its tensor shapes, resolved as a `config.json` would be.

use serde_json::{json, Map, Value};

use super::{in_range, Config, MAX_LAYERS};
use crate::error::{Error, Result};
use crate::model::gguf::{block_tensor, lfm2_architecture, GgufFile, GgufValue};

/// The metadata of one file, read under its architecture's key prefix (`lfm2.` / `lfm2moe.`).
struct Meta<'a> {
    g: &'a GgufFile,
    arch: &'a str,
}

impl Meta<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }
    fn err(&self, msg: String) -> Error {
        Error::file(&self.g.path, msg)
    }
    fn get(&self, k: &str) -> Option<&GgufValue> {
        self.g.get(&self.key(k))
    }
    /// A non-negative integer, or the largest entry of a per-layer array.
    fn usize_opt(&self, k: &str) -> Result<Option<usize>> {
        match self.get(k) {
            None => Ok(None),
            Some(GgufValue::Array(a)) => a
                .iter()
                .map(|v| v.as_u64().map(|x| x as usize))
                .collect::<Option<Vec<_>>>()
                .map(|v| v.into_iter().max())
                .ok_or_else(|| {
                    self.err(format!("'{}' must hold non-negative integers", self.key(k)))
                }),
            Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
                self.err(format!(
                    "'{}' must be a non-negative integer, not {v:?}",
                    self.key(k)
                ))
            }),
        }
    }
    fn usize(&self, k: &str) -> Result<usize> {
        self.usize_opt(k)?.ok_or_else(|| {
            self.err(format!(
                "missing metadata '{}'; re-convert the model with a current llama.cpp",
                self.key(k)
            ))
        })
    }
    /// A finite number above zero, or `default` when the file does not have it.
    fn positive_or(&self, k: &str, default: f64) -> Result<f64> {
        let Some(v) = self.get(k) else {
            return Ok(default);
        };
        match v.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            _ => Err(self.err(format!(
                "'{}' is {v:?}; it must be a finite number above 0: corrupt file; re-convert it",
                self.key(k)
            ))),
        }
    }
    /// `ne[dim]` of the tensor `blk.N.{suffix}` of the lowest N.
    fn tensor_dim(&self, suffix: &str, dim: usize) -> Option<usize> {
        self.g
            .tensors()
            .iter()
            .filter_map(|t| {
                let (layer, rest) = block_tensor(&t.name)?;
                (rest == suffix).then_some((layer, t.ne.get(dim)?))
            })
            .min_by_key(|&(layer, _)| layer)
            .map(|(_, &d)| d as usize)
    }

    fn is_moe(&self) -> bool {
        self.arch == "lfm2moe"
    }

    /// Which layers are attention, and the KV head count of those that are: from the
    /// per-layer `attention.head_count_kv` (0 = short conv), or for a scalar count from which
    /// layers have `attn_q` tensors.
    fn attention_layers(&self, n_layers: usize, n_heads: usize) -> Result<(Vec<bool>, usize)> {
        match self.get("attention.head_count_kv") {
            Some(GgufValue::Array(a)) => self.per_layer_kv_heads(a, n_layers, n_heads),
            other => {
                let kv = match other {
                    None => n_heads,
                    Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                        self.err(format!(
                            "'{}' must be an integer or a per-layer array",
                            self.key("attention.head_count_kv")
                        ))
                    })?,
                };
                let attention = (0..n_layers)
                    .map(|i| self.g.tensor(&format!("blk.{i}.attn_q.weight")).is_some())
                    .collect();
                Ok((attention, kv))
            }
        }
    }

    /// The per-layer KV head counts `a`: attention where non-zero, one count for all.
    fn per_layer_kv_heads(
        &self,
        a: &[GgufValue],
        n_layers: usize,
        n_heads: usize,
    ) -> Result<(Vec<bool>, usize)> {
        if a.len() != n_layers {
            return Err(self.err(format!(
                "'{}' has {} entries but block_count is {n_layers}",
                self.key("attention.head_count_kv"),
                a.len()
            )));
        }
        let kv: Vec<usize> = a
            .iter()
            .map(|v| v.as_u64().map(|x| x as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                self.err(format!(
                    "'{}' must hold non-negative integers",
                    self.key("attention.head_count_kv")
                ))
            })?;
        let mut counts: Vec<usize> = kv.iter().copied().filter(|&x| x > 0).collect();
        counts.sort_unstable();
        counts.dedup();
        if counts.len() > 1 {
            return Err(self.err(format!(
                "'{}' gives different KV head counts per attention layer ({kv:?}); wmoe needs one count",
                self.key("attention.head_count_kv")
            )));
        }
        Ok((
            kv.iter().map(|&x| x > 0).collect(),
            counts.first().copied().unwrap_or(n_heads),
        ))
    }

    /// wmoe's head size is hidden / heads: a different `attention.key_length` is refused.
    fn check_key_length(&self, hidden: usize, n_heads: usize) -> Result<()> {
        if n_heads == 0 {
            return Ok(());
        }
        if let Some(kl) = self.usize_opt("attention.key_length")? {
            if kl.checked_mul(n_heads) != Some(hidden) {
                return Err(self.err(format!(
                    "'{}' is {kl} but embedding_length / head_count is {}: wmoe needs head_dim = hidden / heads",
                    self.key("attention.key_length"),
                    hidden / n_heads
                )));
            }
        }
        Ok(())
    }

    /// The dense FFN width from the `ffn_gate` tensors (some GGUFs carry the raw, unadjusted
    /// `feed_forward_length`), else from the metadata.
    fn dense_ffn(&self) -> Result<usize> {
        // tensor ne = [H, F]: ne[1] is the width
        match self.tensor_dim("ffn_gate.weight", 1) {
            Some(f) => Ok(f),
            None => Ok(self.usize_opt("feed_forward_length")?.unwrap_or(0)),
        }
    }

    fn rope_type(&self) -> String {
        match self.get("rope.scaling.type").and_then(GgufValue::as_str) {
            None | Some("none") => "default".to_string(),
            Some(t) => t.to_string(),
        }
    }

    /// `vocab_size`, else the rows of `token_embd.weight`, else the length of the token list.
    fn vocab(&self) -> Result<usize> {
        let g = self.g;
        if let Some(v) = self.usize_opt("vocab_size")? {
            return Ok(v);
        }
        match g.tensor("token_embd.weight").and_then(|t| t.ne.get(1)) {
            Some(&v) => Ok(v as usize),
            None => g
                .get("tokenizer.ggml.tokens")
                .and_then(GgufValue::as_array)
                .map(|a| a.len())
                .ok_or_else(|| {
                    self.err(format!(
                        "no '{}', token_embd.weight or token list: cannot tell the vocabulary size",
                        self.key("vocab_size")
                    ))
                }),
        }
    }

    fn has_conv_bias(&self) -> bool {
        self.g.tensors().iter().any(|t| {
            t.name.ends_with(".shortconv.in_proj.bias")
                || t.name.ends_with(".shortconv.conv.bias")
                || t.name.ends_with(".shortconv.out_proj.bias")
        })
    }

    /// A tokenizer token id (`tokenizer.ggml.*`, no architecture prefix) inside the
    /// vocabulary, or null.
    fn token_id(&self, k: &str, vocab: usize) -> Result<Value> {
        let Some(v) = self.g.get(k) else {
            return Ok(Value::Null);
        };
        match v.as_u64().filter(|&x| x < vocab as u64) {
            Some(x) => Ok(Value::from(x)),
            None => Err(self.err(format!(
                "'{k}' is {v:?}; it must be a token id below the vocabulary size {vocab}: corrupt file; re-convert it"
            ))),
        }
    }

    /// `block_count`, within 1..=[`MAX_LAYERS`] and covering every `blk.N` tensor.
    fn block_count(&self) -> Result<usize> {
        let n = self.usize("block_count")?;
        in_range(&self.g.path, &self.key("block_count"), n, MAX_LAYERS)?;
        let tensors = self.g.tensors().iter();
        let last = tensors
            .filter_map(|t| block_tensor(&t.name))
            .map(|b| b.0)
            .max();
        if let Some(blk) = last.filter(|&blk| blk >= n) {
            return Err(self.err(format!(
                "'{}' is {n} but the file has tensors of block {blk}: corrupt file; re-convert it",
                self.key("block_count")
            )));
        }
        Ok(n)
    }

    /// The `config.json` keys every LFM2 has.
    fn dense_keys(&self) -> Result<Value> {
        let n_layers = self.block_count()?;
        let hidden = self.usize("embedding_length")?;
        let n_heads = self.usize("attention.head_count")?;
        let (attention, n_kv_heads) = self.attention_layers(n_layers, n_heads)?;
        self.check_key_length(hidden, n_heads)?;
        let layer_types: Vec<&str> = attention
            .iter()
            .map(|&a| if a { "full_attention" } else { "conv" })
            .collect();
        let ffn = self.dense_ffn()?;
        let rope_type = self.rope_type();
        let vocab = self.vocab()?;
        Ok(json!({
            "model_type": if self.is_moe() { "lfm2_moe" } else { "lfm2" },
            "vocab_size": vocab,
            "hidden_size": hidden,
            "num_hidden_layers": n_layers,
            "layer_types": layer_types,
            "num_attention_heads": n_heads,
            "num_key_value_heads": n_kv_heads,
            "intermediate_size": ffn,
            "norm_eps": self.positive_or("attention.layer_norm_rms_epsilon", 1e-5)?,
            "conv_L_cache": self.usize_opt("shortconv.l_cache")?.unwrap_or(3),
            "conv_bias": self.has_conv_bias(),
            "rope_parameters": {"rope_theta": self.positive_or("rope.freq_base", 1e6)?, "rope_type": rope_type},
            "tie_word_embeddings": self.g.tensor("output.weight").is_none(),
            "max_position_embeddings": self.usize_opt("context_length")?.unwrap_or(128_000),
            "bos_token_id": self.token_id("tokenizer.ggml.bos_token_id", vocab)?,
            "eos_token_id": self.token_id("tokenizer.ggml.eos_token_id", vocab)?,
        }))
    }

    /// LFM2-MoE's routing must be sigmoid (`expert_gating_func` 2) where the file says.
    fn check_sigmoid_gating(&self) -> Result<()> {
        if let Some(f) = self.get("expert_gating_func") {
            if f.as_u64() != Some(2) {
                return Err(self.err(format!(
                    "'{}' is {f:?}; LFM2-MoE routes with sigmoid (2)",
                    self.key("expert_gating_func")
                )));
            }
        }
        Ok(())
    }

    /// The MoE `config.json` keys, added to `o`: expert count and width (from the
    /// `ffn_gate_exps` tensors where the metadata lacks them), top-k, the expert bias when
    /// `exp_probs_b` tensors exist, top-k weights renormalized unless `expert_weights_norm`
    /// is false, scaled by `expert_weights_scale` (default 1).
    fn add_moe_keys(&self, o: &mut Map<String, Value>) -> Result<()> {
        self.check_sigmoid_gating()?;
        let n_experts = match self.usize_opt("expert_count")? {
            Some(e) => e,
            None => self.tensor_dim("ffn_gate_exps.weight", 2).ok_or_else(|| {
                self.err(format!("missing metadata '{}'", self.key("expert_count")))
            })?,
        };
        let expert_ffn = match self.tensor_dim("ffn_gate_exps.weight", 1) {
            Some(f) => f,
            None => self.usize("expert_feed_forward_length")?,
        };
        let norm = match self.get("expert_weights_norm") {
            None => true,
            Some(b) => b.as_bool().ok_or_else(|| {
                self.err(format!(
                    "'{}' must be a bool",
                    self.key("expert_weights_norm")
                ))
            })?,
        };
        let top_k = self.usize("expert_used_count")?;
        let num_dense_layers = self.usize_opt("leading_dense_block_count")?.unwrap_or(0);
        let use_expert_bias = self
            .g
            .tensors()
            .iter()
            .any(|t| t.name.ends_with(".exp_probs_b.bias"));
        let scale = self.positive_or("expert_weights_scale", 1.0)?;
        o.insert("num_experts".into(), n_experts.into());
        o.insert("num_experts_per_tok".into(), top_k.into());
        o.insert("moe_intermediate_size".into(), expert_ffn.into());
        o.insert("num_dense_layers".into(), num_dense_layers.into());
        o.insert("use_expert_bias".into(), use_expert_bias.into());
        o.insert("norm_topk_prob".into(), norm.into());
        o.insert("routed_scaling_factor".into(), scale.into());
        Ok(())
    }
}

impl Config {
    /// The config of an `lfm2` / `lfm2moe` GGUF file from its metadata (llama.cpp's keys,
    /// MODEL-SPEC §5.2) and tensor shapes, validated like a `config.json`:
    /// - layer types from the per-layer `attention.head_count_kv` (0 = short conv; for a
    ///   scalar count, from which layers have `attn_q` tensors);
    /// - the dense FFN width from the `ffn_gate` tensors (some GGUFs carry the raw, unadjusted
    ///   `feed_forward_length`), the expert width from `ffn_gate_exps`;
    /// - `expert_gating_func` must be sigmoid (2); top-k weights are renormalized unless
    ///   `expert_weights_norm` is false, scaled by `expert_weights_scale` (default 1);
    /// - the expert bias is used when `exp_probs_b` tensors exist; embeddings are tied unless
    ///   there is an `output.weight`; BOS / EOS from the tokenizer metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Config> {
        let m = Meta {
            g,
            arch: lfm2_architecture(g)?,
        };
        let mut v = m.dense_keys()?;
        if m.is_moe() {
            m.add_moe_keys(v.as_object_mut().expect("object"))?;
        }
        Config::from_json(&v, &g.path)
    }
}
