// Batched matrix-vector products y[b] (+)= W[m_b] · x[b]. A workgroup computes ROWS rows for
// TOKENS batch entries at once, decoding each 32-weight unit once for all of them. With
// EXPERTS, m_b = ids[b] (the decode expert matvec; TOKENS = 1); with EXPERTS and COMBINE, a
// workgroup loops over the batch and adds Σ_b route[b] · W[ids[b]] · x[b] to y (the decode
// expert down projection, weighted sum of the top-k and residual add in one dispatch). With
// GATHER, workgroup z is (expert e, tile) and its batch entries are the (token, slot) pairs
// routed to e (prefill).
struct Params {
    k: u32,            // columns of W (length of x)
    n: u32,            // rows of one matrix (length of y[b])
    row_words: u32,    // u32 words per row of W
    page_row0: u32,    // first stacked row held by this page
    page_rows: u32,    // rows held by this page
    x_stride: u32,     // elements between x[b] and x[b+1] (0: every b reads the same x)
    y_stride: u32,     // elements between y[b] and y[b+1]
    row_groups: u32,   // workgroups per batch tile = ceil(n / ROWS)
    batch: u32,        // batch entries (plain, EXPERTS); COMBINE: entries per token
    x_div: u32,        // GATHER, EXPERTS: x row = pair (entry) / x_div
    tiles: u32,        // GATHER: batch tiles per expert (upper bound)
    eps: f32,          // NORM: RMSNorm epsilon
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#ifdef EXPERTS
@group(0) @binding(4) var<storage, read> ids: array<u32>;
#endif
#ifdef COMBINE
@group(0) @binding(5) var<storage, read> route: array<f32>;
#endif
#ifdef NORM
// RMSNorm folded in (K-split, plain mode): y[b] (+)= W · (x[b] ⊙ norm_w) / rms(x[b]); the
// sums of squares are reduced with the dots, the 1 / rms applied to the finished sums.
@group(0) @binding(6) var<storage, read> norm_w: array<f32>;
#endif
#ifdef GATHER
@group(0) @binding(4) var<storage, read> counts: array<u32>;
@group(0) @binding(5) var<storage, read> offsets: array<u32>;
@group(0) @binding(6) var<storage, read> pairs: array<u32>;
#endif

// The weight page and x again as vec4s, for aligned rows / activations on CPU devices.
#ifdef W_VEC4
@group(0) @binding(8) var<storage, read> w4: array<vec4<u32>>;
#endif
#ifdef X_VEC4
@group(0) @binding(9) var<storage, read> x4: array<vec4<f32>>;
#endif

const NONE = 0xffffffffu;

#ifdef LANE_ROWS
// The activations of unit `u` of the x row at `row` (row 0 when the batch entry is empty).
fn x_unit(row: u32, u: u32) -> Unit {
    let o = select(0u, row, row != NONE) + u * 32u;
#ifdef X_VEC4
    let i = o / 4u;
    return Unit(x4[i], x4[i + 1u], x4[i + 2u], x4[i + 3u], x4[i + 4u], x4[i + 5u], x4[i + 6u], x4[i + 7u]);
#else
    return Unit(vec4<f32>(x[o], x[o + 1u], x[o + 2u], x[o + 3u]), vec4<f32>(x[o + 4u], x[o + 5u], x[o + 6u], x[o + 7u]),
                vec4<f32>(x[o + 8u], x[o + 9u], x[o + 10u], x[o + 11u]), vec4<f32>(x[o + 12u], x[o + 13u], x[o + 14u], x[o + 15u]),
                vec4<f32>(x[o + 16u], x[o + 17u], x[o + 18u], x[o + 19u]), vec4<f32>(x[o + 20u], x[o + 21u], x[o + 22u], x[o + 23u]),
                vec4<f32>(x[o + 24u], x[o + 25u], x[o + 26u], x[o + 27u]), vec4<f32>(x[o + 28u], x[o + 29u], x[o + 30u], x[o + 31u]));
#endif
}
#endif

// OUTS = ROWS · TOKENS sums, plus TOKENS sums of squares with NORM.
var<workgroup> partial: array<f32, WG * OUTS>;
var<workgroup> chosen: u32;

// Whether matrix m's rows of row group g lie in this page.
fn in_page(m: u32, g: u32) -> bool {
    let first = m * p.n + g * ROWS;
    return first + ROWS > p.page_row0 && first < p.page_row0 + p.page_rows;
}

#ifdef COMBINE
// Whether matrix m (all of whose rows share a page) is in this page.
fn matrix_in_page(m: u32) -> bool {
    let first = m * p.n;
    return first >= p.page_row0 && first < p.page_row0 + p.page_rows;
}
#endif

#ifdef LANE_ROWS
// Dots of rows g·ROWS + r·WG + lid (r < LROWS) of matrix m with the TOKENS x rows at x_rows
// (acc[r · TOKENS + t]), no reduction; rows outside the matrix or the page read row 0 of the
// page and must not be stored. On CPU
// devices every storage load is a scalar load per SIMD lane, so each activation a lane loads
// serves LROWS rows, and each decoded weight unit TOKENS batch entries.
fn lane_dots(m: u32, g: u32, lid: u32, x_rows: array<u32, TOKENS>) -> array<f32, LROWS * TOKENS> {
    var xr = x_rows;
    let units = p.k / 32u;
    var bases: array<u32, LROWS>;
    for (var r = 0u; r < LROWS; r++) {
        let i = g * ROWS + r * WG + lid;
        let row = m * p.n + i;
        let live = i < p.n && row >= p.page_row0 && row < p.page_row0 + p.page_rows;
        bases[r] = select(0u, w_row(row - p.page_row0, p.row_words), live);
    }
    var acc: array<f32, LROWS * TOKENS>;
    var u = 0u;
#ifndef TOKENS4
    // One token: units in pairs (formats whose scales share a word load it once), each
    // weight dotted in its quantized form (w_dot). Four tokens keep single decoded units,
    // shared by the tokens: pairs' registers spill there (docs/PERF.md).
    for (; u + 2u <= units; u += 2u) {
        let x0 = x_prep(x_unit(xr[0], u));
        let z0 = x_prep(x_unit(xr[0], u + 1u));
        for (var r = 0u; r < LROWS; r++) {
            acc[r] += w_dot_pair(bases[r], u, p.k, x0, z0);
        }
    }
#endif
    for (; u < units; u++) {
        let x0 = x_unit(xr[0], u);
#ifdef TOKENS4
        let x1 = x_unit(xr[1], u);
        let x2 = x_unit(xr[2], u);
        let x3 = x_unit(xr[3], u);
#endif
#ifndef TOKENS4
        let xp = x_prep(x0);
#endif
        for (var r = 0u; r < LROWS; r++) {
#ifdef TOKENS4
            let wu = w_unit4(bases[r], u, p.k);
            acc[r * 4u] += unit_dot(wu, x0);
            acc[r * 4u + 1u] += unit_dot(wu, x1);
            acc[r * 4u + 2u] += unit_dot(wu, x2);
            acc[r * 4u + 3u] += unit_dot(wu, x3);
#else
            acc[r] += w_dot(bases[r], u, p.k, xp);
#endif
        }
    }
    var xv: array<f32, TOKENS>;
    for (var k = units * 32u; k < p.k; k++) {
        for (var t = 0u; t < TOKENS; t++) {
            xv[t] = x[select(0u, xr[t] + k, xr[t] != NONE)];
        }
        for (var r = 0u; r < LROWS; r++) {
            let wk = w_load(bases[r], k, p.k);
            for (var t = 0u; t < TOKENS; t++) {
                acc[r * TOKENS + t] += wk * xv[t];
            }
        }
    }
    return acc;
}
#else
// Activation i (column `col`), times its norm weight with NORM.
fn x_at(i: u32, col: u32) -> f32 {
#ifdef NORM
    return x[i] * norm_w[col];
#else
    return x[i];
#endif
}

// This invocation's share (units lid, lid + WG, ...) of rows g·ROWS + r of matrix m against
// the TOKENS x rows at x_rows, times `scale`, added to acc[r · TOKENS + t].
fn split_dots(m: u32, g: u32, lid: u32, x_rows: array<u32, TOKENS>, scale: f32,
              acc: ptr<function, array<f32, OUTS>>) {
    var xr = x_rows;
    let units = p.k / 32u;
    var wv: array<f32, 32>;
    for (var r = 0u; r < ROWS; r++) {
        let row = m * p.n + g * ROWS + r;
        if (g * ROWS + r >= p.n || row < p.page_row0 || row >= p.page_row0 + p.page_rows) {
            continue;
        }
        let base = w_row(row - p.page_row0, p.row_words);
        for (var u = lid; u < units; u += WG) {
            w_unit(base, u, p.k, &wv);
            for (var t = 0u; t < TOKENS; t++) {
                if (xr[t] != NONE) {
                    let xo = xr[t] + u * 32u;
                    var s = 0.0;
                    for (var j = 0u; j < 32u; j++) {
                        s += wv[j] * x_at(xo + j, u * 32u + j);
                    }
                    (*acc)[r * TOKENS + t] += scale * s;
                }
            }
        }
        for (var k = units * 32u + lid; k < p.k; k += WG) {
            let wk = w_load(base, k, p.k);
            for (var t = 0u; t < TOKENS; t++) {
                if (xr[t] != NONE) {
                    (*acc)[r * TOKENS + t] += scale * wk * x_at(xr[t] + k, k);
                }
            }
        }
    }
}
#endif

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
#ifdef SUBGROUPS
        @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_size) sg_size: u32,
