//! wmoe's wasm build in headless Chromium on WebGPU (SwiftShader there): the bundled model's
//! and GGUF fixtures' prefill and decode logits in the tab match their transformers
//! references within the native tests' tolerance, and greedy tokens are identical; the GGUF
//! files stream in byte ranges (from this test's HTTP server, which answers `Range`
//! requests, and from a Blob). The tests build web/ for wasm32-unknown-unknown, run
//! wasm-bindgen on it, serve the result with tests/web/harness.html from a local HTTP server,
//! and drive the page through the DevTools pipe. Without the wasm target, wasm-bindgen-cli
//! or Chromium they are skipped, saying why, except under `CI=true` (.ci/run installs them),
//! where that fails. The `#[ignore]`d `synth_in_chromium` loads a 1.3 GiB LFM2-8B-A1B-shaped
//! synth the same way and measures peak wasm memory and tokens/s (docs/PERF.md). The demo
//! page itself (web/index.html) is driven as a person uses it in `demo_page`.

#[allow(dead_code)]
#[path = "../chat_page/browser.rs"]
mod browser;
#[path = "../common/mod.rs"]
mod common;
mod demo_page;

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use browser::Browser;
use safetensors::SafeTensors;
use serde_json::Value as Json;

/// The wasm-bindgen crate version web/ is locked to; wasm-bindgen-cli must be the same.
const WASM_BINDGEN: &str = "0.2.130";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips the test, saying `why` on stderr; under `CI=true` a missing tool fails instead.
fn skip(why: &str) {
    assert!(
        !in_ci(),
        "CI=true but the wasm browser test cannot run: {why}"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED ({why}): the wasm browser test");
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds web/ for wasm32 and runs wasm-bindgen on it into `out/pkg`; `Err` says what is
/// missing to do so.
fn build_wasm(out: &Path) -> Result<(), String> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("no rustc: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib/wasm32-unknown-unknown").is_dir() {
        return Err(
            "the wasm32-unknown-unknown target is not installed (rustup target add wasm32-unknown-unknown)"
                .into(),
        );
    }
    let version = Command::new("wasm-bindgen")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if version != format!("wasm-bindgen {WASM_BINDGEN}") {
        return Err(format!(
            "wasm-bindgen-cli {WASM_BINDGEN} is not on PATH (found '{version}'; cargo install wasm-bindgen-cli --version {WASM_BINDGEN})"
        ));
    }
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .args([
            "build",
            "--release",
            "-p",
            "wmoe-web",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the wasm build of web/ failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let wasm = target.join("wasm32-unknown-unknown/release/wmoe_web.wasm");
    let status = Command::new("wasm-bindgen")
        .args(["--target", "web", "--no-typescript", "--out-dir"])
        .arg(out.join("pkg"))
        .arg(&wasm)
        .status()
        .expect("wasm-bindgen runs");
    assert!(
        status.success(),
        "wasm-bindgen failed on {}",
        wasm.display()
    );
    Ok(())
}

/// Serves files over HTTP on 127.0.0.1 (a secure context, as WebGPU needs): `/NAME` from
/// `dir`, `/assets/...` from the repository's assets/, the demo page at `/demo/` (web/'s
/// index.html and demo.js, and `dir`'s pkg/ beside them, as the README serves it) and
/// `/synth/NAME` from `synth` when given (a query string is ignored); answers `Range: bytes=A-B` requests with 206 and just those bytes. Returns the base
/// URL.
fn serve(dir: PathBuf, synth: Option<PathBuf>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (dir, synth) = (dir.clone(), synth.clone());
            std::thread::spawn(move || respond(&dir, synth.as_deref(), stream));
        }
    });
    url
}

/// The file a request path names.
fn file_of(dir: &Path, synth: Option<&Path>, path: &str) -> Option<PathBuf> {
    if path.contains("..") {
        return None;
    }
    if let Some(rest) = path.strip_prefix("assets/") {
        return Some(root().join("assets").join(rest));
    }
    if let Some(rest) = path.strip_prefix("synth/") {
        return synth.map(|d| d.join(rest));
    }
    if let Some(rest) = path.strip_prefix("demo/") {
        return Some(match rest.strip_prefix("pkg/") {
            Some(pkg) => dir.join("pkg").join(pkg),
            None => root().join("web").join(rest),
        });
    }
    Some(dir.join(path))
}

