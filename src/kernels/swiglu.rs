//! SwiGLU activation over rows laid out gate | up.

use crate::gpu::{fold_groups, Binding, Defines, Recorder};

pub const SOURCE: &str = include_str!("../../shaders/swiglu.wgsl");

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 64;

crate::params! {
    pub(crate) struct Params {
        f: u32,
        rows: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// `gu` [rows, 2F] → `out` [rows, F].
pub fn record(rec: &mut Recorder, gu: &Binding, out: &Binding, f: u32, rows: u32) {
    let pipeline = rec
        .ctx()
        .pipeline("swiglu", SOURCE, &Defines::new().uint("WG", WG));
    let params = Params {
        f,
        rows,
        _pad0: 0,
        _pad1: 0,
    };
    rec.dispatch(
        "swiglu",
        &pipeline,
        &params,
        &[gu.clone(), out.clone()],
        fold_groups((f * rows).div_ceil(WG), 1),
    );
}

/// CPU reference.
pub fn reference(gu: &[f32], f: usize) -> Vec<f32> {
    gu.chunks(2 * f)
        .flat_map(|r| (0..f).map(move |i| r[i] / (1.0 + (-r[i]).exp()) * r[f + i]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, poisoned, rel_err, Rng};

    #[test]
    fn swiglu_matches_reference() {
        let Some(ctx) = context() else { return };
        for (f, rows) in [(1usize, 1usize), (44, 9), (1792, 4)] {
            let gu = Rng::new(f as u64).normals(rows * 2 * f, 3.0);
            let (gb, out) = (ctx.storage_with("gu", &gu), poisoned(ctx, rows * f));
            let mut rec = Recorder::new(ctx);
            record(
                &mut rec,
                &(&gb).into(),
                &(&out).into(),
                f as u32,
                rows as u32,
            );
            rec.submit();
            let e = rel_err(
                &ctx.read_f32(&out, 0, rows * f).unwrap(),
                &reference(&gu, f),
            );
            assert!(e < 1e-11, "f={f} err={e}");
        }
    }
}
