//! Generated text into an OpenAI assistant message, streaming-safe.
//!
//! `<think>…</think>` is reasoning; `<|tool_call_start|>[f(a=1), …]<|tool_call_end|>` is tool
//! calls (LFM2's Python call syntax, `pycall`); the rest is content. [`OutputParser::feed`]
//! takes the text as it is generated and returns what is certain so far: content and
//! reasoning deltas, and each tool call once whole. It never emits part of a marker, nor a
//! call in progress, as content; a call that turns out malformed is emitted as the content it
//! was, markers included. Whitespace next to a marker belongs to the marker (the newlines
//! after `</think>`, around a tool call); the start and end of the text are kept as they are.
//! [`parse_output`] is the stream fed at once, so both give the same message.

use super::pycall::{parse_calls, ToolCall};

pub const THINK_START: &str = "<think>";
pub const THINK_END: &str = "</think>";
pub const TOOL_CALL_START: &str = "<|tool_call_start|>";
pub const TOOL_CALL_END: &str = "<|tool_call_end|>";

/// What a piece of generated text turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseEvent {
    Content(String),
    Reasoning(String),
    ToolCall(ToolCall),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Content,
    Reasoning,
    Call,
}

/// Text of one kind, emitted with the whitespace next to markers left out: whitespace after
/// a marker is dropped, whitespace at the end is held until text follows it (then emitted)
/// or a marker does (then dropped).
#[derive(Clone, Debug, Default)]
struct Run {
    held: String,
    after_marker: bool,
}

impl Run {
    fn push(&mut self, text: &str) -> Option<String> {
        let text = if self.after_marker {
            text.trim_start()
        } else {
            text
        };
        if text.is_empty() {
            return None;
        }
        self.after_marker = false;
        let body = text.trim_end().len();
        if body == 0 {
            self.held.push_str(text);
            return None;
        }
        let mut out = std::mem::take(&mut self.held);
        out.push_str(&text[..body]);
        self.held.push_str(&text[body..]);
        Some(out)
    }

    fn marker(&mut self) {
        self.held.clear();
        self.after_marker = true;
    }

    fn flush(&mut self) -> Option<String> {
        Some(std::mem::take(&mut self.held)).filter(|s| !s.is_empty())
    }
}

/// The streaming parser: [`feed`](Self::feed) each delta, then [`finish`](Self::finish).
#[derive(Clone, Debug)]
pub struct OutputParser {
    mode: Mode,
    /// Input not yet emitted: a possible marker prefix, or an open tool call.
    pending: String,
    content: Run,
    reasoning: Run,
    /// The content run as it was when the open tool call started, restored if it is malformed.
    before_call: Run,
    /// Whether tool-call blocks are calls (else they stay content as written).
    tool_calls: bool,
}

impl OutputParser {
    /// A parser for text that starts as content, or inside a think block when the prompt
    /// opened one ([`crate::chat::ChatTemplate::opens_reasoning`]).
    pub fn new(starts_in_reasoning: bool) -> Self {
        let mut reasoning = Run::default();
        reasoning.marker();
        OutputParser {
            mode: if starts_in_reasoning {
                Mode::Reasoning
            } else {
                Mode::Content
            },
            pending: String::new(),
            content: Run::default(),
            reasoning,
            before_call: Run::default(),
            tool_calls: true,
        }
    }

    /// The same parser with tool-call blocks left as content, as written (a request whose
    /// `tool_choice` is `none`).
    pub fn without_tool_calls(mut self) -> Self {
        self.tool_calls = false;
        self
    }

    /// The events `delta` completes.
    pub fn feed(&mut self, delta: &str) -> Vec<ParseEvent> {
        self.pending.push_str(delta);
        let mut events = Vec::new();
        while self.step(&mut events) {}
        events
    }

    /// The events of the text held back at the end of the stream: a marker prefix is text,
    /// an unclosed tool call is a call if it parses whole, else content.
    pub fn finish(mut self) -> Vec<ParseEvent> {
        let mut events = Vec::new();
        let rest = std::mem::take(&mut self.pending);
        match self.mode {
            Mode::Content => self.emit_content(&rest, &mut events),
            Mode::Reasoning => self.emit_reasoning(&rest, &mut events),
            Mode::Call => self.close_call(&rest, false, &mut events),
        }
        if let Some(t) = self.reasoning.flush() {
            events.push(ParseEvent::Reasoning(t));
        }
        if let Some(t) = self.content.flush() {
            events.push(ParseEvent::Content(t));
        }
        events
    }

