//! LFM2 double-gated short convolution with its carried state, for prefill chunks and decode.

use crate::gpu::{Binding, Defines, Recorder};

pub const SOURCE: &str = include_str!("../../shaders/shortconv.wgsl");

/// Longest kernel the shader's registers hold.
pub const MAX_TAPS: usize = 8;

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 64;

crate::params! {
    pub(crate) struct Params {
        h: u32,
        tokens: u32,
        taps: u32,
        _pad: u32,
    }
}

/// Bindings of one call: `proj` [T, 3H] (B | C | x) → `y` [T, H]; `state` [L−1, H] is read
/// and updated; `kernel` is [H, taps].
pub struct Args<'a> {
    pub proj: &'a Binding,
    pub kernel: &'a Binding,
    pub state: &'a Binding,
    pub y: &'a Binding,
}

/// The convolution of `tokens` rows of width `h` with a `taps`-long kernel.
pub fn record(rec: &mut Recorder, a: &Args, h: u32, tokens: u32, taps: u32) {
    let Args {
        proj,
        kernel,
        state,
        y,
    } = *a;
    let pipeline = rec
        .ctx()
        .pipeline("shortconv", SOURCE, &Defines::new().uint("WG", WG));
    let params = Params {
        h,
        tokens,
        taps,
        _pad: 0,
    };
    let b = [proj.clone(), kernel.clone(), state.clone(), y.clone()];
    rec.dispatch("shortconv", &pipeline, &params, &b, [h.div_ceil(WG), 1, 1]);
}

/// CPU reference; updates `state` ([L−1, H], oldest first) and returns y [T, H].
pub fn reference(
    proj: &[f32],
    kernel: &[f32],
    state: &mut [f32],
    h: usize,
    taps: usize,
) -> Vec<f32> {
    let t_count = proj.len() / (3 * h);
    let past = taps - 1;
    let mut y = vec![0f32; t_count * h];
    for c in 0..h {
        let mut hist: Vec<f32> = (0..past).map(|j| state[j * h + c]).collect();
        for t in 0..t_count {
            let row = &proj[t * 3 * h..(t + 1) * 3 * h];
            let bx = row[c] * row[2 * h + c];
            let mut acc = kernel[c * taps + past] * bx;
            for (j, hv) in hist.iter().enumerate() {
                acc += kernel[c * taps + j] * hv;
            }
            y[t * h + c] = row[h + c] * acc;
            if past > 0 {
                hist.remove(0);
                hist.push(bx);
            }
        }
        for (j, hv) in hist.iter().enumerate() {
            state[j * h + c] = *hv;
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, poisoned, rel_err, Rng};

    #[test]
    fn shortconv_prefill_then_decode_matches_reference() {
        let Some(ctx) = context() else { return };
        for (h, taps, chunks) in [
            (67usize, 3usize, vec![5usize, 1, 1, 7]),
            (128, 4, vec![1, 1, 2]),
        ] {
            let mut rng = Rng::new(h as u64);
            let kernel = rng.normals(h * taps, 0.5);
            let mut state_ref = vec![0f32; (taps - 1) * h];
            let kb = ctx.storage_with("kernel", &kernel);
            let sb = ctx.storage_with("state", &state_ref);
            for t in chunks {
                let proj = rng.normals(t * 3 * h, 1.0);
                let pb = ctx.storage_with("proj", &proj);
                let yb = poisoned(ctx, t * h);
                let mut rec = Recorder::new(ctx);
                let b = |x: &wgpu::Buffer| Binding::whole(x);
                let args = Args {
                    proj: &b(&pb),
                    kernel: &b(&kb),
                    state: &b(&sb),
                    y: &b(&yb),
                };
                record(&mut rec, &args, h as u32, t as u32, taps as u32);
                rec.submit();
                let want = reference(&proj, &kernel, &mut state_ref, h, taps);
                let e = rel_err(&ctx.read_f32(&yb, 0, t * h).unwrap(), &want);
                assert!(e < 1e-11, "h={h} t={t} err={e}");
                assert_eq!(ctx.read_f32(&sb, 0, state_ref.len()).unwrap(), state_ref);
            }
        }
    }
}
