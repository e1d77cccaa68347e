// Weight element loaders shared by the matrix kernels: `w` holds one page of a row-major
// matrix as array<u32>, each row in its format's GPU layout (src/gpu/formats.rs). A row is
// named by `base` (w_row) and its words by offsets `o` from the row's start (w_at); `k` is a
// column, `cols` the row length. Quantized rows whose blocks are not 4-byte aligned hold
// their f16 block scales first (padded to a word), then the rest.
//
// With W_TILE_LOG2 = t the page is stored in tiles of 2^t rows that interleave their rows'
// words eight at a time (word o of tile row j at (o / 8) · 2^t · 8 + 8j + o % 8): a workgroup
// that walks many rows in step then reads one contiguous stream instead of one per row,
// which CPU prefetchers follow (CPU devices; src/gpu/weights.rs, docs/PERF.md).

// log2 of the words each row keeps together in a tile (TILE_CHUNK_WORDS in weights.rs).
const TILE_CHUNK_LOG2 = 3u;

// First word of row `r` of the page (in a tiled page: of its tile, plus its lane in it).
fn w_row(r: u32, row_words: u32) -> u32 {
#ifdef W_TILE_LOG2
    return (r >> W_TILE_LOG2) * (row_words << W_TILE_LOG2) + ((r & ((1u << W_TILE_LOG2) - 1u)) << TILE_CHUNK_LOG2);
#else
    return r * row_words;
#endif
}

// Where word `o` of the row at `base` lives.
fn w_at(base: u32, o: u32) -> u32 {
#ifdef W_TILE_LOG2
    return base + ((o >> TILE_CHUNK_LOG2) << (W_TILE_LOG2 + TILE_CHUNK_LOG2)) + (o & ((1u << TILE_CHUNK_LOG2) - 1u));
#else
    return base + o;
#endif
}

// Word `o` of the row at `base`.
fn w_word(base: u32, o: u32) -> u32 {
    return w[w_at(base, o)];
}

// Byte `i` counted from word `o` of the row at `base`.
fn w_byte(base: u32, o: u32, i: u32) -> u32 {
    return (w_word(base, o + (i >> 2u)) >> ((i & 3u) * 8u)) & 0xffu;
}

// f16 number `i` counted from word `o` of the row at `base`.
fn w_half(base: u32, o: u32, i: u32) -> f32 {
    return unpack2x16float(w_word(base, o + (i >> 1u)))[i & 1u];
}

