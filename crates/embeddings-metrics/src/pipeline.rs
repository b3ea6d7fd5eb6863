//! [`PipelineMetrics`]: the recorder.
//!
//! # Size
//! ~760 lines, over the workspace's ~700: the recorder's struct, its
//! construction, reset and every `record_*` method (the spec's contract and
//! the additions, each a few lines over the same stripes); reading lives in
//! `read.rs` and exposition in `expose.rs`.

use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use embeddings_types::{ErrorKind, ModelId, Stage};

use crate::MetricsError;
use crate::clock::Clock;
use crate::config::MetricsConfig;
use crate::ema::Ema;
use crate::encode::ExportBounds;
use crate::exemplar::Exemplars;
use crate::expose::Exposition;
use crate::gauges::{Gauges, InFlightGuard, MemoryGauge};
use crate::histogram::Histogram;
use crate::read::hit_rate;
use crate::shard::{self, STRIPES, Shard};
use crate::window::Window;

const MODELS: usize = ModelId::COUNT;
pub(crate) const KINDS: usize = ErrorKind::COUNT;
const STAGES: usize = Stage::COUNT;
pub(crate) const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The plain counters of one stripe (also the shape of the reset baseline).
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) embeddings: AtomicU64,
    pub(crate) inputs_served: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) cache_evictions: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) batch_items: AtomicU64,
    pub(crate) errors: [AtomicU64; KINDS],
    pub(crate) model_requests: [AtomicU64; MODELS],
    pub(crate) model_errors: [[AtomicU64; KINDS]; MODELS],
    pub(crate) empty_inputs: AtomicU64,
    pub(crate) model_truncated_inputs: [AtomicU64; MODELS],
    pub(crate) model_truncated_tokens: [AtomicU64; MODELS],
    pub(crate) model_unknown_tokens: [AtomicU64; MODELS],
}

fn zeros<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

impl Counters {
    fn new() -> Self {
        Self {
            embeddings: AtomicU64::new(0),
            inputs_served: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            cache_evictions: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_items: AtomicU64::new(0),
            errors: zeros(),
            model_requests: zeros(),
            model_errors: std::array::from_fn(|_| zeros()),
            empty_inputs: AtomicU64::new(0),
            model_truncated_inputs: zeros(),
            model_truncated_tokens: zeros(),
            model_unknown_tokens: zeros(),
        }
    }
}

/// What one thread stripe holds. Only the stripe's owner writes its counters
/// (with a load and a store, see [`Shard::add`]), except in the shared
/// overflow stripe, written with `fetch_add`; readers sum all stripes.
/// Cells within a stripe may share cache lines — they are written by the
/// same thread — but stripes never do.
#[derive(Debug)]
pub(crate) struct CounterStripe {
    pub(crate) counters: Counters,
    pub(crate) embedding_window: Window,
    pub(crate) error_window: Window,
}

impl CounterStripe {
    fn new() -> Self {
        Self {
            counters: Counters::new(),
            embedding_window: Window::new(),
            error_window: Window::new(),
        }
    }
}

/// Lifetime counter totals, summed over stripes.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) embeddings: u64,
    pub(crate) inputs_served: u64,
    pub(crate) cache_hits: u64,
    pub(crate) cache_misses: u64,
    pub(crate) cache_evictions: u64,
    pub(crate) batches: u64,
    pub(crate) batch_items: u64,
    pub(crate) errors: [u64; KINDS],
    pub(crate) model_requests: [u64; MODELS],
    pub(crate) model_errors: [[u64; KINDS]; MODELS],
    pub(crate) empty_inputs: u64,
    pub(crate) model_truncated_inputs: [u64; MODELS],
    pub(crate) model_truncated_tokens: [u64; MODELS],
    pub(crate) model_unknown_tokens: [u64; MODELS],
}

