// LFM2 double-gated short conv over a chunk: Bx = B⊙x, conv over (state, Bx) with an L-tap
// depthwise kernel, y = C⊙conv; the last L−1 Bx values are kept as the state. One thread per channel.
struct Params {
    h: u32,
    tokens: u32,
    taps: u32,       // L = conv_L_cache (≤ 8)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> proj: array<f32>;    // [T, 3H]: B | C | x
@group(0) @binding(2) var<storage, read> kernel: array<f32>;  // [H, L]
@group(0) @binding(3) var<storage, read_write> state: array<f32>; // [L−1, H], oldest first
@group(0) @binding(4) var<storage, read_write> y: array<f32>; // [T, H]

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.h) {
        return;
    }
    let past = p.taps - 1u;
    var hist: array<f32, 8>;
    for (var j = 0u; j < past; j++) {
        hist[j] = state[j * p.h + c];
    }
    for (var t = 0u; t < p.tokens; t++) {
        let row = t * 3u * p.h;
        let bx = proj[row + c] * proj[row + 2u * p.h + c];
        var acc = kernel[c * p.taps + past] * bx;
        for (var j = 0u; j < past; j++) {
            acc += kernel[c * p.taps + j] * hist[j];
        }
        y[t * p.h + c] = proj[row + p.h + c] * acc;
        for (var j = 0u; j + 1u < past; j++) {
            hist[j] = hist[j + 1u];
        }
        if (past > 0u) {
            hist[past - 1u] = bx;
        }
    }
    for (var j = 0u; j < past; j++) {
        state[j * p.h + c] = hist[j];
    }
}