#endif
        @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.row_groups) {
        return;
    }
    // Which matrix, and which x / y rows, this workgroup serves.
    var m = 0u;
    var x_rows: array<u32, TOKENS>;
    var y_rows: array<u32, TOKENS>;
#ifdef COMBINE
    // Token wid.z's batch entries, weighted, into its y row.
    y_rows[0] = wid.z * p.y_stride;
#ifdef LANE_ROWS
    var acc: array<f32, LROWS>;
#else
    var acc: array<f32, OUTS>;
#endif
    for (var j = 0u; j < p.batch; j++) {
        let b = wid.z * p.batch + j;
        if (lid == 0u) {
            chosen = ids[b];
        }
        let e = workgroupUniformLoad(&chosen);
        if (!matrix_in_page(e)) {
            continue;
        }
        x_rows[0] = b * p.x_stride;
#ifdef LANE_ROWS
        let d = lane_dots(e, g, lid, x_rows);
        for (var r = 0u; r < LROWS; r++) {
            acc[r] += route[b] * d[r];
        }
#else
        split_dots(e, g, lid, x_rows, route[b], &acc);
#endif
    }
#else
#ifdef EXPERTS
    if (lid == 0u) {
        chosen = ids[wid.z];
    }
    m = workgroupUniformLoad(&chosen);
    x_rows[0] = (wid.z / p.x_div) * p.x_stride;
    y_rows[0] = wid.z * p.y_stride;
