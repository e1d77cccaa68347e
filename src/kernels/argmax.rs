//! Greedy sampling on the GPU: the index of the largest logit of one row.

use crate::gpu::{Binding, Defines, Recorder};

pub const SOURCE: &str = include_str!("../../shaders/argmax.wgsl");

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 256;

crate::params! {
    pub(crate) struct Params {
        n: u32,
        row: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// `out[0] = argmax(logits[row·n .. (row+1)·n])`.
pub fn record(rec: &mut Recorder, logits: &Binding, out: &Binding, n: u32, row: u32) {
    let pipeline = rec
        .ctx()
        .pipeline("argmax", SOURCE, &Defines::new().uint("WG", WG));
    let params = Params {
        n,
        row,
        _pad0: 0,
        _pad1: 0,
    };
    rec.dispatch(
        "argmax",
        &pipeline,
        &params,
        &[logits.clone(), out.clone()],
        [1, 1, 1],
    );
}

/// CPU reference (lowest index on ties).
pub fn reference(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, Rng};

    #[test]
    fn argmax_matches_reference() {
        let Some(ctx) = context() else { return };
        for n in [1usize, 7, 300, 65536] {
            let mut x = Rng::new(n as u64).normals(2 * n, 1.0);
            if n > 8 {
                x[n + 5] = 50.0;
                x[n + n - 1] = 50.0; // tie: the lower index wins
            }
            let xb = ctx.storage_with("x", &x);
            let out = ctx.storage_with("out", &[u32::MAX]);
            let mut rec = Recorder::new(ctx);
            record(&mut rec, &(&xb).into(), &(&out).into(), n as u32, 1);
            rec.submit();
            assert_eq!(
                ctx.read_u32(&out, 0, 1).unwrap()[0],
                reference(&x[n..]),
                "n={n}"
            );
        }
    }
}
