//! Headless Chromium driven over the DevTools protocol on a pipe: with
//! `--remote-debugging-pipe` the browser reads commands on its fd 3 and writes replies and
//! events on its fd 4, each message a JSON object ended by a NUL byte (what Puppeteer's and
//! Playwright's pipe transports speak), so no websocket client or automation crate is needed.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

/// How long one protocol command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A headless Chromium with one page attached; closed (and its profile removed) on drop.
pub struct Browser {
    child: Child,
    commands: std::io::PipeWriter,
    messages: Receiver<Json>,
    next_id: u64,
    session: String,
    profile: PathBuf,
    /// Events received so far (replies are consumed by `call`).
    events: Vec<Json>,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The Chromium binary: `$CHROMIUM`, else the first of the usual names on `PATH`.
fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| {
            ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name))
        })
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts Chromium without a GPU and opens a blank page. `None` (the test skipped, said
    /// on stderr) when no Chromium is installed, outside CI; under `CI=true` a missing
    /// Chromium fails.
    pub fn launch() -> Option<Browser> {
        Self::launch_with("the chat page test", &["--disable-gpu"])
    }

    /// [`Self::launch`] for the test `test` (named when skipped), with `gpu_args` saying how
    /// Chromium treats the GPU.
    pub fn launch_with(test: &str, gpu_args: &[&str]) -> Option<Browser> {
        let Some(bin) = find_chromium() else {
            assert!(
                !in_ci(),
                "CI=true but no chromium on PATH: install it (apt-get install chromium) or set CHROMIUM"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (no chromium on PATH; apt-get install chromium, or set CHROMIUM): {test}"
            );
            return None;
        };
        // A fresh profile per browser (tests run in parallel): empty storage, no lock shared.
        static LAUNCHED: AtomicUsize = AtomicUsize::new(0);
        let n = LAUNCHED.fetch_add(1, Ordering::Relaxed);
        let profile =
            std::env::temp_dir().join(format!("wmoe-chat-page-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let (their_commands, commands) = std::io::pipe().unwrap();
        let (replies, their_replies) = std::io::pipe().unwrap();
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--headless=new",
            // Root in CI: Chromium's sandbox refuses to run as root.
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--password-store=basic",
            "--window-size=1200,900",
        ])
        .args(gpu_args)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let (read_fd, write_fd) = (their_commands.as_raw_fd(), their_replies.as_raw_fd());
        // SAFETY: between fork and exec the closure calls only fcntl and dup2, which are
        // async-signal-safe, on descriptors this process owns.
        unsafe {
            cmd.pre_exec(move || {
                // Both ends above 4 first, so the first dup2 cannot close the other's source.
                let r = libc::fcntl(read_fd, libc::F_DUPFD_CLOEXEC, 5);
                let w = libc::fcntl(write_fd, libc::F_DUPFD_CLOEXEC, 5);
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        drop((their_commands, their_replies));
        let (tx, messages) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(replies);
            let mut buf = Vec::new();
            while reader.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                let Ok(m) = serde_json::from_slice::<Json>(&buf) else {
                    return;
                };
                if tx.send(m).is_err() {
                    return;
                }
                buf.clear();
            }
        });
        let mut b = Browser {
            child,
            commands,
            messages,
            next_id: 0,
            session: String::new(),
            profile,
            events: Vec::new(),
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Runtime.enable", json!({}));
        b.call("Log.enable", json!({}));
        b.call("Page.enable", json!({}));
        Some(b)
    }

    /// Sends a command (to the page once attached) and returns its result.
    pub fn call(&mut self, method: &str, params: Json) -> Json {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("chromium is gone ({method}): {e}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let m = self.receive(deadline, method);
            if m["id"] == id {
                if let Some(e) = m.get("error") {
                    panic!("{method} failed: {e}");
                }
                return m["result"].clone();
            }
        }
    }

    /// The next message; events are also kept in `events`.
    fn receive(&mut self, deadline: Instant, during: &str) -> Json {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = match self.messages.recv_timeout(left) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => panic!("chromium did not answer {during}"),
            Err(RecvTimeoutError::Disconnected) => {
                panic!(
                    "chromium exited during {during}: {:?}",
                    self.child.try_wait()
                )
            }
        };
        if m.get("method").is_some() {
            self.events.push(m.clone());
        }
        m
    }

    /// Loads `url` in the page, and waits for its load event.
    pub fn goto(&mut self, url: &str) {
        self.load("Page.navigate", json!({"url": url}));
    }

    /// Reloads the page, and waits for its load event.
    pub fn reload(&mut self) {
        self.load("Page.reload", json!({}));
    }

    fn load(&mut self, method: &str, params: Json) {
        let seen = self.events.len();
        self.call(method, params);
        let deadline = Instant::now() + CALL_TIMEOUT;
        while !self.events[seen..]
            .iter()
            .any(|e| e["method"] == "Page.loadEventFired")
        {
            self.receive(deadline, method);
        }
    }

    /// The value of a JavaScript expression in the page (promises awaited); panics if it throws.
    pub fn eval(&mut self, expression: &str) -> Json {
        self.try_eval(expression)
            .unwrap_or_else(|e| panic!("{expression} threw: {e}"))
    }

    fn try_eval(&mut self, expression: &str) -> Result<Json, Json> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        match r.get("exceptionDetails") {
            Some(e) => Err(e.clone()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Polls `expression` every 50 ms until it evaluates and `done` holds of its value; panics
    /// with `what` and the last value (or exception) after `timeout`.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        expression: &str,
        done: impl Fn(&Json) -> bool,
    ) -> Json {
        let start = Instant::now();
        loop {
            let v = self.try_eval(expression);
            match &v {
                Ok(v) if done(v) => return v.clone(),
                _ => {}
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; last: {v:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` into the element `selector` (focused, its old value selected and replaced)
    /// as keyboard input does.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; e.focus(); e.select(); return document.activeElement === e; }})()",
            json!(selector)
        ));
        assert_eq!(found, json!(true), "cannot focus {selector}");
        if text.is_empty() {
            self.key("Delete", "Delete", 46);
        } else {
            self.call("Input.insertText", json!({"text": text}));
        }
    }

    /// Presses and releases a key (`key`, `code`, Windows virtual key code) in the page.
    pub fn key(&mut self, key: &str, code: &str, vk: u32) {
        // A key that types nothing goes down raw, as Puppeteer sends it, so that editing keys
        // (Delete) act on the focused field.
        let (text, down) = match key {
            "Enter" => ("\r", "keyDown"),
            _ => ("", "rawKeyDown"),
        };
        for kind in [down, "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": key, "code": code, "windowsVirtualKeyCode": vk, "text": text}),
            );
        }
    }

    /// Clicks the element `selector`.
    pub fn click(&mut self, selector: &str) {
        let clicked = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); if (!e || e.disabled) return false; e.click(); return true; }})()",
            json!(selector)
        ));
        assert_eq!(clicked, json!(true), "{selector} is missing or disabled");
    }

    /// Script exceptions and console or log errors so far (failed network requests aside).
    pub fn errors(&self) -> Vec<&Json> {
        self.events
            .iter()
            .filter(|e| match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => true,
                Some("Runtime.consoleAPICalled") => e["params"]["type"] == "error",
                Some("Log.entryAdded") => {
                    let entry = &e["params"]["entry"];
                    entry["level"] == "error" && entry["source"] != "network"
                }
                _ => false,
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Browser.close on the browser, not the page.
        self.session.clear();
        let mut msg = serde_json::to_vec(&json!({"id": 0, "method": "Browser.close"})).unwrap();
        msg.push(0);
        let _ = self.commands.write_all(&msg);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().is_ok_and(|s| s.is_none()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
