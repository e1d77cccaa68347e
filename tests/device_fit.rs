//! A model or a context that does not fit the device: on a device capped small
//! (`WMOE_GPU_MEMORY`, the memory budget the runtime checks its planned allocations
//! against), the error says what was needed, what the device offers and what to change, and
//! what it suggests fits.

use std::process::Command;

use wmoe::{gpu::testing, DeviceOptions, GpuContext, KvType, Model, QuantPlan, Session};

/// The device, capped at `bytes` of GPU memory.
fn capped(bytes: u64) -> GpuContext {
    let mut opts = DeviceOptions::from_env();
    opts.switches.gpu_memory = Some(bytes);
    GpuContext::new(&opts).unwrap()
}

/// The word after `marker` in `text`.
fn word_after<'t>(text: &'t str, marker: &str) -> &'t str {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in: {text}"));
    text[at + marker.len()..].split([' ', ')']).next().unwrap()
}

fn session_options(max_context: usize) -> wmoe::SessionOptions {
    wmoe::SessionOptions {
        max_context,
        chunk: 64,
        kv: KvType::F16,
    }
}

#[test]
fn weights_and_a_context_beyond_the_device_say_what_fits() {
    let Some(full) = testing::context() else {
        return;
    };
    // A bf16 checkpoint (the bundled demo is already q8_0: --quant keeps quantized matrices).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/tiny-moe");
    let whole = Model::load(full, &dir, false).unwrap();
    let weights = whole.weights.gpu_bytes();
    // Half the weights' bytes: the model does not fit as it is.
    let ctx = capped(weights / 2);
    let e = Model::load(&ctx, &dir, false).err().unwrap().to_string();
    for part in [
        "of GPU memory for the model's weights (in the checkpoint's formats)",
        "it offers",
        "(WMOE_GPU_MEMORY); load it with --quant ",
    ] {
        assert!(e.contains(part), "{part:?} missing from: {e}");
    }
    assert!(!e.contains('\n'), "{e}");
    // The suggested --quant loads on the same device.
    let quant = QuantPlan::parse(word_after(&e, "--quant ")).unwrap();
    let model = Model::load_with(&ctx, &dir, Some(quant), false)
        .unwrap_or_else(|e| panic!("the suggested --quant {} fails: {e}", quant.name()));
    // The model's whole context does not fit beside it; the largest that does is named, and
    // it fits exactly: one position more does not.
    let max = model.config.max_positions;
    let e = Session::new(&ctx, &model, session_options(max))
        .err()
        .unwrap()
        .to_string();
    let whole_context = format!("for the f16 KV cache of 1 sequence(s) of {max} positions");
    for part in [
        whole_context.as_str(),
        " (WMOE_GPU_MEMORY) beside the ",
        " of the weights; use --ctx ",
        " or --kv-type q8_0",
    ] {
        assert!(e.contains(part), "{part:?} missing from: {e}");
    }
    let fits: usize = word_after(&e, "--ctx ").parse().unwrap();
    assert!(fits > 0 && fits < max, "{e}");
    let mut s = Session::new(&ctx, &model, session_options(fits)).unwrap();
    let out = s.generate(&[1, 2, 3], 4, true).unwrap();
    assert_eq!(out.len(), 4);
    assert!(Session::new(&ctx, &model, session_options(fits + 1)).is_err());
}

#[test]
fn the_cli_and_the_server_refuse_what_does_not_fit_in_one_line() {
    if testing::context().is_none() {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_wmoe");
    let run = |args: &[&str], budget: &str| {
        let out = Command::new(bin)
            .args(args)
            .env("WMOE_GPU_MEMORY", budget)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        err
    };
    let e = run(
        &["generate", "--prompt", "Hi", "--max-tokens", "2"],
        "65536",
    );
    assert!(
        e.contains("for the model's weights") && e.contains("--quant"),
        "{e}"
    );
    // The server's slots: four contexts of 100000 positions beside the weights.
    let e = run(
        &["serve", "--port", "0", "--parallel", "4", "--ctx", "100000"],
        "67108864",
    );
    assert!(
        e.contains("KV cache of 4 sequence(s) of 100000 positions")
            && e.contains("use --ctx ")
            && e.contains("a smaller --parallel"),
        "{e}"
    );
}
