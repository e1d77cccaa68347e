//! The chat page at `/`, driven in headless Chromium. Against `wmoe serve` (the binary, on the
//! bundled model, one slot, no queue, an API key): the key entered, a message sent and its
//! streamed answer shown, a long generation stopped mid-stream (its slot freed at once), a new
//! conversation started, and everything still there after a reload. Against a server whose
//! engine plays a fixed text (the bundled model never writes reasoning or tool calls): the
//! reasoning folded apart, the tool call shown, the settings in the request.

mod browser;
#[path = "../common/serving.rs"]
mod serving;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use browser::Browser;
use serde_json::{json, Value as Json};
use serving::bundled_text;
use wmoe::serve::{Engine, Event, Limits};
use wmoe::FinishReason;

const KEY: &str = "page-test-key";
const WAIT: Duration = Duration::from_secs(60);

/// `wmoe serve` on the bundled model on an ephemeral port; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wmoe"))
            .args(["serve", "--port", "0", "--parallel", "1", "--queue", "0"])
            .args(["--api-key", KEY])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("wmoe serve ended before listening: {seen}");
            };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(page) = line.split("chat page: http://").nth(1) {
                break page.trim_end_matches('/').parse().unwrap();
            }
        };
        // Keep reading its stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, addr }
    }

    /// A `/metrics` sample.
    fn metric(&self, name: &str) -> f64 {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in {reply}"))
            .parse()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page shows, in one object.
const STATE: &str = r##"(() => {
  const q = (s) => document.querySelector(s);
  const all = (s) => [...document.querySelectorAll(s)];
  const answers = all("#messages .msg.assistant");
  const last = answers[answers.length - 1];
  return {
    conversations: all("#conversations li .open").map((b) => b.textContent),
    current: q("#conversations [aria-current=true]")?.textContent ?? null,
    messages: all("#messages .msg").length,
    user: all("#messages .msg.user .content").map((c) => c.textContent),
    answer: last ? last.querySelector(".content").textContent : null,
    meta: last ? last.querySelector(".meta").textContent : null,
    streaming: q("#messages .msg.streaming") !== null,
    busy: document.body.dataset.busy === "true",
    send_disabled: q("#send").disabled,
    stop_disabled: q("#stop").disabled,
    model: q("#model-name").textContent,
    status: q("#status").textContent,
    settings_open: q("#settings").open,
  };
})()"##;

fn text(v: &Json, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_string()
}

/// Idle: the answer finished (or stopped) and the page ready for the next message.
fn idle(v: &Json) -> bool {
    v["busy"] == false && v["send_disabled"] == false && v["stop_disabled"] == true
}

/// Types a message and sends it with Enter.
fn send(b: &mut Browser, message: &str) {
    b.type_into("#prompt", message);
    b.key("Enter", "Enter", 13);
}

