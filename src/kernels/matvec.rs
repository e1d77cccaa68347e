//! Batched matrix-vector product, `y[b] (+)= W[m_b] · x[b]`, the decode path's projection and
//! (with `experts`) the decode expert matvec whose matrix ids are read on the GPU.

use std::sync::LazyLock;

use super::PairLists;
use crate::gpu::{
    fold_groups, with_weight_loaders, Binding, Defines, DeviceProfile, Recorder, WeightFormat,
    WeightTensor,
};

/// The kernel after the weight-format loaders (shaders/formats/, joined once on first use).
pub static SOURCE: LazyLock<String> =
    LazyLock::new(|| with_weight_loaders(include_str!("../../shaders/matvec.wgsl")));

/// Where each workgroup's matrix and batch entries come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One matrix; batch entries in tiles of `tokens`.
    Plain,
    /// Matrix `ids[b]` per batch entry (the decode expert matvec).
    Experts,
    /// `y += Σ_b route[b] · W[ids[b]] · x[b]` into one row: the decode expert down
    /// projection, top-k weighted sum and residual add in one dispatch.
    ExpertsCombine,
    /// Per expert, the pairs the gather kernel routed to it, in tiles of `tokens`.
    Gather,
}

impl Mode {
    /// Whether each workgroup serves one batch entry's matrix (the expert modes).
    fn one_entry(self) -> bool {
        matches!(self, Mode::Experts | Mode::ExpertsCombine)
    }
}

/// Pipeline key; the dispatch reads its tiling from the same struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    pub format: WeightFormat,
    pub mode: Mode,
    pub accumulate: bool,
    /// Threads per workgroup (a power of two).
    pub wg: u32,
    /// Output rows per workgroup.
    pub rows: u32,
    /// Batch entries per workgroup (1 with `Mode::Experts`).
    pub tokens: u32,
    /// `rows / wg` whole rows per invocation, no reduction (`tokens` 1 or 4): CPU devices,
    /// where every storage load costs a scalar load per SIMD lane, so each activation a lane
    /// loads must serve many rows.
    pub lane_rows: bool,
    /// K-split sums reduced with `subgroupAdd` (devices with subgroups), else a
    /// workgroup-memory tree.
    pub subgroups: bool,
    /// RMSNorm folded into the product (`Mode::Plain`, K-split only): `x` is the un-normed
    /// residual and `Args::norm` its norm weights.
    pub norm: bool,
}

impl Variant {
    pub fn defines(&self) -> Defines {
        let d = Defines::new()
            .flag(self.format.define())
            .uint("WG", self.wg)
            .uint("ROWS", self.rows)
            .uint("TOKENS", self.tokens)
            .uint("OUTS", (self.rows + u32::from(self.norm)) * self.tokens)
            .flag_if(self.norm, "NORM")
            .flag_if(self.mode.one_entry(), "EXPERTS")
            .flag_if(self.mode == Mode::ExpertsCombine, "COMBINE")
            .flag_if(self.mode == Mode::Gather, "GATHER")
            .flag_if(self.accumulate, "ACCUMULATE")
            .flag_if(self.format.masked_dot(), "MASKED_DOT")
            .flag_if(self.subgroups && !self.lane_rows, "SUBGROUPS");
        if self.lane_rows {
            d.flag("LANE_ROWS")
                .uint("LROWS", self.rows / self.wg)
                .flag_if(self.tokens == 4, "TOKENS4")
        } else {
            d
        }
    }

    /// The tiling the device profile takes: narrow workgroups with whole rows per lane on
    /// CPU rasterizers (their SIMD width), the K split over wide ones on GPUs; `batch` > 1
    /// takes token tiles that reuse each decoded weight.
    pub fn for_profile(
        profile: &DeviceProfile,
        format: WeightFormat,
        mode: Mode,
        accumulate: bool,
        batch: u32,
    ) -> Self {
        let lane_rows = profile.lane_rows();
        let single = mode.one_entry() || batch <= 1;
        // Lane rows: 16 rows per lane for one token, 8 rows x 4 tokens for batches
        // (docs/PERF.md); the K-split takes token tiles of 8.
        let (wg, rows, tokens) = match (lane_rows, single) {
            (true, true) => (8, 8 * 16, 1),
            (true, false) => (8, 8 * 8, 4),
            (false, true) => (64, 4, 1),
            (false, false) => (64, 4, 8),
        };
        Variant {
            format,
            mode,
            accumulate,
            wg,
            rows,
            tokens,
            lane_rows,
            subgroups: !lane_rows && profile.subgroups,
            norm: false,
        }
    }

