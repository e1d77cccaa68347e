//! LFM2 / LFM2-MoE weights on the GPU: tensors renamed, concatenated (q|k|v, w1|w3 per
//! expert), experts stacked, streamed page by page from the mapped checkpoint.

use indicatif::{ProgressBar, ProgressStyle};

use super::checkpoint::{Checkpoint, TensorView};
use super::config::Config;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, WeightFormat, WeightTensor};

pub struct ConvWeights {
    pub in_proj: WeightTensor,
    /// [H, L] f32 depthwise kernel.
    pub kernel: wgpu::Buffer,
    pub out_proj: WeightTensor,
}

pub struct AttnWeights {
    /// q | k | v rows stacked: [(n_heads + 2·n_kv)·hd, H].
    pub qkv: WeightTensor,
    pub q_norm: wgpu::Buffer,
    pub k_norm: wgpu::Buffer,
    pub out_proj: WeightTensor,
}

pub enum Mixer {
    Conv(ConvWeights),
    Attn(AttnWeights),
}

pub struct MoeWeights {
    /// [E, H] router, f32.
    pub router: WeightTensor,
    /// [E] selection bias, f32 (zeros when the model has none).
    pub bias: wgpu::Buffer,
    /// [E · 2Fe, H]: per expert, w1 rows then w3 rows.
    pub gate_up: WeightTensor,
    /// [E · H, Fe].
    pub down: WeightTensor,
}

pub enum FfnWeights {
    /// w1 | w3 stacked [2F, H] and w2 [H, F].
    Dense {
        gate_up: WeightTensor,
        down: WeightTensor,
    },
    Moe(MoeWeights),
}

pub struct LayerWeights {
    pub operator_norm: wgpu::Buffer,
    pub ffn_norm: wgpu::Buffer,
    pub mixer: Mixer,
    pub ffn: FfnWeights,
}

pub struct ModelWeights {
    pub embed: WeightTensor,
    /// `None` when tied to the embedding.
    pub lm_head: Option<WeightTensor>,
    pub final_norm: wgpu::Buffer,
    pub layers: Vec<LayerWeights>,
}

impl ModelWeights {
    pub fn lm_head(&self) -> &WeightTensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Bytes of all weight pages on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        let mut total = self.embed.gpu_bytes() + self.lm_head.as_ref().map_or(0, |t| t.gpu_bytes());
        for l in &self.layers {
            total += match &l.mixer {
                Mixer::Conv(c) => c.in_proj.gpu_bytes() + c.out_proj.gpu_bytes(),
                Mixer::Attn(a) => a.qkv.gpu_bytes() + a.out_proj.gpu_bytes(),
            };
            total += match &l.ffn {
                FfnWeights::Dense { gate_up, down } => gate_up.gpu_bytes() + down.gpu_bytes(),
                FfnWeights::Moe(m) => {
                    m.router.gpu_bytes() + m.gate_up.gpu_bytes() + m.down.gpu_bytes()
                }
            };
        }
        total
    }
}

/// Uploads the row-concatenation of `parts` (each a [rows_i, cols] matrix) as one tensor.
/// Parts keep their dtype when they all share one (or it is `force`d); else they become f32.
fn upload_concat(
    ctx: &GpuContext,
    name: &str,
    parts: &[TensorView],
    cols: usize,
    group_rows: usize,
    force: Option<WeightFormat>,
    bar: &ProgressBar,
) -> Result<WeightTensor> {
    let first = parts[0].format()?;
    let mut format = force.unwrap_or(first);
    for p in parts {
        if force.is_none() && p.format()? != first {
            format = WeightFormat::F32;
        }
    }
    let mut starts = Vec::with_capacity(parts.len());
    let mut rows = 0;
    for p in parts {
        starts.push(rows);
        rows += p.numel() / cols;
    }
    let row_bytes = format.row_words(cols) * 4;
    let mut part = 0;
    let t = WeightTensor::upload(ctx, name, format, rows, cols, group_rows, |row0, n, out| {
        for r in 0..n {
            let row = row0 + r;
            while part + 1 < parts.len() && starts[part + 1] <= row {
                part += 1;
            }
            while starts[part] > row {
                part -= 1;
            }
            let p = &parts[part];
            let pf = p.format()?;
            let eb = pf.bytes_per_element();
            let local = row - starts[part];
            let src = &p.bytes[local * cols * eb..(local + 1) * cols * eb];
            let dst = &mut out[r * row_bytes..(r + 1) * row_bytes];
            if pf == format {
                dst[..src.len()].copy_from_slice(src);
            } else {
                format.encode(&pf.decode(src, cols), dst);
            }
        }
        Ok(())
    })?;
    bar.inc(parts.iter().map(|p| p.bytes.len() as u64).sum());
    Ok(t)
}

