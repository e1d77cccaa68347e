//! `wmoe bench`: prompt processing (ppN) and generation (tgN) throughput in llama-bench's
//! form — mean ± sd over repetitions after a warm-up — plus load time and time to first token.

use std::time::Instant;

use super::{LogitsMode, Model, Session, SessionOptions};
use crate::error::Result;
use crate::gpu::GpuContext;
use crate::kernels::KvType;

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

/// Pseudo-random token ids in 2..vocab (llama-bench also benches random tokens).
fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            2 + (s % (vocab as u64 - 2)) as u32
        })
        .collect()
}

/// Runs pp`n_prompt` and tg`n_gen`, `reps` times each after one warm-up.
pub fn bench(
    ctx: &GpuContext,
    model: &Model,
    n_prompt: usize,
    n_gen: usize,
    reps: usize,
    chunk: usize,
    kv: KvType,
) -> Result<BenchReport> {
    let opts = SessionOptions {
        max_context: n_prompt.max(n_gen + 1).max(2),
        chunk: chunk.max(1),
        kv,
    };
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
            s.generate(&[1], n_gen, true)?;
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
