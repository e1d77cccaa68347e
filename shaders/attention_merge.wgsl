// Merges split-KV attention partials: for each (head, token), out = Σ_s acc_s·e^(m_s−M) / Σ_s l_s·e^(m_s−M)
// with M = max_s m_s, where split s wrote [acc_s (head_dim), m_s, l_s].
struct Params {
    n_heads: u32,
    head_dim: u32,
    splits: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> parts: array<f32>;     // [T, n_heads, splits, hd + 2]
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // [T, n_heads · hd]

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head = wid.x;
    let t = wid.y;
    let hd = p.head_dim;
    let stride = hd + 2u;
    let first = (t * p.n_heads + head) * p.splits * stride;
    var m = -3.0e38;
    for (var s = 0u; s < p.splits; s++) {
        m = max(m, parts[first + s * stride + hd]);
    }
    var l = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        l += parts[first + s * stride + hd + 1u] * exp(parts[first + s * stride + hd] - m);
    }
    for (var d = lid; d < hd; d += WG) {
        var o = 0.0;
        for (var s = 0u; s < p.splits; s++) {
            o += parts[first + s * stride + d] * exp(parts[first + s * stride + hd] - m);
        }
        out[(t * p.n_heads + head) * hd + d] = o / l;
    }
}