// The 6-bit (scale, min) of sub-block `is` of a q4_K / q5_K block whose scales start at word
// `s` of the row at `base`.
fn k_scale_min(base: u32, s: u32, is: u32) -> vec2<f32> {
    if (is < 4u) {
        return vec2<f32>(f32(w_byte(base, s, is) & 63u), f32(w_byte(base, s, is + 4u) & 63u));
    }
    let sc = (w_byte(base, s, is + 4u) & 15u) | ((w_byte(base, s, is - 4u) >> 6u) << 4u);
    let m = (w_byte(base, s, is + 4u) >> 4u) | ((w_byte(base, s, is) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

fn w_load(base: u32, k: u32, cols: u32) -> f32 {
#ifdef W_F32
    return bitcast<f32>(w_word(base, k));
#endif
#ifdef W_F16
    return w_half(base, 0u, k);
#endif
#ifdef W_BF16
    let word = w_word(base, k >> 1u);
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (k & 1u) == 1u));
#endif
#ifdef W_Q8_0
    let b = k >> 5u;
    let body = (cols / 32u + 1u) / 2u;
    let q = bitcast<i32>(w_byte(base, body, k) << 24u) >> 24u;
    return w_half(base, 0u, b) * f32(q);
#endif
#ifdef W_Q4_0
    let b = k >> 5u;
    let j = k & 31u;
    let body = (cols / 32u + 1u) / 2u;
    let byte = w_byte(base, body, b * 16u + (j & 15u));
    let q = select(byte & 15u, byte >> 4u, j >= 16u);
    return (f32(q) - 8.0) * w_half(base, 0u, b);
#endif
#ifdef W_Q4_1
    let b = k >> 5u;
    let j = k & 31u;
    let blk = b * 5u;
    let dm = unpack2x16float(w_word(base, blk));
    let byte = w_byte(base, blk + 1u, j & 15u);
    let q = select(byte & 15u, byte >> 4u, j >= 16u);
    return f32(q) * dm.x + dm.y;
#endif
#ifdef W_Q5_0
    let nb = cols / 32u;
    let b = k >> 5u;
    let j = k & 31u;
    let body = (nb + 1u) / 2u;
    let qh = w_word(base, body + b);
    let byte = w_byte(base, body + nb, b * 16u + (j & 15u));
    let lo = select(byte & 15u, byte >> 4u, j >= 16u);
    let q = lo | (((qh >> j) & 1u) << 4u);
    return (f32(q) - 16.0) * w_half(base, 0u, b);
#endif
#ifdef W_Q5_1
    let j = k & 31u;
    let blk = (k >> 5u) * 6u;
    let dm = unpack2x16float(w_word(base, blk));
    let byte = w_byte(base, blk + 2u, j & 15u);
    let lo = select(byte & 15u, byte >> 4u, j >= 16u);
    return f32(lo | (((w_word(base, blk + 1u) >> j) & 1u) << 4u)) * dm.x + dm.y;
#endif
#ifdef W_Q4_K
    let blk = (k >> 8u) * 36u;
    let j = k & 255u;
    let c = j >> 6u;
    let l = j & 63u;
    let dm = unpack2x16float(w_word(base, blk));
    let sm = k_scale_min(base, blk + 1u, 2u * c + select(0u, 1u, l >= 32u));
    let byte = w_byte(base, blk + 4u, c * 32u + (l & 31u));
    let q = select(byte & 15u, byte >> 4u, l >= 32u);
    return dm.x * sm.x * f32(q) - dm.y * sm.y;
#endif
#ifdef W_Q5_K
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
#endif
#ifdef W_Q6_K
    let b = k >> 8u;
    let j = k & 255u;
    let body = (cols / 256u + 1u) / 2u + b * 52u;
    let n = j >> 7u;
    let quarter = (j & 127u) >> 5u;
    let l = j & 31u;
    let byte = w_byte(base, body, n * 64u + l + 32u * (quarter & 1u));
    let lo = select(byte & 15u, byte >> 4u, quarter >= 2u);
    let hi = (w_byte(base, body + 32u, n * 32u + l) >> (2u * quarter)) & 3u;
    let q = i32(lo | (hi << 4u)) - 32;
    let sc = bitcast<i32>(w_byte(base, body + 48u, n * 8u + l / 16u + 2u * quarter) << 24u) >> 24u;
    return w_half(base, 0u, b) * f32(sc) * f32(q);
#endif
#ifdef W_Q6_K_WIDE
    let u = k >> 5u;
    let e = k & 31u;
    let sc = bitcast<f32>(w_word(base, 2u * u + (e >> 4u)));
    return sc * (f32(w_byte(base, cols / 32u * 2u, k)) - 32.0);
#endif
}

#ifdef W_Q4_K
// Where unit u of a q4_K row lives: the offset of its 8 quant words, the nibble shift, and
// `so`: its sub-block's scale d · sc and offset dmin · m.
struct Q4kUnit { qs: u32, shift: u32, so: vec2<f32> }

// The block header (d, dmin and the 12 scale bytes) of unit u: one quad.
fn q4_k_header(base: u32, u: u32) -> vec4<u32> {
    return w_quad(base, (u >> 3u) * 36u);
}

// Unit u of a q4_K row given its block header.
fn q4_k_unit_in(hdr: vec4<u32>, u: u32) -> Q4kUnit {
    let is = u & 7u;
    let so = unpack2x16float(hdr.x) * k_scale_min_regs(hdr.yzw, is);
    return Q4kUnit((u >> 3u) * 36u + 4u + (is >> 1u) * 8u, (is & 1u) * 4u, so);
}

fn q4_k_unit(base: u32, u: u32) -> Q4kUnit {
    return q4_k_unit_in(q4_k_header(base, u), u);
}

// The 6-bit (scale, min) of sub-block `is` from a q4_K block's 12 scale bytes, held in `s`
// (k_scale_min without the loads).
fn k_scale_min_regs(s: vec3<u32>, is: u32) -> vec2<f32> {
    let b0 = (s[is >> 2u] >> ((is & 3u) * 8u)) & 0xffu;
    let b4 = (s[(is + 4u) >> 2u] >> (((is + 4u) & 3u) * 8u)) & 0xffu;
    if (is < 4u) {
        return vec2<f32>(f32(b0 & 63u), f32(b4 & 63u));
    }
    let bm4 = (s[(is - 4u) >> 2u] >> (((is - 4u) & 3u) * 8u)) & 0xffu;
    return vec2<f32>(f32((b4 & 15u) | ((bm4 >> 6u) << 4u)), f32((b4 >> 4u) | ((b0 >> 6u) << 4u)));
}
#endif
#ifdef W_Q6_K
// Where unit u of a q6_K row lives: the offsets of its low-nibble and high-pair words (8
// each), the shifts that select its nibbles and pairs, and its two sub-block scales
// (d · int8 scale).
struct Q6kUnit { ql: u32, qh: u32, lo_shift: u32, hi_shift: u32, sc0: f32, sc1: f32 }

fn q6_k_unit(base: u32, u: u32, cols: u32) -> Q6kUnit {
    let b = u >> 3u;
    let n = (u & 7u) >> 2u;
    let quarter = u & 3u;
    let d = w_half(base, 0u, b);
    let body = (cols / 256u + 1u) / 2u + b * 52u;
    // The two int8 scales share one word (their byte offset is even).
    let sw = w_word(base, body + 48u + n * 2u + quarter / 2u) >> (16u * (quarter & 1u));
    return Q6kUnit(body + (n * 64u + 32u * (quarter & 1u)) / 4u, body + 32u + n * 8u,
                   select(0u, 4u, quarter >= 2u), 2u * quarter,
                   d * f32(bitcast<i32>(sw << 24u) >> 24u), d * f32(bitcast<i32>(sw << 16u) >> 24u));
}
#endif

// Decodes elements 32·u .. 32·u+31 of a row (all formats' rows are whole units of 32 except
// float rows, whose tail the caller reads with w_load).
fn w_unit(base: u32, u: u32, cols: u32, v: ptr<function, array<f32, 32>>) {
#ifdef W_F32
    for (var j = 0u; j < 32u; j++) {
        (*v)[j] = bitcast<f32>(w_word(base, u * 32u + j));
    }
#endif
#ifdef W_F16
    for (var j = 0u; j < 16u; j++) {
        let pair = unpack2x16float(w_word(base, u * 16u + j));
        (*v)[2u * j] = pair.x;
        (*v)[2u * j + 1u] = pair.y;
    }
#endif
#ifdef W_BF16
    for (var j = 0u; j < 16u; j++) {
        let word = w_word(base, u * 16u + j);
        (*v)[2u * j] = bitcast<f32>(word << 16u);
        (*v)[2u * j + 1u] = bitcast<f32>(word & 0xffff0000u);
    }
#endif
#ifdef W_Q8_0
    let d = w_half(base, 0u, u);
    let body = (cols / 32u + 1u) / 2u + u * 8u;
    for (var i = 0u; i < 8u; i++) {
        let word = w_word(base, body + i);
        for (var k = 0u; k < 4u; k++) {
            (*v)[4u * i + k] = d * f32(bitcast<i32>(word << (24u - 8u * k)) >> 24u);
        }
    }
#endif
#ifdef W_Q4_0
    let d = w_half(base, 0u, u);
    let body = (cols / 32u + 1u) / 2u + u * 4u;
    for (var i = 0u; i < 4u; i++) {
        let word = w_word(base, body + i);
        for (var k = 0u; k < 4u; k++) {
            let byte = (word >> (8u * k)) & 0xffu;
            (*v)[4u * i + k] = (f32(byte & 15u) - 8.0) * d;
            (*v)[4u * i + k + 16u] = (f32(byte >> 4u) - 8.0) * d;
        }
    }
#endif
#ifdef W_Q4_1
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
#endif
#ifdef W_Q5_0
    let nb = cols / 32u;
    let d = w_half(base, 0u, u);
    let body = (nb + 1u) / 2u;
    let qh = w_word(base, body + u);
    for (var i = 0u; i < 4u; i++) {
        let word = w_word(base, body + nb + u * 4u + i);
        for (var k = 0u; k < 4u; k++) {
            let j = 4u * i + k;
            let byte = (word >> (8u * k)) & 0xffu;
            let lo = (byte & 15u) | (((qh >> j) & 1u) << 4u);
            let hi = (byte >> 4u) | (((qh >> (j + 16u)) & 1u) << 4u);
            (*v)[j] = (f32(lo) - 16.0) * d;
            (*v)[j + 16u] = (f32(hi) - 16.0) * d;
        }
    }
#endif
#ifdef W_Q5_1
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
#endif
#ifdef W_Q4_K
    let q = q4_k_unit(base, u);
    for (var i = 0u; i < 8u; i++) {
        let word = w_word(base, q.qs + i);
        for (var k = 0u; k < 4u; k++) {
            (*v)[4u * i + k] = q.so.x * f32((word >> (8u * k + q.shift)) & 15u) - q.so.y;
        }
    }
#endif
#ifdef W_Q5_K
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
#endif
#ifdef W_Q6_K
    let q = q6_k_unit(base, u, cols);
    for (var i = 0u; i < 8u; i++) {
        let lw = w_word(base, q.ql + i);
        let hw = w_word(base, q.qh + i);
        let sc = select(q.sc0, q.sc1, i >= 4u);
        for (var k = 0u; k < 4u; k++) {
            let lo = (lw >> (8u * k + q.lo_shift)) & 15u;
            let hi = (hw >> (8u * k + q.hi_shift)) & 3u;
            (*v)[4u * i + k] = sc * f32(i32(lo | (hi << 4u)) - 32);
        }
    }
#endif
#ifdef W_Q6_K_WIDE
    let s0 = bitcast<f32>(w_word(base, 2u * u));
    let s1 = bitcast<f32>(w_word(base, 2u * u + 1u));
    let body = cols / 32u * 2u + u * 8u;
    for (var i = 0u; i < 8u; i++) {
        let word = w_word(base, body + i);
        let sc = select(s0, s1, i >= 4u);
        for (var k = 0u; k < 4u; k++) {
            (*v)[4u * i + k] = sc * (f32((word >> (8u * k)) & 0xffu) - 32.0);
        }
    }
#endif
}

// A 32-weight unit as eight vec4s, elements 4i..4i+3 in the i-th field: registers, not an
// array, so CPU devices keep it out of memory.
struct Unit { a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>, e: vec4<f32>, f: vec4<f32>, g: vec4<f32>, h: vec4<f32> }

fn unit_dot(p: Unit, q: Unit) -> f32 {
    return dot(p.a, q.a) + dot(p.b, q.b) + dot(p.c, q.c) + dot(p.d, q.d)
        + dot(p.e, q.e) + dot(p.f, q.f) + dot(p.g, q.g) + dot(p.h, q.h);
}

const BYTE_SHIFTS = vec4<u32>(0u, 8u, 16u, 24u);

#ifdef W_Q4_0
// Nibbles of `q` at `shifts`, minus 8, scaled by d.
fn q4_0_quad(q: u32, shifts: vec4<u32>, d: f32) -> vec4<f32> {
    return d * (vec4<f32>((vec4<u32>(q) >> shifts) & vec4<u32>(15u)) - vec4<f32>(8.0));
}
#endif
#ifdef W_Q4_0
// A q4_0 unit from its 16 quant bytes and scale.
fn q4_0_unit(q: vec4<u32>, d: f32) -> Unit {
    let hi = BYTE_SHIFTS + 4u;
    return Unit(q4_0_quad(q.x, BYTE_SHIFTS, d), q4_0_quad(q.y, BYTE_SHIFTS, d), q4_0_quad(q.z, BYTE_SHIFTS, d),
                q4_0_quad(q.w, BYTE_SHIFTS, d), q4_0_quad(q.x, hi, d), q4_0_quad(q.y, hi, d),
                q4_0_quad(q.z, hi, d), q4_0_quad(q.w, hi, d));
}
#endif
#ifdef W_Q5_0
// Nibbles of `q` at `shifts` with fifth bits from `qh` at `hshifts`, minus 16, scaled by d.
fn q5_0_quad(q: u32, shifts: vec4<u32>, qh: u32, hshifts: vec4<u32>, d: f32) -> vec4<f32> {
    let lo = (vec4<u32>(q) >> shifts) & vec4<u32>(15u);
    let hi = ((vec4<u32>(qh) >> hshifts) & vec4<u32>(1u)) << vec4<u32>(4u);
    return d * (vec4<f32>(lo | hi) - vec4<f32>(16.0));
}
#endif
#ifdef W_Q8_0
// The four signed bytes of `q`, scaled by d.
fn q8_0_quad(q: u32, d: f32) -> vec4<f32> {
    return d * vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(q) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}
#endif
#ifdef W_Q8_0
// A q8_0 unit from its 32 quant bytes and scale.
fn q8_0_unit(q0: vec4<u32>, q1: vec4<u32>, d: f32) -> Unit {
    return Unit(q8_0_quad(q0.x, d), q8_0_quad(q0.y, d), q8_0_quad(q0.z, d), q8_0_quad(q0.w, d),
                q8_0_quad(q1.x, d), q8_0_quad(q1.y, d), q8_0_quad(q1.z, d), q8_0_quad(q1.w, d));
}
#endif
#ifdef W_Q4_K
// Nibbles of `q` at BYTE_SHIFTS + shift, times scale, minus off.
fn q4_k_quad(q: u32, shift: u32, scale: f32, off: f32) -> vec4<f32> {
    return scale * vec4<f32>((vec4<u32>(q) >> (BYTE_SHIFTS + shift)) & vec4<u32>(15u)) - off;
}
#endif
#ifdef W_Q6_K
// Low nibbles of `lw` and 2-bit highs of `hw`, minus 32, scaled by sc.
fn q6_k_quad(lw: u32, lo_shift: u32, hw: u32, hi_shift: u32, sc: f32) -> vec4<f32> {
    let lo = (vec4<u32>(lw) >> (BYTE_SHIFTS + lo_shift)) & vec4<u32>(15u);
    let hi = ((vec4<u32>(hw) >> (BYTE_SHIFTS + hi_shift)) & vec4<u32>(3u)) << vec4<u32>(4u);
    return sc * (vec4<f32>(lo | hi) - vec4<f32>(32.0));
}
#endif
#ifdef W_Q6_K_WIDE
// The four biased quant bytes of `q`, minus 32, scaled by sc.
fn q6_k_wide_quad(q: u32, sc: f32) -> vec4<f32> {
    return sc * (vec4<f32>((vec4<u32>(q) >> BYTE_SHIFTS) & vec4<u32>(0xffu)) - vec4<f32>(32.0));
}
#endif
// Four 16-bit floats (bf16 with W_BF16, else f16) from two words.
fn half_quad(a: u32, b: u32) -> vec4<f32> {
#ifdef W_BF16
    return bitcast<vec4<f32>>(vec4<u32>(a << 16u, a & 0xffff0000u, b << 16u, b & 0xffff0000u));
#else
    return vec4<f32>(unpack2x16float(a), unpack2x16float(b));
#endif
}

// A unit of f16 or bf16 weights.
fn half_unit(base: u32, u: u32) -> Unit {
    let o = u * 16u;
    let q0 = w_quad(base, o);
    let q1 = w_quad(base, o + 4u);
    let q2 = w_quad(base, o + 8u);
    let q3 = w_quad(base, o + 12u);
    return Unit(half_quad(q0.x, q0.y), half_quad(q0.z, q0.w), half_quad(q1.x, q1.y), half_quad(q1.z, q1.w),
                half_quad(q2.x, q2.y), half_quad(q2.z, q2.w), half_quad(q3.x, q3.y), half_quad(q3.z, q3.w));
}

// Words o..o+3 of the row at `base` (o a multiple of 4 where W_VEC4 makes this one load or
// the rows are tiled, src/gpu/formats.rs `quads_aligned`).
fn w_quad(base: u32, o: u32) -> vec4<u32> {
    let i = w_at(base, o);
#ifdef W_VEC4
    return w4[i >> 2u];
#else
    return vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]);
