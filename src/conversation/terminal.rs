//! The interactive loop of `wmoe chat`: reads messages and commands (`/reset`, `/save FILE`,
//! `/load FILE`, `/help`, `/quit`; a line ending in `\` continues on the next, and lines
//! between two `"""` lines are one message), streams each answer with its reasoning apart
//! (dimmed on a terminal, or hidden) and its tool calls, and reports per turn how many
//! prompt tokens were reused and how many processed.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use super::{Conversation, TurnReport};
use crate::chat::ParseEvent;
use crate::error::{Error, Result};
use crate::runtime::Session;

/// One thing the user entered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Message(String),
    Reset,
    Save(PathBuf),
    Load(PathBuf),
    Help,
    Quit,
    /// A command that is not one, with what is wrong.
    Invalid(String),
}

const HELP: &str =
    "/reset: start over   /save FILE: save the chat   /load FILE: continue a saved chat   /quit\n\
end a line with \\ to continue it on the next; lines between two \"\"\" lines are one message";

/// Reads one input through `line`, which shows a prompt (`true`: a continuation line) and
/// returns the next line without its newline (`None` at the end of input). `None` when the
/// input ends before anything was entered.
pub fn read_input(
    line: &mut dyn FnMut(bool) -> io::Result<Option<String>>,
) -> io::Result<Option<Input>> {
    let Some(first) = line(false)? else {
        return Ok(None);
    };
    if first.trim() == "\"\"\"" {
        let mut lines = Vec::new();
        while let Some(l) = line(true)? {
            if l.trim() == "\"\"\"" {
                break;
            }
            lines.push(l);
        }
        return Ok(Some(Input::Message(lines.join("\n"))));
    }
    if let Some(cmd) = first.trim().strip_prefix('/') {
        let (name, arg) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
        let arg = arg.trim();
        let path = |make: fn(PathBuf) -> Input| match arg {
            "" => Input::Invalid(format!("/{name} needs a file name")),
            a => make(PathBuf::from(a)),
        };
        return Ok(Some(match name {
            "reset" => Input::Reset,
            "save" => path(Input::Save),
            "load" => path(Input::Load),
            "help" => Input::Help,
            "quit" | "exit" => Input::Quit,
            _ => Input::Invalid(format!("unknown command /{name}; /help lists them")),
        }));
    }
    let mut text = first;
    while let Some(head) = text.strip_suffix('\\') {
        text = head.to_string();
        match line(true)? {
            Some(next) => {
                text.push('\n');
                text.push_str(&next);
            }
            None => break,
        }
    }
    Ok(Some(Input::Message(text)))
}

/// How the loop shows things.
#[derive(Clone, Copy, Debug, Default)]
pub struct TerminalOptions {
    /// ANSI styles (reasoning dimmed): for a terminal.
    pub color: bool,
    /// Leave the reasoning out.
    pub hide_reasoning: bool,
    /// After each turn, one line on `err` with the prompt tokens reused and processed.
    pub verbose: bool,
}

const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const PLAIN: &str = "\x1b[0m";

/// Writes one answer's events as they come, reasoning apart from the content.
struct Printer<'w> {
    out: &'w mut dyn Write,
    opts: TerminalOptions,
    in_reasoning: bool,
    wrote: bool,
}

impl Printer<'_> {
    fn event(&mut self, e: &ParseEvent) -> io::Result<()> {
        let (color, out) = (self.opts.color, &mut *self.out);
        match e {
            ParseEvent::Reasoning(_) if self.opts.hide_reasoning => return Ok(()),
            ParseEvent::Reasoning(t) => {
                if !self.in_reasoning {
                    write!(out, "{}thinking: ", if color { DIM } else { "" })?;
                    self.in_reasoning = true;
                }
                write!(out, "{t}")?;
            }
            ParseEvent::Content(t) => {
                self.end_reasoning()?;
                write!(self.out, "{t}")?;
            }
            ParseEvent::ToolCall(c) => {
                self.end_reasoning()?;
                let (on, off) = if color { (BOLD, PLAIN) } else { ("", "") };
                let sep = if self.wrote { "\n" } else { "" };
                writeln!(
                    self.out,
                    "{sep}{on}[tool call]{off} {}({})",
                    c.name, c.arguments
                )?;
            }
        }
        self.wrote = true;
        self.out.flush()
    }

    fn end_reasoning(&mut self) -> io::Result<()> {
        if self.in_reasoning {
            let off = if self.opts.color { PLAIN } else { "" };
            writeln!(self.out, "{off}")?;
            self.in_reasoning = false;
        }
        Ok(())
    }
}

fn io_err(e: io::Error) -> Error {
    Error::Input(format!("cannot use the terminal: {e}"))
}

