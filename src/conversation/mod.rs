//! A chat conversation over a session: messages rendered with the model's chat template,
//! the session's tokens reused up to where the conversation changed, the answer generated,
//! streamed through stop strings and the output parser, and kept as the next turn's history
//! (`wmoe chat`, `wmoe generate --chat`). `terminal` is the interactive loop of `wmoe chat`.

pub mod terminal;

use std::path::Path;

use serde_json::{json, Map, Value as Json};

use crate::chat::{
    AssistantMessage, ChatRequest, ChatTemplate, Detokenizer, OutputParser, ParseEvent, StopMatcher,
};
use crate::error::{Error, Result};
use crate::gpu::block_on;
use crate::runtime::{FinishReason, Flow, GenerateOptions, Session};

pub use terminal::{read_input, run_terminal, Input, TerminalOptions};

/// A generation's tokens and text.
#[derive(Clone, Debug)]
pub struct Completion {
    /// The generated token ids (a final EOS included).
    pub tokens: Vec<u32>,
    /// Their text up to the first stop string (the EOS token left out).
    pub text: String,
    pub finish: FinishReason,
}

/// Generates after `prompt` as `options` says, turning the tokens into text as they come
/// (special tokens kept as text unless `skip_special`; an EOS token that ends the generation
/// left out) and ending at the first of `stops`; each certain piece of text goes to
/// `on_text` (never half a character, never part of a stop string).
pub fn generate_text(
    session: &mut Session,
    prompt: &[u32],
    options: &GenerateOptions,
    stops: &[String],
    skip_special: bool,
    on_text: &mut dyn FnMut(&str),
) -> Result<Completion> {
    let on_text = &mut |piece: &str| {
        on_text(piece);
        Flow::Continue
    };
    block_on(
        generate_text_async(session, prompt, options, stops, skip_special, on_text),
        "generate_text_async",
    )
}

/// [`generate_text`], awaiting each token (the form a browser tab calls); `on_text` may end
/// the generation (a stop button) by returning [`Flow::Stop`].
pub async fn generate_text_async(
    session: &mut Session<'_>,
    prompt: &[u32],
    options: &GenerateOptions,
    stops: &[String],
    skip_special: bool,
    on_text: &mut dyn FnMut(&str) -> Flow,
) -> Result<Completion> {
    let model = session.model();
    let tokenizer = model.tokenizer.as_ref().ok_or_else(|| {
        Error::Input(format!(
            "{} has no tokenizer (no tokenizer.json, no GGUF tokenizer metadata); text generation needs one",
            model.dir.display()
        ))
    })?;
    let mut detok = Detokenizer::new(tokenizer, skip_special);
    let mut stop = StopMatcher::new(stops.iter().cloned());
    let (mut text, mut tokens, mut failed) = (String::new(), Vec::new(), None);
    let eos = &model.config.eos;
    let mut take = |piece: &str, text: &mut String| {
        text.push_str(piece);
        match piece.is_empty() {
            true => Flow::Continue,
            false => on_text(piece),
        }
    };
    let on_token = &mut |t: u32| {
        tokens.push(t);
        if !options.ignore_eos && eos.contains(&t) {
            return Flow::Continue;
        }
        match detok.push(t) {
            Ok(piece) => {
                let step = stop.feed(&piece);
                let flow = take(&step.text, &mut text);
                match step.stop {
                    Some(_) => Flow::Stop,
                    None => flow,
                }
            }
            Err(e) => {
                failed = Some(e);
                Flow::Stop
            }
        }
    };
    let finish = session
        .generate_stream_async(prompt, options, on_token)
        .await?;
    if let Some(e) = failed {
        return Err(e);
    }
    if !stop.stopped() {
        let mut tail = stop.feed(&detok.finish()?).text;
        if !stop.stopped() {
            tail.push_str(&stop.finish());
        }
        let _ = take(&tail, &mut text);
    }
    Ok(Completion {
        tokens,
        text,
        finish,
    })
}

/// What one turn did.
#[derive(Clone, Debug)]
pub struct TurnReport {
    /// Tokens of the whole rendered conversation up to the answer.
    pub prompt_tokens: usize,
    /// Of those, already in the session (not processed again).
    pub reused: usize,
    /// Of those, processed this turn.
    pub processed: usize,
    /// The generated token ids (a final EOS included).
    pub tokens: Vec<u32>,
    /// The generated text as the model wrote it, markers included, up to a stop string.
    pub text: String,
    /// The text parsed: content, reasoning, tool calls.
    pub message: AssistantMessage,
    pub finish: FinishReason,
    /// Tokens the session holds after the turn.
    pub context: usize,
}

/// Messages, tools and generation settings of one chat.
pub struct Conversation {
    template: ChatTemplate,
    opens_reasoning: bool,
    system: Option<String>,
    tools: Option<Json>,
    /// The user and assistant messages, in order (the system prompt apart).
    messages: Vec<Map<String, Json>>,
    /// How each answer is generated.
    pub options: GenerateOptions,
    /// Text that ends an answer (left out of it).
    pub stops: Vec<String>,
}

