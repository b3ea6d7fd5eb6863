//! batch_processor: the bounded submission queue, dynamic batching and the
//! worker threads.
//!
//! - **Queue.** A `sync_channel` of `[batching] queue_capacity` *requests*;
//!   `try_send` on a full queue is an immediate
//!   [`PipelineError::Overloaded`], never a wait. A request of any size is
//!   one entry (a 10 000-item request is one job, run in chunks of the
//!   top-level `max_batch_size`); cap request sizes at the edge (the server's
//!   body limit) if that matters.
//! - **Batching.** A worker takes the first request, tokenizes it, then
//!   keeps taking requests while the batch stays within `max_batch_size`
//!   items and `max_batch_tokens` tokens, waiting at most `max_wait_ms`
//!   after the first. A request that would overflow the batch is kept for the
//!   next one (never split, never dropped). Requests whose ticket was dropped
//!   are skipped.
//! - **Isolation.** A request with a bad input fails alone, with the first
//!   bad input's index; the requests batched with it are unaffected. A failed
//!   forward pass fails the requests of that batch.
//! - **Threads.** `[batching] workers` threads (default 1) share the queue;
//!   one gathers at a time. Each ticks the liveness heartbeat on every queue
//!   poll (at least once a second when idle) and after every batch. A panic
//!   inside a batch fails that batch's requests
//!   ([`PipelineError::WorkerLost`]) and the worker carries on.
//! - **Shutdown.** Closing the queue lets the workers finish everything
//!   queued, then they exit and are joined.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use embeddings_metrics::PipelineMetrics;
use embeddings_types::{ErrorKind, Stage};

use crate::cache_manager::Key;
use crate::error::PipelineError;
use crate::options::{EmbedResponse, Resolved, SlotMask, Timings};
use crate::output::MultiEmbedding;
use crate::pipeline::{Engine, Item, micros};
use crate::ticket::Reply;

/// How long an idle worker waits on the queue before ticking the heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// One submitted request: the items that missed the cache, and the hits.
pub(crate) struct Job {
    /// Cache misses, in input order.
    pub(crate) items: Vec<Item>,
    /// `texts[i]` is the text of `items[i]`.
    pub(crate) texts: Vec<String>,
    /// `keys[i]` is the cache key of `items[i]`.
    pub(crate) keys: Vec<Option<Key>>,
    /// One per input: the cache hits, filled in; the misses, `None`.
    pub(crate) done: Vec<Option<MultiEmbedding>>,
    pub(crate) resolved: Resolved,
    pub(crate) submitted: Instant,
    pub(crate) reply: Reply,
    /// Set once tokenized: the transformer tokens of its valid items.
    tokens: Option<usize>,
    tokenize_time: Duration,
}

impl Job {
    pub(crate) fn new(
        items: Vec<Item>,
        texts: Vec<String>,
        keys: Vec<Option<Key>>,
        done: Vec<Option<MultiEmbedding>>,
        resolved: Resolved,
        submitted: Instant,
        reply: Reply,
    ) -> Self {
        Self {
            items,
            texts,
            keys,
            done,
            resolved,
            submitted,
            reply,
            tokens: None,
            tokenize_time: Duration::ZERO,
        }
    }

    fn tokenize(&mut self, engine: &Engine) {
        if self.tokens.is_some() {
            return;
        }
        let start = Instant::now();
        let texts: Vec<&str> = self.texts.iter().map(String::as_str).collect();
        let tokens = engine.tokenize(&mut self.items, &texts, self.resolved.run, engine.rec());
        self.tokens = Some(tokens);
        self.tokenize_time = start.elapsed();
    }

    /// The first bad input (all-or-nothing per request).
    fn first_error(&self) -> Option<PipelineError> {
        self.items.iter().find_map(|it| it.error.clone())
    }
}

/// The limits a worker batches by.
#[derive(Debug, Clone, Copy)]
struct Limits {
    items: usize,
    tokens: usize,
    wait: Duration,
}

struct Gather {
    rx: Receiver<Job>,
    /// A job taken from the queue that did not fit the last batch.
    carry: Option<Job>,
}

struct Shared {
    gather: Mutex<Gather>,
    alive: AtomicUsize,
    limits: Limits,
}

/// The queue and its workers.
pub(crate) struct BatchProcessor {
    sender: RwLock<Option<SyncSender<Job>>>,
    shared: Arc<Shared>,
    engine: Arc<Engine>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    started: AtomicBool,
    capacity: usize,
    workers: usize,
}

impl std::fmt::Debug for BatchProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchProcessor")
            .field("capacity", &self.capacity)
            .field("workers", &self.workers)
            .field("alive", &self.alive())
            .finish_non_exhaustive()
    }
}

