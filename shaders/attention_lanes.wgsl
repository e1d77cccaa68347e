// Causal GQA attention of a prefill chunk over one page of the KV cache, for CPU devices: a
// workgroup of WG lanes takes ROWS query rows of one kv head (row r of kv head g: token
// r / group, query head g·group + r % group, as attention_tiled numbers them) and every lane
// holds all ROWS queries in registers. Lane i walks its own keys k0 + i, k0 + i + WG, ...: it
// reads each K and V row once for all ROWS rows and keeps its own online softmax per row; the
// lanes' states are merged through workgroup memory at the end. Inside the key loop no lane
// reads a value that another lane also reads (a CPU rasterizer loads storage lane by lane), and
// every private array is indexed by constants (#unroll).
// Query t of the chunk sees cache positions 0..pos0+t, of which this page holds
// [page_start, page_end).
// SPLIT (a cache in several pages): workgroup z takes the page's keys
// [page_start + z·split_keys, + split_keys) and writes its rows' unnormalised outputs, running
// max and sum as split split0 + z of splits_total for attention_merge.
const NEG = -3.0e38;

var<workgroup> x_o: array<vec4<f32>, WG * HD4>; // each lane's output of the row being merged
var<workgroup> x_ml: array<vec2<f32>, WG * ROWS>; // each lane's (max, sum) of every row

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let kv_head = wid.x;
    let group = p.n_heads / p.n_kv;
    let rows = p.tokens * group;
    let first_row = wid.y * ROWS;

    var qr: array<vec4<f32>, ROWS * HD4>;
    var o: array<vec4<f32>, ROWS * HD4>;
    var m: array<f32, ROWS>;
    var l: array<f32, ROWS>;
    var lim: array<u32, ROWS>; // one past the last position row r sees
#unroll ur ROWS
    {
        let row = min(first_row + ur, rows - 1u);
        let t = row / group;
        let qb = t * p.n_heads * HD + (kv_head * group + row % group) * HD;
#unroll ui HD4
        qr[ur * HD4 + ui] = vec4<f32>(q[qb + 4u * ui], q[qb + 4u * ui + 1u], q[qb + 4u * ui + 2u], q[qb + 4u * ui + 3u]) * p.scale;
        o[ur * HD4 + ui] = vec4<f32>(0.0);
#end_unroll
        m[ur] = NEG;
        l[ur] = 0.0;
        lim[ur] = p.pos0 + t + 1u;
    }
#end_unroll
    let k0 = p.page_start + wid.z * p.split_keys;
    // The last row of the block has the latest token, so it sees the most keys.
    let wg_end = min(min(k0 + p.split_keys, p.page_end), lim[ROWS - 1u]);
    for (var j = k0 + lid; j < wg_end; j += WG) {
        let at = (j - p.page_start) * p.kv_words;
        var kx: array<vec4<f32>, HD4>;
        var vx: array<vec4<f32>, HD4>;
#unroll ui HD4
        kx[ui] = k_vec4(at, kv_head, 4u * ui, HD);
        vx[ui] = v_vec4(at, kv_head, 4u * ui, HD);
#end_unroll
#unroll ur ROWS
        {
            var d4 = vec4<f32>(0.0);
#unroll ui HD4
            d4 += qr[ur * HD4 + ui] * kx[ui];
#end_unroll
            let seen = j < lim[ur];
            let s = select(NEG, d4.x + d4.y + d4.z + d4.w, seen);
            let mt = max(m[ur], s);
            let alpha = exp(m[ur] - mt);
            let pj = select(0.0, exp(s - mt), seen);
            l[ur] = l[ur] * alpha + pj;
#unroll ui HD4
            o[ur * HD4 + ui] = o[ur * HD4 + ui] * alpha + pj * vx[ui];
#end_unroll
            m[ur] = mt;
        }
#end_unroll
    }

    // Merge: every lane learns each row's maximum and sum over the lanes, scales its output to
    // that maximum, and lane i adds up the lanes' vec4s i, i + WG, ... of each row in turn.
#unroll ur ROWS
    x_ml[lid * ROWS + ur] = vec2<f32>(m[ur], l[ur]);
#end_unroll
    workgroupBarrier();
#unroll ur ROWS
    {
        var mx = NEG;
        for (var w = 0u; w < WG; w++) {
            mx = max(mx, x_ml[w * ROWS + ur].x);
        }
        var sum = 0.0;
        for (var w = 0u; w < WG; w++) {
            let ml = x_ml[w * ROWS + ur];
            sum += ml.y * exp(ml.x - mx);
        }
        let f = exp(m[ur] - mx);
#unroll ui HD4
        x_o[lid * HD4 + ui] = o[ur * HD4 + ui] * f;
#end_unroll
        workgroupBarrier();
        let row = first_row + ur;
        if (row < rows) {
            let t = row / group;
            let head = kv_head * group + row % group;
#ifdef SPLIT
            let base = ((t * p.n_heads + head) * p.splits_total + p.split0 + wid.z) * (HD + 2u);
            let norm = 1.0;
            if (lid == 0u) {
                out[base + HD] = mx;
                out[base + HD + 1u] = sum;
            }
#else
            let base = t * p.n_heads * HD + head * HD;
            let norm = 1.0 / sum;
#endif
            for (var i = lid; i < HD4; i += WG) {
                var acc = vec4<f32>(0.0);
                for (var w = 0u; w < WG; w++) {
                    acc += x_o[w * HD4 + i];
                }
                acc *= norm;
                for (var c = 0u; c < 4u; c++) {
                    out[base + 4u * i + c] = acc[c];
                }
            }
        }
        workgroupBarrier();
    }
#end_unroll
}
