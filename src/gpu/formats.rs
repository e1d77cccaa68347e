//! Weight formats: float (f32, f16, bf16) and GGUF block quantizations (q8_0, q4_0, q4_1,
//! q5_0, q5_1, q4_K, q5_K, q6_K). Each has a canonical byte layout (GGUF's, block after block) and
//! a GPU row layout the shaders read as `array<u32>`. Blocks that are not 4-byte aligned are
//! repacked per row into separate aligned arrays: `[f16 scales, padded to a word][the rest]`.
//! Host-side quantizers, dequantizers and the repacking live here, beside the layouts, and
//! the table of each format's shader loaders (shaders/formats/).

use half::{bf16, f16};

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
    /// instead of 6 and masks quants in place (docs/PERF.md). Results equal q6_K's.
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

/// Every GPU row layout: the file formats plus the CPU-device re-encodings.
pub const GPU_FORMATS: [WeightFormat; 12] = {
    let mut all = [WeightFormat::Q6KWide; 12];
    let mut i = 0;
    while i < ALL_FORMATS.len() {
        all[i] = ALL_FORMATS[i];
        i += 1;
    }
    all
};

/// What every format's loaders share (row and tile addressing, units, masked dots).
const COMMON_WGSL: &str = include_str!("../../shaders/formats/common.wgsl");

/// `kernel` (a matrix kernel's WGSL) after the weight loaders: the common file, then every
/// GPU format's file under its own `#ifdef` guard, so a variant's format define keeps one.
pub fn with_weight_loaders(kernel: &str) -> String {
    let mut source = String::from(COMMON_WGSL);
    for f in GPU_FORMATS {
        let (define, wgsl) = f.shader();
        source += &format!("#ifdef {define}\n{wgsl}\n#endif\n");
    }
    source + kernel
}

impl WeightFormat {
    /// The shader define selecting this format and its loaders (w_load, w_unit, w_unit4,
    /// w_dot, w_dot_pair; shaders/formats/common.wgsl): the one table a GPU layout joins.
    fn shader(self) -> (&'static str, &'static str) {
        use WeightFormat::*;
        macro_rules! wgsl {
            ($file:literal) => {
                include_str!(concat!("../../shaders/formats/", $file))
            };
        }
        match self {
            F32 => ("W_F32", wgsl!("f32.wgsl")),
            F16 => ("W_F16", wgsl!("f16.wgsl")),
            Bf16 => ("W_BF16", wgsl!("bf16.wgsl")),
            Q8_0 => ("W_Q8_0", wgsl!("q8_0.wgsl")),
            Q4_0 => ("W_Q4_0", wgsl!("q4_0.wgsl")),
            Q4_1 => ("W_Q4_1", wgsl!("q4_1.wgsl")),
            Q5_0 => ("W_Q5_0", wgsl!("q5_0.wgsl")),
            Q5_1 => ("W_Q5_1", wgsl!("q5_1.wgsl")),
            Q4K => ("W_Q4_K", wgsl!("q4_k.wgsl")),
            Q5K => ("W_Q5_K", wgsl!("q5_k.wgsl")),
            Q6K => ("W_Q6_K", wgsl!("q6_k.wgsl")),
            Q6KWide => ("W_Q6_K_WIDE", wgsl!("q6_k_wide.wgsl")),
        }
    }

