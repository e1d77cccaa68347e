//! Decode attention for CPU devices with subgroups: one subgroup-sized workgroup per (kv head,
//! key split), each lane holding a slice of the head dims of every query head of the GQA group
//! in registers. Per key, the lanes read their slice of the K row once for all heads, a
//! subgroup sum gives the scores, and they add their slice of the V row: no workgroup memory,
//! no barriers, and no value read at one address by every lane (which a CPU rasterizer loads
//! lane by lane). Called by `attention::record` for single-token calls, with its partials and
//! merge; its CPU reference is `attention::reference`.

use super::Heads;
use crate::gpu::Defines;

pub const SOURCE: &str = concat!(
    include_str!("../../shaders/kv_cache.wgsl"),
    include_str!("../../shaders/attention_params.wgsl"),
    include_str!("../../shaders/attention_decode.wgsl")
);

/// Lanes of the workgroup: the profile takes this kernel only where every subgroup has at
/// least this many, so that one subgroup sum covers the workgroup.
pub const LANES: u32 = crate::gpu::KEY_LANES;

/// Whether the kernel covers `heads`: each lane takes a whole number of 4-dim slices.
pub fn supports(heads: Heads) -> bool {
    heads.head_dim.is_multiple_of(4 * LANES)
}

/// The shader defines (`split`: it writes partials).
pub fn defines(heads: Heads, split: bool) -> Defines {
    heads
        .kv
        .defines()
        .uint("WG", LANES)
        .uint("HD", heads.head_dim)
        .uint("GROUP", heads.n_heads / heads.n_kv)
        .flag_if(split, "SPLIT")
}

/// Workgroups of one page's dispatch: kv heads × key splits.
pub fn grid(heads: Heads, splits: u32) -> [u32; 3] {
    [heads.n_kv, 1, splits]
}
