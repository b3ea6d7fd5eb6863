//! Splitting the steps of one forward pass over threads that stay awake for
//! the whole pass.
//!
//! A MiniLM forward pass of one short sentence is ~40 small steps (products
//! of 16 rows, row passes). Forking each through rayon paid a sleep/wake
//! hand-off per step, and a one-sentence call then ran barely faster on two
//! cores than on one (`BENCHMARKS.md`, "CPU against ONNX Runtime"). A
//! [`Team`] pays one hand-off per pass: the calling thread (the *owner*)
//! publishes each step as a *phase* of `chunks` independent pieces; helpers
//! (rayon threads, started once per pass) spin between phases and claim
//! pieces; the owner claims pieces too and returns once every piece is done.
//!
//! No deadlock whatever the pool is doing: the owner never waits for a
//! helper to *arrive*, only for pieces a helper has already claimed (and is
//! computing, with no waiting inside). With no helper at all the owner runs
//! every piece itself, in order.

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// One phase's work: piece `i` of `chunks`.
type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// Spins before each yield while a helper waits for the next phase.
const SPINS: u32 = 1 << 14;

/// A team for one forward pass; see the module docs.
pub(crate) struct Team {
    /// `phase << 32 | next piece to claim`; phase 0: none published yet.
    ticket: AtomicU64,
    /// Pieces of the current phase finished.
    done: AtomicUsize,
    /// Set when the owner is done (or unwinding): helpers leave.
    finished: AtomicBool,
    /// Set when a helper's piece panicked; the owner re-raises it.
    panicked: AtomicBool,
    /// The current phase's number and job, lifetime erased (see `phase`).
    job: Mutex<(u64, Option<Job<'static>>)>,
    /// Pieces per phase: the number of threads the team may use.
    chunks: usize,
}

impl Team {
    /// Runs `owner` on a pool thread with up to `threads − 1` helpers, the
    /// team's phases split into `threads` pieces. `threads ≤ 1` runs
    /// `owner` on the calling thread with no helper (each phase in order).
    pub(crate) fn run<R: Send>(threads: usize, owner: impl FnOnce(&Team) -> R + Send) -> R {
        let team = Team {
            ticket: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            finished: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: Mutex::new((0, None)),
            chunks: threads.max(1),
        };
        if threads <= 1 {
            return owner(&team);
        }
        rayon::scope(|s| {
            for _ in 1..threads {
                s.spawn(|_| team.help());
            }
            // Released on return and on unwinding alike, so a panicking
            // owner never leaves a helper spinning (and the scope waiting).
            let _release = Release(&team.finished);
            owner(&team)
        })
    }

    /// Pieces per phase.
    pub(crate) fn chunks(&self) -> usize {
        self.chunks
    }

    /// Runs `f(0..chunks)` across the team and returns once every piece is
    /// done (their writes then visible to the caller). Owner only. A piece
    /// that panics, here or on a helper, panics here once no piece of the
    /// phase is running any more.
    pub(crate) fn phase(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.chunks == 1 {
            f(0);
            return;
        }
        let number = (self.ticket.load(Ordering::Relaxed) >> 32) + 1;
        // SAFETY: the erased reference is called only by a thread that
        // claimed a piece of phase `number` (a successful compare-exchange
        // on `ticket` still holding `number`). This function returns only
        // after all `chunks` pieces of `number` are done, and a later phase
        // changes `ticket`'s phase first, so every such call ends before
        // `f`'s borrow does; a stale copy of the pointer is never called
        // because its claim fails.
        let erased: Job<'static> = unsafe { std::mem::transmute::<Job<'_>, Job<'static>>(f) };
        *self.job.lock().unwrap_or_else(PoisonError::into_inner) = (number, Some(erased));
        self.done.store(0, Ordering::Relaxed);
        self.ticket.store(number << 32, Ordering::Release);
        // A panic in one of our pieces is held until every claimed piece is
        // done: unwinding earlier would free the buffers (and `f`) a helper
        // may still be using. The pieces left after it are counted, not run.
        let mut failure = None;
        while let Some(piece) = self.claim(number) {
            if failure.is_none()
                && let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(piece)))
            {
                failure = Some(p);
            }
            self.done.fetch_add(1, Ordering::Release);
        }
        let mut spins = 0u32;
        while self.done.load(Ordering::Acquire) < self.chunks {
            spins = backoff(spins);
        }
        if let Some(p) = failure {
            std::panic::resume_unwind(p);
        }
        if self.panicked.load(Ordering::Acquire) {
            // As if the piece had run here: the caller's own unwinding
            // (the batch worker catches it) instead of a wrong result.
            panic!("a piece of this forward pass panicked on a helper thread");
        }
    }

    /// [`phase`](Self::phase) for pieces that can fail: every piece still
    /// runs, and the first error recorded is returned.
    pub(crate) fn try_phase<E: Send>(
        &self,
        f: &(dyn Fn(usize) -> Result<(), E> + Sync),
    ) -> Result<(), E> {
        let failed = Mutex::new(None);
        self.phase(&|piece| {
            if let Err(e) = f(piece) {
                failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(e);
            }
        });
        match failed.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The next piece of phase `number`, if one is left.
    fn claim(&self, number: u64) -> Option<usize> {
        let mut t = self.ticket.load(Ordering::Acquire);
        loop {
            let piece = (t & u64::from(u32::MAX)) as usize;
            if t >> 32 != number || piece >= self.chunks {
                return None;
            }
            match self
                .ticket
                .compare_exchange_weak(t, t + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(piece),
                Err(now) => t = now,
            }
        }
    }

    /// A helper: claims pieces of each published phase until the owner is
    /// finished.
    fn help(&self) {
        let mut spins = 0u32;
        while !self.finished.load(Ordering::Acquire) {
            let t = self.ticket.load(Ordering::Acquire);
            let (number, piece) = (t >> 32, (t & u64::from(u32::MAX)) as usize);
            if number == 0 || piece >= self.chunks {
                spins = backoff(spins);
                continue;
            }
            let (published, job) = *self.job.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(job) = job.filter(|_| published == number) else {
                continue;
            };
            while let Some(piece) = self.claim(number) {
                // A panic still counts the piece done, so the owner is not
                // left waiting; it re-raises the panic on its own thread.
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(piece)));
                if run.is_err() {
                    self.panicked.store(true, Ordering::Release);
                }
                self.done.fetch_add(1, Ordering::Release);
            }
            spins = 0;
        }
    }
}

