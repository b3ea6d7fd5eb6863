//! One request's path through the engine, written once for every caller:
//! the blocking calls (`embed`, `embed_each`), `submit`, and the batch
//! workers all go through the same four stages, and each figure is recorded
//! in exactly one of them.
//!
//! | stage | what happens | recorded there |
//! |---|---|---|
//! | [`Request::prepare`] | validate every input, look the valid ones up in the cache | cache hit / miss per lookup; an all-or-nothing request with a bad input: one error of its kind |
//! | [`Request::tokenize`] | tokenize the cache misses, once | the `tokenization` stage |
//! | [`Request::compute_together`] | forward passes, heads, built-in slots and fusion over the misses of one or more requests | per slot: requests and latency; stages `inference` and `fusion`; the batch; a failed computation: **one** error, attributed to the slots it served |
//! | [`Request::finish`] | answer, cache what was computed, count what was served | per computed input: `embeddings_generated` and its latency; per request: `inputs_served`; a caller gone: one `timeout` or `cancelled` error (nothing cached, nothing counted as success) |
//!
//! Queue figures (depth, `queue_wait`) belong to the queue
//! (`batch_processor.rs`); refusals before a request exists (bad options, a
//! full queue, shut down) go through [`Engine::reject`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use embeddings_metrics::PipelineMetrics;

use crate::admission::Bounds;
use crate::engine::{Engine, Item};
use crate::error::PipelineError;
use crate::input::EmbedInput;
use crate::options::{EmbedResponse, Resolved, SlotMask, Timings};
use crate::output::MultiEmbedding;

/// How a request treats a bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The first bad input (by index) fails the whole request.
    AllOrNothing,
    /// A bad input fails only itself.
    Each,
}

/// Whether the caller still wants the answer when its work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Still waiting: answer, cache and count as served.
    Waiting,
    /// Its deadline passed.
    TimedOut,
    /// It went away (dropped its ticket) before its deadline.
    Cancelled,
}

/// Per input: its answer, or the error that failed it.
pub(crate) type Answers = Vec<Result<MultiEmbedding, PipelineError>>;

/// A request on its way through the stages.
pub(crate) struct Request {
    pub(crate) resolved: Resolved,
    mode: Mode,
    /// When the caller handed it in.
    pub(crate) submitted: Instant,
    /// When the caller stops waiting, if it said.
    pub(crate) deadline: Option<Instant>,
    /// One per input: cache hits are filled in when prepared.
    answers: Vec<Option<Result<MultiEmbedding, PipelineError>>>,
    /// The inputs still to compute (cache misses, and in `Each` mode the
    /// rejected inputs, which every stage skips), in input order.
    pending: Vec<Item>,
    /// Transformer tokens of the pending items, once tokenized.
    tokens: Option<usize>,
    pub(crate) timings: Timings,
    /// The caller's id, kept as the latency exemplar.
    request_id: Option<Arc<str>>,
}

impl Request {
    /// Stage 1: validates every input and looks the valid ones up in the
    /// cache (hits are answered at once).
    ///
    /// # Errors
    /// In [`Mode::AllOrNothing`], the first input rejected by validation (by
    /// index), counted once.
    pub(crate) fn prepare(
        engine: &Engine,
        inputs: Vec<EmbedInput>,
        resolved: Resolved,
        mode: Mode,
        submitted: Instant,
        deadline: Option<Instant>,
    ) -> Result<Self, PipelineError> {
        let items: Vec<Item> = inputs
            .into_iter()
            .enumerate()
            .map(|(index, input)| {
                let empty = input.text.trim().is_empty();
                let item = engine.prepare(index, input, &resolved);
                if empty
                    && item.error.is_none()
                    && let Some(m) = engine.rec()
                {
                    m.record_empty_input();
                }
                item
            })
            .collect();
        if mode == Mode::AllOrNothing
            && let Some(e) = items.iter().find_map(|it| it.error.clone())
        {
            return Err(engine.reject(e));
        }
        let mut answers: Vec<Option<Result<MultiEmbedding, PipelineError>>> =
            (0..items.len()).map(|_| None).collect();
        let mut pending = Vec::new();
        for item in items {
            match engine.cache_get(item.key) {
                Some(hit) => answers[item.index] = Some(Ok(hit)),
                None => pending.push(item),
            }
        }
        Ok(Self {
            resolved,
            mode,
            submitted,
            deadline,
            answers,
            pending,
            tokens: None,
            timings: Timings::default(),
            request_id: None,
        })
    }