#endif
}

// w_unit as a Unit: vector arithmetic for the common formats, w_unit's array otherwise.
fn w_unit4(base: u32, u: u32, cols: u32) -> Unit {
#ifdef W_F32
    let o = u * 32u;
    return Unit(bitcast<vec4<f32>>(w_quad(base, o)), bitcast<vec4<f32>>(w_quad(base, o + 4u)),
                bitcast<vec4<f32>>(w_quad(base, o + 8u)), bitcast<vec4<f32>>(w_quad(base, o + 12u)),
                bitcast<vec4<f32>>(w_quad(base, o + 16u)), bitcast<vec4<f32>>(w_quad(base, o + 20u)),
                bitcast<vec4<f32>>(w_quad(base, o + 24u)), bitcast<vec4<f32>>(w_quad(base, o + 28u)));
#endif
#ifdef W_F16
    return half_unit(base, u);
#endif
#ifdef W_BF16
    return half_unit(base, u);
#endif
#ifdef W_Q8_0
    let body = (cols / 32u + 1u) / 2u + u * 8u;
    return q8_0_unit(w_quad(base, body), w_quad(base, body + 4u), w_half(base, 0u, u));
#endif
#ifdef W_Q4_0
    return q4_0_unit(w_quad(base, (cols / 32u + 1u) / 2u + u * 4u), w_half(base, 0u, u));
#endif
#ifdef W_Q5_0
    let nb = cols / 32u;
    let d = w_half(base, 0u, u);
    let body = (nb + 1u) / 2u;
    let qh = w_word(base, body + u);
    let qb = body + nb + u * 4u;
    let q0 = w_word(base, qb);
    let q1 = w_word(base, qb + 1u);
    let q2 = w_word(base, qb + 2u);
    let q3 = w_word(base, qb + 3u);
    let hi = BYTE_SHIFTS + 4u;
    let j = vec4<u32>(0u, 1u, 2u, 3u);
    return Unit(q5_0_quad(q0, BYTE_SHIFTS, qh, j, d), q5_0_quad(q1, BYTE_SHIFTS, qh, j + 4u, d),
                q5_0_quad(q2, BYTE_SHIFTS, qh, j + 8u, d), q5_0_quad(q3, BYTE_SHIFTS, qh, j + 12u, d),
                q5_0_quad(q0, hi, qh, j + 16u, d), q5_0_quad(q1, hi, qh, j + 20u, d),
                q5_0_quad(q2, hi, qh, j + 24u, d), q5_0_quad(q3, hi, qh, j + 28u, d));
#endif
#ifdef W_Q4_K
    // Three loads: the block header quad and the two quant quads.
    let q = q4_k_unit(base, u);
    let q0 = w_quad(base, q.qs);
    let q1 = w_quad(base, q.qs + 4u);
    let sh = q.shift;
    let sc = q.so.x;
    let off = q.so.y;
    return Unit(q4_k_quad(q0.x, sh, sc, off), q4_k_quad(q0.y, sh, sc, off),
                q4_k_quad(q0.z, sh, sc, off), q4_k_quad(q0.w, sh, sc, off),
                q4_k_quad(q1.x, sh, sc, off), q4_k_quad(q1.y, sh, sc, off),
                q4_k_quad(q1.z, sh, sc, off), q4_k_quad(q1.w, sh, sc, off));
#endif
#ifdef W_Q6_K
    let q = q6_k_unit(base, u, cols);
    let l0 = w_quad(base, q.ql);
    let l1 = w_quad(base, q.ql + 4u);
    let h0 = w_quad(base, q.qh);
    let h1 = w_quad(base, q.qh + 4u);
    let ls = q.lo_shift;
    let hs = q.hi_shift;
    return Unit(q6_k_quad(l0.x, ls, h0.x, hs, q.sc0), q6_k_quad(l0.y, ls, h0.y, hs, q.sc0),
                q6_k_quad(l0.z, ls, h0.z, hs, q.sc0), q6_k_quad(l0.w, ls, h0.w, hs, q.sc0),
                q6_k_quad(l1.x, ls, h1.x, hs, q.sc1), q6_k_quad(l1.y, ls, h1.y, hs, q.sc1),
                q6_k_quad(l1.z, ls, h1.z, hs, q.sc1), q6_k_quad(l1.w, ls, h1.w, hs, q.sc1));
#endif
#ifdef W_Q4_1
    return w_unit_packed(base, u, cols);
#endif
#ifdef W_Q5_1
    return w_unit_packed(base, u, cols);
#endif
#ifdef W_Q5_K
    return w_unit_packed(base, u, cols);
#endif
#ifdef W_Q6_K_WIDE
    let s0 = bitcast<f32>(w_word(base, 2u * u));
    let s1 = bitcast<f32>(w_word(base, 2u * u + 1u));
    let body = cols / 32u * 2u + u * 8u;
    let q0 = w_quad(base, body);
    let q1 = w_quad(base, body + 4u);
    return Unit(q6_k_wide_quad(q0.x, s0), q6_k_wide_quad(q0.y, s0), q6_k_wide_quad(q0.z, s0),
                q6_k_wide_quad(q0.w, s0), q6_k_wide_quad(q1.x, s1), q6_k_wide_quad(q1.y, s1),
                q6_k_wide_quad(q1.z, s1), q6_k_wide_quad(q1.w, s1));
#endif
}

