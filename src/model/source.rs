//! What the weight loader reads from: named tensors in a canonical byte layout, whatever the
//! file (safetensors directory or GGUF), with errors that name the file and the tensor. A
//! tensor's bytes are in memory (a mapped, compiled-in or read file) or in a file read in
//! byte ranges on demand ([`RangeRead`]: a URL or a browser File), so a model streams into
//! GPU pages without the host ever holding it.

use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use crate::error::{Error, Result};
use crate::gpu::WeightFormat;

/// One tensor in `format`'s canonical layout.
pub struct TensorView<'a> {
    pub name: String,
    pub path: &'a Path,
    pub format: WeightFormat,
    /// PyTorch order: `[rows, cols]` for matrices, outermost first.
    pub shape: Vec<usize>,
    pub data: TensorData<'a>,
}

/// Where a tensor's bytes are.
#[derive(Clone, Copy, Debug)]
pub enum TensorData<'a> {
    /// In memory: borrowed from a mapped, compiled-in or read file.
    Bytes(&'a [u8]),
    /// `len` bytes at `offset` of the file its source reads in ranges
    /// ([`TensorSource::reader`]).
    Range { offset: u64, len: usize },
}

/// A future of bytes read from a [`RangeRead`].
pub type ReadFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>>> + 'a>>;

/// A file read in byte ranges, asynchronously: a URL served with `Range` requests, a browser
/// File or Blob.
pub trait RangeRead {
    /// The file's bytes `[offset, offset + len)`, exactly `len` of them.
    fn read(&self, offset: u64, len: usize) -> ReadFuture<'_>;
    /// The file's length in bytes.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> TensorView<'a> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Elements per row (the innermost dimension).
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Bytes of the tensor's data.
    pub fn len(&self) -> usize {
        match self.data {
            TensorData::Bytes(b) => b.len(),
            TensorData::Range { len, .. } => len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in memory, or an error for a tensor of a file read in ranges (read those
    /// with [`TensorView::read`]).
    pub fn bytes(&self) -> Result<&'a [u8]> {
        match self.data {
            TensorData::Bytes(b) => Ok(b),
            TensorData::Range { .. } => Err(Error::tensor(
                self.path,
                &self.name,
                "is in a file read in ranges, not in memory; this operation needs the file on disk",
            )),
        }
    }

    /// Bytes `range` of the tensor's data: borrowed when in memory, else read through
    /// `reader` (the source's [`TensorSource::reader`]).
    pub async fn read(
        &self,
        reader: Option<&dyn RangeRead>,
        range: std::ops::Range<usize>,
    ) -> Result<Cow<'a, [u8]>> {
        match (self.data, reader) {
            (TensorData::Bytes(b), _) => Ok(Cow::Borrowed(&b[range])),
            (TensorData::Range { offset, .. }, Some(r)) => {
                let bytes = r.read(offset + range.start as u64, range.len()).await?;
                if bytes.len() != range.len() {
                    return Err(Error::tensor(
                        self.path,
                        &self.name,
                        format!(
                            "read {} bytes where {} were asked for: the file changed or the server cut it short; reload",
                            bytes.len(),
                            range.len()
                        ),
                    ));
                }
                Ok(Cow::Owned(bytes))
            }
            (TensorData::Range { .. }, None) => self.bytes().map(Cow::Borrowed),
        }
    }

    /// All elements as f32 (in memory: see [`TensorView::bytes`]).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        Ok(self.dequant(self.bytes()?))
    }

    /// All elements as f32, read through `reader` where not in memory.
    pub async fn read_f32(&self, reader: Option<&dyn RangeRead>) -> Result<Vec<f32>> {
        Ok(self.dequant(&self.read(reader, 0..self.len()).await?))
    }

    /// `bytes`, this tensor's data, as f32.
    fn dequant(&self, bytes: &[u8]) -> Vec<f32> {
        let cols = self.cols();
        let rb = self.format.row_bytes(cols);
        bytes
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

    /// What reads the views of [`TensorData::Range`] (default: none, every view is in
    /// memory).
    fn reader(&self) -> Option<&dyn RangeRead> {
        None
    }

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
