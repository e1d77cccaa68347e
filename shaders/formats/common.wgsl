// What every weight format's loaders share: addressing, word reads, Unit and masked dots.
//
// `w` holds one page of a row-major matrix as array<u32>, each row in its format's GPU layout
// (src/gpu/formats.rs). A row is named by `base` (w_row) and its words by offsets `o` from the
// row's start (w_at); `k` is a column, `cols` the row length. Quantized rows whose blocks are
// not 4-byte aligned hold their f16 block scales first (padded to a word), then the rest.
//
// With W_TILE_LOG2 = t the page is stored in tiles of 2^t rows that interleave their rows'
// words eight at a time (word o of tile row j at (o / 8) · 2^t · 8 + 8j + o % 8): a workgroup
// that walks many rows in step then reads one contiguous stream instead of one per row,
// which CPU prefetchers follow (CPU devices; src/gpu/weights.rs, docs/PERF.md).
//
// Each format's file (shaders/formats/<format>.wgsl, joined after this one under its
// `W_<FORMAT>` define) implements the loaders the matrix kernels call:
//   w_load(base, k, cols) -> f32: element k of the row;
//   w_unit(base, u, cols, v): elements 32·u .. 32·u+31 into an array (all formats' rows are
//     whole units of 32 except float rows, whose tail the caller reads with w_load);
//   w_unit4(base, u, cols) -> Unit: the same unit as registers;
//   w_dot(base, u, cols, x: XUnit) -> f32: Σ_j W[row][32u + j] · x_j over unit u;
//   w_dot_pair(base, u, cols, x, z) -> f32: w_dot of units u and u + 1 (u even).

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

// A 32-weight unit as eight vec4s, elements 4i..4i+3 in the i-th field: registers, not an
// array, so CPU devices keep it out of memory.
struct Unit { a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>, e: vec4<f32>, f: vec4<f32>, g: vec4<f32>, h: vec4<f32> }

fn unit_dot(p: Unit, q: Unit) -> f32 {
    return dot(p.a, q.a) + dot(p.b, q.b) + dot(p.c, q.c) + dot(p.d, q.d)
        + dot(p.e, q.e) + dot(p.f, q.f) + dot(p.g, q.g) + dot(p.h, q.h);
}

const BYTE_SHIFTS = vec4<u32>(0u, 8u, 16u, 24u);

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
