//! Memory-mapped safetensors checkpoints, single-file or sharded
//! (`model.safetensors.index.json`), with errors that name the file and the tensor.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::gpu::WeightFormat;

struct TensorRef {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// An opened checkpoint directory.
pub struct Checkpoint {
    pub dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    tensors: HashMap<String, TensorRef>,
    /// The file a missing tensor should have been in (for error messages).
    catalogue: PathBuf,
}

/// One tensor's bytes, borrowed from the mapped file.
pub struct TensorView<'a> {
    pub name: &'a str,
    pub path: &'a Path,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

impl Checkpoint {
    /// Opens `dir/model.safetensors`, or the shards listed by `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let (shards, catalogue) = if index.exists() {
            let text = std::fs::read_to_string(&index)
                .map_err(|e| Error::file(&index, format!("cannot read: {e}")))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::file(&index, format!("not valid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::file(&index, "no 'weight_map' object"))?;
            let mut shards: Vec<String> = map
                .values()
                .filter_map(|s| s.as_str().map(String::from))
                .collect();
            shards.sort();
            shards.dedup();
            (
                shards.into_iter().map(|s| dir.join(s)).collect::<Vec<_>>(),
                index,
            )
        } else if single.exists() {
            (vec![single.clone()], single)
        } else {
            return Err(Error::file(
                dir,
                "no model.safetensors or model.safetensors.index.json here; pass a Hugging Face checkpoint directory",
            ));
        };
        let mut files = Vec::new();
        let mut tensors = HashMap::new();
        for (fi, path) in shards.iter().enumerate() {
            let file =
                File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
            // SAFETY: the map is read-only; a file changed underneath us is the user's error,
            // caught at worst as wrong values, never as memory unsafety in our code paths.
            let map = unsafe { Mmap::map(&file) }
                .map_err(|e| Error::file(path, format!("cannot map: {e}")))?;
            let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| match cut_tensor(&map) {
                Some(name) => Error::tensor(
                    path,
                    name,
                    "the file ends before this tensor's data: truncated download or copy; re-download or re-convert it",
                ),
                None => Error::file(path, format!("truncated or corrupt safetensors file ({e}); re-download or re-convert it")),
            })?;
            for (name, info) in meta.tensors() {
                tensors.insert(
                    name,
                    TensorRef {
                        file: fi,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start: 8 + n + info.data_offsets.0,
                        end: 8 + n + info.data_offsets.1,
                    },
                );
            }
            files.push((path.clone(), map));
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            files,
            tensors,
            catalogue,
        })
    }

    /// Bytes of all tensor data (for progress reporting).
    pub fn total_bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|t| (t.end - t.start) as u64)
            .sum()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name`, or an error naming the checkpoint file and the tensor.
    pub fn get<'a>(&'a self, name: &'a str) -> Result<TensorView<'a>> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::tensor(&self.catalogue, name, "missing from the checkpoint"))?;
        let (path, map) = &self.files[t.file];
        Ok(TensorView {
            name,
            path,
            dtype: t.dtype,
            shape: &t.shape,
            bytes: &map[t.start..t.end],
        })
    }

    /// The tensor `name`, checked to have `shape`.
    pub fn get_shaped<'a>(&'a self, name: &'a str, shape: &[usize]) -> Result<TensorView<'a>> {
        let v = self.get(name)?;
        if v.shape != shape {
            return Err(Error::tensor(
                v.path,
                name,
                format!("has shape {:?} but the config implies {:?}", v.shape, shape),
            ));
        }
        v.format()?;
        Ok(v)
    }
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

impl TensorView<'_> {
    /// The GPU format holding this dtype as is.
    pub fn format(&self) -> Result<WeightFormat> {
        match self.dtype {
            Dtype::F32 => Ok(WeightFormat::F32),
            Dtype::F16 => Ok(WeightFormat::F16),
            Dtype::BF16 => Ok(WeightFormat::Bf16),
            other => Err(Error::tensor(
                self.path,
                self.name,
                format!("dtype {other:?} is not supported (use f32, f16 or bf16)"),
            )),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// All elements as f32.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        Ok(self.format()?.decode(self.bytes, self.numel()))
    }
}
