//! An opened GGUF file (llama.cpp's format, versions 2 and 3, little-endian): its memory
//! map, what its header says (metadata and tensor infos, looked up by name) and the tensors'
//! bytes. Errors name the file, and the tensor where there is one.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::ggml_type::supported_types;
use super::header::{self, GgufTensorInfo, Table};
use super::value::GgufValue;
use crate::error::{Error, Result};
use crate::gpu::WeightFormat;
use crate::model::source::{Data, RangeRead};

/// An opened, parsed GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    /// The whole file, or (read in ranges) its header's bytes.
    pub(crate) map: Data,
    /// Whether `map` holds only the header (the file is read in ranges).
    ranged: bool,
    /// The file's length in bytes.
    file_len: u64,
    pub version: u32,
    pub alignment: u64,
    /// Byte offset of the data section (tensor offsets are relative to it).
    pub data_offset: usize,
    metadata: Table<(String, GgufValue)>,
    tensors: Table<GgufTensorInfo>,
}

fn too_short(path: &Path, len: usize) -> Error {
    Error::file(
        path,
        format!("is {len} bytes long, too short to be a GGUF file; re-download or re-convert it"),
    )
}

impl GgufFile {
    /// Maps and parses `path`; checks that every tensor's data lies inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
        let len = file
            .metadata()
            .map_err(|e| Error::file(path, format!("cannot stat: {e}")))?
            .len();
        if len < 8 {
            return Err(too_short(path, len as usize));
        }
        // SAFETY: the map is read-only; a file changed underneath us is the user's error,
        // caught at worst as wrong values, never as memory unsafety in our code paths.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| Error::file(path, format!("cannot map: {e}")))?;
        Self::parse(path, Data::Mapped(map))
    }

    /// Parses the GGUF file `bytes` held in memory; `path` names it in error messages.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(path, Data::Owned(bytes))
    }

    /// Parses the header of the GGUF file `reader` reads in byte ranges (a URL, a browser
    /// File), reading a prefix that grows until it holds the header; the tensors' data stays
    /// in the file, read when a loader asks for it. `path` names it in error messages.
    pub async fn from_ranges(path: &Path, reader: &dyn RangeRead) -> Result<Self> {
        /// The first prefix read, and the largest header read.
        const FIRST: u64 = 1 << 20;
        const MOST: u64 = 256 << 20;
        let len = reader.len();
        if len < 8 {
            return Err(too_short(path, len as usize));
        }
        let mut want = FIRST.min(len);
        loop {
            let prefix = reader.read(0, want as usize).await?;
            match header::read(path, &prefix, len) {
                Ok(h) => return Ok(Self::with_header(path, Data::Owned(prefix), h, len, true)),
                // a header cut by the prefix: read a longer one
                Err(_) if want < len && want < MOST => want = (want * 4).min(len).min(MOST),
                Err(e) => return Err(e),
            }
        }
    }

    fn parse(path: &Path, map: Data) -> Result<Self> {
        if map.len() < 8 {
            return Err(too_short(path, map.len()));
        }
        let len = map.len() as u64;
        let h = header::read(path, &map, len)?;
        Ok(Self::with_header(path, map, h, len, false))
    }

    fn with_header(path: &Path, map: Data, h: header::Header, file_len: u64, ranged: bool) -> Self {
        GgufFile {
            path: path.to_path_buf(),
            map,
            ranged,
            file_len,
            version: h.version,
            alignment: h.alignment,
            data_offset: h.data_offset,
            metadata: h.metadata,
            tensors: h.tensors,
        }
    }

    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata.items
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key).map(|(_, v)| v)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(GgufValue::as_str)
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors.items
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.get(name)
    }

    /// Size of the file in bytes.
    pub fn len(&self) -> u64 {
        self.file_len
    }

    pub fn is_empty(&self) -> bool {
        self.file_len == 0
    }

    /// Whether only the header is in memory (the file is read in ranges).
    pub fn is_ranged(&self) -> bool {
        self.ranged
    }

    /// The tensor's data in its ggml type's block layout, whatever the type (in memory: a
    /// file read in ranges has only its header there, see [`GgufFile::data_range`]).
    pub fn raw_data(&self, t: &GgufTensorInfo) -> Result<&[u8]> {
        let (start, n) = self.data_range(t)?;
        if self.ranged {
            return Err(Error::tensor(
                &self.path,
                &t.name,
                "is in a file read in ranges, not in memory",
            ));
        }
        Ok(&self.map[start as usize..start as usize + n])
    }

    /// (file offset, bytes) of the tensor's data, whatever the type.
    pub fn data_range(&self, t: &GgufTensorInfo) -> Result<(u64, usize)> {
        let n = t.nbytes.ok_or_else(|| match t.ggml_type.block() {
            None => Error::tensor(
                &self.path,
                &t.name,
                format!(
                    "has {}, which wmoe does not know; wmoe reads {}",
                    t.ggml_type.name(),
                    supported_types()
                ),
            ),
            Some((be, _)) => Error::tensor(
                &self.path,
                &t.name,
                format!(
                    "has rows of {} elements, not a whole number of {} blocks of {be}: corrupt file; re-convert it",
                    t.ne[0],
                    t.ggml_type.name()
                ),
            ),
        })?;
        Ok((self.data_offset as u64 + t.offset, n))
    }

    /// The tensor's wmoe format and canonical bytes, or an error naming the tensor and its
    /// type when wmoe does not read that type.
    pub fn tensor_data(&self, t: &GgufTensorInfo) -> Result<(WeightFormat, &[u8])> {
        Ok((self.format(t)?, self.raw_data(t)?))
    }

    /// The tensor's wmoe format, or an error naming the tensor and its type when wmoe does
    /// not read that type.
    pub fn format(&self, t: &GgufTensorInfo) -> Result<WeightFormat> {
        t.ggml_type.format().ok_or_else(|| {
            Error::tensor(
                &self.path,
                &t.name,
                format!(
                    "has type {}, which wmoe does not support (supported: {}); use a GGUF quantized to one of these (e.g. Q4_K_M, Q8_0) or convert the Hugging Face checkpoint",
                    t.ggml_type.name(),
                    supported_types()
                ),
            )
        })
    }
}
