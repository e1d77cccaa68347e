//! Prefix reuse: a session that is handed a conversation again in full, with a new turn at
//! its end or a different ending, reuses the shared prefix (KV up to there, conv states from a
//! checkpoint) and feeds only the rest — with the logits and tokens of an uninterrupted run.

use wmoe::{gpu::testing, KvType, LogitsMode, Model, Session, SessionOptions};

fn session<'m>(ctx: &'m wmoe::GpuContext, model: &'m Model) -> Session<'m> {
    let opts = SessionOptions {
        max_context: 512,
        chunk: 16,
        kv: KvType::F32,
    };
    Session::new(ctx, model, opts).unwrap()
}

/// Deterministic token ids below `vocab`.
fn tokens(n: usize, seed: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729 + 13) % (vocab - 2) + 2) as u32)
        .collect()
}

/// Max |a − b| relative to max |b|.
fn rel_max_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The last-position logits of `conv` fed whole to a fresh session.
fn fresh_logits(ctx: &wmoe::GpuContext, model: &Model, conv: &[u32]) -> Vec<f32> {
    session(ctx, model).prefill(conv, LogitsMode::Last).unwrap()
}

#[test]
fn prefix_reuse_matches_an_uninterrupted_run() {
    let Some(ctx) = testing::context() else {
        return;
    };
    let model = Model::load_bundled(ctx, None, false).unwrap();
    let vocab = model.config.vocab;
    let mut s = session(ctx, &model);
    let first = tokens(50, 1, vocab);
    let answer = s.generate(&first, 6, true).unwrap();
    // The history holds the prompt and the generated tokens fed back (all but the last).
    assert_eq!(s.history().len(), first.len() + answer.len() - 1);
    assert_eq!(&s.history()[..first.len()], &first[..]);

    // A next turn: the whole conversation again plus new tokens; only those are fed.
    let mut conv = s.history().to_vec();
    conv.extend(tokens(9, 2, vocab));
    let kept = s.reuse_prefix(&conv).unwrap();
    assert_eq!(
        kept,
        s.history().len(),
        "a continuation keeps the whole history"
    );
    let got = s.prefill(&conv[kept..], LogitsMode::Last).unwrap();
    let want = fresh_logits(ctx, &model, &conv);
    let d = rel_max_diff(&got, &want);
    assert!(d < 1e-5, "continuation: {d}");

    // A conversation that leaves the history inside the first prompt (an edited turn): the
    // session goes back to the last checkpoint at or before the divergence (chunk boundaries
    // every 16 tokens) and feeds the rest.
    let mut edited = conv[..37].to_vec();
    edited.extend(tokens(20, 3, vocab));
    let kept = s.reuse_prefix(&edited).unwrap();
    assert_eq!(kept, 32, "back to the chunk boundary before the divergence");
    assert_eq!(s.position(), 32);
    let got = s.prefill(&edited[kept..], LogitsMode::Last).unwrap();
    let want = fresh_logits(ctx, &model, &edited);
    let d = rel_max_diff(&got, &want);
    assert!(d < 1e-5, "edited: {d}");

    // Greedy tokens after a reused prefix equal a fresh run's.
    let mut again = edited.clone();
    again.extend(tokens(5, 4, vocab));
    let kept = s.reuse_prefix(&again).unwrap();
    assert_eq!(kept, edited.len());
    let reused = s.generate(&again[kept..], 8, true).unwrap();
    let fresh = session(ctx, &model).generate(&again, 8, true).unwrap();
    assert_eq!(reused, fresh);

    // Nothing shared: back to an empty sequence.
    let other = tokens(10, 5, vocab);
    assert_eq!(s.reuse_prefix(&other).unwrap(), 0);
    assert_eq!(s.position(), 0);
}

