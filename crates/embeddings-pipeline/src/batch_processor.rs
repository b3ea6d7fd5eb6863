//! batch_processor: the bounded submission queue, dynamic batching and the
//! worker threads.
//!
//! - **Queue.** A submission is admitted by work, then by count, or
//!   refused at once (never a wait): its cost in tokens must fit what is
//!   left of `[batching] token_budget` (`admission.rs`: the tokens are
//!   given back when its answer goes out), and at most
//!   `[batching] queue_capacity` requests wait
//!   ([`PipelineError::Overloaded`]). The count is one atomic counter,
//!   which is also what the `queue_depth` gauge shows: it is in the unit
//!   of the limit and never above it. A large request is one entry, run in
//!   chunks of the top-level `max_batch_size`.
//! - **Batching.** A worker takes the first request, tokenizes it, then
//!   keeps taking requests while the batch stays within `max_batch_size`
//!   items and `max_batch_tokens` tokens, waiting at most `max_wait_ms`
//!   after the first. A request that would overflow the batch is kept for the
//!   next one (never split, never dropped).
//! - **Work nobody waits for.** A request taken from the queue past its
//!   deadline, or whose ticket was dropped, is not run: it is answered
//!   [`PipelineError::DeadlineExceeded`] or counted `cancelled`. A request
//!   whose caller left while it ran is neither cached nor counted as
//!   served (see `request.rs`).
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

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use embeddings_metrics::PipelineMetrics;
use embeddings_types::{ErrorKind, Stage};

use crate::admission::{Budget, Permit};
use crate::engine::Engine;
use crate::error::PipelineError;
use crate::request::{self, Caller, Request};
use crate::ticket::Reply;

/// How long an idle worker waits on the queue before ticking the heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// One queued request and where its answer goes.
pub(crate) struct Job {
    pub(crate) request: Request,
    pub(crate) reply: Reply,
    /// When it entered the queue.
    enqueued: Instant,
    /// Its tokens in the budget, given back once it has been answered.
    permit: Option<Permit>,
}

impl Job {
    pub(crate) fn new(request: Request, reply: Reply) -> Self {
        Self {
            request,
            reply,
            enqueued: Instant::now(),
            permit: None,
        }
    }

    /// Answers a job that will not run because its caller is gone; the
    /// `timeout` or `cancelled` is counted in `finish`.
    fn drop_unrun(self, engine: &Engine, caller: Caller) {
        let Self {
            request,
            reply,
            permit,
            ..
        } = self;
        let answer = request::response(request.finish(engine, Ok(()), caller));
        // Given back before the answer: whoever has its answer sees the
        // budget without it.
        drop(permit);
        reply.send(answer);
    }
}

/// Whether the caller of a request with `deadline` answered through `reply`
/// still waits. Past the deadline is a timeout (whoever dropped the ticket
/// then, it was the deadline); before it, a dropped ticket is a
/// cancellation. `commit` makes the answer final: only when about to answer.
fn caller(deadline: Option<Instant>, reply: &Reply, commit: bool) -> Caller {
    let gone = if commit {
        !reply.commit()
    } else {
        reply.is_abandoned()
    };
    if deadline.is_some_and(|d| Instant::now() >= d) {
        Caller::TimedOut
    } else if gone {
        Caller::Cancelled
    } else {
        Caller::Waiting
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
    /// Requests admitted and not yet taken by a worker: the admission
    /// counter (never above `capacity`) and the `queue_depth` gauge's value.
    queued: AtomicUsize,
    capacity: usize,
    /// Admission by work: tokens admitted and not yet answered.
    budget: Arc<Budget>,
    limits: Limits,
}

impl Shared {
    /// Takes one request out of the admission count.
    fn dequeued(&self, engine: &Engine) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
        self.publish_depth(engine);
    }

    /// Writes the admission count to the gauge. Two threads may write in
    /// either order, so each re-reads the count after writing (the gauge's
    /// store and this fence are sequentially consistent) and writes again
    /// if it moved: the last writer leaves the true value. Every value
    /// written was true at some moment, so the gauge and its max never
    /// exceed the capacity; each admission also writes the depth it made,
    /// so the max misses no peak.
    fn publish_depth(&self, engine: &Engine) {
        let Some(m) = engine.rec() else {
            return;
        };
        loop {
            let depth = self.queued.load(Ordering::SeqCst);
            m.set_queue_depth(depth as u64);
            fence(Ordering::SeqCst);
            if self.queued.load(Ordering::SeqCst) == depth {
                break;
            }
        }
    }
}

/// The queue and its workers.
pub(crate) struct BatchProcessor {
    sender: RwLock<Option<SyncSender<Job>>>,
    shared: Arc<Shared>,
    engine: Arc<Engine>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    started: AtomicBool,
    workers: usize,
}

