//! Admission by work: what a request will cost, known before any of it is
//! done, and the token budget that the queue admits by.
//!
//! - **Cost.** An input costs an upper bound of the tokens the transformers
//!   will see: for each checkpoint it runs through, its UTF-8 bytes + 2
//!   special tokens (WordPiece and byte-level BPE emit at most one token per
//!   byte), at most that checkpoint's `max_seq_length`. An input that runs
//!   through no checkpoint (built-in slots only) costs nothing. The bound
//!   needs no tokenizer, so it is known on the caller's thread.
//! - **Budget.** At most `[batching] token_budget` tokens are admitted and
//!   not yet answered (queued and computing). Admission is one atomic
//!   compare-and-swap; a [`Permit`] gives its tokens back when its request
//!   has been answered (or dropped), wherever that happens.
//! - **Retry delay.** A refusal says when to retry, from the tokens given
//!   back over the last [`DRAIN_WINDOW`]: the excess divided by that rate,
//!   1 to 60 s. With nothing given back lately there is no measurement, and
//!   no delay is invented (`None`).
//! - **Response size.** The floats an answer can hold are bounded the same
//!   way, per input, before any work (`[batching] max_response_floats`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use embeddings_types::ModelId;

use crate::engine::{Engine, SlotHead};
use crate::error::PipelineError;
use crate::options::Resolved;

/// How far back the drain rate looks.
pub(crate) const DRAIN_WINDOW: Duration = Duration::from_secs(10);
/// The longest retry delay advised.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Special tokens a checkpoint adds around the content (`[CLS]`, `[SEP]`).
const SPECIALS: usize = 2;

/// The per-input bounds of one request's options.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bounds {
    /// `max_seq_length` of each checkpoint the request runs through.
    checkpoints: Vec<usize>,
    /// Output floats whatever the input's length (dense, causal, fused).
    fixed: usize,
    /// Per-token outputs returned: (their checkpoint's `max_seq_length`, width).
    per_token: Vec<(usize, usize)>,
    /// The sparse output's vocabulary size, when it is returned.
    sparse: Option<usize>,
}

/// Tokens a text of `bytes` bytes can become under a limit of `max_len`.
fn tokens_at_most(bytes: usize, max_len: usize) -> usize {
    bytes.saturating_add(SPECIALS).min(max_len)
}

impl Bounds {
    /// The most tokens the transformers can see for `text`.
    pub(crate) fn tokens(&self, text: &str) -> usize {
        self.checkpoints
            .iter()
            .map(|&max| tokens_at_most(text.len(), max))
            .fold(0, usize::saturating_add)
    }

    /// The most output floats the answer for `text` can hold (a sparse
    /// entry counts two: its index and its weight).
    pub(crate) fn floats(&self, text: &str) -> usize {
        let bytes = text.len();
        let per_token = self
            .per_token
            .iter()
            .map(|&(max, dim)| tokens_at_most(bytes, max).saturating_mul(dim))
            .fold(0, usize::saturating_add);
        let sparse = self.sparse.map_or(0, |vocab| {
            bytes.saturating_add(SPECIALS).min(vocab).saturating_mul(2)
        });
        self.fixed.saturating_add(per_token).saturating_add(sparse)
    }
}

impl Engine {
    /// The bounds for requests resolved as `r`.
    pub(crate) fn bounds(&self, r: &Resolved) -> Bounds {
        let max_len = |model: usize| {
            self.models
                .get(model)
                .and_then(|m| m.checkpoint.as_ref())
                .map_or(0, |c| c.max_len)
        };
        let mut b = Bounds::default();
        for plan in &self.plans {
            if Self::plan_runs(plan, r.run) {
                b.checkpoints.push(max_len(plan.model));
            }
            for &(id, head) in &plan.slots {
                if !r.returned.contains(id) {
                    continue;
                }
                let dim = self.registry.slot(id).dim.unwrap_or(0);
                match head {
                    SlotHead::PerToken => b.per_token.push((max_len(plan.model), dim)),
                    SlotHead::Causal => b.fixed = b.fixed.saturating_add(dim.saturating_mul(2)),
                    SlotHead::Pooled(_) => b.fixed = b.fixed.saturating_add(dim),
                }
            }
        }
        for id in ModelId::ALL {
            if !r.returned.contains(id) || !self.builtins[id.index()] {
                continue;
            }
            let dim = self.registry.slot(id).dim.unwrap_or(0);
            if id == ModelId::Sparse {
                b.sparse = Some(dim);
            } else {
                b.fixed = b.fixed.saturating_add(dim);
            }
        }
        if r.fused
            && let Some(f) = &self.fusion
        {
            b.fixed = b.fixed.saturating_add(f.dim());
        }
        b
    }

