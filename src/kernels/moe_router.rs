//! LFM2-MoE routing on the GPU: sigmoid, bias for selection only, top-k, renormalisation and
//! routed scaling; expert ids and weights never leave the GPU.

use crate::gpu::{Binding, Recorder};

pub const SOURCE: &str = include_str!("../../shaders/moe_router.wgsl");

/// Largest top-k the shader holds.
pub const MAX_TOP_K: usize = 16;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    tokens: u32,
    n_experts: u32,
    top_k: u32,
    use_bias: u32,
    norm_topk: u32,
    scale: f32,
    _pad: [u32; 2],
}

/// Routing hyperparameters.
#[derive(Clone, Copy, Debug)]
pub struct Routing {
    pub n_experts: u32,
    pub top_k: u32,
    pub use_bias: bool,
    pub norm_topk: bool,
    pub scale: f32,
}

/// `logits` [T, E] → `ids` [T, k] (u32) and `weights` [T, k].
pub fn record(
    rec: &mut Recorder,
    r: Routing,
    logits: &Binding,
    bias: &Binding,
    ids: &Binding,
    weights: &Binding,
    tokens: u32,
) {
    let pipeline = rec.ctx().pipeline("moe_router", SOURCE, &Vec::new());
    let params = Params {
        tokens,
        n_experts: r.n_experts,
        top_k: r.top_k,
        use_bias: r.use_bias as u32,
        norm_topk: r.norm_topk as u32,
        scale: r.scale,
        _pad: [0; 2],
    };
    let b = [logits.clone(), bias.clone(), ids.clone(), weights.clone()];
    rec.dispatch(
        "moe_router",
        &pipeline,
        &params,
        &b,
        [tokens.div_ceil(64), 1, 1],
    );
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
            let logits = rng.normals(t * e as usize, 2.0);
            let bias = rng.normals(e as usize, 0.3);
            let (lb, bb) = (ctx.storage_with("l", &logits), ctx.storage_with("b", &bias));
            let (ib, wb) = (poisoned(ctx, t * k as usize), poisoned(ctx, t * k as usize));
            let mut rec = Recorder::new(ctx);
            record(
                &mut rec,
                r,
                &(&lb).into(),
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
                assert!(rel_err(&ws[ti * k as usize..(ti + 1) * k as usize], &rw) < 1e-11);
            }
        }
    }
}
