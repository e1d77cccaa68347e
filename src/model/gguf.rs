//! GGUF files (llama.cpp's format, versions 2 and 3, little-endian) read through a memory map
//! by our own parser: header, metadata of every value type, tensor infos, alignment and data
//! offset. On top of it, for the `lfm2` / `lfm2moe` architectures (MODEL-SPEC §5): the
//! [`Config`] from the metadata and a [`TensorSource`] that answers the Hugging Face names
//! `ModelWeights::load` asks for with views of the GGUF tensors (stacked expert tensors are
//! served one expert at a time, as row slices). Errors name the file, and the tensor where
//! there is one.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::json;

use super::config::Config;
use super::source::{TensorSource, TensorView};
use crate::error::{Error, Result};
use crate::gpu::WeightFormat;

/// `general.alignment` when a file does not set it.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The architectures wmoe runs: LFM2 (dense) and LFM2-MoE.
pub const ARCHITECTURES: [&str; 2] = ["lfm2", "lfm2moe"];

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// The GGUF name of the value's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "UINT8",
            GgufValue::I8(_) => "INT8",
            GgufValue::U16(_) => "UINT16",
            GgufValue::I16(_) => "INT16",
            GgufValue::U32(_) => "UINT32",
            GgufValue::I32(_) => "INT32",
            GgufValue::F32(_) => "FLOAT32",
            GgufValue::Bool(_) => "BOOL",
            GgufValue::String(_) => "STRING",
            GgufValue::Array(_) => "ARRAY",
            GgufValue::U64(_) => "UINT64",
            GgufValue::I64(_) => "INT64",
            GgufValue::F64(_) => "FLOAT64",
        }
    }

    /// Any integer value that is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(x) => Some(x as u64),
            GgufValue::U16(x) => Some(x as u64),
            GgufValue::U32(x) => Some(x as u64),
            GgufValue::U64(x) => Some(x),
            GgufValue::I8(x) => u64::try_from(x).ok(),
            GgufValue::I16(x) => u64::try_from(x).ok(),
            GgufValue::I32(x) => u64::try_from(x).ok(),
            GgufValue::I64(x) => u64::try_from(x).ok(),
            _ => None,
        }
    }

    /// Any integer value that fits an i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(x) => Some(x as i64),
            GgufValue::I16(x) => Some(x as i64),
            GgufValue::I32(x) => Some(x as i64),
            GgufValue::I64(x) => Some(x),
            _ => self.as_u64().and_then(|x| i64::try_from(x).ok()),
        }
    }

    /// Any number (floats and integers).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(x) => Some(x as f64),
            GgufValue::F64(x) => Some(x),
            _ => self.as_i64().map(|x| x as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A ggml tensor type id, as stored in a tensor info.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

/// (id, name, elements per block, bytes per block) of the ggml types GGUF files carry
/// (gguf-py's `GGMLQuantizationType` and `GGML_QUANT_SIZES`).
const GGML_TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

/// The ggml types wmoe reads, in the order error messages list them.
const SUPPORTED: [(GgmlType, WeightFormat); 11] = [
    (GgmlType::F32, WeightFormat::F32),
    (GgmlType::F16, WeightFormat::F16),
    (GgmlType::BF16, WeightFormat::Bf16),
    (GgmlType::Q8_0, WeightFormat::Q8_0),
    (GgmlType::Q4_0, WeightFormat::Q4_0),
    (GgmlType::Q4_1, WeightFormat::Q4_1),
    (GgmlType::Q5_0, WeightFormat::Q5_0),
    (GgmlType::Q5_1, WeightFormat::Q5_1),
    (GgmlType::Q4_K, WeightFormat::Q4K),
    (GgmlType::Q5_K, WeightFormat::Q5K),
    (GgmlType::Q6_K, WeightFormat::Q6K),
];

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q5_0: GgmlType = GgmlType(6);
    pub const Q5_1: GgmlType = GgmlType(7);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q2_K: GgmlType = GgmlType(10);
    pub const Q4_K: GgmlType = GgmlType(12);
    pub const Q5_K: GgmlType = GgmlType(13);
    pub const Q6_K: GgmlType = GgmlType(14);
    pub const IQ2_XXS: GgmlType = GgmlType(16);
    pub const BF16: GgmlType = GgmlType(30);

    fn info(self) -> Option<&'static (u32, &'static str, usize, usize)> {
        GGML_TYPES.iter().find(|t| t.0 == self.0)
    }

    /// ggml's name (`Q4_K`, `IQ2_XXS`), or `unknown type id N`.
    pub fn name(self) -> String {
        match self.info() {
            Some(t) => t.1.to_string(),
            None => format!("unknown type id {}", self.0),
        }
    }

    /// The type of a ggml name (case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GGML_TYPES
            .iter()
            .find(|t| t.1.eq_ignore_ascii_case(name))
            .map(|t| GgmlType(t.0))
    }

    /// (elements, bytes) per block, for every known type.
    pub fn block(self) -> Option<(usize, usize)> {
        self.info().map(|t| (t.2, t.3))
    }

    /// wmoe's format for this type (same canonical block layout), if it reads it.
    pub fn format(self) -> Option<WeightFormat> {
        SUPPORTED.iter().find(|s| s.0 == self).map(|s| s.1)
    }

    /// The ggml type whose blocks are `f`'s canonical layout.
    pub fn of_format(f: WeightFormat) -> GgmlType {
        SUPPORTED
            .iter()
            .find(|s| s.1 == f)
            .map(|s| s.0)
            .expect("every WeightFormat is a ggml type")
    }
}