    /// Sets the caller's id (see [`EmbedOptions::request_id`](crate::EmbedOptions::request_id)).
    #[must_use]
    pub(crate) fn with_request_id(mut self, id: Option<Arc<str>>) -> Self {
        self.request_id = id;
        self
    }

    /// What the inputs still to compute cost in the token budget.
    pub(crate) fn tokens_bound(&self, bounds: &Bounds) -> usize {
        self.pending
            .iter()
            .map(|it| bounds.tokens(&it.text))
            .fold(0, usize::saturating_add)
    }

    /// Inputs still to compute.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Stage 2: tokenizes the pending inputs (once; later calls return the
    /// first count). Returns the tokens the transformers will see.
    pub(crate) fn tokenize(&mut self, engine: &Engine) -> usize {
        if let Some(tokens) = self.tokens {
            return tokens;
        }
        let start = Instant::now();
        let tokens = engine.tokenize(
            &mut self.pending,
            self.resolved.run,
            self.resolved.direction,
            engine.rec(),
        );
        self.timings.tokenization = start.elapsed();
        self.tokens = Some(tokens);
        tokens
    }

    /// In [`Mode::AllOrNothing`], the first input rejected so far (by
    /// index): the request must fail with it before any model runs.
    pub(crate) fn rejected(&self) -> Option<PipelineError> {
        match self.mode {
            Mode::AllOrNothing => self.pending.iter().find_map(|it| it.error.clone()),
            Mode::Each => None,
        }
    }

    /// Stage 3: computes the pending inputs of `requests` together (one
    /// worker batch, or one blocking call). A failure is counted where it
    /// happens, once, and fails every request of the batch.
    pub(crate) fn compute_together(
        engine: &Engine,
        requests: &mut [Self],
    ) -> Result<(), PipelineError> {
        let mut run = SlotMask::empty();
        let mut fuse = false;
        let mut all: Vec<Item> = Vec::new();
        let mut counts = Vec::with_capacity(requests.len());
        for r in requests.iter_mut() {
            run = run.union(r.resolved.run);
            fuse |= r.resolved.fused;
            counts.push(r.pending.len());
            all.append(&mut r.pending);
        }
        let start = Instant::now();
        let result = engine.compute(&mut all, run, fuse, engine.rec());
        let took = start.elapsed();
        let mut items = all.into_iter();
        for (r, n) in requests.iter_mut().zip(counts) {
            r.pending = items.by_ref().take(n).collect();
            r.timings.inference = took;
        }
        result
    }

    /// Stage 4: the answer, per input. Caches and counts what was computed
    /// for a caller that still waits; for one that is gone, counts one
    /// `timeout` or `cancelled` and keeps nothing.
    ///
    /// # Errors
    /// The computation's error (already counted); [`PipelineError::DeadlineExceeded`]
    /// / [`PipelineError::Cancelled`] for a caller that is gone; in
    /// [`Mode::AllOrNothing`], the first rejected input.
    pub(crate) fn finish(
        self,
        engine: &Engine,
        computed: Result<(), PipelineError>,
        caller: Caller,
    ) -> Result<(Answers, Timings), PipelineError> {
        computed?;
        match caller {
            Caller::Waiting => {}
            Caller::TimedOut => {
                let after = self.deadline.map_or(Duration::ZERO, |d| {
                    d.saturating_duration_since(self.submitted)
                });
                return Err(engine.reject(PipelineError::DeadlineExceeded { after }));
            }
            Caller::Cancelled => return Err(engine.reject(PipelineError::Cancelled)),
        }
        if let Some(e) = self.rejected() {
            return Err(engine.reject(e));
        }
        let rec = engine.rec();
        let Self {
            resolved,
            submitted,
            mut answers,
            pending,
            mut timings,
            request_id,
            ..
        } = self;
        let mut fresh = Vec::new();
        for item in pending {
            let (index, key, done_at) = (item.index, item.key, item.done_at);
            let out = Engine::output(item, &resolved);
            match &out {
                Ok(v) => {
                    if let Some(k) = key {
                        fresh.push((k, v.clone()));
                    }
                    if rec.is_some() {
                        engine.drift.observe(v, engine.fusion.as_ref());
                    }
                    if let (Some(m), Some(t)) = (rec, done_at) {
                        let latency = t.saturating_duration_since(submitted);
                        match &request_id {
                            Some(id) => m.record_embedding_for(latency, id),
                            None => m.record_embedding_duration(latency),
                        }
                    }
                }
                // Only in `Each` mode: the input fails alone, counted once.
                Err(e) => {
                    engine.reject(e.clone());
                }
            }
            if let Some(slot) = answers.get_mut(index) {
                *slot = Some(out);
            }
        }
        // Cached before the caller has its answer: one that resubmits at
        // once must hit.
        engine.cache_put(fresh);
        let answers: Answers = answers
            .into_iter()
            .map(|a| a.unwrap_or(Err(PipelineError::WorkerLost)))
            .collect();
        let served = answers.iter().filter(|a| a.is_ok()).count();
        if served > 0 {
            if let Some(m) = rec {
                m.record_served(served as u64);
            }
            engine.state.embedded_now();
        }
        timings.total = submitted.elapsed();
        Ok((answers, timings))
    }
}

