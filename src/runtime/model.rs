//! A checkpoint loaded onto the GPU, with its config and (optional) tokenizer.

use std::path::{Path, PathBuf};

use super::sampling::generation_defaults;
use crate::bundled::BUNDLED_MODEL;
use crate::chat::ChatTemplate;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels::sample::SamplingParams;
use crate::kernels::{moe_gather, moe_router, qk_norm_rope, shortconv, KvType};
use crate::model::fingerprint::{fingerprint, Fnv};
use crate::model::gguf::{GgufFile, GgufSource};
use crate::model::gguf_tokenizer::tokenizer_from_gguf;
use crate::model::{
    Checkpoint, Config, ModelWeights, Progress, QuantPlan, RangeRead, TensorSource,
};

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

/// A checkpoint read and checked on the host — config, the kernels' limits, every tensor the
/// config implies (present, shaped, in a format wmoe reads), the tokenizer — before any GPU
/// is opened, so a malformed model is reported as such on every machine.
pub struct ModelFiles {
    /// The checkpoint directory or GGUF file (`<bundled>/NAME` for the bundled model).
    pub dir: PathBuf,
    pub config: Config,
    pub tokenizer: Option<tokenizers::Tokenizer>,
    /// Sampling defaults from `generation_config.json` (greedy without one).
    pub generation: SamplingParams,
    /// The chat template of a GGUF file read from memory or in ranges: compiled, or why not
    /// (elsewhere [`ChatTemplate::from_model`] finds the template).
    pub chat_template: Option<Result<ChatTemplate>>,
    source: Box<dyn TensorSource>,
}

impl ModelFiles {
    /// Reads and checks a Hugging Face checkpoint directory or an `lfm2` / `lfm2moe` GGUF
    /// file; a GGUF model takes its tokenizer from a tokenizer.json beside the file, else
    /// from the file's tokenizer metadata.
    pub fn open(path: &Path) -> Result<Self> {
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
            return Self::open_gguf(path);
        }
        if !path.is_dir() {
            return Err(Error::file(
                path,
                "no such directory or file; pass a checkpoint directory with config.json and *.safetensors, or a .gguf file",
            ));
        }
        let config_path = path.join("config.json");
        let config = Config::from_file(&config_path)?;
        let ck = Checkpoint::open(path)?;
        check_layer_tensors(&ck, &config, &config_path)?;
        let tokenizer = tokenizer_json(&path.join("tokenizer.json"))?;
        let mut files = Self::checked(path, (config, &config_path), Box::new(ck), tokenizer)?;
        files.generation = generation_json(&path.join("generation_config.json"))?;
        Ok(files)
    }

    /// Reads and checks the model compiled into the library ([`BUNDLED_MODEL`]).
    pub fn bundled() -> Result<Self> {
        let b = &BUNDLED_MODEL;
        let dir = b.dir();
        let ck = Checkpoint::from_static(
            &dir.join("model.safetensors"),
            b.require("model.safetensors")?,
        )?;
        let config = b.require("config.json")?;
        Self::in_memory(&dir, config, ck, &|name| b.file(name))
    }

    /// Reads and checks a Hugging Face checkpoint whose files are held in memory (fetched or
    /// dropped into a browser tab): `config.json`, a single `model.safetensors`, and the
    /// optional `tokenizer.json` and `generation_config.json`. `dir` names the checkpoint in
    /// errors and [`Model::dir`].
    pub fn from_checkpoint_bytes(
        dir: &Path,
        config: &[u8],
        model: Vec<u8>,
        tokenizer: Option<&[u8]>,
        generation: Option<&[u8]>,
    ) -> Result<Self> {
        let ck = Checkpoint::from_bytes(&dir.join("model.safetensors"), model)?;
        Self::in_memory(dir, config, ck, &|name| match name {
            "tokenizer.json" => tokenizer,
            "generation_config.json" => generation,
            _ => None,
        })
    }

    /// Reads and checks an `lfm2` / `lfm2moe` GGUF file held in memory (its tokenizer from
    /// its metadata); `path` names it in errors and [`Model::dir`].
    pub fn from_gguf_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        Self::from_gguf_source(path, GgufSource::new(GgufFile::from_bytes(path, bytes)?)?)
    }

    /// Reads and checks the header of an `lfm2` / `lfm2moe` GGUF file that `reader` reads in
    /// byte ranges (a URL, a browser File; its tokenizer from its metadata); the weights stay
    /// in the file until [`Model::upload_async`] streams them. `path` names it in errors and
    /// [`Model::dir`].
    pub async fn from_gguf_ranges(path: &Path, reader: Box<dyn RangeRead>) -> Result<Self> {
        Self::from_gguf_source(path, GgufSource::from_ranges(path, reader).await?)
    }

    /// A GGUF file's model with the tokenizer and chat template of its metadata.
    fn from_gguf_source(path: &Path, src: GgufSource) -> Result<Self> {
        let config = Config::from_gguf(src.file())?;
        let tokenizer = tokenizer_from_gguf(src.file())?;
        let chat_template = Some(ChatTemplate::from_gguf(src.file()));
        let mut files = Self::checked(path, (config, path), Box::new(src), tokenizer)?;
        files.chat_template = chat_template;
        Ok(files)
    }

    /// A checkpoint of `ck` whose other files `file` gives by name, from memory.
    fn in_memory<'a>(
        dir: &Path,
        config: &[u8],
        ck: Checkpoint,
        file: &dyn Fn(&str) -> Option<&'a [u8]>,
    ) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config = Config::from_json(&json(config, &config_path)?, &config_path)?;
        check_layer_tensors(&ck, &config, &config_path)?;
        let tokenizer = match file("tokenizer.json") {
            None => None,
            Some(bytes) => Some(tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| {
                Error::file(
                    dir.join("tokenizer.json"),
                    format!("cannot load the tokenizer: {e}"),
                )
            })?),
        };
        let mut files = Self::checked(dir, (config, &config_path), Box::new(ck), tokenizer)?;
        let generation_path = dir.join("generation_config.json");
        if let Some(bytes) = file("generation_config.json") {
            files.generation =
                generation_defaults(&json(bytes, &generation_path)?, &generation_path)?;
        }
        Ok(files)
    }

    fn open_gguf(path: &Path) -> Result<Self> {
        let src = GgufSource::open(path)?;
        let config = Config::from_gguf(src.file())?;
        let beside = path
            .parent()
            .unwrap_or(Path::new("."))
            .join("tokenizer.json");
        let tokenizer = match tokenizer_json(&beside)? {
            Some(t) => Some(t),
            None => tokenizer_from_gguf(src.file())?,
        };
        Self::checked(path, (config, path), Box::new(src), tokenizer)
    }

    /// The files after the kernels' limits and every tensor are checked (`config_path`
    /// names the config's file in errors).
    fn checked(
        dir: &Path,
        (config, config_path): (Config, &Path),
        source: Box<dyn TensorSource>,
        tokenizer: Option<tokenizers::Tokenizer>,
    ) -> Result<Self> {
        check_kernel_limits(&config, config_path)?;
        ModelWeights::check(source.as_ref(), &config)?;
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
            config,
            tokenizer,
            generation: SamplingParams::greedy(),
            chat_template: None,
            source,
        })
    }
}

