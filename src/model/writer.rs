//! Streaming safetensors writer for quantized (`wmoe quantize`) and synthetic (`wmoe synth`)
//! checkpoints: the header is computed from the tensor list, then each tensor is streamed row
//! by row, so host memory stays bounded by a row, never the model. The output directory is
//! built as a fresh temporary next to it and renamed into place when complete
//! ([`crate::output`]). An `--out` ending in `.gguf` is one GGUF file instead
//! ([`write_gguf_checkpoint`]), written the same tidy way.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::checkpoint::QUANT_METADATA_KEY;
use super::config::Config;
use super::gguf::{gguf_metadata, gguf_tensors, write_gguf, HfTensor};
use super::weights::QuantPlan;
use crate::error::{Error, Result};
use crate::gpu::WeightFormat;
use crate::output::Staging;

/// One tensor to write: its Hugging Face name, logical shape and storage format.
#[derive(Clone, Debug)]
pub struct OutTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub format: WeightFormat,
}

impl OutTensor {
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    pub fn rows(&self) -> usize {
        self.shape.iter().product::<usize>() / self.cols().max(1)
    }

    /// Canonical bytes of the whole tensor.
    pub fn bytes(&self) -> usize {
        self.rows() * self.format.row_bytes(self.cols())
    }
}

fn dtype_name(f: WeightFormat) -> &'static str {
    match f {
        WeightFormat::F32 => "F32",
        WeightFormat::F16 => "F16",
        WeightFormat::Bf16 => "BF16",
        _ => "U8",
    }
}

/// Writes `tensors` to the new file `path` (inside a temporary output directory, which a
/// failure leaves to its owner to remove). `fill(i, row, out)` writes row `row` of tensor `i` in its
/// format's canonical layout into `out` (`format.row_bytes(cols)` bytes).
pub fn write_safetensors(
    path: &Path,
    tensors: &[OutTensor],
    mut fill: impl FnMut(usize, usize, &mut [u8]) -> Result<()>,
) -> Result<()> {
    let mut header = serde_json::Map::new();
    let mut quant = serde_json::Map::new();
    let mut offset = 0usize;
    for t in tensors {
        if !t.format.fits(t.cols()) {
            return Err(Error::tensor(
                path,
                &t.name,
                format!(
                    "rows of {} are not whole {} blocks",
                    t.cols(),
                    t.format.name()
                ),
            ));
        }
        let stored_shape = if t.format.is_quantized() {
            quant.insert(
                t.name.clone(),
                serde_json::json!({ "format": t.format.name(), "shape": t.shape }),
            );
            vec![t.rows(), t.format.row_bytes(t.cols())]
        } else {
            t.shape.clone()
        };
        let end = offset + t.bytes();
        header.insert(t.name.clone(), serde_json::json!({ "dtype": dtype_name(t.format), "shape": stored_shape, "data_offsets": [offset, end] }));
        offset = end;
    }
    let mut meta = serde_json::Map::new();
    meta.insert("format".into(), "pt".into());
    if !quant.is_empty() {
        meta.insert(
            QUANT_METADATA_KEY.into(),
            serde_json::Value::String(serde_json::Value::Object(quant).to_string()),
        );
    }
    header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    let mut text = serde_json::Value::Object(header).to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let io = |e: std::io::Error| Error::file(path, format!("cannot write: {e}"));
    let mut w = BufWriter::with_capacity(1 << 20, File::create_new(path).map_err(io)?);
    w.write_all(&(text.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(text.as_bytes()).map_err(io)?;
    let mut row = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        row.clear();
        row.resize(t.format.row_bytes(t.cols()), 0);
        for r in 0..t.rows() {
            fill(i, r, &mut row)?;
            w.write_all(&row).map_err(io)?;
        }
    }
    w.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)
}

/// Creates the output directory `out` through a fresh temporary next to it that `build`
/// fills and that is renamed into place only when `build` succeeds; a failure or a panic
/// removes the temporary. `out` must not exist, or be an empty directory (it is replaced);
/// its parent must exist.
pub fn write_directory(out: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let empty_dir = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_none());
    if out.exists() && !empty_dir {
        return Err(Error::file(
            out,
            "already exists; remove it or choose another --out",
        ));
    }
    let staging = Staging::new(out)?;
    build(staging.path())?;
    staging.commit_dir()
}

/// Whether `out` names a GGUF file (it ends in `.gguf`) rather than a checkpoint directory.
pub fn is_gguf(out: &Path) -> bool {
    out.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// Writes `tensors` (Hugging Face names) as the GGUF file `out`, the way llama.cpp's
/// converter lays out an LFM2 checkpoint of `cfg` (`model::gguf::export`), with the tokenizer
/// of the checkpoint directory `dir` when it has one; `name` is `general.name`. The file is
/// built in a fresh temporary next to `out` and renamed into place when complete; `out` must
/// not exist. `plan` names the file type; `fill` is [`write_safetensors`]'s.
pub fn write_gguf_checkpoint(
    out: &Path,
    (cfg, plan): (&Config, Option<QuantPlan>),
    name: &str,
    dir: Option<&Path>,
    tensors: &[OutTensor],
    fill: impl FnMut(usize, usize, &mut [u8]) -> Result<()>,
) -> Result<()> {
    if out.exists() {
        return Err(Error::file(
            out,
            "already exists; remove it or choose another --out",
        ));
    }
    for t in tensors {
        if !t.format.fits(t.cols()) {
            let msg = format!(
                "rows of {} are not whole {} blocks",
                t.cols(),
                t.format.name()
            );
            return Err(Error::tensor(out, &t.name, msg));
        }
    }
    let hf: Vec<HfTensor> = tensors
        .iter()
        .map(|t| HfTensor {
            name: &t.name,
            shape: &t.shape,
            format: t.format,
        })
        .collect();
    let layout = gguf_tensors(out, &hf)?;
    let quantized = tensors.iter().any(|t| t.format.is_quantized());
    let metadata = gguf_metadata(cfg, name, dir, quantized, plan)?;
    let staging = Staging::new(out)?;
    write_gguf(&staging.path().join("model.gguf"), &metadata, &layout, fill)?;
    staging.commit_file("model.gguf")
}
