// f16 weight loaders: two per word, the lower half first.

fn w_load(base: u32, k: u32, cols: u32) -> f32 {
    return w_half(base, 0u, k);
}

fn w_unit(base: u32, u: u32, cols: u32, v: ptr<function, array<f32, 32>>) {
    for (var j = 0u; j < 16u; j++) {
        let pair = unpack2x16float(w_word(base, u * 16u + j));
        (*v)[2u * j] = pair.x;
        (*v)[2u * j + 1u] = pair.y;
    }
}

// Four f16 from two words.
fn f16_quad(a: u32, b: u32) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(a), unpack2x16float(b));
}

fn w_unit4(base: u32, u: u32, cols: u32) -> Unit {
    let o = u * 16u;
    let q0 = w_quad(base, o);
    let q1 = w_quad(base, o + 4u);
    let q2 = w_quad(base, o + 8u);
    let q3 = w_quad(base, o + 12u);
    return Unit(f16_quad(q0.x, q0.y), f16_quad(q0.z, q0.w), f16_quad(q1.x, q1.y), f16_quad(q1.z, q1.w),
                f16_quad(q2.x, q2.y), f16_quad(q2.z, q2.w), f16_quad(q3.x, q3.y), f16_quad(q3.z, q3.w));
}

fn w_dot(base: u32, u: u32, cols: u32, x: XUnit) -> f32 {
    return unit_dot(w_unit4(base, u, cols), x.v);
}

fn w_dot_pair(base: u32, u: u32, cols: u32, x: XUnit, z: XUnit) -> f32 {
    return w_dot(base, u, cols, x) + w_dot(base, u + 1u, cols, z);
}
