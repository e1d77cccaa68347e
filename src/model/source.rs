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

    /// Tells the OS the mapped bytes of `view` will not be read again soon, so a loader that
    /// has uploaded them keeps host memory bounded (default: nothing to do).
    fn release(&self, _view: &TensorView) {}

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

/// A checkpoint file's bytes: mapped from disk, compiled into the binary, or read into
/// memory.
pub(crate) enum Data {
    Mapped(memmap2::Mmap),
    Static(&'static [u8]),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Data {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Data::Mapped(map) => map,
            Data::Static(bytes) => bytes,
            Data::Owned(bytes) => bytes,
        }
    }
}

impl Data {
    /// Drops the resident pages of `bytes` (when a slice of this mapping) from this
    /// process's memory; they are re-read from the file if touched again.
    pub(crate) fn drop_pages(&self, bytes: &[u8]) {
        const PAGE: usize = 4096;
        let Data::Mapped(map) = self else {
            return;
        };
        let base = map.as_ptr() as usize;
        let start = bytes.as_ptr() as usize;
        if start < base || start + bytes.len() > base + map.len() {
            return;
        }
        let first = (start - base).next_multiple_of(PAGE);
        let end = (start - base + bytes.len()) / PAGE * PAGE;
        if end > first {
            // SAFETY: the mapping is read-only and file-backed; MADV_DONTNEED only drops
            // cached pages, and later reads fault them back in from the unchanged file. No
            // reference into these pages is invalidated (their contents stay the same).
            // Other systems keep the pages (memmap2 advises on Unix only).
            #[cfg(unix)]
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first, end - first)
            };
        }
    }
}
