//! `wmoe bench`: prompt processing (ppN) and generation (tgN) throughput in llama-bench's
//! form — mean ± sd over repetitions after a warm-up, at one or more context depths (tokens
//! already in the context) — plus load time and time to first token.

use std::collections::BTreeSet;
use std::time::Instant;

use super::{Batch, HostTime, LogitsMode, Model, Session, SessionOptions};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels::sample::SamplingParams;
use crate::kernels::KvType;

/// One llama-bench-style test row.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Tokens already in the context when the test starts (llama-bench's `n_depth`).
    pub depth: usize,
    /// Sequences generating together (each `n_gen` tokens; llama-batched-bench's `pl`).
    pub parallel: usize,
    /// Seconds per repetition.
    pub samples: Vec<f64>,
}

impl BenchRow {
    /// Tokens per second of each repetition (over all sequences).
    pub fn samples_ts(&self) -> Vec<f64> {
        let n = ((self.n_prompt + self.n_gen) * self.parallel) as f64;
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

    /// `pp512`, `tg128`, and with a depth `pp512 @ d4096` as llama-bench names them; `tg128
    /// x4` for four sequences generating together.
    pub fn name(&self) -> String {
        let test = if self.n_gen == 0 {
            format!("pp{}", self.n_prompt)
        } else if self.parallel > 1 {
            format!("tg{} x{}", self.n_gen, self.parallel)
        } else {
            format!("tg{}", self.n_gen)
        };
        if self.depth == 0 {
            test
        } else {
            format!("{test} @ d{}", self.depth)
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
    /// With `parallel` > 1 and a pp test: the time to first token of a pp-sized prompt that
    /// arrives while the other P − 1 sequences stream, and on an idle batch.
    pub ttft_busy: Option<BusyTtft>,
}

/// Time to first token of a request joining a batch: seconds on an idle batch, and with
/// `others` sequences generating meanwhile (the batch's schedule, [`Batch::tick`]).
#[derive(Clone, Copy, Debug)]
pub struct BusyTtft {
    pub others: usize,
    pub idle_s: f64,
    pub busy_s: f64,
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
        if let Some(b) = &self.ttft_busy {
            s.push_str(&format!(
                "time to first token (pp{}) joining a batch: {:.3} s idle, {:.3} s with {} others streaming ({:.2}x)\n",
                self.rows.first().map_or(0, |x| x.n_prompt),
                b.idle_s,
                b.busy_s,
                b.others,
                b.busy_s / b.idle_s
            ));
        }
        s.push_str(&format!(
            "device: {} ({:?}); load {load_s:.2} s; time to first token (pp{}) {:.3} s; GPU weights {:.1} MiB; host {:.0} us per decode step to submit\n",
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
                    "model_n_params": d.params, "n_prompt": row.n_prompt, "n_gen": row.n_gen, "n_depth": row.depth, "n_parallel": row.parallel,
                    "avg_ns": (avg_s * 1e9) as u64, "stddev_ns": (sd_s * 1e9) as u64, "avg_ts": avg, "stddev_ts": sd,
                    "samples_ns": row.samples.iter().map(|s| (s * 1e9) as u64).collect::<Vec<_>>(),
                    "samples_ts": row.samples_ts(), "load_s": load_s, "ttft_s": self.ttft, "gpu_weight_bytes": d.size,
                    "host_us_per_step": self.host_us_per_step,
                    "ttft_idle_batch_s": self.ttft_busy.map(|b| b.idle_s),
                    "ttft_busy_batch_s": self.ttft_busy.map(|b| b.busy_s),
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

/// Pseudo-random token ids in 2..vocab (llama-bench also benches random tokens).
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

/// What `wmoe bench` measures.
#[derive(Clone, Debug)]
pub struct BenchSpec {
    /// Prompt tokens of the pp test (0: none).
    pub n_prompt: usize,
    /// Generated tokens of the tg test (0: none).
    pub n_gen: usize,
    /// Context depths each test runs at (tokens prefilled, untimed, before it).
    pub depths: Vec<usize>,
    /// Timed repetitions after one warm-up.
    pub reps: usize,
    /// Numbers of sequences the tg test generates together (1: one sequence, the decode
    /// path; more: [`Batch`] steps).
    pub parallel: Vec<usize>,
    pub chunk: usize,
    pub kv: KvType,
}

impl BenchSpec {
    /// The context the deepest test needs.
    pub fn context(&self) -> usize {
        let depth = self.depths.iter().copied().max().unwrap_or(0);
        depth + self.n_prompt.max(self.n_gen + 1).max(2)
    }
}

/// Runs pp`n_prompt` and tg`n_gen` at every depth, `reps` times each after one warm-up.
pub fn bench(ctx: &GpuContext, model: &Model, spec: &BenchSpec) -> Result<BenchReport> {
    if spec.parallel.contains(&0) {
        return Err(Error::Input(
            "the numbers of parallel sequences must be at least 1".into(),
        ));
    }
    if spec.reps == 0 {
        return Err(Error::Input(
            "the number of repetitions (-r) must be at least 1".into(),
        ));
    }
    let opts = SessionOptions {
        max_context: spec.context(),
        chunk: spec.chunk,
        kv: spec.kv,
    };
    let mut s = Session::new(ctx, model, opts)?;
    let vocab = model.config.vocab;
    let mut rows = Vec::new();
    let mut ttft = 0.0;
    let mut host = None;
    let mut ttft_busy = None;
    for &depth in &spec.depths {
        let context = tokens(depth, vocab, 7);
        if spec.n_prompt > 0 {
            let prompt = tokens(spec.n_prompt, vocab, 42);
            let (row, _) = repeat(&mut s, spec, (&context, depth), |s| {
                s.prefill(&prompt, LogitsMode::Last)?;
                s.sampled()?; // the first token on the host ends the measurement
                Ok(())
            })?;
            if depth == spec.depths[0] {
                ttft = row.secs().0;
            }
            rows.push(BenchRow {
                n_prompt: spec.n_prompt,
                ..row
            });
        }
        for &parallel in spec.parallel.iter().filter(|_| spec.n_gen > 0) {
            if parallel > 1 {
                let (row, busy) = together(ctx, model, spec, parallel, (&context, depth))?;
                rows.push(row);
                ttft_busy = ttft_busy.or(busy);
                continue;
            }
            let (row, steps) = repeat(&mut s, spec, (&context, depth), |s| {
                s.generate(&[1.min(vocab as u32 - 1)], spec.n_gen, true)
                    .map(|_| ())
            })?;
            host.get_or_insert(steps);
            rows.push(BenchRow {
                n_gen: spec.n_gen,
                ..row
            });
        }
    }
    let host_us_per_step = host.map_or(0.0, |h| h.micros_per_step());
    Ok(BenchReport {
        rows,
        ttft,
        host_us_per_step,
        ttft_busy,
    })
}

/// One test: `reps` + 1 runs of `test` (the first a warm-up), each from `context` (the
/// depth) in place, untimed; with the host time of the timed runs' decode steps.
fn repeat(
    s: &mut Session,
    spec: &BenchSpec,
    (context, depth): (&[u32], usize),
    mut test: impl FnMut(&mut Session) -> Result<()>,
) -> Result<(BenchRow, HostTime)> {
    let mut samples = Vec::new();
    let mut host = HostTime::default();
    for rep in 0..=spec.reps {
        at_depth(s, context)?;
        let before = s.host_time();
        let t = Instant::now();
        test(s)?;
        if rep > 0 {
            samples.push(t.elapsed().as_secs_f64());
            let run = s.host_time().since(&before);
            host.steps += run.steps;
            host.total += run.total;
        }
    }
    let row = BenchRow {
        n_prompt: 0,
        n_gen: 0,
        depth,
        parallel: 1,
        samples,
    };
    Ok((row, host))
}

/// Puts the session at the end of `context` (a depth): the KV cache and the conv states of
/// the previous test's context when the session holds it (prefix reuse, restored from the
/// conv checkpoint taken where its prefill ended, as llama-bench restores a saved depth
/// state), else a reset and the context's prefill. Deep tests then prefill their depth once
/// per depth, not once per run. Says whether the context was reused.
fn at_depth(s: &mut Session, context: &[u32]) -> Result<bool> {
    if context.is_empty() {
        s.reset();
        return Ok(false);
    }
    // One more token after the context, so that the whole context counts as reusable.
    let probe: Vec<u32> = context.iter().copied().chain([0]).collect();
    if s.history().starts_with(context) && s.reuse_prefix(&probe)? == context.len() {
        return Ok(true);
    }
    s.reset();
    s.prefill(context, LogitsMode::Last)?;
    Ok(false)
}

/// The tg test of `parallel` sequences generating together, each after `context` (its
/// depth, prefilled untimed and reused): timed from their one-token prompts to their
/// `n_gen`-th tokens, `reps` times after a warm-up. With a pp test, also the time to first
/// token of a pp-sized prompt joining the batch, idle and with the others streaming.
fn together(
    ctx: &GpuContext,
    model: &Model,
    spec: &BenchSpec,
    parallel: usize,
    (context, depth): (&[u32], usize),
) -> Result<(BenchRow, Option<BusyTtft>)> {
    let opts = SessionOptions {
        max_context: spec.context(),
        chunk: spec.chunk,
        kv: spec.kv,
    };
    let mut batch = Batch::new(ctx, model, opts, parallel)?;
    let greedy = SamplingParams::greedy();
    let prompt = [context, &[1.min(model.config.vocab as u32 - 1)]].concat();
    let mut samples = Vec::new();
    for rep in 0..=spec.reps {
        if !context.is_empty() {
            for slot in 0..parallel {
                batch.admit(slot, context, &greedy)?;
                while batch.prefilling(slot) {
                    batch.prefill(slot)?;
                }
                batch.finish(slot)?;
            }
        }
        let t = Instant::now();
        for slot in 0..parallel {
            batch.admit(slot, &prompt, &greedy)?;
            while batch.prefilling(slot) {
                batch.prefill(slot)?;
            }
        }
        for _ in 1..spec.n_gen {
            batch.step()?;
        }
        if rep > 0 {
            samples.push(t.elapsed().as_secs_f64());
        }
        for slot in 0..parallel {
            batch.finish(slot)?;
        }
    }
    let row = BenchRow {
        n_prompt: 0,
        n_gen: spec.n_gen,
        depth,
        parallel,
        samples,
    };
    let busy = if spec.n_prompt > 0 && depth == 0 {
        Some(joining_ttft(&mut batch, spec, model.config.vocab)?)
    } else {
        None
    };
    Ok((row, busy))
}

/// Seconds to the first token of a fresh `n_prompt`-token prompt admitted to the last slot,
/// run on the batch's schedule, `reps` times: with every other slot idle, and with them
/// generating (from one-token prompts) meanwhile.
fn joining_ttft(batch: &mut Batch, spec: &BenchSpec, vocab: usize) -> Result<BusyTtft> {
    let greedy = SamplingParams::greedy();
    let last = batch.parallel() - 1;
    let (mut idle, mut busy) = (0.0, 0.0);
    for rep in 0..2 * spec.reps {
        let loaded = rep % 2 == 1;
        if loaded {
            for slot in 0..last {
                batch.admit(slot, &tokens(1, vocab, rep as u64 + 5), &greedy)?;
            }
            while (0..last).any(|s| !batch.generating(s)) {
                batch.tick()?;
            }
        }
        let prompt = tokens(spec.n_prompt, vocab, 1000 + rep as u64);
        let t = Instant::now();
        batch.admit(last, &prompt, &greedy)?;
        while !batch.tick()?.iter().any(|&(slot, _)| slot == last) {}
        let secs = t.elapsed().as_secs_f64();
        if loaded {
            busy += secs;
        } else {
            idle += secs;
        }
        for slot in 0..batch.parallel() {
            batch.finish(slot)?;
        }
    }
    Ok(BusyTtft {
        others: last,
        idle_s: idle / spec.reps as f64,
        busy_s: busy / spec.reps as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::context;

    /// A second run at the same depth starts from the context in place (restored, not
    /// prefilled again) and computes what the first did: the same logits, bit for bit.
    #[test]
    fn runs_at_a_depth_reuse_its_context() {
        let Some(ctx) = context() else { return };
        let model = Model::load_bundled(ctx, None, false).unwrap();
        let opts = SessionOptions {
            max_context: 256,
            chunk: 16,
            ..SessionOptions::default()
        };
        let mut s = Session::new(ctx, &model, opts).unwrap();
        let depth = tokens(40, model.config.vocab, 7);
        let test = |s: &mut Session| {
            let first = s.prefill(&[5, 6, 7], LogitsMode::Last).unwrap();
            (first, s.decode(9).unwrap())
        };
        assert!(
            !at_depth(&mut s, &depth).unwrap(),
            "a fresh session prefills"
        );
        let a = test(&mut s);
        assert!(at_depth(&mut s, &depth).unwrap(), "the depth is reused");
        assert_eq!(s.position(), depth.len());
        assert_eq!(test(&mut s), a);
        assert!(
            !at_depth(&mut s, &depth[..39]).unwrap(),
            "another context prefills"
        );
        assert!(!at_depth(&mut s, &[]).unwrap());
        assert_eq!(s.position(), 0);
    }
}
