//! wmoe's wasm build in headless Chromium on WebGPU (SwiftShader there): the bundled model's
//! prefill and decode logits in the tab match the transformers reference of
//! assets/models/demo within the native tests' tolerance, and its greedy tokens are
//! identical. The test builds web/ for wasm32-unknown-unknown, runs wasm-bindgen on it,
//! serves the result with tests/web/harness.html from a local HTTP server, and drives the
//! page through the DevTools pipe. Without the wasm target or wasm-bindgen-cli it is skipped,
//! saying why (.ci/run does not install them: they cost CI several minutes of building);
//! with them, a missing Chromium skips it too, except under `CI=true`, where that fails.

#[allow(dead_code)]
#[path = "../chat_page/browser.rs"]
mod browser;
#[path = "../common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use browser::Browser;
use safetensors::SafeTensors;
use serde_json::Value as Json;

/// The wasm-bindgen crate version web/ is locked to; wasm-bindgen-cli must be the same.
const WASM_BINDGEN: &str = "0.2.130";

/// Skips the test, saying `why` on stderr.
fn skip(why: &str) {
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

/// Serves the files under `dir` over HTTP on 127.0.0.1 (a secure context, as WebGPU needs);
/// returns the base URL.
fn serve(dir: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            respond(&dir, stream);
        }
    });
    url
}

/// Answers one GET request with the file it names under `dir`.
fn respond(dir: &Path, mut stream: TcpStream) {
    let mut line = String::new();
    if BufReader::new(&stream).read_line(&mut line).is_err() {
        return;
    }
    let path = line
        .split(' ')
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/');
    let file = dir.join(path);
    let (status, body) = match std::fs::read(&file) {
        Ok(b) if !path.contains("..") => ("200 OK", b),
        _ => ("404 Not Found", Vec::new()),
    };
    let kind = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html",
        Some("js") => "text/javascript",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
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

#[test]
fn bundled_model_in_chromium_matches_transformers() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-harness");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    if let Err(why) = build_wasm(&out) {
        return skip(&why);
    }
    std::fs::copy(
        root().join("tests/web/harness.html"),
        out.join("index.html"),
    )
    .unwrap();
    let url = serve(out);
    let Some(mut b) = Browser::launch_with("the wasm browser test", &["--enable-unsafe-webgpu"])
    else {
        return;
    };
    b.goto(&format!("{url}/index.html"));
    let adapter = b.eval(
        "(async () => { const W = await window.wmoe; window.m = await W.loadBundled(); return m.adapter(); })()",
    );
    eprintln!("adapter in the tab: {}", adapter.as_str().unwrap_or("?"));
    let (prompt, want, greedy) = reference();
    let vocab = b.eval("m.vocab()").as_u64().unwrap() as usize;
    let n = prompt.len();
    let tokens = serde_json::to_string(&prompt).unwrap();
    let got = b.eval(&format!(
        "(async () => {{ m.reset({}); return Array.from(await m.prefill(new Uint32Array({tokens}), true)); }})()",
        n + 32
    ));
    common::compare("wasm", "prefill", &floats(&got), &want, vocab);
    let got = b.eval(&format!(
        "(async () => {{ m.reset({}); const out = []; for (const t of {tokens}) out.push(...await m.decode(t)); return out; }})()",
        n + 32
    ));
    common::compare("wasm", "decode", &floats(&got), &want, vocab);
    let run = b.eval(&format!(
        "(async () => {{ m.reset({}); const seen = []; const t0 = performance.now(); \
         const tokens = Array.from(await m.generate(new Uint32Array({tokens}), {}, true, t => {{ seen.push(t); }})); \
         return {{ tokens, seen, ms: performance.now() - t0 }}; }})()",
        n + 32,
        greedy.len()
    ));
    let ids = |v: &Json| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    assert_eq!(ids(&run["tokens"]), greedy, "greedy tokens in the tab");
    assert_eq!(ids(&run["seen"]), greedy, "tokens handed to the callback");
    let ms = run["ms"].as_f64().unwrap();
    eprintln!(
        "wasm greedy: {} tokens after a {n}-token prompt in {ms:.0} ms ({:.1} tokens/s, prefill included)",
        greedy.len(),
        greedy.len() as f64 * 1000.0 / ms
    );
    assert!(b.errors().is_empty(), "page errors: {:?}", b.errors());
}
