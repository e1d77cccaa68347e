//! The prepared GPU run's scripts (tools/device-bench.sh, tools/device-pack.sh) parse as bash,
//! and device-bench.sh checks its arguments before it looks for binaries or a GPU. Their run
//! itself is documented in tools/README.md (a dry run on lavapipe, the real one on a GPU).
#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Output};

fn bash(args: &[&str]) -> Output {
    Command::new("bash")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("bash runs")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn scripts_parse() {
    for script in ["tools/device-bench.sh", "tools/device-pack.sh"] {
        let o = bash(&["-n", script]);
        assert!(o.status.success(), "{script}: {}", text(&o));
    }
}

#[test]
fn help_names_every_flag() {
    let o = bash(&["tools/device-bench.sh", "--help"]);
    assert!(o.status.success(), "{}", text(&o));
    let help = text(&o);
    for flag in [
        "--wmoe",
        "--kernels-bench",
        "--llama-bench",
        "--pack",
        "--layers",
        "--pp",
        "--tg",
        "--depth",
        "--reps",
        "--types",
        "--deadline",
        "--llama-args",
        "--work",
        "--out",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_arguments_are_refused_before_anything_runs() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("device-bench");
    let [missing, work, out] = ["no-such-pack", "work", "out"].map(|d| tmp.join(d));
    let [missing, work, out] = [&missing, &work, &out].map(|p| p.to_str().unwrap());
    for (args, want) in [
        (vec!["--layers", "25"], "--layers must be 1..24"),
        (vec!["--layers", "0"], "--layers must be 1..24"),
        (vec!["--pp", "x"], "--pp must be a whole number"),
        (vec!["--bogus"], "unknown argument '--bogus'"),
        (vec!["--pack", missing], "no executable wmoe at"),
    ] {
        let mut a = vec!["tools/device-bench.sh", "--work", work, "--out", out];
        a.extend(&args);
        let o = bash(&a);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
    }
    let _ = std::fs::remove_dir_all(tmp);
}
