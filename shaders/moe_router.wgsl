// LFM2-MoE router: sigmoid scores, top-k ranked by score + expert bias (bias for selection only),
// weights = unbiased scores renormalised (+1e-6) and scaled. One thread per token.
struct Params {
    tokens: u32,
    n_experts: u32,
    top_k: u32,
    use_bias: u32,
    norm_topk: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;  // [T, E]
@group(0) @binding(2) var<storage, read> bias: array<f32>;    // [E]
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;     // [T, k]
@group(0) @binding(4) var<storage, read_write> weights: array<f32>; // [T, k]

fn score(t: u32, e: u32) -> f32 {
    return 1.0 / (1.0 + exp(-logits[t * p.n_experts + e]));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if (t >= p.tokens) {
        return;
    }
    var picked: array<u32, 16>;
    var sum = 0.0;
    for (var j = 0u; j < p.top_k; j++) {
        var best = -3.0e38;
        var best_e = 0u;
        for (var e = 0u; e < p.n_experts; e++) {
            var taken = false;
            for (var i = 0u; i < j; i++) {
                taken = taken || picked[i] == e;
            }
            var s = score(t, e);
            if (p.use_bias != 0u) {
                s += bias[e];
            }
            if (!taken && s > best) {
                best = s;
                best_e = e;
            }
        }
        picked[j] = best_e;
        sum += score(t, best_e);
    }
    var denom = 1.0;
    if (p.norm_topk != 0u) {
        denom = sum + 1e-6;
    }
    for (var j = 0u; j < p.top_k; j++) {
        ids[t * p.top_k + j] = picked[j];
        weights[t * p.top_k + j] = score(t, picked[j]) / denom * p.scale;
    }
}
