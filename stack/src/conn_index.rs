//! The connection table's index: 4-tuple to connection slot.
//!
//! Every incoming segment is demultiplexed here, so under churn at scale this lookup is a
//! cache miss per packet if its entries are large. A general hash map would store the
//! whole 48-byte key next to each slot number (64 bytes with padding: one entry per cache
//! line). Here an entry is one `u64`: 32 bits of the key's hash and the slot number, eight
//! to a cache line. The key itself is not stored: a hit is confirmed against the
//! connection's own tuple, which the caller reads next anyway.
//!
//! Open addressing with linear probing, at most half full, and backward-shift deletion
//! (no tombstones, so lookups never slow down under churn). The hash is keyed by the
//! stack's secret, so remote peers cannot aim many tuples at one probe run.

use core::hash::BuildHasher;

use foldhash::fast::FixedState;

use crate::tuple::TupleKey;

const EMPTY: u64 = 0;
const MIN_CAPACITY: usize = 64;

/// 4-tuple → slot index.
#[derive(Clone, Debug)]
pub(crate) struct ConnIndex {
    /// `hash32 << 32 | (slot + 1)`, or [`EMPTY`].
    table: Vec<u64>,
    len: usize,
    hasher: FixedState,
}

impl ConnIndex {
    /// An empty index whose hash is keyed by `seed`.
    pub fn new(seed: u64) -> ConnIndex {
        ConnIndex {
            table: vec![EMPTY; MIN_CAPACITY],
            len: 0,
            hasher: FixedState::with_seed(seed),
        }
    }

    /// Number of entries.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn hash32(&self, key: &TupleKey) -> u32 {
        (self.hasher.hash_one(key) >> 32) as u32
    }

    #[inline]
    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    /// The slot of `key`. `is_key(slot, key)` must say whether a slot this index holds
    /// has that tuple; it is asked only for entries whose hash bits match.
    #[inline]
    pub fn get(&self, key: &TupleKey, is_key: impl Fn(u32, &TupleKey) -> bool) -> Option<u32> {
        let h = self.hash32(key);
        let mask = self.mask();
        let mut i = h as usize & mask;
        loop {
            let e = self.table[i];
            if e == EMPTY {
                return None;
            }
            if (e >> 32) as u32 == h {
                let slot = (e as u32).wrapping_sub(1);
                if is_key(slot, key) {
                    return Some(slot);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Records `key` → `slot`. The caller guarantees `key` is not present.
    pub fn insert(&mut self, key: &TupleKey, slot: u32) {
        debug_assert!(slot < u32::MAX);
        if (self.len + 1) * 2 > self.table.len() {
            self.grow();
        }
        let h = self.hash32(key);
        self.place(u64::from(h) << 32 | u64::from(slot + 1));
        self.len += 1;
    }

    fn place(&mut self, e: u64) {
        let mask = self.mask();
        let mut i = (e >> 32) as usize & mask;
        while self.table[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.table[i] = e;
    }

    fn grow(&mut self) {
        let doubled = vec![EMPTY; self.table.len() * 2];
        let old = core::mem::replace(&mut self.table, doubled);
        for e in old.into_iter().filter(|&e| e != EMPTY) {
            self.place(e);
        }
    }

    /// Removes the entry of `key`, which must point at `slot` (the slot number makes the
    /// entry unambiguous without reading any connection). Returns whether it was there.
    pub fn remove(&mut self, key: &TupleKey, slot: u32) -> bool {
        let h = self.hash32(key);
        let want = u64::from(h) << 32 | u64::from(slot + 1);
        let mask = self.mask();
        let mut i = h as usize & mask;
        loop {
            let e = self.table[i];
            if e == EMPTY {
                return false;
            }
            if e == want {
                break;
            }
            i = (i + 1) & mask;
        }
        // Backward-shift: pull later entries of the run into the hole when the hole lies
        // between their home position and where they sit, so no probe run is broken.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let e = self.table[j];
            if e == EMPTY {
                break;
            }
            let home = (e >> 32) as usize & mask;
            // Distance from home to j, and from home to the hole, around the ring.
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.table[hole] = e;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.table[hole] = EMPTY;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuple::FourTuple;
    use std::collections::HashMap;
    use std::net::SocketAddr;

    fn key(n: u32) -> TupleKey {
        let t = FourTuple::new(
            SocketAddr::from(([192, 0, 2, 1], 1024 + (n % 60_000) as u16)),
            SocketAddr::from(([198, 51, 100, (n / 60_000) as u8], 80)),
        );
        TupleKey::from(&t)
    }

    /// Random inserts and removes against a HashMap model, with enough entries to grow
    /// several times and a seed that makes long probe runs likely with a small table.
    #[test]
    fn matches_a_hashmap() {
        let mut idx = ConnIndex::new(7);
        let mut model: HashMap<TupleKey, u32> = HashMap::new();
        // slot -> key, as the stack's slots would answer.
        let mut slots: Vec<Option<TupleKey>> = Vec::new();
        let mut free: Vec<u32> = Vec::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for step in 0..300_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = key((x % 50_000) as u32);
            let grow_phase = (step / 50_000) % 2 == 0;
            if let Some(&s) = model.get(&k) {
                if x.is_multiple_of(3) || !grow_phase {
                    assert!(idx.remove(&k, s));
                    model.remove(&k);
                    slots[s as usize] = None;
                    free.push(s);
                }
            } else if grow_phase || x.is_multiple_of(4) {
                let s = free.pop().unwrap_or_else(|| {
                    slots.push(None);
                    (slots.len() - 1) as u32
                });
                slots[s as usize] = Some(k);
                idx.insert(&k, s);
                model.insert(k, s);
            }
            assert_eq!(idx.len(), model.len());
            let probe = key((x >> 20) as u32 % 50_000);
            let got = idx.get(&probe, |s, k| slots[s as usize] == Some(*k));
            assert_eq!(got, model.get(&probe).copied());
        }
        for (k, s) in &model {
            assert_eq!(idx.get(k, |s, k| slots[s as usize] == Some(*k)), Some(*s));
        }
        assert!(idx.table.len() >= 2 * idx.len());
    }

    /// Tuples that differ only in a port or in the low bits of an address (what churn
    /// produces) spread like random keys: mean displacement from the home position stays
    /// near linear probing's expectation at this load (about 0.5 at half full).
    #[test]
    fn sequential_tuples_spread() {
        for seed in [0, 1, u64::MAX, 0x5eed_f00d] {
            let mut idx = ConnIndex::new(seed);
            let n = 60_000u32;
            for i in 0..n {
                idx.insert(&key(i), i);
            }
            let mask = idx.mask();
            let mut displaced = 0usize;
            for (pos, &e) in idx.table.iter().enumerate() {
                if e != EMPTY {
                    let home = (e >> 32) as usize & mask;
                    displaced += pos.wrapping_sub(home) & mask;
                }
            }
            let mean = displaced as f64 / n as f64;
            assert!(mean < 1.5, "seed {seed}: mean displacement {mean}");
        }
    }

    #[test]
    fn remove_needs_the_right_slot() {
        let mut idx = ConnIndex::new(1);
        idx.insert(&key(1), 5);
        assert!(!idx.remove(&key(1), 6));
        assert!(!idx.remove(&key(2), 5));
        assert!(idx.remove(&key(1), 5));
        assert_eq!(idx.len(), 0);
        assert_eq!(idx.get(&key(1), |_, _| true), None);
    }
}