    /// This variant with the RMSNorm folded in, where the device's tiling allows it (the
    /// K-split: GPUs). On CPU devices a separate norm dispatch is cheaper than loading the
    /// norm weights again in every lane.
    pub fn with_norm(self) -> Option<Self> {
        (self.mode == Mode::Plain && !self.lane_rows).then_some(Variant { norm: true, ..self })
    }
}

crate::params! {
    pub(crate) struct Params {
        k: u32,
        n: u32,
        row_words: u32,
        page_row0: u32,
        page_rows: u32,
        x_stride: u32,
        y_stride: u32,
        row_groups: u32,
        batch: u32,
        x_div: u32,
        tiles: u32,
        eps: f32,
    }
}

/// Inputs of one batched matvec.
pub struct Args<'a> {
    pub w: &'a WeightTensor,
    /// Rows of one matrix (`w.rows` unless `w` is an expert stack).
    pub n: u32,
    pub x: Binding,
    pub x_stride: u32,
    pub y: Binding,
    pub y_stride: u32,
    /// Batch entries (`Mode::Plain`, `Mode::Experts*`).
    pub batch: u32,
    /// Matrix id per batch entry (`Mode::Experts*`).
    pub ids: Option<Binding>,
    /// `Mode::Experts`: entry b reads x row `b / x_div` (1: its own row; the top-k of a token
    /// read the token's row).
    pub x_div: u32,
    /// `Mode::ExpertsCombine`: tokens whose entries (`batch / tokens` each, consecutive) are
    /// summed into their own y row.
    pub tokens: u32,
    /// Weight per batch entry (`Mode::ExpertsCombine`).
    pub route: Option<Binding>,
    /// RMSNorm weights and epsilon (`Variant::norm`).
    pub norm: Option<(Binding, f32)>,
    /// Per-expert pair lists (`Mode::Gather`).
    pub gather: Option<PairLists>,
}

impl<'a> Args<'a> {
    /// `batch` rows of `x` (stride `w.cols`) times every row of `w`, into rows of `y`
    /// (stride `w.rows`): the plain product.
    pub fn plain(w: &'a WeightTensor, x: Binding, y: Binding, batch: u32) -> Self {
        Args {
            w,
            n: w.rows,
            x,
            x_stride: w.cols,
            y,
            y_stride: w.rows,
            batch,
            ids: None,
            x_div: 1,
            tokens: 1,
            route: None,
            norm: None,
            gather: None,
        }
    }
}

/// Panics when the arguments do not fit the variant (a caller's bug, never input).
fn check(v: &Variant, a: &Args) {
    assert_eq!(v.mode.one_entry(), a.ids.is_some(), "expert modes need ids");
    assert_eq!(
        v.mode == Mode::ExpertsCombine,
        a.route.is_some() && v.accumulate,
        "the combining mode takes route weights and accumulates"
    );
    assert_eq!(
        v.mode == Mode::Gather,
        a.gather.is_some(),
        "gather mode needs lists"
    );
    assert_eq!(v.norm, a.norm.is_some(), "a folded norm takes norm weights");
    assert!(
        !v.norm || (v.mode == Mode::Plain && !v.lane_rows),
        "the folded norm is a plain-mode K-split variant"
    );
    assert!(
        !v.mode.one_entry() || v.tokens == 1,
        "expert mode takes one entry per workgroup"
    );
    assert!(
        a.x_div >= 1 && a.tokens >= 1 && a.batch.is_multiple_of(a.tokens),
        "entries split evenly over tokens"
    );
    assert!(
        !v.lane_rows || (v.rows.is_multiple_of(v.wg) && (v.tokens == 1 || v.tokens == 4)),
        "rows per lane take whole lanes and 1 or 4 tokens"
    );
}

