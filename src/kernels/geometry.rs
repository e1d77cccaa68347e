//! Types several kernels share: attention head geometry with the KV cache element type, the
//! KV cache's pages, and the per-expert pair lists the gather kernel writes and the grouped
//! products read.

use std::ops::RangeInclusive;

use crate::gpu::{Binding, Defines};

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum KvType {
    /// Half the memory; rounding K and V to f16 costs ~1e-3 relative in logits.
    #[default]
    F16,
    /// Exact f32 cache, for reference comparisons and long-context precision.
    F32,
    /// llama.cpp's q8_0 (`-ctk/-ctv q8_0`): blocks of 32 values as int8 times an f16 scale,
    /// 8.5 bits a value where head_dim is a multiple of 64 (blocks go in pairs per head; a
    /// head's last block or pair may be partly padding).
    Q8_0,
}

/// Words a pair of q8_0 blocks takes: both f16 scales, then 2 × 32 int8.
const Q8_0_PAIR_WORDS: usize = 17;

impl KvType {
    /// The shader defines selecting this cache type.
    pub fn defines(self) -> Defines {
        Defines::new()
            .flag_if(self == KvType::F32, "KV_F32")
            .flag_if(self == KvType::Q8_0, "KV_Q8_0")
    }

    /// The name `--kv-type` takes.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
            KvType::Q8_0 => "q8_0",
        }
    }

    /// u32 words one kv head of `head_dim` takes at one position (shaders/kv_cache.wgsl).
    pub fn head_words(self, head_dim: usize) -> usize {
        match self {
            KvType::F16 => head_dim / 2,
            KvType::F32 => head_dim,
            KvType::Q8_0 => head_dim.div_ceil(64) * Q8_0_PAIR_WORDS,
        }
    }

    /// Cache rows (kv heads of `head_dim`, positions after each other) as the cache stores
    /// them (shaders/kv_cache.wgsl).
    pub fn encode(self, x: &[f32], head_dim: usize) -> Vec<u32> {
        match self {
            KvType::F16 => x
                .chunks(2)
                .map(|p| {
                    half::f16::from_f32(p[0]).to_bits() as u32
                        | (half::f16::from_f32(p[1]).to_bits() as u32) << 16
                })
                .collect(),
            KvType::F32 => x.iter().map(|v| v.to_bits()).collect(),
            KvType::Q8_0 => x.chunks(head_dim).flat_map(q8_0_head).collect(),
        }
    }

    /// The values of cache rows `encode` (or a kernel) wrote.
    pub fn decode(self, words: &[u32], head_dim: usize) -> Vec<f32> {
        match self {
            KvType::F16 => words
                .iter()
                .flat_map(|w| {
                    [
                        half::f16::from_bits(*w as u16).to_f32(),
                        half::f16::from_bits((*w >> 16) as u16).to_f32(),
                    ]
                })
                .collect(),
            KvType::F32 => words.iter().map(|w| f32::from_bits(*w)).collect(),
            KvType::Q8_0 => words
                .chunks(self.head_words(head_dim))
                .flat_map(|head| {
                    (0..head_dim).map(move |d| {
                        let pair = &head[d / 64 * Q8_0_PAIR_WORDS..];
                        let scale = half::f16::from_bits((pair[0] >> (16 * (d / 32 % 2))) as u16);
                        let word = pair[1 + (d / 32 % 2) * 8 + d % 32 / 4];
                        scale.to_f32() * (word >> (8 * (d % 4))) as u8 as i8 as f32
                    })
                })
                .collect(),
        }
    }
}

/// One kv head quantized as q8_0 block pairs: llama.cpp's `quantize_row_q8_0` (d = max|x|/127
/// as f16, quants round(x / d) half away from zero); padding past head_dim is zero.
fn q8_0_head(x: &[f32]) -> Vec<u32> {
    let mut out = Vec::new();
    for pair in x.chunks(64) {
        let mut scales = 0u32;
        let mut quants = [0u32; 16];
        for (b, block) in pair.chunks(32).enumerate() {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            scales |= (half::f16::from_f32(d).to_bits() as u32) << (16 * b);
            for (i, v) in block.iter().enumerate() {
                let q = (v * id).round() as i8 as u8 as u32;
                quants[b * 8 + i / 4] |= q << (8 * (i % 4));
            }
        }
        out.push(scales);
        out.extend(quants);
    }
    out
}

/// Head geometry and cache type of the attention kernels.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub n_heads: u32,
    pub n_kv: u32,
    pub head_dim: u32,
    pub kv: KvType,
}

impl Heads {
    /// u32 words one cache position takes.
    pub fn kv_words(&self) -> u32 {
        self.n_kv * self.kv.head_words(self.head_dim as usize) as u32
    }
}

/// One attention layer's KV cache, held in pages: page i holds positions
/// `[i · page_positions, (i + 1) · page_positions)` in `k[i]` and `v[i]`.
pub struct KvPages<'a> {
    pub k: &'a [Binding],
    pub v: &'a [Binding],
    pub page_positions: u32,
}

impl KvPages<'_> {
    /// The page holding position `pos`.
    pub fn page_of(&self, pos: u32) -> u32 {
        pos / self.page_positions
    }

    /// Cache positions `[start, end)` page `i` holds.
    pub fn span(&self, i: u32) -> (u32, u32) {
        let start = i * self.page_positions;
        (start, start.saturating_add(self.page_positions))
    }

    /// First positions `pos0` of a chunk of `tokens` for which the chunk ends in page `last`
    /// (the pages a step reads stay the same).
    pub fn ending_in(&self, last: u32, tokens: u32) -> RangeInclusive<u32> {
        let (start, end) = self.span(last);
        start.saturating_sub(tokens - 1)..=end - tokens
    }
}

/// The per-expert pair lists from `moe_gather`, as the grouped products read them.
pub struct PairLists {
    pub counts: Binding,
    pub offsets: Binding,
    pub pairs: Binding,
    pub n_experts: u32,
    /// Upper bound of rows any one expert receives (the chunk's token count).
    pub max_rows: u32,
    /// X row = pair / x_div.
    pub x_div: u32,
}