fn f32_buffer(ctx: &GpuContext, v: &TensorView) -> Result<wgpu::Buffer> {
    Ok(ctx.storage_with(v.name, &v.to_f32()?))
}

impl ModelWeights {
    /// Reads every tensor the config implies, checks shapes, and uploads them.
    pub fn load(ctx: &GpuContext, ck: &Checkpoint, cfg: &Config, progress: bool) -> Result<Self> {
        let (h, hd) = (cfg.hidden, cfg.head_dim);
        let total: u64 = ck.total_bytes();
        let bar = if progress {
            ProgressBar::new(total)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let embed_v = ck.get_shaped("model.embed_tokens.weight", &[cfg.vocab, h])?;
        let embed = upload_concat(ctx, "embed_tokens", &[embed_v], h, 1, None, &bar)?;
        let lm_head = if ck.contains("lm_head.weight") && !cfg.tie_embeddings {
            let v = ck.get_shaped("lm_head.weight", &[cfg.vocab, h])?;
            Some(upload_concat(ctx, "lm_head", &[v], h, 1, None, &bar)?)
        } else {
            None
        };
        let final_norm = f32_buffer(ctx, &ck.get_shaped("model.embedding_norm.weight", &[h])?)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = format!("model.layers.{i}");
            let name = |s: &str| format!("{p}.{s}");
            let operator_norm =
                f32_buffer(ctx, &ck.get_shaped(&name("operator_norm.weight"), &[h])?)?;
            let ffn_norm = f32_buffer(ctx, &ck.get_shaped(&name("ffn_norm.weight"), &[h])?)?;
            let mixer = if cfg.attention[i] {
                let (nq, nkv) = (cfg.n_heads * hd, cfg.n_kv_heads * hd);
                let (qn, kn, vn, on) = (
                    name("self_attn.q_proj.weight"),
                    name("self_attn.k_proj.weight"),
                    name("self_attn.v_proj.weight"),
                    name("self_attn.out_proj.weight"),
                );
                let parts = [
                    ck.get_shaped(&qn, &[nq, h])?,
                    ck.get_shaped(&kn, &[nkv, h])?,
                    ck.get_shaped(&vn, &[nkv, h])?,
                ];
                let qln = name("self_attn.q_layernorm.weight");
                let kln = name("self_attn.k_layernorm.weight");
                Mixer::Attn(AttnWeights {
                    qkv: upload_concat(ctx, &name("self_attn.qkv"), &parts, h, 1, None, &bar)?,
                    q_norm: f32_buffer(ctx, &ck.get_shaped(&qln, &[hd])?)?,
                    k_norm: f32_buffer(ctx, &ck.get_shaped(&kln, &[hd])?)?,
                    out_proj: upload_concat(
                        ctx,
                        &on,
                        &[ck.get_shaped(&on, &[h, nq])?],
                        nq,
                        1,
                        None,
                        &bar,
                    )?,
                })
            } else {
                let (inn, cn, on) = (
                    name("conv.in_proj.weight"),
                    name("conv.conv.weight"),
                    name("conv.out_proj.weight"),
                );
                let kernel = ck.get(&cn)?;
                if kernel.shape != [h, 1, cfg.conv_taps] && kernel.shape != [h, cfg.conv_taps] {
                    return Err(Error::tensor(
                        kernel.path,
                        &cn,
                        format!(
                            "has shape {:?} but the config implies [{h}, 1, {}]",
                            kernel.shape, cfg.conv_taps
                        ),
                    ));
                }
                Mixer::Conv(ConvWeights {
                    in_proj: upload_concat(
                        ctx,
                        &inn,
                        &[ck.get_shaped(&inn, &[3 * h, h])?],
                        h,
                        1,
                        None,
                        &bar,
                    )?,
                    kernel: f32_buffer(ctx, &kernel)?,
                    out_proj: upload_concat(
                        ctx,
                        &on,
                        &[ck.get_shaped(&on, &[h, h])?],
                        h,
                        1,
                        None,
                        &bar,
                    )?,
                })
            };
            let ffn = match cfg.moe.as_ref().filter(|_| cfg.is_moe_layer(i)) {
                None => {
                    let f = cfg.ffn;
                    let (w1, w3, w2) = (
                        name("feed_forward.w1.weight"),
                        name("feed_forward.w3.weight"),
                        name("feed_forward.w2.weight"),
                    );
                    let parts = [ck.get_shaped(&w1, &[f, h])?, ck.get_shaped(&w3, &[f, h])?];
                    FfnWeights::Dense {
                        gate_up: upload_concat(
                            ctx,
                            &name("feed_forward.w13"),
                            &parts,
                            h,
                            1,
                            None,
                            &bar,
                        )?,
                        down: upload_concat(
                            ctx,
                            &w2,
                            &[ck.get_shaped(&w2, &[h, f])?],
                            f,
                            1,
                            None,
                            &bar,
                        )?,
                    }
                }
                Some(m) => {
                    let (e, fe) = (m.n_experts, m.ffn);
                    let gn = name("feed_forward.gate.weight");
                    let router = upload_concat(
                        ctx,
                        &gn,
                        &[ck.get_shaped(&gn, &[e, h])?],
                        h,
                        1,
                        Some(WeightFormat::F32),
                        &bar,
                    )?;
                    let bn = name("feed_forward.expert_bias");
                    let bias = if m.use_expert_bias {
                        f32_buffer(ctx, &ck.get_shaped(&bn, &[e])?)?
                    } else {
                        ctx.storage_with(&bn, &vec![0f32; e])
                    };
                    let stacked_gu = name("feed_forward.experts.gate_up_proj");
                    let (gate_up, down) = if ck.contains(&stacked_gu) {
                        // transformers v5 in-memory layout saved as is: [E, 2Fe, H] and [E, H, Fe].
                        let dn = name("feed_forward.experts.down_proj");
                        let gu = ck.get_shaped(&stacked_gu, &[e, 2 * fe, h])?;
                        let d = ck.get_shaped(&dn, &[e, h, fe])?;
                        (
                            upload_concat(ctx, &stacked_gu, &[gu], h, 2 * fe, None, &bar)?,
                            upload_concat(ctx, &dn, &[d], fe, h, None, &bar)?,
                        )
                    } else {
                        let mut gu_names = Vec::with_capacity(2 * e);
                        let mut d_names = Vec::with_capacity(e);
                        for x in 0..e {
                            gu_names.push(name(&format!("feed_forward.experts.{x}.w1.weight")));
                            gu_names.push(name(&format!("feed_forward.experts.{x}.w3.weight")));
                            d_names.push(name(&format!("feed_forward.experts.{x}.w2.weight")));
                        }
                        let gu = gu_names
                            .iter()
                            .map(|n| ck.get_shaped(n, &[fe, h]))
                            .collect::<Result<Vec<_>>>()?;
                        let d = d_names
                            .iter()
                            .map(|n| ck.get_shaped(n, &[h, fe]))
                            .collect::<Result<Vec<_>>>()?;
                        (
                            upload_concat(
                                ctx,
                                &name("feed_forward.experts.w13"),
                                &gu,
                                h,
                                2 * fe,
                                None,
                                &bar,
                            )?,
                            upload_concat(
                                ctx,
                                &name("feed_forward.experts.w2"),
                                &d,
                                fe,
                                h,
                                None,
                                &bar,
                            )?,
                        )
                    };
                    FfnWeights::Moe(MoeWeights {
                        router,
                        bias,
                        gate_up,
                        down,
                    })
                }
            };
            layers.push(LayerWeights {
                operator_norm,
                ffn_norm,
                mixer,
                ffn,
            });
        }
        bar.finish_and_clear();
        Ok(ModelWeights {
            embed,
            lm_head,
            final_norm,
            layers,
        })
    }
}
