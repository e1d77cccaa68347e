//! Writes a GGUF v3 file (the inverse of `header`): magic, version, counts, the metadata
//! key/values, the tensor infos with offsets aligned to [`DEFAULT_ALIGNMENT`], then each
//! tensor's data streamed row by row, so host memory stays bounded by a row.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::header::DEFAULT_ALIGNMENT;
use super::{GgmlType, GgufValue};
use crate::error::{Error, Result};
use crate::gpu::WeightFormat;

/// One tensor to write: its GGUF name, ggml dimensions (`ne[0]` innermost), storage format,
/// and the rows it is made of: `parts` are caller tensor indices whose rows follow each other
/// (one part, or every expert of a stacked expert tensor).
#[derive(Clone, Debug)]
pub struct GgufOutTensor {
    pub name: String,
    pub ne: Vec<u64>,
    pub format: WeightFormat,
    pub parts: Vec<usize>,
}

impl GgufOutTensor {
    fn cols(&self) -> usize {
        self.ne[0] as usize
    }

    fn rows(&self) -> usize {
        self.ne[1..].iter().product::<u64>() as usize
    }

    fn bytes(&self) -> u64 {
        (self.rows() * self.format.row_bytes(self.cols())) as u64
    }
}

/// Writes `metadata` and `tensors` to the new file `path`. `fill(part, row, out)` writes row
/// `row` of caller tensor `part` in its format's canonical (ggml) block layout into `out`;
/// each part has `rows / parts.len()` rows.
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, GgufValue)],
    tensors: &[GgufOutTensor],
    mut fill: impl FnMut(usize, usize, &mut [u8]) -> Result<()>,
) -> Result<()> {
    let mut head = Vec::new();
    head.extend_from_slice(b"GGUF");
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut head, key);
        head.extend_from_slice(&type_id(value).to_le_bytes());
        put_value(&mut head, value);
    }
    let mut offset = 0u64;
    for t in tensors {
        put_string(&mut head, &t.name);
        head.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        for &d in &t.ne {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&GgmlType::of_format(t.format).0.to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        offset = aligned(offset + t.bytes());
    }
    head.resize(aligned(head.len() as u64) as usize, 0);
    let io = |e: std::io::Error| Error::file(path, format!("cannot write: {e}"));
    let mut w = BufWriter::with_capacity(1 << 20, File::create_new(path).map_err(io)?);
    w.write_all(&head).map_err(io)?;
    let mut row = Vec::new();
    for t in tensors {
        row.clear();
        row.resize(t.format.row_bytes(t.cols()), 0);
        let part_rows = t.rows() / t.parts.len();
        for &part in &t.parts {
            for r in 0..part_rows {
                fill(part, r, &mut row)?;
                w.write_all(&row).map_err(io)?;
            }
        }
        let pad = aligned(t.bytes()) - t.bytes();
        w.write_all(&vec![0; pad as usize]).map_err(io)?;
    }
    w.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)
}

fn aligned(x: u64) -> u64 {
    x.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// GGUF's value type id (gguf-py's `GGUFValueType`).
fn type_id(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_string(out, s),
        GgufValue::Array(items) => {
            // An empty array is written as an array of u32.
            let item_type = items.first().map_or(4, type_id);
            out.extend_from_slice(&item_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf::GgufFile;

    /// What the writer writes, the reader reads back: every value type, dimensions, types,
    /// aligned offsets and the rows of a stacked tensor in part order.
    #[test]
    fn written_files_read_back() {
        let dir = std::env::temp_dir().join(format!("wmoe-gguf-write-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.gguf");
        let metadata = vec![
            ("a.u32".to_string(), GgufValue::U32(7)),
            ("a.f32".to_string(), GgufValue::F32(1.5)),
            ("a.bool".to_string(), GgufValue::Bool(true)),
            ("a.str".to_string(), GgufValue::String("lfm2".into())),
            (
                "a.arr".to_string(),
                GgufValue::Array(vec![GgufValue::I32(0), GgufValue::I32(-2)]),
            ),
        ];
        let tensors = vec![
            GgufOutTensor {
                name: "norm.weight".into(),
                ne: vec![3],
                format: WeightFormat::F32,
                parts: vec![0],
            },
            GgufOutTensor {
                name: "exps.weight".into(),
                ne: vec![32, 2, 2],
                format: WeightFormat::Q8_0,
                parts: vec![1, 2],
            },
        ];
        write_gguf(&path, &metadata, &tensors, |part, row, out| {
            out.fill((part * 16 + row) as u8);
            Ok(())
        })
        .unwrap();
        let g = GgufFile::open(&path).unwrap();
        assert_eq!(g.metadata(), &metadata[..]);
        let exps = g.tensor("exps.weight").unwrap();
        assert_eq!(exps.ne, vec![32, 2, 2]);
        assert_eq!(exps.offset % DEFAULT_ALIGNMENT, 0);
        let data = g.raw_data(exps).unwrap();
        let firsts: Vec<u8> = data.chunks(34).map(|b| b[0]).collect();
        assert_eq!(firsts, vec![16, 17, 32, 33]);
        assert_eq!(
            g.raw_data(g.tensor("norm.weight").unwrap()).unwrap(),
            &[0; 12]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
