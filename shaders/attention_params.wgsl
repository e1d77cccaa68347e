// Parameters and bindings shared by the attention kernels (attention, attention_tiled,
// attention_decode): one dispatch covers one page of the KV cache, or one key split of it.
struct Params {
    tokens: u32,
    n_heads: u32,
    n_kv: u32,
    head_dim: u32,
    pos0: u32,
    kv_words: u32,
    scale: f32,
    split_keys: u32,   // keys per workgroup z (SPLIT), else ≥ any page
    page_start: u32,   // first cache position this page holds
    page_end: u32,     // one past its last
    split0: u32,       // SPLIT: this dispatch's first split among all of the query's
    splits_total: u32, // SPLIT: splits of the query over every page
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;        // [T, n_heads · hd]
@group(0) @binding(2) var<storage, read> k_cache: array<u32>;
@group(0) @binding(3) var<storage, read> v_cache: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // [T, n_heads · hd]
