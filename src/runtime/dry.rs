//! DRY ("don't repeat yourself") n-gram repetition penalty, as text-generation-webui and
//! llama.cpp define it: where the sequence's last tokens repeat an earlier stretch, the token
//! that followed that stretch is penalized by `multiplier · base^(length − allowed_length)`
//! for a repeated stretch of `length ≥ allowed_length` tokens; sequence-breaker tokens end a
//! stretch. Computed on the host from the token history as a sparse logit bias that the GPU
//! sampler adds before its other filters.

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// A repeated stretch is counted up to this many tokens (keeps the exponent finite).
const MAX_MATCH: usize = 50;

/// DRY settings (llama.cpp's `--dry-*` flags).
#[derive(Clone, Debug, PartialEq)]
pub struct DryParams {
    /// Scale of the penalty; 0 is off.
    pub multiplier: f32,
    /// Growth of the penalty per token of repetition beyond `allowed_length`.
    pub base: f32,
    /// Repeated stretches shorter than this are not penalized.
    pub allowed_length: usize,
    /// How many of the last tokens are searched; `None`: the whole sequence.
    pub penalty_last_n: Option<usize>,
    /// A token whose text contains one of these ends a repeated stretch.
    pub sequence_breakers: Vec<String>,
}

impl Default for DryParams {
    /// llama.cpp's recommended values: multiplier 0.8, base 1.75, allowed length 2, the
    /// whole sequence, breakers newline, `:`, `"` and `*`.
    fn default() -> Self {
        DryParams {
            multiplier: 0.8,
            base: 1.75,
            allowed_length: 2,
            penalty_last_n: None,
            sequence_breakers: ["\n", ":", "\"", "*"].map(String::from).to_vec(),
        }
    }
}

impl DryParams {
    /// Rejects values with no meaning.
    pub fn check(&self) -> Result<()> {
        if !(self.multiplier.is_finite() && self.multiplier >= 0.0) {
            return Err(Error::Input(format!(
                "DRY multiplier must be a finite number ≥ 0 (0 is off), got {}",
                self.multiplier
            )));
        }
        if !(self.base.is_finite() && self.base >= 1.0) {
            return Err(Error::Input(format!(
                "DRY base must be a finite number ≥ 1, got {}",
                self.base
            )));
        }
        if self.allowed_length == 0 {
            return Err(Error::Input("DRY allowed length must be at least 1".into()));
        }
        Ok(())
    }
}

/// DRY settings with their breakers resolved to token ids.
#[derive(Clone, Debug)]
pub struct DryPenalty {
    params: DryParams,
    /// Whether each token of the vocabulary is a sequence breaker.
    breaker: Vec<bool>,
}

impl DryPenalty {
    /// `params` over a vocabulary of `vocab`, a token being a breaker where its text (from
    /// `tokenizer`; without one no token is) contains a breaker string.
    pub fn new(params: DryParams, tokenizer: Option<&Tokenizer>, vocab: usize) -> Result<Self> {
        params.check()?;
        let breaks = |id: u32| -> bool {
            let Some(tok) = tokenizer else { return false };
            let text = tok.decode(&[id], false).unwrap_or_default();
            params
                .sequence_breakers
                .iter()
                .any(|b| !b.is_empty() && text.contains(b.as_str()))
        };
        let breaker = (0..vocab as u32).map(breaks).collect();
        Ok(DryPenalty { params, breaker })
    }

    /// The settings.
    pub fn params(&self) -> &DryParams {
        &self.params
    }

