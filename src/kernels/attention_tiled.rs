//! Causal GQA attention tiled over queries and keys: each workgroup takes a block of query
//! rows sharing one kv head (the group's heads of consecutive tokens), loads each K/V tile
//! into workgroup memory once for all of them and runs one online softmax per row. Called by
//! `attention::record` per page (and key split), with the same partials and merge; its CPU
//! reference is `attention::reference`.

use super::Heads;
use crate::gpu::{AttentionTiles, Defines};

pub const SOURCE: &str = concat!(
    include_str!("../../shaders/kv_cache.wgsl"),
    include_str!("../../shaders/attention_params.wgsl"),
    include_str!("../../shaders/attention_tiled.wgsl")
);

/// Workgroup memory the K and V tiles may take (every device wmoe opens has 16 KiB).
const TILE_BYTES: u32 = 16384;

/// Whether the tiled kernel covers heads of `head_dim` (its rows are read as vec4).
pub fn supports(head_dim: u32) -> bool {
    head_dim.is_multiple_of(4)
}

/// Keys per tile for `head_dim`: the profile's, fewer where both tiles would exceed
/// `TILE_BYTES`.
fn tile_keys(tiles: AttentionTiles, head_dim: u32) -> u32 {
    tiles.keys.min(TILE_BYTES / (8 * head_dim)).max(1)
}

/// Threads per query row: 2 where the rows of `tokens` tokens fill at most half of the
/// workgroup (decode: one token × the GQA group), so that the idle threads take half of each
/// tile's keys; else 1. (The ways' states are exchanged through the tiles, which hold a
/// row per key.)
fn key_ways(tiles: AttentionTiles, heads: Heads, tokens: u32) -> u32 {
    let rows = tokens * (heads.n_heads / heads.n_kv);
    let half = tiles.rows / 2;
    if rows <= half && half * 2 == tiles.rows && half <= tile_keys(tiles, heads.head_dim) {
        2
    } else {
        1
    }
}

/// The shader defines of a variant for chunks of `tokens` tokens (`split`: it writes
/// partials).
pub fn defines(tiles: AttentionTiles, heads: Heads, tokens: u32, split: bool) -> Defines {
    let ways = key_ways(tiles, heads, tokens);
    heads
        .kv
        .defines()
        .uint("WG", tiles.rows)
        .uint("KWAYS", ways)
        .flag_if(ways > 1, "WAYS")
        .uint("BK", tile_keys(tiles, heads.head_dim))
        .uint("HD", heads.head_dim)
        .flag_if(split, "SPLIT")
}

/// Workgroups of one page's dispatch: kv heads × row blocks × key splits.
pub fn grid(tiles: AttentionTiles, heads: Heads, tokens: u32, splits: u32) -> [u32; 3] {
    let rows = tokens * (heads.n_heads / heads.n_kv);
    let per_group = tiles.rows / key_ways(tiles, heads, tokens);
    [heads.n_kv, rows.div_ceil(per_group), splits]
}