fn message(role: &str, content: &str) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("role".into(), Json::from(role));
    m.insert("content".into(), Json::from(content));
    m
}

impl Conversation {
    /// An empty conversation rendered with `template`, with an optional system prompt and
    /// tools (a list of JSON tool schemas, as an OpenAI request's `tools`).
    pub fn new(
        template: ChatTemplate,
        system: Option<String>,
        tools: Option<Json>,
    ) -> Result<Self> {
        let opens_reasoning = template.opens_reasoning();
        let c = Conversation {
            template,
            opens_reasoning,
            system,
            tools,
            messages: Vec::new(),
            options: GenerateOptions::default(),
            stops: Vec::new(),
        };
        c.request()?; // tools checked now
        Ok(c)
    }

    /// The template the conversation is rendered with.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The messages so far (user and assistant; the system prompt apart).
    pub fn messages(&self) -> &[Map<String, Json>] {
        &self.messages
    }

    /// Forgets the messages (system prompt and tools stay).
    pub fn clear(&mut self) {
        self.messages.clear();
    }

    /// The conversation as an OpenAI chat request with the generation prompt (before the
    /// first message, one empty user message, so that the tools can be checked).
    pub fn request(&self) -> Result<ChatRequest> {
        let mut messages: Vec<Json> = Vec::new();
        if let Some(s) = &self.system {
            messages.push(Json::Object(message("system", s)));
        }
        messages.extend(self.messages.iter().cloned().map(Json::Object));
        if messages.is_empty() {
            messages.push(Json::Object(message("user", "")));
        }
        let mut body = json!({ "messages": messages });
        if let Some(t) = &self.tools {
            body["tools"] = t.clone();
        }
        ChatRequest::from_json(&body)
    }

    /// The prompt text of the conversation so far, with the generation prompt.
    pub fn render(&self) -> Result<String> {
        self.template.render(&self.request()?)
    }

    /// One turn: `user` joins the conversation, the whole conversation is rendered, the
    /// tokens the session already holds are reused, and the answer is generated with
    /// `options`, each piece handed to `on_event` as the parser makes it certain; the
    /// answer joins the conversation as the model wrote it (markers included), so the next
    /// turn renders it as generated and reuses its tokens. On an error the conversation is
    /// as before.
    pub fn turn(
        &mut self,
        session: &mut Session,
        user: &str,
        on_event: &mut dyn FnMut(&ParseEvent),
    ) -> Result<TurnReport> {
        let on_event = &mut |e: &ParseEvent| {
            on_event(e);
            Flow::Continue
        };
        block_on(
            self.turn_async(session, user, on_event),
            "Conversation::turn_async",
        )
    }

    /// [`Conversation::turn`], awaiting each token (the form a browser tab calls);
    /// `on_event` may end the answer (a stop button) by returning [`Flow::Stop`].
    pub async fn turn_async(
        &mut self,
        session: &mut Session<'_>,
        user: &str,
        on_event: &mut dyn FnMut(&ParseEvent) -> Flow,
    ) -> Result<TurnReport> {
        self.messages.push(message("user", user));
        let report = self.answer(session, on_event).await;
        match &report {
            Ok(r) => self.messages.push(message("assistant", &r.text)),
            Err(_) => {
                self.messages.pop();
            }
        }
        report
    }

    async fn answer(
        &self,
        session: &mut Session<'_>,
        on_event: &mut dyn FnMut(&ParseEvent) -> Flow,
    ) -> Result<TurnReport> {
        let prompt = self.prompt_tokens(session, &self.render()?)?;
        let reused = session.reuse_prefix(&prompt)?;
        let mut parser = OutputParser::new(self.opens_reasoning);
        let mut events = Vec::new();
        let mut take = |piece: &str| {
            let mut flow = Flow::Continue;
            for e in parser.feed(piece) {
                if on_event(&e) == Flow::Stop {
                    flow = Flow::Stop;
                }
                events.push(e);
            }
            flow
        };
        let done = generate_text_async(
            session,
            &prompt[reused..],
            &self.options,
            &self.stops,
            false,
            &mut take,
        )
        .await?;
        for e in parser.finish() {
            let _ = on_event(&e);
            events.push(e);
        }
        Ok(TurnReport {
            prompt_tokens: prompt.len(),
            reused,
            processed: prompt.len() - reused,
            tokens: done.tokens,
            text: done.text,
            message: AssistantMessage::from_events(events),
            finish: done.finish,
            context: session.position(),
        })
    }

