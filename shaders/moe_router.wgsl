// LFM2-MoE router: sigmoid scores, top-k ranked by score + expert bias (bias for selection only),
// weights = unbiased scores renormalised (+1e-6) and scaled. One thread per token; with FUSED,
// one workgroup per token that first computes the token's router logits (x · routerᵀ, one
// thread per expert) in workgroup memory: the decode step's router in one dispatch.
struct Params {
    tokens: u32,
    n_experts: u32,
    top_k: u32,
    use_bias: u32,
    norm_topk: u32,
    scale: f32,
    hidden: u32,   // FUSED: length of x and of a router row
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#ifdef FUSED
@group(0) @binding(1) var<storage, read> x: array<f32>;       // [T, hidden]
@group(0) @binding(5) var<storage, read> router: array<f32>;  // [E, hidden]
var<workgroup> lg: array<f32, 64>;
#else
@group(0) @binding(1) var<storage, read> logits: array<f32>;  // [T, E]
#endif
@group(0) @binding(2) var<storage, read> bias: array<f32>;    // [E]
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;     // [T, k]
@group(0) @binding(4) var<storage, read_write> weights: array<f32>; // [T, k]

fn score(t: u32, e: u32) -> f32 {
#ifdef FUSED
    return 1.0 / (1.0 + exp(-lg[e]));
#else
    return 1.0 / (1.0 + exp(-logits[t * p.n_experts + e]));
#endif
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
#ifdef FUSED
    let t = wid.x;
    if (lid < p.n_experts) {
        var s = 0.0;
        for (var k = 0u; k < p.hidden; k++) {
            s += router[lid * p.hidden + k] * x[t * p.hidden + k];
        }
        lg[lid] = s;
    }
    workgroupBarrier();
    if (lid != 0u) {
        return;
    }
#else
    let t = gid.x;
    if (t >= p.tokens) {
        return;
    }
#endif
    route(t);
}

// Top-k selection and weights of token t.
fn route(t: u32) {
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