impl BatchProcessor {
    /// A queue for `engine`, workers not started.
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        let b = engine.config.batching;
        let (tx, rx) = sync_channel(b.queue_capacity);
        let limits = Limits {
            items: engine.config.gather_limit(),
            tokens: b.max_batch_tokens,
            wait: Duration::from_millis(b.max_wait_ms),
        };
        Self {
            sender: RwLock::new(Some(tx)),
            shared: Arc::new(Shared {
                gather: Mutex::new(Gather { rx, carry: None }),
                alive: AtomicUsize::new(0),
                limits,
            }),
            engine,
            handles: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
            capacity: b.queue_capacity,
            workers: b.workers,
        }
    }

    /// Starts the workers (once).
    pub(crate) fn start(&self) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        for i in 0..self.workers {
            let engine = Arc::clone(&self.engine);
            let shared = Arc::clone(&self.shared);
            // Counted before the thread runs, so `alive` never under-reports a
            // worker that is starting.
            shared.alive.fetch_add(1, Ordering::SeqCst);
            let spawned = std::thread::Builder::new()
                .name(format!("embed-worker-{i}"))
                .spawn({
                    let shared = Arc::clone(&shared);
                    move || worker(&engine, &shared)
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(_) => {
                    // The OS refused a thread: health reports the missing worker.
                    shared.alive.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        if let Some(m) = self.engine.rec() {
            m.set_workers(self.alive() as u64);
        }
    }

    /// Queues `job`, or refuses it at once.
    pub(crate) fn enqueue(&self, job: Job) -> Result<(), PipelineError> {
        let guard = self.sender.read().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = guard.as_ref() else {
            return Err(PipelineError::ShutDown);
        };
        let rec = self.engine.rec();
        if let Some(m) = rec {
            m.queue_depth_inc();
        }
        let refused = match tx.try_send(job) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(_)) => PipelineError::Overloaded {
                capacity: self.capacity,
            },
            Err(TrySendError::Disconnected(_)) => PipelineError::ShutDown,
        };
        if let Some(m) = rec {
            m.queue_depth_dec();
        }
        Err(refused)
    }

    /// Whether submissions are accepted.
    pub(crate) fn accepting(&self) -> bool {
        self.sender
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Worker threads running.
    pub(crate) fn alive(&self) -> usize {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// Configured worker threads.
    pub(crate) fn workers(&self) -> usize {
        self.workers
    }

    /// Accepting, and every worker running.
    pub(crate) fn healthy(&self) -> bool {
        self.accepting() && self.alive() == self.workers
    }

    /// Closes the queue, lets the workers finish what is queued (starting
    /// them if they never were), and joins them. Idempotent.
    pub(crate) fn shutdown(&self) {
        let tx = self
            .sender
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(tx);
        self.start();
        let handles: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.handles.lock().unwrap_or_else(PoisonError::into_inner));
        for h in handles {
            // A worker that panicked outside a batch has already counted
            // itself out; there is nothing more to do with its result.
            let _ = h.join();
        }
    }
}

/// Counts a worker out when it exits (normally or by unwinding).
struct AliveGuard<'a> {
    shared: &'a Shared,
    engine: &'a Engine,
}

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        let left = self.shared.alive.fetch_sub(1, Ordering::SeqCst) - 1;
        if let Some(m) = self.engine.rec() {
            m.set_workers(left as u64);
        }
    }
}

enum Gathered {
    Batch(Vec<Job>),
    Idle,
    Closed,
}

fn worker(engine: &Engine, shared: &Shared) {
    let _guard = AliveGuard { shared, engine };
    loop {
        engine.state.progress_now();
        let step = catch_unwind(AssertUnwindSafe(|| match gather(engine, shared) {
            Gathered::Batch(jobs) => {
                run_batch(engine, jobs);
                true
            }
            Gathered::Idle => true,
            Gathered::Closed => false,
        }));
        match step {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => {
                // The batch's replies were dropped while unwinding: their
                // tickets answer `WorkerLost`.
                if let Some(m) = engine.rec() {
                    m.record_error_kind(ErrorKind::Internal, None);
                }
            }
        }
    }
}

/// Takes the next job from the carry slot or the queue, skipping abandoned ones.
fn take(engine: &Engine, g: &mut Gather, wait: Option<Duration>) -> Result<Job, Gathered> {
    loop {
        let job = match g.carry.take() {
            Some(j) => j,
            None => {
                let received = match wait {
                    None => g.rx.try_recv().map_err(|e| match e {
                        TryRecvError::Empty => Gathered::Idle,
                        TryRecvError::Disconnected => Gathered::Closed,
                    }),
                    Some(d) => g.rx.recv_timeout(d).map_err(|e| match e {
                        RecvTimeoutError::Timeout => Gathered::Idle,
                        RecvTimeoutError::Disconnected => Gathered::Closed,
                    }),
                }?;
                if let Some(m) = engine.rec() {
                    m.queue_depth_dec();
                }
                received
            }
        };
        if !job.reply.is_abandoned() {
            return Ok(job);
        }
    }
}

