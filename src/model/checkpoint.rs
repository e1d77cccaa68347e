//! Memory-mapped safetensors checkpoints, single-file or sharded
//! (`model.safetensors.index.json`), with errors that name the file and the tensor. Besides
//! f32/f16/bf16 tensors it reads wmoe's quantized tensors (docs/QUANTIZED-CHECKPOINTS.md): U8
//! data holding GGUF blocks, described in the header's `__metadata__["wmoe.quant"]`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::source::{Data, TensorData, TensorSource, TensorView};
use crate::error::{Error, Result};
use crate::gpu::WeightFormat;

/// Header metadata key listing the quantized tensors: `{name: {"format": "q4_k", "shape": [r, c]}}`.
pub const QUANT_METADATA_KEY: &str = "wmoe.quant";

struct TensorRef {
    file: usize,
    format: std::result::Result<WeightFormat, String>,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// An opened checkpoint: a directory's memory-mapped safetensors files, or one safetensors
/// file held in memory.
pub struct Checkpoint {
    pub dir: PathBuf,
    files: Vec<(PathBuf, Data)>,
    tensors: HashMap<String, TensorRef>,
    /// The file a missing tensor should have been in (for error messages).
    catalogue: PathBuf,
}

impl Checkpoint {
    /// Opens `dir/model.safetensors`, or the shards listed by `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let (shards, catalogue) = if index.exists() {
            let text = std::fs::read(&index)
                .map_err(|e| Error::file(&index, format!("cannot read: {e}")))?;
            (Self::shards(dir, &index, &text)?, index)
        } else if single.exists() {
            (vec![single.clone()], single)
        } else {
            return Err(Error::file(
                dir,
                "no model.safetensors or model.safetensors.index.json here; pass a Hugging Face checkpoint directory",
            ));
        };
        let mut files = Vec::new();
        for path in shards {
            let file =
                File::open(&path).map_err(|e| Error::file(&path, format!("cannot open: {e}")))?;
            // SAFETY: the map is read-only; a file changed underneath us is the user's error,
            // caught at worst as wrong values, never as memory unsafety in our code paths.
            let map = unsafe { Mmap::map(&file) }
                .map_err(|e| Error::file(&path, format!("cannot map: {e}")))?;
            files.push((path, Data::Mapped(map)));
        }
        Self::index(dir, files, catalogue)
    }

    /// The shard files a `model.safetensors.index.json` (`text`, read from `index`) lists,
    /// each a file name inside `dir`: a `weight_map` entry that is not a string, or names a
    /// path outside the directory (absolute, `..`, a subdirectory), is refused.
    pub fn shards(dir: &Path, index: &Path, text: &[u8]) -> Result<Vec<PathBuf>> {
        let v: serde_json::Value = serde_json::from_slice(text)
            .map_err(|e| Error::file(index, format!("not valid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::file(index, "no 'weight_map' object"))?;
        let mut shards = Vec::new();
        for (tensor, file) in map {
            let name = file.as_str().filter(|f| is_plain_file_name(f)).ok_or_else(|| {
                Error::file(
                    index,
                    format!("weight_map entry '{tensor}' is {file}: it must name a shard file in the model directory; fix the index"),
                )
            })?;
            shards.push(name);
        }
        shards.sort_unstable();
        shards.dedup();
        Ok(shards.into_iter().map(|s| dir.join(s)).collect())
    }

    /// A checkpoint of the single safetensors file `bytes` (a model compiled into the binary);
    /// `path`, its stand-in file name, names it in error messages and `dir`.
    pub fn from_static(path: &Path, bytes: &'static [u8]) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new(""));
        let files = vec![(path.to_path_buf(), Data::Static(bytes))];
        Self::index(dir, files, path.to_path_buf())
    }

    /// A checkpoint of the single safetensors file `bytes`, held in memory; `path` names it
    /// in error messages.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new(""));
        let files = vec![(path.to_path_buf(), Data::Owned(bytes))];
        Self::index(dir, files, path.to_path_buf())
    }

    /// Reads the headers of `files` into the tensor table.
    fn index(dir: &Path, files: Vec<(PathBuf, Data)>, catalogue: PathBuf) -> Result<Self> {
        let mut tensors = HashMap::new();
        for (fi, (path, data)) in files.iter().enumerate() {
            let (n, meta) = SafeTensors::read_metadata(data).map_err(|e| match cut_tensor(data) {
                Some(name) => Error::tensor(
                    path,
                    name,
                    "the file ends before this tensor's data: truncated download or copy; re-download or re-convert it",
                ),
                None => Error::file(path, format!("truncated or corrupt safetensors file ({e}); re-download or re-convert it")),
            })?;
            let quant: serde_json::Map<String, serde_json::Value> = match meta
                .metadata()
                .as_ref()
                .and_then(|m| m.get(QUANT_METADATA_KEY))
            {
                None => Default::default(),
                Some(text) => serde_json::from_str(text).map_err(|e| {
                    Error::file(path, format!("bad '{QUANT_METADATA_KEY}' metadata: {e}"))
                })?,
            };
            for (name, info) in meta.tensors() {
                let (format, shape) = match quant.get(&name) {
                    Some(q) => {
                        quant_entry(q, info.dtype, info.data_offsets.1 - info.data_offsets.0)
                            .map_err(|msg| Error::tensor(path, &name, msg))?
                    }
                    None => (float_format(info.dtype), info.shape.clone()),
                };
                // bytes with every dimension at least 1: bounds every row taken of it
                let unit = info.dtype.bitsize().div_ceil(8).max(1);
                if shape
                    .iter()
                    .try_fold(unit, |a, &d| a.checked_mul(d.max(1)))
                    .is_none()
                {
                    let msg = format!("has dimensions {shape:?} whose sizes overflow: corrupt file; re-download or re-convert it");
                    return Err(Error::tensor(path, name, msg));
                }
                let (start, end) = (8 + n + info.data_offsets.0, 8 + n + info.data_offsets.1);
                let t = TensorRef {
                    file: fi,
                    format,
                    shape,
                    start,
                    end,
                };
                if let Some(first) = tensors.insert(name.clone(), t) {
                    let other = files[first.file].0.display();
                    let msg = format!(
                        "is also in {other}: a tensor may be in one shard only; fix the checkpoint"
                    );
                    return Err(Error::tensor(path, name, msg));
                }
            }
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            files,
            tensors,
            catalogue,
        })
    }
}

