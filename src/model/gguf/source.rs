//! An LFM2 / LFM2-MoE GGUF file as a [`TensorSource`]: it answers the Hugging Face names
//! `ModelWeights::load` asks for with views of the GGUF tensors (stacked expert tensors are
//! served one expert at a time, as row slices).

use std::collections::HashMap;
use std::path::Path;

use super::file::GgufFile;
use super::names::{expert_hf_name, gguf_name, hf_name, lfm2_architecture, HfName};
use crate::error::{Error, Result};
use crate::model::source::{TensorSource, TensorView};

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
        for (i, t) in file.tensors().iter().enumerate() {
            let shape = t.shape();
            match hf_name(&t.name) {
                None => {}
                Some(HfName::Tensor { name, fallback }) => {
                    let e = Entry {
                        tensor: i,
                        expert: None,
                        shape,
                    };
                    if fallback {
                        entries.entry(name).or_insert(e);
                    } else {
                        entries.insert(name, e);
                    }
                }
                // reported when asked for: not a stack of experts
                Some(HfName::Experts { .. }) if shape.len() != 3 => {}
                Some(HfName::Experts { layer, w }) => {
                    let n = shape[0];
                    for e in 0..n {
                        let entry = Entry {
                            tensor: i,
                            expert: Some((e, n)),
                            shape: shape[1..].to_vec(),
                        };
                        entries.insert(expert_hf_name(layer, e, w), entry);
                    }
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
        let t = &self.file.tensors()[e.tensor];
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
        crate::model::source::drop_pages(&self.file.map, view.bytes);
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
            .map(|&i| self.file.tensors()[i].nbytes.unwrap_or(0) as u64)
            .sum()
    }
}