/// A saved session resumes in a new session with the logits and tokens of an uninterrupted
/// run (an f32 and a q8_0 cache); a damaged, truncated, other-model or other-KV-type file is
/// refused with a clear error.
#[test]
fn saved_sessions_resume_and_refuse_what_is_not_theirs() {
    let Some(ctx) = testing::context() else {
        return;
    };
    let model = Model::load_bundled(ctx, None, false).unwrap();
    let vocab = model.config.vocab;
    let dir = std::env::temp_dir().join(format!("wmoe-session-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("s.bin");
    let mut s = session(ctx, &model);
    let first = tokens(40, 6, vocab);
    s.generate(&first, 5, true).unwrap();
    s.save_session(&file).unwrap();
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(names.len(), 1, "only the session file is left");

    let mut conv = s.history().to_vec();
    conv.extend(tokens(7, 7, vocab));
    let mut resumed = session(ctx, &model);
    resumed.load_session(&file).unwrap();
    assert_eq!(resumed.history(), s.history());
    let kept = resumed.reuse_prefix(&conv).unwrap();
    assert_eq!(kept, s.history().len());
    let got = resumed.prefill(&conv[kept..], LogitsMode::Last).unwrap();
    let d = rel_max_diff(&got, &fresh_logits(ctx, &model, &conv));
    assert!(d < 1e-5, "resumed: {d}");

    // A note saved with the session comes back with it.
    let noted = dir.join("noted.bin");
    s.save_session_with_note(&noted, "{\"messages\": []} é")
        .unwrap();
    let mut again = session(ctx, &model);
    assert_eq!(
        again.load_session_with_note(&noted).unwrap(),
        "{\"messages\": []} é"
    );
    assert_eq!(again.history(), s.history());
    assert_eq!(resumed.load_session_with_note(&file).unwrap(), "");
    std::fs::remove_file(&noted).unwrap();

    let bytes = std::fs::read(&file).unwrap();
    let refused = |bytes: &[u8], s: &mut Session| {
        let f = dir.join("bad.bin");
        std::fs::write(&f, bytes).unwrap();
        s.load_session(&f).unwrap_err().to_string()
    };
    let mut damaged = bytes.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x40;
    let mut fresh = session(ctx, &model);
    assert!(refused(&damaged, &mut fresh).contains("damaged"));
    assert_eq!(
        fresh.position(),
        0,
        "a refused file leaves an empty session"
    );
    assert!(refused(&bytes[..bytes.len() - 20], &mut fresh).contains("truncated"));
    assert!(refused(b"not a session", &mut fresh).contains("not a wmoe session"));
    let f16 = SessionOptions {
        max_context: 512,
        chunk: 16,
        kv: KvType::F16,
    };
    let mut other_kv = Session::new(ctx, &model, f16).unwrap();
    assert!(refused(&bytes, &mut other_kv).contains("--kv-type"));
    let q8 = SessionOptions {
        kv: KvType::Q8_0,
        ..f16
    };
    let mut q8_session = Session::new(ctx, &model, q8).unwrap();
    let msg = refused(&bytes, &mut q8_session);
    assert!(msg.contains("f32") && msg.contains("q8_0"), "{msg}");
    // A q8_0 cache saves and resumes as well.
    q8_session.generate(&first, 5, true).unwrap();
    let q8_file = dir.join("q8.bin");
    q8_session.save_session(&q8_file).unwrap();
    let mut q8_resumed = Session::new(ctx, &model, q8).unwrap();
    q8_resumed.load_session(&q8_file).unwrap();
    let next = tokens(7, 8, vocab);
    let want = q8_session.prefill(&next, LogitsMode::Last).unwrap();
    let got = q8_resumed.prefill(&next, LogitsMode::Last).unwrap();
    let d = rel_max_diff(&got, &want);
    assert!(d < 1e-6, "resumed q8_0 session: {d}");
    let dense_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/dense-bf16");
    let dense = Model::load(ctx, &dense_dir, false).unwrap();
    let mut other_model = session(ctx, &dense);
    assert!(refused(&bytes, &mut other_model).contains("another model"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A generation its callback stops early gives the first tokens of the full generation, says
/// it was stopped, and leaves the sequence where a next turn continues it exactly.
#[test]
fn a_stopped_stream_is_a_prefix_and_continues() {
    let Some(ctx) = testing::context() else {
        return;
    };
    let model = Model::load_bundled(ctx, None, false).unwrap();
    let vocab = model.config.vocab;
    let prompt = tokens(20, 4, vocab);
    let full = session(ctx, &model).generate(&prompt, 8, true).unwrap();

    let mut s = session(ctx, &model);
    let mut got = Vec::new();
    let greedy = wmoe::SamplingParams::greedy();
    let reason = s
        .generate_stream(&prompt, 8, true, &greedy, &mut |t| {
            got.push(t);
            if got.len() == 3 {
                wmoe::Flow::Stop
            } else {
                wmoe::Flow::Continue
            }
        })
        .unwrap();
    assert_eq!(reason, wmoe::FinishReason::Stopped);
    assert_eq!(got, full[..3]);
    // The stopped stream's tokens are all in the history, and a continuation matches a
    // fresh run of the whole conversation.
    assert_eq!(s.history(), [&prompt[..], &got[..]].concat());
    let next = tokens(5, 5, vocab);
    let conv = [s.history(), &next[..]].concat();
    let kept = s.reuse_prefix(&conv).unwrap();
    assert_eq!(kept, s.history().len());
    let cont = s.prefill(&conv[kept..], LogitsMode::Last).unwrap();
    let d = rel_max_diff(&cont, &fresh_logits(ctx, &model, &conv));
    assert!(d < 1e-5, "continuation after a stop: {d}");
}