/// Answers one GET request with the file it names (or the byte range it asks for).
fn respond(dir: &Path, synth: Option<&Path>, mut stream: TcpStream) {
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = v.trim().strip_prefix("bytes=").and_then(|r| {
                    let (a, b) = r.split_once('-')?;
                    Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
                });
            }
        }
    }
    let path = line
        .split(' ')
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string();
    let file = file_of(dir, synth, &path);
    let kind = match file.as_ref().and_then(|f| f.extension()?.to_str()) {
        Some("html") => "text/html",
        Some("js") => "text/javascript",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    };
    let opened = file.and_then(|f| std::fs::File::open(f).ok());
    let Some(mut f) = opened else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let (status, first, n, extra) = match range {
        Some((a, b)) if a <= b && b < len => (
            "206 Partial Content",
            a,
            b - a + 1,
            format!("Content-Range: bytes {a}-{b}/{len}\r\n"),
        ),
        _ => ("200 OK", 0, len, String::new()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {n}\r\nAccept-Ranges: bytes\r\nCache-Control: no-store\r\n{extra}Connection: close\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes());
    if f.seek(SeekFrom::Start(first)).is_ok() {
        let _ = std::io::copy(&mut (&mut f).take(n), &mut stream);
    }
}

/// Holds the turn of the one headless Chromium with WebGPU that runs at a time (SwiftShader
/// takes every core).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// web/ built for wasm32 (once per test binary) into a folder holding its wasm-bindgen
/// output (pkg/) and tests/web/harness.html as index.html; `None` when skipped.
fn built() -> Option<PathBuf> {
    static BUILT: OnceLock<Mutex<Option<Result<PathBuf, String>>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(|| Mutex::new(None)).lock().unwrap();
    let out = built
        .get_or_insert_with(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-harness");
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&out).unwrap();
            build_wasm(&out)?;
            std::fs::copy(
                root().join("tests/web/harness.html"),
                out.join("index.html"),
            )
            .unwrap();
            Ok(out)
        })
        .clone();
    out.map_err(|why| skip(&why)).ok()
}

/// Headless Chromium with WebGPU, or `None` when skipped.
fn chromium() -> Option<Browser> {
    Browser::launch_with("the wasm browser test", &["--enable-unsafe-webgpu"])
}

/// The harness page: web/ built for wasm32 and served with tests/web/harness.html, opened in
/// a headless Chromium with WebGPU, with the turn of the one such browser at a time; `None`
/// when skipped.
fn page(synth: Option<PathBuf>) -> Option<(Browser, String, std::sync::MutexGuard<'static, ()>)> {
    let turn = one_at_a_time();
    let url = serve(built()?, synth);
    let mut b = chromium()?;
    b.goto(&format!("{url}/index.html"));
    b.eval("window.wmoe.then(() => true)");
    Some((b, url, turn))
}

