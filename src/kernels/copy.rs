//! Device copy bandwidth probe; benches report every kernel as a percentage of it.

use crate::gpu::{fold_groups, Binding, Defines, Recorder};

pub const SOURCE: &str = include_str!("../../shaders/copy.wgsl");

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 256;

crate::params! {
    pub(crate) struct Params {
        n_vec4: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// Copies `bytes` (a multiple of 16) from `src` to `dst`.
pub fn record(rec: &mut Recorder, src: &Binding, dst: &Binding, bytes: u64) {
    let pipeline = rec
        .ctx()
        .pipeline("copy", SOURCE, &Defines::new().uint("WG", WG));
    let n_vec4 = (bytes / 16) as u32;
    let params = Params {
        n_vec4,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    rec.dispatch(
        "copy",
        &pipeline,
        &params,
        &[src.clone(), dst.clone()],
        fold_groups(n_vec4.div_ceil(WG), 1),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, poisoned, Rng};

    #[test]
    fn copy_copies() {
        let Some(ctx) = context() else { return };
        let mut rng = Rng::new(3);
        let data: Vec<u32> = (0..4096 * 4 + 4).map(|_| rng.next_u64() as u32).collect();
        let (src, dst) = (ctx.storage_with("src", &data), poisoned(ctx, data.len()));
        let mut rec = Recorder::new(ctx);
        record(
            &mut rec,
            &(&src).into(),
            &(&dst).into(),
            data.len() as u64 * 4,
        );
        rec.submit();
        assert_eq!(ctx.read_u32(&dst, 0, data.len()).unwrap(), data);
    }
}
