//! The demo page (web/index.html + web/demo.js, no build step) in headless Chromium on
//! WebGPU, used as a person uses it: opened with `?model=` naming a GGUF fixture this test
//! serves with `Range` support, the load progress followed to its end, then a chat through
//! the page's input: a greedy answer streamed and equal to native wmoe's, a long answer
//! stopped with the stop button, and a sampled answer (temperature > 0, a fixed seed) that
//! repeats across two new chats and equals native wmoe's with the same settings.

use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use super::browser::Browser;
use super::{built, chromium, one_at_a_time, root, serve, skip};

/// The smallest GGUF fixture with a tokenizer and a chat template.
const FIXTURE: &str = "llamacpp-tiny-moe-Q4_0.gguf";
const PROMPT: &str = "Hello";
const WAIT: Duration = Duration::from_secs(120);

/// One answer's sampling settings, as the page's fields take them.
struct Settings {
    temperature: f32,
    top_p: f32,
    seed: u64,
    max_tokens: usize,
}

const GREEDY: Settings = Settings {
    temperature: 0.0,
    top_p: 0.9,
    seed: 0,
    max_tokens: 24,
};

const SAMPLED: Settings = Settings {
    temperature: 0.9,
    top_p: 0.95,
    seed: 1234,
    max_tokens: 24,
};

/// What native wmoe answers `user` in a new chat with the fixture under each of `settings`
/// (the model's other sampling defaults, f32 KV cache, as the page's bindings run it): the
/// answer's text and its number of tokens; `None` without a native adapter.
fn native_answers(user: &str, settings: &[&Settings]) -> Option<Vec<(String, usize)>> {
    let path = root().join("assets/gguf").join(FIXTURE);
    let ctx = wmoe::gpu::testing::context()?;
    let model = wmoe::Model::load_with(ctx, &path, None, false).unwrap();
    let answers = settings
        .iter()
        .map(|s| {
            let template = wmoe::ChatTemplate::from_model(&path).unwrap();
            let mut chat = wmoe::Conversation::new(template, None, None).unwrap();
            chat.options.max_tokens = s.max_tokens;
            chat.options.sampling = wmoe::SamplingParams {
                temperature: s.temperature,
                top_p: s.top_p,
                seed: s.seed,
                ..model.generation
            };
            let opts = wmoe::SessionOptions {
                max_context: 4096,
                kv: wmoe::KvType::F32,
                ..wmoe::SessionOptions::default()
            };
            let mut session = wmoe::Session::new(ctx, &model, opts).unwrap();
            let turn = chat.turn(&mut session, user, &mut |_| {}).unwrap();
            (turn.message.content.unwrap_or_default(), turn.tokens.len())
        })
        .collect();
    Some(answers)
}

/// Installed before the page's own scripts: records every change of the load progress bar
/// (`[value, max]`), the send or stop button enabled while it shows, and every change of the
/// length of the last answer, as the page makes them, so that no step is lost between two
/// polls.
const RECORDER: &str = r##"
window.__demo = { progress: [], lengths: [], enabledWhileLoading: [] };
new MutationObserver(() => {
  const d = window.__demo;
  const bar = document.getElementById("progress");
  if (bar) {
    const last = d.progress[d.progress.length - 1];
    if (!last || last[0] !== bar.value || last[1] !== bar.max) d.progress.push([bar.value, bar.max]);
    const enabled = ["send-btn", "stop"].filter((id) => !document.getElementById(id)?.disabled);
    if (!bar.hidden && enabled.length) d.enabledWhileLoading.push(enabled);
  }
  const answers = document.querySelectorAll("#log .msg.assistant");
  if (answers.length) {
    const n = answers[answers.length - 1].textContent.length;
    if (d.lengths[d.lengths.length - 1] !== n) d.lengths.push(n);
  }
}).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
"##;

