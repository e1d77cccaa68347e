// SwiGLU: out[r, i] = silu(gu[r, i]) · gu[r, F + i], where each row of gu is gate | up.
struct Params {
    f: u32,
    rows: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gu: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.x + wid.y * nwg.x) * WG + lid;
    if (idx >= p.f * p.rows) {
        return;
    }
    let r = idx / p.f;
    let i = idx % p.f;
    let g = gu[r * 2u * p.f + i];
    let u = gu[r * 2u * p.f + p.f + i];
    out[idx] = g / (1.0 + exp(-g)) * u;
}
