//! The chat page at `/`, driven in headless Chromium against `wmoe serve` (the binary, on the
//! bundled model, one slot, no queue, an API key): the key entered, a message sent and its
//! streamed answer shown, a long generation stopped mid-stream (its slot freed at once), a new
//! conversation started, and everything still there after a reload.

mod browser;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use browser::Browser;
use serde_json::{json, Value as Json};

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
