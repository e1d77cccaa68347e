//! Weight formats on the host, with no GPU in sight: float (f32, f16, bf16) and GGUF block
//! quantizations (q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q5_K, q6_K). Each has a canonical byte
//! layout (GGUF's, block after block), a quantizer and a dequantizer, together a `Codec` in
//! its family's file (float, legacy, k_quants); `WeightFormat::codec` is the table of them.
//! The GPU row layouts, repacking and shader loaders live in src/gpu/formats.rs.

mod float;
mod k_quants;
mod legacy;

use half::f16;

/// Element format of a weight matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
    /// q6_K re-encoded for CPU devices (never a file format): per 32 weights, two f32
    /// sub-block scales (d · scale, exact in f32) and 32 biased 6-bit quants as bytes. 10 bits
    /// per weight instead of 6.56, but the decode matvec reads 2.5 vector loads per 32 weights
    /// instead of 6 and masks quants in place (docs/PERF.md). Results equal q6_K's. Its
    /// canonical bytes are q6_K's (src/gpu/formats.rs re-encodes them).
    Q6KWide,
}

pub const ALL_FORMATS: [WeightFormat; 11] = [
    WeightFormat::F32,
    WeightFormat::F16,
    WeightFormat::Bf16,
    WeightFormat::Q8_0,
    WeightFormat::Q4_0,
    WeightFormat::Q4_1,
    WeightFormat::Q5_0,
    WeightFormat::Q5_1,
    WeightFormat::Q4K,
    WeightFormat::Q5K,
    WeightFormat::Q6K,
];

/// One format's row of the table: its name, canonical block and codec.
struct Codec {
    name: &'static str,
    /// Elements per block (1 for float formats).
    block_elems: usize,
    /// Bytes per block in the canonical (GGUF) layout.
    block_bytes: usize,
    /// Encodes values (a whole number of blocks) into canonical bytes.
    quantize: fn(&[f32], &mut [u8]),
    /// Decodes canonical bytes (a whole number of blocks), appending the values to `out`.
    dequantize: fn(&[u8], &mut Vec<f32>),
}

impl WeightFormat {
    /// The table: every format's name, block layout and codec.
    fn codec(self) -> Codec {
        use WeightFormat::*;
        match self {
            F32 => float::F32,
            F16 => float::F16,
            Bf16 => float::BF16,
            Q8_0 => legacy::Q8_0,
            Q4_0 => legacy::Q4_0,
            Q4_1 => legacy::Q4_1,
            Q5_0 => legacy::Q5_0,
            Q5_1 => legacy::Q5_1,
            Q4K => k_quants::Q4_K,
            Q5K => k_quants::Q5_K,
            Q6K => k_quants::Q6_K,
            Q6KWide => Codec {
                name: "q6_k_wide",
                ..k_quants::Q6_K
            },
        }
    }

    pub fn name(self) -> &'static str {
        self.codec().name
    }

    /// Parses a name as `name()` writes it (case-insensitive).
    pub fn from_name(s: &str) -> Option<Self> {
        ALL_FORMATS
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
    }

    pub fn is_quantized(self) -> bool {
        !matches!(
            self,
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::Bf16
        )
    }

    /// Elements per block (1 for float formats).
    pub fn block_elems(self) -> usize {
        self.codec().block_elems
    }

    /// Bytes per block in the canonical (GGUF) layout.
    pub fn block_bytes(self) -> usize {
        self.codec().block_bytes
    }

    /// Whether a row of `cols` elements is a whole number of blocks.
    pub fn fits(self, cols: usize) -> bool {
        cols.is_multiple_of(self.block_elems())
    }

    /// Canonical bytes of one row of `cols` elements (`cols` must fit).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_elems() * self.block_bytes()
    }

    /// Decodes one canonical row of `cols` elements to f32.
    pub fn dequant_row(self, src: &[u8], cols: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(cols);
        (self.codec().dequantize)(&src[..self.row_bytes(cols)], &mut out);
        out
    }

    /// Encodes `vals` (a whole number of blocks) into canonical bytes.
    pub fn quantize_row(self, vals: &[f32], dst: &mut [u8]) {
        (self.codec().quantize)(vals, dst)
    }
}

/// Applies `f` to each block of `E` values and its `B` canonical bytes.
fn encode_blocks<const E: usize, const B: usize>(
    vals: &[f32],
    dst: &mut [u8],
    f: impl Fn(&[f32; E], &mut [u8; B]),
) {
    for (x, blk) in vals.chunks_exact(E).zip(dst.chunks_exact_mut(B)) {
        f(x.try_into().unwrap(), blk.try_into().unwrap());
    }
}

/// Applies `f` to each block of `B` canonical bytes, appending its values to `out`.
fn decode_blocks<const B: usize>(
    src: &[u8],
    out: &mut Vec<f32>,
    f: impl Fn(&[u8; B], &mut Vec<f32>),
) {
    for blk in src.chunks_exact(B) {
        f(blk.try_into().unwrap(), out);
    }
}

/// The f16 at byte `i` of `b`.
fn get_f16(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn put_f16(dst: &mut [u8], v: f32) {
    dst[..2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// The value of largest magnitude, with its sign (ggml's reference quantizers scale by it).
fn signed_absmax(x: &[f32]) -> f32 {
    x.iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::Rng;

    /// Quantize → dequantize stays within each format's expected error, and float formats
    /// round-trip to their own rounding.
    #[test]
    fn quantizers_round_trip_within_their_precision() {
        let mut rng = Rng::new(7);
        let cols = 512;
        let x = rng.normals(cols, 1.0);
        let norm: f32 = x.iter().map(|v| v * v).sum();
        for (f, bound) in [
            (WeightFormat::F32, 1e-12f32),
            (WeightFormat::F16, 1e-6),
            (WeightFormat::Bf16, 3e-5),
            (WeightFormat::Q8_0, 1e-4),
            (WeightFormat::Q6K, 1e-3),
            (WeightFormat::Q5_0, 3e-3),
            (WeightFormat::Q5_1, 3e-3),
            (WeightFormat::Q4_0, 1.5e-2),
            (WeightFormat::Q4K, 1.5e-2),
            (WeightFormat::Q4_1, 1.5e-2),
            (WeightFormat::Q5K, 4e-3),
        ] {
            let mut buf = vec![0u8; f.row_bytes(cols)];
            f.quantize_row(&x, &mut buf);
            let y = f.dequant_row(&buf, cols);
            let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / norm;
            assert!(err < bound, "{}: relative squared error {err}", f.name());
        }
    }
}