    /// Refuses (and counts) a request whose answer could exceed
    /// `[batching] max_response_floats`.
    pub(crate) fn check_response<'a>(
        &self,
        texts: impl ExactSizeIterator<Item = &'a str>,
        bounds: &Bounds,
    ) -> Result<(), PipelineError> {
        let max = self.config.batching.max_response_floats;
        let inputs = texts.len();
        let floats = texts
            .map(|t| bounds.floats(t))
            .fold(0, usize::saturating_add);
        if floats > max {
            return Err(self.reject(PipelineError::ResponseTooLarge {
                inputs,
                floats,
                max,
            }));
        }
        Ok(())
    }
}

/// Tokens given back over the last [`DRAIN_WINDOW`].
#[derive(Debug, Default)]
struct Drain {
    /// When tokens were first given back.
    first: Option<Instant>,
    /// (when, tokens), oldest first, none older than the window.
    recent: VecDeque<(Instant, usize)>,
}

impl Drain {
    fn forget_before(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > DRAIN_WINDOW)
        {
            self.recent.pop_front();
        }
    }

    /// Tokens per second given back over the window (or since the first
    /// give-back, at least one second, when that is shorter); `None` when
    /// nothing was given back within it.
    fn rate(&mut self, now: Instant) -> Option<f64> {
        self.forget_before(now);
        let tokens: usize = self.recent.iter().map(|(_, n)| n).sum();
        let first = self.first?;
        if tokens == 0 {
            return None;
        }
        let span = now
            .saturating_duration_since(first)
            .clamp(Duration::from_secs(1), DRAIN_WINDOW);
        Some(tokens as f64 / span.as_secs_f64())
    }
}

/// The token budget of a queue.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    in_use: AtomicUsize,
    drain: Mutex<Drain>,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            in_use: AtomicUsize::new(0),
            drain: Mutex::new(Drain::default()),
        }
    }

    /// Tokens admitted and not yet given back.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use.load(Ordering::SeqCst)
    }

    /// Admits `tokens`, or says why not (not counted here: the caller
    /// counts its refusal once).
    pub(crate) fn admit(self: &Arc<Self>, tokens: usize) -> Result<Permit, PipelineError> {
        if tokens > self.limit {
            return Err(PipelineError::RequestTooLarge {
                tokens,
                budget: self.limit,
            });
        }
        match self
            .in_use
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used.saturating_add(tokens) <= self.limit).then(|| used + tokens)
            }) {
            Ok(_) => Ok(Permit {
                budget: Arc::clone(self),
                tokens,
                drained: true,
            }),
            Err(in_use) => Err(PipelineError::OverBudget {
                tokens,
                in_use,
                budget: self.limit,
                retry_after: self.retry_after(in_use + tokens - self.limit),
            }),
        }
    }

    /// When `excess` tokens should have drained, at the measured rate.
    fn retry_after(&self, excess: usize) -> Option<Duration> {
        let rate = self
            .drain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rate(Instant::now())?;
        let secs = (excess as f64 / rate).ceil();
        Some(Duration::from_secs_f64(
            secs.clamp(1.0, MAX_RETRY.as_secs_f64()),
        ))
    }

    /// Returns `tokens`; `drained` when their request was answered or
    /// dropped (work that left the queue), not when it never entered.
    fn give_back(&self, tokens: usize, drained: bool) {
        self.in_use.fetch_sub(tokens, Ordering::SeqCst);
        if !drained {
            return;
        }
        let now = Instant::now();
        let mut drain = self.drain.lock().unwrap_or_else(PoisonError::into_inner);
        drain.first.get_or_insert(now);
        drain.forget_before(now);
        drain.recent.push_back((now, tokens));
    }
}

