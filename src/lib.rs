//! wmoe: LFM2 and LFM2-MoE inference on wgpu compute shaders.

pub mod error;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod npy;
pub mod quant;
pub mod runtime;

pub use error::{Error, Result};

pub use gpu::{DeviceOptions, GpuContext};
pub use runtime::{LogitsMode, Model, Session, SessionOptions};

/// The model bundled in `assets/` that commands use when no `--model` is given.
pub const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/tiny-moe");
