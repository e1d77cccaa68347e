// f32 weight loaders: one word per element.

fn w_load(base: u32, k: u32, cols: u32) -> f32 {
    return bitcast<f32>(w_word(base, k));
}

fn w_unit(base: u32, u: u32, cols: u32, v: ptr<function, array<f32, 32>>) {
    for (var j = 0u; j < 32u; j++) {
        (*v)[j] = bitcast<f32>(w_word(base, u * 32u + j));
    }
}

fn w_unit4(base: u32, u: u32, cols: u32) -> Unit {
    let o = u * 32u;
    return Unit(bitcast<vec4<f32>>(w_quad(base, o)), bitcast<vec4<f32>>(w_quad(base, o + 4u)),
                bitcast<vec4<f32>>(w_quad(base, o + 8u)), bitcast<vec4<f32>>(w_quad(base, o + 12u)),
                bitcast<vec4<f32>>(w_quad(base, o + 16u)), bitcast<vec4<f32>>(w_quad(base, o + 20u)),
                bitcast<vec4<f32>>(w_quad(base, o + 24u)), bitcast<vec4<f32>>(w_quad(base, o + 28u)));
}

fn w_dot(base: u32, u: u32, cols: u32, x: XUnit) -> f32 {
    return unit_dot(w_unit4(base, u, cols), x.v);
}

fn w_dot_pair(base: u32, u: u32, cols: u32, x: XUnit, z: XUnit) -> f32 {
    return w_dot(base, u, cols, x) + w_dot(base, u + 1u, cols, z);
}
