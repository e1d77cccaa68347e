//! Context shift (`--context-overflow shift --keep N`) against transformers: the fixture
//! (tools/make_shift_fixture.py) applies llama.cpp's eviction to transformers' own cache —
//! keep N positions, discard half the rest, move the others down with their keys re-rotated,
//! conv states untouched — through a 40-token prompt in a 32-token context and 40 greedy
//! steps, four shifts in all.

use std::path::Path;

mod common;

use common::compare;
use safetensors::SafeTensors;
use wmoe::{
    gpu::testing, ContextOverflow, GpuContext, KvType, LogitsMode, Model, Session, SessionOptions,
};

struct Reference {
    prompt: Vec<u32>,
    tokens: Vec<u32>,
    logits: Vec<f32>,
    ctx: usize,
    keep: usize,
    shifts: usize,
}

fn model_dir() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/models/tiny-moe"
    ))
}

fn read_reference() -> Reference {
    let bytes = std::fs::read(model_dir().join("context_shift.safetensors")).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = |n: &str| -> Vec<u32> {
        bytemuck::pod_collect_to_vec::<u8, i32>(st.tensor(n).unwrap().data())
            .into_iter()
            .map(|x| x as u32)
            .collect()
    };
    let shifts: Vec<usize> = meta["shifts"]
        .trim_matches(['[', ']'])
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    Reference {
        prompt: ids("prompt"),
        tokens: ids("tokens"),
        logits: bytemuck::pod_collect_to_vec(st.tensor("logits").unwrap().data()),
        ctx: meta["ctx"].parse().unwrap(),
        keep: meta["keep"].parse().unwrap(),
        shifts: shifts.len(),
    }
}

fn session<'m>(ctx: &'m GpuContext, model: &'m Model, r: &Reference, kv: KvType) -> Session<'m> {
    let opts = SessionOptions {
        max_context: r.ctx,
        chunk: 8,
        kv,
    };
    let mut s = Session::new(ctx, model, opts).unwrap();
    s.set_context_overflow(ContextOverflow::Shift { keep: r.keep })
        .unwrap();
    s
}

#[test]
fn shift_matches_transformers() {
    let Some(ctx) = testing::context() else {
        return;
    };
    let r = read_reference();
    let model = Model::load(ctx, model_dir(), false).unwrap();
    let v = model.config.vocab;
    for kv in [KvType::F32, KvType::F16] {
        let what = format!("context shift ({kv:?} KV)");
        // Step by step: the prompt (one shift inside it), then one token per decode call.
        let mut s = session(ctx, &model, &r, kv);
        let mut got = s.prefill(&r.prompt, LogitsMode::Last).unwrap();
        for &t in &r.tokens[..r.tokens.len() - 1] {
            got.extend(s.decode(t).unwrap());
        }
        compare("tiny-moe", &what, &got, &r.logits, v);
        assert_eq!(s.context_shifts(), r.shifts, "{what}: shifts");
        assert!(s.position() <= r.ctx);
        // The generation loop (tokens fed on the GPU, read back a step late) shifts the same.
        let mut s = session(ctx, &model, &r, kv);
        let greedy = s.generate(&r.prompt, r.tokens.len(), true).unwrap();
        assert_eq!(greedy, r.tokens, "{what}: greedy tokens");
        assert_eq!(s.context_shifts(), r.shifts, "{what}: shifts in generate");
        assert_eq!(s.history().len(), s.position(), "{what}: history");
    }
}

/// After a shift the state no longer follows from the history: prefix reuse (also of the
/// session saved and restored) reaches back to the kept tokens only, and what it then feeds
/// gives a fresh run's logits.
#[test]
fn prefix_reuse_after_a_shift_starts_at_the_kept_tokens() {
    let Some(ctx) = testing::context() else {
        return;
    };
    let r = read_reference();
    let model = Model::load(ctx, model_dir(), false).unwrap();
    let mut s = session(ctx, &model, &r, KvType::F32);
    // Kept tokens are the prompt's first ones; the history lost the discarded ones.
    s.generate(&r.prompt, 12, true).unwrap();
    assert!(s.context_shifts() >= 1);
    assert_eq!(&s.history()[..r.keep], &r.prompt[..r.keep]);
    let mut prompt = s.history()[..20].to_vec();
    prompt.extend([11, 12, 13]);
    let kept = s.reuse_prefix(&prompt).unwrap();
    assert!(
        kept <= r.keep,
        "reused {kept} tokens past the kept {}",
        r.keep
    );
    let got = s.prefill(&prompt[kept..], LogitsMode::Last).unwrap();
    let fresh = SessionOptions {
        max_context: r.ctx,
        chunk: 8,
        kv: KvType::F32,
    };
    let want = Session::new(ctx, &model, fresh)
        .unwrap()
        .prefill(&prompt, LogitsMode::Last)
        .unwrap();
    let d = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(d < 1e-4, "reuse after a shift: max |Δ| {d}");
}

#[test]
fn overflow_errors_and_keep_bounds() {
    let Some(ctx) = testing::context() else {
        return;
    };
    let r = read_reference();
    let model = Model::load(ctx, model_dir(), false).unwrap();
    let opts = SessionOptions {
        max_context: 16,
        chunk: 8,
        kv: KvType::F32,
    };
    let mut s = Session::new(ctx, &model, opts).unwrap();
    let e = s
        .set_context_overflow(ContextOverflow::Shift { keep: 15 })
        .unwrap_err();
    assert!(e.to_string().contains("keep at most 14"), "{e}");
    // The default: a full context is an error naming the way out.
    s.prefill(&r.prompt[..16], LogitsMode::Last).unwrap();
    let e = s.decode(r.prompt[16]).unwrap_err();
    assert!(e.to_string().contains("exceed the context of 16"), "{e}");
    s.reset();
    let e = s.generate(&r.prompt[..10], 10, true).unwrap_err();
    assert!(e.to_string().contains("--context-overflow shift"), "{e}");
}
