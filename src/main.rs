//! The `wmoe` command line: parses arguments and calls the library.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use wmoe::{
    BenchSpec, ChatRequest, ChatTemplate, ContextOverflow, Conversation, DeviceOptions, DryParams,
    DryPenalty, Flow, GenerateOptions, GpuContext, KvType, LogitsMode, LoopGuard, Model,
    ModelFiles, QuantPlan, SamplingParams, Session, SessionOptions, TerminalOptions,
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
    /// Checkpoint directory (config.json + *.safetensors) or a .gguf file; default: the bundled demo model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Longest sequence the session holds (prompt + generated tokens); default: generate and chat, the
    /// model's max_position_embeddings (KV pages are allocated as the sequence grows); logits,
    /// 4096 or the tokens given; bench, what its tests need. A given --ctx is never raised.
    #[arg(long)]
    ctx: Option<usize>,
    /// Prefill chunk size in tokens.
    #[arg(long, default_value_t = 256)]
    chunk: usize,
    /// KV cache type: f16, f32, q8_0 (llama.cpp's 32-value blocks with an f16 scale), or auto
    /// (f32 while the whole f32 cache stays ≤ 256 MiB, else f16).
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
    #[value(name = "q8_0")]
    Q8_0,
}

impl ModelArgs {
    /// Session options: `--ctx`, or without it `default_context`.
    fn session(&self, ctx: &GpuContext, m: &Model, default_context: usize) -> SessionOptions {
        let max_context = self.ctx.unwrap_or(default_context);
        let kv = match self.kv_type {
            KvArg::F16 => KvType::F16,
            KvArg::F32 => KvType::F32,
            KvArg::Q8_0 => KvType::Q8_0,
            KvArg::Auto => m.auto_kv_type(ctx, max_context),
        };
        SessionOptions {
            max_context,
            chunk: self.chunk,
            kv,
        }
    }
}