#else
#ifdef GATHER
    m = wid.z / p.tiles;
    let first_pair = (wid.z % p.tiles) * TOKENS;
    if (lid == 0u) {
        chosen = counts[m];
    }
    let count = workgroupUniformLoad(&chosen);
    if (first_pair >= count) {
        return;
    }
    for (var t = 0u; t < TOKENS; t++) {
        x_rows[t] = NONE;
        y_rows[t] = NONE;
        if (first_pair + t < count) {
            let pair = pairs[offsets[m] + first_pair + t];
            x_rows[t] = (pair / p.x_div) * p.x_stride;
            y_rows[t] = pair * p.y_stride;
        }
    }
#else
    for (var t = 0u; t < TOKENS; t++) {
        let b = wid.z * TOKENS + t;
        x_rows[t] = select(NONE, b * p.x_stride, b < p.batch);
        y_rows[t] = select(NONE, b * p.y_stride, b < p.batch);
    }
#endif
#endif
    if (!in_page(m, g)) {
        return;
    }
#ifdef LANE_ROWS
    let acc = lane_dots(m, g, lid, x_rows);
#else
    var acc: array<f32, OUTS>;
    split_dots(m, g, lid, x_rows, 1.0, &acc);
#ifdef NORM
    for (var t = 0u; t < TOKENS; t++) {
        if (x_rows[t] != NONE) {
            for (var c = lid; c < p.k; c += WG) {
                let v = x[x_rows[t] + c];
                acc[ROWS * TOKENS + t] += v * v;
            }
        }
    }
#endif
#endif
#endif
#ifdef LANE_ROWS
    for (var r = 0u; r < LROWS; r++) {
        let i = g * ROWS + r * WG + lid;
#ifdef COMBINE
        let mine = i < p.n;
#else
        let row = m * p.n + i;
        let mine = i < p.n && row >= p.page_row0 && row < p.page_row0 + p.page_rows;
#endif
        for (var t = 0u; t < TOKENS; t++) {
            if (mine && y_rows[t] != NONE) {
                let out = y_rows[t] + i;
#ifdef ACCUMULATE
                y[out] += acc[r * TOKENS + t];
#else
                y[out] = acc[r * TOKENS + t];
#endif
            }
        }
    }
#else
#ifdef SUBGROUPS
    // Subgroup sums; each subgroup's first lane leaves one partial per output.
    let parts = max(WG / sg_size, 1u);
    for (var i = 0u; i < OUTS; i++) {
        let sum = subgroupAdd(acc[i]);
        if (sg_lane == 0u) {
            partial[i * WG + lid / sg_size] = sum;
        }
    }
    workgroupBarrier();
#else
    // Workgroup-memory tree (devices without subgroups, or WMOE_NO_SUBGROUPS=1).
    let parts = 1u;
    for (var i = 0u; i < OUTS; i++) {
        partial[i * WG + lid] = acc[i];
    }
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            for (var i = 0u; i < OUTS; i++) {
                partial[i * WG + lid] += partial[i * WG + lid + stride];
            }
        }
        workgroupBarrier();
    }
#endif
    for (var i = lid; i < ROWS * TOKENS; i += WG) {
        var total = 0.0;
        for (var j = 0u; j < parts; j++) {
            total += partial[i * WG + j];
        }
        let r = i / TOKENS;
        let t = i % TOKENS;
#ifdef NORM
        var ss = 0.0;
        for (var j = 0u; j < parts; j++) {
            ss += partial[(ROWS * TOKENS + t) * WG + j];
        }
        total *= inverseSqrt(ss / f32(p.k) + p.eps);
#endif
#ifdef COMBINE
        let mine = true;
#else
        let row = m * p.n + g * ROWS + r;
        let mine = row >= p.page_row0 && row < p.page_row0 + p.page_rows;
#endif
        if (y_rows[t] != NONE && g * ROWS + r < p.n && mine) {
            let out = y_rows[t] + g * ROWS + r;
#ifdef ACCUMULATE
            y[out] += total;
#else
            y[out] = total;
#endif
        }
    }
#endif
}