// w_unit's array packed into a Unit (formats without a vector decoder yet).
fn w_unit_packed(base: u32, u: u32, cols: u32) -> Unit {
    var v: array<f32, 32>;
    w_unit(base, u, cols, &v);
    return Unit(vec4<f32>(v[0], v[1], v[2], v[3]), vec4<f32>(v[4], v[5], v[6], v[7]),
                vec4<f32>(v[8], v[9], v[10], v[11]), vec4<f32>(v[12], v[13], v[14], v[15]),
                vec4<f32>(v[16], v[17], v[18], v[19]), vec4<f32>(v[20], v[21], v[22], v[23]),
                vec4<f32>(v[24], v[25], v[26], v[27]), vec4<f32>(v[28], v[29], v[30], v[31]));
}

// Activations of one unit prepared for `w_dot`: for q4_0 and q6_K scaled by NIBBLE_SCALES so
// quants masked in place (no per-element shift) multiply exactly, plus the sums over elements
// 0..15 and 16..31 that fold the formats' zero points out of the per-element work.
struct XUnit { v: Unit, sums: vec2<f32> }

const NIBBLE_SCALES = vec4<f32>(1.0, 1.0 / 256.0, 1.0 / 65536.0, 1.0 / 16777216.0);
const NIBBLES = vec4<u32>(0xfu, 0xf00u, 0xf0000u, 0xf000000u);

