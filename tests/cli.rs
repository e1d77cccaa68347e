//! The CLI contract other tools depend on (`wmoe logits`, `wmoe generate --json`, `wmoe
//! template`, `wmoe parse`) and clear one-line errors for malformed checkpoints and requests.

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

/// `wmoe generate ARGS --json` on the bundled model, parsed.
fn generate_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("generate")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {err}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `generate --chat` renders the template and parses the answer; `--stop` ends the text
/// at a stop string; a forced token (`--logit-bias`) repeats until the loop guard ends it.
#[test]
fn generate_chat_stop_strings_logit_bias_and_loop_guard() {
    if !gpu_available() {
        return;
    }
    let chat = generate_json(&[
        "--chat",
        "--prompt",
        "Hi",
        "--system",
        "Be brief.",
        "--max-tokens",
        "8",
    ]);
    let plain = generate_json(&["--prompt", "Hi", "--max-tokens", "8"]);
    assert_eq!(chat["message"]["role"], "assistant");
    assert!(
        chat["prompt_tokens"].as_u64().unwrap() > plain["tokens"].as_array().unwrap().len() as u64
    );
    assert!(["eos", "length"].contains(&chat["finish"].as_str().unwrap()));

    // Greedy: the bundled demo model samples by default.
    let whole = generate_json(&[
        "--prompt",
        "Hello",
        "--max-tokens",
        "12",
        "--ignore-eos",
        "--temperature",
        "0",
    ]);
    let text = whole["text"].as_str().unwrap();
    let stop: String = text.chars().skip(2).take(1).collect();
    assert!(!stop.is_empty(), "{text:?}");
    let cut = generate_json(&[
        "--prompt",
        "Hello",
        "--max-tokens",
        "12",
        "--ignore-eos",
        "--temperature",
        "0",
        "--stop",
        &stop,
    ]);
    assert_eq!(
        cut["text"].as_str().unwrap(),
        &text[..text.find(&stop).unwrap()]
    );
    assert_eq!(cut["finish"], "stopped");

    let looped = generate_json(&[
        "--prompt",
        "Hello",
        "--max-tokens",
        "20",
        "--ignore-eos",
        "--logit-bias",
        "300=100",
        "--loop-min-repeats",
        "4",
    ]);
    assert_eq!(looped["tokens"], serde_json::json!([300, 300, 300, 300]));
    assert_eq!(looped["finish"], "repetition");
    // DRY penalizes what the bias forces once it repeats: the run of one token is broken.
    let forced = [
        "--prompt",
        "Hello",
        "--max-tokens",
        "6",
        "--ignore-eos",
        "--logit-bias",
        "300=25",
    ];
    let all = generate_json(&forced);
    assert_eq!(all["tokens"], serde_json::json!(vec![300; 6]));
    let dry = [
        &forced[..],
        &["--dry-multiplier", "40", "--dry-allowed-length", "1"],
    ]
    .concat();
    let broken = generate_json(&dry);
    assert_ne!(broken["tokens"], all["tokens"]);
}

