// q4_1 weight loaders: 32-weight blocks of nibbles times an f16 scale, plus an f16 min.
//
// Row layout: GGUF's 5-word blocks, [scale, min][16 quant bytes] (element j of a block in
// the low nibble of byte j, element j + 16 in its high nibble).

fn w_load(base: u32, k: u32, cols: u32) -> f32 {
    let b = k >> 5u;
    let j = k & 31u;
    let blk = b * 5u;
    let dm = unpack2x16float(w_word(base, blk));
    let byte = w_byte(base, blk + 1u, j & 15u);
    let q = select(byte & 15u, byte >> 4u, j >= 16u);
    return f32(q) * dm.x + dm.y;
}

fn w_unit(base: u32, u: u32, cols: u32, v: ptr<function, array<f32, 32>>) {
    let blk = u * 5u;
    let dm = unpack2x16float(w_word(base, blk));
    for (var i = 0u; i < 4u; i++) {
        let word = w_word(base, blk + 1u + i);
        for (var k = 0u; k < 4u; k++) {
            let byte = (word >> (8u * k)) & 0xffu;
            (*v)[4u * i + k] = f32(byte & 15u) * dm.x + dm.y;
            (*v)[4u * i + k + 16u] = f32(byte >> 4u) * dm.x + dm.y;
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
