//! LFM2 / LFM2-MoE weights on the GPU: tensors renamed, concatenated (q|k|v, w1|w3 per
//! expert), experts stacked, streamed page by page from the mapped checkpoint.

use indicatif::{ProgressBar, ProgressStyle};

use super::config::{Config, MoeConfig};
use super::source::{TensorSource, TensorView};
use crate::error::{Error, Result};
use crate::gpu::{max_tile_rows, GpuContext, Paging, WeightFormat, WeightTensor};

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

    /// Every weight matrix (the embedding once, even when tied).
    pub fn matrices(&self) -> Vec<&WeightTensor> {
        let mut v = vec![&self.embed];
        v.extend(self.lm_head.as_ref());
        for l in &self.layers {
            match &l.mixer {
                Mixer::Conv(c) => v.extend([&c.in_proj, &c.out_proj]),
                Mixer::Attn(a) => v.extend([&a.qkv, &a.out_proj]),
            }
            match &l.ffn {
                FfnWeights::Dense { gate_up, down } => v.extend([gate_up, down]),
                FfnWeights::Moe(m) => v.extend([&m.router, &m.gate_up, &m.down]),
            }
        }
        v
    }

    /// Bytes of all weight pages on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        self.matrices().iter().map(|t| t.gpu_bytes()).sum()
    }

    /// Parameters in the weight matrices (norms and biases excluded).
    pub fn n_params(&self) -> u64 {
        self.matrices()
            .iter()
            .map(|t| t.rows as u64 * t.cols as u64)
            .sum()
    }
}

/// What a weight matrix is for; the quantization plan picks a format per role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Embedding,
    LmHead,
    AttnQkv,
    AttnOut,
    ConvIn,
    ConvOut,
    FfnGateUp,
    FfnDown,
    ExpertGateUp,
    ExpertDown,
}

impl Role {
    /// The role of a Hugging Face tensor name; `None` for tensors that stay f32 (norms, the
    /// conv kernel, the router and the expert bias, as llama.cpp keeps them).
    pub fn of_name(name: &str) -> Option<Role> {
        let ends = |s: &str| name.ends_with(s);
        Some(if name == "model.embed_tokens.weight" {
            Role::Embedding
        } else if name == "lm_head.weight" {
            Role::LmHead
        } else if ends("q_proj.weight") || ends("k_proj.weight") || ends("v_proj.weight") {
            Role::AttnQkv
        } else if ends("self_attn.out_proj.weight") {
            Role::AttnOut
        } else if ends("conv.in_proj.weight") {
            Role::ConvIn
        } else if ends("conv.out_proj.weight") {
            Role::ConvOut
        } else if name.contains(".experts.")
            && (ends("w1.weight") || ends("w3.weight") || ends("gate_up_proj"))
        {
            Role::ExpertGateUp
        } else if name.contains(".experts.") && (ends("w2.weight") || ends("down_proj")) {
            Role::ExpertDown
        } else if ends("feed_forward.w1.weight") || ends("feed_forward.w3.weight") {
            Role::FfnGateUp
        } else if ends("feed_forward.w2.weight") {
            Role::FfnDown
        } else {
            return None;
        })
    }
}

/// Which format each weight matrix gets when quantizing (on load or in `wmoe quantize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantPlan {
    /// Every matrix in one format.
    Uniform(WeightFormat),
    /// llama.cpp-style mix: experts and FFN q4_K, attention and FFN down q6_K, embedding q8_0.
    Q4KM,
    /// Everything q4_K, embedding q6_K.
    Q4KS,
}

impl QuantPlan {
    /// `q8_0`, `q4_0`, `q5_0`, `q4_k`, `q6_k`, `f16`, `bf16`, `f32`, `q4_k_m` or `q4_k_s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "q4_k_m" => Some(QuantPlan::Q4KM),
            "q4_k_s" => Some(QuantPlan::Q4KS),
            other => WeightFormat::from_name(other).map(QuantPlan::Uniform),
        }
    }

    pub fn name(&self) -> String {
        match self {
            QuantPlan::Uniform(f) => f.name().to_string(),
            QuantPlan::Q4KM => "q4_k_m".into(),
            QuantPlan::Q4KS => "q4_k_s".into(),
        }
    }

    /// The format for a matrix of `role` with rows of `cols` elements. Where the rows are not
    /// whole blocks it falls back as llama.cpp does (q4_K → q5_0, q6_K → q8_0), else keeps
    /// the checkpoint's own format (`None`).
    pub fn target(&self, role: Role, cols: usize) -> Option<WeightFormat> {
        use WeightFormat::*;
        let want = match (self, role) {
            (QuantPlan::Uniform(f), _) => *f,
            (QuantPlan::Q4KM, Role::Embedding) => Q8_0,
            (
                QuantPlan::Q4KM,
                Role::LmHead | Role::AttnQkv | Role::AttnOut | Role::FfnDown | Role::ExpertDown,
            ) => Q6K,
            (QuantPlan::Q4KM, _) => Q4K,
            (QuantPlan::Q4KS, Role::Embedding | Role::LmHead) => Q6K,
            (QuantPlan::Q4KS, _) => Q4K,
        };
        [
            want,
            match want {
                Q4K | Q5K => Q5_0,
                Q6K => Q8_0,
                other => other,
            },
        ]
        .into_iter()
        .find(|f| f.fits(cols))
    }
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

