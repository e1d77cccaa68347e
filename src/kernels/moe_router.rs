//! LFM2-MoE routing on the GPU: sigmoid, bias for selection only, top-k, renormalisation and
//! routed scaling; expert ids and weights never leave the GPU.

use crate::gpu::{Binding, Defines, Recorder};

pub const SOURCE: &str = include_str!("../../shaders/moe_router.wgsl");

/// Largest top-k the shader holds.
pub const MAX_TOP_K: usize = 16;

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 64;

crate::params! {
    pub(crate) struct Params {
        tokens: u32,
        n_experts: u32,
        top_k: u32,
        use_bias: u32,
        norm_topk: u32,
        scale: f32,
        hidden: u32,
        _pad: u32,
    }
}

/// Where the router logits come from.
pub enum Logits<'a> {
    /// Already computed, `[T, E]`.
    Given(&'a Binding),
    /// Computed in the same dispatch from `x` `[T, hidden]` and the f32 `router` `[E, hidden]`
    /// (E ≤ `MAX_FUSED_EXPERTS`).
    Fused {
        x: &'a Binding,
        router: &'a Binding,
        hidden: u32,
    },
}

/// Most experts the fused router holds (one thread each).
pub const MAX_FUSED_EXPERTS: u32 = 64;

/// Routing hyperparameters.
#[derive(Clone, Copy, Debug)]
pub struct Routing {
    pub n_experts: u32,
    pub top_k: u32,
    pub use_bias: bool,
    pub norm_topk: bool,
    pub scale: f32,
}

/// Router logits → `ids` [T, k] (u32) and `weights` [T, k].
pub fn record(
    rec: &mut Recorder,
    r: Routing,
    logits: Logits,
    bias: &Binding,
    ids: &Binding,
    weights: &Binding,
    tokens: u32,
) {
    let (first, router, hidden, groups) = match logits {
        Logits::Given(l) => (l, None, 0, tokens.div_ceil(WG)),
        Logits::Fused { x, router, hidden } => {
            assert!(
                r.n_experts <= MAX_FUSED_EXPERTS,
                "fused router holds 64 experts"
            );
            (x, Some(router), hidden, tokens)
        }
    };
    let defines = Defines::new()
        .uint("WG", WG)
        .flag_if(router.is_some(), "FUSED");
    let pipeline = rec.ctx().pipeline("moe_router", SOURCE, &defines);
    let params = Params {
        tokens,
        n_experts: r.n_experts,
        top_k: r.top_k,
        use_bias: r.use_bias as u32,
        norm_topk: r.norm_topk as u32,
        scale: r.scale,
        hidden,
        _pad: 0,
    };
    let mut b = vec![first.clone(), bias.clone(), ids.clone(), weights.clone()];
    b.extend(router.cloned());
    rec.dispatch("moe_router", &pipeline, &params, &b, [groups, 1, 1]);
}

/// CPU reference for one token: (ids, weights).
pub fn reference(logits: &[f32], bias: &[f32], r: Routing) -> (Vec<u32>, Vec<f32>) {
    let s: Vec<f32> = logits.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect();
    let mut ids: Vec<u32> = Vec::new();
    for _ in 0..r.top_k {
        let mut best = (f32::MIN, 0u32);
        for e in 0..r.n_experts {
            let sc = s[e as usize] + if r.use_bias { bias[e as usize] } else { 0.0 };
            if !ids.contains(&e) && sc > best.0 {
                best = (sc, e);
            }
        }
        ids.push(best.1);
    }
    let sum: f32 = ids.iter().map(|&e| s[e as usize]).sum();
    let denom = if r.norm_topk { sum + 1e-6 } else { 1.0 };
    let w = ids
        .iter()
        .map(|&e| s[e as usize] / denom * r.scale)
        .collect();
    (ids, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, poisoned, rel_err, Rng};

    #[test]
    fn router_matches_reference() {
        let Some(ctx) = context() else { return };
        for (t, e, k, bias_on, norm) in [
            (1usize, 32u32, 4u32, true, true),
            (70, 6, 3, true, false),
            (9, 8, 2, false, true),
        ] {
            let r = Routing {
                n_experts: e,
                top_k: k,
                use_bias: bias_on,
                norm_topk: norm,
                scale: 1.5,
            };
            let mut rng = Rng::new(t as u64 + e as u64);
            let hidden = 40usize;
            let x = rng.normals(t * hidden, 1.0);
            let router = rng.normals(e as usize * hidden, 0.3);
            // Logits as the fused kernel sums them (in order, f32), for both paths.
            let logits: Vec<f32> = (0..t * e as usize)
                .map(|i| {
                    let (ti, ei) = (i / e as usize, i % e as usize);
                    (0..hidden).fold(0.0f32, |s, j| {
                        router[ei * hidden + j].mul_add(x[ti * hidden + j], s)
                    })
                })
                .collect();
            let bias = rng.normals(e as usize, 0.3);
            let (lb, bb) = (ctx.storage_with("l", &logits), ctx.storage_with("b", &bias));
            let (xb, rb) = (ctx.storage_with("x", &x), ctx.storage_with("r", &router));
            for fused in [false, true] {
                let (ib, wb) = (poisoned(ctx, t * k as usize), poisoned(ctx, t * k as usize));
                let (lbb, xbb, rbb) = ((&lb).into(), (&xb).into(), (&rb).into());
                let logits_in = if fused {
                    Logits::Fused {
                        x: &xbb,
                        router: &rbb,
                        hidden: hidden as u32,
                    }
                } else {
                    Logits::Given(&lbb)
                };
                let mut rec = Recorder::new(ctx);
                record(
                    &mut rec,
                    r,
                    logits_in,
                    &(&bb).into(),
                    &(&ib).into(),
                    &(&wb).into(),
                    t as u32,
                );
                rec.submit();
                let ids = ctx.read_u32(&ib, 0, t * k as usize).unwrap();
                let ws = ctx.read_f32(&wb, 0, t * k as usize).unwrap();
                let e_us = e as usize;
                for ti in 0..t {
                    let (ri, rw) = reference(&logits[ti * e_us..(ti + 1) * e_us], &bias, r);
                    assert_eq!(
                        &ids[ti * k as usize..(ti + 1) * k as usize],
                        &ri[..],
                        "token {ti}"
                    );
                    assert!(
                        rel_err(&ws[ti * k as usize..(ti + 1) * k as usize], &rw) < 1e-10,
                        "token {ti} fused={fused}"
                    );
                }
            }
        }
    }
}
