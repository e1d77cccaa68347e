//! wmoe: LFM2 and LFM2-MoE inference on wgpu compute shaders.

pub mod error;
pub mod gpu;
pub mod kernels;

pub use error::{Error, Result};
