//! [`Clock`]: where windowed rates and uptime get "now" from, so tests can
//! drive time by hand ([`ManualClock`]) instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic time source, read as nanoseconds since the clock's origin.
///
/// [`Clock::monotonic`] (the default) reads [`Instant`]; [`Clock::manual`]
/// returns a clock that only moves when its [`ManualClock`] handle says so.
/// An enum rather than a trait object: the recording path pays one
/// predictable branch instead of an indirect call.
#[derive(Debug, Clone)]
pub struct Clock(Source);

#[derive(Debug, Clone)]
enum Source {
    Monotonic(Instant),
    Manual(Arc<AtomicU64>),
}

impl Default for Clock {
    fn default() -> Self {
        Self::monotonic()
    }
}

impl Clock {
    /// The real monotonic clock, with its origin now.
    #[must_use]
    pub fn monotonic() -> Self {
        Self(Source::Monotonic(Instant::now()))
    }

    /// A synthetic clock starting at zero, and the handle that moves it.
    ///
    /// ```
    /// use embeddings_metrics::Clock;
    /// use std::time::Duration;
    /// let (clock, hand) = Clock::manual();
    /// hand.advance(Duration::from_secs(90));
    /// assert_eq!(clock.now(), Duration::from_secs(90));
    /// ```
    #[must_use]
    pub fn manual() -> (Self, ManualClock) {
        let cell = Arc::new(AtomicU64::new(0));
        (Self(Source::Manual(Arc::clone(&cell))), ManualClock(cell))
    }

    /// Time since the clock's origin.
    #[must_use]
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now_nanos())
    }

    /// Nanoseconds since the clock's origin (saturating after ~584 years).
    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        match &self.0 {
            Source::Monotonic(origin) => {
                u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
            }
            Source::Manual(cell) => cell.load(Ordering::Acquire),
        }
    }
}

/// The handle that moves a [`Clock::manual`] clock. Cloneable; every clone
/// moves the same clock. Time never goes backwards through this API except
/// via [`set`](Self::set), which tests may use deliberately.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// Moves the clock forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update with a closure that always returns Some cannot fail.
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(nanos))
            });
    }

    /// Sets the clock to `to` since its origin.
    pub fn set(&self, to: Duration) {
        self.0.store(
            u64::try_from(to.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
    }

    /// The clock's current reading.
    #[must_use]
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Acquire))
    }
}
