//! Attention input prep: per-head QK RMSNorm, NeoX RoPE (cos/sin from the host), q out in f32,
//! k and v appended to the f16 KV cache at the chunk's positions.

use super::Heads;
use crate::gpu::{Binding, Recorder, StepVars};

pub const SOURCE: &str = include_str!("../../shaders/qk_norm_rope.wgsl");

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
        _pad: u32,
    }
}

/// Bindings of one call.
pub struct Args {
    pub qkv: Binding,
    pub q_norm: Binding,
    pub k_norm: Binding,
    pub rope: Binding,
    pub q_out: Binding,
    pub k_cache: Binding,
    pub v_cache: Binding,
}

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 64;

/// Prepares `tokens` rows of q|k|v at the step's cache positions `pos0..pos0 + tokens`.
pub fn record(rec: &mut Recorder, heads: Heads, a: &Args, tokens: u32, eps: f32) {
    let defines = heads.kv.defines().uint("WG", WG);
    let pipeline = rec.ctx().pipeline("qk_norm_rope", SOURCE, &defines);
    let params = move |v: &StepVars| Params {
        tokens,
        n_heads: heads.n_heads,
        n_kv: heads.n_kv,
        head_dim: heads.head_dim,
        pos0: v.pos0,
        kv_words: heads.kv_words(),
        eps,
        _pad: 0,
    };
    let b = [
        a.qkv.clone(),
        a.q_norm.clone(),
        a.k_norm.clone(),
        a.rope.clone(),
        a.q_out.clone(),
        a.k_cache.clone(),
        a.v_cache.clone(),
    ];
    rec.dispatch_positioned(
        "qk_norm_rope",
        &pipeline,
        params,
        &b,
        [heads.n_heads + 2 * heads.n_kv, tokens, 1],
    );
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
    use crate::kernels::KvType;

    #[test]
    fn qk_norm_rope_matches_reference() {
        let Some(ctx) = context() else { return };
        for (nh, nkv, hd, t, pos0, kv) in [
            (4u32, 2u32, 16u32, 3usize, 5usize, KvType::F16),
            (3, 1, 24, 1, 0, KvType::F32),
            (2, 2, 128, 2, 1000, KvType::F16),
            (2, 1, 64, 2, 9, KvType::F32),
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
            let cache_words = (pos0 + t) * heads.kv_words() as usize;
            let (kc, vc) = (poisoned(ctx, cache_words), poisoned(ctx, cache_words));
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
                    k_cache: (&kc).into(),
                    v_cache: (&vc).into(),
                },
                t as u32,
                1e-5,
            );
            rec.submit();
            let half_words = heads.kv_words() as usize;
            let q_got = ctx.read_f32(&q_out, 0, t * (nh * hd) as usize).unwrap();
            let k_words = ctx
                .read_u32(&kc, (pos0 * half_words) as u64, t * half_words)
                .unwrap();
            let v_words = ctx
                .read_u32(&vc, (pos0 * half_words) as u64, t * half_words)
                .unwrap();
            let unpack = |w: &[u32]| -> Vec<f32> {
                if kv == KvType::F32 {
                    return w.iter().map(|x| f32::from_bits(*x)).collect();
                }
                w.iter()
                    .flat_map(|x| {
                        [
                            half::f16::from_bits(*x as u16).to_f32(),
                            half::f16::from_bits((*x >> 16) as u16).to_f32(),
                        ]
                    })
                    .collect()
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
                let kg = unpack(&k_words[ti * half_words..(ti + 1) * half_words]);
                let vg = unpack(&v_words[ti * half_words..(ti + 1) * half_words]);
                let bound = if kv == KvType::F32 { 1e-11 } else { 1e-6 };
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