/// What feeding a token into a full context does.
#[derive(Args, Clone)]
struct OverflowArgs {
    /// At a full context: stop with an error, or shift (llama.cpp's context shift: keep the
    /// first --keep tokens, discard half of the rest, move the others down re-rotating their keys).
    #[arg(long, value_enum, default_value = "error")]
    context_overflow: OverflowArg,
    /// Tokens a context shift keeps at the start.
    #[arg(long, default_value_t = 0)]
    keep: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum OverflowArg {
    Error,
    Shift,
}

impl OverflowArgs {
    fn overflow(&self) -> ContextOverflow {
        match self.context_overflow {
            OverflowArg::Error => ContextOverflow::Error,
            OverflowArg::Shift => ContextOverflow::Shift { keep: self.keep },
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
    /// Generate tokens after a prompt: greedy, or sampled on the GPU.
    Generate(GenerateArgs),
    /// Chat in the terminal with the model's chat template: answers streamed, reasoning and
    /// tool calls apart, /reset, /save FILE, /load FILE.
    Chat(ChatArgs),
    /// Print the prompt the model's chat template builds for an OpenAI chat request (no GPU).
    Template(TemplateArgs),
    /// Read generated text on stdin, print the OpenAI assistant message it is (JSON, no GPU).
    Parse(ParseArgs),
    /// Serve the OpenAI API (chat completions, completions, models) and a chat page at / over HTTP.
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Address to listen on; 0.0.0.0 exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed on stderr).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Slots: sequences the server keeps (each its own KV cache; a conversation's next turn
    /// reuses the slot holding it).
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Requests that may wait beyond the slots; more are refused with 503 and Retry-After.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Require `Authorization: Bearer KEY` on every route but /health and the chat page.
    #[arg(long)]
    api_key: Option<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    max_body_bytes: usize,
    /// Largest max_tokens a request may ask for (and the budget of one that asks none).
    #[arg(long, default_value_t = 4096)]
    max_tokens: usize,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
    /// Seconds a connection may take to send a request's headers, or stay idle between
    /// requests, before it is dropped (a client that connects and sends nothing).
    #[arg(long, default_value_t = 10.0)]
    idle_timeout: f64,
}

#[derive(Args)]
struct TemplateArgs {
    /// Checkpoint directory or .gguf file whose chat template to render; default: the bundled demo model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// OpenAI chat request body (JSON): messages, tools, add_generation_prompt (default true), chat_template_kwargs.
    #[arg(long)]
    request: PathBuf,
}

#[derive(Args)]
struct ParseArgs {
    /// Checkpoint directory or .gguf file that generated the text; default: the bundled demo model.
    #[arg(long)]
    model: Option<PathBuf>,
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
    /// New output directory, or a new GGUF file (llama.cpp's layout) when it ends in .gguf.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct SynthArgs {
    /// lfm2-8b-a1b, lfm2.5-8b-a1b, lfm2-2.6b, lfm2-1.2b, lfm2-350m (or test-256).
    #[arg(long)]
    preset: String,
    /// Keep only the first N layers (the last becomes attention if none of them is).
    #[arg(long)]
    layers: Option<usize>,
    /// Weight format of the matrices: q4_0, q4_k, q8_0, bf16, ... (default bf16).
    #[arg(long = "type", value_parser = parse_plan)]
    kind: Option<QuantPlan>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// New output directory, or a new GGUF file (llama.cpp's layout) when it ends in .gguf.
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
    /// Context depths: tokens already in the context before each test (comma-separated).
    #[arg(
        short = 'd',
        long = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    depths: Vec<usize>,
    /// Sequences the tg test generates together (comma-separated; as llama-batched-bench's
    /// -npl): rows `tgN xP` give the aggregate tokens/s of P sequences decoded in one step.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    parallel: Vec<usize>,
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
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    control: ControlArgs,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    /// The prompt is a user message: rendered with the model's chat template, the answer
    /// parsed (content, reasoning apart, tool calls).
    #[arg(long, requires = "prompt")]
    chat: bool,
    /// System prompt of --chat.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[command(flatten)]
    overflow: OverflowArgs,
    /// Print one JSON object {"tokens": [...], "text": "...", "finish": "..."}, with --chat
    /// also "message" (the OpenAI assistant message) and "prompt_tokens".
    #[arg(long)]
    json: bool,
    /// Restore a saved session first; the prompt is then the whole prompt, and only the part
    /// the session does not already hold is fed (as llama.cpp's --prompt-cache).
    #[arg(long)]
    load_session: Option<PathBuf>,
    /// Save the session (KV cache, conv states and checkpoints, token history) after the run.
    #[arg(long)]
    save_session: Option<PathBuf>,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    /// Tools the model may call: a JSON list of tool schemas (or an object with "tools").
    #[arg(long)]
    tools: Option<PathBuf>,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 1024)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    control: ControlArgs,
    /// Do not show the model's reasoning.
    #[arg(long)]
    hide_reasoning: bool,
    /// After each turn, print the prompt tokens reused and processed.
    #[arg(long)]
    verbose: bool,
}

/// Stop strings, logit bias, DRY and the loop guard.
#[derive(Args)]
struct ControlArgs {
    /// End the answer where its text reaches STOP (left out); repeatable.
    #[arg(long = "stop", value_name = "STOP")]
    stops: Vec<String>,
    /// Add BIAS to token ID's logit before sampling (OpenAI logit_bias), as ID=BIAS; repeatable.
    #[arg(long, value_name = "ID=BIAS", value_parser = parse_bias, allow_hyphen_values = true)]
    logit_bias: Vec<(u32, f32)>,
    /// DRY n-gram repetition penalty: its multiplier (0: off). Any --dry-* flag turns DRY on
    /// (multiplier 0.8 unless given); tokens are then read back one at a time.
    #[arg(long)]
    dry_multiplier: Option<f32>,
    /// DRY: growth of the penalty per repeated token (default 1.75).
    #[arg(long)]
    dry_base: Option<f32>,
    /// DRY: repeats shorter than this are free (default 2).
    #[arg(long)]
    dry_allowed_length: Option<usize>,
    /// DRY: tokens searched, -1 the whole sequence (default).
    #[arg(long, allow_negative_numbers = true)]
    dry_penalty_last_n: Option<i64>,
    /// DRY: text that breaks a repeat; repeatable (default: newline, ':', '"', '*').
    #[arg(long)]
    dry_sequence_breaker: Vec<String>,
    /// End a generation stuck repeating a cycle (finish reason "repetition"); the
    /// --loop-* flags set it (and turn it on).
    #[arg(long)]
    loop_guard: bool,
    /// Loop guard: longest cycle in tokens (default 64).
    #[arg(long)]
    loop_max_period: Option<usize>,
    /// Loop guard: stuck after this many copies of a cycle (default 8).
    #[arg(long)]
    loop_min_repeats: Option<usize>,
    /// Loop guard: stuck once a repeated cycle covers this many tokens (default 256).
    #[arg(long)]
    loop_min_tokens: Option<usize>,
}

fn parse_bias(s: &str) -> Result<(u32, f32), String> {
    let (id, bias) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not ID=BIAS"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("'{id}' is not a token id"))?;
    let bias = bias
        .trim()
        .parse()
        .map_err(|_| format!("'{bias}' is not a number"))?;
    Ok((id, bias))
}

impl ControlArgs {
    fn dry(&self) -> wmoe::Result<Option<DryParams>> {
        let given = self.dry_multiplier.is_some()
            || self.dry_base.is_some()
            || self.dry_allowed_length.is_some()
            || self.dry_penalty_last_n.is_some()
            || !self.dry_sequence_breaker.is_empty();
        if !given || self.dry_multiplier == Some(0.0) {
            return Ok(None);
        }
        let d = DryParams::default();
        let penalty_last_n = match self.dry_penalty_last_n {
            None | Some(-1) => None,
            Some(n) => Some(usize::try_from(n).map_err(|_| {
                wmoe::Error::Input(format!(
                    "--dry-penalty-last-n must be -1 (the whole sequence) or ≥ 0, got {n}"
                ))
            })?),
        };
        let p = DryParams {
            multiplier: self.dry_multiplier.unwrap_or(d.multiplier),
            base: self.dry_base.unwrap_or(d.base),
            allowed_length: self.dry_allowed_length.unwrap_or(d.allowed_length),
            penalty_last_n,
            sequence_breakers: match self.dry_sequence_breaker.is_empty() {
                true => d.sequence_breakers,
                false => self.dry_sequence_breaker.clone(),
            },
        };
        p.check()?;
        Ok(Some(p))
    }

