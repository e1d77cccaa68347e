//! Checked tensor views onto the GPU: q|k|v and w1|w3 joined, experts stacked, streamed page
//! by page from the mapped checkpoint and quantized on the way when a plan says so.

use indicatif::{ProgressBar, ProgressStyle};

use super::super::source::{TensorSource, TensorView};
use super::views::{layer_name, FfnViews, LayerViews, MixerViews, ModelViews};
use super::{
    AttnWeights, ConvWeights, FfnWeights, LayerWeights, Mixer, ModelWeights, MoeWeights, QuantPlan,
    Role,
};
use crate::error::Result;
use crate::gpu::{max_tile_rows, GpuContext, Paging, WeightFormat, WeightTensor};

/// Uploads the checked `views` of `ck`.
pub(super) fn upload(
    ctx: &GpuContext,
    ck: &dyn TensorSource,
    views: ModelViews,
    quant: Option<QuantPlan>,
    progress: bool,
) -> Result<ModelWeights> {
    let l = Loader::new(ctx, ck, quant, progress);
    let h = views.embed.cols();
    let embed = l.matrix(
        Matrix::new("embed_tokens", &[views.embed], h),
        Role::Embedding,
    )?;
    let lm_head = match views.lm_head {
        None => None,
        Some(w) => Some(l.matrix(Matrix::new("lm_head", &[w], h), Role::LmHead)?),
    };
    let final_norm = l.f32(&views.final_norm);
    let layers = views
        .layers
        .into_iter()
        .enumerate()
        .map(|(i, v)| l.layer(i, v))
        .collect::<Result<Vec<_>>>()?;
    l.bar.finish_and_clear();
    Ok(ModelWeights {
        embed,
        lm_head,
        final_norm,
        layers,
    })
}

/// One GPU matrix to build: the row-concatenation of `parts`, each a [rows_i, cols] matrix.
struct Matrix<'m, 'v> {
    label: &'m str,
    parts: &'m [TensorView<'v>],
    cols: usize,
    /// Rows that stay together in one page (an expert's rows); 1 for a plain matrix.
    group_rows: usize,
}

impl<'m, 'v> Matrix<'m, 'v> {
    fn new(label: &'m str, parts: &'m [TensorView<'v>], cols: usize) -> Self {
        Matrix {
            label,
            parts,
            cols,
            group_rows: 1,
        }
    }
}

/// One load: the device, the checkpoint, the quantization plan and the progress bar every
/// upload advances.
struct Loader<'a> {
    ctx: &'a GpuContext,
    ck: &'a dyn TensorSource,
    quant: Option<QuantPlan>,
    bar: ProgressBar,
}