/// Records one dispatch per weight page.
pub fn record(rec: &mut Recorder, v: Variant, a: &Args) {
    check(&v, a);
    // Activations as vec4 loads where every unit starts on a 16-byte boundary.
    let x_vec4 = v.lane_rows
        && a.x_stride.is_multiple_of(4)
        && a.w.cols.is_multiple_of(4)
        && a.x.offset.is_multiple_of(16);
    let w_vec4 = v.lane_rows && a.w.format.quads_aligned(a.w.cols as usize);
    let defines = v
        .defines()
        .with(&a.w.layout_defines())
        .flag_if(x_vec4, "X_VEC4")
        .flag_if(w_vec4, "W_VEC4");
    let pipeline = rec.ctx().pipeline("matvec", &SOURCE, &defines);
    let row_groups = a.n.div_ceil(v.rows);
    let (z, x_div, tiles) = match (&a.gather, v.mode) {
        (Some(g), _) => {
            let tiles = g.max_rows.div_ceil(v.tokens);
            (g.n_experts * tiles, g.x_div, tiles)
        }
        (None, Mode::Experts) => (a.batch, a.x_div, 0),
        (None, Mode::ExpertsCombine) => (a.tokens, 1, 0),
        (None, _) => (a.batch.div_ceil(v.tokens), 1, 0),
    };
    for page in &a.w.pages {
        let params = Params {
            k: a.w.cols,
            n: a.n,
            row_words: a.w.row_words,
            page_row0: page.row0,
            page_rows: page.rows,
            x_stride: a.x_stride,
            y_stride: a.y_stride,
            row_groups,
            batch: if v.mode == Mode::ExpertsCombine {
                a.batch / a.tokens
            } else {
                a.batch
            },
            x_div,
            tiles,
            eps: a.norm.as_ref().map_or(0.0, |n| n.1),
        };
        let b = bindings(a, &page.buffer, (w_vec4, x_vec4));
        // Workgroups whose rows or expert lie outside this page exit at once.
        let label = format!("matvec {} {:?} x{}", v.format.name(), v.mode, v.tokens);
        rec.dispatch_numbered(&label, &pipeline, &params, b, fold_groups(row_groups, z));
    }
}

/// The storage bindings of one page's dispatch, at the shader's fixed numbers.
fn bindings(a: &Args, page: &wgpu::Buffer, (w_vec4, x_vec4): (bool, bool)) -> Vec<(u32, Binding)> {
    let mut b = vec![
        (1, Binding::whole(page)),
        (2, a.x.clone()),
        (3, a.y.clone()),
    ];
    b.extend(a.ids.clone().map(|ids| (4, ids)));
    b.extend(a.route.clone().map(|route| (5, route)));
    b.extend(a.norm.as_ref().map(|n| (6, n.0.clone())));
    if let Some(g) = &a.gather {
        b.extend([
            (4, g.counts.clone()),
            (5, g.offsets.clone()),
            (6, g.pairs.clone()),
        ]);
    }
    if w_vec4 {
        b.push((8, Binding::whole(page)));
    }
    if x_vec4 {
        b.push((9, a.x.clone()));
    }
    b
}