fn x_prep(x: Unit) -> XUnit {
#ifdef MASKED_DOT
    return x_scaled(x);
#else
    return XUnit(x, vec2<f32>(0.0));
#endif
}

fn x_scaled(x: Unit) -> XUnit {
    let lo = x.a + x.b + x.c + x.d;
    let hi = x.e + x.f + x.g + x.h;
    let s = NIBBLE_SCALES;
    return XUnit(Unit(x.a * s, x.b * s, x.c * s, x.d * s, x.e * s, x.f * s, x.g * s, x.h * s),
                 vec2<f32>(lo.x + lo.y + lo.z + lo.w, hi.x + hi.y + hi.z + hi.w));
}

// Σ over the four bytes of `q` of (their bits under `mask`, in place) × x.
fn masked_dot(q: u32, mask: vec4<u32>, x: vec4<f32>) -> f32 {
    return dot(vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(q) & mask)), x);
}

#ifdef W_Q4_0
// d · Σ (q − 8) x over one q4_0 unit, as d · (Σ q x − 8 Σ x).
fn q4_0_dot(q: vec4<u32>, d: f32, x: XUnit) -> f32 {
    let h = q >> vec4<u32>(4u);
    let s = masked_dot(q.x, NIBBLES, x.v.a) + masked_dot(q.y, NIBBLES, x.v.b)
        + masked_dot(q.z, NIBBLES, x.v.c) + masked_dot(q.w, NIBBLES, x.v.d)
        + masked_dot(h.x, NIBBLES, x.v.e) + masked_dot(h.y, NIBBLES, x.v.f)
        + masked_dot(h.z, NIBBLES, x.v.g) + masked_dot(h.w, NIBBLES, x.v.h);
    return d * (s - 8.0 * (x.sums.x + x.sums.y));
}
#endif

