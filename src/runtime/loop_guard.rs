//! The loop guard: ends a generation stuck repeating. After each generated token it finds,
//! for every period p ≤ `max_period`, how long the tail of the generated tokens has repeated
//! with period p; the generation is stuck when some period has repeated `min_repeats` times
//! or its repetition covers `min_tokens` tokens.

use crate::error::{Error, Result};

/// When a generation counts as stuck (off unless given to a generation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopGuard {
    /// Longest cycle looked for, in tokens.
    pub max_period: usize,
    /// Stuck when the tail is this many whole copies of one cycle.
    pub min_repeats: usize,
    /// Stuck when one cycle, repeated at least twice, covers this many tokens.
    pub min_tokens: usize,
}

impl Default for LoopGuard {
    /// Cycles of up to 64 tokens, 8 copies or 256 tokens.
    fn default() -> Self {
        LoopGuard {
            max_period: 64,
            min_repeats: 8,
            min_tokens: 256,
        }
    }
}

impl LoopGuard {
    /// Rejects values with no meaning.
    pub fn check(&self) -> Result<()> {
        if self.max_period == 0 || self.min_repeats < 2 || self.min_tokens < 2 {
            return Err(Error::Input(format!(
                "loop guard needs a period ≥ 1, repeats ≥ 2 and tokens ≥ 2, got {}, {}, {}",
                self.max_period, self.min_repeats, self.min_tokens
            )));
        }
        Ok(())
    }
}

/// A generation's tokens as the loop guard watches them.
#[derive(Clone, Debug)]
pub struct LoopWatch {
    guard: LoopGuard,
    /// The last `max_period` tokens, oldest first.
    recent: std::collections::VecDeque<u32>,
    /// run[p − 1]: how many of the latest tokens equal the token p before them.
    run: Vec<usize>,
}

impl LoopWatch {
    pub fn new(guard: LoopGuard) -> Self {
        LoopWatch {
            guard,
            recent: Default::default(),
            run: vec![0; guard.max_period],
        }
    }

    /// Adds the next generated token; whether the generation is now stuck.
    pub fn push(&mut self, token: u32) -> bool {
        let g = self.guard;
        let mut stuck = false;
        for p in 1..=g.max_period {
            let back = self.recent.len().checked_sub(p).map(|i| self.recent[i]);
            let run = &mut self.run[p - 1];
            *run = if back == Some(token) { *run + 1 } else { 0 };
            // The tail repeating with period p is `run + p` tokens long.
            let covered = *run + p;
            stuck |= *run > 0
                && (covered >= g.min_repeats * p || (*run >= p && covered >= g.min_tokens));
        }
        if self.recent.len() == g.max_period {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
        stuck
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index of the token at which `tokens` are found stuck.
    fn stuck_at(guard: LoopGuard, tokens: &[u32]) -> Option<usize> {
        let mut w = LoopWatch::new(guard);
        tokens.iter().position(|&t| w.push(t))
    }

    #[test]
    fn cycles_end_after_enough_repeats_or_tokens() {
        let g = LoopGuard {
            max_period: 4,
            min_repeats: 3,
            min_tokens: 10,
        };
        // One token three times.
        assert_eq!(stuck_at(g, &[5, 1, 1, 1, 2]), Some(3));
        // A 3-cycle: its third copy completes at index 1 + 9 − 1.
        let cyc: Vec<u32> = [9].into_iter().chain([1, 2, 3].repeat(4)).collect();
        assert_eq!(stuck_at(g, &cyc), Some(9));
        // A cycle longer than max_period is not seen.
        assert_eq!(stuck_at(g, &[1, 2, 3, 4, 5].repeat(5)), None);
        // Varied text is never stuck.
        let text: Vec<u32> = (0..500u32).map(|i| (i * 7919) % 101).collect();
        assert_eq!(stuck_at(LoopGuard::default(), &text), None);
        // min_tokens: two copies of a 4-cycle cover 8 < 10; the third copy's second token
        // makes 10.
        let g = LoopGuard {
            max_period: 4,
            min_repeats: 100,
            min_tokens: 10,
        };
        assert_eq!(stuck_at(g, &[1, 2, 3, 4].repeat(4)), Some(9));
    }

    #[test]
    fn bad_settings_are_errors() {
        for g in [
            LoopGuard {
                max_period: 0,
                ..LoopGuard::default()
            },
            LoopGuard {
                min_repeats: 1,
                ..LoopGuard::default()
            },
        ] {
            assert!(g.check().unwrap_err().to_string().contains("loop guard"));
        }
        assert!(LoopGuard::default().check().is_ok());
    }
}
