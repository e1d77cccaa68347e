// q4_0 weight loaders: 32-weight blocks of nibbles minus 8, times an f16 scale.
//
// Row layout: the blocks' f16 scales (padded to a word), then their 16 quant bytes each;
// element j of a block in the low nibble of byte j, element j + 16 in its high nibble.

fn w_load(base: u32, k: u32, cols: u32) -> f32 {
    let b = k >> 5u;
    let j = k & 31u;
    let body = (cols / 32u + 1u) / 2u;
    let byte = w_byte(base, body, b * 16u + (j & 15u));
    let q = select(byte & 15u, byte >> 4u, j >= 16u);
    return (f32(q) - 8.0) * w_half(base, 0u, b);
}

fn w_unit(base: u32, u: u32, cols: u32, v: ptr<function, array<f32, 32>>) {
    let d = w_half(base, 0u, u);
    let body = (cols / 32u + 1u) / 2u + u * 4u;
    for (var i = 0u; i < 4u; i++) {
        let word = w_word(base, body + i);
        for (var k = 0u; k < 4u; k++) {
            let byte = (word >> (8u * k)) & 0xffu;
            (*v)[4u * i + k] = (f32(byte & 15u) - 8.0) * d;
            (*v)[4u * i + k + 16u] = (f32(byte >> 4u) - 8.0) * d;
        }
    }
}

// Nibbles of `q` at `shifts`, minus 8, scaled by d.
fn q4_0_quad(q: u32, shifts: vec4<u32>, d: f32) -> vec4<f32> {
    return d * (vec4<f32>((vec4<u32>(q) >> shifts) & vec4<u32>(15u)) - vec4<f32>(8.0));
}

// A q4_0 unit from its 16 quant bytes and scale.
fn q4_0_unit(q: vec4<u32>, d: f32) -> Unit {
    let hi = BYTE_SHIFTS + 4u;
    return Unit(q4_0_quad(q.x, BYTE_SHIFTS, d), q4_0_quad(q.y, BYTE_SHIFTS, d), q4_0_quad(q.z, BYTE_SHIFTS, d),
                q4_0_quad(q.w, BYTE_SHIFTS, d), q4_0_quad(q.x, hi, d), q4_0_quad(q.y, hi, d),
                q4_0_quad(q.z, hi, d), q4_0_quad(q.w, hi, d));
}

fn w_unit4(base: u32, u: u32, cols: u32) -> Unit {
    return q4_0_unit(w_quad(base, (cols / 32u + 1u) / 2u + u * 4u), w_half(base, 0u, u));
}

// d · Σ (q − 8) x over one q4_0 unit, as d · (Σ q x − 8 Σ x).
fn q4_0_dot(q: vec4<u32>, d: f32, x: XUnit) -> f32 {
    let h = q >> vec4<u32>(4u);
    let s = masked_dot(q.x, NIBBLES, x.v.a) + masked_dot(q.y, NIBBLES, x.v.b)
        + masked_dot(q.z, NIBBLES, x.v.c) + masked_dot(q.w, NIBBLES, x.v.d)
        + masked_dot(h.x, NIBBLES, x.v.e) + masked_dot(h.y, NIBBLES, x.v.f)
        + masked_dot(h.z, NIBBLES, x.v.g) + masked_dot(h.w, NIBBLES, x.v.h);
    return d * (s - 8.0 * (x.sums.x + x.sums.y));
}

fn w_dot(base: u32, u: u32, cols: u32, x: XUnit) -> f32 {
    return q4_0_dot(w_quad(base, (cols / 32u + 1u) / 2u + u * 4u), w_half(base, 0u, u), x);
}

// The pair loads its shared scale word once.
fn w_dot_pair(base: u32, u: u32, cols: u32, x: XUnit, z: XUnit) -> f32 {
    let d = unpack2x16float(w_word(base, u / 2u));
    let body = (cols / 32u + 1u) / 2u + u * 4u;
    return q4_0_dot(w_quad(base, body), d.x, x) + q4_0_dot(w_quad(base, body + 4u), d.y, z);
}
