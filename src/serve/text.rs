//! Generated tokens into text as they come: streaming detokenization and stop strings.
//! (Each behind one small type, so the library's own, when it has them, can take their place.)

use std::sync::Arc;

use tokenizers::Tokenizer;

/// Token ids into text deltas. A token is decoded with the few before it (byte-level pieces
/// of one character span tokens), and text is held back while it ends in an incomplete
/// character. Special tokens are kept as text (the output parser reads its markers).
pub struct Detokenizer {
    tokenizer: Arc<Tokenizer>,
    ids: Vec<u32>,
    /// `ids[prefix..read]` is context already emitted; `ids[read..]` is not yet emitted.
    prefix: usize,
    read: usize,
}

impl Detokenizer {
    pub fn new(tokenizer: Arc<Tokenizer>) -> Self {
        Detokenizer {
            tokenizer,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, false).unwrap_or_default()
    }

    /// The text `id` completes (empty while a character is incomplete).
    pub fn push(&mut self, id: u32) -> String {
        self.ids.push(id);
        let before = self.decode(&self.ids[self.prefix..self.read]);
        let now = self.decode(&self.ids[self.prefix..]);
        if now.ends_with('\u{FFFD}') {
            return String::new();
        }
        match now.get(before.len()..) {
            Some(delta) if now.starts_with(&before) => {
                let delta = delta.to_string();
                self.prefix = self.read;
                self.read = self.ids.len();
                delta
            }
            _ => String::new(),
        }
    }

    /// The text still held at the end (an incomplete character as U+FFFD).
    pub fn finish(&mut self) -> String {
        let before = self.decode(&self.ids[self.prefix..self.read]);
        let now = self.decode(&self.ids[self.prefix..]);
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        match now.strip_prefix(&before) {
            Some(rest) => rest.to_string(),
            None => now,
        }
    }
}

/// OpenAI `stop` strings over a stream of text: text is passed on except a tail that may
/// begin a stop string, and the first stop string found ends the stream (it and what follows
/// are dropped).
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    /// The text `delta` releases, and whether a stop string was found.
    pub fn push(&mut self, delta: &str) -> (String, bool) {
        self.held.push_str(delta);
        let found = self.stops.iter().filter_map(|s| self.held.find(s)).min();
        if let Some(at) = found {
            self.held.truncate(at);
            return (std::mem::take(&mut self.held), true);
        }
        let keep = self
            .stops
            .iter()
            .flat_map(|s| {
                s.char_indices()
                    .skip(1)
                    .map(|(i, _)| i)
                    .filter(|&k| self.held.ends_with(&s[..k]))
            })
            .max()
            .unwrap_or(0);
        let out = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        (out, false)
    }

    /// The text held at the end of the stream.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_end_the_text_at_any_split() {
        let text = "Hello wor¡ld STOP here";
        for at in text.char_indices().map(|(i, _)| i) {
            let mut m = StopMatcher::new(vec!["STOP".into(), "xyz".into()]);
            let (a, s1) = m.push(&text[..at]);
            let (b, s2) = if s1 {
                (String::new(), true)
            } else {
                m.push(&text[at..])
            };
            assert!(s2, "split at {at}");
            assert_eq!(a + &b, "Hello wor¡ld ", "split at {at}");
        }
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("a ST"), ("a ".to_string(), false));
        assert_eq!(m.push("x"), ("STx".to_string(), false));
        assert_eq!(m.push("S"), (String::new(), false));
        assert_eq!(m.finish(), "S");
    }

    #[test]
    fn detokenized_deltas_add_up_to_the_whole_text() {
        let files = crate::ModelFiles::bundled().unwrap();
        let tok = Arc::new(files.tokenizer.unwrap());
        let text = "Grüße, 世界! <think>x</think> <|im_end|>";
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        let mut d = Detokenizer::new(tok.clone());
        let mut out: String = ids.iter().map(|&i| d.push(i)).collect();
        out.push_str(&d.finish());
        assert_eq!(out, tok.decode(&ids, false).unwrap());
        assert!(out.contains("世界") && out.contains("<|im_end|>"), "{out}");
    }
}
