//! Which stripe ("shard") the current thread writes to.
//!
//! Hot cells are replicated [`SHARDS`] times, each copy on its own cache
//! line(s); a thread always writes the copy picked here and readers sum all
//! copies. Threads are assigned round-robin on first use, so up to `SHARDS`
//! concurrent writers never share a cache line, and more writers than that
//! share evenly instead of all piling onto one line.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Number of stripes (per-thread shards) per hot structure. A power of two so the index is a mask.
///
/// Eight covers the common "a handful of worker threads" deployment; beyond
/// eight writers, threads share stripes two (or more) to one, which costs
/// contention but never correctness.
pub const SHARDS: usize = 8;

/// Mask applied to every shard index so the compiler can drop bounds checks.
pub(crate) const SHARD_MASK: usize = SHARDS - 1;

const UNASSIGNED: usize = usize::MAX;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` initialisation and no destructor: the access compiles to a plain
    // TLS load, and the slot stays usable during thread-exit destructors.
    static SHARD: Cell<usize> = const { Cell::new(UNASSIGNED) };
}

/// The stripe of the calling thread, in `0..SHARDS`.
#[inline]
pub(crate) fn current() -> usize {
    // `try_with` cannot fail for a const, destructor-less key, but falling
    // back to stripe 0 keeps recording panic-free even if that ever changed.
    SHARD
        .try_with(|cell| {
            let shard = cell.get();
            if shard == UNASSIGNED {
                assign(cell)
            } else {
                shard
            }
        })
        .unwrap_or(0)
        & SHARD_MASK
}

#[cold]
fn assign(cell: &Cell<usize>) -> usize {
    let shard = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) & SHARD_MASK;
    cell.set(shard);
    shard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_per_thread_and_spread_across_threads() {
        let here = current();
        assert_eq!(here, current());
        let others: Vec<usize> = (0..SHARDS)
            .map(|_| std::thread::spawn(current).join().unwrap())
            .collect();
        assert!(others.iter().all(|s| *s < SHARDS));
        // Consecutive new threads get distinct stripes (round robin).
        let distinct: std::collections::BTreeSet<_> = others.iter().collect();
        assert!(distinct.len() >= SHARDS / 2, "{others:?}");
    }
}
