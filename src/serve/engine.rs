//! The engine boundary: the one thread that owns the GPU, and the jobs HTTP handlers hand it.
//!
//! A [`Job`] is a whole prompt (token ids, the conversation sent again in full), sampling
//! parameters, a token budget and a channel of [`Event`]s back: `Started` once the prompt's
//! cached prefix is known, one `Token` per generated token (an EOS token too), then
//! `Finished` or `Error`. Dropping the event receiver (a client that went away, a stop
//! string matched) stops the job at its next token; a queued job whose receiver is gone is
//! skipped. Text, stop strings, parsing and SSE framing are the HTTP side's.
//!
//! [`Engine::submit`] admits at most `slots + queue` jobs at once and refuses the rest
//! ([`Busy`]); a job's admission ends when the worker drops it. The worker is any function of
//! the job queue ([`Engine::with_worker`]); [`Engine::start`] runs the GPU worker: one
//! [`Session`] per slot, a job served on the slot that holds the longest prefix of its prompt
//! (so a conversation's next turn prefills only its new tokens; see `pick_slot`), jobs one
//! at a time in arrival order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Stats;
use crate::error::{Error, Result};
use crate::gpu::{DeviceOptions, GpuContext};
use crate::kernels::sample::SamplingParams;
use crate::kernels::KvType;
use crate::model::QuantPlan;
use crate::runtime::{FinishReason, Flow, Model, ModelFiles, Session, SessionOptions};

/// What the engine reports about a job, in this order: `Started`, `Token`s, then `Finished`
/// or `Error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The prompt is being processed; its first `cached_tokens` were already in the slot.
    Started { cached_tokens: usize },
    /// A generated token (the final EOS token included).
    Token(u32),
    /// Why generation ended.
    Finished(FinishReason),
    /// The job failed; the message is for the client.
    Error(String),
}

/// One generation: the whole prompt, how to draw tokens, and where events go.
pub struct Job {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// At least 1; prompt plus `max_tokens` fit the context (the HTTP side checks).
    pub max_tokens: usize,
    /// Keep generating past EOS (vLLM's `ignore_eos`).
    pub ignore_eos: bool,
    pub events: UnboundedSender<Event>,
    /// Held while the job is queued or running; its drop frees the admission.
    pub(crate) _admission: Admission,
}

impl Job {
    /// Sends `event`; false when the receiver is gone (the job should stop).
    pub fn send(&self, event: Event) -> bool {
        self.events.send(event).is_ok()
    }

    /// Whether the receiver is gone (the client left before the job started).
    pub fn abandoned(&self) -> bool {
        self.events.is_closed()
    }
}

/// A job counted against the engine's capacity until dropped.
pub(crate) struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The engine is full: every slot busy and the queue at its bound.
#[derive(Debug)]
pub struct Busy;

/// What the GPU engine loads and how many slots it keeps.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub device: DeviceOptions,
    pub quant: Option<QuantPlan>,
    /// Sessions (slots), each with its own KV cache and conv state.
    pub slots: usize,
    /// Jobs admitted beyond the slots, waiting.
    pub queue: usize,
    pub context: usize,
    pub chunk: usize,
    /// The KV cache type; `None` picks one by cache size ([`Model::auto_kv_type`]).
    pub kv: Option<KvType>,
}

/// The HTTP side's handle on the engine.
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
    slots: usize,
    pub stats: Arc<Stats>,
}

impl Engine {
    /// The GPU engine. On the engine thread (model files stay on it): `open` reads and
    /// checks the model files, `describe` takes what the HTTP side needs from them, then the
    /// device is opened and the model uploaded. Returns once the model is on the GPU, with
    /// `describe`'s result, or with the error that stopped it.
    pub fn start<R: Send + 'static>(
        open: impl FnOnce() -> Result<ModelFiles> + Send + 'static,
        describe: impl FnOnce(&ModelFiles) -> Result<R> + Send + 'static,
        opts: EngineOptions,
    ) -> Result<(Engine, R)> {
        if opts.slots == 0 {
            return Err(Error::Input("--parallel must be at least 1".into()));
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        let o = opts.clone();
        let engine = Self::with_worker(opts.slots, opts.queue, move |jobs, stats| {
            let files = open().and_then(|f| Ok((describe(&f)?, f)));
            match files {
                Ok((described, files)) => gpu_worker(files, &o, jobs, stats, |r| {
                    let _ = ready_tx.send(r.map(|()| described));
                }),
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        match ready_rx.recv() {
            Ok(Ok(described)) => Ok((engine, described)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Gpu("the engine thread ended while loading".into())),
        }
    }

    /// An engine whose jobs `worker` serves on its own thread; it gets the queue (closed when
    /// the engine is dropped) and the statistics to keep. `slots` and `queue` bound the jobs
    /// admitted at once. Tests drive the HTTP layer through a scripted worker this way.
    pub fn with_worker<W>(slots: usize, queue: usize, worker: W) -> Engine
    where
        W: FnOnce(mpsc::Receiver<Job>, Arc<Stats>) + Send + 'static,
    {
        let (jobs, rx) = mpsc::channel();
        let stats = Arc::new(Stats::new(slots));
        let s = stats.clone();
        std::thread::Builder::new()
            .name("wmoe-engine".into())
            .spawn(move || worker(rx, s))
            .expect("spawning the engine thread");
        Engine {
            jobs,
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity: slots + queue,
            slots,
            stats,
        }
    }

    /// Queues a job, or refuses it when `slots + queue` jobs are already admitted.
    pub fn submit(
        &self,
        prompt: Vec<u32>,
        sampling: SamplingParams,
        max_tokens: usize,
        ignore_eos: bool,
        events: UnboundedSender<Event>,
    ) -> std::result::Result<(), Busy> {
        let admitted = self
            .admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.capacity).then_some(n + 1)
            });
        if admitted.is_err() {
            return Err(Busy);
        }
        let job = Job {
            prompt,
            sampling,
            max_tokens,
            ignore_eos,
            events,
            _admission: Admission(self.admitted.clone()),
        };
        self.jobs.send(job).map_err(|_| Busy)
    }

    /// Jobs admitted and not yet finished (running or queued).
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::SeqCst)
    }

    /// Jobs waiting for a slot.
    pub fn queued(&self) -> usize {
        self.admitted()
            .saturating_sub(self.stats.running.load(Ordering::SeqCst))
    }

    pub fn slots(&self) -> usize {
        self.slots
    }
}

