//! `wmoe serve` over real HTTP on 127.0.0.1 (an ephemeral port).
//!
//! Two kinds of engine: the GPU engine with the bundled model (random weights: it writes
//! gibberish, never reasoning or tool calls on its own), for what the model run decides —
//! streaming vs whole, prefix reuse across turns, a disconnect freeing its slot, the CLI;
//! and a scripted worker behind the same engine boundary that plays a fixed text, tokenized
//! by the real tokenizer, for what the HTTP layer decides — reasoning and tool-call shapes,
//! tool_choice, stop strings, errors, the full queue. The scripted tests test the HTTP
//! layer (template, detokenization, parser, OpenAI shapes), not the model.

#[path = "common/serving.rs"]
mod serving;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use serving::bundled_text;
use wmoe::serve::{Engine, EngineOptions, Event, Job, Limits, ModelText, Stats};
use wmoe::{gpu::testing, ChatTemplate, DeviceOptions, FinishReason, ModelFiles};

const EOS: u32 = 7;

fn limits(api_key: Option<&str>) -> Limits {
    Limits {
        context: 512,
        max_body_bytes: 64 << 10,
        max_tokens: 400,
        max_connections: 16,
        idle_timeout: Duration::from_secs(10),
        api_key: api_key.map(String::from),
    }
}

