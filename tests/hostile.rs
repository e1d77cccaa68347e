//! Hostile checkpoints (docs/RELIABILITY.md): crafted GGUF files, config.json files,
//! safetensors headers and indexes that once crashed, allocated what a header field said,
//! or ran to garbage with exit code 0. Each is now a clear error naming the file and the key
//! or tensor, found on the host before any GPU is opened (no test here needs one).

#[path = "common/gguf_build.rs"]
mod gguf_build;

use std::path::{Path, PathBuf};

use gguf_build::{tiny_lfm2, Gguf, V};
use serde_json::{json, Value};
use wmoe::model::gguf::GgufSource;
use wmoe::model::{Checkpoint, Config, TensorSource};
use wmoe::ModelFiles;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wmoe-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn err_of<T>(r: wmoe::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// The error of opening `g` as a model, which must name the file and hold every needle.
fn gguf_error(name: &str, g: &Gguf, needles: &[&str]) -> String {
    let p = tmp(name);
    g.write(&p);
    let msg = err_of(ModelFiles::open(&p));
    assert!(msg.contains(p.to_str().unwrap()), "{msg}");
    for n in needles {
        assert!(msg.contains(n), "{msg:?} should mention {n:?}");
    }
    assert_eq!(msg.lines().count(), 1, "{msg}");
    msg
}

#[test]
fn the_tiny_gguf_model_is_valid() {
    let p = tmp("tiny.gguf");
    tiny_lfm2().write(&p);
    let m = ModelFiles::open(&p).unwrap();
    assert_eq!((m.config.n_layers, m.config.vocab), (2, 12));
    assert_eq!(m.config.attention, [false, true]);
    assert_eq!(
        (m.config.bos, m.config.eos.as_slice()),
        (Some(1), &[11][..])
    );
    let tok = m.tokenizer.expect("tokenizer metadata");
    assert_eq!(tok.encode("abc ab", false).unwrap().get_ids(), [7, 5, 6]);
}

#[test]
fn layer_counts_are_bounded_before_anything_is_sized_by_them() {
    for n in [1u64 << 40, 100_000_000] {
        let mut g = tiny_lfm2();
        g.set("lfm2.block_count", V::U64(n));
        g.set("lfm2.attention.head_count_kv", V::U32(2));
        gguf_error(
            "layers.gguf",
            &g,
            &[&format!("lfm2.block_count is {n}; it must be 1..=1024")],
        );
    }
    let mut g = tiny_lfm2();
    g.set("lfm2.block_count", V::U32(0));
    gguf_error("zero.gguf", &g, &["lfm2.block_count is 0"]);
    let mut g = tiny_lfm2();
    g.set("lfm2.block_count", V::U32(1));
    g.set("lfm2.attention.head_count_kv", V::u32s(&[0]));
    gguf_error(
        "fewer.gguf",
        &g,
        &["'lfm2.block_count' is 1 but the file has tensors of block 1"],
    );
}

#[test]
fn bad_numbers_in_gguf_metadata_are_errors_not_defaults() {
    let eps = "lfm2.attention.layer_norm_rms_epsilon";
    for (key, v) in [
        (eps, V::F32(-1.0)),
        (eps, V::F32(f32::NAN)),
        (eps, V::F64(f64::INFINITY)),
        (eps, V::F32(0.0)),
        ("lfm2.rope.freq_base", V::F32(f32::NAN)),
        ("lfm2.rope.freq_base", V::F32(-5.0)),
    ] {
        let mut g = tiny_lfm2();
        g.set(key, v.clone());
        gguf_error("number.gguf", &g, &[key, "must be a finite number above 0"]);
    }
    for (key, v) in [
        ("tokenizer.ggml.bos_token_id", V::U64(1 << 32)),
        ("tokenizer.ggml.eos_token_id", V::U32(12)),
        ("tokenizer.ggml.bos_token_id", V::I32(-1)),
    ] {
        let mut g = tiny_lfm2();
        g.set(key, v);
        gguf_error("id.gguf", &g, &[key, "below the vocabulary size 12"]);
    }
    let mut g = tiny_lfm2();
    g.set("lfm2.attention.key_length", V::U64(u64::MAX));
    gguf_error("keylen.gguf", &g, &["lfm2.attention.key_length"]);
}

#[test]
fn an_infinite_expert_scale_is_an_error() {
    let mut g = tiny_lfm2();
    g.set("general.architecture", V::Str("lfm2moe".into()));
    let kvs: Vec<(String, V)> = g.kvs.drain(..).collect();
    for (k, v) in kvs {
        g.set(&k.replace("lfm2.", "lfm2moe."), v);
    }
    g.set("lfm2moe.expert_count", V::U32(4))
        .set("lfm2moe.expert_used_count", V::U32(2))
        .set("lfm2moe.expert_feed_forward_length", V::U32(8))
        .set("lfm2moe.expert_weights_scale", V::F32(f32::INFINITY));
    gguf_error(
        "scale.gguf",
        &g,
        &[
            "lfm2moe.expert_weights_scale",
            "must be a finite number above 0",
        ],
    );
}

#[test]
fn overlapping_and_oversized_gguf_tensors_are_refused() {
    let mut g = tiny_lfm2();
    g.tensors[3].offset = Some(0); // blk.0.ffn_norm over token_embd
    gguf_error(
        "overlap.gguf",
        &g,
        &[
            "'blk.0.ffn_norm.weight'",
            "overlaps the data of tensor",
            "'token_embd.weight'",
        ],
    );
    // a stack of 2^40 experts: refused before anything is sized by the count
    let mut g = tiny_lfm2();
    g.typed("blk.1.ffn_gate_exps.weight", &[16, 8, 1 << 40], 99);
    gguf_error(
        "stack.gguf",
        &g,
        &["tensor 'blk.1.ffn_gate_exps.weight': stacks 1099511627776 experts, more than the 65536"],
    );
    // a stack of an unknown type: asking for an expert names the type
    let mut g = tiny_lfm2();
    g.typed("blk.1.ffn_gate_exps.weight", &[16, 8, 4], 99);
    let p = tmp("stack-type.gguf");
    g.write(&p);
    let src = GgufSource::open(&p).unwrap();
    let e = err_of(src.get("model.layers.1.feed_forward.experts.3.w1.weight"));
    assert!(e.contains("unknown type id 99"), "{e}");
    assert!(!src.contains("model.layers.1.feed_forward.experts.4.w1.weight"));
    // an alignment whose padding overflows
    let mut g = tiny_lfm2();
    g.set("general.alignment", V::U64(1 << 63));
    let p = tmp("align.gguf");
    g.write(&p);
    assert!(!err_of(ModelFiles::open(&p)).is_empty());
}

#[test]
fn huge_gguf_counts_fail_without_allocating() {
    let mut b = tiny_lfm2().bytes();
    // the metadata count: 2^62 keys cannot fit
    b[16..24].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let p = tmp("count.gguf");
    std::fs::write(&p, &b).unwrap();
    let e = err_of(ModelFiles::open(&p));
    assert!(e.contains("cannot fit in"), "{e}");
    // an array longer than the file
    let mut g = tiny_lfm2();
    g.set("tokenizer.ggml.tokens", V::strs(&["a"]));
    let mut b = g.bytes();
    let key = b"tokenizer.ggml.tokens";
    let at = b.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 8;
    b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let p = tmp("array.gguf");
    std::fs::write(&p, &b).unwrap();
    let e = err_of(ModelFiles::open(&p));
    assert!(e.contains("does not fit in the file"), "{e}");
}

/// A tiny-moe config.json with `edit` applied, read as a config.
fn config_error(edit: impl FnOnce(&mut Value), needles: &[&str]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/tiny-moe/config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    let msg = err_of(Config::from_json(&v, Path::new("x/config.json")));
    assert!(msg.starts_with("x/config.json: "), "{msg}");
    for n in needles {
        assert!(msg.contains(n), "{msg:?} should mention {n:?}");
    }
}

#[test]
fn bad_config_json_values_are_named() {
    config_error(
        |v| {
            v["num_hidden_layers"] = json!(1_000_000_000u64);
            v.as_object_mut().unwrap().remove("layer_types");
            v["full_attn_idxs"] = json!([1]);
        },
        &["num_hidden_layers is 1000000000; it must be 1..=1024"],
    );
    config_error(
        |v| {
            v["num_hidden_layers"] = json!(0);
            v["layer_types"] = json!([]);
        },
        &["num_hidden_layers is 0"],
    );
    for (key, bad) in [
        ("norm_eps", json!(-1.0)),
        ("norm_eps", json!(0.0)),
        ("norm_eps", json!(1e300)),
        ("routed_scaling_factor", json!(1e300)),
        ("routed_scaling_factor", json!(-2.0)),
    ] {
        config_error(
            |v| v[key] = bad,
            &[key, "it must be a finite number above 0"],
        );
    }
    config_error(
        |v| v["rope_parameters"]["rope_theta"] = json!(0),
        &["rope_theta is 0"],
    );
    for (key, bad, what) in [
        (
            "bos_token_id",
            json!(1u64 << 32),
            "key 'bos_token_id' must be a token id",
        ),
        (
            "eos_token_id",
            json!([7, -1]),
            "key 'eos_token_id' must be a token id",
        ),
        (
            "eos_token_id",
            json!(512),
            "eos_token_id 512 is outside the vocabulary",
        ),
    ] {
        config_error(|v| v[key] = bad, &[what]);
    }
    for (key, max) in [("vocab_size", "16777216"), ("hidden_size", "1048576")] {
        config_error(
            |v| v[key] = json!(0),
            &[&format!("{key} is 0; it must be 1..={max}")],
        );
    }
    config_error(|v| v["num_experts"] = json!(1u64 << 40), &["num_experts"]);
}

/// A copy of tiny-moe with its safetensors header rewritten by `edit` (data unchanged).
fn edited_checkpoint(name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/tiny-moe");
    let dst = tmp(name);
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::copy(src.join("config.json"), dst.join("config.json")).unwrap();
    let b = std::fs::read(src.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    edit(&mut header);
    let mut text = header.to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text.as_bytes());
    out.extend(&b[8 + n..]);
    std::fs::write(dst.join("model.safetensors"), out).unwrap();
    dst
}

#[test]
fn bad_quantized_entries_and_overlapping_safetensors_are_refused() {
    let name = "model.layers.0.ffn_norm.weight";
    for (shape, needle) in [
        (json!([]), "'shape' is not a non-empty list of sizes"),
        (json!(["x"]), "'shape' is not a non-empty list of sizes"),
        (json!([1u64 << 32, 1u64 << 32, 32]), "needs more than 2^64"),
    ] {
        let dir = edited_checkpoint("quant", |h| {
            let entry = h[name].clone();
            h[name]["dtype"] = json!("U8");
            let bytes = entry["data_offsets"][1].as_u64().unwrap()
                - entry["data_offsets"][0].as_u64().unwrap();
            h[name]["shape"] = json!([bytes]);
            let quant = json!({ name: {"format": "q8_0", "shape": shape} });
            h["__metadata__"]["wmoe.quant"] = json!(quant.to_string());
        });
        for msg in [
            err_of(Checkpoint::open(&dir)),
            err_of(wmoe::quantize_checkpoint(
                &dir,
                wmoe::QuantPlan::parse("q8_0").unwrap(),
                &tmp("never"),
            )),
        ] {
            assert!(msg.contains(name) && msg.contains(needle), "{msg}");
        }
    }
    let dir = edited_checkpoint("overlap", |h| {
        let norm = h["model.layers.0.operator_norm.weight"]["data_offsets"].clone();
        h["model.layers.0.ffn_norm.weight"]["data_offsets"] = norm;
    });
    let msg = err_of(Checkpoint::open(&dir));
    assert!(msg.contains("corrupt safetensors file"), "{msg}");
}

#[test]
fn index_entries_outside_the_model_directory_are_refused() {
    let dir = tmp("index");
    let index = dir.join("model.safetensors.index.json");
    for (file, ok) in [
        (json!("model-00001-of-00002.safetensors"), true),
        (json!("../../outside.safetensors"), false),
        (json!("/etc/passwd"), false),
        (json!("sub/model.safetensors"), false),
        (json!(".."), false),
        (json!(7), false),
    ] {
        let text = json!({"weight_map": {"model.embed_tokens.weight": file}}).to_string();
        let r = Checkpoint::shards(&dir, &index, text.as_bytes());
        match ok {
            true => assert_eq!(r.unwrap(), [dir.join(file.as_str().unwrap())]),
            false => {
                let msg = err_of(r);
                assert!(
                    msg.contains("model.safetensors.index.json")
                        && msg.contains("weight_map entry 'model.embed_tokens.weight'")
                        && msg.contains("must name a shard file in the model directory"),
                    "{msg}"
                );
            }
        }
    }
}

#[test]
fn a_config_with_fewer_layers_than_the_checkpoint_is_refused() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/tiny-moe");
    let dst = tmp("fewer");
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::copy(src.join("model.safetensors"), dst.join("model.safetensors")).unwrap();
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    v["num_hidden_layers"] = json!(2);
    let types = v["layer_types"].as_array().unwrap()[..2].to_vec();
    v["layer_types"] = json!(types);
    std::fs::write(dst.join("config.json"), v.to_string()).unwrap();
    let msg = err_of(ModelFiles::open(&dst));
    assert!(
        msg.contains(
            "config.json: num_hidden_layers is 2 but the checkpoint has tensor 'model.layers.2."
        ),
        "{msg}"
    );
}

/// Found by fuzzing (fuzz/corpus/gguf/crash-6b3b…): a zero dimension let another be 2^63,
/// and reading the (empty) tensor overflowed its row size.
#[test]
fn dimensions_whose_sizes_overflow_are_refused() {
    let mut g = tiny_lfm2();
    g.typed("blk.0.extra.weight", &[1 << 63, 0], 0);
    gguf_error(
        "dims.gguf",
        &g,
        &["tensor 'blk.0.extra.weight': has dimensions [9223372036854775808, 0] whose sizes overflow"],
    );
    let header = json!({"x": {"dtype": "F32", "shape": [0, 1u64 << 62], "data_offsets": [0, 0]}});
    let text = header.to_string();
    let mut b = (text.len() as u64).to_le_bytes().to_vec();
    b.extend(text.as_bytes());
    let msg = err_of(Checkpoint::from_bytes(Path::new("m.safetensors"), b));
    assert!(
        msg.contains("m.safetensors: tensor 'x': has dimensions [0, 4611686018427387904] whose sizes overflow"),
        "{msg}"
    );
}
