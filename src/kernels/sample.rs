//! Sampling on the GPU: the next token drawn from one logits row after a sparse logit bias
//! (added to the row in place: OpenAI `logit_bias`, DRY penalties), penalties, temperature,
//! top-k, top-p and min-p (greedy at temperature 0) by one workgroup; only the token id
//! leaves the GPU. One pass over the row finds the largest tempered logit and each thread's
//! four largest (the candidates). Top-k and top-p thresholds are found exactly by radix
//! selection over order-preserving keys (four 8-bit histogram passes), over the candidates
//! where they provably hold every token the filters keep (top-k up to 1024, else top-p or
//! min-p; no thread holding more survivors than its four), else over the row. The survivors' weights
//! are summed per thread and the token is drawn by inverse CDF at a counter-based uniform of
//! (seed, position), which the CPU reference (one path, the same token) draws too.

use crate::error::{Error, Result};
use crate::gpu::{Binding, Defines, Recorder, StepVars};

pub const SOURCE: &str = include_str!("../../shaders/sample.wgsl");

/// Threads per workgroup (the shader's `WG`); also the order of the draw (thread t owns
/// tokens t, t + WG, ...).
pub const WG: u32 = 256;

/// Fixed-point scale of a token's weight in the top-p histograms (the shader's `MASS_ONE`).
const MASS_ONE: f32 = 2_147_483_648.0;

/// How the next token is drawn from the logits (`Session::generate_with`); the default is
/// greedy. Transformers' order and semantics: penalties, then temperature, top-k, top-p,
/// min-p on the tempered softmax, then a draw from the survivors' renormalised probabilities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits; 0 is greedy (the lowest index of the largest penalized logit).
    pub temperature: f32,
    /// Keeps the `top_k` largest logits (and every tie of the k-th); 0 keeps all, 1 is greedy.
    pub top_k: usize,
    /// Keeps the most probable tokens whose probabilities first reach `top_p` (and every tie
    /// of the last); 1 keeps all. In (0, 1].
    pub top_p: f32,
    /// Keeps the tokens at least `min_p` times as probable as the most probable; 0 keeps all.
    pub min_p: f32,
    /// Repetition penalty (transformers, llama.cpp): the logit of a token among the last
    /// `repeat_last_n` tokens of the sequence (prompt included) is divided by it where
    /// positive and multiplied by it where negative; 1 is off.
    pub repeat_penalty: f32,
    /// The repetition penalty's window; `None` is the whole sequence (as transformers does).
    pub repeat_last_n: Option<usize>,
    /// Presence penalty (OpenAI): subtracted from the logit of every token this generation
    /// has produced.
    pub presence_penalty: f32,
    /// Frequency penalty (OpenAI): subtracted once per time this generation produced a token.
    pub frequency_penalty: f32,
    /// The draw for sequence position p uses the uniform of (seed, p): the same seed and
    /// prompt give the same tokens.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: Some(64),
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding without penalties (the default).
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Whether the token is the largest penalized logit (temperature 0 or top-k 1).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }

    /// Whether the repetition penalty changes anything.
    pub fn penalizes_repeats(&self) -> bool {
        self.repeat_penalty != 1.0 && self.repeat_last_n != Some(0)
    }

    /// Whether the presence or frequency penalty changes anything.
    pub fn penalizes_counts(&self) -> bool {
        self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }

    /// Rejects values with no meaning (a NaN, a negative temperature, top-p outside (0, 1]).
    pub fn check(&self) -> Result<()> {
        let bad = |what: &str, v: f32, want: &str| {
            Err(Error::Input(format!("{what} must be {want}, got {v}")))
        };
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return bad("temperature", t, "a finite number ≥ 0 (0 is greedy)");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top-p", self.top_p, "in (0, 1] (1 keeps every token)");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min-p", self.min_p, "in [0, 1] (0 keeps every token)");
        }
        let r = self.repeat_penalty;
        if !(r.is_finite() && r > 0.0) {
            return bad("repeat penalty", r, "a finite number > 0 (1 is off)");
        }
        for (what, v) in [
            ("presence penalty", self.presence_penalty),
            ("frequency penalty", self.frequency_penalty),
        ] {
            if !v.is_finite() {
                return bad(what, v, "a finite number (0 is off)");
            }
        }
        Ok(())
    }
}

crate::params! {
    pub(crate) struct Params {
        n: u32,
        row: u32,
        pos: u32,
        _pad0: u32,
    }
}

