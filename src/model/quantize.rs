//! `wmoe quantize`: rewrites a checkpoint with its matrices in quantized formats (per a plan),
//! streaming row by row; the result loads without re-quantizing. Format: docs/QUANTIZED-CHECKPOINTS.md.

use std::collections::BTreeMap;
use std::path::Path;

use super::checkpoint::Checkpoint;
use super::config::Config;
use super::source::TensorSource;
use super::weights::{QuantPlan, Role};
use super::writer::{
    is_gguf, write_directory, write_gguf_checkpoint, write_safetensors, OutTensor,
};
use crate::error::{Error, Result};
use crate::gpu::WeightFormat;

/// Files copied unchanged from the source checkpoint when present.
const SIDE_FILES: [&str; 6] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// What a quantization wrote: per format, tensors and bytes.
#[derive(Debug, Default)]
pub struct QuantizeReport {
    pub tensors: Vec<(String, WeightFormat, usize)>,
}

impl QuantizeReport {
    pub fn total_bytes(&self) -> usize {
        self.tensors.iter().map(|t| t.2).sum()
    }

    /// (tensors, bytes) per output format, by format name.
    pub fn by_format(&self) -> BTreeMap<&'static str, (usize, usize)> {
        let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (_, f, b) in &self.tensors {
            let e = per.entry(f.name()).or_default();
            e.0 += 1;
            e.1 += b;
        }
        per
    }
}

/// The format a tensor gets under `plan`: the plan's choice for matrices with a role, else
/// its own float format (quantized tensors without a role are expanded to f32).
pub fn output_format(
    plan: QuantPlan,
    name: &str,
    source: WeightFormat,
    cols: usize,
) -> WeightFormat {
    match Role::of_name(name).and_then(|r| plan.target(r, cols)) {
        Some(f) => f,
        None if source.is_quantized() => WeightFormat::F32,
        None => source,
    }
}

/// Quantizes the checkpoint in `src` into a new directory `out`, or into the new GGUF file
/// `out` when it ends in `.gguf` (llama.cpp's layout, with the tokenizer and chat template).
pub fn quantize_checkpoint(src: &Path, plan: QuantPlan, out: &Path) -> Result<QuantizeReport> {
    let cfg = Config::from_file(&src.join("config.json"))?;
    let gguf = is_gguf(out);
    let ck = Checkpoint::open(src)?;
    let views = ck
        .names()
        .into_iter()
        .map(|n| ck.get(&n))
        .collect::<Result<Vec<_>>>()?;
    let outs: Vec<OutTensor> = views
        .iter()
        .map(|v| OutTensor {
            name: v.name.clone(),
            shape: v.shape.clone(),
            format: match output_format(plan, &v.name, v.format, v.cols()) {
                // Norms, the conv kernel, the router and the expert bias in f32, as llama.cpp's
                // converter writes them (its kernels take f32 for these).
                _ if gguf && Role::of_name(&v.name).is_none() => WeightFormat::F32,
                f => f,
            },
        })
        .collect();
    let mut report = QuantizeReport::default();
    for o in &outs {
        report.tensors.push((o.name.clone(), o.format, o.bytes()));
    }
    let fill = |i: usize, r: usize, dst: &mut [u8]| {
        let (v, o) = (&views[i], &outs[i]);
        let cols = v.cols();
        let rb = v.format.row_bytes(cols);
        let src_row = &v.bytes()?[r * rb..(r + 1) * rb];
        if v.format == o.format {
            dst.copy_from_slice(src_row);
            return Ok(());
        }
        let vals = v.format.dequant_row(src_row, cols);
        if let Some(x) = vals.iter().find(|x| !x.is_finite()) {
            let msg =
                format!("row {r} holds {x}: corrupt weights; re-download or re-convert the model");
            return Err(Error::tensor(v.path, &v.name, msg));
        }
        o.format.quantize_row(&vals, dst);
        Ok(())
    };
    if gguf {
        let name = src.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_else(|| "model".into());
        write_gguf_checkpoint(out, (&cfg, Some(plan)), &name, Some(src), &outs, fill)?;
        return Ok(report);
    }
    write_directory(out, |tmp| {
        write_safetensors(&tmp.join("model.safetensors"), &outs, fill)?;
        for f in SIDE_FILES {
            let from = src.join(f);
            if from.exists() {
                std::fs::copy(&from, tmp.join(f))
                    .map_err(|e| Error::file(&from, format!("cannot copy: {e}")))?;
            }
        }
        Ok(())
    })?;
    Ok(report)
}