impl Model {
    /// Loads a Hugging Face LFM2 / LFM2-MoE checkpoint directory as stored.
    pub fn load(ctx: &GpuContext, dir: &Path, progress: bool) -> Result<Self> {
        Self::load_with(ctx, dir, None, progress)
    }

    /// Loads a checkpoint ([`ModelFiles::open`]: a Hugging Face checkpoint directory or a
    /// GGUF file), quantizing its matrices while streaming them to the GPU when `quant` is
    /// given.
    pub fn load_with(
        ctx: &GpuContext,
        path: &Path,
        quant: Option<QuantPlan>,
        progress: bool,
    ) -> Result<Self> {
        Self::upload(ctx, ModelFiles::open(path)?, quant, progress)
    }

    /// Loads the model compiled into the library ([`BUNDLED_MODEL`]) from memory, quantizing
    /// its matrices while loading when `quant` is given.
    pub fn load_bundled(
        ctx: &GpuContext,
        quant: Option<QuantPlan>,
        progress: bool,
    ) -> Result<Self> {
        Self::upload(ctx, ModelFiles::bundled()?, quant, progress)
    }

    /// Uploads checked files to `ctx`'s GPU, quantizing the matrices on the way when `quant`
    /// is given.
    pub fn upload(
        ctx: &GpuContext,
        files: ModelFiles,
        quant: Option<QuantPlan>,
        progress: bool,
    ) -> Result<Self> {
        let id = identity(&files.config, files.source.as_ref(), quant)?;
        let weights =
            ModelWeights::load(ctx, files.source.as_ref(), &files.config, quant, progress)?;
        Ok(Self::assemble(
            &files.dir,
            (files.config, id),
            weights,
            (files.tokenizer, files.generation),
        ))
    }

    /// [`Model::upload`] of files that may be read in ranges
    /// ([`ModelFiles::from_gguf_ranges`]): each chunk of weights is awaited, converted and
    /// written to its GPU page, and dropped; `on_bytes(read, total)` follows the progress.
    pub async fn upload_async(
        ctx: &GpuContext,
        files: ModelFiles,
        quant: Option<QuantPlan>,
        on_bytes: Option<&dyn Fn(u64, u64)>,
    ) -> Result<Self> {
        let id = identity(&files.config, files.source.as_ref(), quant)?;
        let progress = Progress {
            bar: false,
            on_bytes,
        };
        let weights =
            ModelWeights::load_async(ctx, files.source.as_ref(), &files.config, quant, progress)
                .await?;
        Ok(Self::assemble(
            &files.dir,
            (files.config, id),
            weights,
            (files.tokenizer, files.generation),
        ))
    }

    fn assemble(
        path: &Path,
        (config, fingerprint): (Config, u64),
        weights: ModelWeights,
        (tokenizer, generation): (Option<tokenizers::Tokenizer>, SamplingParams),
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

/// Every `model.layers.N.` tensor of `ck` is a layer the config has: a checkpoint with more
/// layers than `num_hidden_layers` is a mismatched config, not a smaller model.
fn check_layer_tensors(ck: &Checkpoint, cfg: &Config, config_path: &Path) -> Result<()> {
    let layer = |name: &str| {
        let rest = name.strip_prefix("model.layers.")?;
        rest.split_once('.')?.0.parse::<usize>().ok()
    };
    let names = ck.names();
    let beyond = names
        .iter()
        .find(|n| layer(n).is_some_and(|l| l >= cfg.n_layers));
    match beyond {
        None => Ok(()),
        Some(n) => Err(Error::file(
            config_path,
            format!(
                "num_hidden_layers is {} but the checkpoint has tensor '{n}'; fix config.json or re-download the model",
                cfg.n_layers
            ),
        )),
    }
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
