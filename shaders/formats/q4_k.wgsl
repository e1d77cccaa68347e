// q4_K weight loaders: 256-weight blocks, each 32-weight unit scale · nibble − offset.
//
// Row layout: GGUF's 36-word blocks, [f16 d, dmin][12 bytes of 6-bit scales and mins]
// [128 quant bytes: unit pairs share 32 bytes, the even unit low nibbles, the odd high].

// Where unit u of a q4_K row lives: the offset of its 8 quant words, the nibble shift, and
// `so`: its sub-block's scale d · sc and offset dmin · m.
struct Q4kUnit { qs: u32, shift: u32, so: vec2<f32> }

// The block header (d, dmin and the 12 scale bytes) of unit u: one quad.
fn q4_k_header(base: u32, u: u32) -> vec4<u32> {
    return w_quad(base, (u >> 3u) * 36u);
}

// Unit u of a q4_K row given its block header.
fn q4_k_unit_in(hdr: vec4<u32>, u: u32) -> Q4kUnit {
    let is = u & 7u;
    let so = unpack2x16float(hdr.x) * k_scale_min_regs(hdr.yzw, is);
    return Q4kUnit((u >> 3u) * 36u + 4u + (is >> 1u) * 8u, (is & 1u) * 4u, so);
}

fn q4_k_unit(base: u32, u: u32) -> Q4kUnit {
    return q4_k_unit_in(q4_k_header(base, u), u);
}

// The 6-bit (scale, min) of sub-block `is` from a q4_K block's 12 scale bytes, held in `s`
// (k_scale_min without the loads).
fn k_scale_min_regs(s: vec3<u32>, is: u32) -> vec2<f32> {
    let b0 = (s[is >> 2u] >> ((is & 3u) * 8u)) & 0xffu;
    let b4 = (s[(is + 4u) >> 2u] >> (((is + 4u) & 3u) * 8u)) & 0xffu;
    if (is < 4u) {
        return vec2<f32>(f32(b0 & 63u), f32(b4 & 63u));
    }
    let bm4 = (s[(is - 4u) >> 2u] >> (((is - 4u) & 3u) * 8u)) & 0xffu;
    return vec2<f32>(f32((b4 & 15u) | ((bm4 >> 6u) << 4u)), f32((b4 >> 4u) | ((b0 >> 6u) << 4u)));
}

fn w_load(base: u32, k: u32, cols: u32) -> f32 {
    let blk = (k >> 8u) * 36u;
    let j = k & 255u;
    let c = j >> 6u;
    let l = j & 63u;
    let dm = unpack2x16float(w_word(base, blk));
    let sm = k_scale_min(base, blk + 1u, 2u * c + select(0u, 1u, l >= 32u));
    let byte = w_byte(base, blk + 4u, c * 32u + (l & 31u));
    let q = select(byte & 15u, byte >> 4u, l >= 32u);
    return dm.x * sm.x * f32(q) - dm.y * sm.y;
}

fn w_unit(base: u32, u: u32, cols: u32, v: ptr<function, array<f32, 32>>) {
    let q = q4_k_unit(base, u);
    for (var i = 0u; i < 8u; i++) {
        let word = w_word(base, q.qs + i);
        for (var k = 0u; k < 4u; k++) {
            (*v)[4u * i + k] = q.so.x * f32((word >> (8u * k + q.shift)) & 15u) - q.so.y;
        }
    }
}

// Nibbles of `q` at BYTE_SHIFTS + shift, times scale, minus off.
fn q4_k_quad(q: u32, shift: u32, scale: f32, off: f32) -> vec4<f32> {
    return scale * vec4<f32>((vec4<u32>(q) >> (BYTE_SHIFTS + shift)) & vec4<u32>(15u)) - off;
}

// Three loads: the block header quad and the two quant quads.
fn w_unit4(base: u32, u: u32, cols: u32) -> Unit {
    let q = q4_k_unit(base, u);
    let q0 = w_quad(base, q.qs);
    let q1 = w_quad(base, q.qs + 4u);
    let sh = q.shift;
    let sc = q.so.x;
    let off = q.so.y;
    return Unit(q4_k_quad(q0.x, sh, sc, off), q4_k_quad(q0.y, sh, sc, off),
                q4_k_quad(q0.z, sh, sc, off), q4_k_quad(q0.w, sh, sc, off),
                q4_k_quad(q1.x, sh, sc, off), q4_k_quad(q1.y, sh, sc, off),
                q4_k_quad(q1.z, sh, sc, off), q4_k_quad(q1.w, sh, sc, off));
}

// Σ (scale · q − off) x over a q4_K unit whose quants are the nibbles at `shift` (0: low,
// 4: high) of the 8 words q0, q1, as scale · Σ q x − off · Σ x; `so` is (scale, off).
fn q4_k_dot(q0: vec4<u32>, q1: vec4<u32>, shift: u32, so: vec2<f32>, x: XUnit) -> f32 {
    let a = q0 >> vec4<u32>(shift);
    let b = q1 >> vec4<u32>(shift);
    let s = masked_dot(a.x, NIBBLES, x.v.a) + masked_dot(a.y, NIBBLES, x.v.b)
        + masked_dot(a.z, NIBBLES, x.v.c) + masked_dot(a.w, NIBBLES, x.v.d)
        + masked_dot(b.x, NIBBLES, x.v.e) + masked_dot(b.y, NIBBLES, x.v.f)
        + masked_dot(b.z, NIBBLES, x.v.g) + masked_dot(b.w, NIBBLES, x.v.h);
    return so.x * s - so.y * (x.sums.x + x.sums.y);
}

fn w_dot(base: u32, u: u32, cols: u32, x: XUnit) -> f32 {
    let q = q4_k_unit(base, u);
    return q4_k_dot(w_quad(base, q.qs), w_quad(base, q.qs + 4u), q.shift, q.so, x);
}

// Units u and u + 1 share their block header and quant words (low and high nibbles).
fn w_dot_pair(base: u32, u: u32, cols: u32, x: XUnit, z: XUnit) -> f32 {
    let hdr = q4_k_header(base, u);
    let a = q4_k_unit_in(hdr, u);
    let b = q4_k_unit_in(hdr, u + 1u);
    let q0 = w_quad(base, a.qs);
    let q1 = w_quad(base, a.qs + 4u);
    return q4_k_dot(q0, q1, a.shift, a.so, x) + q4_k_dot(q0, q1, b.shift, b.so, z);
}
