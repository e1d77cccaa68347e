// Weight element loaders shared by the matrix kernels: `w` is a row-major matrix stored as
// array<u32>, each row in its format's GPU layout (src/gpu/formats.rs); `base` is the row's
// first word, `k` the column, `cols` the row length. Quantized rows whose blocks are not
// 4-byte aligned hold their f16 block scales first (padded to a word), then the rest.

// Byte `i` counted from word `base`.
fn w_byte(base: u32, i: u32) -> u32 {
    return (w[base + (i >> 2u)] >> ((i & 3u) * 8u)) & 0xffu;
}

// f16 number `i` counted from word `base`.
fn w_half(base: u32, i: u32) -> f32 {
    return unpack2x16float(w[base + (i >> 1u)])[i & 1u];
}

// The 6-bit (scale, min) of sub-block `is` of a q4_K / q5_K block whose scales start at word `s`.
fn k_scale_min(s: u32, is: u32) -> vec2<f32> {
    if (is < 4u) {
        return vec2<f32>(f32(w_byte(s, is) & 63u), f32(w_byte(s, is + 4u) & 63u));
    }
    let sc = (w_byte(s, is + 4u) & 15u) | ((w_byte(s, is - 4u) >> 6u) << 4u);
    let m = (w_byte(s, is + 4u) >> 4u) | ((w_byte(s, is) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

fn w_load(base: u32, k: u32, cols: u32) -> f32 {
#ifdef W_F32
    return bitcast<f32>(w[base + k]);
#endif
#ifdef W_F16
    return w_half(base, k);
#endif
#ifdef W_BF16
    let word = w[base + (k >> 1u)];
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (k & 1u) == 1u));
#endif
#ifdef W_Q8_0
    let b = k >> 5u;
    let body = base + (cols / 32u + 1u) / 2u;
    let q = bitcast<i32>(w_byte(body, k) << 24u) >> 24u;
    return w_half(base, b) * f32(q);
#endif
#ifdef W_Q4_0
    let b = k >> 5u;
    let j = k & 31u;
    let body = base + (cols / 32u + 1u) / 2u;
    let byte = w_byte(body, b * 16u + (j & 15u));
    let q = select(byte & 15u, byte >> 4u, j >= 16u);
    return (f32(q) - 8.0) * w_half(base, b);
#endif
#ifdef W_Q4_1
    let b = k >> 5u;
    let j = k & 31u;
    let blk = base + b * 5u;
    let dm = unpack2x16float(w[blk]);
    let byte = w_byte(blk + 1u, j & 15u);
    let q = select(byte & 15u, byte >> 4u, j >= 16u);
    return f32(q) * dm.x + dm.y;
#endif
#ifdef W_Q5_0
    let nb = cols / 32u;
    let b = k >> 5u;
    let j = k & 31u;
    let body = base + (nb + 1u) / 2u;
    let qh = w[body + b];
    let byte = w_byte(body + nb, b * 16u + (j & 15u));
    let lo = select(byte & 15u, byte >> 4u, j >= 16u);
    let q = lo | (((qh >> j) & 1u) << 4u);
    return (f32(q) - 16.0) * w_half(base, b);
#endif
#ifdef W_Q4_K
    let blk = base + (k >> 8u) * 36u;
    let j = k & 255u;
    let c = j >> 6u;
    let l = j & 63u;
    let dm = unpack2x16float(w[blk]);
    let sm = k_scale_min(blk + 1u, 2u * c + select(0u, 1u, l >= 32u));
    let byte = w_byte(blk + 4u, c * 32u + (l & 31u));
    let q = select(byte & 15u, byte >> 4u, l >= 32u);
    return dm.x * sm.x * f32(q) - dm.y * sm.y;
#endif
#ifdef W_Q5_K
    let blk = base + (k >> 8u) * 44u;
    let j = k & 255u;
    let c = j >> 6u;
    let l = j & 63u;
    let dm = unpack2x16float(w[blk]);
    let sm = k_scale_min(blk + 1u, 2u * c + select(0u, 1u, l >= 32u));
    let byte = w_byte(blk + 12u, c * 32u + (l & 31u));
    var q = select(byte & 15u, byte >> 4u, l >= 32u);
    let u = select(1u, 2u, l >= 32u) << (2u * c);
    q += select(0u, 16u, (w_byte(blk + 4u, l & 31u) & u) != 0u);
    return dm.x * sm.x * f32(q) - dm.y * sm.y;
#endif
#ifdef W_Q6_K
    let b = k >> 8u;
    let j = k & 255u;
    let body = base + (cols / 256u + 1u) / 2u + b * 52u;
    let n = j >> 7u;
    let quarter = (j & 127u) >> 5u;
    let l = j & 31u;
    let byte = w_byte(body, n * 64u + l + 32u * (quarter & 1u));
    let lo = select(byte & 15u, byte >> 4u, quarter >= 2u);
    let hi = (w_byte(body + 32u, n * 32u + l) >> (2u * quarter)) & 3u;
    let q = i32(lo | (hi << 4u)) - 32;
    let sc = bitcast<i32>(w_byte(body + 48u, n * 8u + l / 16u + 2u * quarter) << 24u) >> 24u;
    return w_half(base, b) * f32(sc) * f32(q);
#endif
}
