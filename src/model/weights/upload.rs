//! Checked tensor views onto the GPU: q|k|v and w1|w3 joined, experts stacked, streamed chunk
//! by chunk from the checkpoint (mapped, in memory, or read in ranges) and quantized on the
//! way when a plan says so.

use std::borrow::Cow;
use std::cell::Cell;

use indicatif::{ProgressBar, ProgressStyle};

use super::super::source::{TensorSource, TensorView};
use super::views::{layer_name, FfnViews, LayerViews, MixerViews, ModelViews};
use super::{
    AttnWeights, ConvWeights, FfnWeights, LayerWeights, Mixer, ModelWeights, MoeWeights, QuantPlan,
    Role,
};
use crate::error::Result;
use crate::gpu::{max_tile_rows, GpuContext, PagedUpload, Paging, WeightFormat, WeightTensor};

/// How a load reports its progress: a bar on the terminal, and/or a callback given the bytes
/// read so far and the total.
#[derive(Clone, Copy, Default)]
pub struct Progress<'a> {
    pub bar: bool,
    pub on_bytes: Option<&'a dyn Fn(u64, u64)>,
}

/// Uploads the checked `views` of `ck`.
pub(super) async fn upload(
    ctx: &GpuContext,
    ck: &dyn TensorSource,
    views: ModelViews<'_>,
    quant: Option<QuantPlan>,
    progress: Progress<'_>,
) -> Result<ModelWeights> {
    let l = Loader::new(ctx, ck, quant, progress);
    let h = views.embed.cols();
    let embed = l
        .matrix(
            Matrix::new("embed_tokens", &[views.embed], h),
            Role::Embedding,
        )
        .await?;
    let lm_head = match views.lm_head {
        None => None,
        Some(w) => Some(
            l.matrix(Matrix::new("lm_head", &[w], h), Role::LmHead)
                .await?,
        ),
    };
    let final_norm = l.f32(&views.final_norm).await?;
    let mut layers = Vec::with_capacity(views.layers.len());
    for (i, v) in views.layers.into_iter().enumerate() {
        layers.push(l.layer(i, v).await?);
    }
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

/// One load: the device, the checkpoint, the quantization plan and the progress every
/// upload advances.
struct Loader<'a> {
    ctx: &'a GpuContext,
    ck: &'a dyn TensorSource,
    quant: Option<QuantPlan>,
    bar: ProgressBar,
    on_bytes: Option<&'a dyn Fn(u64, u64)>,
    /// Bytes of the checkpoint read so far.
    done: Cell<u64>,
}

impl<'a> Loader<'a> {
    fn new(
        ctx: &'a GpuContext,
        ck: &'a dyn TensorSource,
        quant: Option<QuantPlan>,
        progress: Progress<'a>,
    ) -> Self {
        let bar = if progress.bar {
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
            on_bytes: progress.on_bytes,
            done: Cell::new(0),
        }
    }