    /// The shader define selecting this format's loader.
    pub fn define(self) -> &'static str {
        self.shader().0
    }

    pub fn name(self) -> &'static str {
        use WeightFormat::*;
        match self {
            F32 => "f32",
            F16 => "f16",
            Bf16 => "bf16",
            Q8_0 => "q8_0",
            Q4_0 => "q4_0",
            Q4_1 => "q4_1",
            Q5_0 => "q5_0",
            Q5_1 => "q5_1",
            Q4K => "q4_k",
            Q5K => "q5_k",
            Q6K => "q6_k",
            Q6KWide => "q6_k_wide",
        }
    }

    /// Parses a name as `name()` writes it (case-insensitive).
    pub fn from_name(s: &str) -> Option<Self> {
        ALL_FORMATS
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
    }

    /// Whether the decode matvec dots this format's quants masked in place against
    /// pre-scaled activations (`MASKED_DOT` in the shaders).
    pub fn masked_dot(self) -> bool {
        matches!(
            self,
            WeightFormat::Q4_0 | WeightFormat::Q4K | WeightFormat::Q6K | WeightFormat::Q6KWide
        )
    }

    /// The format whose canonical (file) bytes this one's GPU rows are built from.
    pub fn canonical(self) -> Self {
        match self {
            WeightFormat::Q6KWide => WeightFormat::Q6K,
            f => f,
        }
    }

    /// The GPU layout for weights of this format on a device: q6_K becomes `Q6KWide` on CPU
    /// devices.
    pub fn on_device(self, cpu: bool) -> Self {
        match self {
            WeightFormat::Q6K if cpu => WeightFormat::Q6KWide,
            f => f,
        }
    }

    pub fn is_quantized(self) -> bool {
        !matches!(
            self,
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::Bf16
        )
    }

    /// Elements per block (1 for float formats).
    pub fn block_elems(self) -> usize {
        use WeightFormat::*;
        match self {
            F32 | F16 | Bf16 => 1,
            Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1 => 32,
            Q4K | Q5K | Q6K | Q6KWide => 256,
        }
    }

    /// Bytes per block in the canonical (GGUF) layout.
    pub fn block_bytes(self) -> usize {
        use WeightFormat::*;
        match self {
            F32 => 4,
            F16 | Bf16 => 2,
            Q8_0 => 34,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q4K => 144,
            Q5K => 176,
            Q6K | Q6KWide => 210,
        }
    }

    /// Whether a row of `cols` elements is a whole number of blocks.
    pub fn fits(self, cols: usize) -> bool {
        cols.is_multiple_of(self.block_elems())
    }

    /// Canonical bytes of one row of `cols` elements (`cols` must fit).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_elems() * self.block_bytes()
    }

    /// u32 words one row occupies on the GPU.
    pub fn row_words(self, cols: usize) -> usize {
        use WeightFormat::*;
        let nb = cols / self.block_elems();
        let scales = nb.div_ceil(2);
        match self {
            F32 => cols,
            F16 | Bf16 => cols.div_ceil(2),
            Q8_0 => scales + nb * 8,
            Q4_0 => scales + nb * 4,
            Q4_1 => nb * 5,
            Q5_0 => scales + nb * 5,
            Q5_1 => nb * 6,
            Q4K => nb * 36,
            Q5K => nb * 44,
            Q6K => scales + nb * 52,
            Q6KWide => cols / 32 * 10,
        }
    }

    /// Whether every 4-word group `w_unit4` reads from rows of `cols` elements starts on a
    /// 16-byte boundary, so the shader may read them as vec4 loads (`W_VEC4`).
    pub fn quads_aligned(self, cols: usize) -> bool {
        use WeightFormat::*;
        let nb = cols / self.block_elems();
        let body = match self {
            F32 | F16 | Bf16 | Q4K => 0,
            Q8_0 | Q4_0 | Q6K => nb.div_ceil(2),
            Q6KWide => cols / 32 * 2,
            Q4_1 | Q5_0 | Q5_1 | Q5K => return false,
        };
        self.row_words(cols).is_multiple_of(4) && body.is_multiple_of(4)
    }

    /// Whether rows of `cols` elements may be stored in row tiles (src/gpu/weights.rs): whole
    /// 8-word chunks per row, and every word group the shaders read as a quad inside one chunk.
    pub fn tileable(self, cols: usize) -> bool {
        use WeightFormat::*;
        let quads = !matches!(self, Q4_1 | Q5_0 | Q5_1 | Q5K);
        self.row_words(cols).is_multiple_of(8) && (!quads || self.quads_aligned(cols))
    }

    /// Whether row tiles speed this format's matvec up on CPU devices: measured for the
    /// 4-bit formats whose lanes read at most one chunk of a row per step; q8_0 and
    /// `Q6KWide` (16 words per step) ran as fast or slower tiled (docs/PERF.md).
    pub fn tiles_pay(self) -> bool {
        matches!(self, WeightFormat::Q4_0 | WeightFormat::Q4K)
    }

    /// Rewrites one canonical row into the GPU row layout (`dst` is `row_words * 4` bytes, zeroed).
    pub fn repack_row(self, src: &[u8], cols: usize, dst: &mut [u8]) {
        use WeightFormat::*;
        let bb = self.block_bytes();
        let nb = cols / self.block_elems();
        let split = |dst: &mut [u8], scale_bytes: usize| {
            // f16 scale first in each block, then `bb - scale_bytes` payload bytes.
            let body0 = nb.div_ceil(2) * 4;
            let body = bb - scale_bytes;
            for b in 0..nb {
                let blk = &src[b * bb..(b + 1) * bb];
                let (s, rest) = if self == Q6K {
                    (&blk[208..210], &blk[..208])
                } else {
                    (&blk[..2], &blk[2..])
                };
                dst[b * 2..b * 2 + 2].copy_from_slice(s);
                dst[body0 + b * body..body0 + (b + 1) * body].copy_from_slice(rest);
            }
        };
        match self {
            F32 | F16 | Bf16 | Q4_1 | Q5_1 | Q4K | Q5K => dst[..src.len()].copy_from_slice(src),
            Q8_0 | Q4_0 | Q6K => split(dst, 2),
            Q6KWide => {
                // [f32 scale of each 16 weights][one byte per biased quant]
                let body0 = cols / 32 * 8;
                for b in 0..nb {
                    let blk = &src[b * bb..(b + 1) * bb];
                    let d = f16::from_le_bytes([blk[208], blk[209]]).to_f32();
                    for j in 0..256 {
                        let (n, quarter, l) = (j / 128, (j % 128) / 32, j % 32);
                        let e = b * 256 + j;
                        if l % 16 == 0 {
                            let sc = d * blk[192 + n * 8 + l / 16 + 2 * quarter] as i8 as f32;
                            dst[e / 16 * 4..e / 16 * 4 + 4].copy_from_slice(&sc.to_le_bytes());
                        }
                        let byte = blk[n * 64 + l + 32 * (quarter & 1)];
                        let lo = if quarter < 2 { byte & 15 } else { byte >> 4 };
                        let hi = (blk[128 + n * 32 + l] >> (2 * quarter)) & 3;
                        dst[body0 + e] = lo | hi << 4;
                    }
                }
            }
            Q5_0 => {
                // [scales][qh words][qs]
                let body0 = nb.div_ceil(2) * 4;
                for b in 0..nb {
                    let blk = &src[b * 22..(b + 1) * 22];
                    dst[b * 2..b * 2 + 2].copy_from_slice(&blk[..2]);
                    dst[body0 + b * 4..body0 + b * 4 + 4].copy_from_slice(&blk[2..6]);
                    let qs0 = body0 + nb * 4 + b * 16;
                    dst[qs0..qs0 + 16].copy_from_slice(&blk[6..22]);
                }
            }
        }
    }

    /// Decodes one canonical row of `cols` elements to f32.
    pub fn dequant_row(self, src: &[u8], cols: usize) -> Vec<f32> {
        use WeightFormat::*;
        let h = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        let mut out = Vec::with_capacity(cols);
        match self {
            F32 => out.extend(
                src[..cols * 4]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            F16 => out.extend(
                src[..cols * 2]
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            Bf16 => out.extend(
                src[..cols * 2]
                    .chunks_exact(2)
                    .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            _ => {
                for blk in src[..self.row_bytes(cols)].chunks_exact(self.block_bytes()) {
                    match self {
                        Q8_0 => out.extend(blk[2..34].iter().map(|&q| h(blk, 0) * q as i8 as f32)),
                        Q4_0 => {
                            let d = h(blk, 0);
                            out.extend(blk[2..18].iter().map(|&q| ((q & 15) as f32 - 8.0) * d));
                            out.extend(blk[2..18].iter().map(|&q| ((q >> 4) as f32 - 8.0) * d));
                        }
                        Q4_1 => {
                            let (d, m) = (h(blk, 0), h(blk, 2));
                            out.extend(blk[4..20].iter().map(|&q| (q & 15) as f32 * d + m));
                            out.extend(blk[4..20].iter().map(|&q| (q >> 4) as f32 * d + m));
                        }
                        Q5_1 => {
                            let (d, m) = (h(blk, 0), h(blk, 2));
                            let qh = u32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]);
                            for e in 0..32 {
                                let byte = blk[8 + e % 16];
                                let lo = if e < 16 { byte & 15 } else { byte >> 4 } as u32;
                                out.push((lo | ((qh >> e) & 1) << 4) as f32 * d + m);
                            }
                        }
                        Q5_0 => {
                            let d = h(blk, 0);
                            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                            for e in 0..32 {
                                let byte = blk[6 + e % 16];
                                let lo = if e < 16 { byte & 15 } else { byte >> 4 } as u32;
                                let q = lo | ((qh >> e) & 1) << 4;
                                out.push((q as f32 - 16.0) * d);
                            }
                        }
                        Q4K | Q5K => {
                            let (d, dmin) = (h(blk, 0), h(blk, 2));
                            let scales = &blk[4..16];
                            let (qh, qs) = if self == Q5K {
                                (&blk[16..48], &blk[48..176])
                            } else {
                                (&blk[..0], &blk[16..144])
                            };
                            for j in 0..256 {
                                let (c, l) = (j / 64, j % 64);
                                let (sc, m) = k_scale_min(scales, 2 * c + usize::from(l >= 32));
                                let byte = qs[c * 32 + l % 32];
                                let mut q = if l < 32 { byte & 15 } else { byte >> 4 } as u32;
                                if self == Q5K {
                                    let u = if l < 32 {
                                        1u8 << (2 * c)
                                    } else {
                                        2u8 << (2 * c)
                                    };
                                    q += if qh[l % 32] & u != 0 { 16 } else { 0 };
                                }
                                out.push(d * sc as f32 * q as f32 - dmin * m as f32);
                            }
                        }
                        Q6K | Q6KWide => {
                            let d = h(blk, 208);
                            let (ql, qh, sc) = (&blk[..128], &blk[128..192], &blk[192..208]);
                            for j in 0..256 {
                                let (n, r) = (j / 128, j % 128);
                                let (quarter, l) = (r / 32, r % 32);
                                let byte = ql[n * 64 + l + 32 * (quarter & 1)];
                                let lo = if quarter < 2 { byte & 15 } else { byte >> 4 };
                                let hi = (qh[n * 32 + l] >> (2 * quarter)) & 3;
                                let q = (lo | hi << 4) as i32 - 32;
                                out.push(
                                    d * sc[n * 8 + l / 16 + 2 * quarter] as i8 as f32 * q as f32,
                                );
                            }
                        }
                        F32 | F16 | Bf16 => unreachable!(),
                    }
                }
            }
        }
        out
    }

    /// Whether `quantize_row` can produce this format (all can).
    pub fn can_quantize(self) -> bool {
        true
    }

    /// Encodes `vals` (a whole number of blocks) into canonical bytes.
    pub fn quantize_row(self, vals: &[f32], dst: &mut [u8]) {
        use WeightFormat::*;
        match self {
            F32 => dst[..vals.len() * 4].copy_from_slice(bytemuck::cast_slice(vals)),
            F16 => {
                for (v, o) in vals.iter().zip(dst.chunks_exact_mut(2)) {
                    o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
                }
            }
            Bf16 => {
                for (v, o) in vals.iter().zip(dst.chunks_exact_mut(2)) {
                    o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
                }
            }
            _ => {
                let (be, bb) = (self.block_elems(), self.block_bytes());
                for (x, blk) in vals.chunks_exact(be).zip(dst.chunks_exact_mut(bb)) {
                    match self {
                        Q8_0 => quantize_q8_0(x, blk),
                        Q4_0 => quantize_q4_0(x, blk),
                        Q4_1 => quantize_q4_1(x, blk),
                        Q5_0 => quantize_q5_0(x, blk),
                        Q5_1 => quantize_q5_1(x, blk),
                        Q4K => quantize_k(x, blk, 4),
                        Q5K => quantize_k(x, blk, 5),
                        Q6K | Q6KWide => quantize_q6_k(x, blk),
                        F32 | F16 | Bf16 => unreachable!(),
                    }
                }
            }
        }
    }
}

