//! Weight formats on the GPU: each format's row layout, the repacking of canonical rows into
//! it, the shader loaders (shaders/formats/) and the facts the kernels choose variants by.
//! Rows are read as `array<u32>`; blocks that are not 4-byte aligned are repacked per row into
//! separate aligned arrays: `[f16 scales, padded to a word][the rest]`. The formats
//! themselves, their canonical bytes and host codecs are in src/quant/.

use half::f16;

use crate::quant::{WeightFormat, ALL_FORMATS};

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

    /// Rewrites one canonical row into the GPU row layout (`dst` is `row_words * 4` bytes, zeroed).
    pub fn repack_row(self, src: &[u8], cols: usize, dst: &mut [u8]) {
        use WeightFormat::*;
        match self {
            F32 | F16 | Bf16 | Q4_1 | Q5_1 | Q4K | Q5K => dst[..src.len()].copy_from_slice(src),
            Q8_0 | Q4_0 | Q6K => self.split_scales(src, cols, dst),
            Q6KWide => widen_q6_k(src, cols, dst),
            Q5_0 => split_q5_0(src, cols, dst),
        }
    }

    /// `[f16 scales][the rest of each block]`: each block's f16 scale (the first two bytes, or
    /// q6_K's last two) moved to the front.
    fn split_scales(self, src: &[u8], cols: usize, dst: &mut [u8]) {
        let bb = self.block_bytes();
        let nb = cols / self.block_elems();
        let body0 = nb.div_ceil(2) * 4;
        let body = bb - 2;
        for b in 0..nb {
            let blk = &src[b * bb..(b + 1) * bb];
            let (s, rest) = if self == WeightFormat::Q6K {
                (&blk[208..210], &blk[..208])
            } else {
                (&blk[..2], &blk[2..])
            };
            dst[b * 2..b * 2 + 2].copy_from_slice(s);
            dst[body0 + b * body..body0 + (b + 1) * body].copy_from_slice(rest);
        }
    }
}

/// A q5_0 row as `[f16 scales][fifth-bit words][nibbles]`.
fn split_q5_0(src: &[u8], cols: usize, dst: &mut [u8]) {
    let nb = cols / 32;
    let body0 = nb.div_ceil(2) * 4;
    for b in 0..nb {
        let blk = &src[b * 22..(b + 1) * 22];
        dst[b * 2..b * 2 + 2].copy_from_slice(&blk[..2]);
        dst[body0 + b * 4..body0 + b * 4 + 4].copy_from_slice(&blk[2..6]);
        let qs0 = body0 + nb * 4 + b * 16;
        dst[qs0..qs0 + 16].copy_from_slice(&blk[6..22]);
    }
}

/// A q6_K row re-encoded as `Q6KWide`: `[f32 scale of each 16 weights][one byte per biased
/// quant]`.
fn widen_q6_k(src: &[u8], cols: usize, dst: &mut [u8]) {
    let body0 = cols / 32 * 8;
    for b in 0..cols / 256 {
        let blk = &src[b * 210..(b + 1) * 210];
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