impl TensorSource for Checkpoint {
    fn total_bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|t| (t.end - t.start) as u64)
            .sum()
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn release(&self, view: &TensorView) {
        if let TensorData::Bytes(bytes) = view.data {
            for (_, data) in &self.files {
                data.drop_pages(bytes);
            }
        }
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().cloned().collect();
        v.sort();
        v
    }

    fn get(&self, name: &str) -> Result<TensorView<'_>> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::tensor(&self.catalogue, name, "missing from the checkpoint"))?;
        let (path, map) = &self.files[t.file];
        let format = t
            .format
            .clone()
            .map_err(|msg| Error::tensor(path, name, msg))?;
        Ok(TensorView {
            name: name.to_string(),
            path,
            format,
            shape: t.shape.clone(),
            data: TensorData::Bytes(&map[t.start..t.end]),
        })
    }
}

fn float_format(dtype: Dtype) -> std::result::Result<WeightFormat, String> {
    match dtype {
        Dtype::F32 => Ok(WeightFormat::F32),
        Dtype::F16 => Ok(WeightFormat::F16),
        Dtype::BF16 => Ok(WeightFormat::Bf16),
        other => Err(format!(
            "dtype {other:?} is not supported (use f32, f16 or bf16)"
        )),
    }
}

/// Format and logical shape of a quantized tensor from its metadata entry, checked against
/// the stored byte count.
fn quant_entry(
    q: &serde_json::Value,
    dtype: Dtype,
    bytes: usize,
) -> std::result::Result<(std::result::Result<WeightFormat, String>, Vec<usize>), String> {
    let fmt = q
        .get("format")
        .and_then(|f| f.as_str())
        .ok_or("quantized tensor without a 'format'")?;
    let format =
        WeightFormat::from_name(fmt).ok_or_else(|| format!("unknown quantized format '{fmt}'"))?;
    let shape: Vec<usize> = q
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or("quantized tensor without a 'shape'")?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<_>>()
        .filter(|s: &Vec<usize>| !s.is_empty())
        .ok_or("quantized tensor whose 'shape' is not a non-empty list of sizes")?;
    let cols = shape[shape.len() - 1];
    if dtype != Dtype::U8 || !format.fits(cols) {
        return Err(format!(
            "stored as {dtype:?} with {cols} columns: not a valid {fmt} tensor"
        ));
    }
    let row_bytes = (cols / format.block_elems()).checked_mul(format.block_bytes());
    let needs = shape[..shape.len() - 1]
        .iter()
        .fold(row_bytes, |a, &d| a.and_then(|a| a.checked_mul(d)));
    if needs != Some(bytes) {
        let needs = needs.map_or("more than 2^64".into(), |n| n.to_string());
        return Err(format!(
            "holds {bytes} bytes but {fmt} {shape:?} needs {needs}"
        ));
    }
    Ok((Ok(format), shape))
}

/// A shard name of an index: one plain file name (no directory, no `..`, not absolute).
fn is_plain_file_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(_)), None)
    )
}

/// The first tensor (in file order) whose data runs past the end of a truncated file.
fn cut_tensor(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let available = bytes.len() - 8 - n;
    header
        .as_object()?
        .iter()
        .filter_map(|(name, info)| {
            let end = info.get("data_offsets")?.get(1)?.as_u64()? as usize;
            (end > available).then(|| (end, name.clone()))
        })
        .min()
        .map(|(_, name)| name)
}
