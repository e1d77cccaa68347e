// Tiled matrix product Y[m, n] (+)= Σ_k X[m, k] · W[n, k]. With GATHER it is the grouped expert
// GEMM: workgroup z is expert e, its rows are the (token, slot) pairs routed to e, read from the
// gather kernel's lists; tiles past an expert's count exit at once.
struct Params {
    m: u32,            // rows of Y (tokens; unused with GATHER)
    n: u32,            // columns of Y = rows of one matrix of W
    k: u32,            // inner dimension
    row_words: u32,    // u32 words per row of W
    page_row0: u32,    // first stacked row held by this page
    page_rows: u32,    // rows held by this page
    x_stride: u32,     // elements between rows of X
    y_stride: u32,     // elements between rows of Y
    x_div: u32,        // GATHER: X row = pair / x_div (top_k for token inputs, 1 for pair inputs)
    n_offset: u32,     // dense: first output column of this page
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#ifdef GATHER
@group(0) @binding(4) var<storage, read> counts: array<u32>;
@group(0) @binding(5) var<storage, read> offsets: array<u32>;
@group(0) @binding(6) var<storage, read> pairs: array<u32>;
#endif

// BM x BN output tiles over BK-deep slices, WG_EDGE x WG_EDGE threads (defines from Rust).
const THREADS = WG_EDGE * WG_EDGE;

var<workgroup> a_tile: array<f32, BM * BK>;
var<workgroup> b_tile: array<f32, BN * BK>;
var<workgroup> rows_in: array<u32, BM>;  // X row of each tile row (or 0xffffffff)
var<workgroup> rows_out: array<u32, BM>; // Y row of each tile row
var<workgroup> shared_count: u32;

@compute @workgroup_size(WG_EDGE, WG_EDGE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    var w_row0 = 0u;   // stacked row of column 0 of this matrix, minus the page start
    var count = p.m;
#ifdef GATHER
    let e = wid.z;
    if (lid == 0u) {
        shared_count = counts[e];
    }
    count = workgroupUniformLoad(&shared_count);
    if (m0 >= count || e * p.n < p.page_row0 || e * p.n >= p.page_row0 + p.page_rows) {
        return;
    }
    w_row0 = e * p.n - p.page_row0;
    if (lid < BM) {
        let m = m0 + lid;
        if (m < count) {
            let pair = pairs[offsets[e] + m];
            rows_in[lid] = pair / p.x_div;
            rows_out[lid] = pair;
        } else {
            rows_in[lid] = 0xffffffffu;
            rows_out[lid] = 0xffffffffu;
        }
    }
#else
    if (m0 >= count || n0 >= p.page_rows) {
        return;
    }
    if (lid < BM) {
        let m = m0 + lid;
        rows_in[lid] = select(0xffffffffu, m, m < count);
        rows_out[lid] = rows_in[lid];
    }
#endif
    workgroupBarrier();
    // Columns this workgroup may touch: n0 .. n0+BN within the matrix / page.
#ifdef GATHER
    let n_limit = p.n;
#else
    let n_limit = p.page_rows;
#endif
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    let tx = lid3.x;
    let ty = lid3.y;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var i = lid; i < BM * BK; i += THREADS) {
            let r = i / BK;
            let kk = k0 + i % BK;
            let src = rows_in[r];
            var v = 0.0;
            if (src != 0xffffffffu && kk < p.k) {
                v = x[src * p.x_stride + kk];
            }
            a_tile[i] = v;
        }
        for (var i = lid; i < BN * BK; i += THREADS) {
            let c = i / BK;
            let kk = k0 + i % BK;
            var v = 0.0;
            if (n0 + c < n_limit && kk < p.k) {
                v = w_load(w_row(w_row0 + n0 + c, p.row_words), kk, p.k);
            }
            b_tile[i] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var a: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = a_tile[(ty * 4u + i) * BK + kk];
                bv[i] = b_tile[(tx * 4u + i) * BK + kk];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] += a[i] * bv[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let dst = rows_out[ty * 4u + i];
        if (dst == 0xffffffffu) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let c = n0 + tx * 4u + j;
            if (c < n_limit) {
                let out = dst * p.y_stride + p.n_offset + c;
#ifdef ACCUMULATE
                y[out] += acc[i * 4u + j];
#else
                y[out] = acc[i * 4u + j];
#endif
            }
        }
    }
}
