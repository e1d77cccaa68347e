//! A checkpoint loaded onto the GPU, with its config and (optional) tokenizer.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels::qk_norm_rope;
use crate::model::{Checkpoint, Config, ModelWeights, QuantPlan};

pub struct Model {
    pub dir: PathBuf,
    pub config: Config,
    pub weights: ModelWeights,
    /// RoPE inverse frequencies, computed once as HF does.
    pub inv_freq: Vec<f32>,
    pub tokenizer: Option<tokenizers::Tokenizer>,
}

impl Model {
    /// Loads a Hugging Face LFM2 / LFM2-MoE checkpoint directory as stored.
    pub fn load(ctx: &GpuContext, dir: &Path, progress: bool) -> Result<Self> {
        Self::load_with(ctx, dir, None, progress)
    }

    /// Loads a checkpoint, quantizing its matrices while streaming them to the GPU when
    /// `quant` is given.
    pub fn load_with(
        ctx: &GpuContext,
        dir: &Path,
        quant: Option<QuantPlan>,
        progress: bool,
    ) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::file(
                dir,
                "not a directory; pass a checkpoint directory with config.json and *.safetensors",
            ));
        }
        let config = Config::from_file(&dir.join("config.json"))?;
        let ck = Checkpoint::open(dir)?;
        let weights = ModelWeights::load(ctx, &ck, &config, quant, progress)?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer =
            if tok_path.exists() {
                Some(tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| {
                    Error::file(&tok_path, format!("cannot load the tokenizer: {e}"))
                })?)
            } else {
                None
            };
        let inv_freq = qk_norm_rope::inv_freq(config.rope_theta, config.head_dim);
        Ok(Model {
            dir: dir.to_path_buf(),
            config,
            weights,
            inv_freq,
            tokenizer,
        })
    }

    /// Token ids of `text` (no special tokens added: chat templates carry their own BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let tok = self.tokenizer.as_ref().ok_or_else(|| {
            Error::Input(format!(
                "{} has no tokenizer.json; pass --tokens instead of --prompt",
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
