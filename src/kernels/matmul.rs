//! Tiled matrix product for prefill, `Y (+)= X · Wᵀ`, and (with `gather`) the grouped expert
//! GEMM over the gather kernel's per-expert pair lists on an upper-bound grid.

use std::sync::LazyLock;

use super::PairLists;
use crate::gpu::{with_weight_loaders, Binding, Defines, Recorder, WeightFormat, WeightTensor};

/// The kernel after the weight-format loaders (shaders/formats/, joined once on first use).
pub static SOURCE: LazyLock<String> =
    LazyLock::new(|| with_weight_loaders(include_str!("../../shaders/matmul.wgsl")));

/// Output tile edge (rows and columns) of one workgroup (the shader's `BM`, `BN`).
pub const TILE: u32 = 32;
/// Depth of the K slices staged in workgroup memory (`BK`).
const TILE_K: u32 = 16;
/// Threads per workgroup edge (`WG_EDGE`): each computes a 4 x 4 block of the tile.
const WG_EDGE: u32 = TILE / 4;

/// Pipeline key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    pub format: WeightFormat,
    pub gather: bool,
    pub accumulate: bool,
}

impl Variant {
    pub fn defines(&self) -> Defines {
        Defines::new()
            .flag(self.format.define())
            .flag_if(self.gather, "GATHER")
            .flag_if(self.accumulate, "ACCUMULATE")
            .uint("BM", TILE)
            .uint("BN", TILE)
            .uint("BK", TILE_K)
            .uint("WG_EDGE", WG_EDGE)
    }
}