#ifdef W_Q6_K
// The 6-bit quants of one q6_K quad (low nibbles of `l`, high pairs of `h`, both pre-shifted
// so each byte's bits sit in place) against x.
fn q6_k_quad_dot(l: u32, h: u32, x: vec4<f32>) -> f32 {
    let q = (vec4<u32>(l) & NIBBLES) | (vec4<u32>(h) & vec4<u32>(0x30u, 0x3000u, 0x300000u, 0x30000000u));
    return dot(vec4<f32>(bitcast<vec4<i32>>(q)), x);
}
#endif

#ifdef W_Q4_K
// Σ (scale · q − off) x over a q4_K unit whose quants are the nibbles at `shift` (0: low,
// 4: high) of the 8 words q0, q1, as scale · Σ q x − off · Σ x; `so` is (scale, off).
fn q4_k_dot(q0: vec4<u32>, q1: vec4<u32>, shift: u32, so: vec2<f32>, x: XUnit) -> f32 {
    let a = q0 >> vec4<u32>(shift);
    let b = q1 >> vec4<u32>(shift);
    let s = masked_dot(a.x, NIBBLES, x.v.a) + masked_dot(a.y, NIBBLES, x.v.b)
        + masked_dot(a.z, NIBBLES, x.v.c) + masked_dot(a.w, NIBBLES, x.v.d)
        + masked_dot(b.x, NIBBLES, x.v.e) + masked_dot(b.y, NIBBLES, x.v.f)
        + masked_dot(b.z, NIBBLES, x.v.g) + masked_dot(b.w, NIBBLES, x.v.h);
    return so.x * s - so.y * (x.sums.x + x.sums.y);
}
#endif

