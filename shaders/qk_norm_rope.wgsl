// Attention input prep for a chunk: RMSNorm each q and k head (shared [head_dim] weights),
// NeoX RoPE with host-computed cos/sin, q out as f32, k and v written into one page of the KV
// cache in its type (shaders/kv_cache.wgsl: f16, KV_F32, or KV_Q8_0 blocks quantized by
// q8_0_quantize). Workgroup x is head first_head + x;
// k and v of tokens whose position this page does not hold are left to another dispatch.
struct Params {
    tokens: u32,
    n_heads: u32,
    n_kv: u32,
    head_dim: u32,
    pos0: u32,       // cache position of the chunk's first token
    kv_words: u32,   // u32 words per cache position
    eps: f32,
    first_head: u32, // 0: q, k and v heads; n_heads: k and v heads only
    page_start: u32, // first cache position this page holds
    page_end: u32,   // one past its last
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;     // [T, (n_heads + 2 n_kv) · hd]
@group(0) @binding(2) var<storage, read> q_norm: array<f32>;  // [hd]
@group(0) @binding(3) var<storage, read> k_norm: array<f32>;  // [hd]
@group(0) @binding(4) var<storage, read> rope: array<f32>;    // [T, hd/2, 2] = (cos, sin)
@group(0) @binding(5) var<storage, read_write> q_out: array<f32>; // [T, n_heads · hd]
@group(0) @binding(6) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(7) var<storage, read_write> v_cache: array<u32>;

var<workgroup> xs: array<f32, 256>;
var<workgroup> ys: array<f32, 256>;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head = p.first_head + wid.x;
    let t = wid.y;
    let pos = p.pos0 + t;
    if (head >= p.n_heads && (pos < p.page_start || pos >= p.page_end)) {
        return;
    }
    let hd = p.head_dim;
    let half = hd / 2u;
    let width = (p.n_heads + 2u * p.n_kv) * hd;
    let src = t * width + head * hd;
    var s = 0.0;
    for (var d = lid; d < hd; d += WG) {
        let v = qkv[src + d];
        xs[d] = v;
        s += v * v;
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let is_v = head >= p.n_heads + p.n_kv;
    let inv = inverseSqrt(partial[0] / f32(hd) + p.eps);
    for (var i = lid; i < half; i += WG) {
        if (is_v) {
            ys[i] = xs[i];
            ys[i + half] = xs[i + half];
        } else {
            var a = xs[i] * inv;
            var b = xs[i + half] * inv;
            if (head < p.n_heads) {
                a *= q_norm[i];
                b *= q_norm[i + half];
            } else {
                a *= k_norm[i];
                b *= k_norm[i + half];
            }
            let cs = rope[(t * half + i) * 2u];
            let sn = rope[(t * half + i) * 2u + 1u];
            ys[i] = a * cs - b * sn;
            ys[i + half] = b * cs + a * sn;
        }
    }
    workgroupBarrier();
    if (head < p.n_heads) {
        for (var d = lid; d < hd; d += WG) {
            q_out[t * p.n_heads * hd + head * hd + d] = ys[d];
        }
        return;
    }
    let kv_head = select(head - p.n_heads, head - p.n_heads - p.n_kv, is_v);
    let dst = (pos - p.page_start) * p.kv_words + kv_head * kv_head_words(hd);
#ifdef KV_Q8_0
    // One thread per pair of 32-value blocks: both scales in one word, then their quants.
    for (var pair = lid; pair * 64u < hd; pair += WG) {
        var words: array<u32, 17>;
        var scales = vec2<f32>(0.0);
        for (var b = 0u; b < 2u; b++) {
            let first = pair * 64u + b * 32u;
            if (first < hd) {
                var x: array<f32, 32>;
                for (var i = 0u; i < 32u; i++) {
                    x[i] = 0.0;
                    if (first + i < hd) {
                        x[i] = ys[first + i];
                    }
                }
                let block = q8_0_quantize(x);
                scales[b] = block.scale;
                for (var w = 0u; w < 8u; w++) {
                    words[1u + 8u * b + w] = block.quants[w];
                }
            }
        }
        words[0] = pack2x16float(scales);
        for (var w = 0u; w < 17u; w++) {
            if (is_v) {
                v_cache[dst + pair * 17u + w] = words[w];
            } else {
                k_cache[dst + pair * 17u + w] = words[w];
            }
        }
    }
#else
#ifdef KV_F32
    for (var j = lid; j < hd; j += WG) {
        let word = bitcast<u32>(ys[j]);
#else
    for (var j = lid; j < half; j += WG) {
        let word = pack2x16float(vec2<f32>(ys[2u * j], ys[2u * j + 1u]));
#endif
        if (is_v) {
            v_cache[dst + j] = word;
        } else {
            k_cache[dst + j] = word;
        }
    }
#endif
}
