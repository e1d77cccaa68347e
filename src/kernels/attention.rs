//! Causal GQA attention of a chunk's queries over the KV cache (online softmax); a single
//! query over a long context splits its keys across workgroups (split-KV decode) and
//! `attention_merge` joins the partials.

use std::ops::RangeInclusive;

use super::{attention_merge, Heads};
use crate::gpu::{Binding, Recorder, StepVars};

pub const SOURCE: &str = include_str!("../../shaders/attention.wgsl");

crate::params! {
    pub(crate) struct Params {
        tokens: u32,
        n_heads: u32,
        n_kv: u32,
        head_dim: u32,
        pos0: u32,
        kv_words: u32,
        scale: f32,
        split_keys: u32,
    }
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
    (splits, n_keys.div_ceil(splits).next_multiple_of(WG))
}

/// Bindings of one call.
pub struct Args<'a> {
    pub q: &'a Binding,
    pub k_cache: &'a Binding,
    pub v_cache: &'a Binding,
    pub out: &'a Binding,
    /// Split-KV partials (≥ `partials_len` floats); without them no query splits its keys.
    pub partials: Option<&'a Binding>,
}

/// Threads per workgroup (the shader's `WG`): keys per block, split sizes round to it.
const WG: u32 = 64;

/// Positions `pos0` where a single query takes `splits` splits (the keys are `0..=pos0`).
fn split_positions(splits: u32) -> RangeInclusive<u32> {
    match splits {
        1 => 0..=SPLIT_KEYS - 1,
        s if s >= MAX_SPLITS => (MAX_SPLITS - 1) * SPLIT_KEYS..=u32::MAX,
        s => (s - 1) * SPLIT_KEYS..=s * SPLIT_KEYS - 1,
    }
}

/// Query t of the chunk (cache position pos0 + t) attends to positions 0..=pos0+t. A single
/// query over more than `SPLIT_KEYS` keys takes the split-KV path where `partials` are given;
/// the plan then holds for the positions with the same split count.
pub fn record(rec: &mut Recorder, heads: Heads, a: &Args, tokens: u32) {
    let splits = match a.partials {
        Some(_) if tokens == 1 => {
            let splits = split_plan(rec.vars().pos0 + 1).0;
            rec.hold_for(split_positions(splits));
            splits
        }
        _ => 1,
    };
    let defines = heads
        .kv
        .defines()
        .uint("WG", WG)
        .flag_if(splits > 1, "SPLIT");
    let pipeline = rec.ctx().pipeline("attention", SOURCE, &defines);
    let params = move |v: &StepVars| Params {
        tokens,
        n_heads: heads.n_heads,
        n_kv: heads.n_kv,
        head_dim: heads.head_dim,
        pos0: v.pos0,
        kv_words: heads.kv_words(),
        scale: 1.0 / (heads.head_dim as f32).sqrt(),
        split_keys: if splits > 1 {
            split_plan(v.pos0 + 1).1
        } else {
            u32::MAX
        },
    };
    let target = match a.partials {
        Some(parts) if splits > 1 => parts,
        _ => a.out,
    };
    let b = [
        a.q.clone(),
        a.k_cache.clone(),
        a.v_cache.clone(),
        target.clone(),
    ];
    rec.dispatch_positioned(
        "attention",
        &pipeline,
        params,
        &b,
        [heads.n_heads, tokens, splits],
    );
    if splits > 1 {
        attention_merge::record(rec, heads, target, a.out, tokens, splits);
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
    use crate::kernels::KvType;

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
                let mut rec = Recorder::at(ctx, StepVars { pos0: pos0 as u32 });
                let b = |x: &wgpu::Buffer| Binding::whole(x);
                let (qx, kx, vx, o) = (b(&qb), b(&kb), b(&vb), b(&out));
                let partials = split.then(|| b(&parts));
                let args = Args {
                    q: &qx,
                    k_cache: &kx,
                    v_cache: &vx,
                    out: &o,
                    partials: partials.as_ref(),
                };
                record(&mut rec, heads, &args, t as u32);
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

    #[test]
    fn split_positions_match_split_plan() {
        for pos0 in [0u32, 255, 256, 511, 512, 7679, 7680, 7935, 7936, 100_000] {
            let splits = split_plan(pos0 + 1).0;
            let held = split_positions(splits);
            assert!(held.contains(&pos0), "{pos0}");
            assert_eq!(split_plan(held.start() + 1).0, splits, "{pos0}");
            if *held.end() < u32::MAX {
                assert_eq!(split_plan(held.end() + 1).0, splits, "{pos0}");
                assert_ne!(split_plan(held.end() + 2).0, splits, "{pos0}");
            }
        }
    }

    /// A decode step planned at one position and run at others it holds for gives each
    /// position's own result (its positioned parameters are rewritten), and the plan says
    /// where it stops holding (the split count changes).
    #[test]
    fn planned_decode_attention_runs_at_later_positions() {
        let Some(ctx) = context() else { return };
        let heads = Heads {
            n_heads: 4,
            n_kv: 2,
            head_dim: 32,
            kv: KvType::F32,
        };
        let (n_pos, kvw, w) = (800usize, 64usize, 128usize);
        let mut rng = Rng::new(77);
        let (k, v, q) = (
            rng.normals(n_pos * kvw, 1.0),
            rng.normals(n_pos * kvw, 1.0),
            rng.normals(w, 1.0),
        );
        let bufs = [&k, &v, &q].map(|x| ctx.storage_with("x", x));
        let (out, parts) = (poisoned(ctx, w), poisoned(ctx, partials_len(heads)));
        let b = |x: &wgpu::Buffer| Binding::whole(x);
        let (qx, kx, vx, o, px) = (b(&bufs[2]), b(&bufs[0]), b(&bufs[1]), b(&out), b(&parts));
        let args = Args {
            q: &qx,
            k_cache: &kx,
            v_cache: &vx,
            out: &o,
            partials: Some(&px),
        };
        let mut rec = Recorder::at(ctx, StepVars { pos0: 600 });
        record(&mut rec, heads, &args, 1);
        let mut plan = rec.finish();
        for pos0 in [600u32, 767, 512, 700] {
            let vars = StepVars { pos0 };
            assert!(plan.holds_for(&vars), "{pos0}");
            plan.run(vars, &[]);
            let got = ctx.read_f32(&out, 0, w).unwrap();
            let want = reference(&q, &k, &v, heads, pos0 as usize + 1);
            assert!(rel_err(&got, &want) < 1e-10, "pos0={pos0}");
        }
        assert!(!plan.holds_for(&StepVars { pos0: 768 }));
        assert!(!plan.holds_for(&StepVars { pos0: 511 }));
    }
}
