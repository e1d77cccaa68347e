//! The GGUF header, read in file order: magic and version, the counts, the metadata
//! key/values, the alignment, the tensor infos (type, dimensions, data offset and size) and
//! where the data section starts, with every tensor's data checked to lie inside the file.

use std::collections::HashMap;
use std::path::Path;

use super::cursor::{Cursor, Parse};
use super::ggml_type::GgmlType;
use super::value::GgufValue;
use crate::error::{Error, Result};

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
}

/// Everything the header says.
pub(super) struct Header {
    pub version: u32,
    pub alignment: u64,
    /// Byte offset of the data section (tensor offsets are relative to it).
    pub data_offset: usize,
    pub metadata: Table<(String, GgufValue)>,
    pub tensors: Table<GgufTensorInfo>,
}

/// Named entries in file order, with each name's index.
pub(super) struct Table<T> {
    pub items: Vec<T>,
    index: HashMap<String, usize>,
}

impl<T> Table<T> {
    /// A table for `n` entries (a header count: it reserves no more than a few thousand).
    fn with_capacity(n: u64) -> Self {
        Table {
            items: Vec::with_capacity(n.min(4096) as usize),
            index: HashMap::new(),
        }
    }

    /// Appends `item` as `name`; `false` (and nothing appended) when `name` is already there.
    fn push(&mut self, name: String, item: T) -> bool {
        if self.index.insert(name, self.items.len()).is_some() {
            return false;
        }
        self.items.push(item);
        true
    }

    pub fn get(&self, name: &str) -> Option<&T> {
        self.index.get(name).map(|&i| &self.items[i])
    }
}

/// Reads the header of `file` (the whole mapped file, or a prefix of a file of `file_len`
/// bytes that holds the header; at least 8 bytes long).
pub(super) fn read(path: &Path, file: &[u8], file_len: u64) -> Result<Header> {
    let version = version(path, file)?;
    let mut c = Cursor { b: file, pos: 8 };
    let (n_tensors, n_kv) = counts(&mut c).map_err(corrupt(path))?;
    let metadata = metadata(&mut c, n_kv).map_err(corrupt(path))?;
    let alignment = alignment(path, &metadata.items)?;
    let tensors = tensor_infos(&mut c, path, n_tensors, alignment)?;
    let data_offset = c
        .pos
        .checked_next_multiple_of(alignment as usize)
        .ok_or_else(|| Error::file(path, format!("general.alignment {alignment} is too large")))?;
    check_data_in_file(path, &tensors.items, data_offset, file_len)?;
    check_no_overlap(path, &tensors.items)?;
    Ok(Header {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
    })
}

/// The error for a header that cannot be read: `msg` says what and where.
fn corrupt(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |msg| {
        Error::file(
            path,
            format!("truncated or corrupt GGUF header: {msg}; re-download or re-convert the file"),
        )
    }
}

/// The format version, after the magic; wmoe reads versions 2 and 3, little-endian.
fn version(path: &Path, file: &[u8]) -> Result<u32> {
    if &file[..4] != b"GGUF" {
        return Err(Error::file(
            path,
            format!(
                "not a GGUF file (it starts with {:02x?}, not the magic \"GGUF\"); pass a .gguf file or a Hugging Face checkpoint directory",
                &file[..4]
            ),
        ));
    }
    let version = u32::from_le_bytes(file[4..8].try_into().expect("4 bytes"));
    match version {
        2 | 3 => Ok(version),
        1 => Err(Error::file(
            path,
            "GGUF version 1 is not supported (wmoe reads versions 2 and 3); re-convert the model with a current llama.cpp",
        )),
        v if matches!(v.swap_bytes(), 2 | 3) => Err(Error::file(
            path,
            "is a big-endian GGUF file; wmoe reads little-endian GGUF files (convert it without --bigendian)",
        )),
        v => Err(Error::file(
            path,
            format!("GGUF version {v} is not supported (wmoe reads versions 2 and 3)"),
        )),
    }
}

/// (tensor count, metadata count), checked to fit in the rest of the file.
fn counts(c: &mut Cursor) -> Parse<(u64, u64)> {
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    // A key takes at least 12 bytes, a tensor info at least 24.
    if n_kv.saturating_mul(12) > c.remaining() as u64
        || n_tensors.saturating_mul(24) > c.remaining() as u64
    {
        return Err(format!(
            "{n_kv} metadata keys and {n_tensors} tensors cannot fit in {} bytes",
            c.b.len()
        ));
    }
    Ok((n_tensors, n_kv))
}

