// Sampling: out[0] = a token drawn from logits[row, 0..n] after a sparse logit bias (added to
// the row in place first: OpenAI logit_bias, DRY penalties), the repetition, presence and
// frequency penalties, temperature, top-k, top-p and min-p, by inverse CDF at a counter-based
// uniform of (seed, pos); greedy (the lowest index of the largest penalized logit) when
// `greedy`. The drawn token's count and position are then recorded in `seen`.
//
// Thread t owns tokens t, t + WG, ... (the draw's order). One pass finds the largest tempered
// logit and each thread's PER largest (the candidates). Where the candidates provably hold
// every token the filters can keep (the largest token left out is below the top-k, top-p or
// min-p cut), the rest works on them alone; otherwise on the whole row. Both give the same
// token.
struct Params {
    n: u32,
    row: u32,
    pos: u32,
    _pad0: u32,
}

struct Settings {
    greedy: u32,
    top_k: u32,
    repeat_last_n: u32,
    seed_lo: u32,
    seed_hi: u32,
    inv_temperature: f32,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
    inv_repeat_penalty: f32,
    presence: f32,
    frequency: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read> settings: Settings;
// seen[t]: times token t was drawn; seen[n + t]: 1 + its last position (0: not in the window).
@group(0) @binding(3) var<storage, read_write> seen: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;
// bias[0]: entries; then (token, f32 bits) pairs, distinct tokens.
@group(0) @binding(5) var<storage, read> bias: array<u32>;

// Radix digits of 8 bits: four histogram passes find a key threshold exactly.
const BINS: u32 = 256u;
// Fixed-point scale of a token's weight exp(x - max) ≤ 1 in the top-p histograms.
const MASS_ONE: f32 = 2147483648.0;
// Candidates per thread.
const PER: u32 = 4u;
const NONE: u32 = 0xffffffffu;
const LOW: f32 = -3.0e38;

var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;
var<workgroup> hist_lo: array<atomic<u32>, BINS>;
var<workgroup> hist_hi: array<atomic<u32>, BINS>;
// Thread t's candidates at PER·t.., in token order (NONE after its last).
var<workgroup> cand_x: array<f32, PER * WG>;
var<workgroup> cand_i: array<u32, PER * WG>;
// The key of the largest tempered logit that is no candidate.
var<workgroup> spill: atomic<u32>;
var<workgroup> pick: array<u32, 2>;
var<workgroup> on_cands: u32;
var<workgroup> total_lo: atomic<u32>;
var<workgroup> total_hi: atomic<u32>;
// The settings, loaded once (per-token loads of a storage struct are slow on CPU devices).
var<private> s: Settings;

// The logit of token i after the penalties (HF repetition penalty over the window,
// OpenAI presence / frequency penalties over the drawn counts).
fn penalized(i: u32) -> f32 {
    var l = logits[p.row * p.n + i];
    if (s.repeat_penalty != 1.0) {
        let last = seen[p.n + i];
        if (last != 0u && last <= p.pos && p.pos - last < s.repeat_last_n) {
            l = select(l * s.inv_repeat_penalty, l * s.repeat_penalty, l < 0.0);
        }
    }
    if (s.presence != 0.0 || s.frequency != 0.0) {
        let c = seen[i];
        if (c > 0u) {
            l = l - (f32(c) * s.frequency + s.presence);
        }
    }
    return l;
}

// A penalized logit over the temperature (−0 made +0 so equal values have equal keys).
fn temper(l: f32) -> f32 {
    let x = l * s.inv_temperature;
    return select(x, 0.0, x == 0.0);
}

// An order-preserving u32 of a float, and back.
fn key(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn unkey(k: u32) -> f32 {
    return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

struct Token {
    x: f32,
    i: u32,
}

// The j-th token of thread t in the draw's order (i = NONE past the last): from the whole
// row, or from the thread's candidates.
fn own(t: u32, j: u32, cands: bool) -> Token {
    if (cands) {
        if (j >= PER) {
            return Token(0.0, NONE);
        }
        return Token(cand_x[PER * t + j], cand_i[PER * t + j]);
    }
    let i = t + j * WG;
    if (i >= p.n) {
        return Token(0.0, NONE);
    }
    return Token(temper(penalized(i)), i);
}

// Token x's weight exp(x − max) where it survives the cut key and min-p, else 0.
fn kept(x: f32, m: f32, cut: u32) -> f32 {
    if (key(x) < cut) {
        return 0.0;
    }
    let e = exp(x - m);
    return select(0.0, e, e >= s.min_p);
}

// A 64-bit count as a float (monotone in the count).
fn wide(hi: u32, lo: u32) -> f32 {
    return f32(hi) * 4294967296.0 + f32(lo);
}

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// The uniform in [0, 1) of (seed, pos).
fn uniform01() -> f32 {
    let h = pcg(pcg(pcg(s.seed_lo) ^ s.seed_hi) ^ p.pos);
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

// Writes the drawn token and records it for the penalties.
fn finish(t: u32) {
    out[0] = t;
    seen[t] += 1u;
    seen[p.n + t] = p.pos + 1u;
}

// Thread lid's PER (= 4) largest tempered logits into the candidates, in token order (the
// largest, lowest index first on ties, into best_v / best_i); the largest of the others into
// `spill`. The running four stay in registers, largest first.
fn collect(lid: u32) {
    var v0 = LOW;
    var v1 = LOW;
    var v2 = LOW;
    var v3 = LOW;
    var i0 = NONE;
    var i1 = NONE;
    var i2 = NONE;
    var i3 = NONE;
    var out_max = LOW;
    for (var i = lid; i < p.n; i += WG) {
        let v = temper(penalized(i));
        if (v > v3) {
            out_max = max(out_max, v3);
            let g0 = v > v0;
            let g1 = v > v1;
            let g2 = v > v2;
            v3 = select(v, v2, g2);
            i3 = select(i, i2, g2);
            v2 = select(select(v2, v, g2), v1, g1);
            i2 = select(select(i2, i, g2), i1, g1);
            v1 = select(select(v1, v, g1), v0, g0);
            i1 = select(select(i1, i, g1), i0, g0);
            v0 = select(v0, v, g0);
            i0 = select(i0, i, g0);
        } else {
            out_max = max(out_max, v);
        }
    }
    best_v[lid] = v0;
    best_i[lid] = i0;
    var cv = array<f32, PER>(v0, v1, v2, v3);
    var ci = array<u32, PER>(i0, i1, i2, i3);
    for (var a = 1u; a < PER; a++) {
        var j = a;
        while (j > 0u && ci[j] < ci[j - 1u]) {
            let v = cv[j];
            let i = ci[j];
            cv[j] = cv[j - 1u];
            ci[j] = ci[j - 1u];
            cv[j - 1u] = v;
            ci[j - 1u] = i;
            j -= 1u;
        }
    }
    for (var j = 0u; j < PER; j++) {
        cand_x[PER * lid + j] = cv[j];
        cand_i[PER * lid + j] = ci[j];
    }
    atomicMax(&spill, key(out_max));
}

// best_v[lid] / best_i[lid]: the largest penalized (or tempered) logit of thread lid and its
// lowest index.
fn thread_max(lid: u32, tempered: bool) {
    var bv = LOW;
    var bi = NONE;
    for (var i = lid; i < p.n; i += WG) {
        var v = penalized(i);
        if (tempered) {
            v = temper(v);
        }
        if (v > bv) {
            bv = v;
            bi = i;
        }
    }
    best_v[lid] = bv;
    best_i[lid] = bi;
}

// best_v[0] / best_i[0]: the largest of the threads' values and its lowest index.
fn reduce_max(lid: u32) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            let ov = best_v[lid + stride];
            let oi = best_i[lid + stride];
            if (ov > best_v[lid] || (ov == best_v[lid] && oi < best_i[lid])) {
                best_v[lid] = ov;
                best_i[lid] = oi;
            }
        }
        workgroupBarrier();
    }
}

// Token x's fixed-point weight exp(x − max)·2³¹ (0 below 2⁻³¹, without its exp).
fn weight(x: f32, m: f32) -> u32 {
    if (x - m < -22.0) {
        return 0u;
    }
    return u32(exp(x - m) * MASS_ONE);
}

// The fixed-point weight of the whole row (as a float).
fn total_weight(lid: u32, m: f32) -> f32 {
    if (lid == 0u) {
        atomicStore(&total_lo, 0u);
        atomicStore(&total_hi, 0u);
    }
    workgroupBarrier();
    var hi = 0u;
    var lo = 0u;
    for (var i = lid; i < p.n; i += WG) {
        let w = weight(temper(penalized(i)), m);
        hi += select(0u, 1u, lo > 0xffffffffu - w);
        lo += w;
    }
    let old = atomicAdd(&total_lo, lo);
    atomicAdd(&total_hi, hi + select(0u, 1u, old > 0xffffffffu - lo));
    workgroupBarrier();
    return wide(atomicLoad(&total_hi), atomicLoad(&total_lo));
}

// The largest key t with W(t) ≥ goal, where W(t) sums over tokens (of the row or the
// candidates) with key ≥ max(t, floor) either 1 (top-k: goal top_k) or their fixed-point
// weight (top-p: goal top_p · W(0), from the first histogram where `goal` < 0). Four passes,
// one per 8-bit digit, each a histogram of the tokens matching the digits so far.
fn select_key(lid: u32, mass: bool, goal_in: f32, floor: u32, m: f32, cands: bool) -> u32 {
    var prefix = 0u;
    var above_hi = 0u;
    var above_lo = 0u;
    var goal = goal_in;
    for (var level = 0u; level < 4u; level++) {
        let shift = 24u - 8u * level;
        let high = select(0xffffffffu << (shift + 8u), 0u, level == 0u);
        for (var b = lid; b < BINS; b += WG) {
            atomicStore(&hist_lo[b], 0u);
            atomicStore(&hist_hi[b], 0u);
        }
        workgroupBarrier();
        for (var j = 0u; ; j++) {
            let t = own(lid, j, cands);
            if (t.i == NONE) {
                break;
            }
            let k = key(t.x);
            if (k >= floor && (k & high) == prefix) {
                let d = (k >> shift) & 0xffu;
                let w = select(1u, weight(t.x, m), mass);
                let old = atomicAdd(&hist_lo[d], w);
                if (old > 0xffffffffu - w) {
                    atomicAdd(&hist_hi[d], 1u);
                }
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            if (goal < 0.0 && level == 0u) {
                var t_hi = 0u;
                var t_lo = 0u;
                for (var b = 0u; b < BINS; b++) {
                    let lo = atomicLoad(&hist_lo[b]);
                    t_hi += atomicLoad(&hist_hi[b]) + select(0u, 1u, t_lo > 0xffffffffu - lo);
                    t_lo += lo;
                }
                goal = s.top_p * wide(t_hi, t_lo);
            }
            var d = BINS - 1u;
            loop {
                let lo = atomicLoad(&hist_lo[d]);
                let hi = above_hi + atomicLoad(&hist_hi[d]) + select(0u, 1u, above_lo > 0xffffffffu - lo);
                if (wide(hi, above_lo + lo) >= goal || d == 0u) {
                    break;
                }
                above_hi = hi;
                above_lo += lo;
                d -= 1u;
            }
            pick[0] = prefix | (d << shift);
        }
        workgroupBarrier();
        prefix = pick[0];
        workgroupBarrier();
    }
    return prefix;
}

// Whether the candidates can hold every token the filters keep: top-k within their number,
// else top-p or min-p.
fn candidates_may_do() -> bool {
    let top_k = settings.top_k > 1u && settings.top_k < p.n;
    let others = settings.top_p < 1.0 || settings.min_p > 0.0;
    return select(others, settings.top_k <= PER * WG, top_k);
}

// Whether every token left out of the candidates has a key below `cut` (thread 0's).
fn held(lid: u32, cut: u32) -> bool {
    if (lid == 0u) {
        on_cands = select(0u, 1u, atomicLoad(&spill) < cut);
    }
    return workgroupUniformLoad(&on_cands) != 0u;
}

// The cut key of top-k and top-p (0 where neither applies), and whether the candidates
// hold every token that survives the filters.
fn filters(lid: u32, m: f32) -> vec2<u32> {
    let collected = candidates_may_do();
    let top_p = settings.top_p < 1.0;
    var cut = 0u;
    var cands = false;
    var p_goal = -1.0;
    if (settings.top_k > 1u && settings.top_k < p.n) {
        let goal = f32(settings.top_k);
        if (collected) {
            cut = select_key(lid, false, goal, 0u, m, true);
            cands = held(lid, cut);
        }
        if (!cands) {
            cut = select_key(lid, false, goal, 0u, m, false);
        }
    } else if (collected && top_p) {
        // Top-p alone: the nucleus is among the candidates if it starts above every token
        // left out (the goal needs the whole row's weight).
        p_goal = settings.top_p * total_weight(lid, m);
        let c = select_key(lid, true, p_goal, 0u, m, true);
        if (held(lid, c)) {
            return vec2<u32>(c, 1u);
        }
    } else if (collected) {
        // Min-p alone: every token left out is below its cut.
        if (lid == 0u) {
            on_cands = select(0u, 1u, exp(unkey(atomicLoad(&spill)) - m) < s.min_p);
        }
        cands = workgroupUniformLoad(&on_cands) != 0u;
    }
    if (top_p) {
        cut = max(cut, select_key(lid, true, p_goal, cut, m, cands));
    }
    return vec2<u32>(cut, select(0u, 1u, cands));
}

// Draws among the tokens with key ≥ cut that survive min-p (from the candidates where
// `cands`) by inverse CDF in the draw's order.
fn draw(lid: u32, m: f32, argmax: u32, cut: u32, cands: bool) {
    // The kept tokens' weights: thread lid sums its tokens in the draw's order.
    var sum = 0.0;
    for (var j = 0u; ; j++) {
        let t = own(lid, j, cands);
        if (t.i == NONE) {
            break;
        }
        sum += kept(t.x, m, cut);
    }
    best_v[lid] = sum;
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0.0;
        for (var t = 0u; t < WG; t++) {
            total += best_v[t];
        }
        let r = uniform01() * total;
        // The thread whose run of the cumulative weight holds r, and r within it.
        var acc = 0.0;
        var owner = NONE;
        var last = 0u;
        for (var t = 0u; t < WG; t++) {
            if (best_v[t] > 0.0) {
                last = t;
                if (owner == NONE && acc + best_v[t] > r) {
                    owner = t;
                    pick[1] = bitcast<u32>(r - acc);
                }
            }
            acc += best_v[t];
        }
        if (owner == NONE) {
            owner = last;
            pick[1] = bitcast<u32>(3.0e38);
        }
        pick[0] = owner;
    }
    workgroupBarrier();
    if (lid == pick[0]) {
        let r = bitcast<f32>(pick[1]);
        var acc = 0.0;
        var chosen = NONE;
        var fallback = argmax;
        for (var j = 0u; ; j++) {
            let t = own(lid, j, cands);
            if (t.i == NONE) {
                break;
            }
            let w = kept(t.x, m, cut);
            if (w > 0.0) {
                acc += w;
                fallback = t.i;
                if (acc > r) {
                    chosen = t.i;
                    break;
                }
            }
        }
        finish(select(chosen, fallback, chosen == NONE));
    }
}

// Adds the bias entries to the row, one thread per entry, visible to the whole workgroup after.
fn add_bias(lid: u32) {
    let count = bias[0];
    for (var j = lid; j < count; j += WG) {
        let t = bias[1u + 2u * j];
        if (t < p.n) {
            let at = p.row * p.n + t;
            logits[at] = logits[at] + bitcast<f32>(bias[2u + 2u * j]);
        }
    }
    storageBarrier();
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    s = settings;
    add_bias(lid);
    if (settings.greedy != 0u) {
        thread_max(lid, false);
        reduce_max(lid);
        if (lid == 0u) {
            finish(select(best_i[0], 0u, best_i[0] == NONE));
        }
        return;
    }
    if (candidates_may_do()) {
        if (lid == 0u) {
            atomicStore(&spill, 0u);
        }
        workgroupBarrier();
        collect(lid);
    } else {
        thread_max(lid, true);
    }
    reduce_max(lid);
    let m = best_v[0];
    let argmax = best_i[0];
    workgroupBarrier();
    let f = filters(lid, m);
    draw(lid, m, argmax, f.x, f.y != 0u);
}
