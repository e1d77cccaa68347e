//! Stop strings over streamed text: [`StopMatcher::feed`] takes text deltas as they are
//! generated and returns the text that can no longer be part of a stop string, holding back
//! a suffix that may still grow into one; at a stop it returns the text before it and drops
//! the stop string and everything after it (OpenAI's `stop`).

/// What one delta gave: text that is certain, and the stop reached, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopStep {
    /// Text to emit (before the stop string when `stop` is set).
    pub text: String,
    /// Index of the stop string reached (in the order given); no more text follows.
    pub stop: Option<usize>,
}

/// The streaming stop-string matcher: [`feed`](Self::feed) each delta, then
/// [`finish`](Self::finish) when the stream ends without a stop.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text not yet emitted: a suffix that is a proper prefix of some stop string.
    held: String,
    done: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings never match).
    pub fn new<S: Into<String>>(stops: impl IntoIterator<Item = S>) -> Self {
        StopMatcher {
            stops: stops.into_iter().map(Into::into).collect(),
            held: String::new(),
            done: false,
        }
    }

    /// The text `delta` makes certain, and the stop if one is now complete (the earliest in
    /// the text; the first given among those starting there). After a stop, nothing.
    pub fn feed(&mut self, delta: &str) -> StopStep {
        if self.done {
            return StopStep::default();
        }
        self.held.push_str(delta);
        let found = self
            .stops
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at, i)))
            .min();
        if let Some((at, i)) = found {
            self.done = true;
            self.held.truncate(at);
            return StopStep {
                text: std::mem::take(&mut self.held),
                stop: Some(i),
            };
        }
        let keep = self
            .stops
            .iter()
            .map(|s| longest_partial(&self.held, s))
            .max()
            .unwrap_or(0);
        let rest = self.held.split_off(self.held.len() - keep);
        StopStep {
            text: std::mem::replace(&mut self.held, rest),
            stop: None,
        }
    }

    /// Whether a stop string was reached.
    pub fn stopped(&self) -> bool {
        self.done
    }

    /// The text held back when the stream ends without reaching a stop.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Bytes of the longest suffix of `text` that is a proper, non-empty prefix of `stop`.
fn longest_partial(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .filter(|&k| stop.is_char_boundary(k))
        .find(|&k| text.ends_with(&stop[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deltas` through a matcher: the emitted text, and the stop reached.
    fn run(stops: &[&str], deltas: &[&str]) -> (String, Option<usize>) {
        let mut m = StopMatcher::new(stops.iter().copied());
        let mut out = String::new();
        for d in deltas {
            let s = m.feed(d);
            out.push_str(&s.text);
            if s.stop.is_some() {
                assert!(m.stopped());
                assert_eq!(m.feed("more"), StopStep::default());
                return (out, s.stop);
            }
        }
        out.push_str(&m.finish());
        (out, None)
    }

    #[test]
    fn a_stop_split_over_deltas_is_found_and_dropped_with_what_follows() {
        assert_eq!(
            run(&["STOP"], &["abc S", "T", "OP tail", "x"]),
            ("abc ".into(), Some(0))
        );
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), Some(0)));
        // A partial match that fails is emitted once it cannot grow into the stop.
        assert_eq!(run(&["STOP"], &["ST", "ART", "!"]), ("START!".into(), None));
        // Held text at the end of the stream is text.
        assert_eq!(run(&["STOP"], &["a ST"]), ("a ST".into(), None));
        assert_eq!(run(&[], &["x", "y"]), ("xy".into(), None));
        assert_eq!(run(&[""], &["x"]), ("x".into(), None));
    }

    #[test]
    fn the_earliest_stop_wins_and_partial_matches_are_held() {
        assert_eq!(run(&["cd", "bcde"], &["abcdef"]), ("a".into(), Some(1)));
        assert_eq!(run(&["b", "ab"], &["xab"]), ("x".into(), Some(1)));
        let mut m = StopMatcher::new(["<|im_end|>", "###"]);
        assert_eq!(m.feed("text <|im").text, "text ");
        assert_eq!(m.feed("_e").text, "");
        assert_eq!(m.feed("nd|>").stop, Some(0));
        let mut m = StopMatcher::new(["aab"]);
        assert_eq!(m.feed("aaa").text, "a");
        assert_eq!(m.feed("ab").text, "a");
        assert!(m.stopped());
    }

    #[test]
    fn multibyte_stops_and_text_split_on_characters() {
        assert_eq!(
            run(&["日本"], &["こんにちは日", "本語"]),
            ("こんにちは".into(), Some(0))
        );
        let mut m = StopMatcher::new(["é!"]);
        assert_eq!(m.feed("caf").text, "caf");
        assert_eq!(m.feed("é").text, "");
        assert_eq!(m.feed("e").text, "ée");
    }

    /// Every way of cutting a text into deltas emits what the whole text emits.
    #[test]
    fn streaming_equals_whole_text() {
        let text = "say STOP, or ST OP, or SSTOP then";
        let stops = ["STOP", "OP, or S"];
        let whole = run(&stops, &[text]);
        assert_eq!(whole, ("say ".into(), Some(0)));
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let parts = [&text[..a], &text[a..b], &text[b..]];
                assert_eq!(run(&stops, &parts), whole, "{parts:?}");
            }
        }
    }
}