/// What the page shows, in one object.
const STATE: &str = r##"(() => {
  const $ = (id) => document.getElementById(id);
  const answers = [...document.querySelectorAll("#log .msg.assistant")];
  return {
    status: $("status").textContent,
    messages: document.querySelectorAll("#log .msg").length,
    answer: answers.length ? answers[answers.length - 1].textContent : null,
    ready: !$("prompt").disabled && !$("send-btn").disabled && $("stop").disabled
      && !$("new-chat").disabled && !$("load-url").disabled,
    stoppable: !$("stop").disabled,
    progress_hidden: $("progress").hidden,
    progress: window.__demo.progress,
    lengths: window.__demo.lengths,
    enabled_while_loading: window.__demo.enabledWhileLoading,
  };
})()"##;

fn text(v: &Json, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_string()
}

/// Sets the page's field `id` (its `value`, or `checked` for a checkbox) as a person does.
fn set(b: &mut Browser, id: &str, value: Json) {
    let property = if value.is_boolean() {
        "checked"
    } else {
        "value"
    };
    let done = b.eval(&format!(
        "(() => {{ const e = document.getElementById({}); if (!e) return false; e.{property} = {value}; \
         e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change')); return true; }})()",
        json!(id)
    ));
    assert_eq!(done, json!(true), "no field #{id}");
}

/// Fills in the sampling fields with `s` (EOS honoured or not as `ignore_eos`).
fn settings(b: &mut Browser, s: &Settings, ignore_eos: bool) {
    set(b, "temperature", json!(s.temperature.to_string()));
    set(b, "top-p", json!(s.top_p.to_string()));
    set(b, "seed", json!(s.seed.to_string()));
    set(b, "max-tokens", json!(s.max_tokens.to_string()));
    set(b, "ignore-eos", json!(ignore_eos));
}

/// Types `message` into the page's input and sends it with Enter; checks the page shows it
/// and the answer's place at once.
fn send(b: &mut Browser, message: &str) {
    let before = b.eval(STATE);
    assert_eq!(
        before["ready"], true,
        "the page is not ready to send: {before}"
    );
    b.eval("window.__demo.lengths = []; true");
    b.type_into("#prompt", message);
    b.key("Enter", "Enter", 13);
    let messages = before["messages"].as_u64().unwrap() + 2;
    let s = b.eval(STATE);
    assert_eq!(
        s["messages"], messages,
        "the message and its answer shown: {s}"
    );
}

/// Waits for the page to be ready again after an answer, and checks it shows no error.
fn finished(b: &mut Browser, what: &str) -> Json {
    let s = b.wait_for(what, WAIT, STATE, |s| s["ready"] == true);
    assert!(!text(&s, "status").starts_with("error"), "{what}: {s}");
    s
}

/// The completion tokens the page's status line reports (`N tokens in T s ...; REASON`)
/// and the finish reason.
fn reported(s: &Json) -> (usize, String) {
    let status = text(s, "status");
    let n = status
        .split(" tokens in ")
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no token count in the status: {status}"));
    let reason = status.rsplit("; ").next().unwrap_or_default().to_string();
    (n, reason)
}

