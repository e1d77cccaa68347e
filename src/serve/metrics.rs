//! The server's counters and gauges, and `/metrics` in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Counters shared by the engine thread (tokens, times, KV) and the HTTP side (requests).
#[derive(Debug, Default)]
pub struct Stats {
    pub slots: usize,
    /// Jobs being generated now.
    pub running: AtomicUsize,
    /// Requests answered, by outcome.
    pub requests_ok: AtomicU64,
    pub requests_client_error: AtomicU64,
    pub requests_rejected_busy: AtomicU64,
    /// Jobs the engine failed.
    pub failed: AtomicU64,
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens a slot already held (not processed again).
    pub cached_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    /// Microseconds from a job's start to its first token (prompt processing).
    pub prompt_micros: AtomicU64,
    /// Microseconds from a job's first token to its last.
    pub decode_micros: AtomicU64,
    /// Tokens after the first of each job (the ones `decode_micros` covers).
    pub decode_tokens: AtomicU64,
    /// KV cache bytes allocated over all slots.
    pub kv_bytes: AtomicU64,
    /// Times the GPU device was lost (and opened again).
    pub device_losses: AtomicU64,
}

impl Stats {
    pub fn new(slots: usize) -> Self {
        Stats {
            slots,
            ..Default::default()
        }
    }

    /// A job's prompt of `len` tokens of which `cached` were already held.
    pub fn record_prompt(&self, len: usize, cached: usize) {
        self.prompt_tokens.fetch_add(len as u64, Ordering::Relaxed);
        self.cached_tokens
            .fetch_add(cached as u64, Ordering::Relaxed);
    }

    /// A job's `generated` tokens: the time to the first, and from the first to the last.
    pub fn record_generation(&self, generated: u64, to_first: Duration, decode: Duration) {
        let micros = |d: Duration| d.as_micros() as u64;
        self.generated_tokens
            .fetch_add(generated, Ordering::Relaxed);
        self.prompt_micros
            .fetch_add(micros(to_first), Ordering::Relaxed);
        self.decode_micros
            .fetch_add(micros(decode), Ordering::Relaxed);
        self.decode_tokens
            .fetch_add(generated.saturating_sub(1), Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with `queued` jobs waiting.
    pub fn prometheus(&self, queued: usize) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let decode_s = get(&self.decode_micros) as f64 / 1e6;
        let tps = if decode_s > 0.0 {
            get(&self.decode_tokens) as f64 / decode_s
        } else {
            0.0
        };
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP wmoe_{name} {help}\n# TYPE wmoe_{name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "wmoe_{name}{labels} {v}");
            }
        };
        metric(
            "requests_total",
            "counter",
            "Requests answered, by outcome.",
            &[
                (r#"{outcome="ok"}"#, get(&self.requests_ok) as f64),
                (
                    r#"{outcome="client_error"}"#,
                    get(&self.requests_client_error) as f64,
                ),
                (
                    r#"{outcome="busy"}"#,
                    get(&self.requests_rejected_busy) as f64,
                ),
                (r#"{outcome="engine_error"}"#, get(&self.failed) as f64),
            ],
        );
        metric(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens of the jobs run, cached ones included.",
            &[("", get(&self.prompt_tokens) as f64)],
        );
        metric(
            "prompt_tokens_cached_total",
            "counter",
            "Prompt tokens a slot already held (prefix reuse), not processed again.",
            &[("", get(&self.cached_tokens) as f64)],
        );
        metric(
            "generation_tokens_total",
            "counter",
            "Tokens generated.",
            &[("", get(&self.generated_tokens) as f64)],
        );
        metric(
            "prompt_seconds_total",
            "counter",
            "Time from a job's start to its first token, summed.",
            &[("", get(&self.prompt_micros) as f64 / 1e6)],
        );
        metric(
            "decode_seconds_total",
            "counter",
            "Time from a job's first token to its last, summed.",
            &[("", decode_s)],
        );
        metric(
            "generation_tokens_per_second",
            "gauge",
            "Decode throughput so far: tokens after each job's first over decode time.",
            &[("", tps)],
        );
        metric(
            "requests_running",
            "gauge",
            "Jobs generating now.",
            &[("", self.running.load(Ordering::SeqCst) as f64)],
        );
        metric(
            "requests_queued",
            "gauge",
            "Jobs waiting for a slot.",
            &[("", queued as f64)],
        );
        metric(
            "slots",
            "gauge",
            "Sequences the engine holds (--parallel).",
            &[("", self.slots as f64)],
        );
        metric(
            "device_losses_total",
            "counter",
            "Times the GPU device was lost and the model uploaded to a new one.",
            &[("", get(&self.device_losses) as f64)],
        );
        metric(
            "kv_cache_bytes",
            "gauge",
            "KV cache bytes allocated over all slots.",
            &[("", get(&self.kv_bytes) as f64)],
        );
        out
    }
}
