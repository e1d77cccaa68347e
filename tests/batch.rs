//! Continuous batching: sequences decoded together in one step give, each, the tokens it
//! gets decoded alone — with sequences of different lengths joining (prefill a chunk at a
//! time between steps) and leaving, and a slot reused for a conversation's next turn.

use wmoe::{gpu::testing, Batch, KvType, Model, SamplingParams, Session, SessionOptions};

const OPTS: SessionOptions = SessionOptions {
    max_context: 256,
    chunk: 16,
    kv: KvType::F32,
};

/// Deterministic token ids below `vocab`.
fn tokens(n: usize, seed: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729 + 13) % (vocab - 2) + 2) as u32)
        .collect()
}

/// A request: its prompt, how many tokens it generates, and how it draws them.
struct Request {
    prompt: Vec<u32>,
    n: usize,
    sampling: SamplingParams,
}

/// Runs `requests` through a batch of `parallel` slots on the batch's schedule
/// ([`Batch::tick`]: a joining slot's prefill a chunk at a time between steps), admitting
/// each as soon as a slot is free and ending it as soon as it has its tokens; returns each
/// request's tokens and how many ticks decoded more than one sequence.
fn run_batched(batch: &mut Batch, requests: &[Request]) -> (Vec<Vec<u32>>, usize) {
    let mut out = vec![Vec::new(); requests.len()];
    let mut owner: Vec<Option<usize>> = vec![None; batch.parallel()];
    let mut next = 0;
    let mut batched_steps = 0;
    loop {
        for (slot, owned) in owner.iter_mut().enumerate() {
            if let Some(r) = *owned {
                if out[r].len() >= requests[r].n {
                    batch.finish(slot).unwrap();
                    *owned = None;
                }
            }
            if owned.is_none() && next < requests.len() {
                let r = &requests[next];
                batch.admit(slot, &r.prompt, &r.sampling).unwrap();
                *owned = Some(next);
                next += 1;
            }
        }
        if out.iter().zip(requests).all(|(o, r)| o.len() >= r.n) {
            break;
        }
        let drawn = batch.tick().unwrap();
        batched_steps += (drawn.len() > 1) as usize;
        for (slot, t) in drawn {
            out[owner[slot].unwrap()].push(t);
        }
    }
    (out, batched_steps)
}

#[test]
fn batched_decode_matches_each_sequence_alone() {
    let Some(ctx) = testing::context() else {
        return;
    };
    let model = Model::load_bundled(ctx, None, false).unwrap();
    let vocab = model.config.vocab;
    let requests: Vec<Request> = [(5, 12), (23, 5), (40, 9), (9, 14), (2, 6)]
        .into_iter()
        .enumerate()
        .map(|(i, (len, n))| Request {
            prompt: tokens(len, i + 1, vocab),
            n,
            // Every other request samples (seeded, with penalties): its draws follow its
            // own positions and counts, batched or not.
            sampling: if i % 2 == 1 {
                SamplingParams {
                    temperature: 1.0,
                    top_p: 0.9,
                    repeat_penalty: 1.3,
                    presence_penalty: 0.5,
                    seed: i as u64,
                    ..SamplingParams::greedy()
                }
            } else {
                SamplingParams::greedy()
            },
        })
        .collect();
    let mut batch = Batch::new(ctx, &model, OPTS, 3).unwrap();
    let (got, together) = run_batched(&mut batch, &requests);
    assert!(
        together > 10,
        "sequences were decoded together: {together} steps"
    );
    for (i, (r, g)) in requests.iter().zip(&got).enumerate() {
        let alone = Session::new(ctx, &model, OPTS)
            .unwrap()
            .generate_with(&r.prompt, r.n, true, &r.sampling)
            .unwrap();
        assert_eq!(&g[..r.n], &alone[..], "request {i}");
    }
}

#[test]
fn a_slot_continues_its_conversation_from_its_prefix() {
    let Some(ctx) = testing::context() else {
        return;
    };
    let model = Model::load_bundled(ctx, None, false).unwrap();
    let vocab = model.config.vocab;
    let mut batch = Batch::new(ctx, &model, OPTS, 2).unwrap();
    let first = Request {
        prompt: tokens(30, 7, vocab),
        n: 6,
        sampling: SamplingParams::greedy(),
    };
    let other = Request {
        prompt: tokens(11, 8, vocab),
        n: 9,
        sampling: SamplingParams::greedy(),
    };
    let (answers, _) = run_batched(&mut batch, &[first, other]);
    // The next turn: the conversation so far (as the slot holds it) and new tokens.
    let slot = (0..2)
        .find(|&s| batch.history(s).len() >= 30 && batch.history(s)[..30] == tokens(30, 7, vocab))
        .unwrap();
    let mut conv = batch.history(slot).to_vec();
    assert_eq!(conv.len(), 30 + answers[0].len() - 1);
    conv.extend(tokens(7, 9, vocab));
    let kept = batch.admit(slot, &conv, &SamplingParams::greedy()).unwrap();
    assert_eq!(
        kept,
        batch.history(slot).len(),
        "only the new tokens are fed"
    );
    let mut got = Vec::new();
    while batch.prefilling(slot) {
        got.extend(batch.prefill(slot).unwrap());
    }
    while got.len() < 5 {
        let drawn = batch.step().unwrap();
        assert_eq!(drawn.len(), 1, "only the continued slot generates");
        got.push(drawn[0].1);
    }
    let alone = Session::new(ctx, &model, OPTS)
        .unwrap()
        .generate(&conv, 5, true)
        .unwrap();
    assert_eq!(got, alone);
}
