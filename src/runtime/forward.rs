//! Records one chunk of the LFM2 / LFM2-MoE forward pass (MODEL-SPEC §3) into a recorder:
//! T = 1 takes the decode kernels (matvec, expert matvec reading ids on the GPU, the down
//! projection combining the top-k into the residual), T > 1 the prefill kernels (tiled matmul,
//! gather + grouped expert GEMM + weighted combine).

use super::session::{LayerState, LogitsMode, Session};
use crate::error::{Error, Result};
use crate::gpu::{Binding, GpuContext, Recorder, WeightFormat, WeightTensor};
use crate::kernels::qk_norm_rope::{Heads, KvType};
use crate::kernels::{
    argmax, attention, embedding, matmul, matvec, moe_combine, moe_gather, moe_router,
    qk_norm_rope, rmsnorm, shortconv, swiglu,
};
use crate::model::{Config, FfnWeights, Mixer};

/// Activation buffers sized for one chunk.
pub(crate) struct Scratch {
    pub chunk: usize,
    pub tokens: wgpu::Buffer,
    pub rope: wgpu::Buffer,
    h: wgpu::Buffer,
    xn: wgpu::Buffer,
    proj: wgpu::Buffer,
    act: wgpu::Buffer,
    q: wgpu::Buffer,
    attn_parts: wgpu::Buffer,
    expert_out: wgpu::Buffer,
    router_logits: wgpu::Buffer,
    ids: wgpu::Buffer,
    route_weights: wgpu::Buffer,
    lists: Option<moe_gather::Buffers>,
    pub logits: wgpu::Buffer,
    pub next_token: wgpu::Buffer,
}

impl Scratch {
    /// Allocates for chunks of up to `chunk` tokens, lowered so every buffer fits one binding.
    pub fn new(ctx: &GpuContext, cfg: &Config, chunk: usize) -> Result<Self> {
        let (h, hd) = (cfg.hidden, cfg.head_dim);
        let (k, e, fe) = cfg
            .moe
            .as_ref()
            .map_or((0, 0, 0), |m| (m.top_k, m.n_experts, m.ffn));
        let qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * hd;
        let proj_row = (3 * h).max(qkv).max(2 * cfg.ffn).max(k * 2 * fe);
        let act_row = h.max(cfg.n_heads * hd).max(cfg.ffn).max(k * fe);
        let widest = proj_row.max(act_row).max(k * h).max(cfg.vocab);
        let fit = (ctx.max_binding() / (4 * widest as u64)) as usize;
        if fit == 0 {
            return Err(Error::Input(format!(
                "a single row of {widest} floats exceeds this device's binding limit"
            )));
        }
        let chunk = chunk.min(fit).max(1);
        let f = |n: usize| (4 * n) as u64;
        Ok(Scratch {
            chunk,
            tokens: ctx.storage("tokens", f(chunk)),
            rope: ctx.storage("rope", f(chunk * hd)),
            h: ctx.storage("residual", f(chunk * h)),
            xn: ctx.storage("normed", f(chunk * h)),
            proj: ctx.storage("projection", f(chunk * proj_row)),
            act: ctx.storage("activation", f(chunk * act_row)),
            q: ctx.storage("queries", f(chunk * cfg.n_heads * hd)),
            attn_parts: ctx.storage(
                "split-KV partials",
                f(attention::partials_len(Heads {
                    n_heads: cfg.n_heads as u32,
                    n_kv: cfg.n_kv_heads as u32,
                    head_dim: hd as u32,
                    kv: KvType::F32,
                })),
            ),
            expert_out: ctx.storage("expert outputs", f(chunk * k * h)),
            router_logits: ctx.storage("router logits", f(chunk * e)),
            ids: ctx.storage("expert ids", f(chunk * k)),
            route_weights: ctx.storage("routing weights", f(chunk * k)),
            lists: cfg
                .moe
                .as_ref()
                .map(|_| moe_gather::Buffers::new(ctx, e, chunk * k)),
            logits: ctx.storage("logits", f(chunk * cfg.vocab)),
            next_token: ctx.storage("next token", 4),
        })
    }
}