/// CPU reference: `y[b][i] (+)= Σ_k W[ids[b]·n + i][k] · x[b·x_stride + k]`.
/// `w` holds matrices of `n` rows of `cols`; `ids` picks one per batch entry (none: the first).
pub fn reference(
    w: &[f32],
    (n, cols): (usize, usize),
    (x, x_stride): (&[f32], usize),
    (batch, ids): (usize, Option<&[u32]>),
    (y, y_stride): (&mut [f32], usize),
    accumulate: bool,
) {
    for b in 0..batch {
        let m = ids.map_or(0, |ids| ids[b] as usize);
        for i in 0..n {
            let row = &w[(m * n + i) * cols..(m * n + i + 1) * cols];
            let xb = &x[b * x_stride..b * x_stride + cols];
            let s: f32 = row.iter().zip(xb).map(|(a, b)| a * b).sum();
            let out = &mut y[b * y_stride + i];
            *out = if accumulate { *out + s } else { s };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{cols_for, context, poisoned, random_matrix, rel_err, Rng};
    use crate::gpu::{GPU_FORMATS, MAX_TILE_ROWS};

    /// Plain-mode arguments: `batch` rows of `x` (stride `x_stride`) into rows of `n`.
    fn plain_args<'a>(
        w: &'a WeightTensor,
        n: usize,
        (x, x_stride): (&wgpu::Buffer, usize),
        y: &wgpu::Buffer,
        batch: usize,
    ) -> Args<'a> {
        Args {
            w,
            n: n as u32,
            x: x.into(),
            x_stride: x_stride as u32,
            y: y.into(),
            y_stride: n as u32,
            batch: batch as u32,
            ids: None,
            x_div: 1,
            tokens: 1,
            route: None,
            norm: None,
            gather: None,
        }
    }

    /// One product shape checked in every layout the device runs: `n` rows of `k`, `batch`
    /// entries, pages of `page_bytes` groups, the `(wg, rows, tokens)` tiling.
    fn case(
        format: WeightFormat,
        (experts, accumulate): (bool, bool),
        (n, k, batch): (usize, usize, usize),
        page_bytes: Option<u64>,
        tiling: (u32, u32, u32),
    ) {
        let (wg, rows, _) = tiling;
        let Some(ctx) = context() else { return };
        // The K-split runs with both reductions (subgroups where the device has them).
        let lane_rows = rows >= wg;
        for subgroups in [false, true] {
            if subgroups && (lane_rows || !ctx.profile().subgroups) {
                continue;
            }
            // Row-major pages, and row tiles where the shape and format allow them.
            let tileable = n.is_multiple_of(2) && format.tileable(cols_for(format, k));
            for max_tile in [1, MAX_TILE_ROWS] {
                if max_tile > 1 && !tileable {
                    continue;
                }
                let layout = (subgroups, max_tile);
                let shape = (n, k, batch);
                run_case(
                    format,
                    (experts, accumulate),
                    shape,
                    page_bytes,
                    tiling,
                    layout,
                );
            }
        }
    }

    fn run_case(
        format: WeightFormat,
        (experts, accumulate): (bool, bool),
        (n, k, batch): (usize, usize, usize),
        page_bytes: Option<u64>,
        (wg, rows, tokens): (u32, u32, u32),
        (subgroups, max_tile): (bool, usize),
    ) {
        let ctx = context().expect("checked by case");
        let k = cols_for(format, k);
        let mut rng = Rng::new((n * 31 + k * 7 + batch) as u64);
        let n_mats = if experts { 5 } else { 1 };
        let group = if experts { n } else { 1 };
        let page_bytes = page_bytes.map(|groups| groups * (group * format.row_words(k) * 4) as u64);
        let (w, seen) = random_matrix(
            ctx,
            format,
            (n_mats * n, k),
            (group, page_bytes, max_tile),
            &mut rng,
        );
        assert!(
            max_tile == 1 || w.tile_log2 > 0,
            "a tiled case without tiles"
        );
        // Expert entries in pairs read one x row (a token's top-k share its row), where the
        // batch pairs up.
        let x_div = if experts && batch.is_multiple_of(2) {
            2
        } else {
            1
        };
        let x_stride = k;
        let x = rng.normals(batch.max(1) * k, 1.0);
        let x_rows: Vec<f32> = (0..batch)
            .flat_map(|b| x[b / x_div * k..(b / x_div + 1) * k].iter().copied())
            .collect();
        let ids: Vec<u32> = (0..batch).map(|_| rng.below(n_mats as u32)).collect();
        let mut y_ref = rng.normals(batch * n, 1.0);
        let y_buf = if accumulate {
            ctx.storage_with("y", &y_ref)
        } else {
            poisoned(ctx, batch * n)
        };
        let xb = ctx.storage_with("x", &x);
        let idb = ctx.storage_with("ids", &ids);
        let mode = if experts { Mode::Experts } else { Mode::Plain };
        let tokens = if experts { 1 } else { tokens };
        let v = Variant {
            format,
            mode,
            accumulate,
            wg,
            rows,
            tokens,
            lane_rows: rows >= wg,
            subgroups,
            norm: false,
        };
        let mut rec = Recorder::new(ctx);
        record(
            &mut rec,
            v,
            &Args {
                ids: experts.then(|| (&idb).into()),
                x_div: x_div as u32,
                ..plain_args(&w, n, (&xb, x_stride), &y_buf, batch)
            },
        );
        rec.submit();
        reference(
            &seen,
            (n, k),
            (&x_rows, k),
            (batch, experts.then_some(&ids[..])),
            (&mut y_ref, n),
            accumulate,
        );
        let got = ctx.read_f32(&y_buf, 0, batch * n).unwrap();
        let e = rel_err(&got, &y_ref);
        assert!(
            e < 1e-10,
            "{v:?} n={n} k={k} batch={batch} pages={} tile 2^{} err={e}",
            w.pages.len(),
            w.tile_log2
        );
    }

    /// The combining expert mode against per-slot reference products summed with route
    /// weights into existing rows, `batch` entries per token.
    fn combine_case(
        format: WeightFormat,
        (n, k): (usize, usize),
        (tokens, per): (usize, usize),
        page_groups: Option<u64>,
        (wg, rows): (u32, u32),
        subgroups: bool,
        max_tile: usize,
    ) {
        let Some(ctx) = context() else { return };
        let k = cols_for(format, k);
        let batch = tokens * per;
        let mut rng = Rng::new((n * 17 + k * 3 + batch) as u64);
        let n_mats = 6;
        let page_bytes = page_groups.map(|g| g * (n * format.row_words(k) * 4) as u64);
        let (w, seen) = random_matrix(
            ctx,
            format,
            (n_mats * n, k),
            (n, page_bytes, max_tile),
            &mut rng,
        );
        let x = rng.normals(batch * k, 1.0);
        let ids: Vec<u32> = (0..batch).map(|_| rng.below(n_mats as u32)).collect();
        let route: Vec<f32> = (0..batch)
            .map(|_| 0.2 + rng.below(100) as f32 / 50.0)
            .collect();
        let h0 = rng.normals(tokens * n, 1.0);
        let y = ctx.storage_with("residual", &h0);
        let (xb, idb, rb) = (
            ctx.storage_with("x", &x),
            ctx.storage_with("ids", &ids),
            ctx.storage_with("route", &route),
        );
        let v = Variant {
            format,
            mode: Mode::ExpertsCombine,
            accumulate: true,
            wg,
            rows,
            tokens: 1,
            lane_rows: rows >= wg,
            subgroups,
            norm: false,
        };
        let mut rec = Recorder::new(ctx);
        let args = Args {
            ids: Some((&idb).into()),
            route: Some((&rb).into()),
            tokens: tokens as u32,
            ..plain_args(&w, n, (&xb, k), &y, batch)
        };
        record(&mut rec, v, &args);
        rec.submit();
        let mut slots = vec![0f32; batch * n];
        let ids = (batch, Some(&ids[..]));
        reference(&seen, (n, k), (&x, k), ids, (&mut slots, n), false);
        let want: Vec<f32> = (0..tokens * n)
            .map(|ti| {
                let (t, i) = (ti / n, ti % n);
                let entries = t * per..(t + 1) * per;
                h0[ti] + entries.map(|b| route[b] * slots[b * n + i]).sum::<f32>()
            })
            .collect();
        let e = rel_err(&ctx.read_f32(&y, 0, tokens * n).unwrap(), &want);
        assert!(
            e < 1e-10,
            "{v:?} n={n} k={k} batch={batch} pages={} tile 2^{} err={e}",
            w.pages.len(),
            w.tile_log2
        );
    }

    #[test]
    fn expert_down_combine_matches_reference() {
        let Some(ctx) = context() else { return };
        for f in GPU_FORMATS {
            for max_tile in [1, MAX_TILE_ROWS] {
                // Rows per lane (CPU devices), experts in one page and across pages.
                // One token, and several (a batched decode step).
                combine_case(f, (40, 64), (1, 4), None, (8, 16), false, max_tile);
                combine_case(f, (40, 64), (3, 2), None, (8, 16), false, max_tile);
                combine_case(f, (64, 2048), (1, 4), Some(2), (8, 128), false, max_tile);
                // The K-split, with both reductions.
                for subgroups in [false, ctx.profile().subgroups] {
                    combine_case(f, (29, 70), (1, 3), Some(1), (64, 4), subgroups, max_tile);
                    combine_case(f, (29, 70), (2, 3), Some(1), (64, 4), subgroups, max_tile);
                }
            }
        }
    }

    /// The K-split with the RMSNorm folded in against the norm, then the product.
    fn norm_case(
        format: WeightFormat,
        (n, k): (usize, usize),
        batch: usize,
        page_rows: Option<u64>,
        (wg, rows, tokens): (u32, u32, u32),
        accumulate: bool,
        subgroups: bool,
    ) {
        let Some(ctx) = context() else { return };
        let k = cols_for(format, k);
        let mut rng = Rng::new((n * 5 + k * 11 + batch) as u64);
        let page_bytes = page_rows.map(|r| r * (format.row_words(k) * 4) as u64);
        let (w, seen) = random_matrix(ctx, format, (n, k), (1, page_bytes, 1), &mut rng);
        let x: Vec<f32> = rng.normals(batch * k, 3.0);
        let g: Vec<f32> = rng.normals(k, 1.0).iter().map(|v| 1.0 + 0.5 * v).collect();
        let eps = 1e-5;
        let mut y_ref = rng.normals(batch * n, 1.0);
        let y = if accumulate {
            ctx.storage_with("y", &y_ref)
        } else {
            poisoned(ctx, batch * n)
        };
        let (xb, gb) = (ctx.storage_with("x", &x), ctx.storage_with("norm", &g));
        let v = Variant {
            format,
            mode: Mode::Plain,
            accumulate,
            wg,
            rows,
            tokens,
            lane_rows: false,
            subgroups,
            norm: false,
        }
        .with_norm()
        .expect("a K-split plain variant folds the norm");
        let mut rec = Recorder::new(ctx);
        let args = Args {
            norm: Some(((&gb).into(), eps)),
            ..plain_args(&w, n, (&xb, k), &y, batch)
        };
        record(&mut rec, v, &args);
        rec.submit();
        let mut xn = Vec::with_capacity(x.len());
        for row in x.chunks_exact(k) {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / k as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            xn.extend(row.iter().zip(&g).map(|(v, g)| v * inv * g));
        }
        reference(
            &seen,
            (n, k),
            (&xn, k),
            (batch, None),
            (&mut y_ref, n),
            accumulate,
        );
        let e = rel_err(&ctx.read_f32(&y, 0, batch * n).unwrap(), &y_ref);
        assert!(e < 1e-10, "{v:?} n={n} k={k} batch={batch} err={e}");
    }

    #[test]
    fn folded_norm_matches_norm_then_product() {
        let Some(ctx) = context() else { return };
        for f in GPU_FORMATS {
            for subgroups in [false, ctx.profile().subgroups] {
                norm_case(f, (37, 70), 1, None, (64, 4, 1), false, subgroups);
                norm_case(f, (50, 96), 3, Some(16), (64, 4, 8), true, subgroups); // pages
                norm_case(f, (21, 300), 1, None, (8, 2, 1), true, subgroups);
            }
        }
    }

    #[test]
    fn vec4_weight_rows_at_model_widths() {
        use WeightFormat::*;
        for f in [F32, F16, Bf16, Q8_0, Q4_0, Q4K, Q6K, Q6KWide] {
            assert!(f.quads_aligned(2048), "{f:?}");
        }
        assert!(!Q4_0.quads_aligned(64));
        assert!(!Q5_0.quads_aligned(2048));
    }

    #[test]
    fn matvec_matches_reference_all_formats() {
        // page_bytes here counts row groups per page (rows, or whole experts).
        for f in GPU_FORMATS {
            case(f, (false, false), (37, 45, 1), None, (8, 4, 1));
            case(f, (false, true), (130, 77, 3), None, (64, 4, 1));
            case(f, (false, false), (100, 64, 2), Some(16), (8, 4, 1)); // several pages
            case(f, (false, true), (45, 70, 19), Some(16), (8, 2, 8)); // token tiles across pages
            case(f, (true, false), (29, 33, 4), None, (8, 4, 1));
            // Experts across pages.
            case(f, (true, true), (24, 40, 3), Some(2), (64, 2, 1));
            // Rows per lane (rows a multiple of wg), the CPU-device variant; k a multiple of
            // 4 takes the vec4 activation loads.
            case(f, (false, true), (45, 70, 19), Some(16), (8, 16, 4));
            case(f, (false, false), (100, 64, 6), None, (8, 24, 4));
            case(f, (false, false), (37, 45, 1), None, (8, 8, 1));
            case(f, (true, false), (29, 33, 4), Some(2), (8, 32, 1));
            case(f, (true, true), (40, 64, 3), None, (8, 16, 1));
            // 2048 columns: every format's rows that can be read as vec4 loads are (W_VEC4).
            case(f, (false, false), (24, 2048, 5), None, (8, 16, 4));
            case(f, (true, false), (16, 2048, 3), None, (8, 16, 1));
            // Whole 128-row tiles over two pages, as on CPU devices at model widths.
            case(f, (false, true), (256, 512, 1), Some(128), (8, 128, 1));
            case(f, (true, false), (128, 256, 2), Some(1), (8, 128, 1));
        }
    }
}
