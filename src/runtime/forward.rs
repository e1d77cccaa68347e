//! Records one step of the LFM2 / LFM2-MoE forward pass (MODEL-SPEC §3): a block at a time,
//! each over an explicit view of what it reads and writes. T = 1 takes the decode kernels,
//! T > 1 the prefill kernels; the MoE blocks live in `moe.rs`.

use super::moe;
use super::products::{linear, normed_linear, Linear, Norm};
use super::state::LayerState;
use super::step::{LogitsMode, StepShape, StepView};
use crate::gpu::{Binding, Recorder, WeightTensor};
use crate::kernels::{
    attention, embedding, qk_norm_rope, rmsnorm, sample, shortconv, swiglu, Heads,
};
use crate::model::{AttnWeights, ConvWeights, FfnWeights, LayerWeights, Mixer};

fn b(x: &wgpu::Buffer) -> Binding {
    Binding::whole(x)
}

/// Records the whole step at the recorder's position.
pub(crate) fn record_step(rec: &mut Recorder, view: &StepView, shape: StepShape) {
    let t = shape.tokens;
    let sc = view.scratch;
    embedding::record(rec, &view.weights.embed, &b(&sc.tokens), &b(&sc.h), t);
    for (layer, state) in view.weights.layers.iter().zip(&view.seq.layers) {
        match (&layer.mixer, state) {
            (Mixer::Conv(c), LayerState::Conv { state }) => {
                conv_mixer(rec, view, layer, c, state, t)
            }
            (Mixer::Attn(a), LayerState::Attn { k, v }) => {
                attention_mixer(rec, view, layer, a, (k, v), t)
            }
            _ => unreachable!("layer state is built from the same weights"),
        }
        match &layer.ffn {
            FfnWeights::Dense { gate_up, down } => dense_ffn(rec, view, layer, (gate_up, down), t),
            FfnWeights::Moe(m) if t == 1 => moe::per_token(rec, view, layer, m, 1),
            FfnWeights::Moe(m) => moe::prefill(rec, view, layer, m, t),
        }
    }
    if let Some(mode) = shape.logits {
        head(rec, view, t, mode);
    }
}

/// The operator norm of `layer`, writing normed rows to `scratch.xn` where not folded.
fn operator_norm<'a>(view: &'a StepView, layer: &'a LayerWeights) -> Norm<'a> {
    Norm {
        w: &layer.operator_norm,
        eps: view.cfg.norm_eps,
        out: &view.scratch.xn,
    }
}

/// Short-conv mixer: in_proj (B | C | x), the gated convolution over the carried state,
/// out_proj added into the residual.
fn conv_mixer(
    rec: &mut Recorder,
    view: &StepView,
    layer: &LayerWeights,
    c: &ConvWeights,
    state: &wgpu::Buffer,
    t: u32,
) {
    conv_in(rec, view, layer, c, t);
    conv_core(rec, view, c, state, t);
    mixer_out(rec, view, &c.out_proj, t);
}

/// The conv mixer's normed in_proj: `t` rows of B | C | x into `scratch.proj`.
pub(super) fn conv_in(
    rec: &mut Recorder,
    view: &StepView,
    layer: &LayerWeights,
    c: &ConvWeights,
    t: u32,
) {
    let sc = view.scratch;
    let in_proj = Linear {
        w: &c.in_proj,
        x: &sc.h,
        y: &sc.proj,
        rows: t,
        accumulate: false,
    };
    normed_linear(rec, &operator_norm(view, layer), &in_proj);
}

/// The gated convolution of `t` consecutive tokens of one sequence over its carried `state`:
/// `scratch.proj` rows into `scratch.act` rows.
pub(super) fn conv_core(
    rec: &mut Recorder,
    view: &StepView,
    c: &ConvWeights,
    state: &wgpu::Buffer,
    t: u32,
) {
    let sc = view.scratch;
    let args = shortconv::Args {
        proj: &b(&sc.proj),
        kernel: &b(&c.kernel),
        state: &b(state),
        y: &b(&sc.act),
    };
    let (h, taps) = (view.cfg.hidden as u32, view.cfg.conv_taps as u32);
    shortconv::record(rec, &args, h, t, taps);
}

/// A mixer's out_proj: `t` rows of `scratch.act` through `w`, added into the residual.
pub(super) fn mixer_out(rec: &mut Recorder, view: &StepView, w: &WeightTensor, t: u32) {
    let sc = view.scratch;
    let out_proj = Linear {
        w,
        x: &sc.act,
        y: &sc.h,
        rows: t,
        accumulate: true,
    };
    linear(rec, &out_proj);
}

/// Attention mixer: fused q|k|v projection, QK norm + RoPE writing the KV cache at the
/// step's positions, attention over the cache, out_proj added into the residual.
fn attention_mixer(
    rec: &mut Recorder,
    view: &StepView,
    layer: &LayerWeights,
    a: &AttnWeights,
    kv: (&[Binding], &[Binding]),
    t: u32,
) {
    attention_in(rec, view, layer, a, t);
    attention_core(rec, view, a, kv, t);
    mixer_out(rec, view, &a.out_proj, t);
}

