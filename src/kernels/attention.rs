//! Causal GQA attention of a chunk's queries over the KV cache pages (online softmax). A cache
//! in several pages takes one dispatch per page, each writing partial results; a single
//! query over a long context also splits each page's keys across workgroups (split-KV
//! decode); `attention_merge` joins the partials. Each dispatch is this kernel (one
//! workgroup per query head and token), `attention_tiled` or, for single tokens,
//! `attention_decode`, as the caller's `AttentionKernel` says.

use std::ops::RangeInclusive;

use super::{attention_decode, attention_lanes, attention_merge, attention_tiled, Heads, KvPages};
use crate::gpu::{AttentionKernel, Binding, Recorder, StepVars};

pub const SOURCE: &str = concat!(
    include_str!("../../shaders/kv_cache.wgsl"),
    include_str!("../../shaders/attention_params.wgsl"),
    include_str!("../../shaders/attention.wgsl")
);

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
        page_start: u32,
        page_end: u32,
        split0: u32,
        splits_total: u32,
    }
}

/// Keys per split-KV workgroup; a decode step over more keys than this splits them.
pub const SPLIT_KEYS: u32 = 256;
/// Most splits of one query (bounds the partials buffer).
pub const MAX_SPLITS: u32 = 32;

/// f32 elements the partials need for chunks of up to `tokens` queries over up to `pages`
/// pages of `page_positions`: one record per page for each query of a chunk, up to
/// `MAX_SPLITS` per page for a single query.
pub fn partials_len(heads: Heads, tokens: usize, (pages, page_positions): (usize, u32)) -> usize {
    let per_page = (split_plan(page_positions).0 as usize).max(tokens);
    heads.n_heads as usize * pages * per_page * (heads.head_dim as usize + 2)
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
    pub cache: &'a KvPages<'a>,
    pub out: &'a Binding,
    /// Partials (≥ `partials_len` floats): needed where the keys span several pages; with
    /// them a single query also splits its keys (split-KV decode).
    pub partials: Option<&'a Binding>,
    /// The kernel (`DeviceProfile::attention_kernel`); where the chosen one does not cover
    /// the call (its head size; chunks, or a device without subgroups, for `KeyLanes`): this
    /// file's per-head kernel.
    pub kernel: AttentionKernel,
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

/// How one page's keys are covered: workgroups z (its splits) and keys per split, `None`
/// for a split size that follows the position (the page of the newest key in decode).
#[derive(Clone, Copy)]
struct PageWork {
    page: u32,
    splits: u32,
    split_keys: Option<u32>,
    split0: u32,
}

/// The dispatches of one call at the recorder's position, and the total splits (1: one
/// direct dispatch without partials). Restricts the plan to the positions they hold for.
fn plan(rec: &mut Recorder, a: &Args, tokens: u32) -> (Vec<PageWork>, u32) {
    let cache = a.cache;
    let pos0 = rec.vars().pos0;
    let last = cache.page_of(pos0 + tokens - 1);
    rec.hold_for(cache.ending_in(last, tokens));
    let mut work = Vec::new();
    let mut total = 0;
    for page in 0..=last {
        let (splits, split_keys) = match a.partials {
            Some(_) if tokens == 1 && page < last => {
                let (splits, keys) = split_plan(cache.page_positions);
                (splits, Some(keys))
            }
            Some(_) if tokens == 1 => {
                let (start, _) = cache.span(page);
                let splits = split_plan(pos0 - start + 1).0;
                let held = split_positions(splits);
                rec.hold_for(start + held.start()..=start.saturating_add(*held.end()));
                (splits, None)
            }
            _ => (1, Some(cache.page_positions)),
        };
        work.push(PageWork {
            page,
            splits,
            split_keys,
            split0: total,
        });
        total += splits;
    }
    assert!(
        total == 1 || a.partials.is_some(),
        "attention over several pages needs partials"
    );
    (work, total)
}

/// Query t of the chunk (cache position pos0 + t) attends to positions 0..=pos0+t: one
/// dispatch per page of the cache, each page's keys split over workgroups for a single query
/// where `partials` are given, then the merge of the partials.
pub fn record(rec: &mut Recorder, heads: Heads, a: &Args, tokens: u32) {
    let (work, total) = plan(rec, a, tokens);
    let kernel = match a.kernel {
        AttentionKernel::Tiled(_) if !attention_tiled::supports(heads.head_dim) => {
            AttentionKernel::PerHead
        }
        AttentionKernel::LanesOverKeys if !attention_lanes::supports(heads.head_dim) => {
            AttentionKernel::PerHead
        }
        AttentionKernel::KeyLanes
            if tokens > 1
                || !attention_decode::supports(heads)
                || !rec.ctx().profile().subgroups =>
        {
            AttentionKernel::PerHead
        }
        k => k,
    };
    let pipeline = match kernel {
        AttentionKernel::Tiled(tiles) => {
            let defines = attention_tiled::defines(tiles, heads, tokens, total > 1);
            let source = attention_tiled::SOURCE;
            rec.ctx().pipeline("attention_tiled", source, &defines)
        }
        AttentionKernel::LanesOverKeys => {
            let defines = attention_lanes::defines(heads, total > 1);
            let source = attention_lanes::SOURCE;
            rec.ctx().pipeline("attention_lanes", source, &defines)
        }
        AttentionKernel::KeyLanes => {
            let defines = attention_decode::defines(heads, total > 1);
            let source = attention_decode::SOURCE;
            rec.ctx().pipeline("attention_decode", source, &defines)
        }
        AttentionKernel::PerHead => {
            let defines = heads
                .kv
                .defines()
                .uint("WG", WG)
                .flag_if(total > 1, "SPLIT");
            rec.ctx().pipeline("attention", SOURCE, &defines)
        }
    };
    let target = match a.partials {
        Some(parts) if total > 1 => parts,
        _ => a.out,
    };
    for w in work {
        let (page_start, page_end) = a.cache.span(w.page);
        let params = move |v: &StepVars| Params {
            tokens,
            n_heads: heads.n_heads,
            n_kv: heads.n_kv,
            head_dim: heads.head_dim,
            pos0: v.pos0,
            kv_words: heads.kv_words(),
            scale: 1.0 / (heads.head_dim as f32).sqrt(),
            split_keys: w
                .split_keys
                .unwrap_or_else(|| split_plan(v.pos0 - page_start + 1).1),
            page_start,
            page_end,
            split0: w.split0,
            splits_total: total,
        };
        let (k, v) = (&a.cache.k[w.page as usize], &a.cache.v[w.page as usize]);
        let b = [a.q.clone(), k.clone(), v.clone(), target.clone()];
        let grid = match kernel {
            AttentionKernel::Tiled(tiles) => attention_tiled::grid(tiles, heads, tokens, w.splits),
            AttentionKernel::LanesOverKeys => attention_lanes::grid(heads, tokens, w.splits),
            AttentionKernel::KeyLanes => attention_decode::grid(heads, w.splits),
            AttentionKernel::PerHead => [heads.n_heads, tokens, w.splits],
        };
        rec.dispatch_positioned("attention", &pipeline, params, &b, grid);
    }
    if total > 1 {
        attention_merge::record(rec, heads, target, a.out, tokens, total);
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
    use crate::gpu::AttentionTiles;
    use crate::kernels::KvType;

    /// A cache held in one page.
    fn one_page<'a>(k: &'a [Binding], v: &'a [Binding]) -> KvPages<'a> {
        KvPages {
            k,
            v,
            page_positions: u32::MAX,
        }
    }

    /// Records `args` for a chunk of `t` queries `q` at `pos0`, and checks each query's output
    /// (read from `out`) against the reference over the cached `k` and `v` it sees.
    fn run_and_check(
        (heads, args, out): (Heads, &Args, &wgpu::Buffer),
        (t, pos0): (usize, usize),
        (q, k, v): (&[f32], &[f32], &[f32]),
        tolerance: f64,
    ) {
        let ctx = context().expect("a device");
        let mut rec = Recorder::at(ctx, StepVars { pos0: pos0 as u32 });
        record(&mut rec, heads, args, t as u32);
        rec.submit();
        let got = ctx.read_f32(out, 0, q.len()).unwrap();
        let w = q.len() / t;
        for ti in 0..t {
            let want = reference(&q[ti * w..(ti + 1) * w], k, v, heads, pos0 + ti + 1);
            let e = rel_err(&got[ti * w..(ti + 1) * w], &want);
            let (kernel, split) = (args.kernel, args.partials.is_some());
            assert!(
                e < tolerance,
                "{heads:?} {kernel:?} split={split} t={t} pos0={pos0} query {ti}: err={e}"
            );
        }
    }

    /// The kernels every test runs: this one, the tiled one with the profiles' tiles and
    /// tiles that divide nothing evenly, and the key-lanes decode kernel (this one on chunks).
    const KERNELS: [AttentionKernel; 6] = [
        AttentionKernel::PerHead,
        AttentionKernel::LanesOverKeys,
        AttentionKernel::Tiled(AttentionTiles { rows: 64, keys: 32 }),
        AttentionKernel::Tiled(AttentionTiles { rows: 8, keys: 32 }),
        AttentionKernel::Tiled(AttentionTiles { rows: 12, keys: 7 }),
        AttentionKernel::KeyLanes,
    ];

    /// Attention over a cache in pages of 96 positions: prefill chunks within one page,
    /// across a boundary and over several pages, and decode steps in the first, a middle and
    /// the last page (split within the page), each against the reference.
    #[test]
    fn paged_attention_matches_reference() {
        let Some(ctx) = context() else { return };
        let (page, n_pages) = (96u32, 8usize);
        for kv in [KvType::F16, KvType::F32, KvType::Q8_0] {
            let heads = Heads {
                n_heads: 4,
                n_kv: 2,
                head_dim: 32,
                kv,
            };
            let kvw = 64usize;
            let n_pos = page as usize * n_pages;
            let mut rng = Rng::new(11);
            let round = |v: Vec<f32>| -> Vec<f32> {
                v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect()
            };
            // The values as cached (f16 and f32 hold them exactly, q8_0 rounds them).
            let cached = |x: Vec<f32>| kv.decode(&kv.encode(&round(x), 32), 32);
            let (k, v) = (
                cached(rng.normals(n_pos * kvw, 1.0)),
                cached(rng.normals(n_pos * kvw, 1.0)),
            );
            let page_of = |x: &[f32], i: usize| {
                let rows = &x[i * page as usize * kvw..(i + 1) * page as usize * kvw];
                Binding::whole(&ctx.storage_with("kv page", &kv.encode(rows, 32)))
            };
            let kp: Vec<Binding> = (0..n_pages).map(|i| page_of(&k, i)).collect();
            let vp: Vec<Binding> = (0..n_pages).map(|i| page_of(&v, i)).collect();
            let cache = KvPages {
                k: &kp,
                v: &vp,
                page_positions: page,
            };
            let parts = Binding::whole(&poisoned(ctx, partials_len(heads, 40, (n_pages, page))));
            let cases = [
                (5usize, 10usize),
                (40, 80),
                (40, 300),
                (1, 50),
                (1, 400),
                (1, 767),
            ];
            for ((t, pos0), kernel) in cases.into_iter().flat_map(|c| KERNELS.map(|k| (c, k))) {
                let q = rng.normals(t * 128, 1.0);
                let (qb, out) = (ctx.storage_with("q", &q), poisoned(ctx, q.len()));
                let (qx, o) = (Binding::whole(&qb), Binding::whole(&out));
                let args = Args {
                    q: &qx,
                    cache: &cache,
                    out: &o,
                    partials: Some(&parts),
                    kernel,
                };
                run_and_check((heads, &args, &out), (t, pos0), (&q, &k, &v), 1e-10);
            }
        }
    }

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
            // Chunks of more rows than a workgroup's, groups of 3 and 8, in part blocks.
            (6, 2, 24, 70, 20, KvType::F16),
            (8, 1, 128, 37, 90, KvType::F32),
            // q8_0: a single query split, a chunk, heads of one and a half block pairs and of
            // part of one block.
            (8, 2, 64, 1, 1700, KvType::Q8_0),
            (4, 1, 64, 37, 90, KvType::Q8_0),
            (4, 2, 96, 5, 30, KvType::Q8_0),
            (6, 2, 24, 9, 40, KvType::Q8_0),
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
            let hdu = hd as usize;
            let cached = |x: Vec<f32>| kv.decode(&kv.encode(&round(x), hdu), hdu);
            let k = cached(rng.normals(n_pos * kvw, 1.0));
            let v = cached(rng.normals(n_pos * kvw, 1.0));
            let q = rng.normals(t * (nh * hd) as usize, 1.0);
            let (qb, kb, vb) = (
                ctx.storage_with("q", &q),
                ctx.storage_with("k", &kv.encode(&k, hdu)),
                ctx.storage_with("v", &kv.encode(&v, hdu)),
            );
            let parts = poisoned(ctx, partials_len(heads, t, (1, u32::MAX)));
            let variants = [false, true]
                .into_iter()
                .flat_map(|s| KERNELS.map(|k| (s, k)));
            for (split, kernel) in variants {
                let out = poisoned(ctx, q.len());
                let b = |x: &wgpu::Buffer| Binding::whole(x);
                let (qx, kx, vx, o) = (b(&qb), b(&kb), b(&vb), b(&out));
                let partials = split.then(|| b(&parts));
                let (kpg, vpg) = ([kx], [vx]);
                let args = Args {
                    q: &qx,
                    cache: &one_page(&kpg, &vpg),
                    out: &o,
                    partials: partials.as_ref(),
                    kernel,
                };
                run_and_check((heads, &args, &out), (t, pos0), (&q, &k, &v), 1e-10);
            }
        }
    }

    /// The prefill kernels over a full page of the largest size sessions take (16384
    /// positions) in one workgroup per row block: a CPU rasterizer ends an invocation's loops
    /// after 65535 iterations in all, so a kernel spending 4 or more per key would stop early
    /// here (the tiled kernel's loops over a tile's keys and head dims unroll; the lanes
    /// kernel's lanes take a key in 8 each, its loops over rows and head dims unrolled).
    #[test]
    fn prefill_kernels_cover_a_full_page() {
        let Some(ctx) = context() else { return };
        let heads = Heads {
            n_heads: 4,
            n_kv: 2,
            head_dim: 64,
            kv: KvType::F16,
        };
        let (n_pos, t, kvw, w) = (16384usize, 4usize, 128usize, 256usize);
        let pos0 = n_pos - t;
        let mut rng = Rng::new(5);
        let round = |v: Vec<f32>| -> Vec<f32> {
            v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect()
        };
        let (k, v) = (
            round(rng.normals(n_pos * kvw, 1.0)),
            round(rng.normals(n_pos * kvw, 1.0)),
        );
        let q = rng.normals(t * w, 1.0);
        let enc = |x: &[f32]| ctx.storage_with("kv", &heads.kv.encode(x, 64));
        let (kb, vb, qb, out) = (
            enc(&k),
            enc(&v),
            ctx.storage_with("q", &q),
            poisoned(ctx, q.len()),
        );
        let b = |x: &wgpu::Buffer| Binding::whole(x);
        let (kp, vp, qx, o) = ([b(&kb)], [b(&vb)], b(&qb), b(&out));
        let tiled = AttentionKernel::Tiled(AttentionTiles { rows: 64, keys: 32 });
        for kernel in [tiled, AttentionKernel::LanesOverKeys] {
            let args = Args {
                q: &qx,
                cache: &one_page(&kp, &vp),
                out: &o,
                partials: None,
                kernel,
            };
            run_and_check((heads, &args, &out), (t, pos0), (&q, &k, &v), 1e-9);
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
        let (out, parts) = (
            poisoned(ctx, w),
            poisoned(ctx, partials_len(heads, 8, (1, u32::MAX))),
        );
        let b = |x: &wgpu::Buffer| Binding::whole(x);
        let (qx, kx, vx, o, px) = (b(&bufs[2]), b(&bufs[0]), b(&bufs[1]), b(&out), b(&parts));
        let (kp, vp) = ([kx], [vx]);
        for kernel in KERNELS {
            let args = Args {
                q: &qx,
                cache: &one_page(&kp, &vp),
                out: &o,
                partials: Some(&px),
                kernel,
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
                assert!(rel_err(&got, &want) < 1e-10, "{kernel:?} pos0={pos0}");
            }
            assert!(!plan.holds_for(&StepVars { pos0: 768 }));
            assert!(!plan.holds_for(&StepVars { pos0: 511 }));
        }
    }
}
