//! The MoE feed-forward block (MODEL-SPEC §3.4): the normed rows are routed on the GPU
//! (sigmoid, bias for selection, top-k), then one token's experts run as expert matvecs whose
//! ids are read on the GPU (decode), or a chunk's (token, slot) pairs are gathered per expert
//! for grouped products and summed back in a fixed order (prefill).

use super::products::{grouped, linear, Linear};
use super::step::StepView;
use crate::gpu::{Binding, Recorder, WeightFormat};
use crate::kernels::{matvec, moe_combine, moe_gather, moe_router, rmsnorm, swiglu};
use crate::model::{LayerWeights, MoeConfig, MoeWeights};

fn b(x: &wgpu::Buffer) -> Binding {
    Binding::whole(x)
}

/// The layer's MoE config (MoE weights are only built from an MoE config).
fn config<'a>(view: &'a StepView) -> &'a MoeConfig {
    view.cfg
        .moe
        .as_ref()
        .expect("MoE weights imply an MoE config")
}

/// Normalises the residual into `scratch.xn` (both router and experts read it) and routes
/// `t` tokens: expert ids and weights into `scratch.ids` / `scratch.route_weights`. One
/// token computes its router logits inside the routing dispatch where the device fuses.
fn route(rec: &mut Recorder, view: &StepView, layer: &LayerWeights, m: &MoeWeights, t: u32) {
    let (cfg, sc, mc) = (view.cfg, view.scratch, config(view));
    let h = cfg.hidden as u32;
    let norm = rmsnorm::Args {
        x: &b(&sc.h),
        w: &b(&layer.ffn_norm),
        out: &b(&sc.xn),
        n: h,
        rows: t,
        first_row: 0,
        eps: cfg.norm_eps,
    };
    rmsnorm::record(rec, &norm);
    // The fused router holds an f32 router in one page and at most 64 experts.
    let fused = t == 1
        && rec.ctx().profile().fusion
        && m.router.format == WeightFormat::F32
        && m.router.pages.len() == 1
        && m.router.tile_log2 == 0
        && mc.n_experts as u32 <= moe_router::MAX_FUSED_EXPERTS;
    if !fused {
        let router = Linear {
            w: &m.router,
            x: &sc.xn,
            y: &sc.router_logits,
            rows: t,
            accumulate: false,
        };
        linear(rec, &router);
    }
    let routing = moe_router::Routing {
        n_experts: mc.n_experts as u32,
        top_k: mc.top_k as u32,
        use_bias: mc.use_expert_bias,
        norm_topk: mc.norm_topk_prob,
        scale: mc.routed_scaling_factor,
    };
    let (logits, xn) = (b(&sc.router_logits), b(&sc.xn));
    let router = fused.then(|| b(&m.router.pages[0].buffer));
    let source = match &router {
        Some(router) => moe_router::Logits::Fused {
            x: &xn,
            router,
            hidden: h,
        },
        None => moe_router::Logits::Given(&logits),
    };
    let (ids, weights) = (b(&sc.ids), b(&sc.route_weights));
    moe_router::record(rec, routing, source, &b(&m.bias), &ids, &weights, t);
}

/// `t` tokens, each on its own: gate|up for each token's k experts (ids read on the GPU),
/// SwiGLU, then the down projection, weighted top-k sum and residual add in one dispatch
/// (with fusion off: per-slot outputs, then the combine kernel). The decode path (t = 1),
/// and the batched decode step's: a few tokens rarely share an expert, so grouping them by
/// expert would save few weight reads.
pub(crate) fn per_token(
    rec: &mut Recorder,
    view: &StepView,
    layer: &LayerWeights,
    m: &MoeWeights,
    t: u32,
) {
    route(rec, view, layer, m, t);
    let (sc, mc) = (view.scratch, config(view));
    let (h, k, fe) = (view.cfg.hidden as u32, mc.top_k as u32, mc.ffn as u32);
    let profile = rec.ctx().profile();
    let experts = matvec::Mode::Experts;
    let v = matvec::Variant::for_profile(profile, m.gate_up.format, experts, false, 1);
    let args = matvec::Args {
        n: 2 * fe,
        x_stride: h,
        x_div: k,
        y_stride: 2 * fe,
        ids: Some(b(&sc.ids)),
        ..matvec::Args::plain(&m.gate_up, b(&sc.xn), b(&sc.proj), t * k)
    };
    matvec::record(rec, v, &args);
    swiglu::record(rec, &b(&sc.proj), &b(&sc.act), fe, t * k);
    let fuse = profile.fusion;
    let (mode, y, route) = if fuse {
        let route = Some(b(&sc.route_weights));
        (matvec::Mode::ExpertsCombine, &sc.h, route)
    } else {
        (matvec::Mode::Experts, &sc.expert_out, None)
    };
    let v = matvec::Variant::for_profile(profile, m.down.format, mode, fuse, 1);
    let args = matvec::Args {
        n: h,
        x_stride: fe,
        y_stride: h,
        ids: Some(b(&sc.ids)),
        tokens: if fuse { t } else { 1 },
        route,
        ..matvec::Args::plain(&m.down, b(&sc.act), b(y), t * k)
    };
    matvec::record(rec, v, &args);
    if !fuse {
        let (out, rw) = (b(&sc.expert_out), b(&sc.route_weights));
        moe_combine::record(rec, &out, &rw, &b(&sc.h), h, t, k);
    }
}

/// A chunk of `t` tokens: pairs gathered per expert on the GPU, grouped gate|up, SwiGLU,
/// grouped down into per-slot rows, then the weighted top-k sum into the residual.
pub(crate) fn prefill(
    rec: &mut Recorder,
    view: &StepView,
    layer: &LayerWeights,
    m: &MoeWeights,
    t: u32,
) {
    route(rec, view, layer, m, t);
    let (sc, mc) = (view.scratch, config(view));
    let (h, k, fe, e) = (
        view.cfg.hidden as u32,
        mc.top_k as u32,
        mc.ffn as u32,
        mc.n_experts as u32,
    );
    let lists = sc.lists.as_ref().expect("MoE scratch");
    moe_gather::record(rec, &b(&sc.ids), lists, t * k, e);
    let gu = lists.gather(e, t, k);
    grouped(rec, (&m.gate_up, 2 * fe), (&sc.xn, h), &sc.proj, gu);
    swiglu::record(rec, &b(&sc.proj), &b(&sc.act), fe, t * k);
    let down = lists.gather(e, t, 1);
    grouped(rec, (&m.down, h), (&sc.act, fe), &sc.expert_out, down);
    let (out, rw) = (b(&sc.expert_out), b(&sc.route_weights));
    moe_combine::record(rec, &out, &rw, &b(&sc.h), h, t, k);
}