/// "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K".
pub fn supported_types() -> String {
    SUPPORTED
        .iter()
        .map(|s| s.0.name())
        .collect::<Vec<_>>()
        .join(", ")
}

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

/// Bounds-checked little-endian reads from the header.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

type Parse<T> = std::result::Result<T, String>;

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Parse<&'a [u8]> {
        match self.pos.checked_add(n).filter(|&e| e <= self.b.len()) {
            Some(end) => {
                let s = &self.b[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!(
                "the file ends inside the header ({what} at byte {} needs {n} bytes, the file has {})",
                self.pos,
                self.b.len()
            )),
        }
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Parse<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }
    fn u32(&mut self, what: &str) -> Parse<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Parse<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn string(&mut self, what: &str) -> Parse<String> {
        let n = self.u64(what)?;
        let n = usize::try_from(n).map_err(|_| format!("{what}: length {n} is too large"))?;
        let b = self.take(n, what)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn value(&mut self, ty: u32, depth: usize, what: &str) -> Parse<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.arr::<1>(what)?[0]),
            1 => GgufValue::I8(self.arr::<1>(what)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.arr(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.arr(what)?)),
            4 => GgufValue::U32(self.u32(what)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.arr(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.arr(what)?)),
            7 => GgufValue::Bool(self.arr::<1>(what)?[0] != 0),
            8 => GgufValue::String(self.string(what)?),
            9 => {
                if depth >= 8 {
                    return Err(format!("{what}: arrays nested more than 8 deep"));
                }
                let et = self.u32(what)?;
                let n = self.u64(what)?;
                // Every element takes at least this many bytes: a corrupt count fails here
                // instead of allocating.
                let min = match et {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => return Err(format!("{what}: unknown array element type {other}")),
                };
                if n.saturating_mul(min) > self.remaining() as u64 {
                    return Err(format!(
                        "{what}: an array of {n} elements does not fit in the file"
                    ));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(et, depth + 1, what)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.arr(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.arr(what)?)),
            other => return Err(format!("{what}: unknown metadata value type {other}")),
        })
    }
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

// ---------------------------------------------------------------------------------------------
// LFM2 / LFM2-MoE on top of the file
// ---------------------------------------------------------------------------------------------

