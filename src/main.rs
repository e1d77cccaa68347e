//! The `wmoe` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use wmoe::model::QuantPlan;
use wmoe::{DeviceOptions, GpuContext, KvType, LogitsMode, Model, Session, SessionOptions};

#[derive(Parser)]
#[command(
    name = "wmoe",
    version,
    about = "LFM2 / LFM2-MoE inference on wgpu (Vulkan, Metal, DX12)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct DeviceArgs {
    /// GPU backend: vulkan, metal, dx12 or gl (default: all primary backends).
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Adapter index from `wmoe devices`, or part of its name.
    #[arg(long, global = true)]
    adapter: Option<String>,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Checkpoint directory (config.json + *.safetensors) or a .gguf file; default: the bundled tiny model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Longest sequence the session holds (prompt + generated tokens).
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    /// Prefill chunk size in tokens.
    #[arg(long, default_value_t = 256)]
    chunk: usize,
    /// KV cache type: f16, f32, or auto (f32 while the whole f32 cache stays ≤ 256 MiB).
    #[arg(long, value_enum, default_value = "auto")]
    kv_type: KvArg,
    /// Quantize f32/f16/bf16 matrices while loading (already quantized ones are kept): q8_0, q4_0, q4_1, q5_0, q4_k, q5_k, q6_k, q4_k_m, q4_k_s.
    #[arg(long, value_parser = parse_plan)]
    quant: Option<QuantPlan>,
}

fn parse_plan(s: &str) -> Result<QuantPlan, String> {
    QuantPlan::parse(s).ok_or_else(|| format!("unknown quantization '{s}': use q8_0, q4_0, q5_0, q4_k, q6_k, q4_k_m, q4_k_s, f16, bf16 or f32"))
}

#[derive(Clone, Copy, ValueEnum)]
enum KvArg {
    Auto,
    F16,
    F32,
}

