// Context shift of the sampler's last-seen positions: seen[n + t] holds 1 + the last position
// of token t (0: none). Positions in [keep, keep + dropped) are gone (0); later ones move down
// by `dropped`, as the KV cache does. One thread per token.
struct Params {
    n: u32,
    keep: u32,
    dropped: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> seen: array<u32>; // [2n]: counts, 1 + last position

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    if (t >= p.n) {
        return;
    }
    let last = seen[p.n + t];
    if (last == 0u || last - 1u < p.keep) {
        return;
    }
    if (last - 1u < p.keep + p.dropped) {
        seen[p.n + t] = 0u;
    } else {
        seen[p.n + t] = last - p.dropped;
    }
}