/// The GPU engine thread: device, model and one session per slot; then jobs until the
/// queue closes.
fn gpu_worker(
    files: ModelFiles,
    opts: &EngineOptions,
    jobs: mpsc::Receiver<Job>,
    stats: Arc<Stats>,
    ready: impl FnOnce(Result<()>),
) {
    let loaded = (|| {
        let ctx = GpuContext::new(&opts.device)?;
        let model = Model::upload(&ctx, files, opts.quant, false)?;
        Ok((ctx, model))
    })();
    let (ctx, model) = match loaded {
        Ok(v) => v,
        Err(e) => {
            ready(Err(e));
            return;
        }
    };
    let session_opts = SessionOptions {
        max_context: opts.context,
        chunk: opts.chunk,
        kv: opts
            .kv
            .unwrap_or_else(|| model.auto_kv_type(&ctx, opts.context)),
    };
    let slots: Result<Vec<Session>> = (0..opts.slots)
        .map(|_| Session::new(&ctx, &model, session_opts))
        .collect();
    let mut slots = match slots {
        Ok(s) => s,
        Err(e) => {
            ready(Err(e));
            return;
        }
    };
    ready(Ok(()));
    let mut last_used = vec![0u64; slots.len()];
    let mut clock = 0u64;
    while let Ok(job) = jobs.recv() {
        if job.abandoned() {
            continue;
        }
        let i = pick_slot(&slots, &last_used, &job.prompt);
        clock += 1;
        last_used[i] = clock;
        stats.running.fetch_add(1, Ordering::SeqCst);
        run_job(&mut slots[i], &job, &stats);
        stats.running.fetch_sub(1, Ordering::SeqCst);
        let kv: u64 = slots.iter().map(|s| s.kv_bytes()).sum();
        stats.kv_bytes.store(kv, Ordering::SeqCst);
    }
}

/// The slot for `prompt`: of the slots whose history `prompt` shares at least half of, the
/// one sharing the longest prefix (a conversation's next turn); else the least recently used
/// (an unused one first), so a new conversation does not evict one that may continue.
fn pick_slot(slots: &[Session], last_used: &[u64], prompt: &[u32]) -> usize {
    let shared = |s: &Session| {
        s.history()
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
    };
    let continued = (0..slots.len())
        .map(|i| (shared(&slots[i]), i))
        .filter(|&(n, i)| n > 0 && 2 * n >= slots[i].history().len())
        .max_by_key(|&(n, i)| (n, std::cmp::Reverse(last_used[i])));
    match continued {
        Some((_, i)) => i,
        None => (0..slots.len())
            .min_by_key(|&i| last_used[i])
            .expect("at least one slot"),
    }
}

/// Serves `job` on `session`: reuses the prefix it holds, feeds the rest, streams tokens.
fn run_job(session: &mut Session, job: &Job, stats: &Stats) {
    let result = (|| -> Result<FinishReason> {
        let kept = session.reuse_prefix(&job.prompt)?;
        stats.record_prompt(job.prompt.len(), kept);
        if !job.send(Event::Started {
            cached_tokens: kept,
        }) {
            return Ok(FinishReason::Stopped);
        }
        let start = Instant::now();
        let mut first: Option<Instant> = None;
        let mut generated = 0u64;
        let reason = session.generate_stream(
            &job.prompt[kept..],
            job.max_tokens,
            job.ignore_eos,
            &job.sampling,
            &mut |t| {
                first.get_or_insert_with(Instant::now);
                generated += 1;
                match job.send(Event::Token(t)) {
                    true => Flow::Continue,
                    false => Flow::Stop,
                }
            },
        )?;
        let end = Instant::now();
        let first = first.unwrap_or(end);
        stats.record_generation(generated, first - start, end - first);
        Ok(reason)
    })();
    match result {
        Ok(reason) => {
            job.send(Event::Finished(reason));
        }
        Err(e) => {
            // The sequence may hold half a step: start the slot afresh.
            session.reset();
            stats.failed.fetch_add(1, Ordering::SeqCst);
            job.send(Event::Error(e.to_string()));
        }
    }
}
