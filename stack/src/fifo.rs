//! A first-in first-out queue of small `Copy` items on a plain `Vec`.
//!
//! The stack's transmit and event queues take a push and a pop for nearly every packet
//! and application call, and drain to empty after every driver batch. `VecDeque` pays
//! for wrap-around index arithmetic on each of those; here a push is a `Vec::push` and a
//! pop reads at a cursor. The vector resets when the queue drains, and the consumed
//! prefix is compacted away when it dominates, so a queue that never drains still uses
//! memory in proportion to what it holds.

/// The consumed prefix is compacted once it is at least this long and at least half
/// the vector: amortised O(1) per pop, and no copying at all for short queues.
const COMPACT_AT: usize = 1024;

/// FIFO queue of `Copy` items.
#[derive(Debug, Clone)]
pub(crate) struct Fifo<T> {
    items: Vec<T>,
    head: usize,
}

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo {
            items: Vec::new(),
            head: 0,
        }
    }
}

impl<T: Copy> Fifo<T> {
    /// Appends an item.
    #[inline]
    pub fn push_back(&mut self, item: T) {
        self.items.push(item);
    }

    /// The oldest item, without removing it.
    #[inline]
    pub fn front(&self) -> Option<T> {
        self.items.get(self.head).copied()
    }

    /// Removes and returns the oldest item.
    #[inline]
    pub fn pop_front(&mut self) -> Option<T> {
        let item = *self.items.get(self.head)?;
        self.head += 1;
        if self.head == self.items.len() {
            // Drained: start over at the front of the same allocation.
            self.items.clear();
            self.head = 0;
        } else if self.head >= COMPACT_AT && self.head * 2 >= self.items.len() {
            self.items.drain(..self.head);
            self.head = 0;
        }
        Some(item)
    }

    /// Number of queued items.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len() - self.head
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Random pushes and pops (with long runs of each, so the queue both drains and
    /// grows past the compaction point) agree with `VecDeque` item for item.
    #[test]
    fn matches_vecdeque() {
        let mut fifo = Fifo::default();
        let mut model = VecDeque::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = 0u32;
        for round in 0..2_000 {
            // Phases that mostly push, then mostly pop.
            let push_bias = if round % 7 < 4 { 3 } else { 1 };
            for _ in 0..(x % 3000) as usize {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x % 4 < push_bias {
                    fifo.push_back(next);
                    model.push_back(next);
                    next += 1;
                } else {
                    assert_eq!(fifo.pop_front(), model.pop_front());
                }
                assert_eq!(fifo.front(), model.front().copied());
                assert_eq!(fifo.len(), model.len());
            }
            // Compaction keeps the vector within twice what it holds (or the threshold).
            assert!(fifo.items.len() <= (2 * fifo.len()).max(2 * COMPACT_AT) + 1);
        }
        while let Some(v) = model.pop_front() {
            assert_eq!(fifo.pop_front(), Some(v));
        }
        assert_eq!(fifo.pop_front(), None);
        assert!(fifo.items.is_empty());
    }
}
