//! A session's sampler state on the GPU (the settings the `sample` kernel reads, the drawn
//! counts and last positions behind the penalties) and the sampling defaults a checkpoint's
//! `generation_config.json` gives.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels::sample::{self, SamplingParams, Settings};

/// What the `sample` kernel of a session's steps reads and writes.
pub(crate) struct Sampler {
    /// One [`Settings`], written when a call samples differently from the last.
    pub settings: wgpu::Buffer,
    /// Drawn counts and last positions ([`sample::seen_words`]).
    pub seen: wgpu::Buffer,
    /// The logit bias list ([`sample::bias_list`]).
    pub bias: wgpu::Buffer,
    current: SamplingParams,
    /// Entries in the bias list now.
    bias_entries: usize,
    vocab: usize,
}

impl Sampler {
    /// A greedy sampler over a vocabulary of `vocab`.
    pub fn new(ctx: &GpuContext, vocab: usize) -> Self {
        let current = SamplingParams::greedy();
        Sampler {
            settings: ctx.storage_with("sampler settings", &[Settings::new(&current)]),
            seen: ctx.storage(
                "sampler counts and positions",
                4 * sample::seen_words(vocab) as u64,
            ),
            // Zeroed at creation: no entries.
            bias: ctx.storage("sampler logit bias", 4 * sample::bias_words(vocab) as u64),
            current,
            bias_entries: 0,
            vocab,
        }
    }

    /// Sets the logit bias of the next draws to `entries` (distinct tokens in the
    /// vocabulary); queue-ordered before the next step.
    pub fn set_bias(&mut self, ctx: &GpuContext, entries: &[(u32, f32)]) {
        if entries.is_empty() && self.bias_entries == 0 {
            return;
        }
        ctx.write(
            &self.bias,
            0,
            bytemuck::cast_slice(&sample::bias_list(entries)),
        );
        self.bias_entries = entries.len();
    }

    /// Readies the GPU state for draws with `sp` after `upcoming` joins the sequence that
    /// holds `history` (its tokens by position): the settings where they changed, the counts
    /// zeroed for a new generation's presence and frequency penalties, and each token's last
    /// position where repeats are penalized; no logit bias. Queue-ordered before the next step.
    pub fn prepare(
        &mut self,
        ctx: &GpuContext,
        sp: &SamplingParams,
        history: &[u32],
        upcoming: &[u32],
    ) {
        if *sp != self.current {
            ctx.write(&self.settings, 0, bytemuck::bytes_of(&Settings::new(sp)));
            self.current = *sp;
        }
        self.set_bias(ctx, &[]);
        if sp.penalizes_counts() {
            ctx.write(&self.seen, 0, &vec![0u8; 4 * self.vocab]);
        }
        if sp.penalizes_repeats() {
            let mut last = vec![0u32; self.vocab];
            for (p, &t) in history.iter().chain(upcoming).enumerate() {
                last[t as usize] = p as u32 + 1;
            }
            ctx.write(
                &self.seen,
                4 * self.vocab as u64,
                bytemuck::cast_slice(&last),
            );
        }
    }
}

