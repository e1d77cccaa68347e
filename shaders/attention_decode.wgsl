// Decode attention of one token's GQA group over one page of the KV cache (or one key split of
// it), for CPU devices with subgroups: one subgroup-sized workgroup per (kv head, split), each
// of its WG lanes holding DPL = HD / WG dims of every head of the group (queries and outputs
// in registers). Per key: the lanes read their slice of the K row once for all GROUP heads,
// subgroupAdd gives each head's score in every lane, the online softmax rescales only when a
// score raises the maximum, and the lanes add their slice of the V row. No workgroup memory,
// no barriers. The cache position pos0 sees 0..pos0.
// SPLIT: workgroup z takes the page's keys [page_start + z·split_keys, + split_keys) and
// writes its unnormalised outputs, running max and sum as split split0 + z of splits_total
// for attention_merge.
const NEG = -3.0e38;
const V4 = HD / WG / 4u;   // vec4 per lane per head

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let kv_head = wid.x;
    let head0 = kv_head * GROUP;
    let d0 = lid * V4 * 4u;
    var qr: array<vec4<f32>, GROUP * V4>;
    var o: array<vec4<f32>, GROUP * V4>;
    var m: array<f32, GROUP>;
    var l: array<f32, GROUP>;
    for (var g = 0u; g < GROUP; g++) {
        for (var v = 0u; v < V4; v++) {
            let b = (head0 + g) * HD + d0 + 4u * v;
            qr[g * V4 + v] = vec4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]) * p.scale;
            o[g * V4 + v] = vec4<f32>(0.0);
        }
        m[g] = NEG;
        l[g] = 0.0;
    }
    let k0 = p.page_start + wid.z * p.split_keys;
    let k_end = min(min(k0 + p.split_keys, p.page_end), p.pos0 + 1u);
    for (var j = k0; j < k_end; j++) {
        let row = (j - p.page_start) * p.kv_words;
        var part: array<f32, GROUP>;
        for (var g = 0u; g < GROUP; g++) {
            part[g] = 0.0;
        }
        for (var v = 0u; v < V4; v++) {
            let kx = k_vec4(row, kv_head, d0 + 4u * v, HD);
            for (var g = 0u; g < GROUP; g++) {
                part[g] += dot(qr[g * V4 + v], kx);
            }
        }
        var vx: array<vec4<f32>, V4>;
        for (var v = 0u; v < V4; v++) {
            vx[v] = v_vec4(row, kv_head, d0 + 4u * v, HD);
        }
        for (var g = 0u; g < GROUP; g++) {
            let s = subgroupAdd(part[g]);
            if (s > m[g]) {
                let alpha = exp(m[g] - s);
                l[g] *= alpha;
                for (var v = 0u; v < V4; v++) {
                    o[g * V4 + v] *= alpha;
                }
                m[g] = s;
            }
            let pj = exp(s - m[g]);
            l[g] += pj;
            for (var v = 0u; v < V4; v++) {
                o[g * V4 + v] += pj * vx[v];
            }
        }
    }
    for (var g = 0u; g < GROUP; g++) {
        let head = head0 + g;
#ifdef SPLIT
        let base = (head * p.splits_total + p.split0 + wid.z) * (HD + 2u);
#else
        let base = head * HD;
#endif
        for (var v = 0u; v < V4; v++) {
            for (var c = 0u; c < 4u; c++) {
#ifdef SPLIT
                out[base + d0 + 4u * v + c] = o[g * V4 + v][c];
#else
                out[base + d0 + 4u * v + c] = o[g * V4 + v][c] / l[g];
#endif
            }
        }
#ifdef SPLIT
        if (lid == 0u) {
            out[base + HD] = m[g];
            out[base + HD + 1u] = l[g];
        }
#endif
    }
}
