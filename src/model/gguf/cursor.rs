//! Bounds-checked little-endian reads from a GGUF header, metadata values included; errors
//! say what was being read and where.

use super::value::GgufValue;

/// Bounds-checked little-endian reads from the header.
pub(super) struct Cursor<'a> {
    pub(super) b: &'a [u8],
    pub(super) pos: usize,
}

/// The most elements a metadata array may hold (a vocabulary has a few hundred thousand).
const MAX_ARRAY: u64 = 1 << 24;

/// A header read; the error says what was read and where, the caller adds the file.
pub(super) type Parse<T> = std::result::Result<T, String>;

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
    pub(super) fn u32(&mut self, what: &str) -> Parse<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    pub(super) fn u64(&mut self, what: &str) -> Parse<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    pub(super) fn string(&mut self, what: &str) -> Parse<String> {
        let n = self.u64(what)?;
        let n = usize::try_from(n).map_err(|_| format!("{what}: length {n} is too large"))?;
        let b = self.take(n, what)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }
    pub(super) fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    pub(super) fn value(&mut self, ty: u32, depth: usize, what: &str) -> Parse<GgufValue> {
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
                if n > MAX_ARRAY {
                    return Err(format!(
                        "{what}: an array of {n} elements is more than the {MAX_ARRAY} wmoe reads"
                    ));
                }
                let mut v = Vec::with_capacity(n.min(1 << 16) as usize);
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
