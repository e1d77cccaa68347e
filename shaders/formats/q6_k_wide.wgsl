// Q6KWide weight loaders (q6_K re-encoded for CPU devices): byte quants minus 32, f32 scales.
//
// Row layout: two f32 scales per 32 weights (d · int8 scale, one per 16), then one byte
// per weight holding its 6-bit quant biased by 32.

fn w_load(base: u32, k: u32, cols: u32) -> f32 {
    let u = k >> 5u;
    let e = k & 31u;
    let sc = bitcast<f32>(w_word(base, 2u * u + (e >> 4u)));
    return sc * (f32(w_byte(base, cols / 32u * 2u, k)) - 32.0);
}

fn w_unit(base: u32, u: u32, cols: u32, v: ptr<function, array<f32, 32>>) {
    let s0 = bitcast<f32>(w_word(base, 2u * u));
    let s1 = bitcast<f32>(w_word(base, 2u * u + 1u));
    let body = cols / 32u * 2u + u * 8u;
    for (var i = 0u; i < 8u; i++) {
        let word = w_word(base, body + i);
        let sc = select(s0, s1, i >= 4u);
        for (var k = 0u; k < 4u; k++) {
            (*v)[4u * i + k] = sc * (f32((word >> (8u * k)) & 0xffu) - 32.0);
        }
    }
}

// The four biased quant bytes of `q`, minus 32, scaled by sc.
fn q6_k_wide_quad(q: u32, sc: f32) -> vec4<f32> {
    return sc * (vec4<f32>((vec4<u32>(q) >> BYTE_SHIFTS) & vec4<u32>(0xffu)) - vec4<f32>(32.0));
}

fn w_unit4(base: u32, u: u32, cols: u32) -> Unit {
    let s0 = bitcast<f32>(w_word(base, 2u * u));
    let s1 = bitcast<f32>(w_word(base, 2u * u + 1u));
    let body = cols / 32u * 2u + u * 8u;
    let q0 = w_quad(base, body);
    let q1 = w_quad(base, body + 4u);
    return Unit(q6_k_wide_quad(q0.x, s0), q6_k_wide_quad(q0.y, s0), q6_k_wide_quad(q0.z, s0),
                q6_k_wide_quad(q0.w, s0), q6_k_wide_quad(q1.x, s1), q6_k_wide_quad(q1.y, s1),
                q6_k_wide_quad(q1.z, s1), q6_k_wide_quad(q1.w, s1));
}

// Σ sc · (q − 32) x over one Q6KWide unit: quants q0 (weights 0..15), q1 (16..31), scales s.
fn q6_k_wide_dot(q0: vec4<u32>, q1: vec4<u32>, s: vec2<f32>, x: XUnit) -> f32 {
    let m = vec4<u32>(0x3fu, 0x3f00u, 0x3f0000u, 0x3f000000u);
    let lo = masked_dot(q0.x, m, x.v.a) + masked_dot(q0.y, m, x.v.b)
        + masked_dot(q0.z, m, x.v.c) + masked_dot(q0.w, m, x.v.d);
    let hi = masked_dot(q1.x, m, x.v.e) + masked_dot(q1.y, m, x.v.f)
        + masked_dot(q1.z, m, x.v.g) + masked_dot(q1.w, m, x.v.h);
    return s.x * (lo - 32.0 * x.sums.x) + s.y * (hi - 32.0 * x.sums.y);
}

fn w_dot(base: u32, u: u32, cols: u32, x: XUnit) -> f32 {
    let s = vec2<f32>(bitcast<f32>(w_word(base, 2u * u)), bitcast<f32>(w_word(base, 2u * u + 1u)));
    let body = cols / 32u * 2u + u * 8u;
    return q6_k_wide_dot(w_quad(base, body), w_quad(base, body + 4u), s, x);
}

// The pair loads its four scales as one quad.
fn w_dot_pair(base: u32, u: u32, cols: u32, x: XUnit, z: XUnit) -> f32 {
    let sc = bitcast<vec4<f32>>(w_quad(base, 2u * u));
    let body = cols / 32u * 2u + u * 8u;
    return q6_k_wide_dot(w_quad(base, body), w_quad(base, body + 4u), sc.xy, x)
        + q6_k_wide_dot(w_quad(base, body + 8u), w_quad(base, body + 12u), sc.zw, z);
}