/// The attention mixer's normed q|k|v projection: `t` rows into `scratch.proj`.
pub(super) fn attention_in(
    rec: &mut Recorder,
    view: &StepView,
    layer: &LayerWeights,
    a: &AttnWeights,
    t: u32,
) {
    let sc = view.scratch;
    let qkv = Linear {
        w: &a.qkv,
        x: &sc.h,
        y: &sc.proj,
        rows: t,
        accumulate: false,
    };
    normed_linear(rec, &operator_norm(view, layer), &qkv);
}

/// QK norm + RoPE of `t` consecutive tokens of one sequence (`scratch.proj` rows, RoPE rows
/// in `scratch.rope`) writing its KV cache at the step's positions, then attention over the
/// cache into `scratch.act` rows.
pub(super) fn attention_core(
    rec: &mut Recorder,
    view: &StepView,
    a: &AttnWeights,
    (k, v): (&[Binding], &[Binding]),
    t: u32,
) {
    let (cfg, sc) = (view.cfg, view.scratch);
    let heads = Heads {
        n_heads: cfg.n_heads as u32,
        n_kv: cfg.n_kv_heads as u32,
        head_dim: cfg.head_dim as u32,
        kv: view.seq.kv,
    };
    let prep = qk_norm_rope::Args {
        qkv: b(&sc.proj),
        q_norm: b(&a.q_norm),
        k_norm: b(&a.k_norm),
        rope: b(&sc.rope),
        q_out: b(&sc.q),
        cache: view.seq.pages(k, v),
    };
    qk_norm_rope::record(rec, heads, &prep, t, cfg.norm_eps);
    let (q, out, parts) = (b(&sc.q), b(&sc.act), b(&sc.attn_parts));
    let args = attention::Args {
        q: &q,
        cache: &view.seq.pages(k, v),
        out: &out,
        partials: Some(&parts),
        kernel: rec.ctx().profile().attention_kernel(t),
    };
    attention::record(rec, heads, &args, t);
}

/// Dense SwiGLU feed-forward: normed gate|up product, SwiGLU, down added into the residual.
pub(super) fn dense_ffn(
    rec: &mut Recorder,
    view: &StepView,
    layer: &LayerWeights,
    (gate_up, down): (&WeightTensor, &WeightTensor),
    t: u32,
) {
    let sc = view.scratch;
    let norm = Norm {
        w: &layer.ffn_norm,
        eps: view.cfg.norm_eps,
        out: &sc.xn,
    };
    let gu = Linear {
        w: gate_up,
        x: &sc.h,
        y: &sc.proj,
        rows: t,
        accumulate: false,
    };
    normed_linear(rec, &norm, &gu);
    swiglu::record(rec, &b(&sc.proj), &b(&sc.act), down.cols, t);
    let down = Linear {
        w: down,
        x: &sc.act,
        y: &sc.h,
        rows: t,
        accumulate: true,
    };
    linear(rec, &down);
}

/// Final norm, LM head and sampling on the GPU: logits of every position or of the last, the
/// token drawn from the last (for the position after the step) into `scratch.next_token`.
fn head(rec: &mut Recorder, view: &StepView, t: u32, mode: LogitsMode) {
    let rows = logits(rec, view, t, mode);
    let sc = view.scratch;
    let args = sample::Args {
        logits: &b(&sc.logits),
        settings: &b(&view.sampler.settings),
        seen: &b(&view.sampler.seen),
        out: &b(&sc.next_token),
        bias: &b(&view.sampler.bias),
    };
    sample::record(rec, &args, view.cfg.vocab as u32, rows - 1, t);
}

/// Final norm and LM head: logits of every position of the step, or of the last, into
/// `scratch.logits`; returns how many rows.
pub(super) fn logits(rec: &mut Recorder, view: &StepView, t: u32, mode: LogitsMode) -> u32 {
    let (cfg, sc, w) = (view.cfg, view.scratch, view.weights);
    let (rows, first) = match mode {
        LogitsMode::All => (t, 0),
        LogitsMode::Last => (1, t - 1),
    };
    let lm_head = Linear {
        w: w.lm_head(),
        x: &sc.h,
        y: &sc.logits,
        rows,
        accumulate: false,
    };
    let norm = Norm {
        w: &w.final_norm,
        eps: cfg.norm_eps,
        out: &sc.xn,
    };
    if first == 0 {
        normed_linear(rec, &norm, &lm_head);
    } else {
        let args = rmsnorm::Args {
            x: &b(&sc.h),
            w: &b(&w.final_norm),
            out: &b(&sc.xn),
            n: cfg.hidden as u32,
            rows,
            first_row: first,
            eps: cfg.norm_eps,
        };
        rmsnorm::record(rec, &args);
        linear(
            rec,
            &Linear {
                x: &sc.xn,
                ..lm_head
            },
        );
    }
    rows
}
