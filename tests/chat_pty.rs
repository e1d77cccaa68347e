//! `wmoe chat` driven through a pseudo-terminal, as a person would use it: two turns, the
//! second processing only its new tokens; `/save`, `/reset` (nothing reused after it) and
//! `/load` (the saved chat continues, its tokens reused). Asserts on the `--verbose` turn
//! lines only, never on the (random-weight) model's text.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wmoe");

/// A pseudo-terminal pair: (master, slave).
fn openpty() -> (File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new descriptors into the pointers; no name, termios or
    // window size is passed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty failed: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nothing else.
    unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// The chat process on a terminal, and everything it has written.
struct Chat {
    child: Child,
    input: File,
    screen: Arc<Mutex<String>>,
}

impl Chat {
    fn start(args: &[&str]) -> Chat {
        let (master, slave) = openpty();
        let fd = |f: &OwnedFd| Stdio::from(f.try_clone().unwrap());
        let child = Command::new(BIN)
            .arg("chat")
            .args(args)
            .stdin(fd(&slave))
            .stdout(fd(&slave))
            .stderr(fd(&slave))
            .spawn()
            .unwrap();
        drop(slave);
        let screen = Arc::new(Mutex::new(String::new()));
        let (mut reader, seen) = (master.try_clone().unwrap(), screen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with an error (EIO) once the chat has exited.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Chat {
            child,
            input: master,
            screen,
        }
    }

    fn send(&mut self, line: &str) {
        self.input.write_all(line.as_bytes()).unwrap();
        self.input.write_all(b"\n").unwrap();
    }

    /// Waits until the screen holds `count` occurrences of `needle`; returns the screen.
    fn wait_for(&mut self, needle: &str, count: usize) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen.lock().unwrap().clone();
            if screen.matches(needle).count() >= count {
                return screen;
            }
            if start.elapsed() > Duration::from_secs(120)
                || self.child.try_wait().unwrap().is_some()
            {
                panic!("no {count} × {needle:?} on the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A `--verbose` turn line: prompt tokens, reused, processed, context.
#[derive(Debug, Clone, Copy)]
struct Turn {
    prompt: usize,
    reused: usize,
    processed: usize,
    context: usize,
}

/// The whole turn lines on `screen`, in order.
fn turns(screen: &str) -> Vec<Turn> {
    let mut out = Vec::new();
    for t in screen.split("[turn ").skip(1) {
        let Some(end) = t.find(']') else { break };
        let words: Vec<&str> = t[..end]
            .split([' ', ',', ';', ':', '(', ')'])
            .filter(|w| !w.is_empty())
            .collect();
        let at = |w: &str, off: isize| -> Option<usize> {
            let i = words.iter().position(|x| *x == w)? as isize + off;
            words.get(usize::try_from(i).ok()?)?.parse().ok()
        };
        let turn = || -> Option<Turn> {
            Some(Turn {
                prompt: at("prompt", -1)?,
                reused: at("reused", -1)?,
                processed: at("processed", -1)?,
                context: at("context", 1)?,
            })
        };
        match turn() {
            Some(t) => out.push(t),
            None => break,
        }
    }
    out
}

impl Chat {
    /// Waits for `n` whole turn lines.
    fn turns(&mut self, n: usize) -> Vec<Turn> {
        let start = Instant::now();
        loop {
            let t = turns(&self.screen.lock().unwrap());
            if t.len() >= n {
                return t;
            }
            self.wait_for("[turn ", 1);
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no {n} turn lines"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn chat_reuses_the_conversation_and_saves_resets_and_loads() {
    if wmoe::gpu::testing::context().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("wmoe-chat-pty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("chat.session");
    let mut chat = Chat::start(&["--verbose", "--max-tokens", "6", "--system", "Be brief."]);
    chat.wait_for("> ", 1);

    chat.send("Hello there");
    chat.turns(1);
    chat.send("And a second \\");
    chat.send("line to the same message");
    let t = chat.turns(2);
    assert_eq!(t[0].reused, 0, "{t:?}");
    assert_eq!(t[0].processed, t[0].prompt);
    // The second turn feeds only what is new: everything the session held is reused.
    assert_eq!(t[1].reused, t[0].context, "{t:?}");
    assert_eq!(t[1].processed, t[1].prompt - t[1].reused);
    assert!(t[1].processed < t[1].prompt - t[0].prompt + 8, "{t:?}");

    chat.send(&format!("/save {}", saved.display()));
    chat.wait_for("(saved to", 1);
    chat.send("/reset");
    chat.wait_for("(conversation cleared)", 1);
    chat.send("Hello there");
    chat.turns(3);
    chat.send(&format!("/load {}", saved.display()));
    chat.wait_for("(loaded", 1);
    chat.send("\"\"\"");
    chat.send("A third message");
    chat.send("over two lines");
    chat.send("\"\"\"");
    chat.turns(4);
    chat.send("/quit");
    let status = chat.child.wait().unwrap();
    let screen = chat.screen.lock().unwrap().clone();
    assert!(status.success(), "{screen}");
    let t = turns(&screen);
    assert_eq!(t.len(), 4, "{screen}");
    // After /reset nothing is reused; the first turn again costs what it did.
    assert_eq!((t[2].reused, t[2].prompt), (0, t[0].prompt), "{t:?}");
    // After /load the saved conversation continues: its tokens are reused, and the prompt
    // holds its messages (longer than turn 2's).
    assert_eq!(t[3].reused, t[1].context, "{t:?}");
    assert!(t[3].prompt > t[1].prompt + 4, "{t:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
