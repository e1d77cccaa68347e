// Causal GQA attention over one page of the KV cache, tiled over queries and keys: a workgroup
// takes WG query rows of one kv head (row r of kv head g: token r / group, query head
// g·group + r % group, so the heads sharing the kv head and consecutive tokens share it), loads
// each tile of BK keys and values into workgroup memory once for all its rows, and each thread
// runs the online softmax of its own row over the tile (HD = head_dim, a multiple of 4).
// Memory per workgroup: 2·BK·HD floats, whatever the context. Query t of the chunk sees cache
// positions 0..pos0+t, of which this page holds [page_start, page_end).
// SPLIT (a cache in several pages, or a split-KV decode step): workgroup z takes the page's
// keys [page_start + z·split_keys, + split_keys) only and writes its rows' unnormalised
// outputs, running max and sum as split split0 + z of splits_total for attention_merge.
// KWAYS > 1 (fewer rows than threads, as in decode: one token × a GQA group): the workgroup
// holds WG / KWAYS rows, thread way·ROWS + r takes row r's keys j ≡ way (mod KWAYS) of each
// tile, and the ways' softmax states are merged through workgroup memory at the end.
const NEG = -3.0e38;
const HD4 = HD / 4u;
const ROWS = WG / KWAYS;

var<workgroup> ks: array<vec4<f32>, BK * HD4>;
var<workgroup> vs: array<vec4<f32>, BK * HD4>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let kv_head = wid.x;
    let group = p.n_heads / p.n_kv;
    let rows = p.tokens * group;
    let way = lid / ROWS;
    let first_row = wid.y * ROWS;
    let row = min(first_row + lid % ROWS, rows - 1u);
    let in_chunk = first_row + lid % ROWS < rows;
    let t = row / group;
    let head = kv_head * group + row % group;
    let q_base = t * p.n_heads * HD + head * HD;

    let k0 = p.page_start + wid.z * p.split_keys;
    let k_end = min(k0 + p.split_keys, p.page_end);
    // Keys this row sees, and those any row of the workgroup sees.
    let my_end = min(p.pos0 + t + 1u, k_end);
    let last_t = (min(first_row + ROWS, rows) - 1u) / group;
    let wg_end = min(p.pos0 + last_t + 1u, k_end);

    var qr: array<vec4<f32>, HD4>;
    var o: array<vec4<f32>, HD4>;
    for (var i = 0u; i < HD4; i++) {
        let b = q_base + 4u * i;
        qr[i] = vec4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]) * p.scale;
        o[i] = vec4<f32>(0.0);
    }
    var m = NEG;
    var l = 0.0;
    var s: array<f32, BK>;
    for (var kb = k0; kb < wg_end; kb += BK) {
        workgroupBarrier();
        for (var i = lid; i < BK * HD4; i += WG) {
            let pos = kb + i / HD4;
            let d = 4u * (i % HD4);
            var kx = vec4<f32>(0.0);
            var vx = vec4<f32>(0.0);
            if (pos < wg_end) {
                let r = (pos - p.page_start) * p.kv_words;
                kx = vec4<f32>(k_elem(r, kv_head, d, HD), k_elem(r, kv_head, d + 1u, HD),
                               k_elem(r, kv_head, d + 2u, HD), k_elem(r, kv_head, d + 3u, HD));
                vx = vec4<f32>(v_elem(r, kv_head, d, HD), v_elem(r, kv_head, d + 1u, HD),
                               v_elem(r, kv_head, d + 2u, HD), v_elem(r, kv_head, d + 3u, HD));
            }
            ks[i] = kx;
            vs[i] = vx;
        }
        workgroupBarrier();
        let n = select(0u, min(BK, my_end - kb), my_end > kb);
        if (n > 0u) {
            var mt = m;
            for (var j = way; j < BK; j += KWAYS) {
                var dot4 = vec4<f32>(0.0);
                for (var i = 0u; i < HD4; i++) {
                    dot4 += qr[i] * ks[j * HD4 + i];
                }
                let sj = select(NEG, dot4.x + dot4.y + dot4.z + dot4.w, j < n);
                s[j] = sj;
                mt = max(mt, sj);
            }
            let alpha = exp(m - mt);
            l *= alpha;
            for (var i = 0u; i < HD4; i++) {
                o[i] *= alpha;
            }
            for (var j = way; j < BK; j += KWAYS) {
                let pj = select(0.0, exp(s[j] - mt), j < n);
                l += pj;
                for (var i = 0u; i < HD4; i++) {
                    o[i] += pj * vs[j * HD4 + i];
                }
            }
            m = mt;
        }
    }
#ifdef WAYS
    // Way 0 of each row takes in the other ways' states (tiles reused as the exchange).
    for (var w = 1u; w < KWAYS; w++) {
        workgroupBarrier();
        if (way == w) {
            for (var i = 0u; i < HD4; i++) {
                ks[(lid % ROWS) * HD4 + i] = o[i];
            }
            vs[lid % ROWS] = vec4<f32>(m, l, 0.0, 0.0);
        }
        workgroupBarrier();
        if (way == 0u) {
            let other = vs[lid];
            let mt = max(m, other.x);
            let a = exp(m - mt);
            let b = exp(other.x - mt);
            l = l * a + other.y * b;
            for (var i = 0u; i < HD4; i++) {
                o[i] = o[i] * a + ks[lid * HD4 + i] * b;
            }
            m = mt;
        }
    }
#endif
    if (!in_chunk || way != 0u) {
        return;
    }
#ifdef SPLIT
    let part = ((t * p.n_heads + head) * p.splits_total + p.split0 + wid.z) * (HD + 2u);
    for (var i = 0u; i < HD4; i++) {
        for (var c = 0u; c < 4u; c++) {
            out[part + 4u * i + c] = o[i][c];
        }
    }
    out[part + HD] = m;
    out[part + HD + 1u] = l;
#else
    for (var i = 0u; i < HD4; i++) {
        for (var c = 0u; c < 4u; c++) {
            out[q_base + 4u * i + c] = o[i][c] / l;
        }
    }
#endif
}