/// `n_kv` metadata key/values; a key may appear once.
fn metadata(c: &mut Cursor, n_kv: u64) -> Parse<Table<(String, GgufValue)>> {
    let mut metadata = Table::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"))?;
        let what = format!("metadata '{key}'");
        let ty = c.u32(&what)?;
        let value = c.value(ty, 0, &what)?;
        if !metadata.push(key.clone(), (key.clone(), value)) {
            return Err(format!("metadata key '{key}' appears twice"));
        }
    }
    Ok(metadata)
}

/// `general.alignment`, a power of two, or [`DEFAULT_ALIGNMENT`].
fn alignment(path: &Path, metadata: &[(String, GgufValue)]) -> Result<u64> {
    let Some(v) = metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .map(|(_, v)| v)
    else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match v.as_u64() {
        Some(a) if a.is_power_of_two() => Ok(a),
        _ => Err(Error::file(
            path,
            format!("general.alignment is {v:?}; it must be a power of two"),
        )),
    }
}

/// `n` tensor infos; a name may appear once.
fn tensor_infos(
    c: &mut Cursor,
    path: &Path,
    n: u64,
    alignment: u64,
) -> Result<Table<GgufTensorInfo>> {
    let mut tensors = Table::with_capacity(n);
    for i in 0..n {
        let t = tensor_info(c, path, i, alignment)?;
        let name = t.name.clone();
        if !tensors.push(name.clone(), t) {
            return Err(corrupt(path)(format!("tensor '{name}' appears twice")));
        }
    }
    Ok(tensors)
}

/// Tensor info #`i`: name, dimensions, type and data offset (a multiple of `alignment`).
fn tensor_info(c: &mut Cursor, path: &Path, i: u64, alignment: u64) -> Result<GgufTensorInfo> {
    let corrupt = corrupt(path);
    let name = c.string(&format!("tensor info #{i}")).map_err(&corrupt)?;
    let what = format!("tensor info '{name}'");
    let n_dims = c.u32(&what).map_err(&corrupt)?;
    if !(1..=8).contains(&n_dims) {
        return Err(corrupt(format!("{what}: {n_dims} dimensions")));
    }
    let mut ne = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        ne.push(c.u64(&what).map_err(&corrupt)?);
    }
    let ggml_type = GgmlType(c.u32(&what).map_err(&corrupt)?);
    let offset = c.u64(&what).map_err(&corrupt)?;
    if offset % alignment != 0 {
        return Err(Error::tensor(
            path,
            &name,
            format!("data offset {offset} is not a multiple of the alignment {alignment}: corrupt file; re-download or re-convert it"),
        ));
    }
    // elements with every dimension at least 1 (bounds every row and element count taken of
    // it) fit a usize, and times a block's bytes a u64 (on wasm32 a tensor's bytes may
    // exceed a 32-bit usize's bound on elements times block bytes and still fit)
    let elements = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d.max(1)));
    let block_bytes = ggml_type.block().map_or(1, |b| b.1 as u64);
    if elements.is_none_or(|e| usize::try_from(e).is_err() || e.checked_mul(block_bytes).is_none())
    {
        return Err(Error::tensor(
            path,
            &name,
            format!("has dimensions {ne:?} whose sizes overflow: corrupt file; re-download or re-convert it"),
        ));
    }
    let nbytes = data_bytes(&ne, ggml_type);
    Ok(GgufTensorInfo {
        name,
        ne,
        ggml_type,
        offset,
        nbytes,
    })
}

/// Bytes of a tensor of dimensions `ne` in `ggml_type`; `None` for an unknown type or rows
/// that are not whole blocks.
fn data_bytes(ne: &[u64], ggml_type: GgmlType) -> Option<usize> {
    let (be, bb) = ggml_type.block()?;
    if !ne[0].is_multiple_of(be as u64) {
        return None;
    }
    let blocks = ne
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))?
        .checked_div(be as u64)?;
    usize::try_from(blocks.checked_mul(bb as u64)?).ok()
}

/// Fails on the first tensor (in file order) whose data runs past the end of the file.
fn check_data_in_file(
    path: &Path,
    tensors: &[GgufTensorInfo],
    data_offset: usize,
    len: u64,
) -> Result<()> {
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
    Ok(())
}

/// Fails when two tensors' data overlap (a corrupt or crafted file: one write would change
/// both), naming both.
fn check_no_overlap(path: &Path, tensors: &[GgufTensorInfo]) -> Result<()> {
    let mut spans: Vec<(u64, u64, &str)> = tensors
        .iter()
        .filter_map(|t| Some((t.offset, t.offset + t.nbytes? as u64, t.name.as_str())))
        .filter(|(start, end, _)| end > start)
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        let ((_, end, a), (start, _, b)) = (w[0], w[1]);
        if start < end {
            return Err(Error::tensor(
                path,
                b,
                format!("its data overlaps the data of tensor '{a}': corrupt file; re-download or re-convert it"),
            ));
        }
    }
    Ok(())
}
