// Buckets the chunk's (token, slot) pairs by expert: counts[e], offsets[e] (exclusive prefix
// sum) and pairs[offsets[e] ..] in pair order, so results are deterministic. One workgroup.
struct Params {
    n_pairs: u32,
    n_experts: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;          // [T · k]
@group(0) @binding(2) var<storage, read_write> counts: array<u32>;  // [E]
@group(0) @binding(3) var<storage, read_write> offsets: array<u32>; // [E]
@group(0) @binding(4) var<storage, read_write> pairs: array<u32>;   // [T · k]

var<workgroup> cnt: array<u32, 256>;
var<workgroup> off: array<u32, 256>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    for (var e = lid; e < p.n_experts; e += WG) {
        var c = 0u;
        for (var i = 0u; i < p.n_pairs; i++) {
            c += select(0u, 1u, ids[i] == e);
        }
        cnt[e] = c;
    }
    workgroupBarrier();
    if (lid == 0u) {
        var run = 0u;
        for (var e = 0u; e < p.n_experts; e++) {
            off[e] = run;
            run += cnt[e];
        }
    }
    workgroupBarrier();
    for (var e = lid; e < p.n_experts; e += WG) {
        counts[e] = cnt[e];
        offsets[e] = off[e];
        var at = off[e];
        for (var i = 0u; i < p.n_pairs; i++) {
            if (ids[i] == e) {
                pairs[at] = i;
                at++;
            }
        }
    }
}
