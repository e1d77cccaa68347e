// q5_K weight loaders: 256-weight blocks, each 32-weight unit scale · 5-bit quant − offset.
//
// Row layout: GGUF's 44-word blocks, [f16 d, dmin][12 bytes of 6-bit scales and mins]
// [32 bytes of fifth bits][128 nibble bytes as q4_K's].

fn w_load(base: u32, k: u32, cols: u32) -> f32 {
    let blk = (k >> 8u) * 44u;
    let j = k & 255u;
    let c = j >> 6u;
    let l = j & 63u;
    let dm = unpack2x16float(w_word(base, blk));
    let sm = k_scale_min(base, blk + 1u, 2u * c + select(0u, 1u, l >= 32u));
    let byte = w_byte(base, blk + 12u, c * 32u + (l & 31u));
    var q = select(byte & 15u, byte >> 4u, l >= 32u);
    let u = select(1u, 2u, l >= 32u) << (2u * c);
    q += select(0u, 16u, (w_byte(base, blk + 4u, l & 31u) & u) != 0u);
    return dm.x * sm.x * f32(q) - dm.y * sm.y;
}

fn w_unit(base: u32, u: u32, cols: u32, v: ptr<function, array<f32, 32>>) {
    let is = u & 7u;
    let blk = (u >> 3u) * 44u;
    let dm = unpack2x16float(w_word(base, blk));
    let sm = k_scale_min(base, blk + 1u, is);
    let scale = dm.x * sm.x;
    let off = dm.y * sm.y;
    let shift = (is & 1u) * 4u;
    let qs = blk + 12u + (is >> 1u) * 8u;
    let mask = select(1u, 2u, (is & 1u) == 1u) << (2u * (is >> 1u));
    for (var i = 0u; i < 8u; i++) {
        let word = w_word(base, qs + i);
        let hword = w_word(base, blk + 4u + i);
        for (var k = 0u; k < 4u; k++) {
            var q = (word >> (8u * k + shift)) & 15u;
            q += select(0u, 16u, ((hword >> (8u * k)) & mask) != 0u);
            (*v)[4u * i + k] = scale * f32(q) - off;
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
