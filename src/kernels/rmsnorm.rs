//! RMSNorm over rows: `out[r] = x[first_row + r] · w / sqrt(mean(x²) + eps)`.

use crate::gpu::{fold_groups, Binding, Defines, Recorder};

pub const SOURCE: &str = include_str!("../../shaders/rmsnorm.wgsl");

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 64;

crate::params! {
    pub(crate) struct Params {
        n: u32,
        rows: u32,
        first_row: u32,
        eps: f32,
    }
}

/// One call: `rows` rows of width `n` starting at row `first_row` of `x`, into `out[0..rows]`.
pub struct Args<'a> {
    pub x: &'a Binding,
    pub w: &'a Binding,
    pub out: &'a Binding,
    pub n: u32,
    pub rows: u32,
    pub first_row: u32,
    pub eps: f32,
}

/// Normalises the rows `a` names.
pub fn record(rec: &mut Recorder, a: &Args) {
    let Args {
        x,
        w,
        out,
        n,
        rows,
        first_row,
        eps,
    } = *a;
    let pipeline = rec
        .ctx()
        .pipeline("rmsnorm", SOURCE, &Defines::new().uint("WG", WG));
    let params = Params {
        n,
        rows,
        first_row,
        eps,
    };
    rec.dispatch(
        "rmsnorm",
        &pipeline,
        &params,
        &[x.clone(), w.clone(), out.clone()],
        fold_groups(rows, 1),
    );
}

/// CPU reference for one row.
pub fn reference(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, w)| v * inv * w).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, poisoned, rel_err, Rng};

    #[test]
    fn rmsnorm_matches_reference() {
        let Some(ctx) = context() else { return };
        for (n, rows, first) in [(1usize, 1usize, 0usize), (67, 9, 2), (2048, 3, 1)] {
            let mut rng = Rng::new(n as u64);
            let x = rng.normals((rows + first) * n, 2.0);
            let w: Vec<f32> = rng.normals(n, 0.3).iter().map(|v| v + 1.0).collect();
            let (xb, wb, out) = (
                ctx.storage_with("x", &x),
                ctx.storage_with("w", &w),
                poisoned(ctx, rows * n),
            );
            let mut rec = Recorder::new(ctx);
            let b = |x: &wgpu::Buffer| Binding::whole(x);
            let args = Args {
                x: &b(&xb),
                w: &b(&wb),
                out: &b(&out),
                n: n as u32,
                rows: rows as u32,
                first_row: first as u32,
                eps: 1e-5,
            };
            record(&mut rec, &args);
            rec.submit();
            let want: Vec<f32> = (first..first + rows)
                .flat_map(|r| reference(&x[r * n..(r + 1) * n], &w, 1e-5))
                .collect();
            let e = rel_err(&ctx.read_f32(&out, 0, rows * n).unwrap(), &want);
            assert!(e < 1e-11, "n={n} err={e}");
        }
    }
}