/// `layer`'s Hugging Face name for `s`.
fn layer_name(layer: usize, s: &str) -> String {
    format!("model.layers.{layer}.{s}")
}

/// One load: the device, the checkpoint, its config, the quantization plan and the progress
/// bar every upload advances.
struct Loader<'a> {
    ctx: &'a GpuContext,
    ck: &'a dyn TensorSource,
    cfg: &'a Config,
    quant: Option<QuantPlan>,
    bar: ProgressBar,
}

impl<'a> Loader<'a> {
    fn new(
        ctx: &'a GpuContext,
        ck: &'a dyn TensorSource,
        cfg: &'a Config,
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
            cfg,
            quant,
            bar,
        }
    }

    /// The tensor `s` of `layer`, checked to have `shape`.
    fn get(&self, layer: usize, s: &str, shape: &[usize]) -> Result<TensorView<'a>> {
        self.ck.get_shaped(&layer_name(layer, s), shape)
    }

    /// A norm, bias or conv kernel as an f32 buffer.
    fn f32(&self, v: &TensorView) -> Result<wgpu::Buffer> {
        Ok(self.ctx.storage_with(&v.name, &v.to_f32()))
    }

    /// Uploads `m` as one tensor in `target`, or, without one, in the parts' common format
    /// (f32 if they differ), in the device's row tiles where `tiles` allows them. Rows are
    /// converted one at a time, so host memory stays bounded by a page.
    fn upload(
        &self,
        m: &Matrix,
        target: Option<WeightFormat>,
        tiles: bool,
    ) -> Result<WeightTensor> {
        let (ctx, parts, cols) = (self.ctx, m.parts, m.cols);
        let first = parts[0].format;
        let common = if parts.iter().all(|p| p.format == first) {
            first
        } else {
            WeightFormat::F32
        };
        let format = ctx.profile().gpu_format(target.unwrap_or(common));
        let mut starts = Vec::with_capacity(parts.len());
        let mut rows = 0;
        for p in parts {
            if !p.format.fits(cols) {
                return Err(Error::tensor(
                    p.path,
                    &p.name,
                    format!("rows of {cols} are not whole {} blocks", p.format.name()),
                ));
            }
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
        let already = m.parts.iter().any(|p| p.format.is_quantized());
        let target = self
            .quant
            .filter(|_| !already)
            .and_then(|q| q.target(role, m.cols));
        let t = self.upload(&m, target, true);
        for p in m.parts {
            self.ck.release(p);
        }
        t
    }

    /// The matrix `{base}.weight` of `layer`, checked to be [rows, cols], uploaded as `base`.
    fn layer_matrix(
        &self,
        layer: usize,
        base: &str,
        [rows, cols]: [usize; 2],
        role: Role,
    ) -> Result<WeightTensor> {
        let w = self.get(layer, &format!("{base}.weight"), &[rows, cols])?;
        self.matrix(Matrix::new(&layer_name(layer, base), &[w], cols), role)
    }

    fn layer(&self, i: usize) -> Result<LayerWeights> {
        let (cfg, h) = (self.cfg, self.cfg.hidden);
        let operator_norm = self.f32(&self.get(i, "operator_norm.weight", &[h])?)?;
        let ffn_norm = self.f32(&self.get(i, "ffn_norm.weight", &[h])?)?;
        let mixer = if cfg.attention[i] {
            Mixer::Attn(self.attention(i)?)
        } else {
            Mixer::Conv(self.conv(i)?)
        };
        let ffn = match cfg.moe.as_ref().filter(|_| cfg.is_moe_layer(i)) {
            None => self.dense_ffn(i)?,
            Some(m) => FfnWeights::Moe(self.moe(i, m)?),
        };
        Ok(LayerWeights {
            operator_norm,
            ffn_norm,
            mixer,
            ffn,
        })
    }

    fn attention(&self, i: usize) -> Result<AttnWeights> {
        let cfg = self.cfg;
        let (h, hd) = (cfg.hidden, cfg.head_dim);
        let (nq, nkv) = (cfg.n_heads * hd, cfg.n_kv_heads * hd);
        let qkv = [
            self.get(i, "self_attn.q_proj.weight", &[nq, h])?,
            self.get(i, "self_attn.k_proj.weight", &[nkv, h])?,
            self.get(i, "self_attn.v_proj.weight", &[nkv, h])?,
        ];
        Ok(AttnWeights {
            qkv: self.matrix(
                Matrix::new(&layer_name(i, "self_attn.qkv"), &qkv, h),
                Role::AttnQkv,
            )?,
            q_norm: self.f32(&self.get(i, "self_attn.q_layernorm.weight", &[hd])?)?,
            k_norm: self.f32(&self.get(i, "self_attn.k_layernorm.weight", &[hd])?)?,
            out_proj: self.layer_matrix(i, "self_attn.out_proj", [h, nq], Role::AttnOut)?,
        })
    }

    fn conv(&self, i: usize) -> Result<ConvWeights> {
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
        Ok(ConvWeights {
            in_proj: self.layer_matrix(i, "conv.in_proj", [3 * h, h], Role::ConvIn)?,
            kernel: self.f32(&kernel)?,
            out_proj: self.layer_matrix(i, "conv.out_proj", [h, h], Role::ConvOut)?,
        })
    }

    fn dense_ffn(&self, i: usize) -> Result<FfnWeights> {
        let (h, f) = (self.cfg.hidden, self.cfg.ffn);
        let w13 = [
            self.get(i, "feed_forward.w1.weight", &[f, h])?,
            self.get(i, "feed_forward.w3.weight", &[f, h])?,
        ];
        Ok(FfnWeights::Dense {
            gate_up: self.matrix(
                Matrix::new(&layer_name(i, "feed_forward.w13"), &w13, h),
                Role::FfnGateUp,
            )?,
            down: self.layer_matrix(i, "feed_forward.w2", [h, f], Role::FfnDown)?,
        })
    }

    fn moe(&self, i: usize, m: &MoeConfig) -> Result<MoeWeights> {
        let (h, e, fe) = (self.cfg.hidden, m.n_experts, m.ffn);
        let gate = self.get(i, "feed_forward.gate.weight", &[e, h])?;
        let router = self.upload(
            &Matrix::new(&layer_name(i, "feed_forward.gate"), &[gate], h),
            Some(WeightFormat::F32),
            false, // row-major: the fused decode router reads it directly
        )?;
        let bias = if m.use_expert_bias {
            self.f32(&self.get(i, "feed_forward.expert_bias", &[e])?)?
        } else {
            self.ctx.storage_with("expert bias", &vec![0f32; e])
        };
        let (gate_up, down) = self.experts(i, e, fe)?;
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

    /// The `e` experts' gate|up parts (w1 then w3, per expert) and down parts: stacked as
    /// transformers v5 holds them in memory ([E, 2Fe, H], [E, H, Fe]), or one per expert.
    fn experts(&self, i: usize, e: usize, fe: usize) -> Result<ExpertParts<'a>> {
        let h = self.cfg.hidden;
        if self
            .ck
            .contains(&layer_name(i, "feed_forward.experts.gate_up_proj"))
        {
            return Ok((
                vec![self.get(i, "feed_forward.experts.gate_up_proj", &[e, 2 * fe, h])?],
                vec![self.get(i, "feed_forward.experts.down_proj", &[e, h, fe])?],
            ));
        }
        let mut gate_up = Vec::with_capacity(2 * e);
        let mut down = Vec::with_capacity(e);
        for x in 0..e {
            let w = |n: &str| format!("feed_forward.experts.{x}.{n}.weight");
            gate_up.push(self.get(i, &w("w1"), &[fe, h])?);
            gate_up.push(self.get(i, &w("w3"), &[fe, h])?);
            down.push(self.get(i, &w("w2"), &[h, fe])?);
        }
        Ok((gate_up, down))
    }
}

