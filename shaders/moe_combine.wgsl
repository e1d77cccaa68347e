// MoE output: h[t, c] += Σ_j weights[t, j] · y[t·k + j, c], slots summed in a fixed order.
struct Params {
    h: u32,
    tokens: u32,
    top_k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;        // [T · k, H]
@group(0) @binding(2) var<storage, read> weights: array<f32>;  // [T, k]
@group(0) @binding(3) var<storage, read_write> h: array<f32>;  // [T, H]

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.x + wid.y * nwg.x) * WG + lid;
    if (idx >= p.h * p.tokens) {
        return;
    }
    let t = idx / p.h;
    let c = idx % p.h;
    var s = 0.0;
    for (var j = 0u; j < p.top_k; j++) {
        let pair = t * p.top_k + j;
        s += weights[pair] * y[pair * p.h + c];
    }
    h[idx] += s;
}
