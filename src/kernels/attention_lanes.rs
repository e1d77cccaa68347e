//! Prefill attention for CPU devices: a workgroup of `LANES` lanes takes a block of query rows
//! sharing one kv head, every lane holding all of them in registers, and each lane walks its
//! own keys, reading each K and V row once for the whole block with its own online softmax;
//! the lanes' states merge through workgroup memory at the end. A CPU rasterizer loads
//! storage lane by lane, so what counts there is how many rows each loaded value serves: here
//! `ROWS`, against one in the tiled kernel, whose rows all read each tile value at one address.
//! Called by `attention::record` per page, with the same partials and merge; its CPU reference
//! is `attention::reference`.

use super::Heads;
use crate::gpu::Defines;

pub const SOURCE: &str = concat!(
    include_str!("../../shaders/kv_cache.wgsl"),
    include_str!("../../shaders/attention_params.wgsl"),
    include_str!("../../shaders/attention_lanes.wgsl")
);

/// Lanes of the workgroup (one SIMD vector of a CPU rasterizer).
const LANES: u32 = 8;
/// Query floats each lane holds (and as many output floats): the workgroup's rows are
/// `ROW_FLOATS / head_dim`, 8 at head_dim 64. More rows serve each loaded K/V value more
/// times, but lavapipe's compile time grows faster than the registers: at head_dim 64, 8 rows
/// took ~10 s to compile cold and 1.57 s per 256-token chunk at depth 4096, 16 rows ~35–46 s
/// and 1.12 s, 32 rows ~195 s and 0.73 s (docs/PERF.md).
const ROW_FLOATS: u32 = 512;

/// Query rows per workgroup for heads of `head_dim`.
fn rows(head_dim: u32) -> u32 {
    (ROW_FLOATS / head_dim).clamp(1, 16)
}

/// Whether the kernel covers heads of `head_dim` (K and V rows are read as vec4).
pub fn supports(head_dim: u32) -> bool {
    head_dim.is_multiple_of(4)
}

/// The shader defines (`split`: it writes partials).
pub fn defines(heads: Heads, split: bool) -> Defines {
    heads
        .kv
        .defines()
        .uint("WG", LANES)
        .uint("ROWS", rows(heads.head_dim))
        .uint("HD", heads.head_dim)
        .uint("HD4", heads.head_dim / 4)
        .flag_if(split, "SPLIT")
}

/// Workgroups of one page's dispatch: kv heads × row blocks × key splits.
pub fn grid(heads: Heads, tokens: u32, splits: u32) -> [u32; 3] {
    let rows = tokens * (heads.n_heads / heads.n_kv);
    [
        heads.n_kv,
        rows.div_ceil(self::rows(heads.head_dim)),
        splits,
    ]
}