    fn loop_guard(&self) -> wmoe::Result<Option<LoopGuard>> {
        let d = LoopGuard::default();
        let g = LoopGuard {
            max_period: self.loop_max_period.unwrap_or(d.max_period),
            min_repeats: self.loop_min_repeats.unwrap_or(d.min_repeats),
            min_tokens: self.loop_min_tokens.unwrap_or(d.min_tokens),
        };
        g.check()?;
        Ok((self.loop_guard || g != d).then_some(g))
    }

    /// The generation options with `sampling` (checked before the model loads: call it
    /// with `None` first).
    fn options(
        &self,
        model: Option<&Model>,
        sampling: SamplingParams,
        max_tokens: usize,
        ignore_eos: bool,
    ) -> wmoe::Result<GenerateOptions> {
        let dry = match (self.dry()?, model) {
            (Some(p), Some(m)) => Some(DryPenalty::new(p, m.tokenizer.as_ref(), m.config.vocab)?),
            _ => None,
        };
        Ok(GenerateOptions {
            max_tokens,
            ignore_eos,
            sampling,
            logit_bias: self.logit_bias.clone(),
            dry,
            loop_guard: self.loop_guard()?,
        })
    }
}

/// Sampling flags; each overrides the checkpoint's generation_config.json (greedy without one).
#[derive(Args)]
struct SamplingArgs {
    /// Temperature; 0 is greedy.
    #[arg(long, allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// Keep the K most likely tokens (0: all, 1: greedy).
    #[arg(long)]
    top_k: Option<usize>,
    /// Keep the most likely tokens whose probabilities reach P, in (0, 1] (1: all).
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// Keep the tokens at least M times as likely as the most likely, in [0, 1] (0: all).
    #[arg(long, allow_negative_numbers = true)]
    min_p: Option<f32>,
    /// Divide positive logits (multiply negative ones) of the last --repeat-last-n tokens (1: off).
    #[arg(long, allow_negative_numbers = true)]
    repeat_penalty: Option<f32>,
    /// The repetition penalty's window; -1: the whole sequence (default 64, the whole sequence
    /// for a penalty from generation_config.json).
    #[arg(long, allow_negative_numbers = true)]
    repeat_last_n: Option<i64>,
    /// Subtracted from the logits of the tokens generated so far (0: off).
    #[arg(long, allow_negative_numbers = true)]
    presence_penalty: Option<f32>,
    /// Subtracted once per time a token was generated so far (0: off).
    #[arg(long, allow_negative_numbers = true)]
    frequency_penalty: Option<f32>,
    /// Seed of the draws: the same seed and prompt give the same tokens (default: a new seed).
    #[arg(long)]
    seed: Option<u64>,
}

impl SamplingArgs {
    /// `defaults` with the flags given, checked.
    fn params(&self, defaults: SamplingParams) -> wmoe::Result<SamplingParams> {
        let repeat_last_n = match self.repeat_last_n {
            None => defaults.repeat_last_n,
            Some(-1) => None,
            Some(n) => Some(usize::try_from(n).map_err(|_| {
                wmoe::Error::Input(format!(
                    "--repeat-last-n must be -1 (the whole sequence) or ≥ 0, got {n}"
                ))
            })?),
        };
        let seed = self.seed.unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(0, |d| d.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
        });
        let sp = SamplingParams {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            min_p: self.min_p.unwrap_or(defaults.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(defaults.repeat_penalty),
            repeat_last_n,
            presence_penalty: self.presence_penalty.unwrap_or(defaults.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(defaults.frequency_penalty),
            seed,
        };
        sp.check()?;
        Ok(sp)
    }
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
        Command::Chat(a) => chat(&a),
        Command::Template(a) => template(&a),
        Command::Parse(a) => parse(&a),
        Command::Serve(a) => serve(a),
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
    let mut spec = BenchSpec {
        n_prompt: a.n_prompt,
        n_gen: a.n_gen,
        depths: a.depths.clone(),
        reps: a.reps,
        parallel: a.parallel.clone(),
        chunk: a.model.chunk,
        kv: KvType::F16,
    };
    // The KV type follows the context the tests need, unless --ctx says otherwise.
    let need = spec.context();
    spec.kv = a.model.session(&ctx, &m, need).kv;
    let r = wmoe::bench(&ctx, &m, &spec)?;
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
    // Bad flags fail before the model loads.
    a.sampling.params(SamplingParams::greedy())?;
    a.control
        .options(None, SamplingParams::greedy(), 0, false)?;
    let template = a.chat.then(|| chat_template(&a.model.model)).transpose()?;
    let (ctx, m) = open(&a.model, &a.device)?;
    let sampling = a.sampling.params(m.generation)?;
    let opts = a
        .control
        .options(Some(&m), sampling, a.max_tokens, a.ignore_eos)?;
    let ids = match (&a.prompt, &a.tokens) {
        (_, Some(t)) => t.clone(),
        (Some(_), None) if a.chat => Vec::new(),
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
    let session_opts = a.model.session(&ctx, &m, m.config.max_positions);
    let mut s = Session::new(&ctx, &m, session_opts)?;
    s.set_context_overflow(a.overflow.overflow())?;
    if a.model.ctx.is_none() {
        eprintln!("{}", s.context_summary());
    }
    if let Some(path) = &a.load_session {
        s.load_session(path)?;
    }
    if let (Some(template), Some(prompt)) = (template, &a.prompt) {
        let mut conv = Conversation::new(template, a.system.clone(), None)?;
        conv.options = opts;
        conv.stops = a.control.stops.clone();
        let r = conv.turn(&mut s, prompt, &mut |_| {})?;
        if a.load_session.is_some() {
            eprintln!(
                "session: {} of the prompt's {} tokens already held",
                r.reused, r.prompt_tokens
            );
        }
        if let Some(path) = &a.save_session {
            s.save_session(path)?;
        }
        if a.json {
            let v = serde_json::json!({
                "tokens": r.tokens,
                "text": r.text,
                "message": r.message.to_json(),
                "finish": r.finish.name(),
                "prompt_tokens": r.prompt_tokens,
            });
            println!("{v}");
        } else {
            if let Some(reasoning) = &r.message.reasoning_content {
                eprintln!("reasoning: {reasoning}");
            }
            for c in &r.message.tool_calls {
                println!("[tool call] {}({})", c.name, c.arguments);
            }
            println!("{}", r.message.content.as_deref().unwrap_or(""));
        }
        return Ok(());
    }
    let mut kept = 0;
    if a.load_session.is_some() {
        kept = s.reuse_prefix(&ids)?;
        eprintln!(
            "session: {kept} of the prompt's {} tokens already held",
            ids.len()
        );
    }
    let (out, text, finish) = if m.tokenizer.is_some() {
        let c = wmoe::generate_text(
            &mut s,
            &ids[kept..],
            &opts,
            &a.control.stops,
            true,
            &mut |_| {},
        )?;
        (c.tokens, Some(c.text), c.finish)
    } else {
        if !a.control.stops.is_empty() {
            return Err(wmoe::Error::Input(
                "--stop needs a tokenizer (tokenizer.json beside the model, or GGUF tokenizer metadata)".into(),
            ));
        }
        let mut out = Vec::new();
        let finish = s.generate_stream_with(&ids[kept..], &opts, &mut |t| {
            out.push(t);
            Flow::Continue
        })?;
        (out, None, finish)
    };
    if s.context_shifts() > 0 {
        eprintln!(
            "context full: shifted {} time(s), keeping the first {} tokens",
            s.context_shifts(),
            a.overflow.keep
        );
    }
    if let Some(path) = &a.save_session {
        s.save_session(path)?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "tokens": out, "text": text, "finish": finish.name() })
        );
    } else if let Some(t) = text {
        println!("{t}");
    } else {
        let ids: Vec<String> = out.iter().map(|t| t.to_string()).collect();
        println!("{}", ids.join(","));
    }
    Ok(())
}

fn chat(a: &ChatArgs) -> wmoe::Result<()> {
    a.sampling.params(SamplingParams::greedy())?;
    a.control
        .options(None, SamplingParams::greedy(), 0, false)?;
    let tools = a.tools.as_deref().map(read_tools).transpose()?;
    let template = chat_template(&a.model.model)?;
    let (ctx, m) = open(&a.model, &a.device)?;
    let sampling = a.sampling.params(m.generation)?;
    let session_opts = a.model.session(&ctx, &m, m.config.max_positions);
    let mut s = Session::new(&ctx, &m, session_opts)?;
    let mut conv = Conversation::new(template, a.system.clone(), tools)?;
    conv.options = a.control.options(Some(&m), sampling, a.max_tokens, false)?;
    conv.stops = a.control.stops.clone();
    let opts = TerminalOptions {
        color: std::io::stdout().is_terminal(),
        hide_reasoning: a.hide_reasoning,
        verbose: a.verbose,
    };
    if a.verbose {
        eprintln!("{}", s.context_summary());
    }
    wmoe::run_terminal(
        &mut s,
        &mut conv,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
        opts,
    )
}

/// `--tools FILE`: a JSON list of tool schemas, or an object holding one under "tools".
fn read_tools(path: &std::path::Path) -> wmoe::Result<serde_json::Value> {
    let bytes =
        std::fs::read(path).map_err(|e| wmoe::Error::file(path, format!("cannot read: {e}")))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| wmoe::Error::file(path, format!("not valid JSON: {e}")))?;
    match v {
        serde_json::Value::Object(mut o) if o.contains_key("tools") => {
            Ok(o.remove("tools").unwrap_or_default())
        }
        serde_json::Value::Array(_) => Ok(v),
        _ => Err(wmoe::Error::file(
            path,
            "must be a JSON list of tool schemas (or an object with \"tools\")",
        )),
    }
}