/// All-or-nothing answers as a response (every answer is `Ok` once
/// [`Request::finish`] succeeded in that mode).
pub(crate) fn response(
    finished: Result<(Answers, Timings), PipelineError>,
) -> Result<EmbedResponse, PipelineError> {
    let (answers, timings) = finished?;
    Ok(EmbedResponse {
        embeddings: answers.into_iter().collect::<Result<_, _>>()?,
        timings,
    })
}

impl Engine {
    /// The blocking path: every stage on the calling thread, not through
    /// the queue.
    pub(crate) fn run_inline(
        &self,
        inputs: Vec<EmbedInput>,
        resolved: Resolved,
        mode: Mode,
    ) -> Result<Answers, PipelineError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let submitted = Instant::now();
        let _in_flight = self.rec().map(PipelineMetrics::track_in_flight);
        let mut request = Request::prepare(self, inputs, resolved, mode, submitted, None)?;
        request.tokenize(self);
        if let Some(e) = request.rejected() {
            return Err(self.reject(e));
        }
        let computed = Request::compute_together(self, std::slice::from_mut(&mut request));
        request
            .finish(self, computed, Caller::Waiting)
            .map(|(answers, _)| answers)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests: a failure is a failed test")]

    use std::path::PathBuf;
    use std::sync::atomic::Ordering;

    use embeddings_types::{ErrorKind, ModelId};

    use crate::{EmbedInput, EmbedOptions, EmbeddingPipeline, is_transformer_slot};

    /// The real model (`cargo xtask fetch-models`), as the integration tests use.
    fn models_dir() -> PathBuf {
        std::env::var_os("EMBEDDINGS_MODELS_DIR").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"),
            PathBuf::from,
        )
    }

    #[test]
    fn a_failed_forward_pass_is_one_error_attributed_to_the_slots_it_served() {
        let pipeline = EmbeddingPipeline::builder()
            .models_dir(models_dir())
            .warm_up(false)
            .build()
            .unwrap();
        pipeline.engine.fail_forward.store(true, Ordering::Relaxed);

        // Blocking: three inputs, one chunk, one forward pass shared by the
        // seven transformer slots: one failure.
        let e = pipeline.embed_texts(&["a", "b", "c"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Inference, "{e}");
        let s = pipeline.metrics().snapshot();
        assert_eq!(s.errors, 1);
        assert_eq!(s.errors_by_kind[&ErrorKind::Inference], 1);
        assert_eq!(s.error_rate_per_minute, 1.0);
        for id in ModelId::ALL {
            let expected = u64::from(is_transformer_slot(id));
            assert_eq!(s.models[&id].failures, expected, "{id}");
        }
        assert_eq!((s.embeddings_generated, s.inputs_served), (0, 0));
        assert_eq!(
            s.batches_processed, 0,
            "a failed computation is not a batch"
        );

        // Queued: one request, one more failure; nothing cached, nothing served.
        let queued = pipeline
            .submit(vec![EmbedInput::new("d")], EmbedOptions::default())
            .unwrap()
            .wait()
            .unwrap_err();
        assert_eq!(queued.kind(), ErrorKind::Inference);
        let s = pipeline.metrics().snapshot();
        assert_eq!(s.errors, 2);
        assert_eq!(s.models[&ModelId::Semantic].failures, 2);
        assert_eq!(s.models[&ModelId::Hdc].failures, 0);
        assert_eq!(pipeline.cache_stats().map(|c| c.entries), Some(0));

        // Two failures are below the default 10 a minute: still healthy.
        let report = pipeline.health();
        assert!(report.status.healthy);
        assert_eq!(report.status.error_rate, 2.0);

        // The same pipeline computes again once the fault is gone.
        pipeline.engine.fail_forward.store(false, Ordering::Relaxed);
        assert_eq!(pipeline.embed_texts(&["a"]).unwrap().len(), 1);
        assert_eq!(pipeline.metrics().snapshot().embeddings_generated, 1);
    }
}
