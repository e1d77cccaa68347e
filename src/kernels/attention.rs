//! Causal GQA attention of a chunk's queries over the KV cache (online softmax); a single
//! query over a long context splits its keys across workgroups (split-KV decode) and
//! `attention_merge` joins the partials.

use super::attention_merge;
use super::qk_norm_rope::Heads;
use crate::gpu::{Binding, Defines, Recorder};

pub const SOURCE: &str = include_str!("../../shaders/attention.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    tokens: u32,
    n_heads: u32,
    n_kv: u32,
    head_dim: u32,
    pos0: u32,
    kv_words: u32,
    scale: f32,
    split_keys: u32,
}

/// Keys per split-KV workgroup; a decode step over more keys than this splits them.
pub const SPLIT_KEYS: u32 = 256;
/// Most splits of one query (bounds the partials buffer).
pub const MAX_SPLITS: u32 = 32;

/// f32 elements the split-KV partials of one query need (`MAX_SPLITS` splits per head).
pub fn partials_len(heads: Heads) -> usize {
    (heads.n_heads * MAX_SPLITS * (heads.head_dim + 2)) as usize
}

/// Splits and keys per split for one query over `n_keys` keys (1 split: no split).
pub fn split_plan(n_keys: u32) -> (u32, u32) {
    if n_keys <= SPLIT_KEYS {
        return (1, n_keys);
    }
    let splits = n_keys.div_ceil(SPLIT_KEYS).min(MAX_SPLITS);
    (splits, n_keys.div_ceil(splits).next_multiple_of(64))
}

/// Query t of the chunk (cache position pos0 + t) attends to positions 0..=pos0+t. With
/// `partials` (≥ `partials_len` floats), a single query over more than `SPLIT_KEYS` keys takes
/// the split-KV path.
#[allow(clippy::too_many_arguments)]
pub fn record(
    rec: &mut Recorder,
    heads: Heads,
    q: &Binding,
    k_cache: &Binding,
    v_cache: &Binding,
    out: &Binding,
    tokens: u32,
    pos0: u32,
    partials: Option<&Binding>,
) {
    let (splits, split_keys) = match partials {
        Some(_) if tokens == 1 => split_plan(pos0 + 1),
        _ => (1, u32::MAX),
    };
    let mut defines: Defines = heads.kv.defines();
    if splits > 1 {
        defines.push(("SPLIT".into(), String::new()));
        defines.sort();
    }
    let pipeline = rec.ctx().pipeline("attention", SOURCE, &defines);
    let params = Params {
        tokens,
        n_heads: heads.n_heads,
        n_kv: heads.n_kv,
        head_dim: heads.head_dim,
        pos0,
        kv_words: heads.kv_words(),
        scale: 1.0 / (heads.head_dim as f32).sqrt(),
        split_keys,
    };
    let target = match partials {
        Some(parts) if splits > 1 => parts,
        _ => out,
    };
    let b = [q.clone(), k_cache.clone(), v_cache.clone(), target.clone()];
    rec.dispatch(
        "attention",
        &pipeline,
        &params,
        &b,
        [heads.n_heads, tokens, splits],
    );
    if splits > 1 {
        attention_merge::record(rec, heads, target, out, tokens, splits);
    }
}

