//! Joins split-KV attention partials (`[acc (head_dim), running max, running sum]` per split)
//! into normalised outputs.

use super::Heads;
use crate::gpu::{Binding, Defines, Recorder};

pub const SOURCE: &str = include_str!("../../shaders/attention_merge.wgsl");

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 64;

crate::params! {
    pub(crate) struct Params {
        n_heads: u32,
        head_dim: u32,
        splits: u32,
        _pad: u32,
    }
}

/// `parts` is `[tokens, n_heads, splits, head_dim + 2]`; `out` is `[tokens, n_heads · head_dim]`.
pub fn record(
    rec: &mut Recorder,
    heads: Heads,
    parts: &Binding,
    out: &Binding,
    tokens: u32,
    splits: u32,
) {
    let pipeline = rec
        .ctx()
        .pipeline("attention_merge", SOURCE, &Defines::new().uint("WG", WG));
    let params = Params {
        n_heads: heads.n_heads,
        head_dim: heads.head_dim,
        splits,
        _pad: 0,
    };
    rec.dispatch(
        "attention merge",
        &pipeline,
        &params,
        &[parts.clone(), out.clone()],
        [heads.n_heads, tokens, 1],
    );
}

/// CPU reference for one (token, head): the splits' `[acc, m, l]` records joined.
pub fn reference(parts: &[f32], head_dim: usize, splits: usize) -> Vec<f32> {
    let rec = |s: usize| &parts[s * (head_dim + 2)..(s + 1) * (head_dim + 2)];
    let m = (0..splits)
        .map(|s| rec(s)[head_dim])
        .fold(f32::MIN, f32::max);
    let l: f32 = (0..splits)
        .map(|s| rec(s)[head_dim + 1] * (rec(s)[head_dim] - m).exp())
        .sum();
    (0..head_dim)
        .map(|d| {
            (0..splits)
                .map(|s| rec(s)[d] * (rec(s)[head_dim] - m).exp())
                .sum::<f32>()
                / l
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, poisoned, rel_err, Rng};
    use crate::kernels::KvType;

    #[test]
    fn merge_matches_reference() {
        let Some(ctx) = context() else { return };
        let (n_heads, hd, tokens, splits) = (3u32, 40usize, 2u32, 5usize);
        let mut rng = Rng::new(7);
        let mut parts = rng.normals(tokens as usize * n_heads as usize * splits * (hd + 2), 1.0);
        for (i, rec) in parts.chunks_mut(hd + 2).enumerate() {
            rec[hd] *= 4.0; // running maxima far apart
            rec[hd + 1] = rec[hd + 1].abs() + 0.5;
            if i % 5 == 4 {
                rec[hd] = -3.0e38; // an empty split
                rec[hd + 1] = 0.0;
                rec[..hd].fill(0.0);
            }
        }
        let heads = Heads {
            n_heads,
            n_kv: 1,
            head_dim: hd as u32,
            kv: KvType::F32,
        };
        let pb = ctx.storage_with("parts", &parts);
        let out = poisoned(ctx, tokens as usize * n_heads as usize * hd);
        let mut rec = Recorder::new(ctx);
        record(
            &mut rec,
            heads,
            &(&pb).into(),
            &(&out).into(),
            tokens,
            splits as u32,
        );
        rec.submit();
        let got = ctx
            .read_f32(&out, 0, tokens as usize * n_heads as usize * hd)
            .unwrap();
        let span = splits * (hd + 2);
        let want: Vec<f32> = parts
            .chunks(span)
            .flat_map(|p| reference(p, hd, splits))
            .collect();
        let e = rel_err(&got, &want);
        assert!(e < 1e-10, "err={e}");
    }
}
