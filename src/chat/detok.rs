//! Streaming detokenization: token ids in as they are generated, text out as soon as it is
//! stable. The tokenizer decodes whole id lists, and a character may span several byte-level
//! tokens, so [`Detokenizer::push`] decodes a short window of recent ids twice (with and
//! without the new ones) and emits the new suffix only once it no longer ends in half a
//! character (U+FFFD); the window keeps the decoder's context (spaces, cleanup) right.

use std::borrow::Borrow;

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// Text of a growing token sequence, emitted in stable pieces; over a borrowed or shared
/// tokenizer (`&Tokenizer`, `Arc<Tokenizer>`).
pub struct Detokenizer<T: Borrow<Tokenizer>> {
    tokenizer: T,
    skip_special: bool,
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix: usize,
    /// End of what has been emitted.
    read: usize,
}

impl<T: Borrow<Tokenizer>> Detokenizer<T> {
    /// A detokenizer over `tokenizer`; special tokens (`<|im_end|>`, `<think>` where it is
    /// special) are dropped with `skip_special`, kept as text otherwise (what an output
    /// parser needs).
    pub fn new(tokenizer: T, skip_special: bool) -> Self {
        Detokenizer {
            tokenizer,
            skip_special,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// The text `id` completes (empty while a character is still incomplete).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = self.decode(self.prefix, self.read)?;
        let now = self.decode(self.prefix, self.ids.len())?;
        if now.len() <= before.len() || now.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let delta = suffix_after(&now, &before);
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(delta)
    }

    /// The text still held at the end of the stream (an incomplete character decodes as
    /// U+FFFD).
    pub fn finish(&mut self) -> Result<String> {
        let before = self.decode(self.prefix, self.read)?;
        let now = self.decode(self.prefix, self.ids.len())?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(suffix_after(&now, &before))
    }

    fn decode(&self, from: usize, to: usize) -> Result<String> {
        self.tokenizer
            .borrow()
            .decode(&self.ids[from..to], self.skip_special)
            .map_err(|e| Error::Input(format!("cannot detokenize: {e}")))
    }
}

/// `now` past the text `before` (which it normally starts with; otherwise past as many
/// bytes, at a character boundary).
fn suffix_after(now: &str, before: &str) -> String {
    if let Some(rest) = now.strip_prefix(before) {
        return rest.to_string();
    }
    let mut at = before.len().min(now.len());
    while !now.is_char_boundary(at) {
        at += 1;
    }
    now[at..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        let bytes = crate::BUNDLED_MODEL.require("tokenizer.json").unwrap();
        Tokenizer::from_bytes(bytes).unwrap()
    }

    /// Ids pushed one at a time give the whole decoded text, never half a character, for
    /// text whose characters span several tokens.
    #[test]
    fn pieces_add_up_to_the_text_and_never_split_a_character() {
        let tok = tokenizer();
        let text = "Grüße, 日本語 🦀 and <|im_start|>user\nnaïve café — ok";
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert!(ids.len() > text.chars().count() / 2, "{ids:?}");
        for skip in [false, true] {
            let mut d = Detokenizer::new(&tok, skip);
            let mut out = String::new();
            let mut silent = 0;
            for &id in &ids {
                let piece = d.push(id).unwrap();
                assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
                silent += piece.is_empty() as usize;
                out.push_str(&piece);
            }
            out.push_str(&d.finish().unwrap());
            assert_eq!(out, tok.decode(&ids, skip).unwrap());
            assert!(silent > 0, "no id was held back: the test proves nothing");
        }
        let mut d = Detokenizer::new(&tok, false);
        let emoji = tok.encode("🦀", false).unwrap().get_ids().to_vec();
        assert!(emoji.len() > 1);
        d.push(emoji[0]).unwrap();
        assert_eq!(d.finish().unwrap(), "\u{FFFD}");
    }
}
