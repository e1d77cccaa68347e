//! What one generation is asked for ([`GenerateOptions`]): its length, sampling, the sparse
//! logit bias, and the DRY penalty and loop guard that keep it from repeating.

use std::collections::BTreeMap;

use super::dry::DryPenalty;
use super::loop_guard::LoopGuard;
use crate::error::{Error, Result};
use crate::kernels::sample::SamplingParams;

/// Options of [`super::Session::generate_stream_with`].
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Keep generating past an end-of-sequence token.
    pub ignore_eos: bool,
    pub sampling: SamplingParams,
    /// Added to the logits of these tokens before any other filter (OpenAI `logit_bias`; a
    /// token given twice gets the sum).
    pub logit_bias: Vec<(u32, f32)>,
    /// DRY n-gram penalty (off when `None`). With it on, each token is read back before the
    /// next step is submitted (the penalty depends on it), so the GPU waits for the host
    /// once per token.
    pub dry: Option<DryPenalty>,
    /// Ends the generation with [`super::FinishReason::Repetition`] when it is stuck in a
    /// cycle (off when `None`).
    pub loop_guard: Option<LoopGuard>,
}

impl Default for GenerateOptions {
    /// 256 tokens, greedy, stopping at EOS; no bias, no DRY, no loop guard.
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            ignore_eos: false,
            sampling: SamplingParams::greedy(),
            logit_bias: Vec::new(),
            dry: None,
            loop_guard: None,
        }
    }
}

impl GenerateOptions {
    /// Rejects values with no meaning for a vocabulary of `vocab`.
    pub(crate) fn check(&self, vocab: usize) -> Result<()> {
        self.sampling.check()?;
        if let Some(g) = &self.loop_guard {
            g.check()?;
        }
        for &(t, b) in &self.logit_bias {
            if t as usize >= vocab {
                return Err(Error::Input(format!(
                    "logit bias for token {t}, outside the vocabulary (size {vocab})"
                )));
            }
            if !b.is_finite() {
                return Err(Error::Input(format!(
                    "logit bias for token {t} must be a finite number, got {b}"
                )));
            }
        }
        Ok(())
    }

    /// The logit bias for the token after `history` (the sequence so far): `logit_bias` and
    /// the DRY penalties, summed per token.
    pub(crate) fn bias_after(&self, history: &[u32]) -> Vec<(u32, f32)> {
        let dry = self.dry.as_ref().map(|d| d.penalties(history));
        merge(self.logit_bias.iter().chain(dry.iter().flatten()))
    }
}

/// Entries summed per token, in token order.
fn merge<'a>(entries: impl Iterator<Item = &'a (u32, f32)>) -> Vec<(u32, f32)> {
    let mut sum = BTreeMap::<u32, f32>::new();
    for &(t, b) in entries {
        *sum.entry(t).or_default() += b;
    }
    sum.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::dry::DryParams;

    #[test]
    fn bias_sums_logit_bias_and_dry_per_token() {
        let dry = DryParams {
            multiplier: 1.0,
            base: 2.0,
            ..DryParams::default()
        };
        let opts = GenerateOptions {
            logit_bias: vec![(4, 0.5), (9, 2.0), (4, 1.0)],
            dry: Some(DryPenalty::new(dry, None, 16).unwrap()),
            ..GenerateOptions::default()
        };
        assert_eq!(
            opts.bias_after(&[1, 2, 3, 4, 9, 1, 2, 3]),
            vec![(4, -0.5), (9, 2.0)]
        );
        assert_eq!(opts.bias_after(&[7]), vec![(4, 1.5), (9, 2.0)]);
        let bad = GenerateOptions {
            logit_bias: vec![(16, 1.0)],
            ..GenerateOptions::default()
        };
        assert!(bad
            .check(16)
            .unwrap_err()
            .to_string()
            .contains("vocabulary"));
        let nan = GenerateOptions {
            logit_bias: vec![(1, f32::NAN)],
            ..GenerateOptions::default()
        };
        assert!(nan.check(16).unwrap_err().to_string().contains("finite"));
    }
}