/// GGUF ↔ Hugging Face names outside the blocks. `token_embd_norm` is LFM2's *final* norm
/// (llama.cpp's converter name); Ollama's converter calls it `output_norm`.
const TOP_NAMES: [(&str, &str); 4] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("token_embd_norm.weight", "model.embedding_norm.weight"),
    ("output_norm.weight", "model.embedding_norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// GGUF ↔ Hugging Face names inside block `blk.N.` / `model.layers.N.`.
const LAYER_NAMES: [(&str, &str); 16] = [
    ("attn_norm.weight", "operator_norm.weight"),
    ("ffn_norm.weight", "ffn_norm.weight"),
    ("shortconv.in_proj.weight", "conv.in_proj.weight"),
    ("shortconv.conv.weight", "conv.conv.weight"),
    ("shortconv.out_proj.weight", "conv.out_proj.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.out_proj.weight"),
    ("attn_q_norm.weight", "self_attn.q_layernorm.weight"),
    ("attn_k_norm.weight", "self_attn.k_layernorm.weight"),
    ("ffn_gate.weight", "feed_forward.w1.weight"),
    ("ffn_up.weight", "feed_forward.w3.weight"),
    ("ffn_down.weight", "feed_forward.w2.weight"),
    ("ffn_gate_inp.weight", "feed_forward.gate.weight"),
    ("exp_probs_b.bias", "feed_forward.expert_bias"),
];

/// Stacked expert tensors [E, rows, cols] ↔ per-expert `feed_forward.experts.{e}.{w}.weight`.
const EXPERT_NAMES: [(&str, &str); 3] = [
    ("ffn_gate_exps.weight", "w1"),
    ("ffn_up_exps.weight", "w3"),
    ("ffn_down_exps.weight", "w2"),
];

/// The GGUF tensor holding the Hugging Face tensor `hf`, and the expert index when it is one
/// expert's slice of a stacked tensor. `model.embedding_norm.weight` maps to
/// `token_embd_norm.weight` (llama.cpp's name; Ollama's `output_norm.weight` is also read).
pub fn gguf_name(hf: &str) -> Option<(String, Option<usize>)> {
    if let Some((g, _)) = TOP_NAMES.iter().find(|(_, h)| *h == hf) {
        return Some((g.to_string(), None));
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    if let Some((g, _)) = LAYER_NAMES.iter().find(|(_, h)| *h == rest) {
        return Some((format!("blk.{layer}.{g}"), None));
    }
    let rest = rest.strip_prefix("feed_forward.experts.")?;
    let (e, w) = rest.split_once('.')?;
    let e: usize = e.parse().ok()?;
    let w = w.strip_suffix(".weight")?;
    let (g, _) = EXPERT_NAMES.iter().find(|(_, x)| *x == w)?;
    Some((format!("blk.{layer}.{g}"), Some(e)))
}

/// `general.architecture`, checked to be one wmoe runs.
pub fn lfm2_architecture(g: &GgufFile) -> Result<&str> {
    let arch = g.architecture().ok_or_else(|| {
        Error::file(
            &g.path,
            "no 'general.architecture' metadata: not a llama.cpp model file",
        )
    })?;
    if !ARCHITECTURES.contains(&arch) {
        return Err(Error::file(
            &g.path,
            format!(
                "architecture '{arch}' is not supported: wmoe runs LFM2 ('lfm2') and LFM2-MoE ('lfm2moe') GGUF files"
            ),
        ));
    }
    Ok(arch)
}

struct Entry {
    tensor: usize,
    /// (expert, experts) for one expert's rows of a stacked tensor.
    expert: Option<(usize, usize)>,
    shape: Vec<usize>,
}

/// An LFM2 / LFM2-MoE GGUF file answering Hugging Face tensor names.
pub struct GgufSource {
    file: GgufFile,
    entries: HashMap<String, Entry>,
}

impl GgufSource {
    /// Opens `path` and checks its architecture.
    pub fn open(path: &Path) -> Result<Self> {
        Self::new(GgufFile::open(path)?)
    }

    /// Wraps a parsed file (architecture `lfm2` or `lfm2moe`).
    pub fn new(file: GgufFile) -> Result<Self> {
        lfm2_architecture(&file)?;
        let mut entries = HashMap::new();
        for (i, t) in file.tensors.iter().enumerate() {
            let shape = t.shape();
            if let Some((g, hf)) = TOP_NAMES.iter().find(|(g, _)| *g == t.name) {
                let e = Entry {
                    tensor: i,
                    expert: None,
                    shape,
                };
                // token_embd_norm wins over output_norm when a file has both
                if *g == "output_norm.weight" {
                    entries.entry(hf.to_string()).or_insert(e);
                } else {
                    entries.insert(hf.to_string(), e);
                }
                continue;
            }
            let Some((layer, rest)) = t
                .name
                .strip_prefix("blk.")
                .and_then(|r| r.split_once('.'))
                .and_then(|(l, r)| Some((l.parse::<usize>().ok()?, r)))
            else {
                continue;
            };
            if let Some((_, hf)) = LAYER_NAMES.iter().find(|(g, _)| *g == rest) {
                entries.insert(
                    format!("model.layers.{layer}.{hf}"),
                    Entry {
                        tensor: i,
                        expert: None,
                        shape,
                    },
                );
            } else if let Some((_, w)) = EXPERT_NAMES.iter().find(|(g, _)| *g == rest) {
                if shape.len() != 3 {
                    continue; // reported when asked for: not a stack of experts
                }
                let n = shape[0];
                for e in 0..n {
                    entries.insert(
                        format!("model.layers.{layer}.feed_forward.experts.{e}.{w}.weight"),
                        Entry {
                            tensor: i,
                            expert: Some((e, n)),
                            shape: shape[1..].to_vec(),
                        },
                    );
                }
            }
        }
        Ok(GgufSource { file, entries })
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

impl TensorSource for GgufSource {
    fn get(&self, name: &str) -> Result<TensorView<'_>> {
        let Some(e) = self.entries.get(name) else {
            let msg = match gguf_name(name) {
                Some((g, Some(x))) => format!(
                    "missing from the GGUF file (expected expert {x} of a stacked tensor '{g}' of 3 dimensions)"
                ),
                Some((g, None)) => format!("missing from the GGUF file (expected tensor '{g}')"),
                None => "missing from the GGUF file (no GGUF name for it)".to_string(),
            };
            return Err(Error::tensor(&self.file.path, name, msg));
        };
        let t = &self.file.tensors[e.tensor];
        let (format, bytes) = self.file.tensor_data(t)?;
        let bytes = match e.expert {
            None => bytes,
            Some((x, n)) => {
                // each expert is whole rows: a contiguous byte range of the stack
                let per = bytes.len() / n;
                &bytes[x * per..(x + 1) * per]
            }
        };
        Ok(TensorView {
            name: name.to_string(),
            path: &self.file.path,
            format,
            shape: e.shape.clone(),
            bytes,
        })
    }

    fn release(&self, view: &TensorView) {
        super::source::drop_pages(&self.file.map, view.bytes);
    }

    fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.entries.keys().cloned().collect();
        v.sort();
        v
    }

    fn total_bytes(&self) -> u64 {
        let mut seen: Vec<usize> = self.entries.values().map(|e| e.tensor).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.iter()
            .map(|&i| self.file.tensors[i].nbytes.unwrap_or(0) as u64)
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Config from the metadata
// ---------------------------------------------------------------------------------------------

struct Meta<'a> {
    g: &'a GgufFile,
    arch: &'a str,
}

impl Meta<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }
    fn err(&self, msg: String) -> Error {
        Error::file(&self.g.path, msg)
    }
    fn get(&self, k: &str) -> Option<&GgufValue> {
        self.g.get(&self.key(k))
    }
    /// A non-negative integer, or the largest entry of a per-layer array.
    fn usize_opt(&self, k: &str) -> Result<Option<usize>> {
        match self.get(k) {
            None => Ok(None),
            Some(GgufValue::Array(a)) => a
                .iter()
                .map(|v| v.as_u64().map(|x| x as usize))
                .collect::<Option<Vec<_>>>()
                .map(|v| v.into_iter().max())
                .ok_or_else(|| {
                    self.err(format!("'{}' must hold non-negative integers", self.key(k)))
                }),
            Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
                self.err(format!(
                    "'{}' must be a non-negative integer, not {v:?}",
                    self.key(k)
                ))
            }),
        }
    }
    fn usize(&self, k: &str) -> Result<usize> {
        self.usize_opt(k)?.ok_or_else(|| {
            self.err(format!(
                "missing metadata '{}'; re-convert the model with a current llama.cpp",
                self.key(k)
            ))
        })
    }
    fn f64_or(&self, k: &str, default: f64) -> Result<f64> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(format!("'{}' must be a number, not {v:?}", self.key(k)))),
        }
    }
    /// `ne[dim]` of the tensor `blk.N.{suffix}` of the lowest N.
    fn tensor_dim(&self, suffix: &str, dim: usize) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for t in &self.g.tensors {
            let Some((layer, rest)) = t.name.strip_prefix("blk.").and_then(|r| r.split_once('.'))
            else {
                continue;
            };
            let (Ok(layer), Some(&d)) = (layer.parse::<usize>(), t.ne.get(dim)) else {
                continue;
            };
            if rest == suffix && best.is_none_or(|(l, _)| layer < l) {
                best = Some((layer, d as usize));
            }
        }
        best.map(|(_, d)| d)
    }
}