crate::params! {
    pub(crate) struct Params {
        m: u32,
        n: u32,
        k: u32,
        row_words: u32,
        page_row0: u32,
        page_rows: u32,
        x_stride: u32,
        y_stride: u32,
        x_div: u32,
        n_offset: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// Inputs of one matrix product.
pub struct Args<'a> {
    pub w: &'a WeightTensor,
    /// Rows of one matrix of `w` (= output columns).
    pub n: u32,
    /// Rows of X and Y (ignored with a gather).
    pub m: u32,
    pub x: Binding,
    pub x_stride: u32,
    pub y: Binding,
    pub y_stride: u32,
    pub gather: Option<PairLists>,
}

/// Records one dispatch per weight page.
pub fn record(rec: &mut Recorder, v: Variant, a: &Args) {
    assert_eq!(v.gather, a.gather.is_some(), "gather variant needs lists");
    let defines = v.defines().with(&a.w.layout_defines());
    let pipeline = rec.ctx().pipeline("matmul", &SOURCE, &defines);
    for page in &a.w.pages {
        let (groups, x_div, n_offset) = match &a.gather {
            Some(g) => (
                [a.n.div_ceil(TILE), g.max_rows.div_ceil(TILE), g.n_experts],
                g.x_div,
                0,
            ),
            None => (
                [page.rows.div_ceil(TILE), a.m.div_ceil(TILE), 1],
                1,
                page.row0,
            ),
        };
        let params = Params {
            m: a.m,
            n: a.n,
            k: a.w.cols,
            row_words: a.w.row_words,
            page_row0: page.row0,
            page_rows: page.rows,
            x_stride: a.x_stride,
            y_stride: a.y_stride,
            x_div,
            n_offset,
            _pad0: 0,
            _pad1: 0,
        };
        let mut b = vec![Binding::whole(&page.buffer), a.x.clone(), a.y.clone()];
        if let Some(g) = &a.gather {
            b.extend([g.counts.clone(), g.offsets.clone(), g.pairs.clone()]);
        }
        let label = format!(
            "matmul {}{}",
            v.format.name(),
            if v.gather { " gather" } else { "" }
        );
        rec.dispatch(&label, &pipeline, &params, &b, groups);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{cols_for, context, poisoned, random_matrix, rel_err, Rng};
    use crate::gpu::GPU_FORMATS;
    use crate::kernels::{matvec, moe_gather};

    fn dense_case(
        format: WeightFormat,
        accumulate: bool,
        m: usize,
        n: usize,
        k: usize,
        page_bytes: Option<u64>,
        max_tile: usize,
    ) {
        let Some(ctx) = context() else { return };
        let k = cols_for(format, k);
        let mut rng = Rng::new((m * 131 + n * 7 + k) as u64);
        let page_bytes = page_bytes.map(|rows| rows * (format.row_words(k) * 4) as u64);
        let (w, seen) = random_matrix(ctx, format, (n, k), (1, page_bytes, max_tile), &mut rng);
        let x = rng.normals(m * k, 1.0);
        let mut y_ref = rng.normals(m * n, 1.0);
        let y = if accumulate {
            ctx.storage_with("y", &y_ref)
        } else {
            poisoned(ctx, m * n)
        };
        let xb = ctx.storage_with("x", &x);
        let mut rec = Recorder::new(ctx);
        let v = Variant {
            format,
            gather: false,
            accumulate,
        };
        record(
            &mut rec,
            v,
            &Args {
                w: &w,
                n: n as u32,
                m: m as u32,
                x: (&xb).into(),
                x_stride: k as u32,
                y: (&y).into(),
                y_stride: n as u32,
                gather: None,
            },
        );
        rec.submit();
        matvec::reference(
            &seen,
            (n, k),
            (&x, k),
            (m, None),
            (&mut y_ref, n),
            accumulate,
        );
        let e = rel_err(&ctx.read_f32(&y, 0, m * n).unwrap(), &y_ref);
        assert!(
            e < 1e-10,
            "{v:?} m={m} n={n} k={k} pages={} tile 2^{} err={e}",
            w.pages.len(),
            w.tile_log2
        );
    }

    #[test]
    fn dense_matmul_matches_reference() {
        for f in GPU_FORMATS {
            dense_case(f, false, 1, 33, 17, None, 1);
            dense_case(f, true, 45, 70, 51, None, 1);
            dense_case(f, false, 67, 100, 64, Some(24), 1); // pages of 24 rows
            dense_case(f, true, 40, 96, 256, Some(32), 128); // row tiles of 32 (where tileable)
        }
    }

    /// Grouped expert GEMM over gathered pairs equals the per-pair expert matvec.
    #[test]
    fn grouped_expert_matmul_matches_reference() {
        let Some(ctx) = context() else { return };
        for (fi, format) in GPU_FORMATS.into_iter().enumerate() {
            let (t, top_k, e, n, k) = (37usize, 3usize, 7usize, 41usize, cols_for(format, 35));
            let mut rng = Rng::new(99 + fi as u64);
            let page = Some((2 * n * format.row_words(k) * 4) as u64); // two experts per page
            let (w, seen) = random_matrix(ctx, format, (e * n, k), (n, page, 1), &mut rng);
            let mut ids = Vec::new();
            for _ in 0..t {
                let mut chosen: Vec<u32> = Vec::new();
                while chosen.len() < top_k {
                    let c = rng.below(e as u32);
                    if !chosen.contains(&c) {
                        chosen.push(c);
                    }
                }
                ids.extend(chosen);
            }
            let x = rng.normals(t * k, 1.0);
            let idb = ctx.storage_with("ids", &ids);
            let lists = moe_gather::Buffers::new(ctx, e, t * top_k);
            let xb = ctx.storage_with("x", &x);
            let y = poisoned(ctx, t * top_k * n);
            let mut rec = Recorder::new(ctx);
            moe_gather::record(
                &mut rec,
                &(&idb).into(),
                &lists,
                (t * top_k) as u32,
                e as u32,
            );
            let v = Variant {
                format,
                gather: true,
                accumulate: false,
            };
            record(
                &mut rec,
                v,
                &Args {
                    w: &w,
                    n: n as u32,
                    m: 0,
                    x: (&xb).into(),
                    x_stride: k as u32,
                    y: (&y).into(),
                    y_stride: n as u32,
                    gather: Some(lists.gather(e as u32, t as u32, top_k as u32)),
                },
            );
            rec.submit();
            let mut y_ref = vec![0f32; t * top_k * n];
            let x_rep: Vec<f32> = (0..t * top_k)
                .flat_map(|p| x[(p / top_k) * k..(p / top_k + 1) * k].to_vec())
                .collect();
            let ids = (t * top_k, Some(&ids[..]));
            matvec::reference(&seen, (n, k), (&x_rep, k), ids, (&mut y_ref, n), false);
            let err = rel_err(&ctx.read_f32(&y, 0, t * top_k * n).unwrap(), &y_ref);
            assert!(err < 1e-10, "{format:?} pages={} err={err}", w.pages.len());
            // The gathered batched matvec (the CPU-device prefill path) gives the same.
            let y2 = poisoned(ctx, t * top_k * n);
            let mut rec = Recorder::new(ctx);
            let v = matvec::Variant {
                format,
                mode: matvec::Mode::Gather,
                accumulate: false,
                wg: 8,
                rows: 2,
                tokens: 8,
                lane_rows: false,
                subgroups: false,
                norm: false,
            };
            let args = matvec::Args {
                w: &w,
                n: n as u32,
                x: (&xb).into(),
                x_stride: k as u32,
                y: (&y2).into(),
                y_stride: n as u32,
                batch: 0,
                ids: None,
                x_div: 1,
                tokens: 1,
                route: None,
                norm: None,
                gather: Some(lists.gather(e as u32, t as u32, top_k as u32)),
            };
            matvec::record(&mut rec, v, &args);
            rec.submit();
            let err = rel_err(&ctx.read_f32(&y2, 0, t * top_k * n).unwrap(), &y_ref);
            assert!(err < 1e-10, "gathered matvec {format:?} err={err}");
        }
    }
}