/// Admitted tokens, given back when dropped: after the request's answer
/// was sent, or when it is dropped unrun, or while unwinding.
#[derive(Debug)]
pub(crate) struct Permit {
    budget: Arc<Budget>,
    tokens: usize,
    /// Whether giving back counts towards the drain rate.
    drained: bool,
}

impl Permit {
    /// Gives the tokens back for a request that was not queued after all:
    /// not drained work, so the drain rate does not see it.
    pub(crate) fn revoke(mut self) {
        self.drained = false;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.give_back(self.tokens, self.drained);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_costs_its_bytes_plus_specials_up_to_each_checkpoints_limit() {
        let b = Bounds {
            checkpoints: vec![256, 8],
            ..Bounds::default()
        };
        assert_eq!(b.tokens("hello"), 7 + 7);
        assert_eq!(b.tokens(&"x".repeat(1000)), 256 + 8);
        assert_eq!(Bounds::default().tokens("built-in slots only"), 0);
    }

    #[test]
    fn response_floats_count_fixed_per_token_and_sparse_outputs() {
        let b = Bounds {
            checkpoints: vec![16],
            fixed: 100,
            per_token: vec![(16, 4)],
            sparse: Some(10),
        };
        // "abc": 5 tokens → 5 × 4 per-token floats; 5 sparse entries × 2.
        assert_eq!(b.floats("abc"), 100 + 20 + 10);
        // Long: 16 tokens at most; sparse at most the vocabulary (10).
        assert_eq!(b.floats(&"a".repeat(100)), 100 + 64 + 20);
    }

    #[test]
    fn the_budget_admits_up_to_its_limit_and_takes_back_what_drops() {
        let budget = Arc::new(Budget::new(10));
        let a = budget.admit(6).expect("fits");
        let refused = budget.admit(5).expect_err("6 + 5 > 10");
        assert!(matches!(
            refused,
            PipelineError::OverBudget {
                tokens: 5,
                in_use: 6,
                budget: 10,
                // Nothing has drained yet: no delay is made up.
                retry_after: None
            }
        ));
        let b = budget.admit(4).expect("6 + 4 = 10 fits");
        assert_eq!(budget.in_use(), 10);
        drop(a);
        assert_eq!(budget.in_use(), 4);
        drop(b);
        assert_eq!(budget.in_use(), 0);
        budget.admit(3).expect("fits").revoke();
        assert_eq!(budget.in_use(), 0, "a revoked permit gives its tokens back");
        assert_eq!(
            budget.admit(11).expect_err("more than the whole budget"),
            PipelineError::RequestTooLarge {
                tokens: 11,
                budget: 10
            }
        );
    }

    #[test]
    fn the_retry_delay_comes_from_the_measured_drain_rate() {
        let budget = Arc::new(Budget::new(100));
        drop(budget.admit(100).expect("fits"));
        // 100 tokens drained in (at least) one second: 100 tokens/s at most.
        let _held = budget.admit(100).expect("fits again");
        let Err(PipelineError::OverBudget { retry_after, .. }) = budget.admit(50) else {
            panic!("over budget expected");
        };
        let after = retry_after.expect("a rate was measured");
        assert!(
            after >= Duration::from_secs(1) && after <= MAX_RETRY,
            "{after:?}"
        );
    }

    #[test]
    fn the_drain_rate_forgets_what_is_older_than_its_window() {
        let mut d = Drain::default();
        let t0 = Instant::now();
        d.first = Some(t0);
        d.recent.push_back((t0, 50));
        let later = t0 + DRAIN_WINDOW + Duration::from_secs(1);
        assert_eq!(d.rate(later), None);
        d.recent.push_back((later, 30));
        let rate = d.rate(later).expect("30 tokens within the window");
        assert!((rate - 3.0).abs() < 1e-9, "30 tokens over 10 s: {rate}");
    }
}