    /// Handles the next marker in `pending`, or emits what is certain and returns false.
    fn step(&mut self, events: &mut Vec<ParseEvent>) -> bool {
        let markers: &[&str] = match self.mode {
            Mode::Content if self.tool_calls => &[THINK_START, TOOL_CALL_START],
            Mode::Content => &[THINK_START],
            Mode::Reasoning => &[THINK_END],
            Mode::Call => &[TOOL_CALL_END],
        };
        let Some((at, marker)) = first_marker(&self.pending, markers) else {
            let keep = partial_marker_len(&self.pending, markers);
            match self.mode {
                Mode::Content | Mode::Reasoning => {
                    let text: String = self.pending.drain(..self.pending.len() - keep).collect();
                    if self.mode == Mode::Content {
                        self.emit_content(&text, events);
                    } else {
                        self.emit_reasoning(&text, events);
                    }
                }
                Mode::Call => {} // a call's text is held until it closes
            }
            return false;
        };
        let text: String = self.pending.drain(..at).collect();
        self.pending.drain(..marker.len());
        match marker {
            THINK_START => {
                self.emit_content(&text, events);
                self.content.marker();
                self.reasoning.marker();
                self.mode = Mode::Reasoning;
            }
            THINK_END => {
                self.emit_reasoning(&text, events);
                self.reasoning.marker();
                self.content.marker();
                self.mode = Mode::Content;
            }
            TOOL_CALL_START => {
                self.emit_content(&text, events);
                self.before_call = self.content.clone();
                self.content.marker();
                self.mode = Mode::Call;
            }
            _ => self.close_call(&text, true, events),
        }
        true
    }

    /// Emits the calls of a tool-call block's `body`, or the block as content when it is
    /// not a list of calls.
    fn close_call(&mut self, body: &str, closed: bool, events: &mut Vec<ParseEvent>) {
        self.mode = Mode::Content;
        match parse_calls(body) {
            Some(calls) => events.extend(calls.into_iter().map(ParseEvent::ToolCall)),
            None => {
                self.content = std::mem::take(&mut self.before_call);
                let end = if closed { TOOL_CALL_END } else { "" };
                let raw = format!("{TOOL_CALL_START}{body}{end}");
                self.emit_content(&raw, events);
            }
        }
    }

    fn emit_content(&mut self, text: &str, events: &mut Vec<ParseEvent>) {
        events.extend(self.content.push(text).map(ParseEvent::Content));
    }

    fn emit_reasoning(&mut self, text: &str, events: &mut Vec<ParseEvent>) {
        events.extend(self.reasoning.push(text).map(ParseEvent::Reasoning));
    }
}

/// The earliest of `markers` in `text`: (byte offset, marker).
fn first_marker<'m>(text: &str, markers: &[&'m str]) -> Option<(usize, &'m str)> {
    markers
        .iter()
        .filter_map(|m| text.find(m).map(|at| (at, *m)))
        .min_by_key(|(at, _)| *at)
}

/// The length of the longest end of `text` that begins one of `markers` (held back, as the
/// marker may complete in the next delta). Markers are ASCII, so the cut is a char boundary.
fn partial_marker_len(text: &str, markers: &[&str]) -> usize {
    markers
        .iter()
        .flat_map(|m| (1..m.len()).rev().filter(move |&k| text.ends_with(&m[..k])))
        .max()
        .unwrap_or(0)
}

/// An assistant message: what [`ParseEvent`]s add up to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssistantMessage {
    /// `None` when there is no content.
    pub content: Option<String>,
    /// `None` when there is no reasoning.
    pub reasoning_content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

impl AssistantMessage {
    /// The message `events` add up to.
    pub fn from_events(events: impl IntoIterator<Item = ParseEvent>) -> Self {
        let mut m = AssistantMessage::default();
        for e in events {
            match e {
                ParseEvent::Content(t) => m.content.get_or_insert_with(String::new).push_str(&t),
                ParseEvent::Reasoning(t) => m
                    .reasoning_content
                    .get_or_insert_with(String::new)
                    .push_str(&t),
                ParseEvent::ToolCall(c) => m.tool_calls.push(c),
            }
        }
        m
    }

    /// The OpenAI chat-completion message: `role`, `content`, `reasoning_content` (null when
    /// absent) and `tool_calls` (a list, empty when none), each call with the id `call_N`, N
    /// its index in the message.
    pub fn to_json(&self) -> serde_json::Value {
        let calls: Vec<serde_json::Value> = self
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                serde_json::json!({
                    "id": format!("call_{i}"),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                })
            })
            .collect();
        serde_json::json!({
            "role": "assistant",
            "content": self.content,
            "reasoning_content": self.reasoning_content,
            "tool_calls": calls,
        })
    }
}