/// The chat template of `--model` (default: the bundled model's); opens no GPU.
fn chat_template(model: &Option<PathBuf>) -> wmoe::Result<ChatTemplate> {
    match model {
        Some(path) => ChatTemplate::from_model(path),
        None => ChatTemplate::bundled(),
    }
}

fn template(a: &TemplateArgs) -> wmoe::Result<()> {
    let t = chat_template(&a.model)?;
    let prompt = t.render(&ChatRequest::from_file(&a.request)?)?;
    let mut out = std::io::stdout().lock();
    out.write_all(prompt.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| wmoe::Error::Input(format!("cannot write the prompt to stdout: {e}")))
}

fn parse(a: &ParseArgs) -> wmoe::Result<()> {
    let t = chat_template(&a.model)?;
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| {
        wmoe::Error::Input(format!(
            "cannot read the generated text (UTF-8) from stdin: {e}"
        ))
    })?;
    let message = wmoe::parse_output(&text, t.opens_reasoning());
    println!("{}", message.to_json());
    Ok(())
}

fn serve(a: ServeArgs) -> wmoe::Result<()> {
    let template = chat_template(&a.model.model)?;
    let context = a.model.ctx.unwrap_or(DEFAULT_CONTEXT);
    let kv = match a.model.kv_type {
        KvArg::Auto => None,
        KvArg::F16 => Some(KvType::F16),
        KvArg::F32 => Some(KvType::F32),
        KvArg::Q8_0 => Some(KvType::Q8_0),
    };
    let engine = wmoe::serve::EngineOptions {
        device: device(&a.device),
        quant: a.model.quant,
        slots: a.parallel,
        queue: a.queue,
        context,
        chunk: a.model.chunk,
        kv,
    };
    let limits = wmoe::serve::Limits {
        context,
        max_body_bytes: a.max_body_bytes,
        max_tokens: a.max_tokens,
        max_connections: a.max_connections,
        idle_timeout: std::time::Duration::try_from_secs_f64(a.idle_timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                wmoe::Error::Input(format!(
                    "--idle-timeout is {}; it must be a number of seconds above 0",
                    a.idle_timeout
                ))
            })?,
        api_key: a.api_key.clone(),
    };
    let model = a.model.clone();
    wmoe::serve::run(
        move || files(&model),
        template,
        engine,
        limits,
        &a.host,
        a.port,
    )
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