#[test]
fn the_chat_page_streams_stops_and_keeps_conversations() {
    let Some(mut b) = Browser::launch() else {
        return;
    };
    if wmoe::gpu::testing::context().is_none() {
        return;
    }
    let server = Server::start();
    let t0 = Instant::now();
    b.goto(&format!("http://{}/", server.addr));

    // Without the key the page says so and opens its settings; with it, it shows the model.
    let s = b.wait_for("the missing key reported", WAIT, STATE, |v| {
        text(v, "status").contains("API key")
    });
    assert_eq!(s["settings_open"], true, "{s}");
    assert_eq!(s["conversations"], json!(["New conversation"]), "{s}");
    b.type_into("#api-key", KEY);
    b.eval("document.activeElement.blur()");
    let s = b.wait_for("the model's name", WAIT, STATE, |v| v["model"] != "");
    assert_eq!(s["status"], "", "{s}");

    // A message, and its streamed answer.
    b.type_into("#temperature", "0");
    send(&mut b, "What is a cat?");
    let s = b.wait_for("the first answer", WAIT, STATE, |v| {
        idle(v) && v["messages"] == 2 && text(v, "meta").contains("finish:")
    });
    assert_eq!(s["user"], json!(["What is a cat?"]), "{s}");
    assert!(!text(&s, "answer").is_empty(), "{s}");
    assert!(text(&s, "meta").contains("tokens"), "usage shown: {s}");
    assert_eq!(s["conversations"], json!(["What is a cat?"]), "{s}");
    let first_answer = text(&s, "answer");
    eprintln!("first answer after {:.1?}: {first_answer:?}", t0.elapsed());

    // A long generation (EOS ignored), stopped mid-stream: the text grows while it streams,
    // stays as it was when stopped, and the slot is free at once.
    b.type_into("#max-tokens", "3000");
    b.type_into("#extra", r#"{"ignore_eos": true}"#);
    let generated_before = server.metric("wmoe_generation_tokens_total");
    send(&mut b, "Tell me a very long story.");
    let s = b.wait_for("streamed text", WAIT, STATE, |v| {
        v["streaming"] == true && text(v, "answer").len() >= 20
    });
    assert_eq!(s["stop_disabled"], false, "{s}");
    let seen = text(&s, "answer").len();
    b.wait_for("the text growing", WAIT, STATE, |v| {
        v["streaming"] == true && text(v, "answer").len() > seen
    });
    b.click("#stop");
    let stopped = b.wait_for("the stop", WAIT, STATE, idle);
    assert_eq!(stopped["meta"], "stopped", "{stopped}");
    let start = Instant::now();
    while server.metric("wmoe_requests_running") != 0.0 {
        assert!(
            start.elapsed() < WAIT,
            "the stopped request's slot was not freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let generated = server.metric("wmoe_generation_tokens_total") - generated_before;
    assert!(
        generated < 3000.0,
        "the generation stopped early: {generated} tokens"
    );
    eprintln!(
        "stopped after {generated} tokens, slot freed {:.1?} after the stop",
        start.elapsed()
    );
    let s = b.eval(STATE);
    assert_eq!(
        s["answer"], stopped["answer"],
        "nothing added after the stop"
    );

    // A new conversation: listed first, empty, and the one shown.
    b.click("#new-chat");
    let s = b.wait_for("the new conversation", WAIT, STATE, |v| {
        v["conversations"].as_array().map(Vec::len) == Some(2)
    });
    assert_eq!(
        s["conversations"],
        json!(["New conversation", "What is a cat?"]),
        "{s}"
    );
    assert_eq!(s["current"], "New conversation", "{s}");
    assert_eq!(s["messages"], 0, "the new conversation is empty: {s}");

    // After a reload (the browser's storage) both are there, the new one still shown; it
    // gets an answer (the one slot is free: with no queue a busy server would refuse it).
    b.reload();
    let s = b.wait_for("the reloaded page", WAIT, STATE, |v| {
        v["model"] != "" && v["conversations"].as_array().map(Vec::len) == Some(2)
    });
    assert_eq!(s["current"], "New conversation", "{s}");
    assert_eq!(s["messages"], 0, "{s}");
    assert_eq!(
        s["settings_open"], false,
        "the key is kept: no error opens them: {s}"
    );
    b.click("#settings summary");
    b.type_into("#max-tokens", "");
    b.type_into("#extra", "");
    send(&mut b, "Hello");
    let s = b.wait_for("the new conversation's answer", WAIT, STATE, |v| {
        idle(v) && v["messages"] == 2 && text(v, "meta").contains("finish:")
    });
    assert_eq!(
        s["conversations"],
        json!(["Hello", "What is a cat?"]),
        "{s}"
    );

    // The first conversation, selected again, has its four messages, the stopped one last.
    b.click("#conversations li:nth-child(2) .open");
    let s = b.wait_for("the first conversation", WAIT, STATE, |v| {
        v["messages"] == 4
    });
    assert_eq!(
        s["user"],
        json!(["What is a cat?", "Tell me a very long story."]),
        "{s}"
    );
    assert_eq!(s["meta"], "stopped", "{s}");
    assert_eq!(s["current"], "What is a cat?", "{s}");

    let errors = b.errors();
    assert!(errors.is_empty(), "errors in the page: {errors:?}");
    eprintln!("chat page test took {:.1?}", t0.elapsed());
}

/// What a scripted job was asked: its prompt as text, temperature, top_p, max_tokens.
struct Asked {
    prompt: String,
    temperature: f32,
    top_p: f32,
    max_tokens: usize,
}

/// An in-process server (no API key) whose engine answers every request with the tokens of
/// `script`, a token every 10 ms, then EOS; each job's request goes to the receiver.
fn scripted_server(script: &str) -> (SocketAddr, Receiver<Asked>, tokio::runtime::Runtime) {
    let t = bundled_text();
    let mut tokens = t
        .tokenizer
        .encode(script, false)
        .unwrap()
        .get_ids()
        .to_vec();
    tokens.push(t.eos[0]);
    let (asked, jobs_seen) = channel();
    let engine = Engine::with_worker(1, 4, move |jobs, _stats| {
        for job in jobs {
            let _ = asked.send(Asked {
                prompt: t.tokenizer.decode(&job.prompt, false).unwrap(),
                temperature: job.sampling.temperature,
                top_p: job.sampling.top_p,
                max_tokens: job.max_tokens,
            });
            job.send(Event::Started { cached_tokens: 0 });
            let mut reason = FinishReason::Eos;
            for &tok in &tokens {
                std::thread::sleep(Duration::from_millis(10));
                if !job.send(Event::Token(tok)) {
                    reason = FinishReason::Stopped;
                    break;
                }
            }
            job.send(Event::Finished(reason));
        }
    });
    let limits = Limits {
        context: 4096,
        max_body_bytes: 1 << 20,
        max_tokens: 1000,
        max_connections: 16,
        api_key: None,
        idle_timeout: Duration::from_secs(10),
    };
    let (addr, rt) = serving::serve(engine, bundled_text(), limits);
    (addr, jobs_seen, rt)
}

/// The last answer's reasoning and tool calls as the page shows them.
const ANSWER_PARTS: &str = r##"(() => {
  const all = [...document.querySelectorAll("#messages .msg.assistant")];
  const a = all[all.length - 1];
  const r = a.querySelector(".reasoning");
  return {
    reasoning_shown: !r.hidden,
    reasoning_open: r.open,
    summary: r.querySelector("summary").textContent,
    reasoning: a.querySelector(".reasoning-text").textContent,
    content: a.querySelector(".content").textContent,
    calls: [...a.querySelectorAll(".tool-call")].map((c) => ({
      name: c.querySelector(".tool-name").textContent,
      args: c.querySelector(".tool-args").textContent,
    })),
  };
})()"##;

#[test]
fn reasoning_tool_calls_and_settings_reach_the_page_and_the_server() {
    let Some(mut b) = Browser::launch() else {
        return;
    };
    let (addr, asked, _rt) = scripted_server(
        "<think>The user wants the weather.</think>\nLet me check.\n<|tool_call_start|>[get_weather(city=\"Paris\", days=2)]<|tool_call_end|>",
    );
    b.goto(&format!("http://{addr}/"));
    b.wait_for("the model's name", WAIT, STATE, |v| v["model"] != "");
    b.click("#settings summary");

    // Tools that are not JSON: said, nothing sent, the message kept in the box.
    b.type_into("#tools", "[{");
    send(&mut b, "Weather in Paris?");
    let s = b.wait_for("the tools error", WAIT, STATE, |v| {
        text(v, "status").contains("Tools are not valid JSON")
    });
    assert_eq!(s["messages"], 0, "{s}");
    assert_eq!(
        b.eval("document.querySelector('#prompt').value"),
        "Weather in Paris?"
    );

    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]);
    b.type_into("#tools", &tools.to_string());
    b.type_into("#system-prompt", "You answer in one line.");
    b.type_into("#temperature", "0.5");
    b.type_into("#top-p", "0.9");
    b.type_into("#max-tokens", "100");
    b.type_into("#prompt", "");
    send(&mut b, "Weather in Paris?");
    let s = b.wait_for("the answer with a tool call", WAIT, STATE, |v| {
        idle(v) && text(v, "meta").contains("finish:")
    });
    assert!(text(&s, "meta").starts_with("finish: tool_calls"), "{s}");
    let parts = b.eval(ANSWER_PARTS);
    assert_eq!(parts["reasoning_shown"], true, "{parts}");
    assert_eq!(parts["reasoning_open"], false, "folded: {parts}");
    assert_eq!(parts["summary"], "Reasoning", "{parts}");
    assert_eq!(parts["reasoning"], "The user wants the weather.", "{parts}");
    assert_eq!(parts["content"], "Let me check.", "{parts}");
    let calls = parts["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{parts}");
    assert_eq!(calls[0]["name"], "Tool call: get_weather", "{parts}");
    let args: Json = serde_json::from_str(calls[0]["args"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris", "days": 2}), "{parts}");
    b.click("#messages .msg.assistant .reasoning summary");
    assert_eq!(b.eval(ANSWER_PARTS)["reasoning_open"], true, "unfolds");

    // The settings reached the server: the system prompt and tools in the prompt, sampling.
    let first = asked.recv_timeout(WAIT).unwrap();
    for part in [
        "You answer in one line.",
        "get_weather",
        "Weather in Paris?",
    ] {
        assert!(first.prompt.contains(part), "{part} in {}", first.prompt);
    }
    assert_eq!(
        (first.temperature, first.top_p, first.max_tokens),
        (0.5, 0.9, 100)
    );

    // The conversation as kept in the browser's storage: the answer with its parts.
    let kept = b.eval("JSON.parse(localStorage.getItem('wmoe.chat.conversations'))[0].messages[1]");
    assert_eq!(kept["reasoning"], "The user wants the weather.", "{kept}");
    assert_eq!(
        kept["tool_calls"][0]["function"]["name"], "get_weather",
        "{kept}"
    );

    // The next turn sends the conversation so far.
    send(&mut b, "Thanks");
    b.wait_for("the second answer", WAIT, STATE, |v| {
        idle(v) && v["messages"] == 4 && text(v, "meta").contains("finish:")
    });
    let second = asked.recv_timeout(WAIT).unwrap();
    for part in ["Weather in Paris?", "Let me check.", "Thanks"] {
        assert!(second.prompt.contains(part), "{part} in {}", second.prompt);
    }
    let errors = b.errors();
    assert!(errors.is_empty(), "errors in the page: {errors:?}");
}
