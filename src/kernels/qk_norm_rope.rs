//! Attention input prep: per-head QK RMSNorm, NeoX RoPE (cos/sin from the host), q out in f32,
//! k and v written into the KV cache pages at the chunk's positions.

use super::{Heads, KvPages};
use crate::gpu::{Binding, Recorder, StepVars};

pub const SOURCE: &str = concat!(
    include_str!("../../shaders/kv_cache.wgsl"),
    include_str!("../../shaders/qk_norm_rope.wgsl")
);

/// Largest head dimension the shader's workgroup arrays hold.
pub const MAX_HEAD_DIM: usize = 256;

crate::params! {
    pub(crate) struct Params {
        tokens: u32,
        n_heads: u32,
        n_kv: u32,
        head_dim: u32,
        pos0: u32,
        kv_words: u32,
        eps: f32,
        first_head: u32,
        page_start: u32,
        page_end: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// Bindings of one call.
pub struct Args<'a> {
    pub qkv: Binding,
    pub q_norm: Binding,
    pub k_norm: Binding,
    pub rope: Binding,
    pub q_out: Binding,
    pub cache: KvPages<'a>,
}

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 64;

/// Prepares `tokens` rows of q|k|v at the step's cache positions `pos0..pos0 + tokens`: one
/// dispatch for the page of the first position (q, k and v heads), one more per further page
/// the chunk reaches (k and v heads). The plan holds while the chunk touches the same pages.
pub fn record(rec: &mut Recorder, heads: Heads, a: &Args, tokens: u32, eps: f32) {
    let defines = heads.kv.defines().uint("WG", WG);
    let pipeline = rec.ctx().pipeline("qk_norm_rope", SOURCE, &defines);
    let pos0 = rec.vars().pos0;
    let (first, last) = (a.cache.page_of(pos0), a.cache.page_of(pos0 + tokens - 1));
    rec.hold_for(a.cache.ending_in(last, tokens));
    let (start, end) = a.cache.span(first);
    rec.hold_for(start..=end - 1);
    for page in first..=last {
        let (page_start, page_end) = a.cache.span(page);
        let first_head = if page == first { 0 } else { heads.n_heads };
        let params = move |v: &StepVars| Params {
            tokens,
            n_heads: heads.n_heads,
            n_kv: heads.n_kv,
            head_dim: heads.head_dim,
            pos0: v.pos0,
            kv_words: heads.kv_words(),
            eps,
            first_head,
            page_start,
            page_end,
            _pad0: 0,
            _pad1: 0,
        };
        let b = [
            a.qkv.clone(),
            a.q_norm.clone(),
            a.k_norm.clone(),
            a.rope.clone(),
            a.q_out.clone(),
            a.cache.k[page as usize].clone(),
            a.cache.v[page as usize].clone(),
        ];
        let heads_here = heads.n_heads + 2 * heads.n_kv - first_head;
        let grid = [heads_here, tokens, 1];
        rec.dispatch_positioned("qk_norm_rope", &pipeline, params, &b, grid);
    }
}

/// RoPE inverse frequencies as HF computes them in f32: 1 / base^(2i/d).
pub fn inv_freq(theta: f64, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let e = (2 * i) as f32 / head_dim as f32;
            1.0 / (theta as f32).powf(e)
        })
        .collect()
}

/// `[tokens, head_dim/2, 2]` (cos, sin) of angle pos·inv_freq (product rounded to f32 as in HF,
/// cos/sin evaluated in f64 and rounded): exact on every device, whatever its sin/cos precision.
pub fn rope_table(inv_freq: &[f32], pos0: usize, tokens: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(tokens * inv_freq.len() * 2);
    for t in 0..tokens {
        let pos = (pos0 + t) as f32;
        for f in inv_freq {
            let ang = (pos * f) as f64;
            out.push(ang.cos() as f32);
            out.push(ang.sin() as f32);
        }
    }
    out
}

