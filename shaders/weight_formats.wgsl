// Weight element loaders shared by the matrix kernels: `w` is a row-major matrix stored as
// array<u32> (rows padded to whole words); `base` is the row's first word, `k` the column.
fn w_load(base: u32, k: u32) -> f32 {
#ifdef W_F32
    return bitcast<f32>(w[base + k]);
#endif
#ifdef W_F16
    let word = w[base + (k >> 1u)];
    return unpack2x16float(word)[k & 1u];
#endif
#ifdef W_BF16
    let word = w[base + (k >> 1u)];
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (k & 1u) == 1u));
#endif
}
