// q5_0 weight loaders: 32-weight blocks of 5-bit quants minus 16, times an f16 scale.
//
// Row layout: the blocks' f16 scales (padded to a word), then their fifth-bit words, then
// their 16 nibble bytes each (element j low in byte j, element j + 16 high).

fn w_load(base: u32, k: u32, cols: u32) -> f32 {
    let nb = cols / 32u;
    let b = k >> 5u;
    let j = k & 31u;
    let body = (nb + 1u) / 2u;
    let qh = w_word(base, body + b);
    let byte = w_byte(base, body + nb, b * 16u + (j & 15u));
    let lo = select(byte & 15u, byte >> 4u, j >= 16u);
    let q = lo | (((qh >> j) & 1u) << 4u);
    return (f32(q) - 16.0) * w_half(base, 0u, b);
}

fn w_unit(base: u32, u: u32, cols: u32, v: ptr<function, array<f32, 32>>) {
    let nb = cols / 32u;
    let d = w_half(base, 0u, u);
    let body = (nb + 1u) / 2u;
    let qh = w_word(base, body + u);
    for (var i = 0u; i < 4u; i++) {
        let word = w_word(base, body + nb + u * 4u + i);
        for (var k = 0u; k < 4u; k++) {
            let j = 4u * i + k;
            let byte = (word >> (8u * k)) & 0xffu;
            let lo = (byte & 15u) | (((qh >> j) & 1u) << 4u);
            let hi = (byte >> 4u) | (((qh >> (j + 16u)) & 1u) << 4u);
            (*v)[j] = (f32(lo) - 16.0) * d;
            (*v)[j + 16u] = (f32(hi) - 16.0) * d;
        }
    }
}

// Nibbles of `q` at `shifts` with fifth bits from `qh` at `hshifts`, minus 16, scaled by d.
fn q5_0_quad(q: u32, shifts: vec4<u32>, qh: u32, hshifts: vec4<u32>, d: f32) -> vec4<f32> {
    let lo = (vec4<u32>(q) >> shifts) & vec4<u32>(15u);
    let hi = ((vec4<u32>(qh) >> hshifts) & vec4<u32>(1u)) << vec4<u32>(4u);
    return d * (vec4<f32>(lo | hi) - vec4<f32>(16.0));
}

fn w_unit4(base: u32, u: u32, cols: u32) -> Unit {
    let nb = cols / 32u;
    let d = w_half(base, 0u, u);
    let body = (nb + 1u) / 2u;
    let qh = w_word(base, body + u);
    let qb = body + nb + u * 4u;
    let q0 = w_word(base, qb);
    let q1 = w_word(base, qb + 1u);
    let q2 = w_word(base, qb + 2u);
    let q3 = w_word(base, qb + 3u);
    let hi = BYTE_SHIFTS + 4u;
    let j = vec4<u32>(0u, 1u, 2u, 3u);
    return Unit(q5_0_quad(q0, BYTE_SHIFTS, qh, j, d), q5_0_quad(q1, BYTE_SHIFTS, qh, j + 4u, d),
                q5_0_quad(q2, BYTE_SHIFTS, qh, j + 8u, d), q5_0_quad(q3, BYTE_SHIFTS, qh, j + 12u, d),
                q5_0_quad(q0, hi, qh, j + 16u, d), q5_0_quad(q1, hi, qh, j + 20u, d),
                q5_0_quad(q2, hi, qh, j + 24u, d), q5_0_quad(q3, hi, qh, j + 28u, d));
}

fn w_dot(base: u32, u: u32, cols: u32, x: XUnit) -> f32 {
    return unit_dot(w_unit4(base, u, cols), x.v);
}

fn w_dot_pair(base: u32, u: u32, cols: u32, x: XUnit, z: XUnit) -> f32 {
    return w_dot(base, u, cols, x) + w_dot(base, u + 1u, cols, z);
}
