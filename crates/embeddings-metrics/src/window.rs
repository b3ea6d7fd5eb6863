//! A ring of one-second slots counting events, for rates over the last
//! 10 s / 60 s without a background thread.

use std::sync::atomic::{AtomicU64, Ordering};

/// Slots in the ring: enough for the longest window (60 s).
pub(crate) const WINDOW_SLOTS: usize = 60;

/// Each slot packs `(second << 32) | count` into one `u64`, so stamping a slot
/// with a new second and counting in it is a single atomic step: a slot can
/// never hold a count from one second under the stamp of another. The second
/// is the clock's whole seconds modulo 2^32 (wraps after 136 years; ages are
/// compared with wrapping arithmetic). A slot saturates at 2^32 − 1 events
/// per second per stripe.
#[derive(Debug)]
pub(crate) struct Window {
    slots: [AtomicU64; WINDOW_SLOTS],
}

const COUNT_MASK: u64 = 0xFFFF_FFFF;

impl Window {
    pub(crate) fn new() -> Self {
        Self {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts one event in second `second`.
    #[inline]
    pub(crate) fn record(&self, second: u64) {
        let stamp = second & COUNT_MASK;
        let Some(slot) = self.slots.get((second % WINDOW_SLOTS as u64) as usize) else {
            return;
        };
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (slot_second, count) = (current >> 32, current & COUNT_MASK);
            let next = if slot_second == stamp {
                if count == COUNT_MASK {
                    return; // saturated; see the type's docs
                }
                current + 1
            } else if stamp.wrapping_sub(slot_second) & COUNT_MASK < (1 << 31) {
                // The slot holds an older second: start this second afresh.
                (stamp << 32) | 1
            } else {
                // The slot already moved past `second` (this thread stalled for
                // a whole ring): the event is older than any window; drop it.
                return;
            };
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Events in seconds `now - width + 1 ..= now`.
    pub(crate) fn sum_recent(&self, now: u64, width: u64) -> u64 {
        let stamp = now & COUNT_MASK;
        self.slots
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|packed| packed & COUNT_MASK != 0)
            .filter(|packed| stamp.wrapping_sub(packed >> 32) & COUNT_MASK < width)
            .map(|packed| packed & COUNT_MASK)
            .sum()
    }

    pub(crate) fn reset(&self) {
        for slot in &self.slots {
            slot.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_expire_after_the_window() {
        let w = Window::new();
        for s in 0..100 {
            w.record(s);
        }
        assert_eq!(w.sum_recent(99, 10), 10);
        assert_eq!(w.sum_recent(99, 60), 60);
        assert_eq!(w.sum_recent(159, 60), 0);
        assert_eq!(w.sum_recent(150, 60), 9);
        // A stale record (older than the slot's second) is dropped.
        w.record(39);
        assert_eq!(w.sum_recent(99, 60), 60);
    }
}
