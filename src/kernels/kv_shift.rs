//! Context shift of one attention layer's paged KV cache: cache positions moved down by a
//! fixed distance, keys re-rotated by the RoPE of minus that distance, values copied.

use super::qk_norm_rope::rope_table;
use super::{Heads, KvPages};
use crate::gpu::{Binding, Recorder};

pub const SOURCE: &str = include_str!("../../shaders/kv_shift.wgsl");

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 64;

crate::params! {
    pub(crate) struct Params {
        count: u32,
        src_start: u32,
        dst_start: u32,
        n_kv: u32,
        head_dim: u32,
        kv_words: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// `[head_dim/2, 2]` (cos, sin) of the angle −shift·inv_freq of each rotate-half pair, rounded
/// as `rope_table` rounds the forward angles: the rotation that takes a key stored at position
/// p to position p − shift.
pub fn rotation(inv_freq: &[f32], shift: usize) -> Vec<f32> {
    rope_table(inv_freq, shift, 1)
        .chunks_exact(2)
        .flat_map(|cs| [cs[0], -cs[1]])
        .collect()
}

/// Moves cache positions `[from, from + count)` to `[to, to + count)` (`to < from`), keys
/// turned by `rot` (from [`rotation`]). Dispatches go in blocks of `from − to` positions,
/// lowest first, so none overwrites a position a later one reads, each block split where a
/// source or destination page ends; per piece one dispatch for K and one for V.
pub fn record(
    rec: &mut Recorder,
    heads: Heads,
    cache: &KvPages,
    rot: &Binding,
    (from, to, count): (u32, u32, u32),
) {
    assert!(to < from, "a context shift moves positions down");
    let defines = heads.kv.defines().uint("WG", WG);
    let keys = rec
        .ctx()
        .pipeline("kv_shift", SOURCE, &defines.clone().flag("ROTATE"));
    let values = rec.ctx().pipeline("kv_shift", SOURCE, &defines);
    let dist = from - to;
    let mut done = 0;
    while done < count {
        let (src, dst) = (from + done, to + done);
        let (src_page, dst_page) = (cache.page_of(src), cache.page_of(dst));
        let (src_start, src_end) = cache.span(src_page);
        let (dst_start, dst_end) = cache.span(dst_page);
        let block_end = (done / dist + 1) * dist;
        let n = (count.min(block_end) - done)
            .min(src_end - src)
            .min(dst_end - dst);
        let params = Params {
            count: n,
            src_start: src - src_start,
            dst_start: dst - dst_start,
            n_kv: heads.n_kv,
            head_dim: heads.head_dim,
            kv_words: heads.kv_words(),
            _pad0: 0,
            _pad1: 0,
        };
        let grid = [heads.n_kv, n, 1];
        let (sp, dp) = (src_page as usize, dst_page as usize);
        let k = vec![
            (1, rot.clone()),
            (2, cache.k[sp].clone()),
            (3, cache.k[dp].clone()),
        ];
        rec.dispatch_numbered("kv shift k", &keys, &params, k, grid);
        let v = vec![(2, cache.v[sp].clone()), (3, cache.v[dp].clone())];
        rec.dispatch_numbered("kv shift v", &values, &params, v, grid);
        done += n;
    }
}

/// CPU reference on an unpaged cache of `[positions, n_kv, head_dim]` values: positions
/// `[from, from + count)` moved to `[to, to + count)`, each head turned by `rot` when given
/// (keys); every other position keeps its value.
pub fn reference(
    cache: &[f32],
    heads: Heads,
    rot: Option<&[f32]>,
    (from, to, count): (usize, usize, usize),
) -> Vec<f32> {
    let hd = heads.head_dim as usize;
    let half = hd / 2;
    let row = heads.n_kv as usize * hd;
    let mut out = cache.to_vec();
    for j in 0..count {
        let src = &cache[(from + j) * row..(from + j + 1) * row];
        let dst = &mut out[(to + j) * row..(to + j + 1) * row];
        for (x, y) in src.chunks_exact(hd).zip(dst.chunks_exact_mut(hd)) {
            let Some(rot) = rot else {
                y.copy_from_slice(x);
                continue;
            };
            for i in 0..half {
                let (c, s) = (rot[2 * i], rot[2 * i + 1]);
                y[i] = x[i] * c - x[i + half] * s;
                y[i + half] = x[i + half] * c + x[i] * s;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, rel_err, Rng};
    use crate::kernels::{qk_norm_rope, KvType};

    /// A key stored with RoPE at position p and turned by `rotation(d)` is the key RoPE puts
    /// at p − d, up to the f32 rounding of the angles (p · inv_freq, ~4000 rad here).
    #[test]
    fn rotation_moves_a_key_back() {
        let (hd, p, d) = (32usize, 4000usize, 1500usize);
        let heads = Heads {
            n_heads: 1,
            n_kv: 1,
            head_dim: hd as u32,
            kv: KvType::F32,
        };
        let inv = qk_norm_rope::inv_freq(1e6, hd);
        let mut rng = Rng::new(11);
        let qkv = rng.normals(3 * hd, 1.0);
        let norm = vec![1.0; hd];
        let key_at = |pos: usize| {
            let rope = rope_table(&inv, pos, 1);
            qk_norm_rope::reference(&qkv, &norm, &norm, &rope, heads, 1e-5).1
        };
        let moved = reference(&key_at(p), heads, Some(&rotation(&inv, d)), (0, 0, 1));
        let e = rel_err(&moved, &key_at(p - d));
        assert!(e < 1e-8, "err={e}");
    }

    #[test]
    fn kv_shift_matches_reference() {
        let Some(ctx) = context() else { return };
        // (kv heads, head dim, positions per page, pages, from, to, count, cache type): moves
        // within one page, across page boundaries on both sides, with the source overlapping
        // the destination (distance below the count), and a shift as the session makes it
        // (ctx 48, keep 4: 22 discarded, 22 moved).
        for (n_kv, hd, page, pages, from, to, count, kv) in [
            (
                2u32,
                16u32,
                64usize,
                1usize,
                30usize,
                10usize,
                20usize,
                KvType::F32,
            ),
            (2, 16, 64, 1, 17, 4, 30, KvType::F16),
            (1, 32, 8, 5, 21, 5, 19, KvType::F32),
            (3, 64, 8, 6, 29, 4, 19, KvType::F16),
            (2, 16, 16, 3, 26, 4, 22, KvType::F32),
            (2, 16, 16, 3, 27, 4, 21, KvType::F16),
        ] {
            let heads = Heads {
                n_heads: n_kv,
                n_kv,
                head_dim: hd,
                kv,
            };
            let row = (n_kv * hd) as usize;
            let mut rng = Rng::new(from as u64 * 7 + hd as u64);
            let hd_len = hd as usize;
            let pack = |x: &[f32]| kv.encode(x, hd_len);
            let unpack = |w: &[u32]| kv.decode(w, hd_len);
            let round = |v: Vec<f32>| unpack(&pack(&v));
            let (k, v) = (
                round(rng.normals(pages * page * row, 1.0)),
                round(rng.normals(pages * page * row, 1.0)),
            );
            let page_words = page * heads.kv_words() as usize;
            let upload = |data: &[f32]| -> Vec<wgpu::Buffer> {
                pack(data)
                    .chunks(page_words)
                    .map(|w| ctx.storage_with("cache page", w))
                    .collect()
            };
            let (kp, vp) = (upload(&k), upload(&v));
            let kb: Vec<Binding> = kp.iter().map(Binding::whole).collect();
            let vb: Vec<Binding> = vp.iter().map(Binding::whole).collect();
            let inv = qk_norm_rope::inv_freq(1e6, hd as usize);
            let rot = rotation(&inv, from - to);
            let rot_buf = ctx.storage_with("rot", &rot);
            let mut rec = Recorder::new(ctx);
            let cache = KvPages {
                k: &kb,
                v: &vb,
                page_positions: page as u32,
            };
            let span = (from as u32, to as u32, count as u32);
            record(&mut rec, heads, &cache, &(&rot_buf).into(), span);
            rec.submit();
            let read = |pages: &[wgpu::Buffer]| -> Vec<f32> {
                let words: Vec<u32> = pages
                    .iter()
                    .flat_map(|b| ctx.read_u32(b, 0, page_words).unwrap())
                    .collect();
                unpack(&words)
            };
            let moved = (from, to, count);
            let want_k = reference(&k, heads, Some(&rot), moved);
            let want_v = reference(&v, heads, None, moved);
            let (got_k, got_v) = (read(&kp), read(&vp));
            let bound = if kv == KvType::F32 { 1e-11 } else { 1e-6 };
            let e = rel_err(&got_k, &want_k);
            assert!(e < bound, "k {kv:?} page {page} from {from}: err={e}");
            assert_eq!(got_v, want_v, "v {kv:?} page {page} from {from}");
        }
    }
}