fn gather(engine: &Engine, shared: &Shared) -> Gathered {
    let mut g = shared.gather.lock().unwrap_or_else(PoisonError::into_inner);
    let limits = shared.limits;
    let mut first = match take(engine, &mut g, Some(HEARTBEAT)) {
        Ok(job) => job,
        Err(state) => return state,
    };
    first.tokenize(engine);
    let mut items = first.items.len();
    let mut tokens = first.tokens.unwrap_or(0);
    let mut batch = vec![first];
    let deadline = Instant::now() + limits.wait;
    while items < limits.items && tokens < limits.tokens {
        let next = match take(engine, &mut g, None) {
            Ok(job) => job,
            Err(Gathered::Idle) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match take(engine, &mut g, Some(left)) {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
            Err(_) => break,
        };
        let mut next = next;
        next.tokenize(engine);
        let (n, t) = (next.items.len(), next.tokens.unwrap_or(0));
        if items + n > limits.items || tokens + t > limits.tokens {
            g.carry = Some(next);
            break;
        }
        items += n;
        tokens += t;
        batch.push(next);
    }
    Gathered::Batch(batch)
}

fn run_batch(engine: &Engine, jobs: Vec<Job>) {
    let start = Instant::now();
    let rec = engine.rec();
    let mut runnable = Vec::with_capacity(jobs.len());
    for job in jobs {
        if let Some(m) = rec {
            m.record_stage(Stage::QueueWait, micros(start - job.submitted));
        }
        match job.first_error() {
            Some(e) => {
                engine.record_failure(&e, rec);
                job.reply.send(Err(e));
            }
            None => runnable.push(job),
        }
    }
    if runnable.is_empty() {
        return;
    }
    // One guard per job: dropped before that job's reply, and on unwinding
    // if `compute` panics (the worker survives that), so the gauge never leaks.
    let mut in_flight: Vec<_> = runnable
        .iter()
        .map(|_| rec.map(PipelineMetrics::track_in_flight))
        .collect();
    let mut run = SlotMask::empty();
    let mut fuse = false;
    let mut all: Vec<Item> = Vec::new();
    let mut spans: Vec<Range<usize>> = Vec::with_capacity(runnable.len());
    for job in &mut runnable {
        run = run.union(job.resolved.run);
        fuse |= job.resolved.fused;
        let from = all.len();
        all.append(&mut job.items);
        spans.push(from..all.len());
    }
    let compute_start = Instant::now();
    let result = engine.compute(&mut all, run, fuse, rec);
    let compute_time = compute_start.elapsed();
    if let Some(m) = rec {
        m.record_batch(all.len(), micros(compute_time));
    }
    let mut items = all.into_iter();
    for (mut job, span) in runnable.into_iter().zip(spans) {
        let job_items: Vec<Item> = items.by_ref().take(span.len()).collect();
        let queue_wait = start.saturating_duration_since(job.submitted);
        let inference = job.tokenize_time + compute_time;
        let mut fresh = Vec::new();
        let answer = match &result {
            Err(e) => Err(e.clone()),
            Ok(()) => finish_job(job_items, &mut job, &mut fresh),
        };
        // Cache before replying: a caller that resubmits the same inputs as
        // soon as its answer arrives must hit.
        engine.cache_put(fresh);
        let total = job.submitted.elapsed();
        match &answer {
            Ok(done) => {
                engine.state.embedded_now();
                if let Some(m) = rec {
                    for _ in done {
                        m.record_embedding(micros(total));
                    }
                }
            }
            Err(e) => {
                if result.is_ok() {
                    engine.record_failure(e, rec);
                }
            }
        }
        // Everything about this job is recorded before its reply goes out, so
        // a caller that reads the metrics as soon as it has its answer sees
        // them settled (no longer in flight, counted, cached, and the last
        // embedding time updated).
        drop(in_flight.pop());
        let Job { reply, .. } = job;
        reply.send(answer.map(|embeddings| EmbedResponse {
            embeddings,
            timings: Timings {
                queue_wait,
                inference,
                total,
            },
        }));
    }
}

/// Fills a job's misses into its answer; collects new cache entries.
fn finish_job(
    items: Vec<Item>,
    job: &mut Job,
    fresh: &mut Vec<(Key, MultiEmbedding)>,
) -> Result<Vec<MultiEmbedding>, PipelineError> {
    let mut done = std::mem::take(&mut job.done);
    for (item, key) in items.into_iter().zip(&job.keys) {
        let index = item.index;
        let out = Engine::finish(item, &job.resolved)?;
        if let Some(k) = key {
            fresh.push((*k, out.clone()));
        }
        if let Some(slot) = done.get_mut(index) {
            *slot = Some(out);
        }
    }
    done.into_iter()
        .map(|d| d.ok_or(PipelineError::WorkerLost))
        .collect()
}
