//! The CLI contract other tools depend on (`wmoe logits`, `wmoe generate --json`) and clear
//! one-line errors for malformed checkpoints.

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::SafeTensors;

const BIN: &str = env!("CARGO_BIN_EXE_wmoe");

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models")
}

fn gpu_available() -> bool {
    wmoe::gpu::testing::context().is_some()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wmoe-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn logits_command_writes_reference_logits_in_both_modes() {
    if !gpu_available() {
        return;
    }
    let dir = assets().join("dense-bf16");
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let prompt: Vec<i32> = bytemuck::pod_collect_to_vec(st.tensor("prompt_tokens").unwrap().data());
    let want: Vec<f32> = bytemuck::pod_collect_to_vec(st.tensor("prefill_logits").unwrap().data());
    let ids: Vec<String> = prompt.iter().map(|t| t.to_string()).collect();
    let out_dir = tmpdir("logits");
    for mode in ["prefill", "decode"] {
        let out = out_dir.join(format!("{mode}.npy"));
        let st = Command::new(BIN)
            .args([
                "logits",
                "--model",
                dir.to_str().unwrap(),
                "--tokens",
                &ids.join(","),
                "--mode",
                mode,
                "--out",
                out.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(st.success(), "{mode}");
        let (shape, got) = wmoe::npy::read_f32(&out).unwrap();
        assert_eq!(shape, vec![prompt.len(), want.len() / prompt.len()]);
        let scale = want.iter().fold(0f32, |a, x| a.max(x.abs()));
        let diff = got
            .iter()
            .zip(&want)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(diff < 5e-3 * scale, "{mode}: {diff}");
    }
    let _ = std::fs::remove_dir_all(out_dir);
}

#[test]
fn generate_json_on_the_bundled_model() {
    if !gpu_available() {
        return;
    }
    let out = Command::new(BIN)
        .args([
            "generate",
            "--prompt",
            "Hello",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "--ignore-eos",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tokens"].as_array().unwrap().len(), 8);
    assert!(v["text"].is_string());
}

/// `wmoe generate --json` on "Hello" run as `bin` in `cwd`, with `model` args.
fn generate_hello(bin: &Path, cwd: &Path, model: &[&str]) -> serde_json::Value {
    let out = Command::new(bin)
        .current_dir(cwd)
        .args(["generate", "--prompt", "Hello", "--max-tokens", "8"])
        .args(["--ignore-eos", "--json"])
        .args(model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bundled_model_needs_no_source_tree() {
    if !gpu_available() {
        return;
    }
    let dir = assets().join("tiny-moe");
    let want = generate_hello(
        Path::new(BIN),
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["--model", dir.to_str().unwrap()],
    );
    // An installed copy of the binary, run from its own directory: no assets/ beside it.
    let elsewhere = tmpdir("installed");
    let bin = elsewhere.join("wmoe");
    std::fs::copy(BIN, &bin).unwrap();
    assert_eq!(generate_hello(&bin, &elsewhere, &[]), want);
    let _ = std::fs::remove_dir_all(elsewhere);
}

/// Copies tiny-moe into a temp dir, rewriting model.safetensors through `edit`.
fn broken_copy(
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let src = assets().join("tiny-moe");
    let dst = tmpdir(name);
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dst.join("model.safetensors")).unwrap();
    dst
}

/// Runs generate on `dir`; asserts a non-zero exit, no panic, and one error line with `needles`.
fn assert_clear_error(dir: &Path, needles: &[&str]) {
    let out = Command::new(BIN)
        .args([
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--tokens",
            "1,2,3",
            "--max-tokens",
            "2",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure for {}",
        dir.display()
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line expected, got: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "'{n}' missing from: {}", lines[0]);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_tensor_is_a_clear_error() {
    if !gpu_available() {
        return;
    }
    let dir = broken_copy("missing", |t| {
        t.retain(|x| x.0 != "model.layers.3.ffn_norm.weight")
    });
    assert_clear_error(
        &dir,
        &[
            "model.safetensors",
            "model.layers.3.ffn_norm.weight",
            "missing",
        ],
    );
}

#[test]
fn wrong_shape_is_a_clear_error() {
    if !gpu_available() {
        return;
    }
    let dir = broken_copy("shape", |t| {
        let x = t
            .iter_mut()
            .find(|x| x.0 == "model.layers.2.self_attn.k_proj.weight")
            .unwrap();
        x.2 = vec![x.2[1], x.2[0]];
    });
    assert_clear_error(
        &dir,
        &[
            "model.safetensors",
            "model.layers.2.self_attn.k_proj.weight",
            "shape",
        ],
    );
}

#[test]
fn truncated_file_is_a_clear_error() {
    if !gpu_available() {
        return;
    }
    let dir = broken_copy("truncated", |_| {});
    let f = dir.join("model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_clear_error(&dir, &["model.safetensors", "tensor 'model.", "truncated"]);
}

#[test]
fn unknown_model_type_is_a_clear_error() {
    if !gpu_available() {
        return;
    }
    let dir = broken_copy("modeltype", |_| {});
    let cfg = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"lfm2_moe\"", "\"mamba\"");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    assert_clear_error(&dir, &["config.json", "model_type", "mamba"]);
}

#[test]
fn too_long_a_prompt_is_a_clear_error() {
    if !gpu_available() {
        return;
    }
    let dir = assets().join("tiny-moe");
    let out = Command::new(BIN)
        .args([
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--tokens",
            "1,2,3,4,5,6",
            "--ctx",
            "4",
            "--max-tokens",
            "2",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("context") && !err.contains("panicked"),
        "{err}"
    );
}

/// `wmoe generate` with every sampling flag, on the bundled model.
fn generate_sampled(extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["generate", "--tokens", "1,331,409", "--max-tokens", "8"])
        .args([
            "--ignore-eos",
            "--json",
            "--temperature",
            "1.5",
            "--top-k",
            "40",
        ])
        .args([
            "--top-p",
            "0.95",
            "--min-p",
            "0.01",
            "--repeat-penalty",
            "1.1",
        ])
        .args(["--repeat-last-n", "-1", "--presence-penalty", "0.2"])
        .args(["--frequency-penalty", "-0.1"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn seeded_sampling_repeats() {
    if !gpu_available() {
        return;
    }
    let run = |seed: &str| {
        let out = generate_sampled(&["--seed", seed]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["tokens"].as_array().unwrap().clone()
    };
    let a = run("7");
    assert_eq!(a.len(), 8);
    assert_eq!(run("7"), a);
}

#[test]
fn bad_sampling_values_are_clear_errors() {
    for (flag, value, needle) in [
        ("--top-p", "1.5", "top-p must be in (0, 1]"),
        ("--temperature", "-1", "temperature must be"),
        ("--min-p", "NaN", "min-p must be in [0, 1]"),
        ("--repeat-penalty", "0", "repeat penalty must be"),
        ("--repeat-last-n", "-2", "--repeat-last-n must be -1"),
    ] {
        let out = Command::new(BIN)
            .args(["generate", "--tokens", "1", flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle) && err.lines().count() == 1,
            "{flag} {value}: {err}"
        );
    }
}