#[cfg(test)]
mod gpu_tests {
    use super::*;
    use crate::gpu::testing::context;
    use crate::kernels::sample::{reference, seen_words};
    use crate::runtime::dry::DryParams;
    use crate::runtime::{FinishReason, Flow, LogitsMode, Model, Session, SessionOptions};

    /// A generation of `opts` after `prompt`: its tokens and why it ended.
    fn run(s: &mut Session, prompt: &[u32], opts: &GenerateOptions) -> (Vec<u32>, FinishReason) {
        let mut out = Vec::new();
        let reason = s
            .generate_stream_with(prompt, opts, &mut |t| {
                out.push(t);
                Flow::Continue
            })
            .unwrap();
        (out, reason)
    }

    /// A logit bias of +100 makes greedy generation repeat its token; the loop guard ends
    /// that with `Repetition` at the token that completes the repeats, the last token fed.
    #[test]
    fn logit_bias_forces_a_token_and_the_loop_guard_ends_the_loop() {
        let Some(ctx) = context() else { return };
        let model = Model::load_bundled(ctx, None, false).unwrap();
        let mut s = Session::new(ctx, &model, SessionOptions::default()).unwrap();
        let prompt = [1u32, 50, 60];
        let forced = GenerateOptions {
            max_tokens: 12,
            ignore_eos: true,
            logit_bias: vec![(300, 100.0)],
            ..GenerateOptions::default()
        };
        let (out, reason) = run(&mut s, &prompt, &forced);
        assert_eq!((out, reason), (vec![300; 12], FinishReason::Length));
        s.reset();
        let guarded = GenerateOptions {
            loop_guard: Some(crate::runtime::LoopGuard {
                max_period: 4,
                min_repeats: 5,
                min_tokens: 100,
            }),
            ..forced.clone()
        };
        let (out, reason) = run(&mut s, &prompt, &guarded);
        assert_eq!((out, reason), (vec![300; 5], FinishReason::Repetition));
        assert_eq!(s.history().len(), prompt.len() + 5);
        // Without a bias the same session generates what a fresh one does.
        s.reset();
        let plain = GenerateOptions {
            max_tokens: 6,
            ignore_eos: true,
            ..GenerateOptions::default()
        };
        let a = run(&mut s, &prompt, &plain).0;
        assert_ne!(a, vec![300; 6]);
        let mut fresh = Session::new(ctx, &model, SessionOptions::default()).unwrap();
        assert_eq!(run(&mut fresh, &prompt, &plain).0, a);
    }

    /// With DRY, each greedy token is the reference's draw from the decode logits with the
    /// DRY penalties of the sequence so far, and some step is penalized.
    #[test]
    fn dry_generation_matches_a_host_loop_of_the_reference() {
        let Some(ctx) = context() else { return };
        let model = Model::load_bundled(ctx, None, false).unwrap();
        let n = model.config.vocab;
        let params = DryParams {
            multiplier: 2.0,
            allowed_length: 1,
            ..DryParams::default()
        };
        let dry = DryPenalty::new(params, model.tokenizer.as_ref(), n).unwrap();
        let opts = GenerateOptions {
            max_tokens: 24,
            ignore_eos: true,
            dry: Some(dry),
            ..GenerateOptions::default()
        };
        // A prompt that repeats itself, so the penalties start at once.
        let prompt = [1u32, 40, 41, 42, 43, 40, 41, 42];
        let mut s = Session::new(ctx, &model, SessionOptions::default()).unwrap();
        let (got, _) = run(&mut s, &prompt, &opts);
        s.reset();
        let mut history = prompt.to_vec();
        let mut logits = s.prefill(&prompt, LogitsMode::Last).unwrap();
        let seen = vec![0; seen_words(n)];
        let mut penalized = 0;
        for (i, &g) in got.iter().enumerate() {
            let bias = opts.bias_after(&history);
            penalized += !bias.is_empty() as usize;
            let want = reference(&logits, &bias, &opts.sampling, &seen, history.len() as u32);
            assert_eq!(g, want.token, "token {i} of {got:?}");
            history.push(g);
            logits = s.decode(g).unwrap();
        }
        assert!(penalized > 0, "DRY never applied: the test proves nothing");
    }
}