impl Config {
    /// The config of an `lfm2` / `lfm2moe` GGUF file from its metadata (llama.cpp's keys,
    /// MODEL-SPEC §5.2) and tensor shapes, validated like a `config.json`:
    /// - layer types from the per-layer `attention.head_count_kv` (0 = short conv; for a
    ///   scalar count, from which layers have `attn_q` tensors);
    /// - the dense FFN width from the `ffn_gate` tensors (some GGUFs carry the raw, unadjusted
    ///   `feed_forward_length`), the expert width from `ffn_gate_exps`;
    /// - `expert_gating_func` must be sigmoid (2); top-k weights are renormalized unless
    ///   `expert_weights_norm` is false, scaled by `expert_weights_scale` (default 1);
    /// - the expert bias is used when `exp_probs_b` tensors exist; embeddings are tied unless
    ///   there is an `output.weight`; BOS / EOS from the tokenizer metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Config> {
        let arch = lfm2_architecture(g)?;
        let m = Meta { g, arch };
        let is_moe = arch == "lfm2moe";
        let n_layers = m.usize("block_count")?;
        let hidden = m.usize("embedding_length")?;
        let n_heads = m.usize("attention.head_count")?;
        let layer_has = |i: usize, s: &str| g.tensor(&format!("blk.{i}.{s}")).is_some();
        let (attention, n_kv_heads) = match m.get("attention.head_count_kv") {
            Some(GgufValue::Array(a)) => {
                if a.len() != n_layers {
                    return Err(m.err(format!(
                        "'{}' has {} entries but block_count is {n_layers}",
                        m.key("attention.head_count_kv"),
                        a.len()
                    )));
                }
                let kv: Vec<usize> = a
                    .iter()
                    .map(|v| v.as_u64().map(|x| x as usize))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        m.err(format!(
                            "'{}' must hold non-negative integers",
                            m.key("attention.head_count_kv")
                        ))
                    })?;
                let mut counts: Vec<usize> = kv.iter().copied().filter(|&x| x > 0).collect();
                counts.sort_unstable();
                counts.dedup();
                if counts.len() > 1 {
                    return Err(m.err(format!(
                        "'{}' gives different KV head counts per attention layer ({kv:?}); wmoe needs one count",
                        m.key("attention.head_count_kv")
                    )));
                }
                (
                    kv.iter().map(|&x| x > 0).collect::<Vec<_>>(),
                    counts.first().copied().unwrap_or(n_heads),
                )
            }
            other => {
                let kv = match other {
                    None => n_heads,
                    Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                        m.err(format!(
                            "'{}' must be an integer or a per-layer array",
                            m.key("attention.head_count_kv")
                        ))
                    })?,
                };
                (
                    (0..n_layers)
                        .map(|i| layer_has(i, "attn_q.weight"))
                        .collect(),
                    kv,
                )
            }
        };
        if n_heads > 0 {
            if let Some(kl) = m.usize_opt("attention.key_length")? {
                if kl * n_heads != hidden {
                    return Err(m.err(format!(
                        "'{}' is {kl} but embedding_length / head_count is {}: wmoe needs head_dim = hidden / heads",
                        m.key("attention.key_length"),
                        hidden / n_heads
                    )));
                }
            }
        }
        let layer_types: Vec<&str> = attention
            .iter()
            .map(|&a| if a { "full_attention" } else { "conv" })
            .collect();
        // tensor ne = [H, F]: ne[1] is the width
        let ffn = match m.tensor_dim("ffn_gate.weight", 1) {
            Some(f) => f,
            None => m.usize_opt("feed_forward_length")?.unwrap_or(0),
        };
        let rope_type = match m.get("rope.scaling.type").and_then(GgufValue::as_str) {
            None | Some("none") => "default".to_string(),
            Some(t) => t.to_string(),
        };
        let vocab = match m.usize_opt("vocab_size")? {
            Some(v) => v,
            None => match g.tensor("token_embd.weight").and_then(|t| t.ne.get(1)) {
                Some(&v) => v as usize,
                None => g
                    .get("tokenizer.ggml.tokens")
                    .and_then(GgufValue::as_array)
                    .map(|a| a.len())
                    .ok_or_else(|| {
                        m.err(format!(
                            "no '{}', token_embd.weight or token list: cannot tell the vocabulary size",
                            m.key("vocab_size")
                        ))
                    })?,
            },
        };
        let conv_bias = g.tensors.iter().any(|t| {
            t.name.ends_with(".shortconv.in_proj.bias")
                || t.name.ends_with(".shortconv.conv.bias")
                || t.name.ends_with(".shortconv.out_proj.bias")
        });
        let token_id = |k: &str| {
            g.get(k)
                .and_then(GgufValue::as_u64)
                .map(|x| serde_json::Value::from(x as u32))
                .unwrap_or(serde_json::Value::Null)
        };
        let mut v = json!({
            "model_type": if is_moe { "lfm2_moe" } else { "lfm2" },
            "vocab_size": vocab,
            "hidden_size": hidden,
            "num_hidden_layers": n_layers,
            "layer_types": layer_types,
            "num_attention_heads": n_heads,
            "num_key_value_heads": n_kv_heads,
            "intermediate_size": ffn,
            "norm_eps": m.f64_or("attention.layer_norm_rms_epsilon", 1e-5)?,
            "conv_L_cache": m.usize_opt("shortconv.l_cache")?.unwrap_or(3),
            "conv_bias": conv_bias,
            "rope_parameters": {"rope_theta": m.f64_or("rope.freq_base", 1e6)?, "rope_type": rope_type},
            "tie_word_embeddings": g.tensor("output.weight").is_none(),
            "max_position_embeddings": m.usize_opt("context_length")?.unwrap_or(128_000),
            "bos_token_id": token_id("tokenizer.ggml.bos_token_id"),
            "eos_token_id": token_id("tokenizer.ggml.eos_token_id"),
        });
        if is_moe {
            if let Some(f) = m.get("expert_gating_func") {
                if f.as_u64() != Some(2) {
                    return Err(m.err(format!(
                        "'{}' is {f:?}; LFM2-MoE routes with sigmoid (2)",
                        m.key("expert_gating_func")
                    )));
                }
            }
            let n_experts = match m.usize_opt("expert_count")? {
                Some(e) => e,
                None => m.tensor_dim("ffn_gate_exps.weight", 2).ok_or_else(|| {
                    m.err(format!("missing metadata '{}'", m.key("expert_count")))
                })?,
            };
            let expert_ffn = match m.tensor_dim("ffn_gate_exps.weight", 1) {
                Some(f) => f,
                None => m.usize("expert_feed_forward_length")?,
            };
            let norm = match m.get("expert_weights_norm") {
                None => true,
                Some(b) => b.as_bool().ok_or_else(|| {
                    m.err(format!("'{}' must be a bool", m.key("expert_weights_norm")))
                })?,
            };
            let o = v.as_object_mut().expect("object");
            o.insert("num_experts".into(), n_experts.into());
            o.insert(
                "num_experts_per_tok".into(),
                m.usize("expert_used_count")?.into(),
            );
            o.insert("moe_intermediate_size".into(), expert_ffn.into());
            o.insert(
                "num_dense_layers".into(),
                m.usize_opt("leading_dense_block_count")?
                    .unwrap_or(0)
                    .into(),
            );
            o.insert(
                "use_expert_bias".into(),
                g.tensors
                    .iter()
                    .any(|t| t.name.ends_with(".exp_probs_b.bias"))
                    .into(),
            );
            o.insert("norm_topk_prob".into(), norm.into());
            o.insert(
                "routed_scaling_factor".into(),
                m.f64_or("expert_weights_scale", 1.0)?.into(),
            );
        }
        Config::from_json(&v, &g.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_map_to_gguf_names() {
        assert_eq!(
            gguf_name("model.embed_tokens.weight"),
            Some(("token_embd.weight".into(), None))
        );
        assert_eq!(
            gguf_name("model.layers.3.conv.conv.weight"),
            Some(("blk.3.shortconv.conv.weight".into(), None))
        );
        assert_eq!(
            gguf_name("model.layers.12.feed_forward.experts.31.w2.weight"),
            Some(("blk.12.ffn_down_exps.weight".into(), Some(31)))
        );
        assert_eq!(
            gguf_name("model.layers.0.feed_forward.expert_bias"),
            Some(("blk.0.exp_probs_b.bias".into(), None))
        );
        assert_eq!(gguf_name("model.layers.x.ffn_norm.weight"), None);
    }

    #[test]
    fn every_weight_format_is_a_ggml_type_with_the_same_blocks() {
        for f in crate::gpu::ALL_FORMATS {
            let t = GgmlType::of_format(f);
            assert_eq!(t.format(), Some(f));
            assert_eq!(t.block(), Some((f.block_elems(), f.block_bytes())), "{f:?}");
        }
        assert_eq!(GgmlType::IQ2_XXS.name(), "IQ2_XXS");
        assert_eq!(GgmlType(99).name(), "unknown type id 99");
        assert_eq!(GgmlType::from_name("q5_1"), Some(GgmlType::Q5_1));
        assert_eq!(GgmlType::Q5_1.format(), Some(WeightFormat::Q5_1));
        assert_eq!(GgmlType::Q2_K.format(), None);
        assert_eq!(
            supported_types(),
            "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K"
        );
    }
}