impl Totals {
    /// Calls `f(value, cell)` for every counter and its cell in `c`.
    #[inline]
    pub(crate) fn zip_cells(&mut self, c: &Counters, mut f: impl FnMut(&mut u64, &AtomicU64)) {
        f(&mut self.embeddings, &c.embeddings);
        f(&mut self.inputs_served, &c.inputs_served);
        f(&mut self.cache_hits, &c.cache_hits);
        f(&mut self.cache_misses, &c.cache_misses);
        f(&mut self.cache_evictions, &c.cache_evictions);
        f(&mut self.batches, &c.batches);
        f(&mut self.batch_items, &c.batch_items);
        for (v, cell) in self.errors.iter_mut().zip(&c.errors) {
            f(v, cell);
        }
        for (v, cell) in self.model_requests.iter_mut().zip(&c.model_requests) {
            f(v, cell);
        }
        for (vs, cells) in self.model_errors.iter_mut().zip(&c.model_errors) {
            for (v, cell) in vs.iter_mut().zip(cells) {
                f(v, cell);
            }
        }
        f(&mut self.empty_inputs, &c.empty_inputs);
        for (values, cells) in [
            (&mut self.model_truncated_inputs, &c.model_truncated_inputs),
            (&mut self.model_truncated_tokens, &c.model_truncated_tokens),
            (&mut self.model_unknown_tokens, &c.model_unknown_tokens),
        ] {
            for (v, cell) in values.iter_mut().zip(cells) {
                f(v, cell);
            }
        }
    }

    /// Adds (wrapping) every cell of `c`.
    #[inline]
    pub(crate) fn add_cells(&mut self, c: &Counters) {
        self.zip_cells(c, |v, cell| {
            *v = v.wrapping_add(cell.load(Ordering::Relaxed));
        });
    }
}