/// Sampling defaults from a checkpoint's `generation_config.json` (`path` names it in
/// errors), read as transformers reads them: greedy unless `do_sample` is true, then
/// `temperature` (default 1), `top_k` (default 50), `top_p` (default 1) and `min_p` (default
/// off); `repetition_penalty` (default 1) applies either way, over the whole sequence.
pub(crate) fn generation_defaults(v: &Value, path: &Path) -> Result<SamplingParams> {
    let err = |msg: String| Error::file(path, msg);
    let number = |key: &str, default: f64| -> Result<f64> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x
                .as_f64()
                .ok_or_else(|| err(format!("{key} must be a number, got {x}"))),
        }
    };
    let do_sample = match v.get("do_sample") {
        None | Some(Value::Null) => false,
        Some(x) => x
            .as_bool()
            .ok_or_else(|| err(format!("do_sample must be true or false, got {x}")))?,
    };
    let top_k = number("top_k", 50.0)?;
    if top_k < 0.0 || top_k.fract() != 0.0 {
        return Err(err(format!(
            "top_k must be a whole number ≥ 0, got {top_k}"
        )));
    }
    let sp = SamplingParams {
        temperature: if do_sample {
            number("temperature", 1.0)? as f32
        } else {
            0.0
        },
        top_k: if do_sample { top_k as usize } else { 0 },
        top_p: number("top_p", 1.0)? as f32,
        min_p: number("min_p", 0.0)? as f32,
        repeat_penalty: number("repetition_penalty", 1.0)? as f32,
        repeat_last_n: None,
        ..SamplingParams::greedy()
    };
    sp.check().map_err(|e| match e {
        Error::Input(msg) => err(msg),
        other => other,
    })?;
    Ok(sp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generation_config_defaults_follow_transformers() {
        let p = Path::new("generation_config.json");
        let ids = json!({"bos_token_id": 1, "eos_token_id": 7});
        assert_eq!(
            generation_defaults(&ids, p).unwrap(),
            SamplingParams {
                repeat_last_n: None,
                ..SamplingParams::greedy()
            }
        );
        let greedy = json!({"do_sample": false, "temperature": 0.3, "repetition_penalty": 1.05});
        let g = generation_defaults(&greedy, p).unwrap();
        assert!(g.is_greedy() && g.repeat_penalty == 1.05 && g.repeat_last_n.is_none());
        let lfm = json!({"do_sample": true, "temperature": 0.3, "min_p": 0.15, "repetition_penalty": 1.05});
        let s = generation_defaults(&lfm, p).unwrap();
        assert_eq!(
            (s.temperature, s.top_k, s.top_p, s.min_p),
            (0.3, 50, 1.0, 0.15)
        );
        for (bad, needle) in [
            (
                json!({"do_sample": true, "temperature": -1.0}),
                "temperature",
            ),
            (json!({"top_p": "high"}), "top_p must be a number"),
            (json!({"do_sample": "yes"}), "do_sample"),
            (json!({"do_sample": true, "top_k": 2.5}), "top_k"),
            (json!({"top_p": 0.0}), "top-p"),
        ] {
            let e = generation_defaults(&bad, Path::new("x/generation_config.json")).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(needle) && msg.contains("x/generation_config.json"),
                "{msg}"
            );
        }
    }

    use crate::gpu::testing::context;
    use crate::gpu::{Binding, Recorder};
    use crate::kernels::sample::{bias_list, record, reference, seen_words, Args};
    use crate::runtime::{LogitsMode, Model, Session, SessionOptions};

    /// `count` draws on the GPU from one logits row with `sp`, at positions 0..count (one
    /// dispatch each, in one submission).
    fn gpu_draws(ctx: &GpuContext, logits: &[f32], sp: &SamplingParams, count: usize) -> Vec<u32> {
        let n = logits.len();
        let lb = ctx.storage_with("logits", logits);
        let sb = ctx.storage_with("settings", &[Settings::new(sp)]);
        let seen = ctx.storage("seen", 4 * seen_words(n) as u64);
        let bias = ctx.storage_with("bias", &bias_list(&[]));
        let stride = ctx.limits.min_storage_buffer_offset_alignment.max(4) as u64;
        let out = ctx.storage("draws", stride * count as u64);
        let (lb, sb, seen, bias) = (
            Binding::whole(&lb),
            Binding::whole(&sb),
            Binding::whole(&seen),
            Binding::whole(&bias),
        );
        let mut rec = Recorder::new(ctx);
        for j in 0..count {
            let slot = Binding {
                buffer: out.clone(),
                offset: j as u64 * stride,
                size: Some(4),
            };
            let args = Args {
                logits: &lb,
                settings: &sb,
                seen: &seen,
                out: &slot,
                bias: &bias,
            };
            record(&mut rec, &args, n as u32, 0, j as u32);
        }
        rec.submit();
        let words = ctx.read_u32(&out, 0, count * stride as usize / 4).unwrap();
        words.iter().step_by(stride as usize / 4).copied().collect()
    }

    /// Transformers' filtered, renormalised probabilities (in f64, by sorting).
    fn filtered_probs(logits: &[f32], sp: &SamplingParams) -> Vec<f64> {
        let x: Vec<f64> = logits
            .iter()
            .map(|&l| l as f64 / sp.temperature as f64)
            .collect();
        let m = x.iter().cloned().fold(f64::MIN, f64::max);
        let mut e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
        let mut order: Vec<usize> = (0..x.len()).collect();
        order.sort_by(|&a, &b| x[b].total_cmp(&x[a]));
        if sp.top_k > 1 && sp.top_k < x.len() {
            let kth = x[order[sp.top_k - 1]];
            (0..x.len())
                .filter(|&i| x[i] < kth)
                .for_each(|i| e[i] = 0.0);
        }
        if sp.top_p < 1.0 {
            let total: f64 = e.iter().sum();
            let mut acc = 0.0;
            for &i in &order {
                if acc >= sp.top_p as f64 * total {
                    e[i] = 0.0;
                }
                acc += e[i];
            }
        }
        e.iter_mut()
            .filter(|v| **v < sp.min_p as f64)
            .for_each(|v| *v = 0.0);
        let total: f64 = e.iter().sum();
        e.iter().map(|v| v / total).collect()
    }

    /// Pearson's chi-square of `draws` against `probs`, tokens expected fewer than 5 times
    /// pooled into one bin; returns (statistic, degrees of freedom). A draw of a token
    /// of probability 0 fails.
    fn chi_square(draws: &[u32], probs: &[f64]) -> (f64, usize) {
        let mut seen = vec![0usize; probs.len()];
        for &t in draws {
            assert!(
                probs[t as usize] > 0.0,
                "drew token {t}, which the filters remove"
            );
            seen[t as usize] += 1;
        }
        let n = draws.len() as f64;
        let (mut chi, mut bins, mut pool_e, mut pool_o) = (0.0, 0, 0.0, 0.0);
        for (p, o) in probs.iter().zip(&seen) {
            if p * n >= 5.0 {
                chi += (*o as f64 - p * n).powi(2) / (p * n);
                bins += 1;
            } else {
                pool_e += p * n;
                pool_o += *o as f64;
            }
        }
        if pool_e > 0.0 {
            chi += (pool_o - pool_e).powi(2) / pool_e;
            bins += 1;
        }
        (chi, bins - 1)
    }

    /// At one position of the random tiny model, 10,000 GPU draws (positions 0..10,000 as the
    /// RNG counter) at temperature 1, then with top-k, top-p and min-p, fit the filtered,
    /// renormalised softmax (chi-square, p > 0.001; the seeds are fixed, so the test is
    /// deterministic).
    #[test]
    fn draws_follow_the_filtered_softmax() {
        let Some(ctx) = context() else { return };
        let model = tiny(ctx);
        let opts = SessionOptions {
            max_context: 64,
            ..SessionOptions::default()
        };
        let mut s = Session::new(ctx, &model, opts).unwrap();
        // A text position whose top token has probability 0.26 (136 tokens expected ≥ 5 times).
        let prompt = [
            1, 331, 409, 425, 300, 466, 91, 280, 458, 485, 93, 96, 277, 99, 279, 275, 285, 78,
        ];
        let logits = s.prefill(&prompt, LogitsMode::Last).unwrap();
        let t1 = |f: &dyn Fn(&mut SamplingParams)| {
            let mut sp = SamplingParams {
                temperature: 1.0,
                seed: 1234,
                ..SamplingParams::greedy()
            };
            f(&mut sp);
            sp
        };
        for sp in [
            t1(&|_| {}),
            t1(&|s| s.top_k = 20),
            t1(&|s| s.top_p = 0.8),
            t1(&|s| s.min_p = 0.05),
            t1(&|s| {
                (s.temperature, s.top_k, s.top_p, s.min_p) = (1.5, 100, 0.9, 0.01);
            }),
        ] {
            let probs = filtered_probs(&logits, &sp);
            let draws = gpu_draws(ctx, &logits, &sp, 10_000);
            let (chi, df) = chi_square(&draws, &probs);
            // Wilson–Hilferty: the chi-square quantile at 1 − 0.001.
            let d = df as f64;
            let crit = d * (1.0 - 2.0 / (9.0 * d) + 3.090 * (2.0 / (9.0 * d)).sqrt()).powi(3);
            let support = probs.iter().filter(|p| **p > 0.0).count();
            eprintln!(
                "T {} top-k {} top-p {} min-p {}: {support} tokens kept, chi2 {chi:.1} on {df} df (critical {crit:.1})",
                sp.temperature, sp.top_k, sp.top_p, sp.min_p
            );
            assert!(chi < crit, "{sp:?}: chi2 {chi} on {df} df ≥ {crit}");
        }
    }

    /// The random-weight fixture `assets/models/tiny-moe` (the prompts below are its token ids).
    fn tiny(ctx: &GpuContext) -> Model {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/tiny-moe");
        Model::load(ctx, &dir, false).unwrap()
    }

    /// `generate_with` draws what the reference draws from `prefill` / `decode` logits with
    /// the same history: penalties over the prompt and the generated tokens, the RNG
    /// counter at each position.
    #[test]
    fn generation_matches_a_host_loop_of_the_reference() {
        let Some(ctx) = context() else { return };
        let model = tiny(ctx);
        let prompt = [1u32, 20, 30, 40, 300, 300];
        let sets = [
            SamplingParams {
                temperature: 1.2,
                top_k: 40,
                top_p: 0.9,
                repeat_penalty: 1.3,
                repeat_last_n: Some(6),
                presence_penalty: 0.4,
                frequency_penalty: 0.2,
                seed: 11,
                ..SamplingParams::greedy()
            },
            SamplingParams {
                repeat_penalty: 1.5,
                repeat_last_n: None,
                presence_penalty: 0.3,
                ..SamplingParams::greedy()
            },
        ];
        for sp in sets {
            let mut s = Session::new(ctx, &model, SessionOptions::default()).unwrap();
            let got = s.generate_with(&prompt, 10, true, &sp).unwrap();
            s.reset();
            let n = model.config.vocab;
            let mut seen = vec![0u32; seen_words(n)];
            for (p, &t) in prompt.iter().enumerate() {
                seen[n + t as usize] = p as u32 + 1;
            }
            let mut logits = s.prefill(&prompt, LogitsMode::Last).unwrap();
            for (i, &g) in got.iter().enumerate() {
                let pos = (prompt.len() + i) as u32;
                let want = reference(&logits, &[], &sp, &seen, pos);
                if want.near_tie {
                    break; // the trajectories may rightly part here
                }
                assert_eq!(g, want.token, "{sp:?}: token {i} of {got:?}");
                seen[g as usize] += 1;
                seen[n + g as usize] = pos + 1;
                logits = s.decode(g).unwrap();
            }
        }
    }

    /// A seed repeats its tokens exactly, other seeds draw others, and greedy generation
    /// after a sampled one is greedy again; bad values are errors.
    #[test]
    fn seeded_generation_repeats() {
        let Some(ctx) = context() else { return };
        let model = tiny(ctx);
        let mut s = Session::new(ctx, &model, SessionOptions::default()).unwrap();
        let prompt = [1u32, 50, 60];
        let greedy = s.generate(&prompt, 16, true).unwrap();
        let with = |s: &mut Session, seed| {
            s.reset();
            let sp = SamplingParams {
                temperature: 1.5,
                seed,
                ..SamplingParams::greedy()
            };
            s.generate_with(&prompt, 16, true, &sp).unwrap()
        };
        let a = with(&mut s, 3);
        assert_eq!(with(&mut s, 3), a);
        assert!((4..8).any(|seed| with(&mut s, seed) != a), "{a:?}");
        s.reset();
        assert_eq!(s.generate(&prompt, 16, true).unwrap(), greedy);
        let bad = SamplingParams {
            top_p: 0.0,
            ..SamplingParams::greedy()
        };
        let e = s.generate_with(&prompt, 4, true, &bad).unwrap_err();
        assert!(e.to_string().contains("top-p"), "{e}");
    }
}