/// CPU reference for one query vector over `n_keys` cached positions (k, v: [pos][n_kv·hd]).
pub fn reference(q: &[f32], k: &[f32], v: &[f32], heads: Heads, n_keys: usize) -> Vec<f32> {
    let hd = heads.head_dim as usize;
    let kvw = (heads.n_kv * heads.head_dim) as usize;
    let group = (heads.n_heads / heads.n_kv) as usize;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; heads.n_heads as usize * hd];
    for h in 0..heads.n_heads as usize {
        let kh = h / group;
        let qh = &q[h * hd..(h + 1) * hd];
        let s: Vec<f32> = (0..n_keys)
            .map(|j| {
                qh.iter()
                    .zip(&k[j * kvw + kh * hd..])
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
                    * scale
            })
            .collect();
        let m = s.iter().cloned().fold(f32::MIN, f32::max);
        let p: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
        let l: f32 = p.iter().sum();
        for d in 0..hd {
            out[h * hd + d] = (0..n_keys)
                .map(|j| p[j] * v[j * kvw + kh * hd + d])
                .sum::<f32>()
                / l;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, poisoned, rel_err, Rng};
    use crate::kernels::qk_norm_rope::KvType;

    #[test]
    fn split_plan_covers_every_key() {
        for n in [1, 64, 256, 257, 1000, 8192, 100_000] {
            let (splits, keys) = split_plan(n);
            assert!(splits <= MAX_SPLITS && splits * keys >= n, "{n}");
            assert!(
                splits == 1 || (splits - 1) * keys < n,
                "{n}: an empty split"
            );
        }
    }

    #[test]
    fn attention_matches_reference() {
        let Some(ctx) = context() else { return };
        for (nh, nkv, hd, t, pos0, kv) in [
            (4u32, 4u32, 16u32, 5usize, 0usize, KvType::F16),
            (8, 1, 64, 3, 130, KvType::F16),
            (6, 2, 24, 1, 70, KvType::F32),
            (2, 1, 256, 2, 3, KvType::F16),
            (4, 2, 32, 4, 100, KvType::F32),
            // One query over 257..9000 keys: split-KV (2, 7 and 32 splits, a short last split).
            (4, 2, 64, 1, 256, KvType::F16),
            (8, 2, 64, 1, 1700, KvType::F32),
            (2, 1, 32, 1, 8999, KvType::F16),
        ] {
            let heads = Heads {
                n_heads: nh,
                n_kv: nkv,
                head_dim: hd,
                kv,
            };
            let n_pos = pos0 + t;
            let kvw = (nkv * hd) as usize;
            let mut rng = Rng::new(n_pos as u64 * 3 + hd as u64);
            let round = |v: Vec<f32>| -> Vec<f32> {
                v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect()
            };
            let k = round(rng.normals(n_pos * kvw, 1.0));
            let v = round(rng.normals(n_pos * kvw, 1.0));
            let pack = |x: &[f32]| -> Vec<u32> {
                match kv {
                    KvType::F16 => x
                        .chunks(2)
                        .map(|p| {
                            half::f16::from_f32(p[0]).to_bits() as u32
                                | (half::f16::from_f32(p[1]).to_bits() as u32) << 16
                        })
                        .collect(),
                    KvType::F32 => x.iter().map(|v| v.to_bits()).collect(),
                }
            };
            let q = rng.normals(t * (nh * hd) as usize, 1.0);
            let (qb, kb, vb) = (
                ctx.storage_with("q", &q),
                ctx.storage_with("k", &pack(&k)),
                ctx.storage_with("v", &pack(&v)),
            );
            let parts = poisoned(ctx, partials_len(heads));
            for split in [false, true] {
                let out = poisoned(ctx, q.len());
                let mut rec = Recorder::new(ctx);
                record(
                    &mut rec,
                    heads,
                    &(&qb).into(),
                    &(&kb).into(),
                    &(&vb).into(),
                    &(&out).into(),
                    t as u32,
                    pos0 as u32,
                    split.then(|| (&parts).into()).as_ref(),
                );
                rec.submit();
                let got = ctx.read_f32(&out, 0, q.len()).unwrap();
                let w = (nh * hd) as usize;
                for ti in 0..t {
                    let want = reference(&q[ti * w..(ti + 1) * w], &k, &v, heads, pos0 + ti + 1);
                    let e = rel_err(&got[ti * w..(ti + 1) * w], &want);
                    assert!(
                        e < 1e-10,
                        "nh={nh} nkv={nkv} hd={hd} t={ti} split={split} err={e}"
                    );
                }
            }
        }
    }
}
