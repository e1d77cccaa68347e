//! Buckets a chunk's (token, slot) pairs by expert on the GPU: counts, offsets and pair lists
//! for the grouped expert GEMM, without any host readback.

use crate::gpu::{Binding, Defines, GpuContext, Recorder};

use super::PairLists;

pub const SOURCE: &str = include_str!("../../shaders/moe_gather.wgsl");

/// Largest expert count the shader's workgroup arrays hold.
pub const MAX_EXPERTS: usize = 256;

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 64;

crate::params! {
    pub(crate) struct Params {
        n_pairs: u32,
        n_experts: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// The gather kernel's outputs.
pub struct Buffers {
    pub counts: wgpu::Buffer,
    pub offsets: wgpu::Buffer,
    pub pairs: wgpu::Buffer,
}

impl Buffers {
    pub fn new(ctx: &GpuContext, n_experts: usize, max_pairs: usize) -> Self {
        Buffers {
            counts: ctx.storage("expert counts", 4 * n_experts as u64),
            offsets: ctx.storage("expert offsets", 4 * n_experts as u64),
            pairs: ctx.storage("expert pairs", 4 * max_pairs as u64),
        }
    }

    /// The lists as the grouped GEMM reads them; X row = pair / x_div.
    pub fn gather(&self, n_experts: u32, max_rows: u32, x_div: u32) -> PairLists {
        PairLists {
            counts: (&self.counts).into(),
            offsets: (&self.offsets).into(),
            pairs: (&self.pairs).into(),
            n_experts,
            max_rows,
            x_div,
        }
    }
}

pub fn record(rec: &mut Recorder, ids: &Binding, out: &Buffers, n_pairs: u32, n_experts: u32) {
    let pipeline = rec
        .ctx()
        .pipeline("moe_gather", SOURCE, &Defines::new().uint("WG", WG));
    let params = Params {
        n_pairs,
        n_experts,
        _pad0: 0,
        _pad1: 0,
    };
    let b = [
        ids.clone(),
        (&out.counts).into(),
        (&out.offsets).into(),
        (&out.pairs).into(),
    ];
    rec.dispatch("moe_gather", &pipeline, &params, &b, [1, 1, 1]);
}

/// CPU reference: (counts, offsets, pairs).
pub fn reference(ids: &[u32], n_experts: usize) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut counts = vec![0u32; n_experts];
    for &i in ids {
        counts[i as usize] += 1;
    }
    let mut offsets = vec![0u32; n_experts];
    for e in 1..n_experts {
        offsets[e] = offsets[e - 1] + counts[e - 1];
    }
    let mut pairs = Vec::with_capacity(ids.len());
    for e in 0..n_experts as u32 {
        pairs.extend((0..ids.len() as u32).filter(|&p| ids[p as usize] == e));
    }
    (counts, offsets, pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, Rng};

    #[test]
    fn gather_matches_reference() {
        let Some(ctx) = context() else { return };
        for (n_pairs, e) in [(1usize, 4usize), (150, 32), (333, 70)] {
            let mut rng = Rng::new(n_pairs as u64);
            let ids: Vec<u32> = (0..n_pairs).map(|_| rng.below(e as u32)).collect();
            let idb = ctx.storage_with("ids", &ids);
            let out = Buffers::new(ctx, e, n_pairs);
            let mut rec = Recorder::new(ctx);
            record(&mut rec, &(&idb).into(), &out, n_pairs as u32, e as u32);
            rec.submit();
            let (c, o, p) = reference(&ids, e);
            assert_eq!(ctx.read_u32(&out.counts, 0, e).unwrap(), c);
            assert_eq!(ctx.read_u32(&out.offsets, 0, e).unwrap(), o);
            assert_eq!(ctx.read_u32(&out.pairs, 0, n_pairs).unwrap(), p);
        }
    }
}
