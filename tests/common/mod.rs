//! Helpers shared by the integration tests.

/// The acceptance rule: max |Δ| ≤ 5e-3 · max |ref| per position, and the same argmax wherever
/// the reference's top-2 gap exceeds 0.1.
pub fn compare(name: &str, what: &str, got: &[f32], want: &[f32], vocab: usize) -> f32 {
    compare_within(name, what, got, want, vocab, 5e-3)
}

/// `compare` with max |Δ| ≤ `bound` · max |ref| per position.
pub fn compare_within(
    name: &str,
    what: &str,
    got: &[f32],
    want: &[f32],
    vocab: usize,
    bound: f32,
) -> f32 {
    assert_eq!(got.len(), want.len(), "{name} {what}: length");
    let mut worst = 0f32;
    for (pos, (g, w)) in got.chunks(vocab).zip(want.chunks(vocab)).enumerate() {
        let scale = w.iter().fold(0f32, |a, x| a.max(x.abs()));
        let diff = g.iter().zip(w).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        worst = worst.max(diff / scale);
        assert!(
            diff <= bound * scale,
            "{name} {what} position {pos}: max |Δ| {diff} > {bound} · {scale}"
        );
        let mut sorted: Vec<(f32, usize)> = w.iter().cloned().zip(0..).collect();
        sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
        if sorted[0].0 - sorted[1].0 > 0.1 {
            let am = g
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            assert_eq!(
                am, sorted[0].1,
                "{name} {what} position {pos}: argmax differs"
            );
        }
    }
    eprintln!("{name} {what}: worst max|Δ|/max|ref| = {worst:.2e}");
    worst
}
