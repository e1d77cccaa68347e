//! Copies one row of f32 words between buffers at word offsets: a batched step moves each
//! sequence's row into the one-token buffers its own kernels (conv, attention) read, and back.

use crate::gpu::{fold_groups, Binding, Defines, Recorder};

pub const SOURCE: &str = include_str!("../../shaders/row_copy.wgsl");

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 64;

crate::params! {
    pub(crate) struct Params {
        width: u32,
        src_offset: u32,
        dst_offset: u32,
        _pad0: u32,
    }
}

/// A row of `width` words: where it is read and where it is written.
pub struct Row<'a> {
    pub src: &'a Binding,
    pub src_offset: u32,
    pub dst: &'a Binding,
    pub dst_offset: u32,
    pub width: u32,
}

/// `dst[dst_offset..][..width] = src[src_offset..][..width]`.
pub fn record(rec: &mut Recorder, row: &Row) {
    let pipeline = rec
        .ctx()
        .pipeline("row_copy", SOURCE, &Defines::new().uint("WG", WG));
    let params = Params {
        width: row.width,
        src_offset: row.src_offset,
        dst_offset: row.dst_offset,
        _pad0: 0,
    };
    rec.dispatch(
        "row_copy",
        &pipeline,
        &params,
        &[row.src.clone(), row.dst.clone()],
        fold_groups(row.width.div_ceil(WG), 1),
    );
}

/// CPU reference: `dst` with the row copied in.
pub fn reference(src: &[f32], dst: &[f32], r: (usize, usize, usize)) -> Vec<f32> {
    let (src_offset, dst_offset, width) = r;
    let mut out = dst.to_vec();
    out[dst_offset..dst_offset + width].copy_from_slice(&src[src_offset..src_offset + width]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, Rng};

    #[test]
    fn row_copy_matches_reference() {
        let Some(ctx) = context() else { return };
        for (src_offset, dst_offset, width) in
            [(0usize, 0usize, 1usize), (37, 5, 130), (64, 200, 64)]
        {
            let src = Rng::new(width as u64).normals(400, 1.0);
            let dst = Rng::new(7).normals(300, 1.0);
            let (sb, db) = (ctx.storage_with("src", &src), ctx.storage_with("dst", &dst));
            let mut rec = Recorder::new(ctx);
            let row = Row {
                src: &(&sb).into(),
                src_offset: src_offset as u32,
                dst: &(&db).into(),
                dst_offset: dst_offset as u32,
                width: width as u32,
            };
            record(&mut rec, &row);
            rec.submit();
            let want = reference(&src, &dst, (src_offset, dst_offset, width));
            assert_eq!(ctx.read_f32(&db, 0, dst.len()).unwrap(), want);
        }
    }
}