impl<'a> Loader<'a> {
    fn new(
        ctx: &'a GpuContext,
        ck: &'a dyn TensorSource,
        quant: Option<QuantPlan>,
        progress: bool,
    ) -> Self {
        let bar = if progress {
            ProgressBar::new(ck.total_bytes())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Loader {
            ctx,
            ck,
            quant,
            bar,
        }
    }

    /// A norm, bias or conv kernel as an f32 buffer.
    fn f32(&self, v: &TensorView) -> wgpu::Buffer {
        self.ctx.storage_with(&v.name, &v.to_f32())
    }

    /// Uploads `m` as one tensor in `target`, or, without one, in the parts' common format
    /// (f32 if they differ), in the device's row tiles where `tiles` allows them. Rows are
    /// converted one at a time, so host memory stays bounded by a page. The parts were
    /// checked to be rows of whole blocks.
    fn upload(
        &self,
        m: &Matrix,
        target: Option<WeightFormat>,
        tiles: bool,
    ) -> Result<WeightTensor> {
        let (ctx, parts, cols) = (self.ctx, m.parts, m.cols);
        let format = gpu_format(ctx, parts, target);
        let mut starts = Vec::with_capacity(parts.len());
        let mut rows = 0;
        for p in parts {
            starts.push(rows);
            rows += p.numel() / cols;
        }
        let row_bytes = format.row_words(cols) * 4;
        let mut canonical = vec![0u8; format.row_bytes(cols)];
        let mut part = 0;
        let fill = |row0: usize, n: usize, out: &mut [u8]| {
            for r in 0..n {
                let row = row0 + r;
                while part + 1 < parts.len() && starts[part + 1] <= row {
                    part += 1;
                }
                while starts[part] > row {
                    part -= 1;
                }
                let p = &parts[part];
                let src_bytes = p.format.row_bytes(cols);
                let local = row - starts[part];
                let src = &p.bytes[local * src_bytes..(local + 1) * src_bytes];
                let dst = &mut out[r * row_bytes..(r + 1) * row_bytes];
                if p.format == format.canonical() {
                    format.repack_row(src, cols, dst);
                } else {
                    format.quantize_row(&p.format.dequant_row(src, cols), &mut canonical);
                    format.repack_row(&canonical, cols, dst);
                }
            }
            Ok(())
        };
        let max_tile = if tiles { max_tile_rows(ctx, format) } else { 1 };
        let paging = Paging {
            group_rows: m.group_rows,
            page_bytes: None,
            max_tile,
        };
        let t = WeightTensor::upload_paged(ctx, (m.label, format), (rows, cols), paging, fill)?;
        self.bar
            .inc(parts.iter().map(|p| p.bytes.len() as u64).sum());
        Ok(t)
    }

    /// Uploads `m` in the plan's format for `role`; matrices already quantized in the file
    /// keep their format (no second rounding). The uploaded bytes are released from the
    /// mapping so host memory stays bounded.
    fn matrix(&self, m: Matrix, role: Role) -> Result<WeightTensor> {
        let target = plan_target(self.quant, m.parts, role, m.cols);
        let t = self.upload(&m, target, true);
        for p in m.parts {
            self.ck.release(p);
        }
        t
    }

    /// The single matrix `w` of `layer`, uploaded as `base`.
    fn layer_matrix(
        &self,
        layer: usize,
        base: &str,
        w: TensorView,
        role: Role,
    ) -> Result<WeightTensor> {
        let cols = w.cols();
        self.matrix(Matrix::new(&layer_name(layer, base), &[w], cols), role)
    }

    fn layer(&self, i: usize, v: LayerViews) -> Result<LayerWeights> {
        Ok(LayerWeights {
            operator_norm: self.f32(&v.operator_norm),
            ffn_norm: self.f32(&v.ffn_norm),
            mixer: match v.mixer {
                MixerViews::Attn {
                    qkv,
                    q_norm,
                    k_norm,
                    out_proj,
                } => {
                    let h = qkv[0].cols();
                    let label = layer_name(i, "self_attn.qkv");
                    Mixer::Attn(AttnWeights {
                        qkv: self.matrix(Matrix::new(&label, &qkv, h), Role::AttnQkv)?,
                        q_norm: self.f32(&q_norm),
                        k_norm: self.f32(&k_norm),
                        out_proj: self.layer_matrix(
                            i,
                            "self_attn.out_proj",
                            out_proj,
                            Role::AttnOut,
                        )?,
                    })
                }
                MixerViews::Conv {
                    in_proj,
                    kernel,
                    out_proj,
                } => Mixer::Conv(ConvWeights {
                    in_proj: self.layer_matrix(i, "conv.in_proj", in_proj, Role::ConvIn)?,
                    kernel: self.f32(&kernel),
                    out_proj: self.layer_matrix(i, "conv.out_proj", out_proj, Role::ConvOut)?,
                }),
            },
            ffn: self.ffn(i, v.ffn)?,
        })
    }

    fn ffn(&self, i: usize, v: FfnViews) -> Result<FfnWeights> {
        match v {
            FfnViews::Dense { w13, w2 } => {
                let h = w13[0].cols();
                let label = layer_name(i, "feed_forward.w13");
                Ok(FfnWeights::Dense {
                    gate_up: self.matrix(Matrix::new(&label, &w13, h), Role::FfnGateUp)?,
                    down: self.layer_matrix(i, "feed_forward.w2", w2, Role::FfnDown)?,
                })
            }
            FfnViews::Moe {
                gate,
                bias,
                gate_up,
                down,
            } => Ok(FfnWeights::Moe(self.moe(i, gate, bias, (gate_up, down))?)),
        }
    }

    fn moe(
        &self,
        i: usize,
        gate: TensorView,
        bias: Option<TensorView>,
        (gate_up, down): (Vec<TensorView>, Vec<TensorView>),
    ) -> Result<MoeWeights> {
        let (e, h) = (gate.shape[0], gate.cols());
        let router = self.upload(
            &Matrix::new(&layer_name(i, "feed_forward.gate"), &[gate], h),
            Some(WeightFormat::F32),
            false, // row-major: the fused decode router reads it directly
        )?;
        let bias = match bias {
            Some(b) => self.f32(&b),
            None => self.ctx.storage_with("expert bias", &vec![0f32; e]),
        };
        let fe = down[0].cols();
        Ok(MoeWeights {
            router,
            bias,
            gate_up: self.matrix(
                Matrix {
                    label: &layer_name(i, "feed_forward.experts.w13"),
                    parts: &gate_up,
                    cols: h,
                    group_rows: 2 * fe,
                },
                Role::ExpertGateUp,
            )?,
            down: self.matrix(
                Matrix {
                    label: &layer_name(i, "feed_forward.experts.w2"),
                    parts: &down,
                    cols: fe,
                    group_rows: h,
                },
                Role::ExpertDown,
            )?,
        })
    }
}

/// The format `quant` gives a matrix of `parts` in `role`; matrices already quantized in the
/// file keep their format (no second rounding).
fn plan_target(
    quant: Option<QuantPlan>,
    parts: &[TensorView],
    role: Role,
    cols: usize,
) -> Option<WeightFormat> {
    let already = parts.iter().any(|p| p.format.is_quantized());
    quant
        .filter(|_| !already)
        .and_then(|q| q.target(role, cols))
}

/// The format a matrix of `parts` is uploaded in: `target`, or without one the parts' common
/// format (f32 if they differ), as the device takes it.
fn gpu_format(
    ctx: &GpuContext,
    parts: &[TensorView],
    target: Option<WeightFormat>,
) -> WeightFormat {
    let first = parts[0].format;
    let common = if parts.iter().all(|p| p.format == first) {
        first
    } else {
        WeightFormat::F32
    };
    ctx.profile().gpu_format(target.unwrap_or(common))
}

/// Bytes of GPU memory uploading `views` under `quant` allocates: every matrix's rows in
/// the format the loader picks, every f32 vector; the same walk as [`upload`].
pub(super) fn planned_bytes(ctx: &GpuContext, views: &ModelViews, quant: Option<QuantPlan>) -> u64 {
    let f32 = |v: &TensorView| 4 * v.numel().max(1) as u64;
    let rows =
        |parts: &[TensorView], cols: usize| parts.iter().map(|p| p.numel() / cols).sum::<usize>();
    let matrix = |parts: &[TensorView], cols: usize, format: WeightFormat| {
        (rows(parts, cols) * format.row_words(cols) * 4) as u64
    };
    let planned = |parts: &[TensorView], role: Role| {
        let cols = parts[0].cols();
        let target = plan_target(quant, parts, role, cols);
        matrix(parts, cols, gpu_format(ctx, parts, target))
    };
    let mut total =
        planned(std::slice::from_ref(&views.embed), Role::Embedding) + f32(&views.final_norm);
    if let Some(w) = &views.lm_head {
        total += planned(std::slice::from_ref(w), Role::LmHead);
    }
    for l in &views.layers {
        total += f32(&l.operator_norm) + f32(&l.ffn_norm);
        total += match &l.mixer {
            MixerViews::Attn {
                qkv,
                q_norm,
                k_norm,
                out_proj,
            } => {
                planned(qkv, Role::AttnQkv)
                    + f32(q_norm)
                    + f32(k_norm)
                    + planned(std::slice::from_ref(out_proj), Role::AttnOut)
            }
            MixerViews::Conv {
                in_proj,
                kernel,
                out_proj,
            } => {
                planned(std::slice::from_ref(in_proj), Role::ConvIn)
                    + f32(kernel)
                    + planned(std::slice::from_ref(out_proj), Role::ConvOut)
            }
        };
        total += match &l.ffn {
            FfnViews::Dense { w13, w2 } => {
                planned(w13, Role::FfnGateUp) + planned(std::slice::from_ref(w2), Role::FfnDown)
            }
            FfnViews::Moe {
                gate,
                bias,
                gate_up,
                down,
            } => {
                let gate = std::slice::from_ref(gate);
                let router = matrix(
                    gate,
                    gate[0].cols(),
                    gpu_format(ctx, gate, Some(WeightFormat::F32)),
                );
                let bias = bias
                    .as_ref()
                    .map_or(4 * gate[0].shape[0].max(1) as u64, f32);
                router
                    + bias
                    + planned(gate_up, Role::ExpertGateUp)
                    + planned(down, Role::ExpertDown)
            }
        };
    }
    total
}
