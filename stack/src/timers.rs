//! Connection timers: an indexed binary min-heap holding at most one deadline per
//! connection slot.
//!
//! Each connection has one "next deadline" (the earliest of its RTO, delayed-ACK,
//! keepalive and FIN-WAIT-2 timers). A plain heap with lazy cancellation grows with every
//! reschedule and pays a pop for every stale entry; under connection churn nearly all
//! entries go stale. Here the heap position of each slot is tracked, so moving a deadline
//! is a sift and freeing a connection removes its entry: the heap only ever holds live
//! connections' deadlines, and `peek` is exact.

use crate::time::Instant;

/// Marks a slot with no entry in the heap.
const NONE: u32 = u32::MAX;

/// Deadlines keyed by connection slot index.
#[derive(Debug, Default)]
pub(crate) struct TimerHeap {
    /// (deadline, slot), a min-heap on the deadline.
    heap: Vec<(Instant, u32)>,
    /// For each slot, its index in `heap` or `NONE`. Kept apart from the TCBs so sifting
    /// touches two dense arrays, not connection state.
    pos: Vec<u32>,
}

impl TimerHeap {
    /// Number of scheduled deadlines.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// The earliest deadline and its slot.
    pub fn peek(&self) -> Option<(Instant, u32)> {
        self.heap.first().copied()
    }

    /// The deadline scheduled for `slot`.
    #[cfg(test)]
    pub fn get(&self, slot: u32) -> Option<Instant> {
        let p = *self.pos.get(slot as usize)?;
        (p != NONE).then(|| self.heap[p as usize].0)
    }

    /// Schedules `slot` at `at`, replacing its previous deadline; `None` unschedules it.
    pub fn set(&mut self, slot: u32, at: Option<Instant>) {
        let s = slot as usize;
        if s >= self.pos.len() {
            if at.is_none() {
                return;
            }
            self.pos.resize(s + 1, NONE);
        }
        let p = self.pos[s];
        match (p == NONE, at) {
            (true, None) => {}
            (true, Some(at)) => {
                let i = self.heap.len();
                self.heap.push((at, slot));
                self.pos[s] = i as u32;
                self.sift_up(i);
            }
            (false, None) => self.remove_at(p as usize),
            (false, Some(at)) => {
                let i = p as usize;
                let old = self.heap[i].0;
                self.heap[i].0 = at;
                if at < old {
                    self.sift_up(i);
                } else if at > old {
                    self.sift_down(i);
                }
            }
        }
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, u32)> {
        let first = *self.heap.first()?;
        if first.0 > now {
            return None;
        }
        self.remove_at(0);
        Some(first)
    }

    fn remove_at(&mut self, i: usize) {
        let last = self.heap.len() - 1;
        let gone = self.heap[i].1;
        self.heap.swap(i, last);
        self.heap.pop();
        self.pos[gone as usize] = NONE;
        if i < last {
            let moved = self.heap[i].1;
            self.pos[moved as usize] = i as u32;
            // The entry moved in from the end may belong above or below.
            let i = self.sift_up(i);
            self.sift_down(i);
        }
    }

    fn sift_up(&mut self, mut i: usize) -> usize {
        let item = self.heap[i];
        while i > 0 {
            let parent = (i - 1) / 2;
            let p = self.heap[parent];
            if p.0 <= item.0 {
                break;
            }
            self.heap[i] = p;
            self.pos[p.1 as usize] = i as u32;
            i = parent;
        }
        self.heap[i] = item;
        self.pos[item.1 as usize] = i as u32;
        i
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        let item = self.heap[i];
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let c = if r < n && self.heap[r].0 < self.heap[l].0 {
                r
            } else {
                l
            };
            let child = self.heap[c];
            if item.0 <= child.0 {
                break;
            }
            self.heap[i] = child;
            self.pos[child.1 as usize] = i as u32;
            i = c;
        }
        self.heap[i] = item;
        self.pos[item.1 as usize] = i as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn t(us: u64) -> Instant {
        Instant::from_micros(us)
    }

    /// Against a model (slot -> deadline map): random sets, unsets and pops keep the same
    /// contents, and pops come out in deadline order.
    #[test]
    fn matches_a_model() {
        let mut h = TimerHeap::default();
        let mut model: BTreeMap<u32, Instant> = BTreeMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut now = 0u64;
        for _ in 0..200_000 {
            let r = next();
            let slot = (r % 300) as u32;
            match (r >> 16) % 4 {
                0 | 1 => {
                    let at = t(now + (r >> 24) % 10_000);
                    h.set(slot, Some(at));
                    model.insert(slot, at);
                }
                2 => {
                    h.set(slot, None);
                    model.remove(&slot);
                }
                _ => {
                    now += (r >> 24) % 500;
                    let mut last = t(0);
                    while let Some((at, s)) = h.pop_due(t(now)) {
                        assert!(at >= last, "pops in deadline order");
                        last = at;
                        assert_eq!(model.remove(&s), Some(at));
                    }
                    assert!(model.values().all(|&at| at > t(now)), "nothing due is left");
                }
            }
            assert_eq!(h.len(), model.len());
            assert_eq!(h.peek().map(|p| p.0), model.values().min().copied());
            if r % 97 == 0 {
                for (&s, &at) in &model {
                    assert_eq!(h.get(s), Some(at));
                }
            }
        }
    }

    #[test]
    fn unset_of_unknown_slot_is_a_no_op() {
        let mut h = TimerHeap::default();
        h.set(1_000_000, None);
        assert_eq!(h.len(), 0);
        assert!(h.pos.is_empty());
        h.set(3, Some(t(5)));
        h.set(3, Some(t(9)));
        assert_eq!(h.peek(), Some((t(9), 3)));
        assert_eq!(h.pop_due(t(8)), None);
        assert_eq!(h.pop_due(t(9)), Some((t(9), 3)));
        assert_eq!(h.get(3), None);
    }
}
