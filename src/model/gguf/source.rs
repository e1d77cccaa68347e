//! An LFM2 / LFM2-MoE GGUF file as a [`TensorSource`]: it answers the Hugging Face names
//! `ModelWeights::load` asks for with views of the GGUF tensors (stacked expert tensors are
//! served one expert at a time, as row slices).

use std::collections::HashMap;
use std::path::Path;

use super::file::GgufFile;
use super::names::{expert_hf_name, gguf_name, hf_name, lfm2_architecture, HfName};
use crate::error::{Error, Result};
use crate::model::config::MAX_EXPERTS;
use crate::model::source::{RangeRead, TensorData, TensorSource, TensorView};

/// A stack of experts: one GGUF tensor [E, rows, cols] served as E Hugging Face tensors.
struct Stack {
    tensor: usize,
    layer: usize,
    w: &'static str,
}

/// An LFM2 / LFM2-MoE GGUF file answering Hugging Face tensor names.
pub struct GgufSource {
    file: GgufFile,
    /// What reads the tensors' data of a file read in ranges.
    reader: Option<Box<dyn RangeRead>>,
    /// Hugging Face name -> tensor index, for tensors served whole.
    entries: HashMap<String, usize>,
    /// GGUF name -> expert stack; experts are resolved when asked for, so a stack's count
    /// (a header field) sizes nothing.
    stacks: HashMap<String, Stack>,
}

impl GgufSource {
    /// Opens `path` and checks its architecture.
    pub fn open(path: &Path) -> Result<Self> {
        Self::new(GgufFile::open(path)?)
    }

    /// The file `reader` reads in byte ranges (a URL, a browser File): its header now, the
    /// tensors' data when a loader asks. `path` names it in errors.
    pub async fn from_ranges(path: &Path, reader: Box<dyn RangeRead>) -> Result<Self> {
        let file = GgufFile::from_ranges(path, reader.as_ref()).await?;
        let mut src = Self::new(file)?;
        src.reader = Some(reader);
        Ok(src)
    }

    /// Wraps a parsed file (architecture `lfm2` or `lfm2moe`).
    pub fn new(file: GgufFile) -> Result<Self> {
        lfm2_architecture(&file)?;
        let mut entries = HashMap::new();
        let mut stacks = HashMap::new();
        for (i, t) in file.tensors().iter().enumerate() {
            match hf_name(&t.name) {
                None => {}
                Some(HfName::Tensor { name, fallback }) => {
                    if fallback {
                        entries.entry(name).or_insert(i);
                    } else {
                        entries.insert(name, i);
                    }
                }
                // reported when asked for: not a stack of experts
                Some(HfName::Experts { .. }) if t.ne.len() != 3 => {}
                Some(HfName::Experts { .. }) if t.ne[2] > MAX_EXPERTS as u64 => {
                    let msg = format!(
                        "stacks {} experts, more than the {MAX_EXPERTS} wmoe reads: corrupt file; re-convert it",
                        t.ne[2]
                    );
                    return Err(Error::tensor(&file.path, &t.name, msg));
                }
                Some(HfName::Experts { layer, w }) => {
                    let stack = Stack {
                        tensor: i,
                        layer,
                        w,
                    };
                    stacks.insert(t.name.clone(), stack);
                }
            }
        }
        Ok(GgufSource {
            file,
            reader: None,
            entries,
            stacks,
        })
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// (tensor index, expert) serving the Hugging Face name `name`.
    fn find(&self, name: &str) -> Option<(usize, Option<usize>)> {
        if let Some(&i) = self.entries.get(name) {
            return Some((i, None));
        }
        let (g, x) = gguf_name(name)?;
        let (x, stack) = (x?, self.stacks.get(&g)?);
        let experts = self.file.tensors()[stack.tensor].ne[2];
        ((x as u64) < experts).then_some((stack.tensor, Some(x)))
    }
}

impl TensorSource for GgufSource {
    fn get(&self, name: &str) -> Result<TensorView<'_>> {
        let Some((i, expert)) = self.find(name) else {
            let msg = match gguf_name(name) {
                Some((g, Some(x))) => format!(
                    "missing from the GGUF file (expected expert {x} of a stacked tensor '{g}' of 3 dimensions)"
                ),
                Some((g, None)) => format!("missing from the GGUF file (expected tensor '{g}')"),
                None => "missing from the GGUF file (no GGUF name for it)".to_string(),
            };
            return Err(Error::tensor(&self.file.path, name, msg));
        };
        let t = &self.file.tensors()[i];
        let format = self.file.format(t)?;
        let (mut offset, mut len) = self.file.data_range(t)?;
        let mut shape = t.shape();
        if let Some(x) = expert {
            // each expert is whole rows: a contiguous byte range of the stack
            len /= shape.remove(0);
            offset += (x * len) as u64;
        }
        let data = if self.file.is_ranged() {
            TensorData::Range { offset, len }
        } else {
            TensorData::Bytes(&self.file.map[offset as usize..offset as usize + len])
        };
        Ok(TensorView {
            name: name.to_string(),
            path: &self.file.path,
            format,
            shape,
            data,
        })
    }

    fn release(&self, view: &TensorView) {
        if let TensorData::Bytes(bytes) = view.data {
            self.file.map.drop_pages(bytes);
        }
    }

    fn reader(&self) -> Option<&dyn RangeRead> {
        self.reader.as_deref()
    }

    fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.entries.keys().cloned().collect();
        for s in self.stacks.values() {
            let experts = self.file.tensors()[s.tensor].ne[2] as usize;
            v.extend((0..experts).map(|e| expert_hf_name(s.layer, e, s.w)));
        }
        v.sort();
        v
    }

    fn total_bytes(&self) -> u64 {
        let mut seen: Vec<usize> = self.entries.values().copied().collect();
        seen.extend(self.stacks.values().map(|s| s.tensor));
        seen.sort_unstable();
        seen.dedup();
        seen.iter()
            .map(|&i| self.file.tensors()[i].nbytes.unwrap_or(0) as u64)
            .sum()
    }
}