/// Lock-free metrics for the embedding pipeline: counters, gauges, latency
/// histograms, moving averages and windowed rates, read out as a
/// [`MetricsSnapshot`](embeddings_types::MetricsSnapshot) or as Prometheus / OpenMetrics text.
///
/// Share it behind an `Arc` (or use [`global`](crate::global)). Every
/// recording method takes `&self`, never blocks, never allocates after the
/// first record into a histogram range, and never panics, whatever the input.
///
/// # Storage is private
/// The reference spec showed public atomic fields. Here storage is private
/// and read through methods and [`snapshot`](Self::snapshot), so the
/// representation can serve the performance design: counters are striped per
/// thread ([`CachePadded`] stripes, summed on read), latencies live in
/// log-linear histograms, and per-model figures live in arrays indexed by
/// [`ModelId::index`] (never a map on the recording path).
///
/// # Averages
/// [`average_latency_us`](Self::average_latency_us) and the snapshot's
/// `avg_latency_us` / `model_latencies` are exponential moving averages with
/// weight [`MetricsConfig::ema_alpha`] (default 0.1) per sample, updated by a
/// CAS loop on the `f64` bits so concurrent updates are never lost. The first
/// sample sets the average. `mean_latency_us` is the exact lifetime mean
/// (sum / count).
///
/// # Errors
/// One failure is one event, counted once:
/// [`record_failure`](Self::record_failure)`(kind, slots)` adds 1 to
/// `errors_by_kind[kind]` (so `errors == sum(errors_by_kind)` always) and 1
/// to each listed slot's `errors_by_kind[kind]` — a forward pass that fails
/// while serving seven slots is one error, attributed to seven slots.
/// [`record_error`](Self::record_error), which carries no cause, counts as
/// [`ErrorKind::Internal`]. Per model `failures == sum(errors_by_kind)` and
/// `timeouts == errors_by_kind[Timeout]`.
///
/// Only failures of the service itself
/// ([`ErrorKind::is_service_failure`]: inference, timeout, internal) feed
/// the 60-second error rate that health rules judge; client errors
/// (validation, tokenization, overload, cancelled) are counted by kind but
/// never move it.
///
/// # Counter wrap
/// Counters and histogram sums wrap at 2^64 like Prometheus counters
/// (Prometheus' `rate()` reads the drop as a reset). At a million events a
/// second a counter wraps after 584 000 years; a latency sum in µs, after
/// ~584 000 years of summed latency.
///
/// # Reset
/// [`reset`](Self::reset) zeroes every counter, histogram, average and rate
/// window, restarts uptime, and restarts `queue_depth_max` from the current
/// depth. It leaves the current-state gauges alone (queue depth, in flight,
/// workers, memory figures): they describe the world, not the past.
/// Counters are not zeroed in place (their owners update them with a plain
/// load and store, which a racing store of 0 could undo): the reset records
/// the totals it sees as a baseline, and every read subtracts it. Histogram
/// cells, averages and rate windows are zeroed atomically, cell by cell.
/// The reset as a whole is **not** atomic across cells: a record racing with
/// a reset may survive it in part (for example counted in
/// `embeddings_generated` but not in the latency histogram), and a snapshot
/// racing with a reset may see some cells before and some after it. Once
/// concurrent writers stop, totals are exact.
///
/// # Snapshots
/// Reading never blocks writers: it loads every cell once. A snapshot taken
/// during writes is not a consistent cut across cells (each value is exact at
/// the moment it was read); one taken after writers stop is exact.
#[derive(Debug)]
pub struct PipelineMetrics {
    pub(crate) config: MetricsConfig,
    pub(crate) clock: Clock,
    /// Clock reading (ns) at creation or the last reset.
    start_nanos: AtomicU64,
    pub(crate) stripes: Box<[CachePadded<CounterStripe>; STRIPES]>,
    /// Counter totals at the last reset; reads subtract them (see
    /// [Reset](Self#reset)).
    pub(crate) baseline: Box<Counters>,
    /// Serialises resets: two overlapping ones could otherwise store their
    /// baselines out of order (an older, smaller total last), and counts
    /// already reset would reappear. Recording never takes it.
    reset_lock: Mutex<()>,
    pub(crate) latency_ema: CachePadded<Ema>,
    pub(crate) model_ema: [CachePadded<Ema>; MODELS],
    pub(crate) latency: Histogram,
    /// The latest request id per exported bucket of `latency`.
    pub(crate) latency_exemplars: Exemplars,
    pub(crate) model_latency: [Histogram; MODELS],
    pub(crate) stage_latency: [Histogram; STAGES],
    pub(crate) batch_latency: Histogram,
    pub(crate) batch_size: Histogram,
    /// Tokens per computed input, per slot (before truncation).
    pub(crate) input_tokens: [Histogram; MODELS],
    pub(crate) gauges: Gauges,
    /// Families, label sets and `le` texts of the exposition, prepared once.
    pub(crate) exposition: Exposition,
    /// Length of the last rendering, to pre-size the next one.
    pub(crate) render_hint: AtomicU64,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PipelineMetrics {
    /// A recorder with [`MetricsConfig::default`] and the monotonic clock.
    #[must_use]
    pub fn new() -> Self {
        // The default config is valid (asserted in tests/recording.rs), so the
        // unvalidated constructor is sound here and `new` stays infallible.
        Self::build(MetricsConfig::default(), Clock::monotonic())
    }

    /// A recorder with `config`.
    ///
    /// # Errors
    /// The config's validation error, if any (see [`MetricsConfig::validate`]).
    pub fn with_config(config: MetricsConfig) -> Result<Self, MetricsError> {
        Self::with_config_and_clock(config, Clock::monotonic())
    }

    /// A recorder with `config` reading time from `clock` (for example a
    /// [`Clock::manual`] clock in tests).
    ///
    /// # Errors
    /// The config's validation error, if any.
    pub fn with_config_and_clock(
        config: MetricsConfig,
        clock: Clock,
    ) -> Result<Self, MetricsError> {
        config.validate()?;
        Ok(Self::build(config, clock))
    }

    fn build(config: MetricsConfig, clock: Clock) -> Self {
        let bits = config.histogram_precision_bits;
        let histogram = || Histogram::with_bits(bits);
        let start = clock.now_nanos();
        Self {
            exposition: Exposition::new(&config),
            clock,
            start_nanos: AtomicU64::new(start),
            stripes: Box::new(std::array::from_fn(|_| {
                CachePadded::new(CounterStripe::new())
            })),
            baseline: Box::new(Counters::new()),
            reset_lock: Mutex::new(()),
            latency_ema: CachePadded::new(Ema::new()),
            model_ema: std::array::from_fn(|_| CachePadded::new(Ema::new())),
            latency: histogram(),
            latency_exemplars: Exemplars::new(&ExportBounds::unchecked(
                &config.latency_bounds_us,
                6,
                bits,
            )),
            model_latency: std::array::from_fn(|_| histogram()),
            stage_latency: std::array::from_fn(|_| histogram()),
            batch_latency: histogram(),
            batch_size: histogram(),
            input_tokens: std::array::from_fn(|_| histogram()),
            gauges: Gauges::new(),
            render_hint: AtomicU64::new(0),
            config,
        }
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &MetricsConfig {
        &self.config
    }

    /// The calling thread's shard and its stripe.
    #[inline]
    fn stripe(&self) -> (Shard, &CounterStripe) {
        let shard = shard::current();
        // `Shard::stripe` is at most `OVERFLOW = STRIPES - 1`: always in range.
        (shard, &self.stripes[shard.stripe()])
    }

    #[inline]
    fn now_second(&self) -> u64 {
        self.clock.now_nanos() / NANOS_PER_SEC
    }

    // ----- the spec's contract -------------------------------------------

    /// Records one embedding produced successfully in `latency_us` µs: counts
    /// it (lifetime and windowed throughput), adds the latency to the latency
    /// histogram, the exact mean and the moving average.
    ///
    /// Reads the clock once (for the windowed rates).
    #[inline]
    pub fn record_embedding(&self, latency_us: u64) {
        let (shard, stripe) = self.stripe();
        shard.add(&stripe.counters.embeddings, 1);
        stripe.embedding_window.record(self.now_second());
        self.latency.record(latency_us);
        self.latency_ema.record(latency_us, self.config.ema_alpha);
    }

    /// Counts an embedding-cache hit.
    #[inline]
    pub fn record_cache_hit(&self) {
        let (shard, stripe) = self.stripe();
        shard.add(&stripe.counters.cache_hits, 1);
    }

    /// Counts an embedding-cache miss.
    #[inline]
    pub fn record_cache_miss(&self) {
        let (shard, stripe) = self.stripe();
        shard.add(&stripe.counters.cache_misses, 1);
    }

    /// Counts an error without a known cause, as [`ErrorKind::Internal`] (so
    /// `errors == sum(errors_by_kind)`). Prefer
    /// [`record_error_kind`](Self::record_error_kind).
    #[inline]
    pub fn record_error(&self) {
        self.record_error_kind(ErrorKind::Internal, None);
    }

    /// Records `latency_us` µs spent by `model_id`: its histogram and moving
    /// average. Does not count a request (see
    /// [`record_model_request`](Self::record_model_request)).
    #[inline]
    pub fn record_model_latency(&self, model_id: ModelId, latency_us: u64) {
        if let Some(h) = self.model_latency.get(model_id.index()) {
            h.record(latency_us);
        }
        if let Some(ema) = self.model_ema.get(model_id.index()) {
            ema.record(latency_us, self.config.ema_alpha);
        }
    }

    /// Records a processed batch of `batch_size` items that took
    /// `total_latency_us` µs: batch and item counters, the batch-size and
    /// batch-latency histograms. Does not count embeddings (record those with
    /// [`record_embedding`](Self::record_embedding)). Sizes beyond `u64`
    /// saturate.
    #[inline]
    pub fn record_batch(&self, batch_size: usize, total_latency_us: u64) {
        let size = u64::try_from(batch_size).unwrap_or(u64::MAX);
        let (shard, stripe) = self.stripe();
        shard.add(&stripe.counters.batches, 1);
        shard.add(&stripe.counters.batch_items, size);
        self.batch_size.record(size);
        self.batch_latency.record(total_latency_us);
    }

    /// `hits / (hits + misses)` in `0.0..=1.0`; 0.0 before any lookup.
    #[must_use]
    pub fn cache_hit_rate(&self) -> f64 {
        let base_hits = self.baseline.cache_hits.load(Ordering::Acquire);
        let base_misses = self.baseline.cache_misses.load(Ordering::Acquire);
        let (hits, misses) = self.stripes.iter().fold((0u64, 0u64), |(h, m), s| {
            (
                h.wrapping_add(s.counters.cache_hits.load(Ordering::Relaxed)),
                m.wrapping_add(s.counters.cache_misses.load(Ordering::Relaxed)),
            )
        });
        hit_rate(
            hits.wrapping_sub(base_hits),
            misses.wrapping_sub(base_misses),
        )
    }

    /// The moving average of embedding latency, µs (0 before any record).
    #[must_use]
    pub fn average_latency_us(&self) -> u64 {
        self.latency_ema.get_within(self.latency.min_max())
    }

    /// Lifetime throughput: embeddings per second since creation or reset
    /// (0.0 when no time has passed).
    #[must_use]
    pub fn throughput(&self) -> f64 {
        self.rates().throughput
    }

    /// Zeroes everything accumulated; see [Reset](Self#reset) for what is
    /// and is not atomic.
    pub fn reset(&self) {
        let _serial = self
            .reset_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Counters are not written here: an owner's load-and-store racing
        // with a store of 0 could undo it. The totals seen now become the
        // baseline that every read subtracts (Release pairs with the
        // readers' Acquire, so they read cells at least this new).
        let mut raw = self.raw_totals();
        fence(Ordering::Release);
        raw.zip_cells(&self.baseline, |v, cell| cell.store(*v, Ordering::Relaxed));
        for stripe in self.stripes.iter() {
            stripe.embedding_window.reset();
            stripe.error_window.reset();
        }
        self.latency_ema.reset();
        for ema in &self.model_ema {
            ema.reset();
        }
        self.latency_exemplars.reset();
        for h in self.histograms() {
            h.reset();
        }
        self.gauges.reset_max();
        self.start_nanos
            .store(self.clock.now_nanos(), Ordering::Relaxed);
    }

    // ----- beyond the spec -----------------------------------------------

    /// [`record_embedding`](Self::record_embedding) with a [`Duration`].
    #[inline]
    pub fn record_embedding_duration(&self, latency: Duration) {
        self.record_embedding(duration_micros(latency));
    }

    /// [`record_embedding_duration`](Self::record_embedding_duration), keeping
    /// `request_id` as the OpenMetrics exemplar of the latency bucket the
    /// value falls in (see [`Exemplars::record`] for when it is not kept).
    #[inline]
    pub fn record_embedding_for(&self, latency: Duration, request_id: &str) {
        let micros = duration_micros(latency);
        self.record_embedding(micros);
        self.latency_exemplars.record(micros, request_id);
    }

    /// The exemplars of the embedding-latency histogram.
    #[must_use]
    pub fn latency_exemplars(&self) -> &Exemplars {
        &self.latency_exemplars
    }

    /// [`record_model_latency`](Self::record_model_latency) with a [`Duration`].
    #[inline]
    pub fn record_model_latency_duration(&self, model_id: ModelId, latency: Duration) {
        self.record_model_latency(model_id, duration_micros(latency));
    }

    /// [`record_batch`](Self::record_batch) with a [`Duration`].
    #[inline]
    pub fn record_batch_duration(&self, batch_size: usize, latency: Duration) {
        self.record_batch(batch_size, duration_micros(latency));
    }

    /// [`record_stage`](Self::record_stage) with a [`Duration`].
    #[inline]
    pub fn record_stage_duration(&self, stage: Stage, latency: Duration) {
        self.record_stage(stage, duration_micros(latency));
    }

    /// Counts `n` inputs answered successfully (cache hits included): the
    /// `inputs_served` figure. An input is served once, whatever number of
    /// slots it returned.
    #[inline]
    pub fn record_served(&self, n: u64) {
        let (shard, stripe) = self.stripe();
        shard.add(&stripe.counters.inputs_served, n);
    }

    /// Records `latency_us` µs spent in `stage`.
    #[inline]
    pub fn record_stage(&self, stage: Stage, latency_us: u64) {
        if let Some(h) = self.stage_latency.get(stage.index()) {
            h.record(latency_us);
        }
    }

    /// Counts one error of `kind`, attributed to `model` when known; the
    /// same as [`record_failure`](Self::record_failure)`(kind, &[model])`.
    #[inline]
    pub fn record_error_kind(&self, kind: ErrorKind, model: Option<ModelId>) {
        self.record_failure(kind, model.as_slice());
    }

    /// Counts **one** failure of `kind` (once in `errors_by_kind`, whatever
    /// the number of slots), attributed to each slot in `slots` (once per
    /// slot in that slot's figures). A service failure
    /// ([`ErrorKind::is_service_failure`]) also feeds the 60-second error
    /// rate; a client error does not.
    #[inline]
    pub fn record_failure(&self, kind: ErrorKind, slots: &[ModelId]) {
        let (shard, stripe) = self.stripe();
        if let Some(cell) = stripe.counters.errors.get(kind.index()) {
            shard.add(cell, 1);
        }
        for model in slots {
            if let Some(cell) = stripe
                .counters
                .model_errors
                .get(model.index())
                .and_then(|m| m.get(kind.index()))
            {
                shard.add(cell, 1);
            }
        }
        if kind.is_service_failure() {
            stripe.error_window.record(self.now_second());
        }
    }

    /// Records one computed input as `model`'s tokenizer saw it: `tokens`
    /// (special tokens included, before truncation), of which `dropped` were
    /// cut to fit the model (the input counts as truncated when `dropped >
    /// 0`) and `unknown` were the tokenizer's unknown token. Called once per
    /// input and slot, by the tokenization stage.
    #[inline]
    pub fn record_input_tokens(&self, model: ModelId, tokens: u64, dropped: u64, unknown: u64) {
        let i = model.index();
        if let Some(h) = self.input_tokens.get(i) {
            h.record(tokens);
        }
        let (shard, stripe) = self.stripe();
        let c = &stripe.counters;
        if dropped > 0 {
            if let Some(cell) = c.model_truncated_inputs.get(i) {
                shard.add(cell, 1);
            }
            if let Some(cell) = c.model_truncated_tokens.get(i) {
                shard.add(cell, dropped);
            }
        }
        if unknown > 0
            && let Some(cell) = c.model_unknown_tokens.get(i)
        {
            shard.add(cell, unknown);
        }
    }

    /// Counts one input that was empty or only whitespace (accepted: a
    /// rejected one is a `validation` error).
    #[inline]
    pub fn record_empty_input(&self) {
        let (shard, stripe) = self.stripe();
        shard.add(&stripe.counters.empty_inputs, 1);
    }

    /// Counts a request routed to `model`.
    #[inline]
    pub fn record_model_request(&self, model: ModelId) {
        let (shard, stripe) = self.stripe();
        if let Some(cell) = stripe.counters.model_requests.get(model.index()) {
            shard.add(cell, 1);
        }
    }

    /// Counts a failure of `model` of `kind` (a timeout when `kind` is
    /// [`ErrorKind::Timeout`]); the same as
    /// [`record_error_kind`](Self::record_error_kind)`(kind, Some(model))`.
    #[inline]
    pub fn record_model_failure(&self, model: ModelId, kind: ErrorKind) {
        self.record_error_kind(kind, Some(model));
    }

    /// Counts `n` entries evicted from the embedding cache.
    #[inline]
    pub fn record_cache_eviction(&self, n: u64) {
        let (shard, stripe) = self.stripe();
        shard.add(&stripe.counters.cache_evictions, n);
    }

    /// Adds one item to the queue-depth gauge (and raises its max).
    #[inline]
    pub fn queue_depth_inc(&self) {
        self.gauges.queue_add(1);
    }

    /// Removes one item from the queue-depth gauge. Reads clamp at 0, so an
    /// unmatched decrement never shows as a huge depth.
    #[inline]
    pub fn queue_depth_dec(&self) {
        self.gauges.queue_add(-1);
    }

    /// Sets the queue depth (and raises its max).
    pub fn set_queue_depth(&self, depth: u64) {
        self.gauges.queue_set(depth);
    }

    /// The current queue depth.
    #[must_use]
    pub fn queue_depth(&self) -> u64 {
        self.gauges.queue_depth()
    }

    /// Counts one request in flight until the returned guard drops.
    ///
    /// ```
    /// let metrics = embeddings_metrics::PipelineMetrics::new();
    /// {
    ///     let _guard = metrics.track_in_flight();
    ///     assert_eq!(metrics.snapshot().gauges.in_flight, 1);
    /// }
    /// assert_eq!(metrics.snapshot().gauges.in_flight, 0);
    /// ```
    pub fn track_in_flight(&self) -> InFlightGuard<'_> {
        InFlightGuard::new(&self.gauges)
    }

    /// Adds one in-flight request (pair with [`in_flight_dec`](Self::in_flight_dec),
    /// or use [`track_in_flight`](Self::track_in_flight)).
    #[inline]
    pub fn in_flight_inc(&self) {
        self.gauges.in_flight_add(1);
    }

    /// Removes one in-flight request (reads clamp at 0).
    #[inline]
    pub fn in_flight_dec(&self) {
        self.gauges.in_flight_add(-1);
    }

    /// Sets the number of worker threads.
    pub fn set_workers(&self, workers: u64) {
        self.gauges.set_workers(workers);
    }

    /// Sets (`Some`) or clears (`None`) a caller-measured memory figure.
    /// `u64::MAX` is stored as `u64::MAX - 1` (the top value marks "unset").
    pub fn set_memory_gauge(&self, gauge: MemoryGauge, value: Option<u64>) {
        self.gauges.set_memory(gauge, value);
    }

    /// Sets the process resident set size, bytes.
    pub fn set_process_rss_bytes(&self, bytes: u64) {
        self.set_memory_gauge(MemoryGauge::ProcessRss, Some(bytes));
    }

    /// Sets GPU memory in use and in total, bytes.
    pub fn set_gpu_memory_bytes(&self, used: u64, total: u64) {
        self.set_memory_gauge(MemoryGauge::GpuUsed, Some(used));
        self.set_memory_gauge(MemoryGauge::GpuTotal, Some(total));
    }

    /// Sets the embedding cache's memory (bytes) and entry count.
    pub fn set_cache_size(&self, bytes: u64, entries: u64) {
        self.set_memory_gauge(MemoryGauge::CacheBytes, Some(bytes));
        self.set_memory_gauge(MemoryGauge::CacheEntries, Some(entries));
    }

    /// Service failures in the last 60 s (see [`snapshot`](Self::snapshot)
    /// for the exact window rule; client errors are not included).
    #[must_use]
    pub fn error_rate_per_minute(&self) -> f64 {
        self.rates().errors_per_minute
    }

    /// Embeddings per second over the last 10 s.
    #[must_use]
    pub fn throughput_10s(&self) -> f64 {
        self.rates().throughput_10s
    }

    /// Embeddings per second over the last 60 s.
    #[must_use]
    pub fn throughput_60s(&self) -> f64 {
        self.rates().throughput_60s
    }

    /// Time since creation or the last reset.
    #[must_use]
    pub fn uptime(&self) -> Duration {
        Duration::from_nanos(self.uptime_nanos(self.clock.now_nanos()))
    }

    /// The live latency histogram of `stage` (for example to merge it into an
    /// aggregate, or to benchmark it directly).
    #[must_use]
    pub fn stage_histogram(&self, stage: Stage) -> &Histogram {
        &self.stage_latency[stage.index() % STAGES]
    }

    /// The live latency histogram of embeddings.
    #[must_use]
    pub fn latency_histogram(&self) -> &Histogram {
        &self.latency
    }

    /// The live latency histogram of `model`.
    #[must_use]
    pub fn model_histogram(&self, model: ModelId) -> &Histogram {
        &self.model_latency[model.index() % MODELS]
    }

    pub(crate) fn uptime_nanos(&self, now: u64) -> u64 {
        now.saturating_sub(self.start_nanos.load(Ordering::Relaxed))
    }

    pub(crate) fn histograms(&self) -> impl Iterator<Item = &Histogram> {
        [&self.latency, &self.batch_latency, &self.batch_size]
            .into_iter()
            .chain(&self.model_latency)
            .chain(&self.stage_latency)
            .chain(&self.input_tokens)
    }
}

/// Microseconds in `d`, saturating at `u64::MAX` (584 000 years): the one
/// place a [`Duration`] becomes the recorder's integer µs.
#[inline]
#[must_use]
pub fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