/// The experts' gate|up parts and down parts.
type ExpertParts<'a> = (Vec<TensorView<'a>>, Vec<TensorView<'a>>);

impl ModelWeights {
    /// Reads every tensor the config implies, checks shapes, and uploads them, quantizing the
    /// matrices on the way when a plan is given.
    pub fn load(
        ctx: &GpuContext,
        ck: &dyn TensorSource,
        cfg: &Config,
        quant: Option<QuantPlan>,
        progress: bool,
    ) -> Result<Self> {
        let l = Loader::new(ctx, ck, cfg, quant, progress);
        let h = cfg.hidden;
        let embed = ck.get_shaped("model.embed_tokens.weight", &[cfg.vocab, h])?;
        let embed = l.matrix(Matrix::new("embed_tokens", &[embed], h), Role::Embedding)?;
        let lm_head = if ck.contains("lm_head.weight") && !cfg.tie_embeddings {
            let w = ck.get_shaped("lm_head.weight", &[cfg.vocab, h])?;
            Some(l.matrix(Matrix::new("lm_head", &[w], h), Role::LmHead)?)
        } else {
            None
        };
        let final_norm = l.f32(&ck.get_shaped("model.embedding_norm.weight", &[h])?)?;
        let layers = (0..cfg.n_layers)
            .map(|i| l.layer(i))
            .collect::<Result<Vec<_>>>()?;
        l.bar.finish_and_clear();
        Ok(ModelWeights {
            embed,
            lm_head,
            final_norm,
            layers,
        })
    }
}