/// The message of a whole generated text: the stream fed at once.
pub fn parse_output(text: &str, starts_in_reasoning: bool) -> AssistantMessage {
    let mut p = OutputParser::new(starts_in_reasoning);
    let mut events = p.feed(text);
    events.extend(p.finish());
    AssistantMessage::from_events(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    fn msg(
        content: Option<&str>,
        reasoning: Option<&str>,
        calls: Vec<ToolCall>,
    ) -> AssistantMessage {
        AssistantMessage {
            content: content.map(String::from),
            reasoning_content: reasoning.map(String::from),
            tool_calls: calls,
        }
    }

    /// (generated text, starts in reasoning, the message it is)
    fn cases() -> Vec<(&'static str, bool, AssistantMessage)> {
        let weather = || call("get_weather", r#"{"city": "Zürich", "days": [1, 2]}"#);
        vec![
            ("Hello, world.\n", false, msg(Some("Hello, world.\n"), None, vec![])),
            ("<think>\nLet me think.\n</think>\n\nThe answer is 4.", false, msg(Some("The answer is 4."), Some("Let me think."), vec![])),
            ("I think</think>Answer", true, msg(Some("Answer"), Some("I think"), vec![])),
            (
                "<think>Need weather.</think>\nChecking.\n<|tool_call_start|>[get_weather(city='Zürich', days=[1, 2])]<|tool_call_end|>\n",
                false,
                msg(Some("Checking."), Some("Need weather."), vec![weather()]),
            ),
            (
                "<|tool_call_start|>[a.b.c(x=None), g(s=\"<think>\")]<|tool_call_end|>Done",
                false,
                msg(Some("Done"), None, vec![call("a.b.c", r#"{"x": null}"#), call("g", r#"{"s": "<think>"}"#)]),
            ),
            (
                "Before <|tool_call_start|>[f(1)]<|tool_call_end|> after",
                false,
                msg(Some("Before <|tool_call_start|>[f(1)]<|tool_call_end|> after"), None, vec![]),
            ),
            ("Text <|tool_call_start|>[f(x=1)]", false, msg(Some("Text"), None, vec![call("f", r#"{"x": 1}"#)])),
            ("Text <|tool_call_start|>[f(x=1)", false, msg(Some("Text <|tool_call_start|>[f(x=1)"), None, vec![])),
            ("a <thin b <|tool_call_st", false, msg(Some("a <thin b <|tool_call_st"), None, vec![])),
            ("<think>unfinished thought ", false, msg(None, Some("unfinished thought "), vec![])),
            ("é<think></think>ü", false, msg(Some("éü"), None, vec![])),
            ("", false, msg(None, None, vec![])),
        ]
    }

    #[test]
    fn whole_texts_parse_into_messages() {
        for (text, in_reasoning, want) in cases() {
            assert_eq!(parse_output(text, in_reasoning), want, "{text:?}");
        }
    }

    /// Every split of the text into two deltas, and one char at a time, gives the message of
    /// the whole text; no content delta holds part of a marker unless the text does.
    #[test]
    fn streaming_agrees_with_whole_text_at_every_split() {
        for (text, in_reasoning, want) in cases() {
            let mut splits: Vec<Vec<&str>> = text
                .char_indices()
                .map(|(i, _)| vec![&text[..i], &text[i..]])
                .collect();
            splits.push(
                text.char_indices()
                    .map(|(i, c)| &text[i..i + c.len_utf8()])
                    .collect(),
            );
            for deltas in splits {
                let mut p = OutputParser::new(in_reasoning);
                let mut events: Vec<ParseEvent> = deltas.iter().flat_map(|d| p.feed(d)).collect();
                events.extend(p.finish());
                for e in &events {
                    if let ParseEvent::Content(t) = e {
                        let partial = ["<|tool_call_st", "<thi"].iter().any(|m| t.ends_with(m));
                        assert!(
                            !partial || text.ends_with(t.as_str()),
                            "{text:?}: partial marker in {t:?}"
                        );
                    }
                }
                assert_eq!(
                    AssistantMessage::from_events(events),
                    want,
                    "{text:?} fed as {deltas:?}"
                );
            }
        }
    }

    #[test]
    fn without_tool_calls_a_call_block_is_content() {
        let text = "<think>r</think>Hi <|tool_call_start|>[f(x=1)]<|tool_call_end|>";
        let mut p = OutputParser::new(false).without_tool_calls();
        let mut events = p.feed(text);
        events.extend(p.finish());
        assert_eq!(
            AssistantMessage::from_events(events),
            msg(
                Some("Hi <|tool_call_start|>[f(x=1)]<|tool_call_end|>"),
                Some("r"),
                vec![]
            )
        );
    }

    #[test]
    fn calls_are_emitted_whole_once_closed() {
        let mut p = OutputParser::new(false);
        assert_eq!(
            p.feed("Hi <|tool_call_start|>[f(x="),
            [ParseEvent::Content("Hi".into())]
        );
        assert_eq!(p.feed("1)]<|tool_call_"), []);
        assert_eq!(
            p.feed("end|>"),
            [ParseEvent::ToolCall(call("f", r#"{"x": 1}"#))]
        );
        assert_eq!(p.finish(), []);
    }

    #[test]
    fn message_json_is_the_openai_shape() {
        let m = msg(
            None,
            Some("r"),
            vec![call("f", "{}"), call("g", r#"{"a": 1}"#)],
        );
        assert_eq!(
            serde_json::to_string(&m.to_json()).unwrap(),
            r#"{"role":"assistant","content":null,"reasoning_content":"r","tool_calls":[{"id":"call_0","type":"function","function":{"name":"f","arguments":"{}"}},{"id":"call_1","type":"function","function":{"name":"g","arguments":"{\"a\": 1}"}}]}"#
        );
    }
}
