//! A checkpoint loaded onto the GPU, with its config and (optional) tokenizer.

use std::path::{Path, PathBuf};

use super::sampling::generation_defaults;
use crate::bundled::BUNDLED_MODEL;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels::sample::SamplingParams;
use crate::kernels::{moe_gather, moe_router, qk_norm_rope, shortconv, KvType};
use crate::model::fingerprint::{fingerprint, Fnv};
use crate::model::gguf::GgufSource;
use crate::model::gguf_tokenizer::tokenizer_from_gguf;
use crate::model::{Checkpoint, Config, ModelWeights, QuantPlan, TensorSource};

pub struct Model {
    /// The checkpoint directory or GGUF file it was loaded from (`<bundled>/NAME` for the
    /// bundled model, see [`crate::BundledModel::dir`]).
    pub dir: PathBuf,
    pub config: Config,
    pub weights: ModelWeights,
    /// RoPE inverse frequencies, computed once as HF does.
    pub inv_freq: Vec<f32>,
    pub tokenizer: Option<tokenizers::Tokenizer>,
    /// What identifies these weights as loaded (checkpoint fingerprint and `--quant` plan):
    /// saved sessions record it and are refused by any other model.
    pub fingerprint: u64,
    /// Sampling defaults: the checkpoint's `generation_config.json` where it has one
    /// (transformers' reading: greedy unless `do_sample`), else greedy.
    pub generation: SamplingParams,
}

impl Model {
    /// Loads a Hugging Face LFM2 / LFM2-MoE checkpoint directory as stored.
    pub fn load(ctx: &GpuContext, dir: &Path, progress: bool) -> Result<Self> {
        Self::load_with(ctx, dir, None, progress)
    }

    /// Loads a checkpoint, quantizing its matrices while streaming them to the GPU when
    /// `quant` is given. `path` is a Hugging Face checkpoint directory or a GGUF file (`lfm2`
    /// / `lfm2moe`); a GGUF model takes its tokenizer from a tokenizer.json beside the file,
    /// else from the file's tokenizer metadata.
    pub fn load_with(
        ctx: &GpuContext,
        path: &Path,
        quant: Option<QuantPlan>,
        progress: bool,
    ) -> Result<Self> {
        if path.is_file() {
            if path
                .extension()
                .is_some_and(|e| e == "safetensors" || e == "json")
            {
                return Err(Error::file(
                    path,
                    "is a file of a Hugging Face checkpoint; pass the directory that holds it (or a .gguf file)",
                ));
            }
            return Self::load_gguf(ctx, path, quant, progress);
        }
        if !path.is_dir() {
            return Err(Error::file(
                path,
                "no such directory or file; pass a checkpoint directory with config.json and *.safetensors, or a .gguf file",
            ));
        }
        let dir = path;
        let config_path = dir.join("config.json");
        let config = Config::from_file(&config_path)?;
        check_kernel_limits(&config, &config_path)?;
        let ck = Checkpoint::open(dir)?;
        let id = identity(&config, &ck, quant)?;
        let weights = ModelWeights::load(ctx, &ck, &config, quant, progress)?;
        let tokenizer = tokenizer_json(&dir.join("tokenizer.json"))?;
        let generation = generation_json(&dir.join("generation_config.json"))?;
        Ok(Self::assemble(
            dir,
            (config, id),
            weights,
            tokenizer,
            generation,
        ))
    }

