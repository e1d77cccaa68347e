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
}

impl KvType {
    /// The shader defines selecting this cache type.
    pub fn defines(self) -> Defines {
        Defines::new().flag_if(self == KvType::F32, "KV_F32")
    }

    pub fn bytes(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
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
        self.n_kv * self.head_dim * self.kv.bytes() as u32 / 4
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
