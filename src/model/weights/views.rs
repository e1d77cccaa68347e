//! Every tensor a config implies, read from a checkpoint and checked — present, shaped as
//! the config says, rows of whole blocks — before anything is uploaded, so a malformed
//! checkpoint is reported without a GPU.

use super::super::config::{Config, MoeConfig};
use super::super::source::{TensorSource, TensorView};
use crate::error::{Error, Result};

/// The views of one layer.
pub(super) struct LayerViews<'a> {
    pub operator_norm: TensorView<'a>,
    pub ffn_norm: TensorView<'a>,
    pub mixer: MixerViews<'a>,
    pub ffn: FfnViews<'a>,
}

pub(super) enum MixerViews<'a> {
    Conv {
        in_proj: TensorView<'a>,
        kernel: TensorView<'a>,
        out_proj: TensorView<'a>,
    },
    Attn {
        /// q, k, v.
        qkv: Vec<TensorView<'a>>,
        q_norm: TensorView<'a>,
        k_norm: TensorView<'a>,
        out_proj: TensorView<'a>,
    },
}

pub(super) enum FfnViews<'a> {
    Dense {
        /// w1, w3.
        w13: Vec<TensorView<'a>>,
        w2: TensorView<'a>,
    },
    Moe {
        gate: TensorView<'a>,
        /// `None` when the model has no expert bias.
        bias: Option<TensorView<'a>>,
        /// Per expert w1 then w3 (or one stacked [E, 2Fe, H] tensor).
        gate_up: Vec<TensorView<'a>>,
        /// Per expert w2 (or one stacked [E, H, Fe] tensor).
        down: Vec<TensorView<'a>>,
    },
}

/// Every tensor of a model, checked.
pub(super) struct ModelViews<'a> {
    pub embed: TensorView<'a>,
    /// `None` when tied to the embedding.
    pub lm_head: Option<TensorView<'a>>,
    pub final_norm: TensorView<'a>,
    pub layers: Vec<LayerViews<'a>>,
}

/// `layer`'s Hugging Face name for `s`.
pub(super) fn layer_name(layer: usize, s: &str) -> String {
    format!("model.layers.{layer}.{s}")
}

/// Reads the tensors `cfg` implies from `ck`.
pub(super) fn read<'a>(ck: &'a dyn TensorSource, cfg: &'a Config) -> Result<ModelViews<'a>> {
    let r = Reader { ck, cfg };
    let h = cfg.hidden;
    let embed = r.matrix(ck.get_shaped("model.embed_tokens.weight", &[cfg.vocab, h])?)?;
    let lm_head = if ck.contains("lm_head.weight") && !cfg.tie_embeddings {
        Some(r.matrix(ck.get_shaped("lm_head.weight", &[cfg.vocab, h])?)?)
    } else {
        None
    };
    Ok(ModelViews {
        embed,
        lm_head,
        final_norm: ck.get_shaped("model.embedding_norm.weight", &[h])?,
        layers: (0..cfg.n_layers)
            .map(|i| r.layer(i))
            .collect::<Result<_>>()?,
    })
}

struct Reader<'a> {
    ck: &'a dyn TensorSource,
    cfg: &'a Config,
}

