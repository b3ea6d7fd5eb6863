//! Which stripe ("shard") the current thread writes to, and whether it owns it.
//!
//! Hot cells are replicated per thread, each copy on its own cache line(s); a
//! thread always writes the copy picked here and readers sum all copies.
//!
//! # Owned stripes
//! Up to [`SHARDS`] live threads each *own* one slot (claimed in a global
//! bitmap on first use, given back by a thread-local destructor when the
//! thread exits). A structure with [`STRIPES`] stripes gives slot `i` to the
//! owner of slot `i` alone, so the owner counts with a plain load and store
//! ([`Shard::add`]) instead of a locked read-modify-write: no other thread
//! ever writes that stripe. Threads that find every slot taken (more than
//! [`SHARDS`] recording at once) share the last stripe, [`OVERFLOW`], and
//! count there with `fetch_add`. Readers only load, so sums stay exact.
//!
//! Handing a slot over is ordered: the exiting owner frees it with a
//! `Release` read-modify-write after its last store, and the next owner
//! claims it with an `Acquire` one, so the new owner's first load sees the
//! old owner's last store and no count is lost across the hand-over.
//!
//! Structures whose every update is an atomic read-modify-write (the
//! histograms) do not need ownership; they use [`Shard::spread`], an index
//! in `0..SHARDS` that is the owned slot for owners and a round-robin pick
//! for everyone else.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Number of owned slots (per-thread stripes) per hot structure. A power of
/// two, so a spread index is a mask.
///
/// Eight covers the common "a handful of worker threads" deployment; a ninth
/// concurrent writer counts on the shared overflow stripe, which costs
/// contention but never correctness.
pub const SHARDS: usize = 8;

/// Stripes in a structure with owned stripes: one per slot plus the shared
/// [`OVERFLOW`] stripe.
pub(crate) const STRIPES: usize = SHARDS + 1;

/// Index of the stripe shared by threads that own no slot.
pub(crate) const OVERFLOW: usize = SHARDS;

/// Mask applied to spread indices so the compiler can drop bounds checks.
pub(crate) const SHARD_MASK: usize = SHARDS - 1;

const UNASSIGNED: usize = usize::MAX;

/// Bit `i` set: slot `i` has a live owner.
static OWNED: AtomicUsize = AtomicUsize::new(0);