/// Sends `message` with `s` and returns the finished answer and its number of tokens (as
/// the page reports it), checking it streamed: its text grew in more than one step, never
/// shrank, and ended as shown.
fn streamed_answer(b: &mut Browser, message: &str, s: &Settings, what: &str) -> (String, usize) {
    settings(b, s, false);
    send(b, message);
    let t0 = Instant::now();
    let done = finished(b, what);
    let answer = text(&done, "answer");
    let lengths: Vec<u64> = done["lengths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    let steps = lengths.iter().filter(|&&n| n > 0).count();
    assert!(
        steps > 1 && lengths.windows(2).all(|w| w[0] < w[1]),
        "{what}: the answer did not grow piece by piece: lengths {lengths:?}, {done}"
    );
    assert_eq!(
        *lengths.last().unwrap() as usize,
        answer.encode_utf16().count(),
        "{what}: {done}"
    );
    let (tokens, reason) = reported(&done);
    eprintln!(
        "demo page, {what}: {tokens} tokens ({reason}) in {:.1} s, {steps} visible steps: {answer:?}",
        t0.elapsed().as_secs_f64()
    );
    (answer, tokens)
}

#[test]
fn demo_page_loads_a_gguf_and_chats_streams_stops_and_samples() {
    let Some(want) = native_answers(PROMPT, &[&GREEDY, &SAMPLED]) else {
        return skip("no native GPU adapter for the chat reference");
    };
    assert!(
        !want[0].0.is_empty(),
        "the greedy reference answer is empty"
    );
    assert_ne!(
        want[0].0, want[1].0,
        "the sampled reference equals the greedy one: pick another seed, or the page's sampling goes untested"
    );
    let _turn = one_at_a_time();
    let Some(dir) = built() else {
        return;
    };
    let url = serve(dir, None);
    let Some(mut b) = chromium() else {
        return;
    };
    b.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({ "source": RECORDER }),
    );

    // Opened with ?model=: the page fills in its URL field, loads, and says so.
    let t0 = Instant::now();
    let model = format!("{url}/assets/gguf/{FIXTURE}");
    b.goto(&format!("{url}/demo/index.html?model={model}"));
    let loaded = b.wait_for("the model's load", WAIT, STATE, |s| {
        s["ready"] == true || text(s, "status").starts_with("cannot")
    });
    let status = text(&loaded, "status");
    assert!(
        status.starts_with(&format!("{model} loaded in ")),
        "the page did not load the model: {loaded}"
    );
    assert!(!status.contains(";  ("), "an empty adapter name: {status}");
    assert_eq!(b.eval("document.getElementById('url').value"), json!(model));
    // The progress bar went up to its total (the fixture's weight bytes), then hid.
    let progress = loaded["progress"].as_array().unwrap();
    let total = progress.last().unwrap()[1].as_f64().unwrap();
    assert!(
        total > 1.0 && progress.last().unwrap()[0].as_f64() == Some(total),
        "the load progress did not reach its total: {progress:?}"
    );
    assert!(
        progress
            .windows(2)
            .all(|w| w[0][0].as_f64() <= w[1][0].as_f64()),
        "the load progress went back: {progress:?}"
    );
    assert_eq!(loaded["progress_hidden"], true, "{loaded}");
    assert_eq!(
        loaded["enabled_while_loading"],
        json!([]),
        "nothing can be sent or stopped while the model loads"
    );
    eprintln!(
        "demo page: {FIXTURE} loaded in {:.1} s ({} progress steps); {status}",
        t0.elapsed().as_secs_f64(),
        progress.len()
    );

    // A greedy answer streams in and equals native wmoe's.
    let greedy = streamed_answer(&mut b, PROMPT, &GREEDY, "greedy answer");
    assert_eq!(
        greedy, want[0],
        "the page's greedy answer and its tokens vs native wmoe"
    );

    // A long answer (EOS ignored), stopped with the stop button while it streams: nothing is
    // added after, the page is ready again, and it says the answer was stopped.
    let long = Settings {
        max_tokens: 2000,
        ..GREEDY
    };
    settings(&mut b, &long, true);
    send(&mut b, "Tell me a very long story.");
    b.wait_for("the long answer to stream", WAIT, STATE, |s| {
        !text(s, "answer").is_empty()
    });
    b.click("#stop");
    let stopped = finished(&mut b, "the stopped answer");
    let (tokens, reason) = reported(&stopped);
    assert_eq!(reason, "stopped", "{stopped}");
    assert!(tokens < long.max_tokens, "stopped after {tokens} tokens");
    std::thread::sleep(Duration::from_millis(500));
    let after = b.eval(STATE);
    assert_eq!(
        after["answer"], stopped["answer"],
        "text added after the stop"
    );
    assert_eq!(after["ready"], true, "{after}");
    eprintln!("demo page: the long answer stopped after {tokens} tokens");

    // Sampling (temperature > 0, a fixed seed) in two new chats: the same answer twice,
    // native wmoe's with the same settings.
    let mut sampled = Vec::new();
    for run in ["first", "second"] {
        b.click("#new-chat");
        let fresh = b.eval(STATE);
        assert_eq!(fresh["messages"], 0, "a new chat starts empty: {fresh}");
        let what = format!("{run} sampled answer");
        sampled.push(streamed_answer(&mut b, PROMPT, &SAMPLED, &what));
    }
    assert_eq!(sampled[0], sampled[1], "the same seed, another answer");
    assert_eq!(
        sampled[0], want[1],
        "the page's sampled answer and its tokens vs native wmoe"
    );
    assert!(b.errors().is_empty(), "page errors: {:?}", b.errors());
}