/// Whether prefill products use the batched matvec (CPU devices, where decoding each weight
/// once per token tile beats shared-memory tiles) rather than the tiled matmul (GPUs).
fn batched_matvec(ctx: &GpuContext) -> bool {
    ctx.cpu_kernels()
}

/// `y (+)= W · x` for `m` rows: the matvec for one row, the tiled matmul for more.
#[allow(clippy::too_many_arguments)]
fn linear(
    rec: &mut Recorder,
    w: &WeightTensor,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    m: u32,
    accumulate: bool,
) {
    let (n, k) = (w.rows, w.cols);
    if m == 1 || batched_matvec(rec.ctx()) {
        let v =
            matvec::Variant::for_device(rec.ctx(), w.format, matvec::Mode::Plain, accumulate, m);
        matvec::record(rec, v, &matvec::Args::plain(w, x.into(), y.into(), m));
    } else {
        let v = matmul::Variant {
            format: w.format,
            gather: false,
            accumulate,
        };
        let args = matmul::Args {
            w,
            n,
            m,
            x: x.into(),
            x_stride: k,
            y: y.into(),
            y_stride: n,
            gather: None,
        };
        matmul::record(rec, v, &args);
    }
}

/// `y (+)= W · rmsnorm(x)` over `m` rows of `x` (the residual): one dispatch for one token
/// where the device's matvec folds the norm in (GPUs), else the norm into `xn` and the
/// product from there.
#[allow(clippy::too_many_arguments)]
fn normed_linear(
    rec: &mut Recorder,
    w: &WeightTensor,
    (x, norm, eps): (&wgpu::Buffer, &wgpu::Buffer, f32),
    xn: &wgpu::Buffer,
    y: &wgpu::Buffer,
    m: u32,
    accumulate: bool,
) {
    let v = matvec::Variant::for_device(rec.ctx(), w.format, matvec::Mode::Plain, accumulate, 1);
    match v.with_norm().filter(|_| m == 1 && rec.ctx().fusion()) {
        Some(v) => {
            let args = matvec::Args {
                norm: Some((norm.into(), eps)),
                ..matvec::Args::plain(w, x.into(), y.into(), 1)
            };
            matvec::record(rec, v, &args);
        }
        None => {
            let b = |x: &wgpu::Buffer| Binding::whole(x);
            rmsnorm::record(rec, &b(x), &b(norm), &b(xn), w.cols, m, 0, eps);
            linear(rec, w, xn, y, m, accumulate);
        }
    }
}

/// The grouped expert product over gathered pairs: `y[pair] = W[e] · x[pair / x_div]`.
fn grouped(
    rec: &mut Recorder,
    w: &WeightTensor,
    n: u32,
    x: &wgpu::Buffer,
    x_stride: u32,
    y: &wgpu::Buffer,
    g: matmul::Gather,
) {
    if batched_matvec(rec.ctx()) {
        let v = matvec::Variant::for_device(
            rec.ctx(),
            w.format,
            matvec::Mode::Gather,
            false,
            g.max_rows,
        );
        let args = matvec::Args {
            w,
            n,
            x: x.into(),
            x_stride,
            y: y.into(),
            y_stride: n,
            batch: 0,
            ids: None,
            route: None,
            norm: None,
            gather: Some(g),
        };
        matvec::record(rec, v, &args);
    } else {
        let v = matmul::Variant {
            format: w.format,
            gather: true,
            accumulate: false,
        };
        let args = matmul::Args {
            w,
            n,
            m: 0,
            x: x.into(),
            x_stride,
            y: y.into(),
            y_stride: n,
            gather: Some(g),
        };
        matmul::record(rec, v, &args);
    }
}

