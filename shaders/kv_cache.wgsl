// KV cache element access, joined before the kernels that read or write the cache (attention,
// attention_tiled, qk_norm_rope). Each kernel binds one page's K and V as `k_cache` and
// `v_cache` (array<u32>); a cache position's row starts at word `row` of its page, and holds
// every kv head's head_dim elements in one of three types:
//   f16 (default): pairs packed in one u32 (kv head h, element d at word (h·hd + d) / 2);
//   KV_F32: one f32 per word;
//   KV_Q8_0: llama.cpp's q8_0 blocks (32 elements as int8 times an f16 scale), each head's
//     blocks in pairs of 17 words: [scale of block 0 | scale of block 1 (f16 pair)], block 0's
//     32 int8 (8 words), block 1's; past hd (a head's last block or pair) zero padding.

// Words each kv head takes in a position's row.
fn kv_head_words(hd: u32) -> u32 {
#ifdef KV_F32
    return hd;
#else
#ifdef KV_Q8_0
    return (hd + 63u) / 64u * 17u;
#else
    return hd / 2u;
#endif
#endif
}

#ifdef KV_Q8_0
// Element d of a block pair from its scale word and the quant word holding it.
fn q8_0_elem(scales: u32, quants: u32, d: u32) -> f32 {
    let q = bitcast<i32>(quants << (24u - 8u * (d & 3u))) >> 24u;
    return unpack2x16float(scales)[(d >> 5u) & 1u] * f32(q);
}

// Word offsets (scale word, quant word) of element d of kv head h within a row.
fn q8_0_words(h: u32, d: u32, hd: u32) -> vec2<u32> {
    let pair = h * kv_head_words(hd) + (d >> 6u) * 17u;
    return vec2<u32>(pair, pair + 1u + ((d >> 5u) & 1u) * 8u + ((d & 31u) >> 2u));
}
#endif

fn k_elem(row: u32, h: u32, d: u32, hd: u32) -> f32 {
#ifdef KV_F32
    return bitcast<f32>(k_cache[row + h * hd + d]);
#else
#ifdef KV_Q8_0
    let w = q8_0_words(h, d, hd);
    return q8_0_elem(k_cache[row + w.x], k_cache[row + w.y], d);
#else
    return unpack2x16float(k_cache[row + (h * hd + d) / 2u])[d & 1u];
#endif
#endif
}

fn v_elem(row: u32, h: u32, d: u32, hd: u32) -> f32 {
#ifdef KV_F32
    return bitcast<f32>(v_cache[row + h * hd + d]);
#else
#ifdef KV_Q8_0
    let w = q8_0_words(h, d, hd);
    return q8_0_elem(v_cache[row + w.x], v_cache[row + w.y], d);
#else
    return unpack2x16float(v_cache[row + (h * hd + d) / 2u])[d & 1u];
#endif
#endif
}

// One q8_0 block as llama.cpp quantizes it: d = max|x| / 127 (stored as f16), quants
// round(x / d) half away from zero, packed four int8 per word (element 4i + j in byte j).
struct Q8Block {
    scale: f32,
    quants: array<u32, 8>,
}

fn q8_0_quantize(x: array<f32, 32>) -> Q8Block {
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        amax = max(amax, abs(x[i]));
    }
    let d = amax / 127.0;
    let id = select(0.0, 1.0 / d, d != 0.0);
    var b: Q8Block;
    b.scale = d;
    for (var w = 0u; w < 8u; w++) {
        var word = 0u;
        for (var j = 0u; j < 4u; j++) {
            let v = x[4u * w + j] * id;
            let q = i32(sign(v) * floor(abs(v) + 0.5));
            word |= (bitcast<u32>(q) & 0xffu) << (8u * j);
        }
        b.quants[w] = word;
    }
    return b;
}

// Elements d..d+3 (d a multiple of 4) of kv head h in a K or V row, from the row's words:
// four f32 words, two f16 pairs, or a q8_0 scale word and one quant word.
#ifdef KV_F32
fn k_vec4(row: u32, h: u32, d: u32, hd: u32) -> vec4<f32> {
    let b = row + h * hd + d;
    return bitcast<vec4<f32>>(vec4<u32>(k_cache[b], k_cache[b + 1u], k_cache[b + 2u], k_cache[b + 3u]));
}

fn v_vec4(row: u32, h: u32, d: u32, hd: u32) -> vec4<f32> {
    let b = row + h * hd + d;
    return bitcast<vec4<f32>>(vec4<u32>(v_cache[b], v_cache[b + 1u], v_cache[b + 2u], v_cache[b + 3u]));
}
#else
#ifdef KV_Q8_0
fn q8_0_vec4(scales: u32, quants: u32, d: u32) -> vec4<f32> {
    let q = vec4<i32>(bitcast<i32>(quants << 24u), bitcast<i32>(quants << 16u),
                      bitcast<i32>(quants << 8u), bitcast<i32>(quants)) >> vec4<u32>(24u);
    return unpack2x16float(scales)[(d >> 5u) & 1u] * vec4<f32>(q);
}

fn k_vec4(row: u32, h: u32, d: u32, hd: u32) -> vec4<f32> {
    let w = q8_0_words(h, d, hd);
    return q8_0_vec4(k_cache[row + w.x], k_cache[row + w.y], d);
}

fn v_vec4(row: u32, h: u32, d: u32, hd: u32) -> vec4<f32> {
    let w = q8_0_words(h, d, hd);
    return q8_0_vec4(v_cache[row + w.x], v_cache[row + w.y], d);
}
#else
fn k_vec4(row: u32, h: u32, d: u32, hd: u32) -> vec4<f32> {
    let b = row + (h * hd + d) / 2u;
    return vec4<f32>(unpack2x16float(k_cache[b]), unpack2x16float(k_cache[b + 1u]));
}

fn v_vec4(row: u32, h: u32, d: u32, hd: u32) -> vec4<f32> {
    let b = row + (h * hd + d) / 2u;
    return vec4<f32>(unpack2x16float(v_cache[b]), unpack2x16float(v_cache[b + 1u]));
}
#endif
#endif
