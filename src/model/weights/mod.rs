//! LFM2 / LFM2-MoE weights on the GPU: tensors renamed, concatenated (q|k|v, w1|w3 per
//! expert), experts stacked, streamed page by page from the mapped checkpoint.

mod upload;
mod views;

use std::future::Future;
use std::task::{Context, Poll, Waker};

pub use upload::Progress;

use super::config::Config;
use super::source::TensorSource;
use crate::error::Result;
use crate::gpu::{mib, GpuContext, WeightFormat, WeightTensor};

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
        let progress = Progress {
            bar: progress,
            on_bytes: None,
        };
        in_memory(Self::load_async(ctx, ck, cfg, quant, progress))
    }

    /// [`ModelWeights::load`] of a checkpoint that may be read in ranges
    /// ([`TensorSource::reader`]): it awaits each chunk's bytes, holding no more than a
    /// chunk on the host.
    pub async fn load_async(
        ctx: &GpuContext,
        ck: &dyn TensorSource,
        cfg: &Config,
        quant: Option<QuantPlan>,
        progress: Progress<'_>,
    ) -> Result<Self> {
        let views = views::read(ck, cfg)?;
        let needed = upload::planned_bytes(ctx, &views, quant);
        let formats = quant.map_or("in the checkpoint's formats".into(), |q| {
            format!("as {}", q.name())
        });
        ctx.check_fits(
            &format!("the model's weights ({formats})"),
            needed,
            (0, ""),
            |free| smaller_quant(ctx, &views, needed, free),
        )?;
        upload::upload(ctx, ck, views, quant, progress).await
    }

    /// Checks, without a GPU, that `ck` holds every tensor `cfg` implies with its shape, in
    /// rows of whole blocks (what [`ModelWeights::load`] checks before uploading).
    pub fn check(ck: &dyn TensorSource, cfg: &Config) -> Result<()> {
        views::read(ck, cfg).map(|_| ())
    }
}

/// The result of `load`, a future that never waits when every tensor is in memory, run on
/// this thread; an error when it would wait (a checkpoint read in ranges).
fn in_memory<T>(load: impl Future<Output = Result<T>>) -> Result<T> {
    let mut load = std::pin::pin!(load);
    match load.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(crate::error::Error::Input(
            "this checkpoint is read in ranges: load it with Model::upload_async".into(),
        )),
    }
}

/// What to do about weights of `needed` bytes in `free` bytes: the largest of q8_0, q4_k_m
/// and q4_0 that fits, or, when none does, a device with more memory.
fn smaller_quant(ctx: &GpuContext, views: &views::ModelViews, needed: u64, free: u64) -> String {
    let plans = ["q8_0", "q4_k_m", "q4_0"].map(|name| {
        let plan = QuantPlan::parse(name).expect("a known plan");
        (name, upload::planned_bytes(ctx, views, Some(plan)))
    });
    match plans
        .iter()
        .find(|(_, bytes)| *bytes <= free && *bytes < needed)
    {
        Some((name, bytes)) => format!("load it with --quant {name} (about {})", mib(*bytes)),
        None => format!(
            "even --quant q4_0 needs about {}: use a device with more memory",
            mib(plans[2].1)
        ),
    }
}