crate::params! {
    /// The sampler's settings as the shader reads them (a storage buffer the session writes
    /// when they change).
    pub struct Settings {
        greedy: u32,
        top_k: u32,
        repeat_last_n: u32,
        seed_lo: u32,
        seed_hi: u32,
        inv_temperature: f32,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        inv_repeat_penalty: f32,
        presence: f32,
        frequency: f32,
    }
}

impl Settings {
    /// The shader's form of `sp` (which [`SamplingParams::check`] accepts).
    pub fn new(sp: &SamplingParams) -> Self {
        let greedy = sp.is_greedy();
        Settings {
            greedy: greedy as u32,
            top_k: sp.top_k.min(u32::MAX as usize) as u32,
            repeat_last_n: match sp.repeat_last_n {
                None => u32::MAX,
                Some(n) => n.min(u32::MAX as usize - 1) as u32,
            },
            seed_lo: sp.seed as u32,
            seed_hi: (sp.seed >> 32) as u32,
            inv_temperature: if greedy { 1.0 } else { 1.0 / sp.temperature },
            top_p: sp.top_p,
            min_p: sp.min_p,
            repeat_penalty: sp.repeat_penalty,
            inv_repeat_penalty: 1.0 / sp.repeat_penalty,
            presence: sp.presence_penalty,
            frequency: sp.frequency_penalty,
        }
    }
}

/// Words of the `seen` buffer for a vocabulary of `n`: the tokens' drawn counts, then
/// 1 + each token's last position in the sequence (0: never).
pub fn seen_words(n: usize) -> usize {
    2 * n
}

/// Words of the bias list for a vocabulary of `n`: the number of entries, then
/// (token, f32 bits) for each distinct token.
pub fn bias_words(n: usize) -> usize {
    1 + 2 * n
}

/// The bias list's words for `entries` (distinct tokens).
pub fn bias_list(entries: &[(u32, f32)]) -> Vec<u32> {
    let mut words = Vec::with_capacity(1 + 2 * entries.len());
    words.push(entries.len() as u32);
    for &(t, b) in entries {
        words.extend([t, b.to_bits()]);
    }
    words
}

/// The buffers a draw reads and writes.
pub struct Args<'a> {
    /// `[rows, n]` logits; the drawn row gets the bias added in place.
    pub logits: &'a Binding,
    /// One [`Settings`].
    pub settings: &'a Binding,
    /// [`seen_words`]`(n)` words, updated with the drawn token.
    pub seen: &'a Binding,
    /// The drawn token (one word).
    pub out: &'a Binding,
    /// A bias list ([`bias_list`], at most [`bias_words`]`(n)` words).
    pub bias: &'a Binding,
}

/// `out[0]` = the token drawn from row `row` of `logits` for sequence position
/// `pos0 + ahead` (the uniform's counter and the end of the repetition window), which the
/// plan recomputes from the step's position each run.
pub fn record(rec: &mut Recorder, args: &Args, n: u32, row: u32, ahead: u32) {
    let pipeline = rec
        .ctx()
        .pipeline("sample", SOURCE, &Defines::new().uint("WG", WG));
    let params = move |v: &StepVars| Params {
        n,
        row,
        pos: v.pos0 + ahead,
        _pad0: 0,
    };
    let storage = [args.logits, args.settings, args.seen, args.out, args.bias].map(|b| b.clone());
    rec.dispatch_positioned("sample", &pipeline, params, &storage, [1, 1, 1]);
}

fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// The uniform in [0, 1) that the draw for sequence position `pos` under `seed` uses.
pub fn uniform(seed: u64, pos: u32) -> f32 {
    let h = pcg(pcg(pcg(seed as u32) ^ (seed >> 32) as u32) ^ pos);
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// An order-preserving u32 of a float.
fn key(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The shader's fixed-point weight exp(x − max)·2³¹ (0 below 2⁻³¹).
fn weight(x: f32, m: f32) -> u32 {
    if x - m < -22.0 {
        0
    } else {
        ((x - m).exp() * MASS_ONE) as u32
    }
}

/// A 64-bit count as the shader's float.
fn wide(v: u64) -> f32 {
    (v >> 32) as u32 as f32 * 4_294_967_296.0 + v as u32 as f32
}

/// A reference draw: the token, and whether a rounding-sized change of a weight (the GPU's
/// `exp` is not the host's) could move it across a threshold or a draw boundary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Draw {
    pub token: u32,
    pub near_tie: bool,
}

/// Relative distance within which a GPU may rightly decide a boundary the other way.
const TIE: f32 = 1e-5;

/// CPU reference of the shader: the token drawn from `logits` (one row) plus `bias`
/// (distinct tokens) for position `pos`, with `seen` as in [`seen_words`] (before the draw).
pub fn reference(
    logits: &[f32],
    bias: &[(u32, f32)],
    sp: &SamplingParams,
    seen: &[u32],
    pos: u32,
) -> Draw {
    let st = Settings::new(sp);
    let n = logits.len();
    let mut logits = logits.to_vec();
    for &(t, b) in bias {
        if let Some(l) = logits.get_mut(t as usize) {
            *l += b;
        }
    }
    let pen: Vec<f32> = (0..n)
        .map(|i| penalized(logits[i], &st, seen[i], seen[n + i], pos))
        .collect();
    if st.greedy != 0 {
        let mut best = 0;
        for (i, v) in pen.iter().enumerate() {
            if *v > pen[best] {
                best = i;
            }
        }
        return Draw {
            token: best as u32,
            near_tie: false,
        };
    }
    let x: Vec<f32> = pen
        .iter()
        .map(|l| {
            let x = l * st.inv_temperature;
            if x == 0.0 {
                0.0
            } else {
                x
            }
        })
        .collect();
    let (argmax, m) =
        x.iter().enumerate().fold(
            (0, -3.0e38f32),
            |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
        );
    let mut cut = 0;
    let mut near_tie = false;
    if st.top_k > 1 && (st.top_k as usize) < n {
        let mut keys: Vec<u32> = x.iter().map(|&v| key(v)).collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        let k = st.top_k as usize;
        cut = keys[k - 1];
        near_tie |= (1..=2).contains(&(keys[k - 1] - keys[k]));
    }
    if st.top_p < 1.0 {
        let (c, tie) = top_p_cut(&x, m, cut, st.top_p);
        cut = cut.max(c);
        near_tie |= tie;
    }
    let kept: Vec<f32> = x
        .iter()
        .map(|&v| {
            let e = (v - m).exp();
            near_tie |= sp.min_p > 0.0 && (e - st.min_p).abs() <= TIE * st.min_p;
            if key(v) >= cut && e >= st.min_p {
                e
            } else {
                0.0
            }
        })
        .collect();
    let (token, tie) = draw(&kept, uniform(sp.seed, pos), argmax);
    Draw {
        token,
        near_tie: near_tie || tie,
    }
}

/// The shader's penalized logit.
fn penalized(l: f32, st: &Settings, count: u32, last: u32, pos: u32) -> f32 {
    let mut l = l;
    if st.repeat_penalty != 1.0 && last != 0 && last <= pos && pos - last < st.repeat_last_n {
        l = if l < 0.0 {
            l * st.repeat_penalty
        } else {
            l * st.inv_repeat_penalty
        };
    }
    if (st.presence != 0.0 || st.frequency != 0.0) && count > 0 {
        l -= count as f32 * st.frequency + st.presence;
    }
    l
}

/// The top-p key threshold over the tokens with key ≥ `floor`: the largest key whose
/// tokens at or above it carry at least `top_p` of the fixed-point weight; and whether the
/// weight there is within rounding of the goal.
fn top_p_cut(x: &[f32], m: f32, floor: u32, top_p: f32) -> (u32, bool) {
    let mut w: Vec<(u32, u64)> = x
        .iter()
        .filter(|&&v| key(v) >= floor)
        .map(|&v| (key(v), weight(v, m) as u64))
        .collect();
    w.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
    let total = wide(w.iter().map(|e| e.1).sum());
    let goal = top_p * total;
    let mut acc = 0u64;
    let mut i = 0;
    while i < w.len() {
        let before = acc;
        let k = w[i].0;
        while i < w.len() && w[i].0 == k {
            acc += w[i].1;
            i += 1;
        }
        if wide(acc) >= goal {
            let tie = wide(acc) - goal <= TIE * total || goal - wide(before) <= TIE * total;
            return (k, tie);
        }
    }
    (w.last().map_or(0, |e| e.0), false)
}

/// The shader's inverse-CDF draw over `kept` weights at uniform `u`: per-thread sums in the
/// draw's order, the thread whose run holds u·total, then its tokens in order (`argmax` if
/// rounding left nothing to draw).
fn draw(kept: &[f32], u: f32, argmax: usize) -> (u32, bool) {
    let wg = WG as usize;
    let part: Vec<f32> = (0..wg)
        .map(|t| kept.iter().skip(t).step_by(wg).fold(0.0f32, |a, &e| a + e))
        .collect();
    let total = part.iter().fold(0.0f32, |a, &e| a + e);
    let r = u * total;
    let (mut acc, mut owner, mut last) = (0.0f32, None, 0);
    for (t, &s) in part.iter().enumerate() {
        if s > 0.0 {
            last = t;
            if owner.is_none() && acc + s > r {
                owner = Some((t, r - acc));
            }
        }
        acc += s;
    }
    let (t, r_local) = owner.unwrap_or((last, 3.0e38));
    let (mut acc, mut fallback) = (0.0f32, argmax);
    for i in (t..kept.len()).step_by(wg) {
        let e = kept[i];
        if e > 0.0 {
            let lo = acc;
            acc += e;
            fallback = i;
            if acc > r_local {
                let margin = (r_local - lo).min(acc - r_local);
                return (i as u32, margin <= TIE * total);
            }
        }
    }
    (fallback as u32, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::{context, poisoned, Rng};
    use crate::gpu::GpuContext;

    /// The last row of `rows` ([rows, n]) drawn on the GPU at position `pos` with `seen`;
    /// returns the token and `seen` after the draw.
    fn gpu_draw(
        ctx: &GpuContext,
        (rows, n): (&[f32], usize),
        bias: &[(u32, f32)],
        sp: &SamplingParams,
        seen: &[u32],
        pos: u32,
    ) -> (u32, Vec<u32>) {
        let logits = ctx.storage_with("logits", rows);
        let settings = ctx.storage_with("settings", &[Settings::new(sp)]);
        let seen_b = ctx.storage_with("seen", seen);
        let out = poisoned(ctx, 1);
        let bias_b = ctx.storage_with("bias", &bias_list(bias));
        let b = |x: &wgpu::Buffer| Binding::whole(x);
        let args = Args {
            logits: &b(&logits),
            settings: &b(&settings),
            seen: &b(&seen_b),
            out: &b(&out),
            bias: &b(&bias_b),
        };
        let mut rec = Recorder::at(ctx, StepVars { pos0: pos });
        record(&mut rec, &args, n as u32, (rows.len() / n - 1) as u32, 0);
        rec.submit();
        let token = ctx.read_u32(&out, 0, 1).unwrap()[0];
        (token, ctx.read_u32(&seen_b, 0, seen.len()).unwrap())
    }

    fn sampling(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            ..SamplingParams::default()
        }
    }

    /// Temperature 0 and top-k 1 are the argmax of the row, lowest index on ties.
    #[test]
    fn greedy_is_the_argmax() {
        let Some(ctx) = context() else { return };
        for n in [1usize, 7, 300, 65536] {
            let mut x = Rng::new(n as u64).normals(2 * n, 1.0);
            if n > 8 {
                x[n + 5] = 50.0;
                x[n + n - 1] = 50.0; // tie: the lower index wins
            }
            let row = &x[n..];
            let want = (0..n).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32;
            for sp in [SamplingParams::greedy(), sampling(1.0, 1, 1.0, 0.0)] {
                let seen = vec![0; seen_words(n)];
                let (got, _) = gpu_draw(ctx, (&x, n), &[], &sp, &seen, 3);
                assert_eq!(got, want, "n={n} {sp:?}");
                assert_eq!(reference(row, &[], &sp, &seen, 3).token, want);
            }
        }
    }

    /// The GPU draws the reference's token for many seeds and parameter sets, on the
    /// candidates and (where one thread holds more leaders than candidates) on the whole row;
    /// a draw within rounding of a boundary may go either way, and such draws must stay rare.
    #[test]
    fn draws_match_the_reference() {
        let Some(ctx) = context() else { return };
        let (mut cases, mut ties) = (0, 0);
        for n in [5usize, 300, 4099, 65536] {
            let sets = [
                sampling(1.0, 0, 1.0, 0.0),
                sampling(0.7, 40, 1.0, 0.0),
                sampling(1.3, 0, 0.9, 0.0),
                sampling(1.0, 0, 1.0, 0.05),
                sampling(0.8, 50, 0.95, 0.02),
                sampling(1.0, n - 1, 0.5, 0.0),
                sampling(2.0, 0, 0.01, 0.0),
            ];
            let seeds = if n == 65536 { 2 } else { 6 };
            for (si, set) in sets.iter().enumerate() {
                for seed in 0..seeds {
                    let mut rng = Rng::new((n * 131 + si * 17 + seed) as u64);
                    let mut x = rng.normals(2 * n, 2.0);
                    if seed % 3 == 2 {
                        // Ties.
                        x.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0);
                    }
                    if seed % 3 == 1 && n > 6 * WG as usize {
                        // Six leaders in one thread's tokens: more than its candidates.
                        for j in 0..6 {
                            x[n + 7 + j * WG as usize] = 8.0 + j as f32 * 0.1;
                        }
                    }
                    let sp = SamplingParams {
                        seed: rng.next_u64(),
                        ..*set
                    };
                    let pos = rng.below(1000);
                    let seen = vec![0; seen_words(n)];
                    let want = reference(&x[n..], &[], &sp, &seen, pos);
                    let (got, _) = gpu_draw(ctx, (&x, n), &[], &sp, &seen, pos);
                    cases += 1;
                    ties += want.near_tie as usize;
                    assert!(
                        got == want.token || want.near_tie,
                        "n={n} {sp:?} pos {pos}: GPU {got}, reference {want:?}"
                    );
                }
            }
        }
        assert!(ties * 20 <= cases, "{ties} near ties in {cases} draws");
    }

    /// A logit bias moves the draw as the reference says: +100 forces a token, -100 bans
    /// the argmax, and random biases on a few hundred tokens agree under every filter.
    #[test]
    fn bias_applies_before_the_filters() {
        let Some(ctx) = context() else { return };
        let n = 4099;
        let x = Rng::new(77).normals(n, 2.0);
        let seen = vec![0; seen_words(n)];
        let argmax = (0..n).fold(0, |b, i| if x[i] > x[b] { i } else { b }) as u32;
        let greedy = SamplingParams::greedy();
        assert_eq!(
            gpu_draw(ctx, (&x, n), &[(17, 100.0)], &greedy, &seen, 3).0,
            17
        );
        let banned = gpu_draw(ctx, (&x, n), &[(argmax, -100.0)], &greedy, &seen, 3).0;
        assert_ne!(banned, argmax);
        assert_eq!(
            reference(&x, &[(argmax, -100.0)], &greedy, &seen, 3).token,
            banned
        );
        let (mut cases, mut ties) = (0, 0);
        for seed in 0..12u64 {
            let mut rng = Rng::new(seed + 900);
            let mut bias: Vec<(u32, f32)> = (0..300)
                .map(|_| (rng.below(n as u32), rng.normals(1, 3.0)[0]))
                .collect();
            bias.sort_by_key(|e| e.0);
            bias.dedup_by_key(|e| e.0);
            for sp in [
                sampling(1.0, 0, 1.0, 0.0),
                sampling(0.7, 40, 0.9, 0.0),
                sampling(1.0, 0, 1.0, 0.05),
                greedy,
            ] {
                let sp = SamplingParams { seed, ..sp };
                let want = reference(&x, &bias, &sp, &seen, 11);
                let (got, _) = gpu_draw(ctx, (&x, n), &bias, &sp, &seen, 11);
                cases += 1;
                ties += want.near_tie as usize;
                assert!(
                    got == want.token || want.near_tie,
                    "{sp:?}: {got} vs {want:?}"
                );
            }
        }
        assert!(ties * 10 <= cases, "{ties} near ties in {cases} draws");
    }

    /// The same seed and position draw the same token; other seeds draw others.
    #[test]
    fn seeded_draws_repeat() {
        let Some(ctx) = context() else { return };
        let n = 300;
        let x = Rng::new(5).normals(n, 1.0);
        let seen = vec![0; seen_words(n)];
        let mut tokens = Vec::new();
        for seed in 0..16u64 {
            let sp = SamplingParams {
                seed: seed << 40 | seed,
                ..sampling(1.0, 0, 1.0, 0.0)
            };
            let (a, _) = gpu_draw(ctx, (&x, n), &[], &sp, &seen, 9);
            let (b, _) = gpu_draw(ctx, (&x, n), &[], &sp, &seen, 9);
            assert_eq!(a, b, "seed {seed}");
            tokens.push(a);
        }
        tokens.sort();
        tokens.dedup();
        assert!(tokens.len() >= 8, "16 seeds drew only {tokens:?}");
    }

    /// Each penalty moves the greedy choice as its definition says, and the draw is recorded
    /// in `seen`.
    #[test]
    fn penalties_change_what_they_should() {
        let Some(ctx) = context() else { return };
        let n = 16;
        let pos = 20;
        let greedy = |f: &dyn Fn(&mut SamplingParams)| {
            let mut sp = SamplingParams::greedy();
            f(&mut sp);
            sp
        };
        let mut x = vec![-1.0f32; n];
        x[3] = 2.0;
        x[5] = 1.9;
        let negative: Vec<f32> = x.iter().map(|v| v - 2.5).collect();
        // (logits, params, count of token 3, its last position + 1, expected token)
        let cases: [(&[f32], SamplingParams, u32, u32, u32); 9] = [
            (&x, greedy(&|_| {}), 1, pos, 3),
            (&x, greedy(&|s| s.repeat_penalty = 1.3), 0, pos, 5),
            (
                &x,
                greedy(&|s| {
                    s.repeat_penalty = 1.3;
                    s.repeat_last_n = Some(4)
                }),
                0,
                pos - 10,
                3,
            ),
            (
                &x,
                greedy(&|s| {
                    s.repeat_penalty = 1.3;
                    s.repeat_last_n = None
                }),
                0,
                pos - 10,
                5,
            ),
            (&negative, greedy(&|s| s.repeat_penalty = 1.3), 0, pos, 5),
            (&x, greedy(&|s| s.presence_penalty = 0.2), 1, 0, 5),
            (&x, greedy(&|s| s.frequency_penalty = 0.06), 1, 0, 3),
            (&x, greedy(&|s| s.frequency_penalty = 0.06), 2, 0, 5),
            (&x, greedy(&|s| s.presence_penalty = 0.2), 0, pos, 3),
        ];
        for (logits, sp, count, last, want) in cases {
            let mut seen = vec![0; seen_words(n)];
            seen[3] = count;
            seen[n + 3] = last;
            let (got, after) = gpu_draw(ctx, (logits, n), &[], &sp, &seen, pos);
            assert_eq!(got, want, "{sp:?} count {count} last {last}");
            assert_eq!(reference(logits, &[], &sp, &seen, pos).token, want);
            let w = want as usize;
            assert_eq!(after[w], seen[w] + 1);
            assert_eq!(after[n + w], pos + 1);
        }
    }

    /// Under every penalty at once, sampling, the GPU agrees with the reference on random
    /// logits and histories.
    #[test]
    fn penalties_match_the_reference() {
        let Some(ctx) = context() else { return };
        let pos = 20;
        for seed in 0..24u64 {
            let n = 1000;
            let mut rng = Rng::new(seed + 100);
            let x = rng.normals(n, 2.0);
            let mut seen = vec![0; seen_words(n)];
            for _ in 0..200 {
                let t = rng.below(n as u32) as usize;
                seen[t] += rng.below(3);
                seen[n + t] = 1 + rng.below(pos);
            }
            let sp = SamplingParams {
                repeat_penalty: 1.5,
                repeat_last_n: Some(8),
                presence_penalty: 0.5,
                frequency_penalty: 0.25,
                seed,
                ..sampling(0.9, 64, 0.95, 0.01)
            };
            let want = reference(&x, &[], &sp, &seen, pos);
            let (got, _) = gpu_draw(ctx, (&x, n), &[], &sp, &seen, pos);
            assert!(
                got == want.token || want.near_tie,
                "seed {seed}: {got} vs {want:?}"
            );
        }
    }

    #[test]
    fn invalid_values_are_clear_errors() {
        let base = SamplingParams::greedy();
        for (sp, needle) in [
            (sampling(-1.0, 0, 1.0, 0.0), "temperature"),
            (sampling(f32::NAN, 0, 1.0, 0.0), "temperature"),
            (sampling(1.0, 0, 0.0, 0.0), "top-p"),
            (sampling(1.0, 0, 1.5, 0.0), "top-p"),
            (sampling(1.0, 0, f32::NAN, 0.0), "top-p"),
            (sampling(1.0, 0, 1.0, 2.0), "min-p"),
            (
                SamplingParams {
                    repeat_penalty: 0.0,
                    ..base
                },
                "repeat penalty",
            ),
            (
                SamplingParams {
                    presence_penalty: f32::INFINITY,
                    ..base
                },
                "presence penalty",
            ),
        ] {
            let e = sp.check().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        assert!(sampling(0.7, 40, 0.9, 0.05).check().is_ok());
    }
}