/// Sets its flag when dropped.
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Spin a while, then yield the core.
fn backoff(spins: u32) -> u32 {
    if spins < SPINS {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
    spins.saturating_add(1)
}

/// The block `[piece·n/chunks, (piece+1)·n/chunks)` of `0..n`, with inner
/// bounds rounded to multiples of `align` (so column blocks stay whole
/// kernel tiles).
pub(crate) fn split(n: usize, chunks: usize, piece: usize, align: usize) -> Range<usize> {
    let at = |p: usize| {
        if p >= chunks {
            n
        } else {
            (n * p / chunks) / align.max(1) * align.max(1)
        }
    };
    at(piece).min(n)..at(piece + 1).min(n)
}

/// A buffer the pieces of one phase write at once, each its own block.
pub(crate) struct Shared<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: the buffer is reached only through the `unsafe` methods below,
// whose callers guarantee that blocks written at the same time are disjoint
// and not read meanwhile; the `&mut` borrow it holds keeps every other
// access out for its lifetime.
unsafe impl Sync for Shared<'_> {}
// SAFETY: as for `Sync`: a `Shared` is a `&mut [f32]` split by contract.
unsafe impl Send for Shared<'_> {}

impl<'a> Shared<'a> {
    /// Borrows `buf` for the phase(s) that write it.
    pub(crate) fn new(buf: &'a mut [f32]) -> Self {
        Self {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _borrow: PhantomData,
        }
    }

    /// The whole buffer's length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `range` as a slice; `None` past the end.
    ///
    /// # Safety
    /// No other thread may read or write `range` while the slice lives.
    // A `&mut` from `&self` is the point: each piece takes its own block of
    // one shared buffer; exclusivity is the caller's `unsafe` promise.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn block(&self, range: Range<usize>) -> Option<&mut [f32]> {
        if range.start > range.end || range.end > self.len {
            return None;
        }
        // SAFETY: in bounds (checked above) of a buffer borrowed mutably for
        // 'a; exclusivity of `range` is the caller's promise.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) })
    }

    /// The raw start of the buffer, for `matmul::matmul_columns`.
    pub(crate) fn as_ptr(&self) -> *mut f32 {
        self.ptr
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn split_covers_everything_once_with_aligned_inner_bounds() {
        for (n, chunks, align) in [
            (1536, 2, 16),
            (384, 2, 16),
            (7, 3, 1),
            (5, 4, 16),
            (0, 2, 16),
        ] {
            let parts: Vec<_> = (0..chunks).map(|p| split(n, chunks, p, align)).collect();
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts[chunks - 1].end, n);
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert!(w[0].end % align == 0 || w[0].end == n);
            }
        }
    }

    #[test]
    fn phases_write_every_piece_once_with_or_without_helpers() {
        for threads in [1, 2, 3, 8] {
            let mut buf = vec![0f32; 4096];
            let total = Team::run(threads, |team| {
                for round in 0..500u32 {
                    let shared = Shared::new(&mut buf);
                    let chunks = team.chunks();
                    let n = shared.len();
                    team.phase(&|piece| {
                        let r = split(n, chunks, piece, 1);
                        // SAFETY: `split` gives each piece its own block.
                        let block = unsafe { shared.block(r) }.unwrap();
                        for v in block.iter_mut() {
                            *v += 1.0;
                        }
                    });
                    // The owner sees every piece's writes after the phase.
                    assert!(
                        buf.iter().all(|&v| v == (round + 1) as f32),
                        "round {round}"
                    );
                }
                buf.iter().sum::<f32>()
            });
            assert_eq!(total, 4096.0 * 500.0, "{threads} threads");
        }
    }

    #[test]
    fn a_panicking_piece_reaches_the_owner_and_leaves_no_helper_behind() {
        for threads in [1, 2, 4] {
            for bad in 0..threads {
                let run = std::panic::catch_unwind(|| {
                    Team::run(threads, |team| {
                        team.phase(&|piece| assert_ne!(piece, bad, "piece {piece}"));
                    });
                });
                assert!(run.is_err(), "{threads} threads, piece {bad}: no panic");
            }
        }
        // The pool still works afterwards.
        assert_eq!(Team::run(2, |team| team.chunks()), 2);
    }

    #[test]
    fn concurrent_teams_on_a_busy_pool_all_finish() {
        // More teams than pool threads, each asking for more helpers than
        // exist: owners never wait for helpers to arrive.
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    let mut buf = vec![0f32; 64];
                    Team::run(8, |team| {
                        for _ in 0..200 {
                            let shared = Shared::new(&mut buf);
                            let chunks = team.chunks();
                            team.phase(&|piece| {
                                let r = split(64, chunks, piece, 1);
                                // SAFETY: disjoint blocks, as above.
                                unsafe { shared.block(r) }
                                    .unwrap()
                                    .iter_mut()
                                    .for_each(|v| *v += 1.0);
                            });
                        }
                    });
                    assert!(buf.iter().all(|&v| v == 200.0));
                });
            }
        });
    }
}
