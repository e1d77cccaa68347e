// q6_K weight loaders: 256-weight blocks of 6-bit quants minus 32, times d · int8 scale.
//
// Row layout: the blocks' f16 d (padded to a word), then the rest of each block:
// [128 bytes of low nibbles][64 bytes of high pairs][16 int8 scales of 16 weights].

// Where unit u of a q6_K row lives: the offsets of its low-nibble and high-pair words (8
// each), the shifts that select its nibbles and pairs, and its two sub-block scales
// (d · int8 scale).
struct Q6kUnit { ql: u32, qh: u32, lo_shift: u32, hi_shift: u32, sc0: f32, sc1: f32 }

fn q6_k_unit(base: u32, u: u32, cols: u32) -> Q6kUnit {
    let b = u >> 3u;
    let n = (u & 7u) >> 2u;
    let quarter = u & 3u;
    let d = w_half(base, 0u, b);
    let body = (cols / 256u + 1u) / 2u + b * 52u;
    // The two int8 scales share one word (their byte offset is even).
    let sw = w_word(base, body + 48u + n * 2u + quarter / 2u) >> (16u * (quarter & 1u));
    return Q6kUnit(body + (n * 64u + 32u * (quarter & 1u)) / 4u, body + 32u + n * 8u,
                   select(0u, 4u, quarter >= 2u), 2u * quarter,
                   d * f32(bitcast<i32>(sw << 24u) >> 24u), d * f32(bitcast<i32>(sw << 16u) >> 24u));
}

fn w_load(base: u32, k: u32, cols: u32) -> f32 {
    let b = k >> 8u;
    let j = k & 255u;
    let body = (cols / 256u + 1u) / 2u + b * 52u;
    let n = j >> 7u;
    let quarter = (j & 127u) >> 5u;
    let l = j & 31u;
    let byte = w_byte(base, body, n * 64u + l + 32u * (quarter & 1u));
    let lo = select(byte & 15u, byte >> 4u, quarter >= 2u);
    let hi = (w_byte(base, body + 32u, n * 32u + l) >> (2u * quarter)) & 3u;
    let q = i32(lo | (hi << 4u)) - 32;
    let sc = bitcast<i32>(w_byte(base, body + 48u, n * 8u + l / 16u + 2u * quarter) << 24u) >> 24u;
    return w_half(base, 0u, b) * f32(sc) * f32(q);
}

fn w_unit(base: u32, u: u32, cols: u32, v: ptr<function, array<f32, 32>>) {
    let q = q6_k_unit(base, u, cols);
    for (var i = 0u; i < 8u; i++) {
        let lw = w_word(base, q.ql + i);
        let hw = w_word(base, q.qh + i);
        let sc = select(q.sc0, q.sc1, i >= 4u);
        for (var k = 0u; k < 4u; k++) {
            let lo = (lw >> (8u * k + q.lo_shift)) & 15u;
            let hi = (hw >> (8u * k + q.hi_shift)) & 3u;
            (*v)[4u * i + k] = sc * f32(i32(lo | (hi << 4u)) - 32);
        }
    }
}

// Low nibbles of `lw` and 2-bit highs of `hw`, minus 32, scaled by sc.
fn q6_k_quad(lw: u32, lo_shift: u32, hw: u32, hi_shift: u32, sc: f32) -> vec4<f32> {
    let lo = (vec4<u32>(lw) >> (BYTE_SHIFTS + lo_shift)) & vec4<u32>(15u);
    let hi = ((vec4<u32>(hw) >> (BYTE_SHIFTS + hi_shift)) & vec4<u32>(3u)) << vec4<u32>(4u);
    return sc * (vec4<f32>(lo | hi) - vec4<f32>(32.0));
}

fn w_unit4(base: u32, u: u32, cols: u32) -> Unit {
    let q = q6_k_unit(base, u, cols);
    let l0 = w_quad(base, q.ql);
    let l1 = w_quad(base, q.ql + 4u);
    let h0 = w_quad(base, q.qh);
    let h1 = w_quad(base, q.qh + 4u);
    let ls = q.lo_shift;
    let hs = q.hi_shift;
    return Unit(q6_k_quad(l0.x, ls, h0.x, hs, q.sc0), q6_k_quad(l0.y, ls, h0.y, hs, q.sc0),
                q6_k_quad(l0.z, ls, h0.z, hs, q.sc0), q6_k_quad(l0.w, ls, h0.w, hs, q.sc0),
                q6_k_quad(l1.x, ls, h1.x, hs, q.sc1), q6_k_quad(l1.y, ls, h1.y, hs, q.sc1),
                q6_k_quad(l1.z, ls, h1.z, hs, q.sc1), q6_k_quad(l1.w, ls, h1.w, hs, q.sc1));
}

// The 6-bit quants of one q6_K quad (low nibbles of `l`, high pairs of `h`, both pre-shifted
// so each byte's bits sit in place) against x.
fn q6_k_quad_dot(l: u32, h: u32, x: vec4<f32>) -> f32 {
    let q = (vec4<u32>(l) & NIBBLES) | (vec4<u32>(h) & vec4<u32>(0x30u, 0x3000u, 0x300000u, 0x30000000u));
    return dot(vec4<f32>(bitcast<vec4<i32>>(q)), x);
}

fn w_dot(base: u32, u: u32, cols: u32, x: XUnit) -> f32 {
    let q = q6_k_unit(base, u, cols);
    let ls = vec4<u32>(q.lo_shift);
    let l0 = w_quad(base, q.ql) >> ls;
    let l1 = w_quad(base, q.ql + 4u) >> ls;
    // High pairs at bit 4 of each byte: shift right by hi_shift, then left by 4.
    let hs = vec4<u32>(q.hi_shift);
    let h0 = (w_quad(base, q.qh) >> hs) << vec4<u32>(4u);
    let h1 = (w_quad(base, q.qh + 4u) >> hs) << vec4<u32>(4u);
    let lo = q6_k_quad_dot(l0.x, h0.x, x.v.a) + q6_k_quad_dot(l0.y, h0.y, x.v.b)
        + q6_k_quad_dot(l0.z, h0.z, x.v.c) + q6_k_quad_dot(l0.w, h0.w, x.v.d);
    let hi = q6_k_quad_dot(l1.x, h1.x, x.v.e) + q6_k_quad_dot(l1.y, h1.y, x.v.f)
        + q6_k_quad_dot(l1.z, h1.z, x.v.g) + q6_k_quad_dot(l1.w, h1.w, x.v.h);
    return q.sc0 * (lo - 32.0 * x.sums.x) + q.sc1 * (hi - 32.0 * x.sums.y);
}

fn w_dot_pair(base: u32, u: u32, cols: u32, x: XUnit, z: XUnit) -> f32 {
    return w_dot(base, u, cols, x) + w_dot(base, u + 1u, cols, z);
}
