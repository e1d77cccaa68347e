//! Embedding lookup from a paged `[vocab, H]` table into f32 rows.

use std::sync::LazyLock;

use crate::gpu::{with_weight_loaders, Binding, Recorder, WeightTensor};

/// The kernel after the weight-format loaders (shaders/formats/, joined once on first use).
pub static SOURCE: LazyLock<String> =
    LazyLock::new(|| with_weight_loaders(include_str!("../../shaders/embedding.wgsl")));

crate::params! {
    pub(crate) struct Params {
        h: u32,
        tokens: u32,
        row_words: u32,
        page_row0: u32,
        page_rows: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 64;

/// `out[t] = table[tokens[t]]` for `n_tokens` tokens; one dispatch per page.
pub fn record(
    rec: &mut Recorder,
    table: &WeightTensor,
    tokens: &Binding,
    out: &Binding,
    n_tokens: u32,
) {
    let defs = table
        .layout_defines()
        .flag(table.format.define())
        .uint("WG", WG);
    let pipeline = rec.ctx().pipeline("embedding", &SOURCE, &defs);
    for page in &table.pages {
        let params = Params {
            h: table.cols,
            tokens: n_tokens,
            row_words: table.row_words,
            page_row0: page.row0,
            page_rows: page.rows,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        };
        let b = [Binding::whole(&page.buffer), tokens.clone(), out.clone()];
        rec.dispatch(
            "embedding",
            &pipeline,
            &params,
            &b,
            [table.cols.div_ceil(WG), n_tokens, 1],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{cols_for, context, poisoned, random_matrix, Rng};
    use crate::gpu::GPU_FORMATS;

    #[test]
    fn embedding_matches_reference() {
        let Some(ctx) = context() else { return };
        for f in GPU_FORMATS {
            // Row-major pages, and (where the format allows) tiles of 32 rows.
            for (v, h, tile) in [(301usize, cols_for(f, 67), 1), (320, cols_for(f, 256), 128)] {
                let t = 13usize;
                let mut rng = Rng::new(5);
                let page = Some((50 * f.row_words(h) * 4) as u64);
                let (table, seen) = random_matrix(ctx, f, (v, h), (1, page, tile), &mut rng);
                assert!(table.pages.len() > 1);
                assert_eq!(table.tile_log2 == 5, tile > 1 && f.tileable(h), "{f:?}");
                let toks: Vec<u32> = (0..t).map(|_| rng.below(v as u32)).collect();
                let tb = ctx.storage_with("tokens", &toks);
                let out = poisoned(ctx, t * h);
                let mut rec = Recorder::new(ctx);
                record(&mut rec, &table, &(&tb).into(), &(&out).into(), t as u32);
                rec.submit();
                let want: Vec<f32> = toks
                    .iter()
                    .flat_map(|&k| seen[k as usize * h..(k as usize + 1) * h].to_vec())
                    .collect();
                assert_eq!(ctx.read_f32(&out, 0, t * h).unwrap(), want, "{f:?}");
            }
        }
    }
}