impl<'a> Reader<'a> {
    /// The tensor `s` of `layer`, checked to have `shape`.
    fn get(&self, layer: usize, s: &str, shape: &[usize]) -> Result<TensorView<'a>> {
        self.ck.get_shaped(&layer_name(layer, s), shape)
    }

    /// `v`, checked to be a matrix of rows that are whole blocks of its format.
    fn matrix(&self, v: TensorView<'a>) -> Result<TensorView<'a>> {
        if !v.format.fits(v.cols()) {
            let msg = format!(
                "rows of {} are not whole {} blocks",
                v.cols(),
                v.format.name()
            );
            return Err(Error::tensor(v.path, &v.name, msg));
        }
        Ok(v)
    }

    /// The matrix `s` of `layer`, checked to be [rows, cols].
    fn layer_matrix(&self, layer: usize, s: &str, shape: [usize; 2]) -> Result<TensorView<'a>> {
        self.matrix(self.get(layer, s, &shape)?)
    }

    fn layer(&self, i: usize) -> Result<LayerViews<'a>> {
        let (cfg, h) = (self.cfg, self.cfg.hidden);
        Ok(LayerViews {
            operator_norm: self.get(i, "operator_norm.weight", &[h])?,
            ffn_norm: self.get(i, "ffn_norm.weight", &[h])?,
            mixer: if cfg.attention[i] {
                self.attention(i)?
            } else {
                self.conv(i)?
            },
            ffn: match cfg.moe.as_ref().filter(|_| cfg.is_moe_layer(i)) {
                None => self.dense_ffn(i)?,
                Some(m) => self.moe(i, m)?,
            },
        })
    }

    fn attention(&self, i: usize) -> Result<MixerViews<'a>> {
        let cfg = self.cfg;
        let (h, hd) = (cfg.hidden, cfg.head_dim);
        let (nq, nkv) = (cfg.n_heads * hd, cfg.n_kv_heads * hd);
        Ok(MixerViews::Attn {
            qkv: vec![
                self.layer_matrix(i, "self_attn.q_proj.weight", [nq, h])?,
                self.layer_matrix(i, "self_attn.k_proj.weight", [nkv, h])?,
                self.layer_matrix(i, "self_attn.v_proj.weight", [nkv, h])?,
            ],
            q_norm: self.get(i, "self_attn.q_layernorm.weight", &[hd])?,
            k_norm: self.get(i, "self_attn.k_layernorm.weight", &[hd])?,
            out_proj: self.layer_matrix(i, "self_attn.out_proj.weight", [h, nq])?,
        })
    }

    fn conv(&self, i: usize) -> Result<MixerViews<'a>> {
        let (h, taps) = (self.cfg.hidden, self.cfg.conv_taps);
        let cn = layer_name(i, "conv.conv.weight");
        let kernel = self.ck.get(&cn)?;
        if kernel.shape != [h, 1, taps] && kernel.shape != [h, taps] {
            let msg = format!(
                "has shape {:?} but the config implies [{h}, 1, {taps}]",
                kernel.shape
            );
            return Err(Error::tensor(kernel.path, &cn, msg));
        }
        Ok(MixerViews::Conv {
            in_proj: self.layer_matrix(i, "conv.in_proj.weight", [3 * h, h])?,
            kernel,
            out_proj: self.layer_matrix(i, "conv.out_proj.weight", [h, h])?,
        })
    }

    fn dense_ffn(&self, i: usize) -> Result<FfnViews<'a>> {
        let (h, f) = (self.cfg.hidden, self.cfg.ffn);
        Ok(FfnViews::Dense {
            w13: vec![
                self.layer_matrix(i, "feed_forward.w1.weight", [f, h])?,
                self.layer_matrix(i, "feed_forward.w3.weight", [f, h])?,
            ],
            w2: self.layer_matrix(i, "feed_forward.w2.weight", [h, f])?,
        })
    }

    fn moe(&self, i: usize, m: &MoeConfig) -> Result<FfnViews<'a>> {
        let (h, e, fe) = (self.cfg.hidden, m.n_experts, m.ffn);
        let gate = self.layer_matrix(i, "feed_forward.gate.weight", [e, h])?;
        let bias = match m.use_expert_bias {
            true => Some(self.get(i, "feed_forward.expert_bias", &[e])?),
            false => None,
        };
        let (gate_up, down) = self.experts(i, e, fe)?;
        Ok(FfnViews::Moe {
            gate,
            bias,
            gate_up,
            down,
        })
    }

    /// The `e` experts' gate|up parts (w1 then w3, per expert) and down parts: stacked as
    /// transformers v5 holds them in memory ([E, 2Fe, H], [E, H, Fe]), or one per expert.
    fn experts(&self, i: usize, e: usize, fe: usize) -> Result<ExpertParts<'a>> {
        let h = self.cfg.hidden;
        let stacked = layer_name(i, "feed_forward.experts.gate_up_proj");
        if self.ck.contains(&stacked) {
            let gate_up = self.get(i, "feed_forward.experts.gate_up_proj", &[e, 2 * fe, h])?;
            let down = self.get(i, "feed_forward.experts.down_proj", &[e, h, fe])?;
            return Ok((vec![self.matrix(gate_up)?], vec![self.matrix(down)?]));
        }
        let mut gate_up = Vec::with_capacity(2 * e);
        let mut down = Vec::with_capacity(e);
        for x in 0..e {
            let w = |n: &str| format!("feed_forward.experts.{x}.{n}.weight");
            gate_up.push(self.layer_matrix(i, &w("w1"), [fe, h])?);
            gate_up.push(self.layer_matrix(i, &w("w3"), [fe, h])?);
            down.push(self.layer_matrix(i, &w("w2"), [h, fe])?);
        }
        Ok((gate_up, down))
    }
}

/// The experts' gate|up parts and down parts.
type ExpertParts<'a> = (Vec<TensorView<'a>>, Vec<TensorView<'a>>);