// Σ_j W[row][32u + j] · x_j over unit u of the row whose first word is `base`.
fn w_dot(base: u32, u: u32, cols: u32, x: XUnit) -> f32 {
#ifdef W_Q4_K
    let q = q4_k_unit(base, u);
    return q4_k_dot(w_quad(base, q.qs), w_quad(base, q.qs + 4u), q.shift, q.so, x);
#endif
#ifdef W_Q4_0
    return q4_0_dot(w_quad(base, (cols / 32u + 1u) / 2u + u * 4u), w_half(base, 0u, u), x);
#endif
#ifdef W_Q6_K
    let q = q6_k_unit(base, u, cols);
    let ls = vec4<u32>(q.lo_shift);
    let l0 = w_quad(base, q.ql) >> ls;
    let l1 = w_quad(base, q.ql + 4u) >> ls;
    // High pairs at bit 4 of each byte: shift right by hi_shift, then left by 4.
    let hs = vec4<u32>(q.hi_shift);
    let h0 = (w_quad(base, q.qh) >> hs) << vec4<u32>(4u);
    let h1 = (w_quad(base, q.qh + 4u) >> hs) << vec4<u32>(4u);
    let lo = q6_k_quad_dot(l0.x, h0.x, x.v.a) + q6_k_quad_dot(l0.y, h0.y, x.v.b)
        + q6_k_quad_dot(l0.z, h0.z, x.v.c) + q6_k_quad_dot(l0.w, h0.w, x.v.d);
    let hi = q6_k_quad_dot(l1.x, h1.x, x.v.e) + q6_k_quad_dot(l1.y, h1.y, x.v.f)
        + q6_k_quad_dot(l1.z, h1.z, x.v.g) + q6_k_quad_dot(l1.w, h1.w, x.v.h);
    return q.sc0 * (lo - 32.0 * x.sums.x) + q.sc1 * (hi - 32.0 * x.sums.y);
#endif
#ifdef W_Q6_K_WIDE
    let s = vec2<f32>(bitcast<f32>(w_word(base, 2u * u)), bitcast<f32>(w_word(base, 2u * u + 1u)));
    let body = cols / 32u * 2u + u * 8u;
    return q6_k_wide_dot(w_quad(base, body), w_quad(base, body + 4u), s, x);
#endif
#ifndef MASKED_DOT
    return unit_dot(w_unit4(base, u, cols), x.v);
#endif
}