/// Records the forward pass of `t` tokens (already in `scratch.tokens`, RoPE rows in
/// `scratch.rope`) starting at cache position `pos0`.
pub(crate) fn record_chunk(
    rec: &mut Recorder,
    s: &Session,
    t: u32,
    pos0: u32,
    mode: Option<LogitsMode>,
) {
    let cfg = &s.model.config;
    let w = &s.model.weights;
    let sc = &s.scratch;
    let h = cfg.hidden as u32;
    let b = |x: &wgpu::Buffer| Binding::whole(x);
    embedding::record(rec, &w.embed, &b(&sc.tokens), &b(&sc.h), t);
    let eps = cfg.norm_eps;
    for (layer, state) in w.layers.iter().zip(&s.state) {
        let op_norm = (&sc.h, &layer.operator_norm, eps);
        match (&layer.mixer, state) {
            (Mixer::Conv(c), LayerState::Conv { state }) => {
                normed_linear(rec, &c.in_proj, op_norm, &sc.xn, &sc.proj, t, false);
                shortconv::record(
                    rec,
                    &b(&sc.proj),
                    &b(&c.kernel),
                    &b(state),
                    &b(&sc.act),
                    h,
                    t,
                    cfg.conv_taps as u32,
                );
                linear(rec, &c.out_proj, &sc.act, &sc.h, t, true);
            }
            (Mixer::Attn(a), LayerState::Attn { k, v }) => {
                let heads = Heads {
                    n_heads: cfg.n_heads as u32,
                    n_kv: cfg.n_kv_heads as u32,
                    head_dim: cfg.head_dim as u32,
                    kv: s.opts.kv,
                };
                normed_linear(rec, &a.qkv, op_norm, &sc.xn, &sc.proj, t, false);
                let args = qk_norm_rope::Args {
                    qkv: b(&sc.proj),
                    q_norm: b(&a.q_norm),
                    k_norm: b(&a.k_norm),
                    rope: b(&sc.rope),
                    q_out: b(&sc.q),
                    k_cache: b(k),
                    v_cache: b(v),
                };
                qk_norm_rope::record(rec, heads, &args, t, pos0, cfg.norm_eps);
                attention::record(
                    rec,
                    heads,
                    &b(&sc.q),
                    &b(k),
                    &b(v),
                    &b(&sc.act),
                    t,
                    pos0,
                    Some(&b(&sc.attn_parts)),
                );
                linear(rec, &a.out_proj, &sc.act, &sc.h, t, true);
            }
            _ => unreachable!("layer state is built from the same weights"),
        }
        let ffn_norm = (&sc.h, &layer.ffn_norm, eps);
        match &layer.ffn {
            FfnWeights::Dense { gate_up, down } => {
                normed_linear(rec, gate_up, ffn_norm, &sc.xn, &sc.proj, t, false);
                swiglu::record(rec, &b(&sc.proj), &b(&sc.act), down.cols, t);
                linear(rec, down, &sc.act, &sc.h, t, true);
            }
            FfnWeights::Moe(m) => {
                // The router and the experts both read the normed rows.
                rmsnorm::record(
                    rec,
                    &b(&sc.h),
                    &b(&layer.ffn_norm),
                    &b(&sc.xn),
                    h,
                    t,
                    0,
                    eps,
                );
                let mc = cfg.moe.as_ref().expect("MoE weights imply an MoE config");
                let (k, fe) = (mc.top_k as u32, mc.ffn as u32);
                // Decode: router logits computed inside the routing dispatch (f32 router in one
                // page, at most 64 experts); prefill: the router is one more product.
                let fused = t == 1
                    && rec.ctx().fusion()
                    && m.router.format == WeightFormat::F32
                    && m.router.pages.len() == 1
                    && m.router.tile_log2 == 0
                    && mc.n_experts as u32 <= moe_router::MAX_FUSED_EXPERTS;
                if !fused {
                    linear(rec, &m.router, &sc.xn, &sc.router_logits, t, false);
                }
                let routing = moe_router::Routing {
                    n_experts: mc.n_experts as u32,
                    top_k: k,
                    use_bias: mc.use_expert_bias,
                    norm_topk: mc.norm_topk_prob,
                    scale: mc.routed_scaling_factor,
                };
                let (logits, xn) = (b(&sc.router_logits), b(&sc.xn));
                let router = fused.then(|| Binding::whole(&m.router.pages[0].buffer));
                let source = match &router {
                    Some(router) => moe_router::Logits::Fused {
                        x: &xn,
                        router,
                        hidden: h,
                    },
                    None => moe_router::Logits::Given(&logits),
                };
                moe_router::record(
                    rec,
                    routing,
                    source,
                    &b(&m.bias),
                    &b(&sc.ids),
                    &b(&sc.route_weights),
                    t,
                );
                if t == 1 {
                    let v = matvec::Variant::for_device(
                        rec.ctx(),
                        m.gate_up.format,
                        matvec::Mode::Experts,
                        false,
                        1,
                    );
                    let args = matvec::Args {
                        w: &m.gate_up,
                        n: 2 * fe,
                        x: b(&sc.xn),
                        x_stride: 0,
                        y: b(&sc.proj),
                        y_stride: 2 * fe,
                        batch: k,
                        ids: Some(b(&sc.ids)),
                        route: None,
                        norm: None,
                        gather: None,
                    };
                    matvec::record(rec, v, &args);
                    swiglu::record(rec, &b(&sc.proj), &b(&sc.act), fe, k);
                    // Down projection, weighted top-k sum and residual add in one dispatch
                    // (with fusion off: per-slot outputs, then the combine kernel).
                    let fuse = rec.ctx().fusion();
                    let (mode, y, route) = if fuse {
                        let route = Some(b(&sc.route_weights));
                        (matvec::Mode::ExpertsCombine, &sc.h, route)
                    } else {
                        (matvec::Mode::Experts, &sc.expert_out, None)
                    };
                    let v = matvec::Variant::for_device(rec.ctx(), m.down.format, mode, fuse, 1);
                    let args = matvec::Args {
                        w: &m.down,
                        n: h,
                        x: b(&sc.act),
                        x_stride: fe,
                        y: b(y),
                        y_stride: h,
                        batch: k,
                        ids: Some(b(&sc.ids)),
                        route,
                        norm: None,
                        gather: None,
                    };
                    matvec::record(rec, v, &args);
                    if !fuse {
                        let (out, rw) = (b(&sc.expert_out), b(&sc.route_weights));
                        moe_combine::record(rec, &out, &rw, &b(&sc.h), h, 1, k);
                    }
                } else {
                    let lists = sc.lists.as_ref().expect("MoE scratch");
                    moe_gather::record(rec, &b(&sc.ids), lists, t * k, routing.n_experts);
                    grouped(
                        rec,
                        &m.gate_up,
                        2 * fe,
                        &sc.xn,
                        h,
                        &sc.proj,
                        lists.gather(routing.n_experts, t, k),
                    );
                    swiglu::record(rec, &b(&sc.proj), &b(&sc.act), fe, t * k);
                    grouped(
                        rec,
                        &m.down,
                        h,
                        &sc.act,
                        fe,
                        &sc.expert_out,
                        lists.gather(routing.n_experts, t, 1),
                    );
                    moe_combine::record(
                        rec,
                        &b(&sc.expert_out),
                        &b(&sc.route_weights),
                        &b(&sc.h),
                        h,
                        t,
                        k,
                    );
                }
            }
        }
    }
    let Some(mode) = mode else { return };
    let (rows, first) = match mode {
        LogitsMode::All => (t, 0),
        LogitsMode::Last => (1, t - 1),
    };
    if first == 0 {
        let final_norm = (&sc.h, &w.final_norm, eps);
        normed_linear(
            rec,
            w.lm_head(),
            final_norm,
            &sc.xn,
            &sc.logits,
            rows,
            false,
        );
    } else {
        rmsnorm::record(
            rec,
            &b(&sc.h),
            &b(&w.final_norm),
            &b(&sc.xn),
            h,
            rows,
            first,
            eps,
        );
        linear(rec, w.lm_head(), &sc.xn, &sc.logits, rows, false);
    }
    argmax::record(
        rec,
        &b(&sc.logits),
        &b(&sc.next_token),
        cfg.vocab as u32,
        rows - 1,
    );
}
