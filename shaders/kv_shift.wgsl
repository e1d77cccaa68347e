// Context shift: moves `count` cache positions of one K or V page to lower positions of a
// page (possibly the same one), one workgroup per (kv head, position). Keys are re-rotated
// on the way (ROTATE): each rotate-half pair (i, i + hd/2) turns by the angle whose (cos,
// sin) is rot[i], so a key stored with RoPE at position p reads as one at p − shift. Values
// are copied. The cache element (f16 pairs packed in u32, or f32 with KV_F32) is read by
// `load` and written by `store_head`, the only format-specific parts. The host orders the
// dispatches so that none writes a position a later one still reads. Values bind no `rot`.
struct Params {
    count: u32,     // positions this dispatch moves
    src_start: u32, // first source position, relative to the source page
    dst_start: u32, // first destination position, relative to the destination page
    n_kv: u32,
    head_dim: u32,
    kv_words: u32,  // u32 words per cache position
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rot: array<f32>; // [hd/2, 2] = (cos, sin)
@group(0) @binding(2) var<storage, read_write> src: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<u32>;

var<workgroup> xs: array<f32, 256>;

// Element d of head h at source position `pos`.
fn load(pos: u32, h: u32, d: u32) -> f32 {
    let row = pos * p.kv_words;
#ifdef KV_F32
    return bitcast<f32>(src[row + h * p.head_dim + d]);
#else
    return unpack2x16float(src[row + (h * p.head_dim + d) / 2u])[d & 1u];
#endif
}

// Element d of the moved head: xs turned by rot (keys) or as read (values).
fn moved(d: u32) -> f32 {
#ifdef ROTATE
    let half = p.head_dim / 2u;
    let i = d % half;
    let c = rot[2u * i];
    let s = rot[2u * i + 1u];
    if (d < half) {
        return xs[d] * c - xs[d + half] * s;
    }
    return xs[d] * c + xs[d - half] * s;
#else
    return xs[d];
#endif
}

// Writes the moved head h at destination position `pos`, threads striding over its words.
fn store_head(pos: u32, h: u32, lid: u32) {
    let row = pos * p.kv_words;
#ifdef KV_F32
    for (var d = lid; d < p.head_dim; d += WG) {
        dst[row + h * p.head_dim + d] = bitcast<u32>(moved(d));
    }
#else
    let half = p.head_dim / 2u;
    for (var j = lid; j < half; j += WG) {
        dst[row + h * half + j] = pack2x16float(vec2<f32>(moved(2u * j), moved(2u * j + 1u)));
    }
#endif
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let j = wid.y;
    for (var d = lid; d < p.head_dim; d += WG) {
        xs[d] = load(p.src_start + j, h, d);
    }
    workgroupBarrier();
    store_head(p.dst_start + j, h, lid);
}
