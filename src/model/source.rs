//! What the weight loader reads from: named tensors in a canonical byte layout, whatever the
//! file (safetensors directory or GGUF), with errors that name the file and the tensor.

use std::path::Path;

use crate::error::{Error, Result};
use crate::gpu::WeightFormat;

/// One tensor's bytes in `format`'s canonical layout, borrowed from a mapped file.
pub struct TensorView<'a> {
    pub name: String,
    pub path: &'a Path,
    pub format: WeightFormat,
    /// PyTorch order: `[rows, cols]` for matrices, outermost first.
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
}

impl TensorView<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Elements per row (the innermost dimension).
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// All elements as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        let cols = self.cols();
        let rb = self.format.row_bytes(cols);
        self.bytes
            .chunks_exact(rb.max(1))
            .flat_map(|r| self.format.dequant_row(r, cols))
            .collect()
    }
}

/// A checkpoint's tensors under their Hugging Face names.
pub trait TensorSource {
    /// The tensor `name`, or an error naming the file and the tensor.
    fn get(&self, name: &str) -> Result<TensorView<'_>>;
    fn contains(&self, name: &str) -> bool;
    /// Every tensor name, sorted.
    fn names(&self) -> Vec<String>;
    /// Bytes of all tensor data (for progress reporting).
    fn total_bytes(&self) -> u64;

    /// The tensor `name`, checked to have `shape`.
    fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<TensorView<'_>> {
        let v = self.get(name)?;
        if v.shape != shape {
            return Err(Error::tensor(
                v.path,
                name,
                format!("has shape {:?} but the config implies {:?}", v.shape, shape),
            ));
        }
        Ok(v)
    }
}