/// CPU reference for one token: returns (q [n_heads·hd], k [n_kv·hd], v [n_kv·hd]).
pub fn reference(
    qkv: &[f32],
    q_norm: &[f32],
    k_norm: &[f32],
    rope: &[f32],
    heads: Heads,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let hd = heads.head_dim as usize;
    let half = hd / 2;
    let (nh, nkv) = (heads.n_heads as usize, heads.n_kv as usize);
    let norm_rope = |x: &[f32], w: &[f32]| -> Vec<f32> {
        let y = super::rmsnorm::reference(x, w, eps);
        let mut o = vec![0f32; hd];
        for i in 0..half {
            let (c, s) = (rope[2 * i], rope[2 * i + 1]);
            o[i] = y[i] * c - y[i + half] * s;
            o[i + half] = y[i + half] * c + y[i] * s;
        }
        o
    };
    let q = (0..nh)
        .flat_map(|h| norm_rope(&qkv[h * hd..(h + 1) * hd], q_norm))
        .collect();
    let k = (0..nkv)
        .flat_map(|h| norm_rope(&qkv[(nh + h) * hd..(nh + h + 1) * hd], k_norm))
        .collect();
    let v = qkv[(nh + nkv) * hd..(nh + 2 * nkv) * hd].to_vec();
    (q, k, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, poisoned, rel_err, Rng};
    use crate::kernels::{KvPages, KvType};

    #[test]
    fn qk_norm_rope_matches_reference() {
        let Some(ctx) = context() else { return };
        // (heads, kv heads, head dim, tokens, pos0, cache type, positions per page): the last
        // two cases write chunks across one and two page boundaries.
        for (nh, nkv, hd, t, pos0, kv, page) in [
            (4u32, 2u32, 16u32, 3usize, 5usize, KvType::F16, 4096usize),
            (3, 1, 24, 1, 0, KvType::F32, 4096),
            (2, 2, 128, 2, 1000, KvType::F16, 4096),
            (2, 1, 64, 2, 9, KvType::F32, 4096),
            (4, 2, 16, 6, 5, KvType::F16, 4),
            (2, 1, 32, 9, 3, KvType::F32, 4),
            (4, 2, 64, 6, 5, KvType::Q8_0, 4),
            (2, 2, 96, 3, 7, KvType::Q8_0, 4096),
            (2, 1, 32, 2, 0, KvType::Q8_0, 4096),
            (3, 1, 24, 2, 9, KvType::Q8_0, 4096),
        ] {
            let heads = Heads {
                n_heads: nh,
                n_kv: nkv,
                head_dim: hd,
                kv,
            };
            let width = ((nh + 2 * nkv) * hd) as usize;
            let mut rng = Rng::new(hd as u64 + t as u64);
            let qkv = rng.normals(t * width, 1.5);
            let qn: Vec<f32> = rng
                .normals(hd as usize, 0.2)
                .iter()
                .map(|v| v + 1.0)
                .collect();
            let kn: Vec<f32> = rng
                .normals(hd as usize, 0.2)
                .iter()
                .map(|v| v + 1.0)
                .collect();
            let rope = rope_table(&inv_freq(1e6, hd as usize), pos0, t);
            let page_words = page * heads.kv_words() as usize;
            let n_pages = (pos0 + t).div_ceil(page);
            let kc: Vec<_> = (0..n_pages).map(|_| poisoned(ctx, page_words)).collect();
            let vc: Vec<_> = (0..n_pages).map(|_| poisoned(ctx, page_words)).collect();
            let (kb, vb): (Vec<Binding>, Vec<Binding>) = (
                kc.iter().map(Binding::whole).collect(),
                vc.iter().map(Binding::whole).collect(),
            );
            let q_out = poisoned(ctx, t * (nh * hd) as usize);
            let bufs = [
                ctx.storage_with("qkv", &qkv),
                ctx.storage_with("qn", &qn),
                ctx.storage_with("kn", &kn),
                ctx.storage_with("rope", &rope),
            ];
            let pos = StepVars { pos0: pos0 as u32 };
            let mut rec = Recorder::at(ctx, pos);
            record(
                &mut rec,
                heads,
                &Args {
                    qkv: (&bufs[0]).into(),
                    q_norm: (&bufs[1]).into(),
                    k_norm: (&bufs[2]).into(),
                    rope: (&bufs[3]).into(),
                    q_out: (&q_out).into(),
                    cache: KvPages {
                        k: &kb,
                        v: &vb,
                        page_positions: page as u32,
                    },
                },
                t as u32,
                1e-5,
            );
            rec.submit();
            let half_words = heads.kv_words() as usize;
            let q_got = ctx.read_f32(&q_out, 0, t * (nh * hd) as usize).unwrap();
            // Token ti's words, from the page holding its position.
            let words = |pages: &[wgpu::Buffer], ti: usize| {
                let pos = pos0 + ti;
                let first = ((pos % page) * half_words) as u64;
                ctx.read_u32(&pages[pos / page], first, half_words).unwrap()
            };
            let half = (hd / 2) as usize;
            for ti in 0..t {
                let (q, k, v) = reference(
                    &qkv[ti * width..(ti + 1) * width],
                    &qn,
                    &kn,
                    &rope[ti * half * 2..(ti + 1) * half * 2],
                    heads,
                    1e-5,
                );
                let qg = &q_got[ti * q.len()..(ti + 1) * q.len()];
                assert!(rel_err(qg, &q) < 1e-11, "q hd={hd}");
                let kg = kv.decode(&words(&kc, ti), hd as usize);
                let vg = kv.decode(&words(&vc, ti), hd as usize);
                // Against the reference rounded to the cache type (q8_0: a quant may round
                // the other way where x / d lands near a half).
                let (k, v) = (
                    kv.decode(&kv.encode(&k, hd as usize), hd as usize),
                    kv.decode(&kv.encode(&v, hd as usize), hd as usize),
                );
                let bound = match kv {
                    KvType::F32 => 1e-11,
                    KvType::F16 => 1e-6,
                    KvType::Q8_0 => 1e-5,
                };
                assert!(
                    rel_err(&kg, &k) < bound,
                    "k hd={hd} err={}",
                    rel_err(&kg, &k)
                );
                assert!(rel_err(&vg, &v) < bound, "v hd={hd}");
            }
        }
    }
}
