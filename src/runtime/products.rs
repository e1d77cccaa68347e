//! The matrix products of a step, routed to the kernel family the device profile picks: the
//! matvec for one token (and for prefill on CPU devices), the tiled matmul for prefill on GPUs.

use crate::gpu::{Binding, PrefillProduct, Recorder, WeightTensor};
use crate::kernels::{matmul, matvec, rmsnorm, PairLists};

/// `y (+)= W · x` over `rows` rows of `x` (stride `w.cols`) into rows of `y` (stride `w.rows`).
pub(crate) struct Linear<'a> {
    pub w: &'a WeightTensor,
    pub x: &'a wgpu::Buffer,
    pub y: &'a wgpu::Buffer,
    pub rows: u32,
    pub accumulate: bool,
}

/// The RMSNorm in front of a product: its weights and epsilon, and where the normed rows go
/// when the norm is a dispatch of its own.
pub(crate) struct Norm<'a> {
    pub w: &'a wgpu::Buffer,
    pub eps: f32,
    pub out: &'a wgpu::Buffer,
}

/// Whether prefill products take the batched matvec (CPU devices) rather than the matmul.
fn batched_matvec(rec: &Recorder) -> bool {
    rec.ctx().profile().prefill == PrefillProduct::BatchedMatvec
}

/// `y (+)= W · x`: the matvec for one row, else the device's prefill product.
pub(crate) fn linear(rec: &mut Recorder, l: &Linear) {
    let (w, m) = (l.w, l.rows);
    if m == 1 || batched_matvec(rec) {
        let profile = rec.ctx().profile();
        let v =
            matvec::Variant::for_profile(profile, w.format, matvec::Mode::Plain, l.accumulate, m);
        matvec::record(rec, v, &matvec::Args::plain(w, l.x.into(), l.y.into(), m));
    } else {
        let v = matmul::Variant {
            format: w.format,
            gather: false,
            accumulate: l.accumulate,
        };
        let args = matmul::Args {
            w,
            n: w.rows,
            m,
            x: l.x.into(),
            x_stride: w.cols,
            y: l.y.into(),
            y_stride: w.rows,
            gather: None,
        };
        matmul::record(rec, v, &args);
    }
}

/// `y (+)= W · rmsnorm(x)` where `l.x` is the residual: one dispatch for one token where the
/// device's matvec folds the norm in (GPUs, fusion on), else the norm into `norm.out` and the
/// product from there.
pub(crate) fn normed_linear(rec: &mut Recorder, norm: &Norm, l: &Linear) {
    let profile = rec.ctx().profile();
    let fold = l.rows == 1 && profile.fusion;
    let v = matvec::Variant::for_profile(profile, l.w.format, matvec::Mode::Plain, l.accumulate, 1);
    match v.with_norm().filter(|_| fold) {
        Some(v) => {
            let args = matvec::Args {
                norm: Some((norm.w.into(), norm.eps)),
                ..matvec::Args::plain(l.w, l.x.into(), l.y.into(), 1)
            };
            matvec::record(rec, v, &args);
        }
        None => {
            let b = |x: &wgpu::Buffer| Binding::whole(x);
            let args = rmsnorm::Args {
                x: &b(l.x),
                w: &b(norm.w),
                out: &b(norm.out),
                n: l.w.cols,
                rows: l.rows,
                first_row: 0,
                eps: norm.eps,
            };
            rmsnorm::record(rec, &args);
            linear(rec, &Linear { x: norm.out, ..*l });
        }
    }
}

/// The grouped expert product over gathered pairs: `y[pair] = W[e] · x[pair / x_div]`, for
/// `n` rows per expert matrix.
pub(crate) fn grouped(
    rec: &mut Recorder,
    (w, n): (&WeightTensor, u32),
    (x, x_stride): (&wgpu::Buffer, u32),
    y: &wgpu::Buffer,
    g: PairLists,
) {
    if batched_matvec(rec) {
        let profile = rec.ctx().profile();
        let v = matvec::Variant::for_profile(
            profile,
            w.format,
            matvec::Mode::Gather,
            false,
            g.max_rows,
        );
        let args = matvec::Args {
            n,
            x_stride,
            y_stride: n,
            gather: Some(g),
            ..matvec::Args::plain(w, x.into(), y.into(), 0)
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
