//! Errors as values: every variant says what was wrong, where, and what to do.

use std::path::PathBuf;

/// The one error type of the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no usable GPU adapter: {0}")]
    NoAdapter(String),
    #[error("the GPU adapter '{adapter}' lacks {what}: {hint}")]
    MissingCapability {
        adapter: String,
        what: String,
        hint: String,
    },
    #[error("GPU error: {0}")]
    Gpu(String),
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    #[error("{}: tensor '{tensor}': {msg}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },
    #[error("invalid input: {0}")]
    Input(String),
}

impl Error {
    /// An error about a whole file (config, safetensors header, tokenizer).
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// An error about one tensor of a checkpoint file.
    pub fn tensor(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Tensor {
            path: path.into(),
            tensor: tensor.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
