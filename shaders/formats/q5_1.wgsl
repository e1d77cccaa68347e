// q5_1 weight loaders: 32-weight blocks of 5-bit quants times an f16 scale, plus an f16 min.
//
// Row layout: GGUF's 6-word blocks, [scale, min][fifth bits][16 nibble bytes] (element j
// low in byte j, element j + 16 high).

fn w_load(base: u32, k: u32, cols: u32) -> f32 {
    let j = k & 31u;
    let blk = (k >> 5u) * 6u;
    let dm = unpack2x16float(w_word(base, blk));
    let byte = w_byte(base, blk + 2u, j & 15u);
    let lo = select(byte & 15u, byte >> 4u, j >= 16u);
    return f32(lo | (((w_word(base, blk + 1u) >> j) & 1u) << 4u)) * dm.x + dm.y;
}

fn w_unit(base: u32, u: u32, cols: u32, v: ptr<function, array<f32, 32>>) {
    let blk = u * 6u;
    let dm = unpack2x16float(w_word(base, blk));
    let qh = w_word(base, blk + 1u);
    for (var i = 0u; i < 4u; i++) {
        let word = w_word(base, blk + 2u + i);
        for (var k = 0u; k < 4u; k++) {
            let j = 4u * i + k;
            let byte = (word >> (8u * k)) & 0xffu;
            let lo = (byte & 15u) | (((qh >> j) & 1u) << 4u);
            let hi = (byte >> 4u) | (((qh >> (j + 16u)) & 1u) << 4u);
            (*v)[j] = f32(lo) * dm.x + dm.y;
            (*v)[j + 16u] = f32(hi) * dm.x + dm.y;
        }
    }
}

fn w_unit4(base: u32, u: u32, cols: u32) -> Unit {
    return w_unit_packed(base, u, cols);
}

fn w_dot(base: u32, u: u32, cols: u32, x: XUnit) -> f32 {
    return unit_dot(w_unit4(base, u, cols), x.v);
}

fn w_dot_pair(base: u32, u: u32, cols: u32, x: XUnit, z: XUnit) -> f32 {
    return w_dot(base, u, cols, x) + w_dot(base, u + 1u, cols, z);
}