    /// The penalties for the token after `history` (all the sequence's tokens, in order), as
    /// (token, −penalty), distinct tokens in increasing order.
    pub fn penalties(&self, history: &[u32]) -> Vec<(u32, f32)> {
        let p = &self.params;
        if p.multiplier == 0.0 {
            return Vec::new();
        }
        let window = p
            .penalty_last_n
            .map_or(history.len(), |n| n.min(history.len()));
        let h = &history[history.len() - window..];
        let is_breaker = |t: u32| self.breaker.get(t as usize).copied().unwrap_or(false);
        let Some((&last, _)) = h.split_last() else {
            return Vec::new();
        };
        if is_breaker(last) {
            return Vec::new();
        }
        let mut longest = std::collections::BTreeMap::<u32, usize>::new();
        for i in (0..h.len() - 1).filter(|&i| h[i] == last) {
            let next = h[i + 1];
            if is_breaker(next) {
                continue;
            }
            // h[i] matches the last token; extend the match backwards.
            let mut len = 1;
            while len < MAX_MATCH && len <= i {
                let earlier = h[i - len];
                if earlier != h[h.len() - 1 - len] || is_breaker(earlier) {
                    break;
                }
                len += 1;
            }
            let e = longest.entry(next).or_default();
            *e = (*e).max(len);
        }
        longest
            .into_iter()
            .filter(|&(_, len)| len >= p.allowed_length)
            .map(|(t, len)| {
                let penalty = p.multiplier * p.base.powi((len - p.allowed_length) as i32);
                (t, -penalty.min(f32::MAX))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dry(breakers: &[u32], vocab: usize) -> DryPenalty {
        let mut d = DryPenalty::new(
            DryParams {
                multiplier: 1.0,
                base: 2.0,
                allowed_length: 2,
                ..DryParams::default()
            },
            None,
            vocab,
        )
        .unwrap();
        breakers.iter().for_each(|&b| d.breaker[b as usize] = true);
        d
    }

    #[test]
    fn repeated_stretches_penalize_what_followed_them() {
        let d = dry(&[], 20);
        // "1 2 3 4 ... 1 2 3": 4 followed "1 2 3" (a stretch of 3): 1 · 2^(3−2).
        assert_eq!(d.penalties(&[1, 2, 3, 4, 9, 1, 2, 3]), vec![(4, -2.0)]);
        // Two earlier stretches: each follower with its own length; shorter than 2 is allowed.
        assert_eq!(
            d.penalties(&[5, 3, 7, 8, 3, 6, 0, 8, 3]),
            vec![(6, -1.0)],
            "7 follows a stretch of 1 only"
        );
        assert_eq!(d.penalties(&[1, 2, 1, 2, 1, 2]), vec![(1, -4.0)]);
        assert!(d.penalties(&[1, 2, 3]).is_empty());
        assert!(d.penalties(&[]).is_empty());
        // A window that leaves out the earlier stretch.
        let mut w = dry(&[], 20);
        w.params.penalty_last_n = Some(4);
        assert!(w.penalties(&[1, 2, 3, 4, 9, 1, 2, 3]).is_empty());
    }

    #[test]
    fn breakers_end_stretches() {
        // 0 breaks: the stretch "0 2 3" counts only "2 3".
        let d = dry(&[0], 20);
        assert_eq!(d.penalties(&[0, 2, 3, 4, 0, 2, 3]), vec![(4, -1.0)]);
        // A breaker last, or as the follower: no penalty.
        assert!(d.penalties(&[2, 0, 5, 2, 0]).is_empty());
        assert!(d.penalties(&[2, 3, 0, 5, 2, 3]).is_empty());
        let off = DryPenalty::new(
            DryParams {
                multiplier: 0.0,
                ..DryParams::default()
            },
            None,
            20,
        )
        .unwrap();
        assert!(off.penalties(&[1, 2, 1, 2, 1, 2]).is_empty());
    }

    #[test]
    fn long_loops_stay_finite_and_bad_values_are_errors() {
        let d = dry(&[], 4);
        let loop_: Vec<u32> = (0..400).map(|i| i % 3).collect();
        let p = d.penalties(&loop_);
        assert_eq!(p.len(), 1);
        assert!(p[0].1.is_finite() && p[0].1 < -1e10, "{p:?}");
        for (bad, needle) in [
            (
                DryParams {
                    multiplier: -1.0,
                    ..DryParams::default()
                },
                "multiplier",
            ),
            (
                DryParams {
                    base: 0.5,
                    ..DryParams::default()
                },
                "base",
            ),
            (
                DryParams {
                    allowed_length: 0,
                    ..DryParams::default()
                },
                "allowed length",
            ),
        ] {
            let e = DryPenalty::new(bad, None, 4).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn breakers_come_from_token_text() {
        let bytes = crate::BUNDLED_MODEL.require("tokenizer.json").unwrap();
        let tok = Tokenizer::from_bytes(bytes).unwrap();
        let d = DryPenalty::new(DryParams::default(), Some(&tok), 512).unwrap();
        let id = |s: &str| tok.encode(s, false).unwrap().get_ids().to_vec();
        let newline = id("\n");
        assert_eq!(newline.len(), 1);
        assert!(d.breaker[newline[0] as usize]);
        let a = id("a");
        assert!(!d.breaker[a[0] as usize]);
    }
}