// w_dot of units u and u + 1 (u even); q4_0 and q8_0 load their shared scale word once, q4_K
// its block header and the quant words both units' nibbles share.
fn w_dot_pair(base: u32, u: u32, cols: u32, x: XUnit, z: XUnit) -> f32 {
#ifdef W_Q4_0
    let d = unpack2x16float(w_word(base, u / 2u));
    let body = (cols / 32u + 1u) / 2u + u * 4u;
    return q4_0_dot(w_quad(base, body), d.x, x) + q4_0_dot(w_quad(base, body + 4u), d.y, z);
#else
#ifdef W_Q4_K
    // Units u and u + 1 share their block header and quant words (low and high nibbles).
    let hdr = q4_k_header(base, u);
    let a = q4_k_unit_in(hdr, u);
    let b = q4_k_unit_in(hdr, u + 1u);
    let q0 = w_quad(base, a.qs);
    let q1 = w_quad(base, a.qs + 4u);
    return q4_k_dot(q0, q1, a.shift, a.so, x) + q4_k_dot(q0, q1, b.shift, b.so, z);
#else
#ifdef W_Q6_K_WIDE
    let sc = bitcast<vec4<f32>>(w_quad(base, 2u * u));
    let body = cols / 32u * 2u + u * 8u;
    return q6_k_wide_dot(w_quad(base, body), w_quad(base, body + 4u), sc.xy, x)
        + q6_k_wide_dot(w_quad(base, body + 8u), w_quad(base, body + 12u), sc.zw, z);
#else
#ifdef W_Q8_0
    let d = unpack2x16float(w_word(base, u / 2u));
    let body = (cols / 32u + 1u) / 2u + u * 8u;
    return unit_dot(q8_0_unit(w_quad(base, body), w_quad(base, body + 4u), d.x), x.v)
        + unit_dot(q8_0_unit(w_quad(base, body + 8u), w_quad(base, body + 12u), d.y), z.v);
#else
    return w_dot(base, u, cols, x) + w_dot(base, u + 1u, cols, z);
#endif
#endif
#endif
#endif
}

#ifdef W_Q6_K_WIDE
// Σ sc · (q − 32) x over one Q6KWide unit: quants q0 (weights 0..15), q1 (16..31), scales s.
fn q6_k_wide_dot(q0: vec4<u32>, q1: vec4<u32>, s: vec2<f32>, x: XUnit) -> f32 {
    let m = vec4<u32>(0x3fu, 0x3f00u, 0x3f0000u, 0x3f000000u);
    let lo = masked_dot(q0.x, m, x.v.a) + masked_dot(q0.y, m, x.v.b)
        + masked_dot(q0.z, m, x.v.c) + masked_dot(q0.w, m, x.v.d);
    let hi = masked_dot(q1.x, m, x.v.e) + masked_dot(q1.y, m, x.v.f)
        + masked_dot(q1.z, m, x.v.g) + masked_dot(q1.w, m, x.v.h);
    return s.x * (lo - 32.0 * x.sums.x) + s.y * (hi - 32.0 * x.sums.y);
}
#endif
