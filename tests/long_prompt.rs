//! A prompt of more than 4K tokens against transformers (tools/make_long_fixture.py):
//! chunked prefill and one-token decode over a KV cache held in several pages, with chunks
//! that straddle page boundaries, for f32 and f16 KV; then prefix reuse back into the long
//! prompt and the greedy continuation.

use std::path::Path;

mod common;

use common::compare;
use safetensors::SafeTensors;
use wmoe::{gpu::testing, DeviceOptions, GpuContext, KvType, LogitsMode, Model, Session};

struct Reference {
    prompt: Vec<u32>,
    positions: Vec<usize>,
    prefill: Vec<f32>,
    tokens: Vec<u32>,
    decode: Vec<f32>,
}

fn model_dir() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/models/dense-bf16"
    ))
}

fn read_reference() -> Reference {
    let bytes = std::fs::read(model_dir().join("long_reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = |n: &str| -> Vec<u32> {
        bytemuck::pod_collect_to_vec::<u8, i32>(st.tensor(n).unwrap().data())
            .into_iter()
            .map(|x| x as u32)
            .collect()
    };
    let f32s = |n: &str| -> Vec<f32> { bytemuck::pod_collect_to_vec(st.tensor(n).unwrap().data()) };
    Reference {
        prompt: ids("prompt"),
        positions: ids("positions").into_iter().map(|p| p as usize).collect(),
        prefill: f32s("prefill_logits"),
        tokens: ids("tokens"),
        decode: f32s("decode_logits"),
    }
}

/// Positions per KV page, from the session's one-line context summary.
fn page_positions(s: &Session) -> usize {
    let summary = s.context_summary();
    let after = summary.split("in pages of ").nth(1).expect(&summary);
    after.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn long_prompt_matches_transformers_across_chunks_and_pages() {
    if testing::context().is_none() {
        return;
    }
    let r = read_reference();
    assert!(r.prompt.len() > 4096);
    // A 400 KiB binding cap puts the KV cache in pages of 1600 positions (f32) or 3200
    // (f16) for this model, and leaves the chunk at 256: chunks straddle the page
    // boundaries.
    for kv in [KvType::F32, KvType::F16] {
        let mut opts = DeviceOptions::from_env();
        opts.switches.max_binding = Some(400 << 10);
        let ctx = GpuContext::new(&opts).unwrap();
        let model = Model::load(&ctx, model_dir(), false).unwrap();
        let v = model.config.vocab;
        let what = format!("{kv:?} KV");
        let session_opts = wmoe::SessionOptions {
            max_context: r.prompt.len() + r.tokens.len(),
            chunk: 256,
            kv,
        };
        let mut s = Session::new(&ctx, &model, session_opts).unwrap();
        let (page, chunk) = (page_positions(&s), s.options().chunk);
        assert!(
            page < r.prompt.len(),
            "{what}: one page of {page} holds it all"
        );
        assert!(
            page % chunk != 0,
            "{what}: chunks of {chunk} meet pages of {page}"
        );
        let all = s.prefill(&r.prompt, LogitsMode::All).unwrap();
        let got: Vec<f32> = r
            .positions
            .iter()
            .flat_map(|&p| all[p * v..(p + 1) * v].iter().copied())
            .collect();
        compare(
            "dense-bf16",
            &format!("4K+ prefill, {what}"),
            &got,
            &r.prefill,
            v,
        );
        let mut got = all[(r.prompt.len() - 1) * v..].to_vec();
        for &t in &r.tokens[..r.tokens.len() - 1] {
            got.extend(s.decode(t).unwrap());
        }
        compare(
            "dense-bf16",
            &format!("4K+ decode, {what}"),
            &got,
            &r.decode,
            v,
        );
        // Back to the prompt through prefix reuse (a conv checkpoint near its end), then the
        // greedy continuation.
        let kept = s.reuse_prefix(&r.prompt).unwrap();
        assert!(kept >= 4096, "{what}: reused only {kept} tokens");
        let greedy = s.generate(&r.prompt[kept..], r.tokens.len(), true).unwrap();
        assert_eq!(greedy, r.tokens, "{what}: greedy continuation");
    }
}