    /// Loads the model compiled into the library ([`BUNDLED_MODEL`]) from memory, quantizing
    /// its matrices while loading when `quant` is given.
    pub fn load_bundled(
        ctx: &GpuContext,
        quant: Option<QuantPlan>,
        progress: bool,
    ) -> Result<Self> {
        let b = &BUNDLED_MODEL;
        let dir = b.dir();
        let file = |name: &str| {
            b.file(name)
                .ok_or_else(|| Error::file(dir.join(name), "not bundled in this binary"))
        };
        let config_path = dir.join("config.json");
        let v: serde_json::Value = serde_json::from_slice(file("config.json")?)
            .map_err(|e| Error::file(&config_path, format!("not valid JSON: {e}")))?;
        let config = Config::from_json(&v, &config_path)?;
        check_kernel_limits(&config, &config_path)?;
        let ck =
            Checkpoint::from_static(&dir.join("model.safetensors"), file("model.safetensors")?)?;
        let id = identity(&config, &ck, quant)?;
        let weights = ModelWeights::load(ctx, &ck, &config, quant, progress)?;
        let tokenizer = match b.file("tokenizer.json") {
            None => None,
            Some(bytes) => Some(tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| {
                Error::file(
                    dir.join("tokenizer.json"),
                    format!("cannot load the tokenizer: {e}"),
                )
            })?),
        };
        let generation_path = dir.join("generation_config.json");
        let generation = match b.file("generation_config.json") {
            None => SamplingParams::greedy(),
            Some(bytes) => generation_defaults(&json(bytes, &generation_path)?, &generation_path)?,
        };
        Ok(Self::assemble(
            &dir,
            (config, id),
            weights,
            tokenizer,
            generation,
        ))
    }

    /// Loads an `lfm2` / `lfm2moe` GGUF file.
    fn load_gguf(
        ctx: &GpuContext,
        path: &Path,
        quant: Option<QuantPlan>,
        progress: bool,
    ) -> Result<Self> {
        let src = GgufSource::open(path)?;
        let config = Config::from_gguf(src.file())?;
        check_kernel_limits(&config, path)?;
        let id = identity(&config, &src, quant)?;
        let weights = ModelWeights::load(ctx, &src, &config, quant, progress)?;
        let beside = path
            .parent()
            .unwrap_or(Path::new("."))
            .join("tokenizer.json");
        let tokenizer = match tokenizer_json(&beside)? {
            Some(t) => Some(t),
            None => tokenizer_from_gguf(src.file())?,
        };
        let generation = SamplingParams::greedy();
        Ok(Self::assemble(
            path,
            (config, id),
            weights,
            tokenizer,
            generation,
        ))
    }

    fn assemble(
        path: &Path,
        (config, fingerprint): (Config, u64),
        weights: ModelWeights,
        tokenizer: Option<tokenizers::Tokenizer>,
        generation: SamplingParams,
    ) -> Self {
        let inv_freq = qk_norm_rope::inv_freq(config.rope_theta, config.head_dim);
        Model {
            dir: path.to_path_buf(),
            config,
            weights,
            inv_freq,
            tokenizer,
            fingerprint,
            generation,
        }
    }

    /// The KV cache type `--kv-type auto` picks: f32 while the whole f32 cache of
    /// `max_context` positions stays within the device profile's budget (precision is free
    /// when memory is small), else f16.
    pub fn auto_kv_type(&self, ctx: &GpuContext, max_context: usize) -> KvType {
        let cfg = &self.config;
        let layers = cfg.attention.iter().filter(|a| **a).count() as u64;
        let per_position = 2 * (cfg.n_kv_heads * cfg.head_dim * 4) as u64;
        let f32_bytes = layers * per_position * max_context as u64;
        if f32_bytes <= ctx.profile().kv_f32_budget {
            KvType::F32
        } else {
            KvType::F16
        }
    }

    /// Token ids of `text` (no special tokens added: chat templates carry their own BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let tok = self.tokenizer.as_ref().ok_or_else(|| {
            Error::Input(format!(
                "{} has no tokenizer (no tokenizer.json, no GGUF tokenizer metadata); pass --tokens instead of --prompt",
                self.dir.display()
            ))
        })?;
        Ok(tok
            .encode(text, false)
            .map_err(|e| Error::Input(format!("cannot tokenize the prompt: {e}")))?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids`, or `None` without a tokenizer.
    pub fn decode(&self, ids: &[u32]) -> Result<Option<String>> {
        match &self.tokenizer {
            None => Ok(None),
            Some(t) => {
                Ok(Some(t.decode(ids, true).map_err(|e| {
                    Error::Input(format!("cannot detokenize: {e}"))
                })?))
            }
        }
    }
}

/// The fingerprint of the checkpoint `src` as loaded with `quant`.
fn identity(cfg: &Config, src: &dyn TensorSource, quant: Option<QuantPlan>) -> Result<u64> {
    let checkpoint = fingerprint(cfg, src)?;
    let mut h = Fnv::default();
    h.u64(checkpoint).bytes(format!("{quant:?}").as_bytes());
    Ok(h.finish())
}

/// Where a model meets the kernels: the sizes their workgroup arrays and registers hold.
/// `path` names the file the config came from.
fn check_kernel_limits(cfg: &Config, path: &Path) -> Result<()> {
    let err = |msg: String| Err(Error::file(path, msg));
    if let Some(m) = &cfg.moe {
        if m.top_k > moe_router::MAX_TOP_K {
            return err(format!(
                "num_experts_per_tok {} exceeds the {} experts per token the router kernel holds",
                m.top_k,
                moe_router::MAX_TOP_K
            ));
        }
        if m.n_experts > moe_gather::MAX_EXPERTS {
            return err(format!(
                "num_experts {} exceeds the supported {}",
                m.n_experts,
                moe_gather::MAX_EXPERTS
            ));
        }
    }
    if cfg.conv_taps > shortconv::MAX_TAPS {
        return err(format!(
            "conv_L_cache {} exceeds the {} taps the conv kernel holds",
            cfg.conv_taps,
            shortconv::MAX_TAPS
        ));
    }
    if cfg.head_dim > qk_norm_rope::MAX_HEAD_DIM {
        return err(format!(
            "head_dim {} exceeds the {} the attention kernels hold",
            cfg.head_dim,
            qk_norm_rope::MAX_HEAD_DIM
        ));
    }
    Ok(())
}

/// The tokenizer in `path`, or `None` when there is no such file.
fn tokenizer_json(path: &Path) -> Result<Option<tokenizers::Tokenizer>> {
    if !path.exists() {
        return Ok(None);
    }
    tokenizers::Tokenizer::from_file(path)
        .map(Some)
        .map_err(|e| Error::file(path, format!("cannot load the tokenizer: {e}")))
}

/// `bytes` parsed as JSON (`path` names the file in errors).
fn json(bytes: &[u8], path: &Path) -> Result<serde_json::Value> {
    serde_json::from_slice(bytes).map_err(|e| Error::file(path, format!("not valid JSON: {e}")))
}

/// The sampling defaults of a `generation_config.json`, greedy when there is no such file.
fn generation_json(path: &Path) -> Result<SamplingParams> {
    if !path.exists() {
        return Ok(SamplingParams::greedy());
    }
    let bytes = std::fs::read(path)
        .map_err(|e| Error::file(path, format!("cannot read the generation config: {e}")))?;
    generation_defaults(&json(&bytes, path)?, path)
}
