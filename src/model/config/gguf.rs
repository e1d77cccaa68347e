//! [`Config`] from the metadata of an `lfm2` / `lfm2moe` GGUF file (llama.cpp's keys,
//! MODEL-SPEC §5.2) and its tensor shapes, resolved as a `config.json` would be.

use serde_json::json;

use super::Config;
use crate::error::{Error, Result};
use crate::model::gguf::{lfm2_architecture, GgufFile, GgufValue};

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
    fn f64_or(&self, k: &str, default: f64) -> Result<f64> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(format!("'{}' must be a number, not {v:?}", self.key(k)))),
        }
    }
    /// `ne[dim]` of the tensor `blk.N.{suffix}` of the lowest N.
    fn tensor_dim(&self, suffix: &str, dim: usize) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for t in self.g.tensors() {
            let Some((layer, rest)) = t.name.strip_prefix("blk.").and_then(|r| r.split_once('.'))
            else {
                continue;
            };
            let (Ok(layer), Some(&d)) = (layer.parse::<usize>(), t.ne.get(dim)) else {
                continue;
            };
            if rest == suffix && best.is_none_or(|(l, _)| layer < l) {
                best = Some((layer, d as usize));
            }
        }
        best.map(|(_, d)| d)
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
        let arch = lfm2_architecture(g)?;
        let m = Meta { g, arch };
        let is_moe = arch == "lfm2moe";
        let n_layers = m.usize("block_count")?;
        let hidden = m.usize("embedding_length")?;
        let n_heads = m.usize("attention.head_count")?;
        let layer_has = |i: usize, s: &str| g.tensor(&format!("blk.{i}.{s}")).is_some();
        let (attention, n_kv_heads) = match m.get("attention.head_count_kv") {
            Some(GgufValue::Array(a)) => {
                if a.len() != n_layers {
                    return Err(m.err(format!(
                        "'{}' has {} entries but block_count is {n_layers}",
                        m.key("attention.head_count_kv"),
                        a.len()
                    )));
                }
                let kv: Vec<usize> = a
                    .iter()
                    .map(|v| v.as_u64().map(|x| x as usize))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        m.err(format!(
                            "'{}' must hold non-negative integers",
                            m.key("attention.head_count_kv")
                        ))
                    })?;
                let mut counts: Vec<usize> = kv.iter().copied().filter(|&x| x > 0).collect();
                counts.sort_unstable();
                counts.dedup();
                if counts.len() > 1 {
                    return Err(m.err(format!(
                        "'{}' gives different KV head counts per attention layer ({kv:?}); wmoe needs one count",
                        m.key("attention.head_count_kv")
                    )));
                }
                (
                    kv.iter().map(|&x| x > 0).collect::<Vec<_>>(),
                    counts.first().copied().unwrap_or(n_heads),
                )
            }
            other => {
                let kv = match other {
                    None => n_heads,
                    Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                        m.err(format!(
                            "'{}' must be an integer or a per-layer array",
                            m.key("attention.head_count_kv")
                        ))
                    })?,
                };
                (
                    (0..n_layers)
                        .map(|i| layer_has(i, "attn_q.weight"))
                        .collect(),
                    kv,
                )
            }
        };
        if n_heads > 0 {
            if let Some(kl) = m.usize_opt("attention.key_length")? {
                if kl * n_heads != hidden {
                    return Err(m.err(format!(
                        "'{}' is {kl} but embedding_length / head_count is {}: wmoe needs head_dim = hidden / heads",
                        m.key("attention.key_length"),
                        hidden / n_heads
                    )));
                }
            }
        }
        let layer_types: Vec<&str> = attention
            .iter()
            .map(|&a| if a { "full_attention" } else { "conv" })
            .collect();
        // tensor ne = [H, F]: ne[1] is the width
        let ffn = match m.tensor_dim("ffn_gate.weight", 1) {
            Some(f) => f,
            None => m.usize_opt("feed_forward_length")?.unwrap_or(0),
        };
        let rope_type = match m.get("rope.scaling.type").and_then(GgufValue::as_str) {
            None | Some("none") => "default".to_string(),
            Some(t) => t.to_string(),
        };
        let vocab = match m.usize_opt("vocab_size")? {
            Some(v) => v,
            None => match g.tensor("token_embd.weight").and_then(|t| t.ne.get(1)) {
                Some(&v) => v as usize,
                None => g
                    .get("tokenizer.ggml.tokens")
                    .and_then(GgufValue::as_array)
                    .map(|a| a.len())
                    .ok_or_else(|| {
                        m.err(format!(
                            "no '{}', token_embd.weight or token list: cannot tell the vocabulary size",
                            m.key("vocab_size")
                        ))
                    })?,
            },
        };
        let conv_bias = g.tensors().iter().any(|t| {
            t.name.ends_with(".shortconv.in_proj.bias")
                || t.name.ends_with(".shortconv.conv.bias")
                || t.name.ends_with(".shortconv.out_proj.bias")
        });
        let token_id = |k: &str| {
            g.get(k)
                .and_then(GgufValue::as_u64)
                .map(|x| serde_json::Value::from(x as u32))
                .unwrap_or(serde_json::Value::Null)
        };
        let mut v = json!({
            "model_type": if is_moe { "lfm2_moe" } else { "lfm2" },
            "vocab_size": vocab,
            "hidden_size": hidden,
            "num_hidden_layers": n_layers,
            "layer_types": layer_types,
            "num_attention_heads": n_heads,
            "num_key_value_heads": n_kv_heads,
            "intermediate_size": ffn,
            "norm_eps": m.f64_or("attention.layer_norm_rms_epsilon", 1e-5)?,
            "conv_L_cache": m.usize_opt("shortconv.l_cache")?.unwrap_or(3),
            "conv_bias": conv_bias,
            "rope_parameters": {"rope_theta": m.f64_or("rope.freq_base", 1e6)?, "rope_type": rope_type},
            "tie_word_embeddings": g.tensor("output.weight").is_none(),
            "max_position_embeddings": m.usize_opt("context_length")?.unwrap_or(128_000),
            "bos_token_id": token_id("tokenizer.ggml.bos_token_id"),
            "eos_token_id": token_id("tokenizer.ggml.eos_token_id"),
        });
        if is_moe {
            if let Some(f) = m.get("expert_gating_func") {
                if f.as_u64() != Some(2) {
                    return Err(m.err(format!(
                        "'{}' is {f:?}; LFM2-MoE routes with sigmoid (2)",
                        m.key("expert_gating_func")
                    )));
                }
            }
            let n_experts = match m.usize_opt("expert_count")? {
                Some(e) => e,
                None => m.tensor_dim("ffn_gate_exps.weight", 2).ok_or_else(|| {
                    m.err(format!("missing metadata '{}'", m.key("expert_count")))
                })?,
            };
            let expert_ffn = match m.tensor_dim("ffn_gate_exps.weight", 1) {
                Some(f) => f,
                None => m.usize("expert_feed_forward_length")?,
            };
            let norm = match m.get("expert_weights_norm") {
                None => true,
                Some(b) => b.as_bool().ok_or_else(|| {
                    m.err(format!("'{}' must be a bool", m.key("expert_weights_norm")))
                })?,
            };
            let o = v.as_object_mut().expect("object");
            o.insert("num_experts".into(), n_experts.into());
            o.insert(
                "num_experts_per_tok".into(),
                m.usize("expert_used_count")?.into(),
            );
            o.insert("moe_intermediate_size".into(), expert_ffn.into());
            o.insert(
                "num_dense_layers".into(),
                m.usize_opt("leading_dense_block_count")?
                    .unwrap_or(0)
                    .into(),
            );
            o.insert(
                "use_expert_bias".into(),
                g.tensors()
                    .iter()
                    .any(|t| t.name.ends_with(".exp_probs_b.bias"))
                    .into(),
            );
            o.insert("norm_topk_prob".into(), norm.into());
            o.insert(
                "routed_scaling_factor".into(),
                m.f64_or("expert_weights_scale", 1.0)?.into(),
            );
        }
        Config::from_json(&v, &g.path)
    }
}
