// Batched matrix-vector product y[b] (+)= W[m_b] · x[b]; with EXPERTS, m_b = ids[b] picks one
// matrix of a stacked expert tensor on the GPU. One workgroup computes ROWS rows of one b.
struct Params {
    k: u32,            // columns of W (length of x)
    n: u32,            // rows of one matrix (length of y[b])
    row_words: u32,    // u32 words per row of W
    page_row0: u32,    // first stacked row held by this page
    page_rows: u32,    // rows held by this page
    x_stride: u32,     // elements between x[b] and x[b+1] (0: every b reads the same x)
    y_stride: u32,     // elements between y[b] and y[b+1]
    row_groups: u32,   // workgroups per b = ceil(n / ROWS)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#ifdef EXPERTS
@group(0) @binding(4) var<storage, read> ids: array<u32>;
#endif

var<workgroup> partial: array<f32, WG * ROWS>;
var<workgroup> chosen: u32;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.row_groups) {
        return;
    }
    let b = wid.z;
    var m = 0u;
#ifdef EXPERTS
    if (lid == 0u) {
        chosen = ids[b];
    }
    m = workgroupUniformLoad(&chosen);
#endif
    let first = m * p.n + g * ROWS;
    if (first + ROWS <= p.page_row0 || first >= p.page_row0 + p.page_rows) {
        return;
    }
    let xb = b * p.x_stride;
    var acc: array<f32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        let row = first + r;
        acc[r] = 0.0;
        if (g * ROWS + r < p.n && row >= p.page_row0 && row < p.page_row0 + p.page_rows) {
            let base = (row - p.page_row0) * p.row_words;
            var s = 0.0;
            for (var k = lid; k < p.k; k += WG) {
                s += w_load(base, k, p.k) * x[xb + k];
            }
            acc[r] = s;
        }
        partial[r * WG + lid] = acc[r];
    }
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            for (var r = 0u; r < ROWS; r++) {
                partial[r * WG + lid] += partial[r * WG + lid + stride];
            }
        }
        workgroupBarrier();
    }
    if (lid < ROWS) {
        let r = lid;
        let row = first + r;
        if (g * ROWS + r < p.n && row >= p.page_row0 && row < p.page_row0 + p.page_rows) {
            let out = b * p.y_stride + g * ROWS + r;
#ifdef ACCUMULATE
            y[out] += partial[r * WG];
#else
            y[out] = partial[r * WG];
#endif
        }
    }
}
