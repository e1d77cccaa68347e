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
//! the job queue ([`Engine::with_worker`]); [`Engine::start`] runs the GPU worker: a
//! [`Batch`] of `slots` sequences decoded together (continuous batching), a job admitted to
//! the free slot that holds the longest prefix of its prompt (so a conversation's next turn
//! prefills only its new tokens; see `pick_slot`), in arrival order. A lost device ends the
//! running jobs with an error; the engine opens a new device, uploads the model again and
//! serves the waiting and later jobs there.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Stats;
use crate::error::{Error, Result};
use crate::gpu::{DeviceOptions, GpuContext};
use crate::kernels::sample::SamplingParams;
use crate::kernels::KvType;
use crate::model::QuantPlan;
use crate::runtime::{Batch, FinishReason, Model, ModelFiles, SessionOptions};

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
    /// Slots: sequences decoded together, each with its own KV cache and conv state.
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
    /// Asks the GPU worker to destroy its device at its next step ([`Self::destroy_device`]).
    device_fault: Arc<AtomicBool>,
}

impl Engine {
    /// The GPU engine. On the engine thread (model files stay on it): `open` reads and
    /// checks the model files, `describe` takes what the HTTP side needs from them, then the
    /// device is opened and the model uploaded. Returns once the model is on the GPU, with
    /// `describe`'s result, or with the error that stopped it. When the device is lost, the
    /// engine opens a new one and uploads the model again, from `open`.
    pub fn start<R: Send + 'static>(
        open: impl Fn() -> Result<ModelFiles> + Send + 'static,
        describe: impl FnOnce(&ModelFiles) -> Result<R> + Send + 'static,
        opts: EngineOptions,
    ) -> Result<(Engine, R)> {
        if opts.slots == 0 {
            return Err(Error::Input("--parallel must be at least 1".into()));
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        let o = opts.clone();
        let fault = Arc::new(AtomicBool::new(false));
        let f = fault.clone();
        let mut engine = Self::with_worker(opts.slots, opts.queue, move |jobs, stats| {
            let files = open().and_then(|f| Ok((describe(&f)?, f)));
            match files {
                Ok((described, files)) => {
                    let worker = Worker {
                        open,
                        opts: &o,
                        jobs: &jobs,
                        stats: &stats,
                        fault: &f,
                    };
                    worker.run(files, |r| {
                        let _ = ready_tx.send(r.map(|()| described));
                    })
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        engine.device_fault = fault;
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
            device_fault: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Destroys the GPU engine's device at its next step, as a driver reset or a removed GPU
    /// would (a test hook: the engine must fail the running jobs and carry on on a new
    /// device). An engine of [`Self::with_worker`] has no device; this does nothing there.
    pub fn destroy_device(&self) {
        self.device_fault.store(true, Ordering::SeqCst);
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

/// The GPU engine thread: device, model and a [`Batch`] of `slots` sequences; then jobs
/// until the queue closes, continuously batched: jobs join free slots between steps (their
/// prompts prefilled a chunk per step, [`Batch::tick`]), every running job draws a token per
/// step, and finished or abandoned ones leave at once. A lost device ends the running jobs
/// with an error; the waiting ones wait for a new device, the model uploaded again.
struct Worker<'w, F> {
    open: F,
    opts: &'w EngineOptions,
    jobs: &'w mpsc::Receiver<Job>,
    stats: &'w Stats,
    fault: &'w AtomicBool,
}

/// Why a device's scheduler stopped.
enum Ended {
    /// The queue closed: the server is shutting down.
    Closed,
    /// The device was lost.
    Lost,
}

impl<F: Fn() -> Result<ModelFiles>> Worker<'_, F> {
    /// Serves jobs on devices opened one after another (`files` uploaded to the first, read
    /// again with `open` for the next); `ready` hears how the first one went.
    fn run(self, files: ModelFiles, ready: impl FnOnce(Result<()>)) {
        let mut waiting = VecDeque::new();
        let mut ready = Some(ready);
        let mut files = Some(files);
        loop {
            let device = match files.take() {
                Some(f) => Ok(f),
                None => (self.open)(),
            }
            .and_then(|f| self.serve_device(f, &mut waiting, &mut ready));
            match (device, ready.take()) {
                (Ok(Ended::Closed), _) => return,
                (Ok(Ended::Lost), _) => {
                    self.stats.device_losses.fetch_add(1, Ordering::SeqCst);
                    eprintln!("wmoe serve: the GPU device was lost; opening it again");
                }
                (Err(e), Some(ready)) => return ready(Err(e)),
                (Err(e), None) => {
                    // No device for now: what waits fails; the next job tries again.
                    eprintln!("wmoe serve: cannot open the GPU device again: {e}");
                    let msg = format!("the GPU device was lost and cannot be opened again: {e}");
                    for job in waiting.drain(..) {
                        self.stats.failed.fetch_add(1, Ordering::SeqCst);
                        job.send(Event::Error(msg.clone()));
                    }
                    match self.jobs.recv() {
                        Ok(job) => waiting.push_back(job),
                        Err(_) => return,
                    }
                }
            }
        }
    }

    /// Opens a device, uploads `files`, and serves `waiting` and the queue's jobs on it until
    /// the queue closes or the device is lost (`waiting` then holds the jobs still waiting).
    fn serve_device(
        &self,
        files: ModelFiles,
        waiting: &mut VecDeque<Job>,
        ready: &mut Option<impl FnOnce(Result<()>)>,
    ) -> Result<Ended> {
        let opts = self.opts;
        let ctx = GpuContext::new(&opts.device)?;
        let model = Model::upload(&ctx, files, opts.quant, false)?;
        let session_opts = SessionOptions {
            max_context: opts.context,
            chunk: opts.chunk,
            kv: opts
                .kv
                .unwrap_or_else(|| model.auto_kv_type(&ctx, opts.context)),
        };
        let batch = Batch::new(&ctx, &model, session_opts, opts.slots)?;
        if let Some(ready) = ready.take() {
            ready(Ok(()));
        }
        let eos = model.config.eos.clone();
        let mut scheduler = Scheduler::new(batch, self.stats, eos);
        scheduler.waiting = std::mem::take(waiting);
        let ended = scheduler.run(self.jobs, &ctx, self.fault);
        *waiting = scheduler.waiting;
        Ok(ended)
    }
}

/// What a job on a lost device is told.
const LOST: &str = "the GPU device was lost (the server is opening it again); retry the request";

/// What a job that failed with `e` is told: that the device was lost, when it was.
fn failure(ctx: &GpuContext, e: &Error) -> String {
    match ctx.is_lost() {
        true => LOST.into(),
        false => e.to_string(),
    }
}

/// A job in a slot: where its generation stands.
struct Running {
    job: Job,
    generated: usize,
    started: Instant,
    first: Option<Instant>,
}

/// The engine loop over a batch: admission into slots, the batch's ticks, and each job's
/// end (EOS, its token budget, a full context, a client gone, an error).
struct Scheduler<'b, 'm> {
    batch: Batch<'m>,
    stats: &'b Stats,
    eos: Vec<u32>,
    running: Vec<Option<Running>>,
    waiting: VecDeque<Job>,
    last_used: Vec<u64>,
    clock: u64,
}

impl<'b, 'm> Scheduler<'b, 'm> {
    fn new(batch: Batch<'m>, stats: &'b Stats, eos: Vec<u32>) -> Self {
        let n = batch.parallel();
        Scheduler {
            batch,
            stats,
            eos,
            running: (0..n).map(|_| None).collect(),
            waiting: VecDeque::new(),
            last_used: vec![0; n],
            clock: 0,
        }
    }

    /// Serves jobs until the queue closes and the running ones are done, or until `ctx`'s
    /// device is lost (`fault` set destroys it first: the test hook).
    fn run(&mut self, jobs: &mpsc::Receiver<Job>, ctx: &GpuContext, fault: &AtomicBool) -> Ended {
        loop {
            let idle = self.running.iter().all(Option::is_none) && self.waiting.is_empty();
            if idle {
                match jobs.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => return Ended::Closed,
                }
            }
            self.waiting.extend(jobs.try_iter());
            self.waiting.retain(|job| !job.abandoned());
            self.drop_abandoned();
            if fault.swap(false, Ordering::SeqCst) {
                ctx.destroy();
            }
            self.admit(ctx);
            self.tick(ctx);
            if ctx.is_lost() {
                for slot in 0..self.running.len() {
                    self.end(slot, Err(LOST.into()));
                }
                return Ended::Lost;
            }
            self.stats
                .kv_bytes
                .store(self.batch.kv_bytes(), Ordering::SeqCst);
        }
    }

    /// Ends the jobs whose clients left, freeing their slots now rather than at a token.
    fn drop_abandoned(&mut self) {
        for slot in 0..self.running.len() {
            if self.running[slot]
                .as_ref()
                .is_some_and(|r| r.job.abandoned())
            {
                self.end(slot, Ok(FinishReason::Stopped));
            }
        }
    }

    /// Waiting jobs into free slots, in arrival order.
    fn admit(&mut self, ctx: &GpuContext) {
        while !self.waiting.is_empty() {
            let free: Vec<usize> = (0..self.running.len())
                .filter(|&i| self.running[i].is_none())
                .collect();
            if free.is_empty() {
                return;
            }
            let job = self.waiting.pop_front().expect("not empty");
            let slot = pick_slot(&self.batch, &free, &self.last_used, &job.prompt);
            self.clock += 1;
            self.last_used[slot] = self.clock;
            match self.batch.admit(slot, &job.prompt, &job.sampling) {
                Ok(kept) => {
                    self.stats.record_prompt(job.prompt.len(), kept);
                    if job.send(Event::Started {
                        cached_tokens: kept,
                    }) {
                        self.stats.running.fetch_add(1, Ordering::SeqCst);
                        self.running[slot] = Some(Running {
                            job,
                            generated: 0,
                            started: Instant::now(),
                            first: None,
                        });
                    } else {
                        let _ = self.batch.finish(slot);
                    }
                }
                Err(e) => {
                    self.stats.failed.fetch_add(1, Ordering::SeqCst);
                    job.send(Event::Error(failure(ctx, &e)));
                }
            }
        }
    }

    /// One tick of the batch; its tokens to their jobs. A failed tick fails every running job
    /// and starts their slots afresh (a slot may hold half a step).
    fn tick(&mut self, ctx: &GpuContext) {
        let drawn = match self.batch.tick() {
            Ok(drawn) => drawn,
            Err(e) => {
                let msg = failure(ctx, &e);
                for slot in 0..self.running.len() {
                    self.end(slot, Err(msg.clone()));
                }
                return;
            }
        };
        for (slot, t) in drawn {
            let Some(r) = self.running[slot].as_mut() else {
                continue;
            };
            r.generated += 1;
            r.first.get_or_insert_with(Instant::now);
            let reason = if !r.job.send(Event::Token(t)) {
                Some(FinishReason::Stopped)
            } else if !r.job.ignore_eos && self.eos.contains(&t) {
                Some(FinishReason::Eos)
            } else if r.generated >= r.job.max_tokens || self.batch.room(slot) == 0 {
                Some(FinishReason::Length)
            } else {
                None
            };
            if let Some(reason) = reason {
                self.end(slot, Ok(reason));
            }
        }
    }

    /// Ends the job in `slot` with `outcome`, and frees the slot.
    fn end(&mut self, slot: usize, outcome: std::result::Result<FinishReason, String>) {
        let Some(r) = self.running[slot].take() else {
            return;
        };
        self.stats.running.fetch_sub(1, Ordering::SeqCst);
        let end = Instant::now();
        let first = r.first.unwrap_or(end);
        self.stats
            .record_generation(r.generated as u64, first - r.started, end - first);
        let finished = match outcome {
            Ok(reason) => self.batch.finish(slot).map(|()| reason),
            Err(e) => Err(Error::Gpu(e)),
        };
        match finished {
            Ok(reason) => {
                r.job.send(Event::Finished(reason));
            }
            Err(e) => {
                self.batch.reset(slot);
                self.stats.failed.fetch_add(1, Ordering::SeqCst);
                r.job.send(Event::Error(e.to_string()));
            }
        }
    }
}

/// The slot of `free` for `prompt`: of those whose history `prompt` shares at least half of,
/// the one sharing the longest prefix (a conversation's next turn); else the least recently
/// used (an unused one first), so a new conversation does not evict one that may continue.
fn pick_slot(batch: &Batch, free: &[usize], last_used: &[u64], prompt: &[u32]) -> usize {
    let shared = |slot: usize| {
        batch
            .history(slot)
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
    };
    let continued = free
        .iter()
        .map(|&i| (shared(i), i))
        .filter(|&(n, i)| n > 0 && 2 * n >= batch.history(i).len())
        .max_by_key(|&(n, i)| (n, std::cmp::Reverse(last_used[i])));
    match continued {
        Some((_, i)) => i,
        None => *free
            .iter()
            .min_by_key(|&&i| last_used[i])
            .expect("at least one free slot"),
    }
}