impl ModelArgs {
    fn session(&self, ctx: &GpuContext, m: &Model, min_context: usize) -> SessionOptions {
        let max_context = self.ctx.max(min_context);
        let kv = match self.kv_type {
            KvArg::F16 => KvType::F16,
            KvArg::F32 => KvType::F32,
            KvArg::Auto => m.auto_kv_type(ctx, max_context),
        };
        SessionOptions {
            max_context,
            chunk: self.chunk,
            kv,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Prefill,
    Decode,
}

#[derive(Subcommand)]
enum Command {
    /// List GPU adapters with their features and limits.
    Devices {
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Write the logits of every position to a float32 .npy [n_tokens, vocab].
    Logits {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        device: DeviceArgs,
        /// Comma-separated token ids.
        #[arg(long, value_delimiter = ',', required = true)]
        tokens: Vec<u32>,
        /// prefill: the batched path; decode: one token at a time through the decode path.
        #[arg(long, value_enum, default_value = "prefill")]
        mode: Mode,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a quantized copy of a checkpoint (loads later without re-quantizing).
    Quantize {
        /// Source checkpoint directory.
        #[arg(long)]
        model: PathBuf,
        /// q8_0, q4_0, q5_0, q4_k, q6_k, or the mixes q4_k_m / q4_k_s.
        #[arg(long = "type", value_parser = parse_plan)]
        kind: QuantPlan,
        /// New output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a random-weight checkpoint with the real shapes of an LFM2 model.
    Synth {
        /// lfm2-8b-a1b, lfm2.5-8b-a1b, lfm2-2.6b, lfm2-1.2b, lfm2-350m (or test-256).
        #[arg(long)]
        preset: String,
        /// Keep only the first N layers.
        #[arg(long)]
        layers: Option<usize>,
        /// Weight format of the matrices: q4_0, q4_k, q8_0, bf16, ... (default bf16).
        #[arg(long = "type", value_parser = parse_plan)]
        kind: Option<QuantPlan>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Prompt-processing and generation throughput, printed like llama-bench.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        device: DeviceArgs,
        /// Prompt tokens (pp test; 0 skips it).
        #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
        n_prompt: usize,
        /// Generated tokens (tg test; 0 skips it).
        #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
        n_gen: usize,
        /// Repetitions of each test (after one warm-up).
        #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
        reps: usize,
        /// Print a JSON list of rows with llama-bench's field names.
        #[arg(long)]
        json: bool,
    },
    /// Greedy generation.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        device: DeviceArgs,
        /// Prompt text (needs a tokenizer: tokenizer.json beside the model, or GGUF tokenizer metadata).
        #[arg(long, conflicts_with = "tokens")]
        prompt: Option<String>,
        /// Comma-separated prompt token ids.
        #[arg(long, value_delimiter = ',')]
        tokens: Option<Vec<u32>>,
        #[arg(long, default_value_t = 32)]
        max_tokens: usize,
        /// Only 0 (greedy) is supported so far.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Keep generating past the end-of-sequence token.
        #[arg(long)]
        ignore_eos: bool,
        /// Print one JSON object {"tokens": [...], "text": "..."}.
        #[arg(long)]
        json: bool,
    },
}

fn device(d: &DeviceArgs) -> DeviceOptions {
    let env = DeviceOptions::from_env();
    DeviceOptions {
        backend: d.backend.clone().or(env.backend),
        adapter: d.adapter.clone().or(env.adapter),
        switches: env.switches,
    }
}

fn open(m: &ModelArgs, d: &DeviceArgs) -> wmoe::Result<(GpuContext, Model)> {
    let ctx = GpuContext::new(&device(d))?;
    let dir = m
        .model
        .clone()
        .unwrap_or_else(|| PathBuf::from(wmoe::DEFAULT_MODEL));
    let model = Model::load_with(&ctx, &dir, m.quant, true)?;
    Ok((ctx, model))
}

fn run(cli: Cli) -> wmoe::Result<()> {
    match cli.command {
        Command::Devices { device: d } => {
            let list = wmoe::gpu::list_adapters(&device(&d))?;
            if list.is_empty() {
                println!("no GPU adapters found");
            }
            for a in list {
                println!("{a}");
            }
        }
        Command::Logits {
            model,
            device: d,
            tokens,
            mode,
            out,
        } => {
            let (ctx, m) = open(&model, &d)?;
            let opts = model.session(&ctx, &m, tokens.len());
            let mut s = Session::new(&ctx, &m, opts)?;
            let logits = match mode {
                Mode::Prefill => s.prefill(&tokens, LogitsMode::All)?,
                Mode::Decode => {
                    let mut all = Vec::with_capacity(tokens.len() * m.config.vocab);
                    for &t in &tokens {
                        all.extend(s.decode(t)?);
                    }
                    all
                }
            };
            wmoe::npy::write_f32(&out, &[tokens.len(), m.config.vocab], &logits)?;
        }
        Command::Bench {
            model,
            device: d,
            n_prompt,
            n_gen,
            reps,
            json,
        } => {
            let ctx = GpuContext::new(&device(&d))?;
            let dir = model
                .model
                .clone()
                .unwrap_or_else(|| PathBuf::from(wmoe::DEFAULT_MODEL));
            let t = std::time::Instant::now();
            let m = Model::load_with(&ctx, &dir, model.quant, !json)?;
            let load_s = t.elapsed().as_secs_f64();
            let opts = model.session(&ctx, &m, n_prompt.max(n_gen + 1));
            let r = wmoe::runtime::bench::bench(
                &ctx,
                &m,
                n_prompt,
                n_gen,
                reps.max(1),
                model.chunk,
                opts.kv,
            )?;
            print_bench(&ctx, &m, &dir, &r, load_s, json);
            if let Some(p) = ctx.profile_report() {
                eprintln!("{p}");
            }
        }
        Command::Quantize { model, kind, out } => {
            let r = wmoe::model::quantize::quantize_checkpoint(&model, kind, &out)?;
            let mut per: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
            for (_, f, b) in &r.tensors {
                let e = per.entry(f.name()).or_default();
                e.0 += 1;
                e.1 += b;
            }
            for (f, (n, b)) in per {
                println!(
                    "{f:>6}: {n:5} tensors {:10.1} MiB",
                    b as f64 / (1 << 20) as f64
                );
            }
            println!(
                "wrote {} ({:.1} MiB)",
                out.display(),
                r.total_bytes() as f64 / (1 << 20) as f64
            );
        }
        Command::Synth {
            preset,
            layers,
            kind,
            seed,
            out,
        } => {
            let cfg = wmoe::model::synth::synth_config(&preset, layers)?;
            let bytes = wmoe::model::synth::synth(&out, &cfg, kind, seed, true)?;
            println!(
                "wrote {} ({:.1} MiB)",
                out.display(),
                bytes as f64 / (1 << 20) as f64
            );
        }
        Command::Generate {
            model,
            device: d,
            prompt,
            tokens,
            max_tokens,
            temperature,
            ignore_eos,
            json,
        } => {
            if temperature != 0.0 {
                return Err(wmoe::Error::Input(
                    "only --temperature 0 (greedy) is supported so far".into(),
                ));
            }
            let (ctx, m) = open(&model, &d)?;
            let ids = match (prompt, tokens) {
                (_, Some(t)) => t,
                (Some(p), None) => {
                    let mut ids = m.config.bos.map(|b| vec![b]).unwrap_or_default();
                    ids.extend(m.encode(&p)?);
                    ids
                }
                (None, None) => {
                    return Err(wmoe::Error::Input(
                        "give --prompt TEXT or --tokens IDS".into(),
                    ))
                }
            };
            let opts = model.session(&ctx, &m, 0);
            let mut s = Session::new(&ctx, &m, opts)?;
            let out = s.generate(&ids, max_tokens, ignore_eos)?;
            let text = m.decode(&out)?;
            if json {
                let v = serde_json::json!({ "tokens": out, "text": text });
                println!("{v}");
            } else {
                match text {
                    Some(t) => println!("{t}"),
                    None => println!(
                        "{}",
                        out.iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                }
            }
        }
    }
    Ok(())
}

/// The llama-bench table (or its JSON rows) for a bench report.
fn print_bench(
    ctx: &GpuContext,
    m: &Model,
    dir: &std::path::Path,
    r: &wmoe::runtime::bench::BenchReport,
    load_s: f64,
    json: bool,
) {
    let size = m.weights.gpu_bytes();
    let params = m.weights.n_params();
    let backend = format!("wgpu-{:?}", ctx.info.backend).to_lowercase();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let formats: std::collections::BTreeSet<&str> = m
        .weights
        .matrices()
        .iter()
        .map(|t| t.format.name())
        .collect();
    let model_type = format!(
        "{} {}",
        m.config.model_type,
        formats.into_iter().collect::<Vec<_>>().join("+")
    );
    if json {
        let rows: Vec<serde_json::Value> = r
            .rows
            .iter()
            .map(|row| {
                let (avg, sd) = row.ts();
                let (avg_s, sd_s) = row.secs();
                serde_json::json!({
                    "build_commit": env!("CARGO_PKG_VERSION"), "backends": backend, "gpu_info": ctx.info.name,
                    "model_filename": dir.display().to_string(), "model_type": model_type, "model_size": size,
                    "model_n_params": params, "n_prompt": row.n_prompt, "n_gen": row.n_gen,
                    "avg_ns": (avg_s * 1e9) as u64, "stddev_ns": (sd_s * 1e9) as u64, "avg_ts": avg, "stddev_ts": sd,
                    "samples_ns": row.samples.iter().map(|s| (s * 1e9) as u64).collect::<Vec<_>>(),
                    "samples_ts": row.samples_ts(), "load_s": load_s, "ttft_s": r.ttft, "gpu_weight_bytes": size,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return;
    }
    println!("| model | size | params | backend | test | t/s |");
    println!("| --- | ---: | ---: | --- | ---: | ---: |");
    for row in &r.rows {
        let (avg, sd) = row.ts();
        println!(
            "| {name} ({model_type}) | {:.2} GiB | {:.2} B | {backend} | {} | {avg:.2} ± {sd:.2} |",
            size as f64 / (1u64 << 30) as f64,
            params as f64 / 1e9,
            row.name()
        );
    }
    println!();
    println!("device: {} ({:?}); load {load_s:.2} s; time to first token (pp{}) {:.3} s; GPU weights {:.1} MiB", ctx.info.name, ctx.info.backend, r.rows.first().map_or(0, |x| x.n_prompt), r.ttft, size as f64 / (1 << 20) as f64);
}

fn main() -> ExitCode {
    // Mesa's Vulkan loader prints an error line when XDG_RUNTIME_DIR is unset (headless
    // machines, CI); point it at the temp dir before any thread or driver starts.
    if cfg!(target_os = "linux") && std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