    /// The token ids of `rendered`: where it extends the text of the session's tokens (the
    /// previous turns as generated), those tokens and the rest encoded after them, so that
    /// a conversation that only grew is reused whole; otherwise `rendered` encoded afresh.
    fn prompt_tokens(&self, session: &Session, rendered: &str) -> Result<Vec<u32>> {
        let model = session.model();
        let held = session.history();
        if !held.is_empty() {
            let tokenizer = model.tokenizer.as_ref();
            if let Some(Ok(held_text)) = tokenizer.map(|t| t.decode(held, false)) {
                if let Some(rest) = rendered.strip_prefix(held_text.as_str()) {
                    let mut ids = held.to_vec();
                    ids.extend(model.encode(rest)?);
                    return Ok(ids);
                }
            }
        }
        model.encode(rendered)
    }

    /// The conversation as JSON: `system`, `tools` and `messages`.
    pub fn to_json(&self) -> Json {
        json!({ "system": self.system, "tools": self.tools, "messages": self.messages })
    }

    /// Takes the system prompt, tools and messages of `v` (made by [`Self::to_json`]).
    pub fn restore(&mut self, v: &Json) -> Result<()> {
        let bad =
            || Error::Input("the saved conversation is not an object with \"messages\"".into());
        let messages = v
            .get("messages")
            .and_then(Json::as_array)
            .ok_or_else(bad)?
            .iter()
            .map(|m| m.as_object().cloned().ok_or_else(bad))
            .collect::<Result<Vec<_>>>()?;
        let system = v.get("system").and_then(Json::as_str).map(String::from);
        let tools = v.get("tools").filter(|t| !t.is_null()).cloned();
        let before = (
            std::mem::replace(&mut self.system, system),
            std::mem::replace(&mut self.tools, tools),
            std::mem::replace(&mut self.messages, messages),
        );
        if let Err(e) = self.request() {
            (self.system, self.tools, self.messages) = before;
            return Err(e);
        }
        Ok(())
    }

    /// Saves the session and the conversation in one session file.
    pub fn save(&self, session: &Session, path: &Path) -> Result<()> {
        session.save_session_with_note(path, &self.to_json().to_string())
    }

    /// Loads a session file saved by [`Self::save`]: the session's tokens and the
    /// conversation's messages, so the chat continues where it was saved.
    pub fn load(&mut self, session: &mut Session, path: &Path) -> Result<()> {
        let note = session.load_session_with_note(path)?;
        if note.is_empty() {
            return Err(Error::file(
                path,
                "holds a session but no conversation (saved by wmoe generate?)",
            ));
        }
        let v: Json = serde_json::from_str(&note)
            .map_err(|e| Error::file(path, format!("holds a damaged conversation: {e}")))?;
        self.restore(&v)
            .map_err(|e| Error::file(path, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::context;
    use crate::runtime::{Model, SessionOptions};

    /// A turn keeps the answer as generated and cut at a stop string; a saved chat loads
    /// back with its messages; a session file without a conversation, or a malformed one,
    /// is refused and leaves the conversation as it was.
    #[test]
    fn turns_save_and_load() {
        let Some(ctx) = context() else { return };
        let model = Model::load_bundled(ctx, None, false).unwrap();
        let mut s = Session::new(ctx, &model, SessionOptions::default()).unwrap();
        let template = ChatTemplate::bundled().unwrap();
        let mut conv = Conversation::new(template, Some("sys".into()), None).unwrap();
        conv.options.max_tokens = 12;
        conv.options.ignore_eos = true;
        let first = conv.turn(&mut s, "Hi", &mut |_| {}).unwrap();
        let stop: String = first.text.chars().skip(3).take(1).collect();
        assert!(!stop.is_empty(), "{first:?}");
        conv.clear();
        s.reset();
        conv.stops = vec![stop.clone()];
        let mut streamed = Vec::new();
        let cut = conv
            .turn(&mut s, "Hi", &mut |e| streamed.push(e.clone()))
            .unwrap();
        assert_eq!(cut.text, first.text[..first.text.find(&stop).unwrap()]);
        assert_eq!(cut.finish, FinishReason::Stopped);
        assert_eq!(AssistantMessage::from_events(streamed), cut.message);
        assert_eq!(conv.messages().len(), 2);
        assert_eq!(conv.messages()[1]["content"], cut.text.as_str());

        let dir = std::env::temp_dir().join(format!("wmoe-conv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (saved, bare) = (dir.join("chat.bin"), dir.join("bare.bin"));
        conv.save(&s, &saved).unwrap();
        s.save_session(&bare).unwrap();
        let mut other = Conversation::new(ChatTemplate::bundled().unwrap(), None, None).unwrap();
        let mut s2 = Session::new(ctx, &model, SessionOptions::default()).unwrap();
        other.load(&mut s2, &saved).unwrap();
        assert_eq!(other.messages(), conv.messages());
        assert_eq!(other.render().unwrap(), conv.render().unwrap());
        assert_eq!(s2.history(), s.history());
        let e = other.load(&mut s2, &bare).unwrap_err().to_string();
        assert!(e.contains("no conversation"), "{e}");
        let e = other
            .restore(&json!({"messages": 3}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("messages"), "{e}");
        let e = other
            .restore(&json!({"messages": [], "tools": ["f"]}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tools[0]"), "{e}");
        assert_eq!(other.messages(), conv.messages());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
