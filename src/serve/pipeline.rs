//! One request's output, token by token: detokenized, cut at a stop string, and (for chat)
//! parsed into content, reasoning and tool calls.

use std::sync::Arc;

use tokenizers::Tokenizer;

use crate::chat::{Detokenizer, OutputParser, ParseEvent, StopMatcher};

/// Generated tokens into [`ParseEvent`]s (raw text completions give only `Content`).
pub struct Pipeline {
    detok: Detokenizer<Arc<Tokenizer>>,
    stop: StopMatcher,
    /// `None` for raw text; taken when the stream finishes.
    parser: Option<OutputParser>,
    eos: Vec<u32>,
    ignore_eos: bool,
    /// Tokens generated (EOS included).
    pub completion_tokens: usize,
    stopped: bool,
}

impl Pipeline {
    /// A pipeline over `parser` (`None`: raw text). `preamble` is output text the prompt
    /// already holds (a forced tool-call opening): parsed, never emitted as text.
    pub fn new(
        tokenizer: Arc<Tokenizer>,
        stops: Vec<String>,
        parser: Option<OutputParser>,
        preamble: Option<&str>,
        eos: Vec<u32>,
        ignore_eos: bool,
    ) -> (Self, Vec<ParseEvent>) {
        let mut p = Pipeline {
            detok: Detokenizer::new(tokenizer, false),
            stop: StopMatcher::new(stops),
            parser,
            eos,
            ignore_eos,
            completion_tokens: 0,
            stopped: false,
        };
        let events = match (preamble, p.parser.as_mut()) {
            (Some(text), Some(parser)) => parser.feed(text),
            _ => Vec::new(),
        };
        (p, events)
    }

    /// The events token `id` completes, and whether a stop string ended the output (then
    /// the events include the end of the stream).
    pub fn token(&mut self, id: u32) -> (Vec<ParseEvent>, bool) {
        self.completion_tokens += 1;
        if self.stopped || (!self.ignore_eos && self.eos.contains(&id)) {
            return (Vec::new(), self.stopped);
        }
        let delta = self.detok.push(id).unwrap_or_default();
        let step = self.stop.feed(&delta);
        let (text, stopped) = (step.text, step.stop.is_some());
        let mut events = self.parse(&text);
        if stopped {
            self.stopped = true;
            events.extend(self.end());
        }
        (events, stopped)
    }

    /// The events held at the end of the output.
    pub fn finish(&mut self) -> Vec<ParseEvent> {
        if self.stopped {
            return Vec::new();
        }
        let tail = self.detok.finish().unwrap_or_default();
        let step = self.stop.feed(&tail);
        let (mut text, stopped) = (step.text, step.stop.is_some());
        if !stopped {
            text.push_str(&self.stop.finish());
        }
        let mut events = self.parse(&text);
        events.extend(self.end());
        self.stopped = true;
        events
    }

    fn parse(&mut self, text: &str) -> Vec<ParseEvent> {
        match self.parser.as_mut() {
            _ if text.is_empty() => Vec::new(),
            Some(p) => p.feed(text),
            None => vec![ParseEvent::Content(text.to_string())],
        }
    }

    fn end(&mut self) -> Vec<ParseEvent> {
        match self.parser.take() {
            Some(p) => p.finish(),
            None => Vec::new(),
        }
    }
}