    /// Counts `bytes` more of the checkpoint read.
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        self.done.set(self.done.get() + bytes);
        if let Some(f) = self.on_bytes {
            f(self.done.get(), self.ck.total_bytes());
        }
    }

    /// A norm, bias or conv kernel as an f32 buffer.
    async fn f32(&self, v: &TensorView<'_>) -> Result<wgpu::Buffer> {
        let values = v.read_f32(self.ck.reader()).await?;
        self.advance(v.len() as u64);
        Ok(self.ctx.storage_with(&v.name, &values))
    }

    /// Uploads `m` as one tensor in `target`, or, without one, in the parts' common format
    /// (f32 if they differ), in the device's row tiles where `tiles` allows them. Rows are
    /// read and converted a chunk at a time, so host memory stays bounded by a chunk. The
    /// parts were checked to be rows of whole blocks.
    async fn upload(
        &self,
        m: &Matrix<'_, '_>,
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
        let max_tile = if tiles { max_tile_rows(ctx, format) } else { 1 };
        let paging = Paging {
            group_rows: m.group_rows,
            page_bytes: None,
            max_tile,
        };
        let mut up = PagedUpload::new(ctx, (m.label, format), (rows, cols), paging)?;
        while let Some((row0, n)) = up.next_rows() {
            let pieces = self.source_rows(parts, &starts, cols, (row0, n)).await?;
            let out = up.staging();
            let mut r = 0;
            for (p, bytes) in &pieces {
                let src_bytes = p.format.row_bytes(cols);
                for src in bytes.chunks_exact(src_bytes.max(1)) {
                    let dst = &mut out[r * row_bytes..(r + 1) * row_bytes];
                    if p.format == format.canonical() {
                        format.repack_row(src, cols, dst);
                    } else {
                        format.quantize_row(&p.format.dequant_row(src, cols), &mut canonical);
                        format.repack_row(&canonical, cols, dst);
                    }
                    r += 1;
                }
            }
            up.commit()?;
            self.advance(pieces.iter().map(|(_, b)| b.len() as u64).sum());
        }
        Ok(up.finish())
    }

    /// The source bytes of rows `row0..row0 + n` of the concatenation of `parts` (part `i`
    /// starting at row `starts[i]`), part by part, in order: borrowed where in memory, read
    /// where the file is read in ranges.
    async fn source_rows<'p, 'v>(
        &self,
        parts: &'p [TensorView<'v>],
        starts: &[usize],
        cols: usize,
        (row0, n): (usize, usize),
    ) -> Result<Vec<(&'p TensorView<'v>, Cow<'v, [u8]>)>> {
        let mut pieces = Vec::new();
        let mut part = starts.partition_point(|&s| s <= row0).saturating_sub(1);
        let mut row = row0;
        while row < row0 + n && part < parts.len() {
            let p = &parts[part];
            let local = row - starts[part];
            let take = (p.numel() / cols - local).min(row0 + n - row);
            let rb = p.format.row_bytes(cols);
            let bytes = p
                .read(self.ck.reader(), local * rb..(local + take) * rb)
                .await?;
            pieces.push((p, bytes));
            row += take;
            part += 1;
        }
        Ok(pieces)
    }

    /// Uploads `m` in the plan's format for `role`; matrices already quantized in the file
    /// keep their format (no second rounding). The uploaded bytes are released from the
    /// mapping so host memory stays bounded.
    async fn matrix(&self, m: Matrix<'_, '_>, role: Role) -> Result<WeightTensor> {
        let target = plan_target(self.quant, m.parts, role, m.cols);
        let t = self.upload(&m, target, true).await;
        for p in m.parts {
            self.ck.release(p);
        }
        t
    }

    /// The single matrix `w` of `layer`, uploaded as `base`.
    async fn layer_matrix(
        &self,
        layer: usize,
        base: &str,
        w: TensorView<'_>,
        role: Role,
    ) -> Result<WeightTensor> {
        let cols = w.cols();
        self.matrix(Matrix::new(&layer_name(layer, base), &[w], cols), role)
            .await
    }

    async fn layer(&self, i: usize, v: LayerViews<'_>) -> Result<LayerWeights> {
        Ok(LayerWeights {
            operator_norm: self.f32(&v.operator_norm).await?,
            ffn_norm: self.f32(&v.ffn_norm).await?,
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
                        qkv: self
                            .matrix(Matrix::new(&label, &qkv, h), Role::AttnQkv)
                            .await?,
                        q_norm: self.f32(&q_norm).await?,
                        k_norm: self.f32(&k_norm).await?,
                        out_proj: self
                            .layer_matrix(i, "self_attn.out_proj", out_proj, Role::AttnOut)
                            .await?,
                    })
                }
                MixerViews::Conv {
                    in_proj,
                    kernel,
                    out_proj,
                } => Mixer::Conv(ConvWeights {
                    in_proj: self
                        .layer_matrix(i, "conv.in_proj", in_proj, Role::ConvIn)
                        .await?,
                    kernel: self.f32(&kernel).await?,
                    out_proj: self
                        .layer_matrix(i, "conv.out_proj", out_proj, Role::ConvOut)
                        .await?,
                }),
            },
            ffn: self.ffn(i, v.ffn).await?,
        })
    }

    async fn ffn(&self, i: usize, v: FfnViews<'_>) -> Result<FfnWeights> {
        match v {
            FfnViews::Dense { w13, w2 } => {
                let h = w13[0].cols();
                let label = layer_name(i, "feed_forward.w13");
                Ok(FfnWeights::Dense {
                    gate_up: self
                        .matrix(Matrix::new(&label, &w13, h), Role::FfnGateUp)
                        .await?,
                    down: self
                        .layer_matrix(i, "feed_forward.w2", w2, Role::FfnDown)
                        .await?,
                })
            }
            FfnViews::Moe {
                gate,
                bias,
                gate_up,
                down,
            } => Ok(FfnWeights::Moe(
                self.moe(i, gate, bias, (gate_up, down)).await?,
            )),
        }
    }

    async fn moe(
        &self,
        i: usize,
        gate: TensorView<'_>,
        bias: Option<TensorView<'_>>,
        (gate_up, down): (Vec<TensorView<'_>>, Vec<TensorView<'_>>),
    ) -> Result<MoeWeights> {
        let (e, h) = (gate.shape[0], gate.cols());
        let router = self
            .upload(
                &Matrix::new(&layer_name(i, "feed_forward.gate"), &[gate], h),
                Some(WeightFormat::F32),
                false, // row-major: the fused decode router reads it directly
            )
            .await?;
        let bias = match bias {
            Some(b) => self.f32(&b).await?,
            None => self.ctx.storage_with("expert bias", &vec![0f32; e]),
        };
        let fe = down[0].cols();
        Ok(MoeWeights {
            router,
            bias,
            gate_up: self
                .matrix(
                    Matrix {
                        label: &layer_name(i, "feed_forward.experts.w13"),
                        parts: &gate_up,
                        cols: h,
                        group_rows: 2 * fe,
                    },
                    Role::ExpertGateUp,
                )
                .await?,
            down: self
                .matrix(
                    Matrix {
                        label: &layer_name(i, "feed_forward.experts.w2"),
                        parts: &down,
                        cols: fe,
                        group_rows: h,
                    },
                    Role::ExpertDown,
                )
                .await?,
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