/// The 6-bit (scale, min) of sub-block `is` from a k-quant's 12 packed scale bytes.
fn k_scale_min(s: &[u8], is: usize) -> (u8, u8) {
    if is < 4 {
        (s[is] & 63, s[is + 4] & 63)
    } else {
        (
            (s[is + 4] & 15) | ((s[is - 4] >> 6) << 4),
            (s[is + 4] >> 4) | ((s[is] >> 6) << 4),
        )
    }
}

fn put_f16(dst: &mut [u8], v: f32) {
    dst[..2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// The value of largest magnitude, with its sign (ggml's reference quantizers scale by it).
fn signed_absmax(x: &[f32]) -> f32 {
    x.iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
}

fn quantize_q8_0(x: &[f32], blk: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(blk, d);
    for (q, v) in blk[2..34].iter_mut().zip(x) {
        *q = (v * id).round() as i8 as u8;
    }
}

fn quantize_q4_0(x: &[f32], blk: &mut [u8]) {
    let d = signed_absmax(x) / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(blk, d);
    let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
    for j in 0..16 {
        blk[2 + j] = q(x[j]) | q(x[j + 16]) << 4;
    }
}

fn quantize_q5_0(x: &[f32], blk: &mut [u8]) {
    let d = signed_absmax(x) / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(blk, d);
    let q = |v: f32| ((v * id + 16.5) as i32).clamp(0, 31) as u32;
    let mut qh = 0u32;
    for j in 0..16 {
        let (a, b) = (q(x[j]), q(x[j + 16]));
        blk[6 + j] = (a & 15) as u8 | ((b & 15) as u8) << 4;
        qh |= (a >> 4) << j | (b >> 4) << (j + 16);
    }
    blk[2..6].copy_from_slice(&qh.to_le_bytes());
}

fn quantize_q4_1(x: &[f32], blk: &mut [u8]) {
    let lo = x.iter().fold(f32::MAX, |m, &v| m.min(v));
    let hi = x.iter().fold(f32::MIN, |m, &v| m.max(v));
    let d = (hi - lo) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(&mut blk[0..2], d);
    put_f16(&mut blk[2..4], lo);
    let q = |v: f32| (((v - lo) * id + 0.5) as i32).clamp(0, 15) as u8;
    for j in 0..16 {
        blk[4 + j] = q(x[j]) | q(x[j + 16]) << 4;
    }
}

fn quantize_q5_1(x: &[f32], blk: &mut [u8]) {
    let lo = x.iter().fold(f32::MAX, |m, &v| m.min(v));
    let hi = x.iter().fold(f32::MIN, |m, &v| m.max(v));
    let d = (hi - lo) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(&mut blk[0..2], d);
    put_f16(&mut blk[2..4], lo);
    let q = |v: f32| (((v - lo) * id + 0.5) as i32).clamp(0, 31) as u32;
    let mut qh = 0u32;
    for j in 0..16 {
        let (a, b) = (q(x[j]), q(x[j + 16]));
        blk[8 + j] = (a & 15) as u8 | ((b & 15) as u8) << 4;
        qh |= (a >> 4) << j | (b >> 4) << (j + 16);
    }
    blk[4..8].copy_from_slice(&qh.to_le_bytes());
}

/// q4_K (`bits` 4) and q5_K (`bits` 5).
fn quantize_k(x: &[f32], blk: &mut [u8], bits: u32) {
    // Per 32-element sub-block: scale = (max − min) / (2^bits − 1) and offset −min (min ≤ 0);
    // both quantized to 6 bits against the super-block's d and dmin.
    let levels = ((1u32 << bits) - 1) as f32;
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for (i, sub) in x.chunks_exact(32).enumerate() {
        let lo = sub.iter().fold(0f32, |m, &v| m.min(v));
        let hi = sub.iter().fold(f32::MIN, |m, &v| m.max(v));
        scales[i] = (hi - lo) / levels;
        mins[i] = -lo;
    }
    let d = scales.iter().fold(0f32, |m, &v| m.max(v)) / 63.0;
    let dmin = mins.iter().fold(0f32, |m, &v| m.max(v)) / 63.0;
    let (d16, dmin16) = (f16::from_f32(d).to_f32(), f16::from_f32(dmin).to_f32());
    put_f16(&mut blk[0..2], d);
    put_f16(&mut blk[2..4], dmin);
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for i in 0..8 {
        sc[i] = if d16 > 0.0 {
            (scales[i] / d16).round().clamp(0.0, 63.0) as u8
        } else {
            0
        };
        mn[i] = if dmin16 > 0.0 {
            (mins[i] / dmin16).round().clamp(0.0, 63.0) as u8
        } else {
            0
        };
    }
    let s = &mut blk[4..16];
    for j in 0..4 {
        s[j] = sc[j] | (sc[j + 4] >> 4) << 6;
        s[j + 4] = mn[j] | (mn[j + 4] >> 4) << 6;
        s[j + 8] = (sc[j + 4] & 15) | (mn[j + 4] & 15) << 4;
    }
    let mut q = [0u8; 256];
    for (j, v) in x.iter().enumerate() {
        let i = j / 32;
        let step = d16 * sc[i] as f32;
        let off = dmin16 * mn[i] as f32;
        q[j] = if step > 0.0 {
            ((v + off) / step).round().clamp(0.0, levels) as u8
        } else {
            0
        };
    }
    let qs0 = if bits == 5 { 48 } else { 16 };
    if bits == 5 {
        blk[16..48].fill(0);
    }
    for c in 0..4 {
        for l in 0..32 {
            let (a, b) = (q[c * 64 + l], q[c * 64 + 32 + l]);
            blk[qs0 + c * 32 + l] = (a & 15) | (b & 15) << 4;
            if bits == 5 {
                blk[16 + l] |= (a >> 4) << (2 * c) | (b >> 4) << (2 * c + 1);
            }
        }
    }
}

fn quantize_q6_k(x: &[f32], blk: &mut [u8]) {
    // Per 16-element group: scale = signed absmax / −32 so values map to −32..31; the group
    // scales are int8 against the super-block's d.
    let mut gs = [0f32; 16];
    for (g, sub) in x.chunks_exact(16).enumerate() {
        gs[g] = signed_absmax(sub) / -32.0;
    }
    let amax = gs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let d16 = f16::from_f32(d).to_f32();
    let mut sc = [0i8; 16];
    for g in 0..16 {
        sc[g] = if d16 > 0.0 {
            (gs[g] / d16).round().clamp(-128.0, 127.0) as i8
        } else {
            0
        };
    }
    let mut q = [0u8; 256];
    for (j, v) in x.iter().enumerate() {
        let step = d16 * sc[j / 16] as f32;
        q[j] = if step != 0.0 {
            ((v / step).round().clamp(-32.0, 31.0) + 32.0) as u8
        } else {
            32
        };
    }
    let (ql, rest) = blk.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    let (scales, dd) = rest.split_at_mut(16);
    for n in 0..2 {
        for l in 0..32 {
            let b = n * 128 + l;
            let (q1, q2, q3, q4) = (q[b], q[b + 32], q[b + 64], q[b + 96]);
            ql[n * 64 + l] = (q1 & 15) | (q3 & 15) << 4;
            ql[n * 64 + l + 32] = (q2 & 15) | (q4 & 15) << 4;
            qh[n * 32 + l] = (q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6;
        }
    }
    for g in 0..16 {
        scales[g] = sc[g] as u8;
    }
    put_f16(dd, d);
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
