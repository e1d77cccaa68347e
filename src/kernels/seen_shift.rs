//! Context shift of the sampler's last-seen positions (the repetition penalty's window):
//! positions discarded by the shift are forgotten, later ones move down with the KV cache.

use crate::gpu::{fold_groups, Binding, Defines, Recorder};

pub const SOURCE: &str = include_str!("../../shaders/seen_shift.wgsl");

/// Threads per workgroup (the shader's `WG`).
const WG: u32 = 64;

crate::params! {
    pub(crate) struct Params {
        n: u32,
        keep: u32,
        dropped: u32,
        _pad: u32,
    }
}

/// Shifts `seen` (`[2n]`: counts, then 1 + last position per token) for a context shift that
/// keeps `keep` positions and discards the next `discard`.
pub fn record(rec: &mut Recorder, seen: &Binding, n: u32, keep: u32, discard: u32) {
    let pipeline = rec
        .ctx()
        .pipeline("seen_shift", SOURCE, &Defines::new().uint("WG", WG));
    let params = Params {
        n,
        keep,
        dropped: discard,
        _pad: 0,
    };
    let groups = fold_groups(n.div_ceil(WG), 1);
    let storage = std::slice::from_ref(seen);
    rec.dispatch("seen shift", &pipeline, &params, storage, groups);
}

/// CPU reference.
pub fn reference(seen: &[u32], keep: u32, discard: u32) -> Vec<u32> {
    let n = seen.len() / 2;
    let mut out = seen.to_vec();
    for last in &mut out[n..] {
        if *last == 0 || *last - 1 < keep {
            continue;
        }
        *last = if *last - 1 < keep + discard {
            0
        } else {
            *last - discard
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, Rng};

    #[test]
    fn seen_shift_matches_reference() {
        let Some(ctx) = context() else { return };
        let (n, keep, discard) = (1000usize, 4u32, 22u32);
        let mut rng = Rng::new(5);
        // Counts, then last positions spread over none, kept, discarded and moved ones.
        let seen: Vec<u32> = (0..2 * n)
            .map(|i| if i < n { rng.below(9) } else { rng.below(49) })
            .collect();
        let buf = ctx.storage_with("seen", &seen);
        let mut rec = Recorder::new(ctx);
        record(&mut rec, &(&buf).into(), n as u32, keep, discard);
        rec.submit();
        let got = ctx.read_u32(&buf, 0, 2 * n).unwrap();
        assert_eq!(got, reference(&seen, keep, discard));
        assert_ne!(got, seen, "the test data holds positions to move");
    }
}
