//! Weighted sum of each token's top-k expert outputs into the residual stream.

use crate::gpu::{fold_groups, Binding, Defines, Recorder};

pub const SOURCE: &str = include_str!("../../shaders/moe_combine.wgsl");

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 64;

crate::params! {
    pub(crate) struct Params {
        h: u32,
        tokens: u32,
        top_k: u32,
        _pad: u32,
    }
}

/// `h[t] += Σ_j weights[t, j] · y[t·k + j]`.
pub fn record(
    rec: &mut Recorder,
    y: &Binding,
    weights: &Binding,
    h_buf: &Binding,
    h: u32,
    tokens: u32,
    top_k: u32,
) {
    let pipeline = rec
        .ctx()
        .pipeline("moe_combine", SOURCE, &Defines::new().uint("WG", WG));
    let params = Params {
        h,
        tokens,
        top_k,
        _pad: 0,
    };
    let b = [y.clone(), weights.clone(), h_buf.clone()];
    rec.dispatch(
        "moe_combine",
        &pipeline,
        &params,
        &b,
        fold_groups((h * tokens).div_ceil(WG), 1),
    );
}

/// CPU reference, in place on `h`.
pub fn reference(y: &[f32], weights: &[f32], hbuf: &mut [f32], h: usize, top_k: usize) {
    for (t, row) in hbuf.chunks_mut(h).enumerate() {
        for (c, out) in row.iter_mut().enumerate() {
            let s: f32 = (0..top_k)
                .map(|j| weights[t * top_k + j] * y[(t * top_k + j) * h + c])
                .sum();
            *out += s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, rel_err, Rng};

    #[test]
    fn combine_matches_reference() {
        let Some(ctx) = context() else { return };
        let (h, t, k) = (67usize, 5usize, 3usize);
        let mut rng = Rng::new(1);
        let (y, w, mut hv) = (
            rng.normals(t * k * h, 1.0),
            rng.normals(t * k, 1.0),
            rng.normals(t * h, 1.0),
        );
        let (yb, wb, hb) = (
            ctx.storage_with("y", &y),
            ctx.storage_with("w", &w),
            ctx.storage_with("h", &hv),
        );
        let mut rec = Recorder::new(ctx);
        record(
            &mut rec,
            &(&yb).into(),
            &(&wb).into(),
            &(&hb).into(),
            h as u32,
            t as u32,
            k as u32,
        );
        rec.submit();
        reference(&y, &w, &mut hv, h, k);
        assert!(rel_err(&ctx.read_f32(&hb, 0, t * h).unwrap(), &hv) < 1e-11);
    }
}