/// Runs the async JavaScript function body `body` in the page without holding a DevTools
/// call open (a load can outlast one) and returns its value; panics if it throws or takes
/// longer than `timeout`.
fn run(b: &mut Browser, what: &str, body: &str, timeout: Duration) -> Json {
    b.eval(&format!(
        "window.__done = undefined; (async () => {{ {body} }})().then(v => {{ window.__done = {{ ok: v === undefined ? null : v }}; }}, e => {{ window.__done = {{ err: String(e && e.stack || e) }}; }}); true"
    ));
    let start = std::time::Instant::now();
    let done = loop {
        let v = b.eval("window.__done === undefined ? null : window.__done");
        if !v.is_null() {
            break v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}; progress {}; page errors: {:?}",
            b.eval("window.__progress === undefined ? null : window.__progress"),
            b.errors()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Some(e) = done.get("err") {
        panic!("{what} failed in the page: {e}");
    }
    done["ok"].clone()
}

/// The demo reference: prompt, prefill logits (which stand for decode too, see
/// tests/fidelity.rs), greedy continuation.
fn reference() -> (Vec<u32>, Vec<f32>, Vec<u32>) {
    let bytes = std::fs::read(root().join("assets/models/demo/reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = |n: &str| -> Vec<u32> {
        bytemuck::pod_collect_to_vec::<u8, i32>(st.tensor(n).unwrap().data())
            .into_iter()
            .map(|x| x as u32)
            .collect()
    };
    let logits = bytemuck::pod_collect_to_vec(st.tensor("prefill_logits").unwrap().data());
    (ids("prompt_tokens"), logits, ids("greedy_tokens"))
}

fn floats(v: &Json) -> Vec<f32> {
    v.as_array()
        .expect("an array of logits")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .expect("an array of token ids")
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The page's model `m` checked against a reference: prefill and decode logits of `prompt`
/// within the native tolerance, and greedy tokens equal to `greedy` (streamed to the
/// callback as they come).
fn check_logits(b: &mut Browser, name: &str, prompt: &[u32], want: &[f32], greedy: &[u32]) {
    let vocab = b.eval("m.vocab()").as_u64().unwrap() as usize;
    let n = prompt.len();
    let tokens = serde_json::to_string(prompt).unwrap();
    let long = Duration::from_secs(600);
    let got = run(
        b,
        "prefill",
        &format!(
            "m.reset({}); return Array.from(await m.prefill(new Uint32Array({tokens}), true));",
            n + 32
        ),
        long,
    );
    common::compare(name, "wasm prefill", &floats(&got), want, vocab);
    let got = run(
        b,
        "decode",
        &format!(
            "m.reset({}); const out = []; for (const t of {tokens}) out.push(...await m.decode(t)); return out;",
            n + 32
        ),
        long,
    );
    common::compare(name, "wasm decode", &floats(&got), want, vocab);
    let run = run(
        b,
        "greedy generation",
        &format!(
            "m.reset({}); const seen = []; const t0 = performance.now(); \
             const tokens = Array.from(await m.generate(new Uint32Array({tokens}), {}, true, t => {{ seen.push(t); }})); \
             return {{ tokens, seen, ms: performance.now() - t0 }};",
            n + 32,
            greedy.len()
        ),
        long,
    );
    assert_eq!(
        ids(&run["tokens"]),
        greedy,
        "{name}: greedy tokens in the tab"
    );
    assert_eq!(
        ids(&run["seen"]),
        greedy,
        "{name}: tokens handed to the callback"
    );
    let ms = run["ms"].as_f64().unwrap();
    eprintln!(
        "{name} wasm greedy: {} tokens after a {n}-token prompt in {ms:.0} ms ({:.1} tokens/s, prefill included)",
        greedy.len(),
        greedy.len() as f64 * 1000.0 / ms
    );
}

#[test]
fn bundled_model_in_chromium_matches_transformers() {
    let Some((mut b, _, _turn)) = page(None) else {
        return;
    };
    let adapter = b.eval(
        "(async () => { const W = await window.wmoe; window.m = await W.loadBundled(); return m.adapter(); })()",
    );
    eprintln!("adapter in the tab: {}", adapter.as_str().unwrap_or("?"));
    let (prompt, want, greedy) = reference();
    check_logits(&mut b, "demo", &prompt, &want, &greedy);
    chat_matches_native(&mut b);
    assert!(b.errors().is_empty(), "page errors: {:?}", b.errors());
}

/// The bundled model's chat in the tab: its template renders a request byte for byte as the
/// native library does, and a greedy chat turn streams the pieces of the answer the native
/// library gives (content as the parser emits it, the stop flag honoured).
fn chat_matches_native(b: &mut Browser) {
    let request = serde_json::json!({
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 2+2?"}
        ],
        "tools": [{"type": "function", "function": {"name": "add", "description": "Adds",
            "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}}]
    });
    let template = wmoe::ChatTemplate::bundled().unwrap();
    let native = template
        .render(&wmoe::ChatRequest::from_json(&request).unwrap())
        .unwrap();
    let got = b.eval(&format!(
        "m.applyTemplate({})",
        serde_json::to_string(&request.to_string()).unwrap()
    ));
    assert_eq!(got.as_str().unwrap(), native, "the template in the tab");
    let Some(ctx) = wmoe::gpu::testing::context() else {
        return skip("no native GPU adapter for the chat reference");
    };
    let model = wmoe::Model::load_bundled(ctx, None, false).unwrap();
    let opts = wmoe::SessionOptions {
        max_context: 4096,
        kv: wmoe::KvType::F32,
        ..wmoe::SessionOptions::default()
    };
    let mut s = wmoe::Session::new(ctx, &model, opts).unwrap();
    let mut chat = wmoe::Conversation::new(template, None, None).unwrap();
    chat.options.max_tokens = 12;
    // the model's sampling defaults (its repetition penalty) at temperature 0, as the tab
    // takes them
    chat.options.sampling = wmoe::SamplingParams {
        temperature: 0.0,
        ..model.generation
    };
    let mut pieces = Vec::new();
    let want = chat
        .turn(&mut s, "Hello", &mut |e| pieces.push(format!("{e:?}")))
        .unwrap();
    let got = run(
        b,
        "a chat turn",
        "m.reset(4096); m.startChat(null, null); const pieces = []; \
         const r = await m.chat('Hello', { maxTokens: 12, temperature: 0 }, (kind, text) => { pieces.push([kind, text]); }); \
         return { r, pieces };",
        Duration::from_secs(600),
    );
    assert_eq!(
        ids(&got["r"]["tokens"]),
        want.tokens,
        "chat tokens in the tab"
    );
    let content: String = got["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0] == "content")
        .map(|p| p[1].as_str().unwrap())
        .collect();
    assert_eq!(
        content,
        want.message.content.clone().unwrap_or_default(),
        "streamed content"
    );
    assert_eq!(
        got["r"]["content"].as_str().unwrap_or(""),
        want.message.content.unwrap_or_default()
    );
    assert_eq!(
        got["pieces"].as_array().unwrap().len(),
        pieces.len(),
        "pieces"
    );
    // the stop flag ends a turn at its first piece
    let stopped = run(
        b,
        "a stopped chat turn",
        "const r = await m.chat('Again', { maxTokens: 12, temperature: 0 }, () => { m.stop(); }); return r.finish_reason;",
        Duration::from_secs(600),
    );
    assert_eq!(stopped, "stopped", "a stopped turn");
}

/// A GGUF fixture's prompt and transformers prefill logits, and wmoe's native greedy tokens
/// after the prompt (the fixture's reference has none); `None` without a native adapter.
fn gguf_reference(file: &str, steps: usize) -> Option<(Vec<u32>, Vec<f32>, Vec<u32>)> {
    let path = root().join("assets/gguf").join(file);
    let bytes = std::fs::read(path.with_extension("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let prompt: Vec<u32> =
        bytemuck::pod_collect_to_vec::<u8, i32>(st.tensor("prompt_tokens").unwrap().data())
            .into_iter()
            .map(|x| x as u32)
            .collect();
    let logits = bytemuck::pod_collect_to_vec(st.tensor("prefill_logits").unwrap().data());
    let ctx = wmoe::gpu::testing::context()?;
    let model = wmoe::Model::load_with(ctx, &path, None, false).unwrap();
    let mut s = wmoe::Session::new(
        ctx,
        &model,
        wmoe::SessionOptions {
            max_context: prompt.len() + steps,
            kv: wmoe::KvType::F32,
            ..wmoe::SessionOptions::default()
        },
    )
    .unwrap();
    let opts = wmoe::GenerateOptions {
        max_tokens: steps,
        ignore_eos: true,
        ..wmoe::GenerateOptions::default()
    };
    let mut greedy = Vec::new();
    s.generate_stream_with(&prompt, &opts, &mut |t| {
        greedy.push(t);
        wmoe::Flow::Continue
    })
    .unwrap();
    Some((prompt, logits, greedy))
}

/// GGUF fixtures streamed into the tab in byte ranges — tiny-moe-mixed (q8_0, q4_K, q6_K,
/// f32 and bf16 tensors) from a URL, the llama.cpp Q4_0 one from a Blob — match their
/// transformers references like the native tests/gguf.rs, and greedy tokens equal wmoe's
/// native ones.
#[test]
fn gguf_fixtures_streamed_into_chromium_match_transformers() {
    let refs: Vec<_> = ["tiny-moe-mixed.gguf", "llamacpp-tiny-moe-Q4_0.gguf"]
        .into_iter()
        .map(|f| gguf_reference(f, 8).map(|r| (f, r)))
        .collect();
    let Some(refs) = refs.into_iter().collect::<Option<Vec<_>>>() else {
        return skip("no native GPU adapter for the greedy reference");
    };
    let Some((mut b, url, _turn)) = page(None) else {
        return;
    };
    for (i, (file, (prompt, want, greedy))) in refs.iter().enumerate() {
        let load = if i == 0 {
            format!("W.loadGgufUrl('{url}/assets/gguf/{file}', (d, t) => {{ progress.push([d, t]); window.__progress = [d, t]; }})")
        } else {
            format!(
                "W.loadGgufFile(await (await fetch('{url}/assets/gguf/{file}')).blob(), '{file}', (d, t) => {{ progress.push([d, t]); window.__progress = [d, t]; }})"
            )
        };
        let loaded = run(
            &mut b,
            file,
            &format!(
                "const W = await window.wmoe; const progress = []; if (window.m) m.free(); window.m = await {load}; \
                 return {{ progress: progress.length, last: progress[progress.length - 1] }};"
            ),
            Duration::from_secs(120),
        );
        let last = &loaded["last"];
        assert!(
            loaded["progress"].as_u64().unwrap() > 1,
            "{file}: progress reported: {loaded}"
        );
        assert_eq!(
            last[0], last[1],
            "{file}: the progress ends at the total: {loaded}"
        );
        check_logits(&mut b, file, prompt, want, greedy);
    }
    assert!(b.errors().is_empty(), "page errors: {:?}", b.errors());
}

/// The 8-layer LFM2-8B-A1B-shaped Q4_0 synth (1.3 GiB; `$WMOE_WEB_SYNTH`, default
/// /opt/peer/synth8-q4_0.gguf; `wmoe synth` makes one) streamed into the tab from a URL:
/// peak wasm memory stays under 256 MiB; prefill and decode tokens/s printed (docs/PERF.md).
/// `cargo test --release --test web -- --ignored --nocapture synth_in_chromium`
#[test]
#[ignore = "needs a 1.3 GiB synth file and minutes of SwiftShader"]
fn synth_in_chromium() {
    let file = std::env::var_os("WMOE_WEB_SYNTH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/peer/synth8-q4_0.gguf"));
    assert!(
        file.is_file(),
        "no synth at {} (set WMOE_WEB_SYNTH)",
        file.display()
    );
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let Some((mut b, url, _turn)) = page(Some(file.parent().unwrap().to_path_buf())) else {
        return;
    };
    let load = run(
        &mut b,
        "the synth's load",
        &format!(
            "const W = await window.wmoe; const t0 = performance.now(); \
             window.m = await W.loadGgufUrl('{url}/synth/{name}', null); \
             return {{ ms: performance.now() - t0, memory: W.wasmMemoryBytes(), adapter: m.adapter() }};"
        ),
        Duration::from_secs(1800),
    );
    eprintln!("{load}");
    let (prompt, steps) = (64usize, 16usize);
    let timing = run(
        &mut b,
        "the synth's prefill and decode",
        &format!(
            "const W = await window.wmoe; const prompt = new Uint32Array({prompt}).map((_, i) => 1 + (i * 7919) % 1000); \
             m.reset({}); let t0 = performance.now(); await m.prefill(prompt, false); const prefill = performance.now() - t0; \
             m.reset({}); await m.prefill(prompt, false); let t = 1; t0 = performance.now(); \
             for (let i = 0; i < {steps}; i++) {{ const l = await m.decode(t); t = 0; for (let j = 1; j < l.length; j++) if (l[j] > l[t]) t = j; }} \
             const decode = performance.now() - t0; return {{ prefill, decode, memory: W.wasmMemoryBytes() }};",
            prompt + steps,
            prompt + steps
        ),
        Duration::from_secs(1800),
    );
    let mib = timing["memory"].as_f64().unwrap() / (1 << 20) as f64;
    let (pp, tg) = (
        timing["prefill"].as_f64().unwrap(),
        timing["decode"].as_f64().unwrap(),
    );
    eprintln!(
        "synth in the tab: load {:.1} s; peak wasm memory {mib:.1} MiB; prefill {prompt} tokens {:.2} tokens/s; decode {steps} tokens {:.2} tokens/s",
        load["ms"].as_f64().unwrap() / 1000.0,
        prompt as f64 * 1000.0 / pp,
        steps as f64 * 1000.0 / tg
    );
    assert!(mib < 256.0, "peak wasm memory {mib:.1} MiB, over 256 MiB");
    assert!(b.errors().is_empty(), "page errors: {:?}", b.errors());
}