/// `wmoe bench --json` with two depths: one row per test and depth, llama-bench's fields
/// (`n_depth` included), positive throughput and the host time per decode step.
#[test]
fn bench_json_rows_at_two_depths() {
    if !gpu_available() {
        return;
    }
    let out = Command::new(BIN)
        .args([
            "bench", "-p", "8", "-n", "4", "-r", "1", "-d", "0,40", "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let shape: Vec<(u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_u64().unwrap();
            (n("n_prompt"), n("n_gen"), n("n_depth"))
        })
        .collect();
    assert_eq!(shape, [(8, 0, 0), (0, 4, 0), (8, 0, 40), (0, 4, 40)]);
    for r in &rows {
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["host_us_per_step"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// `wmoe generate --json` on "Hello" run as `bin` in `cwd`, with `model` args (seeded: the
/// bundled model samples by default).
fn generate_hello(bin: &Path, cwd: &Path, model: &[&str]) -> serde_json::Value {
    let out = Command::new(bin)
        .current_dir(cwd)
        .args(["generate", "--prompt", "Hello", "--max-tokens", "8"])
        .args(["--ignore-eos", "--json", "--seed", "7"])
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
    let dir = assets().join("demo");
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

/// Runs `wmoe ARGS` with `stdin`; returns (exit success, stdout, stderr).
fn run_wmoe(args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails before reading its input (a missing model) closes the pipe first.
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// Asserts a failed run with one error line holding every one of `needles`.
fn assert_one_line_error((ok, stdout, stderr): (bool, String, String), needles: &[&str]) {
    assert!(!ok, "expected failure, got stdout {stdout:?}");
    assert!(stdout.is_empty(), "stdout on failure: {stdout:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "'{n}' missing from: {}", lines[0]);
    }
}

#[test]
fn template_command_prints_the_prompt_exactly() {
    // The bundled model's template is LFM2-8B-A1B's, so transformers' fixtures apply.
    let fixtures: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/chat/template-fixtures.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let case = &fixtures["cases"][5];
    assert_eq!(
        case["name"],
        "tool call with object arguments and tool result"
    );
    let want = case["expected"]["LFM2-8B-A1B"]["prompt"].as_str().unwrap();
    let dir = tmpdir("template");
    let request = dir.join("request.json");
    std::fs::write(&request, case["request"].to_string()).unwrap();
    let tiny = assets().join("tiny-moe");
    for model in [vec![], vec!["--model", tiny.to_str().unwrap()]] {
        let mut args = vec!["template", "--request", request.to_str().unwrap()];
        args.extend(&model);
        let (ok, stdout, stderr) = run_wmoe(&args, "");
        assert!(ok, "{stderr}");
        assert_eq!(stdout, want, "{model:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn template_command_errors_are_one_line() {
    let dir = tmpdir("template-errors");
    let missing = dir.join("missing.json");
    assert_one_line_error(
        run_wmoe(&["template", "--request", missing.to_str().unwrap()], ""),
        &["missing.json", "cannot read"],
    );
    let malformed = dir.join("malformed.json");
    std::fs::write(&malformed, "{\"messages\": [").unwrap();
    assert_one_line_error(
        run_wmoe(&["template", "--request", malformed.to_str().unwrap()], ""),
        &["malformed.json", "not valid JSON"],
    );
    let request = dir.join("request.json");
    std::fs::write(
        &request,
        r#"{"messages": [{"role": "tool", "content": "x"}]}"#,
    )
    .unwrap();
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("chat_template.jinja"),
        "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}{{ raise_exception('Only user and assistant roles are supported, not ' + m.role) }}{% endif %}{% endfor %}",
    )
    .unwrap();
    let args = [
        "template",
        "--model",
        model.to_str().unwrap(),
        "--request",
        request.to_str().unwrap(),
    ];
    assert_one_line_error(
        run_wmoe(&args, ""),
        &[
            "chat_template.jinja",
            "Only user and assistant roles are supported, not tool",
        ],
    );
    std::fs::remove_file(model.join("chat_template.jinja")).unwrap();
    assert_one_line_error(
        run_wmoe(&args, ""),
        &["no chat template", "chat_template.jinja"],
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn parse_command_prints_the_assistant_message() {
    let generated = "<think>The user wants weather.</think>\n\nLet me check.<|tool_call_start|>[get_weather(city='Zürich', days=[1, 2]), web.search(q=\"it's\", n=None)]<|tool_call_end|>";
    let (ok, stdout, stderr) = run_wmoe(&["parse"], generated);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        concat!(
            r#"{"role":"assistant","content":"Let me check.","reasoning_content":"The user wants weather.","tool_calls":["#,
            r#"{"id":"call_0","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Zürich\", \"days\": [1, 2]}"}},"#,
            r#"{"id":"call_1","type":"function","function":{"name":"web.search","arguments":"{\"q\": \"it's\", \"n\": null}"}}]}"#,
            "\n"
        )
    );
    let tiny = assets().join("tiny-moe");
    let (ok, stdout, _) = run_wmoe(
        &["parse", "--model", tiny.to_str().unwrap()],
        "Just text [f(x=1)]",
    );
    assert!(ok);
    assert_eq!(
        stdout,
        "{\"role\":\"assistant\",\"content\":\"Just text [f(x=1)]\",\"reasoning_content\":null,\"tool_calls\":[]}\n"
    );
    assert_one_line_error(
        run_wmoe(&["parse", "--model", "/nonexistent/model"], "x"),
        &["/nonexistent/model", "no such directory"],
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
        ("--dry-base", "0.5", "DRY base must be"),
        (
            "--dry-penalty-last-n",
            "-3",
            "--dry-penalty-last-n must be -1",
        ),
        ("--loop-min-repeats", "1", "loop guard needs"),
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

/// `wmoe ARGS` with `env`: (exit code, stderr lines that are not empty).
fn run_wmoe_env(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, Vec<String>) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let lines = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    (out.status.code(), lines)
}

/// Asserts exit code 1 and exactly the one error line `want`.
fn assert_error_line(args: &[&str], env: &[(&str, &str)], want: &str) {
    let (code, lines) = run_wmoe_env(args, env);
    assert_eq!(code, Some(1), "{args:?}: {lines:?}");
    assert_eq!(lines, [want], "{args:?}");
}

/// An adapter name no machine has: the GPU cannot be opened.
const NO_ADAPTER: (&str, &str) = ("WMOE_ADAPTER", "no-such-adapter-anywhere");

#[test]
fn a_malformed_model_is_reported_before_any_gpu_is_looked_for() {
    let dir = broken_copy("order", |t| {
        t.retain(|x| x.0 != "model.layers.3.ffn_norm.weight")
    });
    let d = dir.to_str().unwrap();
    let args = ["generate", "--model", d, "--tokens", "1,2,3"];
    let want = format!(
        "error: {}: tensor 'model.layers.3.ffn_norm.weight': missing from the checkpoint",
        dir.join("model.safetensors").display()
    );
    assert_error_line(&args, &[NO_ADAPTER], &want);
    // a sound model on the same machine reaches the GPU, and says there is none
    let good = assets().join("tiny-moe");
    let (code, lines) = run_wmoe_env(
        &[
            "generate",
            "--model",
            good.to_str().unwrap(),
            "--tokens",
            "1",
        ],
        &[NO_ADAPTER],
    );
    assert_eq!(code, Some(1));
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("error: no usable GPU adapter: no adapter matches"),
        "{lines:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sizes_from_the_command_line_are_checked() {
    if !gpu_available() {
        return;
    }
    let out = tmpdir("sizes").join("l.npy");
    let o = out.to_str().unwrap();
    assert_error_line(
        &["logits", "--ctx", "1", "--tokens", "1,2,3", "--out", o],
        &[],
        "error: invalid input: 3 tokens at position 0 exceed the context of 1 tokens; pass a larger --ctx or a shorter prompt",
    );
    assert!(!out.exists());
    assert_error_line(
        &["bench", "--chunk", "0", "-p", "4", "-n", "2", "-r", "1"],
        &[],
        "error: invalid input: context and chunk sizes must be at least 1",
    );
    assert_error_line(
        &[
            "bench",
            "--parallel",
            "1,0",
            "-p",
            "0",
            "-n",
            "2",
            "-r",
            "1",
        ],
        &[],
        "error: invalid input: the numbers of parallel sequences must be at least 1",
    );
    assert_error_line(
        &["bench", "-p", "4", "-n", "2", "-r", "0"],
        &[],
        "error: invalid input: the number of repetitions (-r) must be at least 1",
    );
    assert_error_line(
        &[
            "generate",
            "--ctx",
            "4096",
            "--tokens",
            "1,2,3",
            "--max-tokens",
            "18446744073709551615",
        ],
        &[],
        "error: invalid input: prompt of 3 tokens plus 18446744073709551615 new tokens exceeds the context of 4096; pass a larger --ctx or --context-overflow shift",
    );
    let _ = std::fs::remove_dir_all(out.parent().unwrap());
}

#[test]
fn bench_runs_on_a_two_token_vocabulary() {
    if !gpu_available() {
        return;
    }
    let dir = tmpdir("vocab2").join("model");
    let mut cfg = wmoe::synth_config("test-256", Some(2)).unwrap();
    cfg["vocab_size"] = serde_json::json!(2);
    cfg["eos_token_id"] = serde_json::json!(1);
    wmoe::synth(&dir, &cfg, None, 3, false).unwrap();
    let (code, lines) = run_wmoe_env(
        &[
            "bench",
            "--model",
            dir.to_str().unwrap(),
            "-p",
            "8",
            "-n",
            "4",
            "-r",
            "1",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{lines:?}");
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

/// The entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn outputs_touch_nothing_but_their_target() {
    let root = tmpdir("writes");
    let src = assets().join("tiny-moe");
    let out = root.join("q");
    // someone's files beside the target, under the names earlier versions used
    std::fs::create_dir(root.join("q.partial")).unwrap();
    std::fs::write(root.join("q.partial/keep"), "mine").unwrap();
    std::fs::write(root.join("q.npy.partial"), "mine").unwrap();
    let q = |out: &Path| {
        let o = out.to_str().unwrap().to_string();
        run_wmoe_env(
            &[
                "quantize",
                "--model",
                src.to_str().unwrap(),
                "--type",
                "q8_0",
                "--out",
                &o,
            ],
            &[],
        )
    };
    let (code, lines) = q(&root.join("missing/q"));
    assert_eq!(code, Some(1));
    assert_eq!(
        lines,
        [format!(
            "error: {}: does not exist or is not a directory; create it first (wmoe creates no parent directories)",
            root.join("missing").display()
        )]
    );
    assert!(!root.join("missing").exists());
    assert_eq!(q(&out).0, Some(0));
    assert_eq!(entries(&root), ["q", "q.npy.partial", "q.partial"]);
    let files = [
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ];
    assert_eq!(entries(&out), files);
    assert_eq!(
        std::fs::read_to_string(root.join("q.partial/keep")).unwrap(),
        "mine"
    );
    let (code, lines) = q(&out);
    assert_eq!(code, Some(1));
    assert_eq!(
        lines,
        [format!(
            "error: {}: already exists; remove it or choose another --out",
            out.display()
        )]
    );
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn gpu_tests_without_an_adapter_say_they_skipped_and_how_many() {
    if std::env::var_os("WMOE_SKIP_PROBE").is_some() {
        return; // the probe's own run
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "generate_json_on_the_bundled_model",
            "too_long_a_prompt_is_a_clear_error",
        ])
        .env(NO_ADAPTER.0, NO_ADAPTER.1)
        .env("WMOE_SKIP_PROBE", "1")
        .env_remove("CI")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{err}");
    for t in [
        "generate_json_on_the_bundled_model",
        "too_long_a_prompt_is_a_clear_error",
    ] {
        assert!(
            err.contains(&format!("SKIPPED (no GPU adapter): {t}\n")),
            "{err}"
        );
    }
    assert!(
        err.contains("SKIPPED: 2 GPU test(s) of this binary ran without a GPU adapter"),
        "{err}"
    );
    assert!(stdout.contains("2 passed"), "{stdout}");
}

#[test]
fn generate_shifts_a_full_context_when_asked() {
    if !gpu_available() {
        return;
    }
    let model = assets().join("tiny-moe");
    let run = |extra: &[&str]| {
        let mut args = vec!["generate", "--model", model.to_str().unwrap()];
        args.extend([
            "--tokens",
            "1,20,30,40,50,60",
            "--ctx",
            "16",
            "--max-tokens",
            "30",
        ]);
        args.extend(["--ignore-eos", "--json"]);
        args.extend(extra);
        Command::new(BIN).args(&args).output().unwrap()
    };
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--context-overflow shift"), "{err}");
    let out = run(&["--context-overflow", "shift", "--keep", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("shifted"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tokens"].as_array().unwrap().len(), 30);
    let out = run(&["--context-overflow", "shift", "--keep", "15"]);
    assert!(!out.status.success());
}
