//! `wmoe bench`: prompt processing (ppN) and generation (tgN) throughput in llama-bench's
//! form — mean ± sd over repetitions after a warm-up — plus load time and time to first token.

use std::collections::BTreeSet;
use std::time::Instant;

use super::{LogitsMode, Model, Session, SessionOptions};
use crate::error::Result;
use crate::gpu::GpuContext;

/// One llama-bench-style test row.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Seconds per repetition.
    pub samples: Vec<f64>,
}

impl BenchRow {
    /// Tokens per second of each repetition.
    pub fn samples_ts(&self) -> Vec<f64> {
        let n = (self.n_prompt + self.n_gen) as f64;
        self.samples.iter().map(|s| n / s).collect()
    }

    /// (mean, standard deviation) of tokens per second.
    pub fn ts(&self) -> (f64, f64) {
        mean_sd(&self.samples_ts())
    }

    /// (mean, standard deviation) of seconds per repetition.
    pub fn secs(&self) -> (f64, f64) {
        mean_sd(&self.samples)
    }

    pub fn name(&self) -> String {
        if self.n_gen == 0 {
            format!("pp{}", self.n_prompt)
        } else {
            format!("tg{}", self.n_gen)
        }
    }
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Results of one `wmoe bench` run.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub rows: Vec<BenchRow>,
    /// Seconds from a `p`-token prompt to the first sampled token on the host.
    pub ttft: f64,
    /// Host microseconds per generated token to get its step to the GPU (write the changed
    /// parameters, encode, submit), over the measured generation runs.
    pub host_us_per_step: f64,
}

impl BenchReport {
    /// llama-bench's markdown table of the rows, a blank line, then one line with the device,
    /// the load time `load_s`, the time to first token and the GPU weight size.
    pub fn table(&self, ctx: &GpuContext, model: &Model, load_s: f64) -> String {
        let d = Described::new(ctx, model);
        let mut s = String::from("| model | size | params | backend | test | t/s |\n");
        s.push_str("| --- | ---: | ---: | --- | ---: | ---: |\n");
        for row in &self.rows {
            let (avg, sd) = row.ts();
            s.push_str(&format!(
                "| {} ({}) | {:.2} GiB | {:.2} B | {} | {} | {avg:.2} ± {sd:.2} |\n",
                d.name,
                d.model_type,
                d.size as f64 / (1u64 << 30) as f64,
                d.params as f64 / 1e9,
                d.backend,
                row.name()
            ));
        }
        s.push('\n');
        s.push_str(&format!(
            "device: {} ({:?}); load {load_s:.2} s; time to first token (pp{}) {:.3} s; GPU weights {:.1} MiB; host {:.0} us per decode step\n",
            ctx.info.name,
            ctx.info.backend,
            self.rows.first().map_or(0, |x| x.n_prompt),
            self.ttft,
            d.size as f64 / (1 << 20) as f64,
            self.host_us_per_step
        ));
        s
    }

    /// The rows as a JSON list of objects with llama-bench's field names, plus `load_s`,
    /// `ttft_s` and `gpu_weight_bytes`.
    pub fn json(&self, ctx: &GpuContext, model: &Model, load_s: f64) -> serde_json::Value {
        let d = Described::new(ctx, model);
        let rows = self
            .rows
            .iter()
            .map(|row| {
                let (avg, sd) = row.ts();
                let (avg_s, sd_s) = row.secs();
                serde_json::json!({
                    "build_commit": env!("CARGO_PKG_VERSION"), "backends": d.backend, "gpu_info": ctx.info.name,
                    "model_filename": model.dir.display().to_string(), "model_type": d.model_type, "model_size": d.size,
                    "model_n_params": d.params, "n_prompt": row.n_prompt, "n_gen": row.n_gen,
                    "avg_ns": (avg_s * 1e9) as u64, "stddev_ns": (sd_s * 1e9) as u64, "avg_ts": avg, "stddev_ts": sd,
                    "samples_ns": row.samples.iter().map(|s| (s * 1e9) as u64).collect::<Vec<_>>(),
                    "samples_ts": row.samples_ts(), "load_s": load_s, "ttft_s": self.ttft, "gpu_weight_bytes": d.size,
                    "host_us_per_step": self.host_us_per_step,
                })
            })
            .collect();
        serde_json::Value::Array(rows)
    }
}

/// What the table and the JSON rows say about the model and the device.
struct Described {
    /// The checkpoint directory's (or GGUF file's) name.
    name: String,
    /// Model type and the weight formats of its matrices, e.g. `lfm2_moe bf16+f32`.
    model_type: String,
    backend: String,
    /// GPU bytes of the weights.
    size: u64,
    params: u64,
}

impl Described {
    fn new(ctx: &GpuContext, model: &Model) -> Self {
        let formats: BTreeSet<&str> = model
            .weights
            .matrices()
            .iter()
            .map(|t| t.format.name())
            .collect();
        Described {
            name: model
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            model_type: format!(
                "{} {}",
                model.config.model_type,
                formats.into_iter().collect::<Vec<_>>().join("+")
            ),
            backend: format!("wgpu-{:?}", ctx.info.backend).to_lowercase(),
            size: model.weights.gpu_bytes(),
            params: model.weights.n_params(),
        }
    }
}

/// Pseudo-random token ids in 2..vocab (llama-bench also benches random tokens; 0..vocab
/// for a vocabulary of 2 or fewer).
fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let low = if vocab > 2 { 2 } else { 0 };
    let span = (vocab - low).max(1) as u64;
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (low as u64 + s % span) as u32
        })
        .collect()
}

/// Runs pp`n_prompt` and tg`n_gen`, `reps` times each after one warm-up, in a session of
/// `opts` (its context must hold `n_prompt` tokens and `n_gen` + 1).
pub fn bench(
    ctx: &GpuContext,
    model: &Model,
    (n_prompt, n_gen): (usize, usize),
    reps: usize,
    opts: SessionOptions,
) -> Result<BenchReport> {
    let mut s = Session::new(ctx, model, opts)?;
    let vocab = model.config.vocab;
    let mut rows = Vec::new();
    let mut ttft = 0.0;
    let mut host = s.host_time();
    if n_prompt > 0 {
        let prompt = tokens(n_prompt, vocab, 42);
        let mut row = BenchRow {
            n_prompt,
            n_gen: 0,
            samples: Vec::new(),
        };
        for rep in 0..=reps {
            s.reset();
            let t = Instant::now();
            s.prefill(&prompt, LogitsMode::Last)?;
            s.sampled()?; // the first token on the host ends the measurement
            let dt = t.elapsed().as_secs_f64();
            if rep > 0 {
                row.samples.push(dt);
            }
        }
        ttft = row.secs().0;
        rows.push(row);
    }
    if n_gen > 0 {
        let mut row = BenchRow {
            n_prompt: 0,
            n_gen,
            samples: Vec::new(),
        };
        for rep in 0..=reps {
            s.reset();
            if rep == 1 {
                host = s.host_time();
            }
            let t = Instant::now();
            s.generate(&[1.min(vocab as u32 - 1)], n_gen, true)?;
            let dt = t.elapsed().as_secs_f64();
            if rep > 0 {
                row.samples.push(dt);
            }
        }
        rows.push(row);
    }
    let steps = s.host_time().since(&host);
    Ok(BenchReport {
        rows,
        ttft,
        host_us_per_step: steps.micros_per_step(),
    })
}
