//! The GGUF container (llama.cpp's format, versions 2 and 3, little-endian) read through a
//! memory map: header, metadata key/values, tensor table, alignment and data offset, and
//! the tensors' bytes. Errors name the file, and the tensor where there is one.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::cursor::Cursor;
use super::ggml_type::{supported_types, GgmlType};
use super::value::GgufValue;
use crate::error::{Error, Result};
use crate::gpu::WeightFormat;

/// `general.alignment` when a file does not set it.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// One tensor info of the header.
#[derive(Clone, Debug)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `ne[0]` is the innermost (contiguous) dimension.
    pub ne: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Data bytes; `None` for an unknown type or rows that are not whole blocks.
    pub nbytes: Option<usize>,
}

impl GgufTensorInfo {
    /// PyTorch order (`ne` reversed), outermost first.
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn numel(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// An opened, parsed GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub(crate) map: Mmap,
    pub version: u32,
    pub alignment: u64,
    /// Byte offset of the data section (tensor offsets are relative to it).
    pub data_offset: usize,
    metadata: Vec<(String, GgufValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
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
            return Err(Error::file(
                path,
                format!("is {len} bytes long, too short to be a GGUF file; re-download or re-convert it"),
            ));
        }
        // SAFETY: the map is read-only; a file changed underneath us is the user's error,
        // caught at worst as wrong values, never as memory unsafety in our code paths.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| Error::file(path, format!("cannot map: {e}")))?;
        Self::parse(path, map)
    }

    fn parse(path: &Path, map: Mmap) -> Result<Self> {
        if &map[..4] != b"GGUF" {
            return Err(Error::file(
                path,
                format!(
                    "not a GGUF file (it starts with {:02x?}, not the magic \"GGUF\"); pass a .gguf file or a Hugging Face checkpoint directory",
                    &map[..4]
                ),
            ));
        }
        let version = u32::from_le_bytes(map[4..8].try_into().expect("4 bytes"));
        match version {
            2 | 3 => {}
            1 => {
                return Err(Error::file(
                    path,
                    "GGUF version 1 is not supported (wmoe reads versions 2 and 3); re-convert the model with a current llama.cpp",
                ))
            }
            v if matches!(v.swap_bytes(), 2 | 3) => {
                return Err(Error::file(
                    path,
                    "is a big-endian GGUF file; wmoe reads little-endian GGUF files (convert it without --bigendian)",
                ))
            }
            v => {
                return Err(Error::file(
                    path,
                    format!("GGUF version {v} is not supported (wmoe reads versions 2 and 3)"),
                ))
            }
        }
        let corrupt = |msg: String| {
            Error::file(
                path,
                format!(
                    "truncated or corrupt GGUF header: {msg}; re-download or re-convert the file"
                ),
            )
        };
        let mut c = Cursor { b: &map, pos: 8 };
        let n_tensors = c.u64("tensor count").map_err(corrupt)?;
        let n_kv = c.u64("metadata count").map_err(corrupt)?;
        // A key takes at least 12 bytes, a tensor info at least 24.
        if n_kv.saturating_mul(12) > c.remaining() as u64
            || n_tensors.saturating_mul(24) > c.remaining() as u64
        {
            return Err(corrupt(format!(
                "{n_kv} metadata keys and {n_tensors} tensors cannot fit in {} bytes",
                map.len()
            )));
        }
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut meta_index = HashMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}")).map_err(corrupt)?;
            let what = format!("metadata '{key}'");
            let ty = c.u32(&what).map_err(corrupt)?;
            let value = c.value(ty, 0, &what).map_err(corrupt)?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(corrupt(format!("metadata key '{key}' appears twice")));
            }
            metadata.push((key, value));
        }
        let alignment = match metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .map(|(_, v)| v)
        {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(Error::file(
                        path,
                        format!("general.alignment is {v:?}; it must be a power of two"),
                    ))
                }
            },
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor info #{i}")).map_err(corrupt)?;
            let what = format!("tensor info '{name}'");
            let n_dims = c.u32(&what).map_err(corrupt)?;
            if !(1..=8).contains(&n_dims) {
                return Err(corrupt(format!("{what}: {n_dims} dimensions")));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(c.u64(&what).map_err(corrupt)?);
            }
            let ggml_type = GgmlType(c.u32(&what).map_err(corrupt)?);
            let offset = c.u64(&what).map_err(corrupt)?;
            if offset % alignment != 0 {
                return Err(Error::tensor(
                    path,
                    &name,
                    format!("data offset {offset} is not a multiple of the alignment {alignment}: corrupt file; re-download or re-convert it"),
                ));
            }
            let nbytes = ggml_type.block().and_then(|(be, bb)| {
                if ne[0] % be as u64 != 0 {
                    return None;
                }
                let blocks = ne
                    .iter()
                    .try_fold(1u64, |a, &d| a.checked_mul(d))?
                    .checked_div(be as u64)?;
                usize::try_from(blocks.checked_mul(bb as u64)?).ok()
            });
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(corrupt(format!("tensor '{name}' appears twice")));
            }
            tensors.push(GgufTensorInfo {
                name,
                ne,
                ggml_type,
                offset,
                nbytes,
            });
        }
        let data_offset = c.pos.div_ceil(alignment as usize) * alignment as usize;
        // The first tensor (in file order) whose data runs past the end of the file.
        let len = map.len() as u64;
        if let Some((end, t)) = tensors
            .iter()
            .filter_map(|t| {
                let end = (data_offset as u64)
                    .saturating_add(t.offset)
                    .saturating_add(t.nbytes.unwrap_or(0) as u64);
                (end > len).then_some((end, t))
            })
            .min_by_key(|(_, t)| t.offset)
        {
            return Err(Error::tensor(
                path,
                &t.name,
                format!(
                    "the file ends before this tensor's data (it needs {end} bytes, the file has {len}): truncated download or copy; re-download or re-convert it"
                ),
            ));
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            version,
            alignment,
            data_offset,
            metadata,
            meta_index,
            tensors,
            tensor_index,
        })
    }

    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(GgufValue::as_str)
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Size of the file in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The tensor's data in its ggml type's block layout, whatever the type.
    pub fn raw_data(&self, t: &GgufTensorInfo) -> Result<&[u8]> {
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
        let start = self.data_offset + t.offset as usize;
        Ok(&self.map[start..start + n])
    }

    /// The tensor's wmoe format and canonical bytes, or an error naming the tensor and its
    /// type when wmoe does not read that type.
    pub fn tensor_data(&self, t: &GgufTensorInfo) -> Result<(WeightFormat, &[u8])> {
        let format = t.ggml_type.format().ok_or_else(|| {
            Error::tensor(
                &self.path,
                &t.name,
                format!(
                    "has type {}, which wmoe does not support (supported: {}); use a GGUF quantized to one of these (e.g. Q4_K_M, Q8_0) or convert the Hugging Face checkpoint",
                    t.ggml_type.name(),
                    supported_types()
                ),
            )
        })?;
        Ok((format, self.raw_data(t)?))
    }
}
