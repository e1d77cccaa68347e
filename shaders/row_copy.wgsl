// Row copy: dst[dst_row · dst_stride + c] = src[src_row · src_stride + c] for c < width (f32
// words): moves one sequence's row between a batched step's rows and its per-sequence kernels.
struct Params {
    width: u32,
    src_offset: u32,
    dst_offset: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let c = (wid.x + wid.y * nwg.x) * WG + lid;
    if (c < p.width) {
        dst[p.dst_offset + c] = src[p.src_offset + c];
    }
}
