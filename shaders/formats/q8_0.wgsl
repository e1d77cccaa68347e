// q8_0 weight loaders: 32-weight blocks of signed bytes times an f16 scale.
//
// Row layout: the blocks' f16 scales (padded to a word), then their 32 quant bytes each.

fn w_load(base: u32, k: u32, cols: u32) -> f32 {
    let b = k >> 5u;
    let body = (cols / 32u + 1u) / 2u;
    let q = bitcast<i32>(w_byte(base, body, k) << 24u) >> 24u;
    return w_half(base, 0u, b) * f32(q);
}

fn w_unit(base: u32, u: u32, cols: u32, v: ptr<function, array<f32, 32>>) {
    let d = w_half(base, 0u, u);
    let body = (cols / 32u + 1u) / 2u + u * 8u;
    for (var i = 0u; i < 8u; i++) {
        let word = w_word(base, body + i);
        for (var k = 0u; k < 4u; k++) {
            (*v)[4u * i + k] = d * f32(bitcast<i32>(word << (24u - 8u * k)) >> 24u);
        }
    }
}

// The four signed bytes of `q`, scaled by d.
fn q8_0_quad(q: u32, d: f32) -> vec4<f32> {
    return d * vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(q) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// A q8_0 unit from its 32 quant bytes and scale.
fn q8_0_unit(q0: vec4<u32>, q1: vec4<u32>, d: f32) -> Unit {
    return Unit(q8_0_quad(q0.x, d), q8_0_quad(q0.y, d), q8_0_quad(q0.z, d), q8_0_quad(q0.w, d),
                q8_0_quad(q1.x, d), q8_0_quad(q1.y, d), q8_0_quad(q1.z, d), q8_0_quad(q1.w, d));
}

fn w_unit4(base: u32, u: u32, cols: u32) -> Unit {
    let body = (cols / 32u + 1u) / 2u + u * 8u;
    return q8_0_unit(w_quad(base, body), w_quad(base, body + 4u), w_half(base, 0u, u));
}

fn w_dot(base: u32, u: u32, cols: u32, x: XUnit) -> f32 {
    return unit_dot(w_unit4(base, u, cols), x.v);
}

// The pair loads its shared scale word once.
fn w_dot_pair(base: u32, u: u32, cols: u32, x: XUnit, z: XUnit) -> f32 {
    let d = unpack2x16float(w_word(base, u / 2u));
    let body = (cols / 32u + 1u) / 2u + u * 8u;
    return unit_dot(q8_0_unit(w_quad(base, body), w_quad(base, body + 4u), d.x), x.v)
        + unit_dot(q8_0_unit(w_quad(base, body + 8u), w_quad(base, body + 12u), d.y), z.v);
}
