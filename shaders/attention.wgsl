// Causal GQA attention over one page of the KV cache (any type of kv_cache.wgsl), one
// workgroup per (query head, token): online softmax over blocks of WG keys; query t of the
// chunk sees cache positions 0..pos0+t, of which this page holds [page_start, page_end).
// SPLIT (split-KV, and every page of a cache held in several): workgroup z takes the page's
// keys [page_start + z·split_keys, + split_keys) only and writes its unnormalised output,
// running max and sum as split split0 + z of splits_total for attention_merge.
const NEG = -3.0e38;

var<workgroup> qs: array<f32, 256>;
var<workgroup> probs: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            red[lid] = max(red[lid], red[lid + stride]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            red[lid] += red[lid + stride];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// First word of cache position pos's row (held by this page).
fn kv_row(pos: u32) -> u32 {
    return (pos - p.page_start) * p.kv_words;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let head = wid.x;
    let t = wid.y;
    let hd = p.head_dim;
    let kv_head = head / (p.n_heads / p.n_kv);
    let q_base = t * p.n_heads * hd + head * hd;
    for (var d = lid; d < hd; d += WG) {
        qs[d] = q[q_base + d];
    }
    workgroupBarrier();
    let k0 = p.page_start + wid.z * p.split_keys;
    let n_keys = min(min(p.pos0 + t + 1u, p.page_end), k0 + p.split_keys);
    var m = NEG;
    var l = 0.0;
    var acc: array<f32, 4>;   // dims lid, lid+64, lid+128, lid+192
    for (var i = 0u; i < 4u; i++) {
        acc[i] = 0.0;
    }
    for (var kb = k0; kb < n_keys; kb += WG) {
        let j = kb + lid;
        var s = NEG;
        if (j < n_keys) {
            var dot = 0.0;
            for (var d = 0u; d < hd; d++) {
                dot += qs[d] * k_elem(kv_row(j), kv_head, d, hd);
            }
            s = dot * p.scale;
        }
        let m_new = max(m, reduce_max(lid, s));
        let alpha = exp(m - m_new);
        var pj = 0.0;
        if (j < n_keys) {
            pj = exp(s - m_new);
        }
        probs[lid] = pj;
        l = l * alpha + reduce_sum(lid, pj);
        m = m_new;
        let valid = min(WG, n_keys - kb);
        for (var i = 0u; i < 4u; i++) {
            let d = lid + WG * i;
            if (d < hd) {
                var a = acc[i] * alpha;
                for (var jj = 0u; jj < valid; jj++) {
                    a += probs[jj] * v_elem(kv_row(kb + jj), kv_head, d, hd);
                }
                acc[i] = a;
            }
        }
        workgroupBarrier();
    }
#ifdef SPLIT
    let part = ((t * p.n_heads + head) * p.splits_total + p.split0 + wid.z) * (hd + 2u);
    for (var i = 0u; i < 4u; i++) {
        let d = lid + WG * i;
        if (d < hd) {
            out[part + d] = acc[i];
        }
    }
    if (lid == 0u) {
        out[part + hd] = m;
        out[part + hd + 1u] = l;
    }
#else
    for (var i = 0u; i < 4u; i++) {
        let d = lid + WG * i;
        if (d < hd) {
            out[q_base + d] = acc[i] / l;
        }
    }
#endif
}
