//! The `wmoe` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use wmoe::{
    DeviceOptions, GpuContext, KvType, LogitsMode, Model, ModelFiles, QuantPlan, Session,
    SessionOptions,
};

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
    /// Longest sequence the session holds (prompt + generated tokens); default 4096 (logits:
    /// at least the tokens given; bench: what its tests need). A given --ctx is never raised.
    #[arg(long)]
    ctx: Option<usize>,
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

/// The context without `--ctx`.
const DEFAULT_CONTEXT: usize = 4096;

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
    /// Session options: `--ctx`, or without it `default_context`.
    fn session(&self, ctx: &GpuContext, m: &Model, default_context: usize) -> SessionOptions {
        let max_context = self.ctx.unwrap_or(default_context);
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
    Logits(LogitsArgs),
    /// Write a quantized copy of a checkpoint (loads later without re-quantizing).
    Quantize(QuantizeArgs),
    /// Write a random-weight checkpoint with the real shapes of an LFM2 model.
    Synth(SynthArgs),
    /// Prompt-processing and generation throughput, printed like llama-bench.
    Bench(BenchArgs),
    /// Greedy generation.
    Generate(GenerateArgs),
}

#[derive(Args)]
struct LogitsArgs {
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
}

#[derive(Args)]
struct QuantizeArgs {
    /// Source checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    /// q8_0, q4_0, q5_0, q4_k, q6_k, or the mixes q4_k_m / q4_k_s.
    #[arg(long = "type", value_parser = parse_plan)]
    kind: QuantPlan,
    /// New output directory.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct SynthArgs {
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
}

#[derive(Args)]
struct BenchArgs {
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
}

#[derive(Args)]
struct GenerateArgs {
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
}

fn device(d: &DeviceArgs) -> DeviceOptions {
    let env = DeviceOptions::from_env();
    DeviceOptions {
        backend: d.backend.clone().or(env.backend),
        adapter: d.adapter.clone().or(env.adapter),
        switches: env.switches,
    }
}

/// Reads and checks `--model` (default: the bundled model) on the host.
fn files(m: &ModelArgs) -> wmoe::Result<ModelFiles> {
    match &m.model {
        Some(path) => ModelFiles::open(path),
        None => ModelFiles::bundled(),
    }
}

/// The checked model files, then the GPU and the model on it: a malformed model is
/// reported before any adapter is looked for.
fn open(m: &ModelArgs, d: &DeviceArgs) -> wmoe::Result<(GpuContext, Model)> {
    let files = files(m)?;
    let ctx = GpuContext::new(&device(d))?;
    let model = Model::upload(&ctx, files, m.quant, true)?;
    Ok((ctx, model))
}

fn run(cli: Cli) -> wmoe::Result<()> {
    match cli.command {
        Command::Devices { device } => devices(&device),
        Command::Logits(a) => logits(&a),
        Command::Quantize(a) => quantize(&a),
        Command::Synth(a) => synth(&a),
        Command::Bench(a) => bench(&a),
        Command::Generate(a) => generate(&a),
    }
}

fn devices(d: &DeviceArgs) -> wmoe::Result<()> {
    let list = wmoe::list_adapters(&device(d))?;
    if list.is_empty() {
        println!("no GPU adapters found");
    }
    for a in list {
        println!("{a}");
    }
    Ok(())
}

fn logits(a: &LogitsArgs) -> wmoe::Result<()> {
    let (ctx, m) = open(&a.model, &a.device)?;
    let opts = a
        .model
        .session(&ctx, &m, DEFAULT_CONTEXT.max(a.tokens.len()));
    let mut s = Session::new(&ctx, &m, opts)?;
    let logits = match a.mode {
        Mode::Prefill => s.prefill(&a.tokens, LogitsMode::All)?,
        Mode::Decode => {
            let mut all = Vec::with_capacity(a.tokens.len() * m.config.vocab);
            for &t in &a.tokens {
                all.extend(s.decode(t)?);
            }
            all
        }
    };
    wmoe::write_npy(&a.out, &[a.tokens.len(), m.config.vocab], &logits)
}

fn quantize(a: &QuantizeArgs) -> wmoe::Result<()> {
    let r = wmoe::quantize_checkpoint(&a.model, a.kind, &a.out)?;
    for (f, (n, b)) in r.by_format() {
        println!("{f:>6}: {n:5} tensors {:10.1} MiB", mib(b as u64));
    }
    println!(
        "wrote {} ({:.1} MiB)",
        a.out.display(),
        mib(r.total_bytes() as u64)
    );
    Ok(())
}

fn synth(a: &SynthArgs) -> wmoe::Result<()> {
    let cfg = wmoe::synth_config(&a.preset, a.layers)?;
    let bytes = wmoe::synth(&a.out, &cfg, a.kind, a.seed, true)?;
    println!("wrote {} ({:.1} MiB)", a.out.display(), mib(bytes));
    Ok(())
}

fn bench(a: &BenchArgs) -> wmoe::Result<()> {
    let t = std::time::Instant::now();
    let files = files(&a.model)?;
    let read_s = t.elapsed().as_secs_f64();
    let ctx = GpuContext::new(&device(&a.device))?;
    let t = std::time::Instant::now();
    let m = Model::upload(&ctx, files, a.model.quant, !a.json)?;
    let load_s = read_s + t.elapsed().as_secs_f64();
    let needs = a.n_prompt.max(a.n_gen.saturating_add(1)).max(2);
    let opts = a.model.session(&ctx, &m, needs);
    let r = wmoe::bench(&ctx, &m, (a.n_prompt, a.n_gen), a.reps.max(1), opts)?;
    if a.json {
        println!("{}", r.json(&ctx, &m, load_s));
    } else {
        print!("{}", r.table(&ctx, &m, load_s));
    }
    if let Some(p) = ctx.profile_report() {
        eprintln!("{p}");
    }
    Ok(())
}

fn generate(a: &GenerateArgs) -> wmoe::Result<()> {
    if a.temperature != 0.0 {
        return Err(wmoe::Error::Input(
            "only --temperature 0 (greedy) is supported so far".into(),
        ));
    }
    let (ctx, m) = open(&a.model, &a.device)?;
    let ids = match (&a.prompt, &a.tokens) {
        (_, Some(t)) => t.clone(),
        (Some(p), None) => {
            let mut ids = m.config.bos.map(|b| vec![b]).unwrap_or_default();
            ids.extend(m.encode(p)?);
            ids
        }
        (None, None) => {
            return Err(wmoe::Error::Input(
                "give --prompt TEXT or --tokens IDS".into(),
            ))
        }
    };
    let opts = a.model.session(&ctx, &m, DEFAULT_CONTEXT);
    let mut s = Session::new(&ctx, &m, opts)?;
    let out = s.generate(&ids, a.max_tokens, a.ignore_eos)?;
    let text = m.decode(&out)?;
    if a.json {
        println!("{}", serde_json::json!({ "tokens": out, "text": text }));
    } else if let Some(t) = text {
        println!("{t}");
    } else {
        let ids: Vec<String> = out.iter().map(|t| t.to_string()).collect();
        println!("{}", ids.join(","));
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
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