/// Round-robin source for the spread index of threads that own no slot.
static NEXT_SPREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` initialisation and no destructor: the access compiles to a
    // plain TLS load, and the cell stays usable during thread-exit
    // destructors. Encoding: `0..SHARDS` = owner of that slot;
    // `SHARDS + r` = no slot, spread index `r`; `UNASSIGNED` = not yet asked.
    static SHARD: Cell<usize> = const { Cell::new(UNASSIGNED) };

    // Gives the slot back when the thread exits.
    static RELEASE: Release = const { Release(Cell::new(UNASSIGNED)) };
}

/// Thread-exit hook: frees the owned slot, after switching the thread (for
/// whatever other destructors still record) to the overflow stripe.
struct Release(Cell<usize>);

impl Drop for Release {
    fn drop(&mut self) {
        let slot = self.0.get();
        if slot < SHARDS {
            // From here on this thread counts with `fetch_add` on the shared
            // stripe; the new owner may already be storing into slot `slot`.
            let _ = SHARD.try_with(|cell| cell.set(SHARDS + slot));
            // Release: every store this thread made into its stripes happens
            // before the next owner's claim (an Acquire RMW on `OWNED`).
            OWNED.fetch_and(!(1 << slot), Ordering::Release);
        }
    }
}

/// The calling thread's place in striped structures.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shard(usize);

impl Shard {
    /// The stripe to write in a structure with [`STRIPES`] stripes.
    #[inline]
    pub(crate) fn stripe(self) -> usize {
        self.0.min(OVERFLOW)
    }

    /// An index in `0..SHARDS` for structures updated only by atomic
    /// read-modify-writes.
    #[inline]
    pub(crate) fn spread(self) -> usize {
        self.0 & SHARD_MASK
    }

    /// Whether this thread is the only writer of [`stripe`](Self::stripe).
    #[inline]
    pub(crate) fn owned(self) -> bool {
        self.0 < SHARDS
    }

    /// Adds `n` (wrapping) to `cell`, which must live in stripe
    /// [`stripe`](Self::stripe) of its structure: a plain load and store when
    /// this thread owns that stripe (no other thread writes it), `fetch_add`
    /// on the shared overflow stripe otherwise.
    #[inline]
    pub(crate) fn add(self, cell: &AtomicU64, n: u64) {
        if self.owned() {
            // Sole writer: no update can slip in between the load and the
            // store. Readers see either value, both exact at some instant.
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        } else {
            cell.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The calling thread's shard, claiming a slot on first use.
#[inline]
pub(crate) fn current() -> Shard {
    // `try_with` cannot fail for a const, destructor-less key; falling back
    // to the shared stripe keeps recording panic-free and exact regardless.
    Shard(
        SHARD
            .try_with(|cell| {
                let shard = cell.get();
                if shard == UNASSIGNED {
                    assign(cell)
                } else {
                    shard
                }
            })
            .unwrap_or(OVERFLOW),
    )
}

#[cold]
fn assign(cell: &Cell<usize>) -> usize {
    let shard = claim()
        .unwrap_or_else(|| SHARDS + (NEXT_SPREAD.fetch_add(1, Ordering::Relaxed) & SHARD_MASK));
    cell.set(shard);
    shard
}

/// Claims a free slot and registers its release at thread exit; `None` when
/// all slots are taken or the thread is already tearing down its locals.
fn claim() -> Option<usize> {
    RELEASE
        .try_with(|release| {
            let mut owned = OWNED.load(Ordering::Relaxed);
            loop {
                let slot = (!owned).trailing_zeros() as usize;
                if slot >= SHARDS {
                    return None;
                }
                // Acquire: the previous owner's stores into this slot's
                // stripes are visible before this thread's first load.
                match OWNED.compare_exchange_weak(
                    owned,
                    owned | (1 << slot),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        release.0.set(slot);
                        return Some(slot);
                    }
                    Err(seen) => owned = seen,
                }
            }
        })
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn stable_per_thread_and_in_range() {
        let here = current();
        assert_eq!(here.0, current().0);
        assert!(here.stripe() < STRIPES && here.spread() < SHARDS);
        assert_eq!(here.owned(), here.stripe() < SHARDS);
    }

    #[test]
    fn live_threads_own_distinct_slots_and_give_them_back() {
        // Other tests in this binary may hold slots too, so only properties
        // that hold whatever they do are asserted.
        let n = SHARDS + 4;
        let barrier = Barrier::new(n);
        let shards: Vec<Shard> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    s.spawn(|| {
                        let shard = current();
                        barrier.wait(); // all alive at once
                        shard
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let owned: Vec<usize> = shards.iter().filter(|s| s.owned()).map(|s| s.0).collect();
        let distinct: std::collections::BTreeSet<_> = owned.iter().collect();
        assert_eq!(distinct.len(), owned.len(), "an owned slot has one owner");
        assert!(shards.iter().filter(|s| !s.owned()).count() >= n - SHARDS);
        assert!(shards.iter().all(|s| s.owned() || s.stripe() == OVERFLOW));
        // Every thread above has exited and given its slot back, so a new
        // thread gets one, unless other tests' threads hold all of them at
        // that moment: retry for a while rather than race with them.
        let freed = (0..2_000).any(|_| {
            let owned = std::thread::spawn(|| current().owned()).join().unwrap();
            if !owned {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            owned
        });
        assert!(freed, "slots are given back when their threads exit");
    }

    #[test]
    fn add_is_exact_for_owners_and_sharers() {
        // 3 × SHARDS threads, all alive at once: most share the overflow
        // stripe, the rest own theirs; the total is exact either way.
        let n = 3 * SHARDS;
        let cells: [AtomicU64; STRIPES] = std::array::from_fn(|_| AtomicU64::new(0));
        let barrier = Barrier::new(n);
        std::thread::scope(|s| {
            for _ in 0..n {
                s.spawn(|| {
                    let shard = current();
                    barrier.wait();
                    for _ in 0..10_000 {
                        shard.add(&cells[shard.stripe()], 1);
                    }
                });
            }
        });
        let total: u64 = cells.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, (n * 10_000) as u64);
    }
}