impl std::fmt::Debug for BatchProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchProcessor")
            .field("capacity", &self.shared.capacity)
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
                queued: AtomicUsize::new(0),
                capacity: b.queue_capacity,
                budget: Arc::new(Budget::new(b.token_budget)),
                limits,
            }),
            engine,
            handles: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
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

    /// Queues `job`, which costs `tokens` of the budget, or refuses it at
    /// once (the caller counts the refusal): the budget is checked first,
    /// then the queue's capacity.
    pub(crate) fn enqueue(&self, mut job: Job, tokens: usize) -> Result<(), PipelineError> {
        let guard = self.sender.read().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = guard.as_ref() else {
            return Err(PipelineError::ShutDown);
        };
        let shared = &*self.shared;
        let permit = shared.budget.admit(tokens)?;
        let overloaded = PipelineError::Overloaded {
            capacity: shared.capacity,
        };
        let Ok(before) = shared
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q < shared.capacity).then_some(q + 1)
            })
        else {
            permit.revoke();
            return Err(overloaded);
        };
        job.permit = Some(permit);
        let (refused, job) = match tx.try_send(job) {
            Ok(()) => {
                // The depth this admission made was true when it was made:
                // it raises the max even if workers take requests before the
                // publication below.
                if let Some(m) = self.engine.rec() {
                    m.set_queue_depth((before + 1) as u64);
                }
                shared.publish_depth(&self.engine);
                return Ok(());
            }
            // The channel holds at most the admitted requests, so it is
            // never full here; kept as a refusal rather than a panic.
            Err(TrySendError::Full(job)) => (overloaded, job),
            Err(TrySendError::Disconnected(job)) => (PipelineError::ShutDown, job),
        };
        if let Some(permit) = job.permit {
            permit.revoke();
        }
        shared.dequeued(&self.engine);
        Err(refused)
    }

    /// Whether submissions are accepted.
    pub(crate) fn accepting(&self) -> bool {
        self.sender
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Tokens admitted and not yet answered.
    pub(crate) fn tokens_admitted(&self) -> usize {
        self.shared.budget.in_use()
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
                    m.record_failure(ErrorKind::Internal, &[]);
                }
            }
        }
    }
}

/// Takes the next job from the carry slot or the queue. A job whose caller
/// is gone is answered and counted here, not run.
fn take(
    engine: &Engine,
    shared: &Shared,
    g: &mut Gather,
    wait: Option<Duration>,
) -> Result<Job, Gathered> {
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
                shared.dequeued(engine);
                let mut received = received;
                // Set once, when it leaves the queue: a job carried to the
                // next batch has already waited (and been tokenized).
                let waited = received.enqueued.elapsed();
                received.request.timings.queue_wait = waited;
                if let Some(m) = engine.rec() {
                    m.record_stage_duration(Stage::QueueWait, waited);
                }
                received
            }
        };
        match caller(job.request.deadline, &job.reply, false) {
            Caller::Waiting => return Ok(job),
            gone => job.drop_unrun(engine, gone),
        }
    }
}

fn gather(engine: &Engine, shared: &Shared) -> Gathered {
    let mut g = shared.gather.lock().unwrap_or_else(PoisonError::into_inner);
    let limits = shared.limits;
    let mut first = match take(engine, shared, &mut g, Some(HEARTBEAT)) {
        Ok(job) => job,
        Err(state) => return state,
    };
    let mut tokens = first.request.tokenize(engine);
    let mut items = first.request.pending();
    let mut batch = vec![first];
    let deadline = Instant::now() + limits.wait;
    while items < limits.items && tokens < limits.tokens {
        let next = match take(engine, shared, &mut g, None) {
            Ok(job) => job,
            Err(Gathered::Idle) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match take(engine, shared, &mut g, Some(left)) {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
            Err(_) => break,
        };
        let mut next = next;
        let t = next.request.tokenize(engine);
        let n = next.request.pending();
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
    let rec = engine.rec();
    let mut requests = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    // Each given back just before its reply (and all of them if `compute`
    // unwinds).
    let mut permits = Vec::with_capacity(jobs.len());
    for job in jobs {
        // All-or-nothing: a rejected input fails its request alone, unless
        // its caller has gone meanwhile (then that is what is counted).
        if let Some(e) = job.request.rejected() {
            match caller(job.request.deadline, &job.reply, true) {
                Caller::Waiting => {
                    let Job { reply, permit, .. } = job;
                    let answer = Err(engine.reject(e));
                    drop(permit);
                    reply.send(answer);
                }
                gone => job.drop_unrun(engine, gone),
            }
            continue;
        }
        let Job {
            request,
            reply,
            permit,
            ..
        } = job;
        requests.push(request);
        replies.push(reply);
        permits.push(permit);
    }
    if requests.is_empty() {
        return;
    }
    // One guard per request: dropped before its reply, and on unwinding if
    // `compute` panics (the worker survives that), so the gauge never leaks.
    let mut in_flight: Vec<_> = requests
        .iter()
        .map(|_| rec.map(PipelineMetrics::track_in_flight))
        .collect();
    let computed = Request::compute_together(engine, &mut requests);
    for ((request, reply), permit) in requests.into_iter().zip(replies).zip(permits) {
        let caller = caller(request.deadline, &reply, true);
        // Everything about this request is recorded (and cached) before its
        // reply goes out, so a caller that reads the metrics as soon as it
        // has its answer sees them settled.
        let answer = request::response(request.finish(engine, computed.clone(), caller));
        drop(in_flight.pop());
        drop(permit);
        reply.send(answer);
    }
}