/// The verbose line of turn `n`.
fn turn_line(n: usize, r: &TurnReport) -> String {
    format!(
        "[turn {n}: {} prompt tokens, {} reused, {} processed; {} generated ({}); context {}]",
        r.prompt_tokens,
        r.reused,
        r.processed,
        r.tokens.len(),
        r.finish.name(),
        r.context
    )
}

/// Runs the chat until `/quit` or the end of `input`: answers on `out`, notes and errors
/// on `err`. A turn that fails (a context too short) is reported and the chat goes on.
pub fn run_terminal(
    session: &mut Session,
    conv: &mut Conversation,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    opts: TerminalOptions,
) -> Result<()> {
    writeln!(out, "wmoe chat. {HELP}").map_err(io_err)?;
    let mut turns = 0;
    loop {
        let mut line = |more: bool| -> io::Result<Option<String>> {
            write!(out, "{}", if more { ". " } else { "> " })?;
            out.flush()?;
            let mut buf = String::new();
            if input.read_line(&mut buf)? == 0 {
                return Ok(None);
            }
            let trimmed = buf.trim_end_matches(['\n', '\r']).len();
            buf.truncate(trimmed);
            Ok(Some(buf))
        };
        let Some(cmd) = read_input(&mut line).map_err(io_err)? else {
            writeln!(out).map_err(io_err)?;
            return Ok(());
        };
        let note = match cmd {
            Input::Quit => return Ok(()),
            Input::Message(m) if m.trim().is_empty() => continue,
            Input::Message(m) => {
                let mut printer = Printer {
                    out: &mut *out,
                    opts,
                    in_reasoning: false,
                    wrote: false,
                };
                let mut failed = None;
                let report = conv.turn(session, &m, &mut |e| {
                    if let Err(e) = printer.event(e) {
                        failed.get_or_insert(e);
                    }
                });
                if let Some(e) = failed {
                    return Err(io_err(e));
                }
                printer.end_reasoning().map_err(io_err)?;
                writeln!(out).map_err(io_err)?;
                match report {
                    Ok(r) => {
                        turns += 1;
                        opts.verbose.then(|| turn_line(turns, &r))
                    }
                    Err(e) => Some(format!("error: {e}")),
                }
            }
            Input::Reset => {
                conv.clear();
                session.reset();
                Some("(conversation cleared)".into())
            }
            Input::Save(path) => Some(match conv.save(session, &path) {
                Ok(()) => format!("(saved to {})", path.display()),
                Err(e) => format!("error: {e}"),
            }),
            Input::Load(path) => Some(match conv.load(session, &path) {
                Ok(()) => format!(
                    "(loaded {}: {} messages, {} tokens)",
                    path.display(),
                    conv.messages().len(),
                    session.position()
                ),
                Err(e) => format!("error: {e}"),
            }),
            Input::Help => Some(HELP.into()),
            Input::Invalid(msg) => Some(msg),
        };
        if let Some(note) = note {
            writeln!(err, "{note}").map_err(io_err)?;
            err.flush().map_err(io_err)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inputs `lines` give, in order.
    fn inputs(lines: &[&str]) -> Vec<(Input, usize)> {
        let mut it = lines.iter();
        let mut got = Vec::new();
        loop {
            let mut continuations = 0;
            let mut line = |more: bool| {
                continuations += more as usize;
                Ok(it.next().map(|l| l.to_string()))
            };
            match read_input(&mut line).unwrap() {
                Some(i) => got.push((i, continuations)),
                None => return got,
            }
        }
    }

    #[test]
    fn commands_messages_and_multiline_input() {
        let got = inputs(&[
            "hello",
            "first \\",
            "second\\",
            "third",
            "\"\"\"",
            "a \\",
            "",
            "b",
            "\"\"\"",
            " /save  chat.bin ",
            "/load",
            "/reset",
            "/nope",
            "/quit",
        ]);
        let m = |s: &str| Input::Message(s.into());
        assert_eq!(
            got,
            vec![
                (m("hello"), 0),
                (m("first \nsecond\nthird"), 2),
                (m("a \\\n\nb"), 4),
                (Input::Save("chat.bin".into()), 0),
                (Input::Invalid("/load needs a file name".into()), 0),
                (Input::Reset, 0),
                (
                    Input::Invalid("unknown command /nope; /help lists them".into()),
                    0
                ),
                (Input::Quit, 0),
            ]
        );
        // Input that ends inside a continuation or a block is the message so far.
        assert_eq!(inputs(&["x\\"]), vec![(m("x"), 1)]);
        assert_eq!(inputs(&["\"\"\"", "y"]), vec![(m("y"), 2)]);
    }
}
