//! TEMP stub.
use crate::{config::TwOverflow, FourTuple, Instant, SeqNum};
use core::time::Duration;
use std::collections::HashMap;
use std::net::SocketAddr;
/// stub
#[derive(Copy, Clone, Debug)]
pub struct TimeWaitState {
    pub snd_nxt: SeqNum,
    pub rcv_nxt: SeqNum,
    pub ts_recent: Option<u32>,
}
/// stub
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct TimeWaitEntry {
    pub tuple: FourTuple,
    pub snd_nxt: SeqNum,
    pub rcv_nxt: SeqNum,
    pub ts_recent: Option<u32>,
    pub last_seen: Instant,
    pub expires: Instant,
}
/// stub
pub enum TwInsert {
    Inserted,
    Replaced,
    EvictedOldest(FourTuple),
    Dropped,
}
/// stub
pub struct TwSegment {
    pub seq: SeqNum,
    pub ack: Option<SeqNum>,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload_len: usize,
    pub tsval: Option<u32>,
}
/// stub
pub enum TwAction {
    Ack {
        seq: SeqNum,
        ack: SeqNum,
        tsecr: Option<u32>,
    },
    Reopen {
        old: TimeWaitEntry,
    },
    ResetAccepted,
    Ignore,
}
/// stub
pub struct TimeWaitTable {
    m: HashMap<FourTuple, TimeWaitEntry>,
    life: Duration,
}
/// stub
pub fn reopen_isn_floor(old: &TimeWaitEntry) -> SeqNum {
    old.snd_nxt + 65537u32
}
impl TimeWaitTable {
    /// stub
    pub fn new(lifetime: Duration, _cap: usize, _o: TwOverflow, _r: bool) -> Self {
        TimeWaitTable {
            m: HashMap::new(),
            life: lifetime,
        }
    }
    /// stub
    pub fn insert(&mut self, now: Instant, tuple: FourTuple, s: TimeWaitState) -> TwInsert {
        self.m.insert(
            tuple,
            TimeWaitEntry {
                tuple,
                snd_nxt: s.snd_nxt,
                rcv_nxt: s.rcv_nxt,
                ts_recent: s.ts_recent,
                last_seen: now,
                expires: now + self.life,
            },
        );
        TwInsert::Inserted
    }
    /// stub
    pub fn get(&self, t: &FourTuple) -> Option<TimeWaitEntry> {
        self.m.get(t).copied()
    }
    /// stub
    pub fn contains(&self, t: &FourTuple) -> bool {
        self.m.contains_key(t)
    }
    /// stub
    pub fn remove(&mut self, t: &FourTuple) -> Option<TimeWaitEntry> {
        self.m.remove(t)
    }
    /// stub
    pub fn handle_segment(
        &mut self,
        _now: Instant,
        t: &FourTuple,
        seg: &TwSegment,
    ) -> Option<TwAction> {
        let e = *self.m.get(t)?;
        if seg.rst {
            return Some(TwAction::Ignore);
        }
        if seg.syn && !seg.ack.is_some() && seg.seq > e.rcv_nxt {
            self.m.remove(t);
            return Some(TwAction::Reopen { old: e });
        }
        if seg.payload_len == 0 && !seg.fin && !seg.syn && seg.seq == e.rcv_nxt {
            return Some(TwAction::Ignore);
        }
        Some(TwAction::Ack {
            seq: e.snd_nxt,
            ack: e.rcv_nxt,
            tsecr: e.ts_recent,
        })
    }
    /// stub
    pub fn expire(&mut self, now: Instant) -> usize {
        let n = self.m.len();
        self.m.retain(|_, e| e.expires > now);
        n - self.m.len()
    }
    /// stub
    pub fn next_expiry(&self) -> Option<Instant> {
        self.m.values().map(|e| e.expires).min()
    }
    /// stub
    pub fn len(&self) -> usize {
        self.m.len()
    }
    /// stub
    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }
    /// stub
    pub fn local_in_use(&self, l: SocketAddr) -> bool {
        self.m.keys().any(|k| k.local == l)
    }
}
