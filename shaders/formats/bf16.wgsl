// bf16 weight loaders: two per word, the lower half first, each the top half of an f32.

fn w_load(base: u32, k: u32, cols: u32) -> f32 {
    let word = w_word(base, k >> 1u);
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (k & 1u) == 1u));
}

fn w_unit(base: u32, u: u32, cols: u32, v: ptr<function, array<f32, 32>>) {
    for (var j = 0u; j < 16u; j++) {
        let word = w_word(base, u * 16u + j);
        (*v)[2u * j] = bitcast<f32>(word << 16u);
        (*v)[2u * j + 1u] = bitcast<f32>(word & 0xffff0000u);
    }
}

// Four bf16 from two words.
fn bf16_quad(a: u32, b: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(a << 16u, a & 0xffff0000u, b << 16u, b & 0xffff0000u));
}

fn w_unit4(base: u32, u: u32, cols: u32) -> Unit {
    let o = u * 16u;
    let q0 = w_quad(base, o);
    let q1 = w_quad(base, o + 4u);
    let q2 = w_quad(base, o + 8u);
    let q3 = w_quad(base, o + 12u);
    return Unit(bf16_quad(q0.x, q0.y), bf16_quad(q0.z, q0.w), bf16_quad(q1.x, q1.y), bf16_quad(q1.z, q1.w),
                bf16_quad(q2.x, q2.y), bf16_quad(q2.z, q2.w), bf16_quad(q3.x, q3.y), bf16_quad(q3.z, q3.w));
}

fn w_dot(base: u32, u: u32, cols: u32, x: XUnit) -> f32 {
    return unit_dot(w_unit4(base, u, cols), x.v);
}

fn w_dot_pair(base: u32, u: u32, cols: u32, x: XUnit, z: XUnit) -> f32 {
    return w_dot(base, u, cols, x) + w_dot(base, u + 1u, cols, z);
}