/// A server on an ephemeral port of 127.0.0.1, stopped when dropped.
struct Server {
    addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

fn start(engine: Engine, text: ModelText, limits: Limits) -> Server {
    let (addr, rt) = serving::serve(engine, text, limits);
    Server { addr, _rt: rt }
}

/// The GPU engine with the bundled model (`None`: no adapter, test skipped).
fn gpu_server(slots: usize, queue: usize) -> Option<Server> {
    testing::context()?;
    let opts = EngineOptions {
        device: DeviceOptions::from_env(),
        quant: None,
        slots,
        queue,
        context: 512,
        chunk: 16,
        kv: None,
    };
    let describe = |f: &ModelFiles| ModelText::new(f, ChatTemplate::bundled()?);
    let (engine, text) = Engine::start(ModelFiles::bundled, describe, opts).unwrap();
    Some(start(engine, text, limits(None)))
}

/// A scripted engine: every job gets `Started`, then the tokens of `script` (a token every
/// `pace`), then EOS, within its `max_tokens`; it stops when the client is gone. `check`
/// sees each job first.
fn scripted_server(
    script: &str,
    pace: Duration,
    queue: usize,
    api_key: Option<&str>,
    check: impl Fn(&Job, &ModelText) + Send + 'static,
) -> Server {
    let t = bundled_text();
    let mut tokens = t
        .tokenizer
        .encode(script, false)
        .unwrap()
        .get_ids()
        .to_vec();
    tokens.push(EOS);
    let t2 = bundled_text();
    let worker = move |jobs: Receiver<Job>, stats: Arc<Stats>| {
        for job in jobs {
            check(&job, &t2);
            stats
                .running
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            job.send(Event::Started { cached_tokens: 0 });
            let mut reason = FinishReason::Eos;
            for (i, &tok) in tokens.iter().enumerate() {
                if i == job.max_tokens {
                    reason = FinishReason::Length;
                    break;
                }
                std::thread::sleep(pace);
                if !job.send(Event::Token(tok)) {
                    reason = FinishReason::Stopped;
                    break;
                }
            }
            job.send(Event::Finished(reason));
            stats
                .running
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    };
    start(Engine::with_worker(1, queue, worker), t, limits(api_key))
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of a server-sent event stream, up to `[DONE]` (which must end it).
    fn events(&self) -> Vec<Json> {
        let data: Vec<&str> = self
            .body
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"), "{}", self.body);
        data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

/// Sends a request and the head of it; the stream it returns is at the body.
fn send(addr: SocketAddr, method: &str, path: &str, body: &str, extra: &[&str]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for h in extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    s
}

fn http(addr: SocketAddr, method: &str, path: &str, body: &str, extra: &[&str]) -> Reply {
    let mut raw = Vec::new();
    send(addr, method, path, body, extra)
        .read_to_end(&mut raw)
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

fn post(addr: SocketAddr, path: &str, body: &Json) -> Reply {
    http(addr, "POST", path, &body.to_string(), &[])
}

/// A streamed chat completion put back together: (message in the whole response's shape,
/// finish_reason, usage); every chunk checked for its shape on the way.
fn reassemble(events: &[Json]) -> (Json, String, Json) {
    let mut content: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut calls: Vec<Json> = Vec::new();
    let mut finish = String::new();
    let mut usage = Json::Null;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["object"], "chat.completion.chunk", "{e}");
        assert!(e["id"].as_str().unwrap().starts_with("chatcmpl-"));
        let choices = e["choices"].as_array().unwrap();
        if choices.is_empty() {
            usage = e["usage"].clone();
            continue;
        }
        let (c, delta) = (&choices[0], &choices[0]["delta"]);
        if i == 0 {
            assert_eq!(delta["role"], "assistant", "{e}");
        }
        if let Some(f) = c["finish_reason"].as_str() {
            finish = f.to_string();
        }
        if let Some(t) = delta["content"].as_str() {
            if !t.is_empty() {
                content.get_or_insert_with(String::new).push_str(t);
            }
        }
        if let Some(t) = delta["reasoning_content"].as_str() {
            reasoning.get_or_insert_with(String::new).push_str(t);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap() as usize;
            assert_eq!(index, calls.len(), "calls arrive whole, in order: {e}");
            calls.push(
                json!({"id": call["id"], "type": call["type"], "function": call["function"]}),
            );
        }
    }
    let message = json!({"role": "assistant", "content": content, "reasoning_content": reasoning, "tool_calls": calls});
    (message, finish, usage)
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let r = http(addr, "GET", "/metrics", "", &[]);
    assert_eq!(r.status, 200);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {}", r.body))
        .parse()
        .unwrap()
}

fn user(text: &str) -> Json {
    json!({"role": "user", "content": text})
}

#[test]
fn streaming_and_whole_answers_agree() {
    let Some(server) = gpu_server(1, 4) else {
        return;
    };
    let a = server.addr;
    for sampling in [
        json!({"temperature": 0}),
        json!({"temperature": 0.9, "seed": 11}),
    ] {
        let mut body = json!({"messages": [user("Tell me a story about a dragon who lived by the sea")],
                   "max_tokens": 24, "ignore_eos": true});
        body.as_object_mut()
            .unwrap()
            .extend(sampling.as_object().unwrap().clone());
        let whole = post(a, "/v1/chat/completions", &body);
        assert_eq!(whole.status, 200, "{}", whole.body);
        let w = whole.json();
        assert_eq!(w["object"], "chat.completion");
        assert_eq!(w["choices"][0]["finish_reason"], "length");
        assert_eq!(w["usage"]["completion_tokens"], 24);
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let streamed = post(a, "/v1/chat/completions", &body);
        assert_eq!(streamed.header("content-type"), Some("text/event-stream"));
        let (message, finish, usage) = reassemble(&streamed.events());
        assert_eq!(message, w["choices"][0]["message"], "{sampling}");
        assert_eq!(finish, "length");
        // The same prompt again: its cached prefix (a whole chunk) is reused, the rest agrees.
        let mut want = w["usage"].clone();
        want["prompt_tokens_details"]["cached_tokens"] =
            usage["prompt_tokens_details"]["cached_tokens"].clone();
        assert_eq!(usage, want);
        assert!(
            usage["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap()
                >= 16,
            "{usage}"
        );
    }
    // A text completion, whole and streamed.
    let body =
        json!({"prompt": "Once upon", "max_tokens": 10, "temperature": 0, "ignore_eos": true});
    let w = post(a, "/v1/completions", &body).json();
    assert_eq!(w["object"], "text_completion");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let text: String = post(a, "/v1/completions", &streamed)
        .events()
        .iter()
        .map(|e| e["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, w["choices"][0]["text"].as_str().unwrap());
}

#[test]
fn a_next_turn_reuses_the_conversation_it_continues() {
    let Some(server) = gpu_server(2, 4) else {
        return;
    };
    let a = server.addr;
    let first = json!({"messages": [user("What is a cat?")], "max_tokens": 12, "temperature": 0});
    let r1 = post(a, "/v1/chat/completions", &first).json();
    assert_eq!(r1["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let answer = r1["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
        .to_string();
    // Another conversation in between takes the other slot.
    post(
        a,
        "/v1/chat/completions",
        &json!({"messages": [user("Other topic entirely")], "max_tokens": 4}),
    );
    let second = json!({"messages": [user("What is a cat?"),
        {"role": "assistant", "content": answer}, user("And a dog?")],
        "max_tokens": 4, "temperature": 0});
    let r2 = post(a, "/v1/chat/completions", &second).json();
    let cached = r2["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let prompt1 = r1["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        cached >= prompt1 && cached < r2["usage"]["prompt_tokens"].as_u64().unwrap(),
        "the second turn reuses at least the first prompt: {cached} cached of {}, first prompt {prompt1}",
        r2["usage"]
    );
    assert_eq!(metric(a, "wmoe_prompt_tokens_cached_total"), cached as f64);
}

#[test]
fn a_client_that_disconnects_frees_its_slot_at_once() {
    // One slot, no queue: a second request is refused until the first one's job ends.
    let Some(server) = gpu_server(1, 0) else {
        return;
    };
    let a = server.addr;
    let long = json!({"messages": [user("Go on forever")], "max_tokens": 400,
        "ignore_eos": true, "stream": true});
    let mut s = BufReader::new(send(
        a,
        "POST",
        "/v1/chat/completions",
        &long.to_string(),
        &[],
    ));
    let mut line = String::new();
    while !line.contains("\"content\":\"") || line.contains("\"content\":\"\"") {
        line.clear();
        s.read_line(&mut line).unwrap();
    }
    let busy = post(
        a,
        "/v1/chat/completions",
        &json!({"messages": [user("Hi")], "max_tokens": 2}),
    );
    assert_eq!(busy.status, 503, "{}", busy.body);
    drop(s);
    let t = Instant::now();
    let short = json!({"messages": [user("Hi")], "max_tokens": 2});
    loop {
        let r = post(a, "/v1/chat/completions", &short);
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the slot stayed busy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let generated = metric(a, "wmoe_generation_tokens_total");
    assert!(
        generated < 400.0,
        "the disconnected job stopped early: {generated} tokens generated in all"
    );
}

const REASONING_AND_CALL: &str = "<think>The user wants the weather.</think>\nLet me check.\n<|tool_call_start|>[get_weather(city=\"Paris\", days=2)]<|tool_call_end|>";

fn weather_tools() -> Json {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}])
}

#[test]
fn reasoning_and_tool_calls_stream_as_openai_deltas() {
    let server = scripted_server(REASONING_AND_CALL, Duration::ZERO, 4, None, |_, _| {});
    let body = json!({"messages": [user("Weather in Paris?")], "tools": weather_tools()});
    let w = post(server.addr, "/v1/chat/completions", &body).json();
    let want = json!({"role": "assistant", "content": "Let me check.",
        "reasoning_content": "The user wants the weather.",
        "tool_calls": [{"id": "call_0", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 2}"}}]});
    assert_eq!(w["choices"][0]["message"], want);
    assert_eq!(w["choices"][0]["finish_reason"], "tool_calls");
    let mut stream = body.clone();
    stream["stream"] = json!(true);
    let events = post(server.addr, "/v1/chat/completions", &stream).events();
    let (message, finish, _) = reassemble(&events);
    assert_eq!(message, want);
    assert_eq!(finish, "tool_calls");
    // Reasoning arrives as reasoning_content deltas, never as content; the call as one delta.
    assert!(events
        .iter()
        .any(|e| e["choices"][0]["delta"]["reasoning_content"].is_string()));
    let call_chunks = events
        .iter()
        .filter(|e| e["choices"][0]["delta"]["tool_calls"].is_array());
    assert_eq!(call_chunks.count(), 1);
    for e in &events {
        let c = e["choices"][0]["delta"]["content"].as_str().unwrap_or("");
        assert!(!c.contains("think") && !c.contains("tool_call"), "{e}");
    }
}

#[test]
fn tool_choice_none_and_named_are_enforced() {
    // none: the tools are not in the prompt, and a call block stays content.
    let server = scripted_server(REASONING_AND_CALL, Duration::ZERO, 4, None, |job, t| {
        let prompt = t.tokenizer.decode(&job.prompt, false).unwrap();
        assert!(!prompt.contains("get_weather"), "{prompt}");
    });
    let body =
        json!({"messages": [user("Weather?")], "tools": weather_tools(), "tool_choice": "none"});
    let w = post(server.addr, "/v1/chat/completions", &body).json();
    let m = &w["choices"][0]["message"];
    assert_eq!(m["tool_calls"], json!([]));
    assert!(
        m["content"]
            .as_str()
            .unwrap()
            .contains("<|tool_call_start|>[get_weather("),
        "{m}"
    );
    assert_eq!(w["choices"][0]["finish_reason"], "stop");

    // A named function: only it is in the prompt, which ends with the call's opening; the
    // model writes the arguments.
    let server = scripted_server(
        "city=\"Rome\")]<|tool_call_end|>",
        Duration::ZERO,
        4,
        None,
        |job, t| {
            let prompt = t.tokenizer.decode(&job.prompt, false).unwrap();
            assert!(
                prompt.ends_with("<|im_start|>assistant\n<|tool_call_start|>[get_weather("),
                "{prompt}"
            );
            assert!(!prompt.contains("get_time"), "{prompt}");
        },
    );
    let named = json!({"type": "function", "function": {"name": "get_weather"}});
    let mut body =
        json!({"messages": [user("Weather?")], "tools": weather_tools(), "tool_choice": named});
    let w = post(server.addr, "/v1/chat/completions", &body).json();
    let want_call = json!([{"id": "call_0", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}]);
    assert_eq!(w["choices"][0]["message"]["tool_calls"], want_call, "{w}");
    assert_eq!(w["choices"][0]["message"]["content"], Json::Null);
    body["stream"] = json!(true);
    let (m, finish, _) = reassemble(&post(server.addr, "/v1/chat/completions", &body).events());
    assert_eq!(
        (m["tool_calls"].clone(), finish.as_str()),
        (want_call, "tool_calls")
    );
}

#[test]
fn stop_strings_end_the_answer() {
    let server = scripted_server(
        "Hello there. STOP and more text",
        Duration::ZERO,
        4,
        None,
        |_, _| {},
    );
    for stream in [false, true] {
        let body = json!({"messages": [user("Hi")], "stop": ["STOP", "zzz"], "stream": stream,
            "stream_options": {"include_usage": true}});
        let r = post(server.addr, "/v1/chat/completions", &body);
        let (message, finish, usage) = if stream {
            reassemble(&r.events())
        } else {
            let w = r.json();
            (
                w["choices"][0]["message"].clone(),
                w["choices"][0]["finish_reason"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                w["usage"].clone(),
            )
        };
        assert_eq!(message["content"], "Hello there. ", "stream {stream}");
        assert_eq!(finish, "stop");
        let all = bundled_text()
            .tokenizer
            .encode("Hello there. STOP and more text", false)
            .unwrap()
            .len();
        assert!(
            usage["completion_tokens"].as_u64().unwrap() < all as u64,
            "{usage}"
        );
    }
    // Text completions: the script is the text, cut at the stop string.
    let r = post(
        server.addr,
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 50, "stop": " and"}),
    )
    .json();
    assert_eq!(r["choices"][0]["text"], "Hello there. STOP");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
}

#[test]
fn malformed_requests_get_openai_errors() {
    let server = scripted_server("ok", Duration::ZERO, 4, Some("sekrit"), |_, _| {});
    let a = server.addr;
    let auth = "Authorization: Bearer sekrit";
    let chat = |body: &str| http(a, "POST", "/v1/chat/completions", body, &[auth]);
    let long = "word ".repeat(600);
    let cases: Vec<(String, u16, Option<&str>, Option<&str>)> = vec![
        ("{\"messages\": [".into(), 400, None, None),
        ("[1, 2]".into(), 400, None, None),
        (
            json!({"messages": "hi"}).to_string(),
            400,
            Some("messages"),
            None,
        ),
        (
            json!({"messages": [user("a")], "temperature": "hot"}).to_string(),
            400,
            Some("temperature"),
            None,
        ),
        (
            json!({"messages": [user("a")], "n": 2}).to_string(),
            400,
            Some("n"),
            None,
        ),
        (
            json!({"messages": [user("a")], "max_tokens": 401}).to_string(),
            400,
            Some("max_tokens"),
            None,
        ),
        (
            json!({"messages": [user(&"word ".repeat(150))], "max_tokens": 400}).to_string(),
            400,
            Some("messages"),
            Some("context_length_exceeded"),
        ),
        (
            json!({"messages": [user(&long)]}).to_string(),
            400,
            Some("messages"),
            Some("context_length_exceeded"),
        ),
        (
            json!({"messages": [user("a")], "tool_choice": "required"}).to_string(),
            400,
            Some("tool_choice"),
            None,
        ),
        (
            json!({"messages": [user("a")], "stream": 1}).to_string(),
            400,
            Some("stream"),
            None,
        ),
        // Messages the chat template cannot render (found by the serve_request fuzz target:
        // a 500 before): an assistant turn of tool calls only, a role that is no string.
        (
            json!({"messages": [user("a"), {"role": "assistant", "tool_calls": []}]}).to_string(),
            400,
            Some("messages"),
            None,
        ),
        (
            json!({"messages": [{"role": 5, "content": "a"}]}).to_string(),
            400,
            Some("messages"),
            None,
        ),
        (
            json!({"messages": [user(&"x".repeat(70_000))]}).to_string(),
            413,
            None,
            Some("request_too_large"),
        ),
    ];
    for (body, status, param, code) in cases {
        let r = chat(&body);
        assert_eq!(
            r.status,
            status,
            "{}: {}",
            &body[..body.len().min(80)],
            r.body
        );
        let e = &r.json()["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["param"].as_str(), param, "{e}");
        assert_eq!(e["code"].as_str(), code, "{e}");
    }
    // The API key: required everywhere but /health and the chat page's files, compared whole.
    for extra in [
        &[][..],
        &["Authorization: Bearer sekri"],
        &["Authorization: Bearer sekrit2"],
    ] {
        let r = http(
            a,
            "POST",
            "/v1/chat/completions",
            &json!({"messages": [user("a")]}).to_string(),
            extra,
        );
        assert_eq!(r.status, 401, "{extra:?}");
        assert_eq!(r.json()["error"]["code"], "invalid_api_key");
        assert_eq!(http(a, "GET", "/v1/models", "", extra).status, 401);
    }
    assert_eq!(http(a, "GET", "/health", "", &[]).json()["status"], "ok");
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let r = http(a, "GET", path, "", &[]);
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(r.header("content-security-policy").is_some(), "{path}");
    }
    assert!(http(a, "GET", "/", "", &[])
        .body
        .contains("<script src=\"/app.js\""));
    let models = http(a, "GET", "/v1/models", "", &[auth]).json();
    assert_eq!(models["data"][0]["id"], wmoe::BUNDLED_MODEL.name);
    assert_eq!(http(a, "GET", "/nowhere", "", &[auth]).status, 404);
    let ok = chat(&json!({"messages": [user("a")]}).to_string());
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        metric_with(a, auth, "wmoe_requests_total{outcome=\"client_error\"}"),
        13.0
    );
}

fn metric_with(addr: SocketAddr, auth: &str, name: &str) -> f64 {
    let r = http(addr, "GET", "/metrics", "", &[auth]);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_full_queue_is_refused_with_retry_after() {
    // One slot and one place in the queue; a token every 20 ms keeps them busy.
    let server = scripted_server(
        &"word ".repeat(300),
        Duration::from_millis(20),
        1,
        None,
        |_, _| {},
    );
    let a = server.addr;
    let body = json!({"messages": [user("Hi")], "stream": true}).to_string();
    let running = send(a, "POST", "/v1/chat/completions", &body, &[]);
    let t = Instant::now();
    while metric(a, "wmoe_requests_running") < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    let queued = send(a, "POST", "/v1/chat/completions", &body, &[]);
    while metric(a, "wmoe_requests_queued") < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = post(
        a,
        "/v1/chat/completions",
        &json!({"messages": [user("Hi")]}),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["code"], "server_busy");
    drop((running, queued));
}

#[test]
fn a_whole_answer_stops_when_its_client_leaves() {
    // 300 tokens, one every 20 ms: 6 s of work unless the job stops.
    let server = scripted_server(
        &"word ".repeat(300),
        Duration::from_millis(20),
        1,
        None,
        |_, _| {},
    );
    let a = server.addr;
    let body = json!({"messages": [user("Hi")]}).to_string();
    let client = send(a, "POST", "/v1/chat/completions", &body, &[]);
    let t = Instant::now();
    while metric(a, "wmoe_requests_running") < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(client);
    let t = Instant::now();
    while metric(a, "wmoe_requests_running") > 0.0 {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the job outlived its client"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn connections_beyond_the_limit_wait_for_one_to_close() {
    let t = bundled_text();
    let engine = Engine::with_worker(1, 1, |jobs: Receiver<Job>, _| for _ in jobs {});
    let server = start(
        engine,
        t,
        Limits {
            max_connections: 1,
            ..limits(None)
        },
    );
    let a = server.addr;
    let idle = TcpStream::connect(a).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut waiting = send(a, "GET", "/health", "", &[]);
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        waiting.read(&mut buf).is_err(),
        "answered while another connection was open"
    );
    drop(idle);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = waiting.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// Reads from `s` until the server closes it (or 10 s pass): how long that took.
fn closed_after(s: &mut TcpStream, start: Instant) -> Duration {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => {}
        }
    }
}

#[test]
fn connections_that_send_no_request_are_dropped_after_the_idle_timeout() {
    let t = bundled_text();
    // Every job waits 1.5 s, three idle timeouts, before its one token.
    let token = t.tokenizer.encode("Hi", false).unwrap().get_ids()[0];
    let worker = move |jobs: Receiver<Job>, _| {
        for job in jobs {
            job.send(Event::Started { cached_tokens: 0 });
            std::thread::sleep(Duration::from_millis(1500));
            job.send(Event::Token(token));
            job.send(Event::Finished(FinishReason::Eos));
        }
    };
    let server = start(
        Engine::with_worker(1, 1, worker),
        t,
        Limits {
            max_connections: 2,
            idle_timeout: Duration::from_millis(500),
            ..limits(None)
        },
    );
    let a = server.addr;
    // Connects and sends nothing.
    let start = Instant::now();
    let mut silent = TcpStream::connect(a).unwrap();
    let waited = closed_after(&mut silent, start);
    assert!(
        (Duration::from_millis(400)..Duration::from_secs(3)).contains(&waited),
        "a silent connection was closed after {waited:?}"
    );
    // Sends its head a byte every 100 ms (slowloris): dropped at the same deadline.
    let start = Instant::now();
    let mut slow = TcpStream::connect(a).unwrap();
    let head = b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    for b in head {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let waited = closed_after(&mut slow, start);
    assert!(
        waited < Duration::from_secs(3),
        "a slow head was served or kept for {waited:?}"
    );
    // A keep-alive connection left idle after its answer is closed too.
    let mut kept = TcpStream::connect(a).unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let start = Instant::now();
    let waited = closed_after(&mut kept, start);
    assert!(
        (Duration::from_millis(400)..Duration::from_secs(3)).contains(&waited),
        "an idle keep-alive connection was closed after {waited:?}"
    );
    // An answer that takes longer than the idle timeout is not cut: the timer runs only
    // while a request head is awaited.
    let r = post(
        a,
        "/v1/chat/completions",
        &json!({"messages": [user("Hi")]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The events of a job until its end (`Finished` or `Error`), tokens collected.
fn job_events(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> (Vec<u32>, Event) {
    let mut tokens = Vec::new();
    loop {
        match rx
            .blocking_recv()
            .expect("the engine ended the job without a word")
        {
            Event::Started { .. } => {}
            Event::Token(t) => tokens.push(t),
            end => return (tokens, end),
        }
    }
}

#[test]
fn a_lost_device_fails_the_running_job_and_the_engine_carries_on_on_a_new_one() {
    if testing::context().is_none() {
        return;
    }
    let opts = EngineOptions {
        device: DeviceOptions::from_env(),
        quant: None,
        slots: 2,
        queue: 4,
        context: 512,
        chunk: 16,
        kv: None,
    };
    let (engine, ()) = Engine::start(ModelFiles::bundled, |_| Ok(()), opts).unwrap();
    let greedy = wmoe::SamplingParams::greedy();
    let submit = |prompt: &[u32], max_tokens: usize| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        engine
            .submit(prompt.to_vec(), greedy, max_tokens, true, tx)
            .unwrap();
        rx
    };
    let before = job_events(&mut submit(&[1, 5, 9], 6));
    assert_eq!(before.1, Event::Finished(FinishReason::Length));
    // A long job; the device is destroyed once it has generated.
    let mut long = submit(&[1, 2, 3], 400);
    assert!(matches!(long.blocking_recv(), Some(Event::Started { .. })));
    assert!(matches!(long.blocking_recv(), Some(Event::Token(_))));
    engine.destroy_device();
    let (_, end) = job_events(&mut long);
    match end {
        Event::Error(msg) => assert!(msg.contains("GPU device was lost"), "{msg}"),
        other => panic!("the running job ended with {other:?}"),
    }
    // The next jobs run on a new device, as they did on the first.
    for _ in 0..2 {
        assert_eq!(job_events(&mut submit(&[1, 5, 9], 6)), before);
    }
    let stats = &engine.stats;
    assert_eq!(
        stats
            .device_losses
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert!(stats.prometheus(0).contains("wmoe_device_losses_total 1"));
}

#[test]
fn the_cli_serves_until_sigterm() {
    if testing::context().is_none() {
        return;
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wmoe"))
        .args(["serve", "--port", "0", "--ctx", "256"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    assert!(
        addr.ip().is_loopback(),
        "binds 127.0.0.1 by default: {line}"
    );
    assert_eq!(http(addr, "GET", "/health", "", &[]).status, 200);
    let r = post(
        addr,
        "/v1/chat/completions",
        &json!({"messages": [user("Hi")], "max_tokens": 3}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{status}: {rest}");
    assert!(rest.contains("shut down"), "{rest}");
}

/// The official `openai` Python client (`pip install openai`; not in CI): streamed and
/// whole chat completions give the same message, from the bundled model (plain text) and
/// from the scripted server (reasoning and a tool call).
#[test]
#[ignore = "needs python3 with the openai package"]
fn openai_python_client_agrees() {
    let check = |addr: SocketAddr, extra: &[&str]| {
        let out = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tools/openai_client_check.py"
            ))
            .arg(format!("http://{addr}/v1"))
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        eprintln!("{text}");
        assert!(out.status.success(), "{text}");
    };
    let scripted = scripted_server(REASONING_AND_CALL, Duration::ZERO, 4, None, |_, _| {});
    check(scripted.addr, &["--tools"]);
    if let Some(server) = gpu_server(1, 4) {
        check(server.addr, &[]);
    }
}

/// Requests decoded together (continuous batching over three slots, joining while others
/// stream) give each the answer it gets alone.
#[test]
fn concurrent_requests_answer_as_they_would_alone() {
    let Some(server) = gpu_server(3, 4) else {
        return;
    };
    let a = server.addr;
    let bodies: Vec<Json> = [
        ("Tell me a story", 30),
        ("Why is the sky blue?", 18),
        ("Hi", 24),
    ]
    .into_iter()
    .map(|(q, n)| {
        json!({"messages": [user(q)], "max_tokens": n, "temperature": 0,
                   "ignore_eos": true, "stream": true})
    })
    .collect();
    let alone: Vec<Json> = bodies
        .iter()
        .map(|b| reassemble(&post(a, "/v1/chat/completions", b).events()).0)
        .collect();
    let together: Vec<Json> = std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                s.spawn(move || {
                    // Staggered: later requests join while earlier ones stream.
                    std::thread::sleep(Duration::from_millis(40 * i as u64));
                    reassemble(&post(a, "/v1/chat/completions", b).events()).0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
}
