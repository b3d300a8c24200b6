//! The TIME_WAIT table: what is left of a connection after this host closed first.
//!
//! It owns, for each 4-tuple in TIME-WAIT, exactly what RFC 9293 §3.10.7.4 needs to answer
//! stray segments (snd_nxt, rcv_nxt, TS.Recent when RFC 7323 timestamps were in use) and the
//! 2*MSL expiry, and it decides what each arriving segment gets ([`TwAction`]). It never
//! builds or sends packets and never reads a clock: every entry point takes `now`.
//!
//! # Storage
//!
//! All entries share one lifetime, so expiry order is insertion order: entries live in a ring
//! of compact slots in expiry order, and expiring is popping from the front, O(1) per entry.
//! The ring is a FIFO of fixed chunks of at most 64 KiB (not a doubling `VecDeque`), so its memory
//! follows the number of slots and growing never copies them.
//!
//! The index maps a 4-tuple to its slot's *absolute position* (a wrapping counter; ring
//! index = position - position of the front). It is bucketised open addressing: a bucket
//! is one cache line with seven (32-bit hash, position) pairs and a count of entries that
//! overflowed past it; a 4-byte side word per bucket (used bits and a small Bloom summary,
//! small enough to stay in cache) answers most misses alone, and a hit reads the bucket
//! line and then the ring slot whose key it compares. The key is stored once, in the
//! ring; the index costs 8 bytes per entry at up to 79% load plus the side words, and
//! resizes (by 1.5x, any bucket count) from the stored hashes without reading the ring.
//!
//! Removing an entry from the middle (remove, RST, reopen, eviction) marks its slot dead (a
//! tombstone) and deletes it from the index; restarting the 2MSL timer (retransmitted FIN,
//! re-insert) kills the old slot and pushes a fresh one at the tail. Dead slots are popped
//! as soon as they reach the front, and the ring is compacted when dead slots outnumber
//! live ones, so the ring never holds more than about twice the live entries.
//!
//! An IPv4 slot is 28 bytes: the 12-byte key, snd_nxt, rcv_nxt, TS.Recent and one `u32`
//! holding the alive flag, the has-timestamp flag and the expiry in milliseconds relative to
//! the table's epoch (30 bits: about 12.4 days). The epoch is rebased, an O(n) pass, only
//! when an expiry would leave that range, so at most once every ~6 days of table time. Every
//! other tuple (IPv6, or mixed families) goes into a second lane of the same shape keyed by
//! the whole [`FourTuple`], which is exact but less compact.
//!
//! Expiries are kept at millisecond resolution and rounded up: an entry never expires early,
//! and at most 1 ms late.
//!
//! # Hashing
//!
//! Remote peers choose the remote half of every key, so the index uses a keyed hash:
//! foldhash seeded with a per-table secret. [`TimeWaitTable::with_seed`] takes the key
//! from the caller (the stack passes its secret); [`TimeWaitTable::new`] draws one from
//! hashbrown's default `RandomState` (ASLR and time seeded). SipHash-1-3 was the first
//! choice; measured under churn it cost about a tenth of all the work, and foldhash is the
//! family the connection table already trusts. The seed never changes behaviour,
//! only bucket placement: iteration follows the ring, so it is deterministic.

use core::hash::{BuildHasher, Hash, Hasher};
use core::time::Duration;
use std::collections::VecDeque;
use std::net::{SocketAddr, SocketAddrV4};

use fourtuple_hint::prefetch;
use hashbrown::HashMap;

use crate::config::TwOverflow;
use crate::seq::SeqNum;
use crate::time::Instant;
use crate::tuple::FourTuple;

/// What a connection hands to the table when it enters TIME-WAIT.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct TimeWaitState {
    /// SND.NXT at the close: the sequence number of our next (never sent) byte, past our FIN.
    pub snd_nxt: SeqNum,
    /// RCV.NXT at the close: past the peer's FIN.
    pub rcv_nxt: SeqNum,
    /// TS.Recent (RFC 7323 §4.3) when both sides used timestamps, else `None`.
    pub ts_recent: Option<u32>,
}

/// One TIME_WAIT entry as the table reports it.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct TimeWaitEntry {
    /// The exact 4-tuple of the closed connection.
    pub tuple: FourTuple,
    /// SND.NXT of the closed connection.
    pub snd_nxt: SeqNum,
    /// RCV.NXT of the closed connection.
    pub rcv_nxt: SeqNum,
    /// TS.Recent when timestamps were in use.
    pub ts_recent: Option<u32>,
    /// When the 2MSL timer was last (re)started: `expires - lifetime`.
    pub last_seen: Instant,
    /// When the entry expires (millisecond resolution, rounded up).
    pub expires: Instant,
}

/// Outcome of [`TimeWaitTable::insert`].
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum TwInsert {
    /// A new entry was added.
    Inserted,
    /// The tuple already had an entry; it was overwritten and its timer restarted.
    Replaced,
    /// The table was full: this (oldest) entry was evicted to make room, and the new entry
    /// was added ([`TwOverflow::EvictOldest`]).
    EvictedOldest(FourTuple),
    /// The table was full under [`TwOverflow::DropNew`]: nothing was inserted.
    Dropped,
}

/// The parts of an arriving segment that TIME-WAIT processing looks at.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub struct TwSegment {
    /// SEG.SEQ.
    pub seq: SeqNum,
    /// SEG.ACK when the ACK bit is set.
    pub ack: Option<SeqNum>,
    /// SYN bit.
    pub syn: bool,
    /// FIN bit.
    pub fin: bool,
    /// RST bit.
    pub rst: bool,
    /// Payload bytes (not counting SYN or FIN).
    pub payload_len: usize,
    /// TSval of the RFC 7323 timestamp option, when present.
    pub tsval: Option<u32>,
}

/// What the caller must do with a segment that hit a TIME_WAIT entry.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum TwAction {
    /// Answer with an ACK: seq = entry snd_nxt, ack = entry rcv_nxt, tsecr = ts_recent when timestamps were in use.
    Ack {
        /// SEG.SEQ of the ACK to send (the entry's snd_nxt).
        seq: SeqNum,
        /// SEG.ACK of the ACK to send (the entry's rcv_nxt).
        ack: SeqNum,
        /// TSecr to echo, when timestamps were in use.
        tsecr: Option<u32>,
    },
    /// SYN may reopen: the entry has been removed; the caller hands the SYN to a listener and must choose an ISN greater than `old.snd_nxt` (use `reopen_isn_floor`).
    Reopen {
        /// The removed entry.
        old: TimeWaitEntry,
    },
    /// RST accepted (only when rfc1337 is false and seq == rcv_nxt): entry removed.
    ResetAccepted,
    /// Nothing to send (RST ignored per RFC 1337, or an acceptable pure ACK with nothing in it).
    Ignore,
}

/// Counters of everything the table did, since it was created.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwStats {
    /// New entries added (including those that evicted another).
    pub inserted: u64,
    /// Inserts that overwrote an existing entry for the same tuple.
    pub replaced: u64,
    /// Entries dropped by [`TimeWaitTable::expire`] (or by an insert into a full table).
    pub expired: u64,
    /// Entries taken out with [`TimeWaitTable::remove`].
    pub removed: u64,
    /// Entries ended by a SYN that may reopen the tuple.
    pub reopened: u64,
    /// SYNs refused as old duplicates (answered with an ACK).
    pub old_duplicates: u64,
    /// Retransmitted FINs re-ACKed (each restarted the timer).
    pub fin_reacked: u64,
    /// ACKs the caller was told to send.
    pub acks_sent: u64,
    /// RSTs ignored (RFC 1337, or not exactly at rcv_nxt).
    pub rst_ignored: u64,
    /// RSTs that ended an entry.
    pub rst_accepted: u64,
    /// Segments rejected by PAWS (RFC 7323 §5).
    pub paws_rejected: u64,
    /// Entries evicted because the table was full.
    pub evicted_oldest: u64,
    /// New entries refused because the table was full.
    pub dropped_full: u64,
}

/// Lowest acceptable ISN for a reopened incarnation: old snd_nxt + 65537 (as Linux does), so the new ISN is above everything the old one sent.
///
/// RFC 1122 §4.2.2.13 lets a SYN reopen TIME-WAIT only if the new connection's ISN is
/// larger than the largest sequence number used for the previous one; 65537 is Linux's
/// margin (one maximal unscaled window plus one) in `tcp_timewait_state_process`.
pub fn reopen_isn_floor(old: &TimeWaitEntry) -> SeqNum {
    old.snd_nxt + 65537u32
}

/// Slot flag: the slot is a live entry (else a tombstone awaiting removal).
const ALIVE: u32 = 1 << 31;
/// Slot flag: `ts_recent` is meaningful.
const HAS_TS: u32 = 1 << 30;
/// Low 30 bits of `meta`: expiry in ms after the table's epoch (~12.4 days of range).
const EXP_MASK: u32 = HAS_TS - 1;
/// Longest supported lifetime: half the expiry range (~6.2 days), so that a rebase always
/// buys at least another lifetime of room. Windows' 240 s maximum is far below it.
pub const MAX_LIFETIME: Duration = Duration::from_millis(EXP_MASK as u64 / 2);
/// Largest supported cap: slot positions are `u32` and the ring holds at most about twice
/// the live entries.
pub const MAX_CAP: usize = 1 << 30;
/// Tombstones tolerated regardless of the live count, so small tables don't compact often.
const MIN_COMPACT: usize = 64;
/// Index lines loaded ahead, together, by bulk removals (expiry, compaction).
const WARM_BATCH: usize = 8;
/// Below this many index buckets (64 B each: 4 MiB) the index stays in the caches, and
/// loading lines ahead is only a second hash per removal: connection churn with a small
/// table pays for it in every expiry.
const WARM_MIN_BUCKETS: usize = 1 << 16;
/// Tuples per round of [`TimeWaitTable::prefetch`]: each round's loads are in flight
/// together. At 10M entries on a 2-core EPYC VM a lookup after prefetching took 81-86 ns
/// in rounds of 8, 77-78 in rounds of 16, 85 in rounds of 32 and 83-86 in rounds of 64
/// (a freshly filled table); under steady insert and expiry churn 16 and 32 were
/// indistinguishable (88-105 ns).
pub const PREFETCH_GROUP: usize = 32;
/// Capacities below this are never shrunk.
const MIN_SHRINK: usize = 1024;

/// The index hasher: foldhash keyed with a per-table secret seed, as a `BuildHasher`.
///
/// SipHash-1-3 was measured at about a tenth of the whole churn workload (every SYN and
/// every connect probes this table); keyed foldhash, the same family the connection table
/// uses, costs a fraction of that while bucket placement stays unpredictable to peers
/// that do not know the seed.
#[derive(Clone, Copy)]
struct SipBuild {
    k0: u64,
    k1: u64,
}

impl BuildHasher for SipBuild {
    type Hasher = foldhash::fast::FoldHasher<'static>;
    fn build_hasher(&self) -> Self::Hasher {
        foldhash::fast::FixedState::with_seed(self.k0 ^ self.k1.rotate_left(29)).build_hasher()
    }
}

/// A key type of one lane.
trait Key: Copy + Eq + Hash {
    /// The local half, for the local-port policy counts.
    type Local: Copy + Eq + Hash;
    fn local(&self) -> Self::Local;
    fn tuple(&self) -> FourTuple;
}

/// Compact IPv4 key: 12 bytes, alignment 4.
#[derive(Copy, Clone, PartialEq, Eq)]
struct V4Key {
    local_ip: u32,
    remote_ip: u32,
    local_port: u16,
    remote_port: u16,
}

impl Hash for V4Key {
    // Two writes instead of four: SipHash cost is per compression round, and this keeps
    // the 12 bytes in one and a half words. Consistent with the derived `Eq`.
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(((self.local_ip as u64) << 32) | self.remote_ip as u64);
        h.write_u32(((self.local_port as u32) << 16) | self.remote_port as u32);
    }
}

impl Key for V4Key {
    type Local = (u32, u16);
    fn local(&self) -> (u32, u16) {
        (self.local_ip, self.local_port)
    }
    fn tuple(&self) -> FourTuple {
        FourTuple::new(
            SocketAddr::V4(SocketAddrV4::new(self.local_ip.into(), self.local_port)),
            SocketAddr::V4(SocketAddrV4::new(self.remote_ip.into(), self.remote_port)),
        )
    }
}

impl Key for FourTuple {
    type Local = SocketAddr;
    fn local(&self) -> SocketAddr {
        self.local
    }
    fn tuple(&self) -> FourTuple {
        *self
    }
}

/// Which lane a tuple belongs to, with its key.
enum Route {
    V4(V4Key),
    Wide(FourTuple),
}

fn route(t: &FourTuple) -> Route {
    match (t.local, t.remote) {
        (SocketAddr::V4(l), SocketAddr::V4(r)) => Route::V4(V4Key {
            local_ip: (*l.ip()).into(),
            remote_ip: (*r.ip()).into(),
            local_port: l.port(),
            remote_port: r.port(),
        }),
        _ => Route::Wide(*t),
    }
}

fn v4_local(a: &SocketAddrV4) -> (u32, u16) {
    ((*a.ip()).into(), a.port())
}

/// One ring slot. In declaration order (`repr(C)`): [`Slot::prefetch`] relies on the key
/// coming first and `meta` last.
#[derive(Copy, Clone)]
#[repr(C)]
struct Slot<K> {
    key: K,
    snd_nxt: u32,
    rcv_nxt: u32,
    ts_recent: u32,
    /// ALIVE | HAS_TS | expiry offset (ms after the epoch).
    meta: u32,
}

impl<K: Key> Slot<K> {
    fn new(key: K, st: &TimeWaitState, exp_off: u32) -> Slot<K> {
        Slot {
            key,
            snd_nxt: st.snd_nxt.raw(),
            rcv_nxt: st.rcv_nxt.raw(),
            ts_recent: st.ts_recent.unwrap_or(0),
            meta: ALIVE | if st.ts_recent.is_some() { HAS_TS } else { 0 } | exp_off,
        }
    }
    fn alive(&self) -> bool {
        self.meta & ALIVE != 0
    }
    /// Prefetches the first and the last field, so both cache lines of a slot that
    /// straddles two get loaded (a 28-byte IPv4 slot does in 6 of 16 positions).
    #[inline]
    fn prefetch(&self) {
        prefetch(&self.key);
        prefetch(&self.meta);
    }
    fn ts(&self) -> Option<u32> {
        (self.meta & HAS_TS != 0).then_some(self.ts_recent)
    }
    fn exp_off(&self) -> u32 {
        self.meta & EXP_MASK
    }
    fn expires_us(&self, epoch_ms: u64) -> u64 {
        (epoch_ms + self.exp_off() as u64).saturating_mul(1000)
    }
    fn entry(&self, epoch_ms: u64, lifetime_us: u64) -> TimeWaitEntry {
        let expires = self.expires_us(epoch_ms);
        TimeWaitEntry {
            tuple: self.key.tuple(),
            snd_nxt: SeqNum(self.snd_nxt),
            rcv_nxt: SeqNum(self.rcv_nxt),
            ts_recent: self.ts(),
            last_seen: Instant::from_micros(expires.saturating_sub(lifetime_us)),
            expires: Instant::from_micros(expires),
        }
    }
    fn ack(&self) -> TwAction {
        TwAction::Ack {
            seq: SeqNum(self.snd_nxt),
            ack: SeqNum(self.rcv_nxt),
            tsecr: self.ts(),
        }
    }
}

/// Bytes per ring chunk: small enough that a mostly empty chunk at each end of a small
/// table costs little and that chunks come from the heap, not from mmap (glibc's
/// threshold starts at 128 KiB), large enough that the chunk directory stays in cache.
const CHUNK_BYTES: usize = 64 * 1024;

/// A FIFO of `T` in fixed-size chunks, indexed from the front.
///
/// A `VecDeque` doubles: past a power of two the ring would cost up to twice the live
/// bytes (55 B per entry at 10M instead of 28). Chunks make the allocation follow the
/// length, and growing never copies the slots. Chunks emptied at the front are recycled
/// at the back (one spare), so steady insert/expire churn allocates nothing.
struct Ring<T> {
    /// Every chunk has capacity `Self::CHUNK`; all but the last are full.
    chunks: VecDeque<Vec<T>>,
    /// Slots of `chunks[0]` already popped.
    front: usize,
    len: usize,
    spare: Option<Vec<T>>,
}

impl<T: Copy> Ring<T> {
    /// log2 of the slots per chunk: the largest power of two that fits [`CHUNK_BYTES`].
    const SHIFT: u32 = (CHUNK_BYTES / core::mem::size_of::<T>()).ilog2();
    const CHUNK: usize = 1 << Self::SHIFT;
    const MASK: usize = Self::CHUNK - 1;

    fn new() -> Self {
        Ring {
            chunks: VecDeque::new(),
            front: 0,
            len: 0,
            spare: None,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let j = i + self.front;
        self.chunks.get(j >> Self::SHIFT)?.get(j & Self::MASK)
    }

    fn front(&self) -> Option<&T> {
        self.get(0)
    }

    fn back(&self) -> Option<&T> {
        self.chunks.back()?.last()
    }

    fn push_back(&mut self, x: T) {
        match self.chunks.back_mut() {
            Some(c) if c.len() < Self::CHUNK => c.push(x),
            _ => {
                let mut c = self
                    .spare
                    .take()
                    .unwrap_or_else(|| Vec::with_capacity(Self::CHUNK));
                c.push(x);
                self.chunks.push_back(c);
            }
        }
        self.len += 1;
    }

    fn pop_front(&mut self) -> Option<T> {
        let x = *self.front()?;
        self.front += 1;
        self.len -= 1;
        if self.front == Self::CHUNK || self.len == 0 {
            if let Some(mut c) = self.chunks.pop_front() {
                c.clear();
                self.spare = Some(c);
            }
            self.front = 0;
        }
        Some(x)
    }

    /// Keeps the first `n` slots.
    fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        self.len = n;
        if n == 0 {
            self.front = 0;
            self.spare = self.chunks.pop_front().or(self.spare.take());
            self.chunks.clear();
        } else {
            let end = self.front + n;
            let keep = (end - 1) / Self::CHUNK + 1;
            while self.chunks.len() > keep {
                self.spare = self.chunks.pop_back();
            }
            if let Some(c) = self.chunks.back_mut() {
                c.truncate(end - (keep - 1) * Self::CHUNK);
            }
        }
        if let Some(c) = self.spare.as_mut() {
            c.clear();
        }
    }

    fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        let front = self.front;
        self.chunks
            .iter()
            .enumerate()
            .flat_map(move |(i, c)| c[if i == 0 { front } else { 0 }..].iter())
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        let front = self.front;
        self.chunks
            .iter_mut()
            .enumerate()
            .flat_map(move |(i, c)| c[if i == 0 { front } else { 0 }..].iter_mut())
    }

    /// Whether [`shrink`](Self::shrink) has anything to give back.
    #[inline]
    fn can_shrink(&self) -> bool {
        if self.len == 0 {
            self.chunks.capacity() != 0 || self.spare.is_some()
        } else {
            self.chunks.capacity() > 2 * self.chunks.len() + 16
        }
    }

    /// Frees what an empty ring holds and the directory's excess.
    fn shrink(&mut self) {
        if self.len == 0 {
            self.chunks = VecDeque::new();
            self.spare = None;
            self.front = 0;
        } else if self.chunks.capacity() > 2 * self.chunks.len() + 16 {
            self.chunks.shrink_to(self.chunks.len() + 8);
        }
    }

    /// Heap bytes held: chunks (the spare included) and the chunk directory.
    fn allocation_size(&self) -> usize {
        let chunk = |c: &Vec<T>| c.capacity() * core::mem::size_of::<T>();
        self.chunks.iter().map(chunk).sum::<usize>()
            + self.spare.as_ref().map_or(0, chunk)
            + self.chunks.capacity() * core::mem::size_of::<Vec<T>>()
    }
}

impl<T: Copy> core::ops::Index<usize> for Ring<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        debug_assert!(i < self.len);
        let j = i + self.front;
        &self.chunks[j >> Self::SHIFT][j & Self::MASK]
    }
}

impl<T: Copy> core::ops::IndexMut<usize> for Ring<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        debug_assert!(i < self.len);
        let j = i + self.front;
        &mut self.chunks[j >> Self::SHIFT][j & Self::MASK]
    }
}

/// Slots per index bucket: seven (hash, position) pairs and an overflow count fill one
/// cache line.
const B_SLOTS: usize = 7;
/// The used-slot bits of a side word.
const USED_MASK: u32 = (1 << B_SLOTS) - 1;
/// Side-word flag: the bucket's overflow count is not 0.
const OVER_BIT: u32 = 1 << B_SLOTS;

/// One cache line of the index: for each slot, the entry's 32-bit hash and its ring
/// position.
///
/// `tags[7]` counts (doubled) the entries whose probe passed this bucket because it was
/// full (they live in a later bucket); while it is 0 a lookup can stop here, and deletions
/// need no tombstones.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    /// `tags[..7]`: the slots' hashes (odd; 0 when empty); `tags[7]`: twice the overflow
    /// count (even, so it never matches a hash), kept in the same array so that one
    /// 8-lane compare covers the slots.
    tags: [u32; 8],
    pos: [u32; B_SLOTS],
    _pad: u32,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        tags: [0; 8],
        pos: [0; B_SLOTS],
        _pad: 0,
    };

    /// Slots whose hash is `h` (odd), as a bit mask. Empty slots (0) and the overflow
    /// lane (even) never match, so neither needs masking.
    #[inline]
    fn matches(&self, h: u32) -> u32 {
        let mut m = 0;
        for (i, &x) in self.tags.iter().enumerate() {
            m |= ((x == h) as u32) << i;
        }
        m
    }

    /// Whether entries probed past this (full) bucket and live further on.
    #[inline]
    fn overflowed(&self) -> bool {
        self.tags[B_SLOTS] != 0
    }

    fn add_over(&mut self) {
        self.tags[B_SLOTS] = self.tags[B_SLOTS].saturating_add(2);
    }

    fn sub_over(&mut self) {
        self.tags[B_SLOTS] = self.tags[B_SLOTS].saturating_sub(2);
    }
}

/// The 4-tuple index: bucketised open addressing with linear probing over buckets.
///
/// Each entry costs 8 bytes (a 32-bit hash and the ring position) and the key stays in the
/// ring. A lookup reads one cache line of the index and, only when a 32-bit hash matches,
/// the ring slot to compare the key: a hit is two dependent cache misses, where a
/// control-byte table needs three. The stored hash picks the bucket (multiply-shift range
/// reduction, so the bucket count need not be a power of two) and a resize never reads the
/// ring; resizes keep bucket order, so they stream.
///
/// Beside the buckets sits one 32-bit side word per bucket, 1/16 of their size, so it
/// stays in cache where the buckets cannot (1 MB at 1M entries, 9 MB at 10M). It holds
/// the bucket's used-slot bits, so an insert picks its slot without first loading the
/// bucket line (it only stores into it), a flag "some entry overflowed past this bucket",
/// and a summary: two of 24 bits set for each entry whose *home* is the bucket (a tiny
/// partitioned Bloom filter), so most misses, and the lookup that starts every insert,
/// end without reading a bucket. A hit pays nothing extra: the bucket load does not wait
/// for the side word.
struct HashIndex {
    buckets: Vec<Bucket>,
    /// Per bucket: used-slot bits (0..7) | [`OVER_BIT`] | the OR of [`sum_bits`] of the
    /// entries whose home it is (8..32). The summary of a bucket is rebuilt when one of
    /// those entries leaves, so it never goes stale.
    side: Vec<u32>,
    len: usize,
}

/// The stored form of a key hash: 32 bits, always odd, so that it never equals an empty
/// slot (0) or an overflow count (stored doubled, so even).
#[inline]
fn short_hash(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32 | 1
}

/// The summary bits of hash `h` in a side word: one of the 16 bits 8..24 and one of the 8
/// bits 24..32 (a partitioned Bloom filter, k = 2). They come from the low bits of `h`;
/// the bucket comes from its high bits, so entries sharing a home differ here (for tables
/// below 2^23 buckets, 38M entries; larger ones only see more false positives).
#[inline]
fn sum_bits(h: u32) -> u32 {
    SUM_BITS[((h >> 1) & 127) as usize]
}

/// [`sum_bits`] for each value of the seven hash bits it reads. One load from this 512-byte
/// table costs less than the two variable shifts it replaces, which baseline x86-64 can
/// only do through `cl`; a removal recomputes a bucket's summary from seven or more hashes.
static SUM_BITS: [u32; 128] = {
    let mut t = [0; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = (1 << (8 + (i & 15))) | (1 << (24 + (i >> 4)));
        i += 1;
    }
    t
};

impl HashIndex {
    /// Average entries per bucket before growing (of 7 slots: 79%, so few buckets overflow
    /// into the next line).
    const MAX_LOAD_X2: usize = 11;
    const MIN_BUCKETS: usize = 4;

    fn new() -> HashIndex {
        HashIndex {
            buckets: Vec::new(),
            side: Vec::new(),
            len: 0,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    fn max_len(n_buckets: usize) -> usize {
        n_buckets * Self::MAX_LOAD_X2 / 2
    }

    #[inline]
    fn home(&self, h: u32) -> usize {
        ((h as u64 * self.buckets.len() as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, b: usize) -> usize {
        if b + 1 == self.buckets.len() {
            0
        } else {
            b + 1
        }
    }

    /// The first `Some` that `f` gives for a position indexed under hash `h`.
    #[inline]
    fn find_map<R>(&self, h: u32, mut f: impl FnMut(u32) -> Option<R>) -> Option<R> {
        let mut b = self.home(h);
        let want = sum_bits(h);
        // Also covers the empty index (no side word).
        if self.side.get(b).is_none_or(|&s| s & want != want) {
            return None;
        }
        // Bounded: at most every bucket once (some bucket always has room).
        for _ in 0..self.buckets.len() {
            let bk = &self.buckets[b];
            let mut m = bk.matches(h);
            while m != 0 {
                if let Some(r) = f(bk.pos[m.trailing_zeros() as usize]) {
                    return Some(r);
                }
                m &= m - 1;
            }
            if !bk.overflowed() {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// Starts loading what a lookup, insert or removal of hash `h` reads first: the side
    /// word and the bucket of its home.
    ///
    /// Not the next bucket: since removals pull entries back home
    /// ([`backfill`](Self::backfill)) about 3% of entries live past their home, and
    /// loading a third line for every tuple slowed batched lookups more than those 3%
    /// gain (at 10M entries, hits 96-107 -> 87-102 ns without it).
    #[inline]
    fn prefetch_home(&self, h: u32) {
        let b = self.home(h);
        if let (Some(side), Some(bucket)) = (self.side.get(b), self.buckets.get(b)) {
            prefetch(side);
            prefetch(bucket);
        }
    }

    /// Whether the summary in the side word of `h`'s home admits `h` (false for an empty
    /// index): a lookup of `h` will read bucket lines.
    #[inline]
    fn side_admits(&self, h: u32) -> bool {
        let want = sum_bits(h);
        self.side
            .get(self.home(h))
            .is_some_and(|&s| s & want == want)
    }

    /// The ring position in the first slot whose stored hash is `h`, looking in `h`'s
    /// home bucket and, past it if it overflowed, in the next one: the slot a lookup will
    /// most likely compare. Reads those bucket lines.
    #[inline]
    fn first_candidate(&self, h: u32) -> Option<u32> {
        let b = self.home(h);
        let bk = self.buckets.get(b)?;
        let m = bk.matches(h);
        if m != 0 {
            return Some(bk.pos[m.trailing_zeros() as usize]);
        }
        if !bk.overflowed() {
            return None;
        }
        let bk = &self.buckets[self.next(b)];
        let m = bk.matches(h);
        (m != 0).then(|| bk.pos[m.trailing_zeros() as usize])
    }

    /// Like [`prefetch_home`](Self::prefetch_home), the home bucket only (what a
    /// repoint reads).
    #[inline]
    fn prefetch_bucket(&self, h: u32) {
        if let Some(bk) = self.buckets.get(self.home(h)) {
            prefetch(bk);
        }
    }

    /// Bucket and slot holding (`h`, `pos`).
    fn locate(&self, h: u32, pos: u32) -> Option<(usize, usize)> {
        if self.buckets.is_empty() {
            return None;
        }
        let mut b = self.home(h);
        for _ in 0..self.buckets.len() {
            let bk = &self.buckets[b];
            let mut m = bk.matches(h);
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                if bk.pos[i] == pos {
                    return Some((b, i));
                }
                m &= m - 1;
            }
            if !bk.overflowed() {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// Adds (`h`, `pos`); the caller ensures no entry with this key is indexed.
    fn insert(&mut self, h: u32, pos: u32) {
        if self.len >= Self::max_len(self.buckets.len()) {
            let n = self.buckets.len();
            self.resize((n + n / 2).max(Self::MIN_BUCKETS));
        }
        Self::place(&mut self.buckets, &mut self.side, h, pos);
        self.len += 1;
    }

    /// Puts (`h`, `pos`) in the first bucket with room from its home on. There always is
    /// one: the load stays below the slot count.
    fn place(buckets: &mut [Bucket], side: &mut [u32], h: u32, pos: u32) {
        let n = buckets.len().min(side.len());
        let mut b = ((h as u64 * n as u64) >> 32) as usize;
        if let Some(s) = side.get_mut(b) {
            *s |= sum_bits(h);
        }
        for _ in 0..n {
            let used = side[b] & USED_MASK;
            if used != USED_MASK {
                let i = (!used).trailing_zeros() as usize;
                side[b] |= 1 << i;
                buckets[b].tags[i] = h;
                buckets[b].pos[i] = pos;
                return;
            }
            buckets[b].add_over();
            side[b] |= OVER_BIT;
            b = if b + 1 == n { 0 } else { b + 1 };
        }
        debug_assert!(false, "index full");
    }

    /// Removes (`h`, `pos`); false when it is not indexed.
    fn remove(&mut self, h: u32, pos: u32) -> bool {
        let Some((at, i)) = self.locate(h, pos) else {
            return false;
        };
        let bk = &mut self.buckets[at];
        bk.tags[i] = 0;
        bk.pos[i] = 0;
        if let Some(s) = self.side.get_mut(at) {
            *s &= !(1 << i);
        }
        // Every bucket from home up to `at` counted this entry as passing through.
        let home = self.home(h);
        let mut b = home;
        while b != at {
            self.sub_over(b);
            b = self.next(b);
        }
        self.len -= 1;
        self.backfill(at, i);
        self.resum(home);
        true
    }

    /// Takes one passing-through count off bucket `b`, clearing its overflow flag at 0.
    fn sub_over(&mut self, b: usize) {
        self.buckets[b].sub_over();
        if !self.buckets[b].overflowed() {
            self.side[b] &= !OVER_BIT;
        }
    }

    /// Refills the slot `i` just freed in bucket `at` with an entry from the next bucket
    /// that probed past `at`, and so on down the run while each freed slot can be filled
    /// from the next line.
    ///
    /// Without this an entry placed past a full home stays there after its home empties,
    /// and a long-running table drifts: at 10M entries, 5.6% of entries sat away from
    /// their home right after filling and 12% after 12M more inserts and expiries, each
    /// one a second line for every lookup. Moving an entry back keeps it between its
    /// home and where it was, so lookups still find it and summaries (per home) do not
    /// change; only the counts of the buckets it no longer passes drop.
    fn backfill(&mut self, mut at: usize, mut i: usize) {
        // Bounded by the bucket count: every step moves one bucket on.
        for _ in 0..self.buckets.len() {
            if !self.buckets[at].overflowed() {
                return;
            }
            let nb = self.next(at);
            let used = self.side[nb] & USED_MASK;
            // An entry of `nb` that is not at home passed through `at` on its probe.
            let Some(j) = (0..B_SLOTS)
                .find(|&j| used & (1 << j) != 0 && self.home(self.buckets[nb].tags[j]) != nb)
            else {
                return;
            };
            let (t, p) = (self.buckets[nb].tags[j], self.buckets[nb].pos[j]);
            self.buckets[at].tags[i] = t;
            self.buckets[at].pos[i] = p;
            self.side[at] |= 1 << i;
            self.sub_over(at);
            self.buckets[nb].tags[j] = 0;
            self.buckets[nb].pos[j] = 0;
            self.side[nb] &= !(1 << j);
            (at, i) = (nb, j);
        }
    }

    /// Repoints (`h`, `old`) to `new`; false when (`h`, `old`) is not indexed.
    fn repoint(&mut self, h: u32, old: u32, new: u32) -> bool {
        match self.locate(h, old) {
            Some((b, i)) => {
                self.buckets[b].pos[i] = new;
                true
            }
            None => false,
        }
    }

    /// Recomputes the summary of bucket `home` from the entries whose home it is: they sit
    /// in it or, past it, in the run of overflowed buckets (each counts them). The removal
    /// just read those lines, so this costs no extra miss.
    fn resum(&mut self, home: usize) {
        let n = self.side.len();
        let prev = if home == 0 {
            n.wrapping_sub(1)
        } else {
            home - 1
        };
        let spilled = |b: usize| self.side.get(b).is_none_or(|&w| w & OVER_BIT != 0);
        let mut s = 0;
        if !spilled(home) && !spilled(prev) {
            // The common case: nothing overflowed into this bucket (the one before did not
            // overflow) nor out of it, so its entries are exactly those whose home it is.
            if let (Some(bk), Some(&w)) = (self.buckets.get(home), self.side.get(home)) {
                for (i, &h) in bk.tags[..B_SLOTS].iter().enumerate() {
                    s |= sum_bits(h) & ((w >> i) & 1).wrapping_neg();
                }
            }
            if let Some(w) = self.side.get_mut(home) {
                *w = (*w & (USED_MASK | OVER_BIT)) | s;
            }
            return;
        }
        let mut b = home;
        for _ in 0..self.buckets.len() {
            let bk = &self.buckets[b];
            for &h in &bk.tags[..B_SLOTS] {
                // Without branches: which slots qualify is random, so branches would
                // mispredict. Empty slots hold 0 and never qualify.
                let mine = (h != 0) & (self.home(h) == home);
                s |= sum_bits(h) & (mine as u32).wrapping_neg();
            }
            if !bk.overflowed() {
                break;
            }
            b = self.next(b);
        }
        if let Some(w) = self.side.get_mut(home) {
            *w = (*w & (USED_MASK | OVER_BIT)) | s;
        }
    }

    /// Rebuilds with `n` buckets, from the stored hashes alone.
    fn resize(&mut self, n: usize) {
        let mut buckets = vec![Bucket::EMPTY; n];
        let mut side = vec![0u32; n];
        if n > 0 {
            for bk in &self.buckets {
                for (&h, &p) in bk.tags[..B_SLOTS].iter().zip(&bk.pos) {
                    if h != 0 {
                        Self::place(&mut buckets, &mut side, h, p);
                    }
                }
            }
        }
        self.buckets = buckets;
        self.side = side;
    }

    /// Whether [`shrink`](Self::shrink) has anything to give back.
    #[inline]
    fn can_shrink(&self) -> bool {
        let n = self.buckets.len();
        if self.len == 0 {
            n > 0
        } else {
            n > 64 && self.len < Self::max_len(n) / 4
        }
    }

    /// Gives memory back once the index is less than a quarter of its maximum load.
    fn shrink(&mut self) {
        let n = self.buckets.len();
        if self.len == 0 {
            if n > 0 {
                self.buckets = Vec::new();
                self.side = Vec::new();
            }
        } else if n > 64 && self.len < Self::max_len(n) / 4 {
            self.resize((self.len * 4 / Self::MAX_LOAD_X2).max(Self::MIN_BUCKETS));
        }
    }

    fn allocation_size(&self) -> usize {
        self.buckets.capacity() * core::mem::size_of::<Bucket>()
            + self.side.capacity() * core::mem::size_of::<u32>()
    }
}

/// One key family's ring + index + local counts. Invariant: the front slot, if any, is alive.
struct Lane<K: Key> {
    ring: Ring<Slot<K>>,
    /// Absolute (wrapping) position of `ring[0]`.
    head: u32,
    /// Positions of live slots, by key hash.
    index: HashIndex,
    /// Live entries per local half (entries with count 0 are removed) while
    /// `count_locals`; empty otherwise.
    locals: HashMap<K::Local, u32, SipBuild>,
    count_locals: bool,
    live: usize,
}

impl<K: Key> Lane<K> {
    fn new(hb: SipBuild) -> Lane<K> {
        Lane {
            ring: Ring::new(),
            head: 0,
            index: HashIndex::new(),
            locals: HashMap::with_hasher(hb),
            count_locals: true,
            live: 0,
        }
    }

    fn rel(&self, pos: u32) -> usize {
        pos.wrapping_sub(self.head) as usize
    }

    /// The index hash of `key`. Operations that look a key up and then change its entry
    /// compute it once and pass it along.
    #[inline]
    fn hash(hb: &SipBuild, key: &K) -> u32 {
        short_hash(hb.hash_one(key))
    }

    /// The position and slot of the live entry for `key`, whose index hash is `h`.
    #[inline]
    fn lookup(&self, h: u32, key: &K) -> Option<(u32, &Slot<K>)> {
        let (ring, head) = (&self.ring, self.head);
        self.index.find_map(h, |p| {
            ring.get(p.wrapping_sub(head) as usize)
                .filter(|s| s.key == *key)
                .map(|s| (p, s))
        })
    }

    fn find(&self, h: u32, key: &K) -> Option<u32> {
        self.lookup(h, key).map(|(p, _)| p)
    }

    /// The ring slot where a lookup of hash `h` will most likely compare the key: the
    /// first one whose stored hash is `h` in `h`'s home bucket or, if that overflowed, the
    /// next. Reads the index lines, not the slot.
    #[inline]
    fn candidate(&self, h: u32) -> Option<&Slot<K>> {
        if !self.index.side_admits(h) {
            return None;
        }
        let pos = self.index.first_candidate(h)?;
        self.ring.get(self.rel(pos))
    }

    fn slot(&self, pos: u32) -> &Slot<K> {
        &self.ring[self.rel(pos)]
    }

    /// Appends a slot, clamping its expiry to be no earlier than the tail's so the ring
    /// stays in expiry order even if the driver's clock steps back.
    fn push(&mut self, mut slot: Slot<K>) -> u32 {
        if let Some(tail) = self.ring.back() {
            if tail.exp_off() > slot.exp_off() {
                slot.meta = (slot.meta & !EXP_MASK) | tail.exp_off();
            }
        }
        let pos = self.head.wrapping_add(self.ring.len() as u32);
        self.ring.push_back(slot);
        pos
    }

    /// Adds a slot for a key, of index hash `h`, that has no live entry.
    fn insert_new(&mut self, h: u32, slot: Slot<K>) {
        let pos = self.push(slot);
        self.index.insert(h, pos);
        self.live += 1;
        if self.count_locals {
            *self.locals.entry(slot.key.local()).or_insert(0) += 1;
        }
    }

    /// Ends the live entry at `pos`: tombstone, out of the index and the local counts.
    /// The caller runs [`Lane::maintain`] afterwards.
    fn kill(&mut self, hb: &SipBuild, pos: u32) -> Slot<K> {
        let h = Self::hash(hb, &self.slot(pos).key);
        self.kill_hashed(hb, pos, h)
    }

    /// [`kill`](Self::kill) with the key's index hash `h` already at hand.
    #[inline(always)]
    fn kill_hashed(&mut self, hb: &SipBuild, pos: u32, h: u32) -> Slot<K> {
        let i = self.rel(pos);
        let slot = self.ring[i];
        debug_assert!(slot.alive());
        debug_assert_eq!(h, Self::hash(hb, &slot.key), "stale hash");
        self.ring[i].meta &= !ALIVE;
        let found = self.index.remove(h, pos);
        debug_assert!(found, "live slot missing from index");
        self.live -= 1;
        if self.count_locals {
            let local = slot.key.local();
            match self.locals.get_mut(&local) {
                Some(c) if *c > 1 => *c -= 1,
                Some(_) => {
                    self.locals.remove(&local);
                }
                None => debug_assert!(false, "local count missing"),
            }
        }
        slot
    }

    /// Starts (rebuilding the counts from the ring) or stops counting live entries per
    /// local half.
    fn set_count_locals(&mut self, on: bool) {
        if on == self.count_locals {
            return;
        }
        self.count_locals = on;
        let mut locals = HashMap::with_hasher(*self.locals.hasher());
        if on {
            for s in self.ring.iter().filter(|s| s.alive()) {
                *locals.entry(s.key.local()).or_insert(0) += 1;
            }
        }
        self.locals = locals;
    }

    /// Whether a live entry has local half `local`.
    fn has_local(&self, local: &K::Local) -> bool {
        if self.count_locals {
            self.locals.contains_key(local)
        } else {
            self.ring
                .iter()
                .any(|s| s.alive() && s.key.local() == *local)
        }
    }

    /// Replaces the live entry at `pos` by `slot` (same key, of index hash `h`) at the
    /// tail: the old slot becomes a tombstone and the index is repointed. Returns the
    /// stored slot.
    fn move_to_tail(&mut self, hb: &SipBuild, h: u32, pos: u32, slot: Slot<K>) -> Slot<K> {
        debug_assert_eq!(h, Self::hash(hb, &slot.key), "stale hash");
        let i = self.rel(pos);
        self.ring[i].meta &= !ALIVE;
        let new_pos = self.push(slot);
        let found = self.index.repoint(h, pos, new_pos);
        debug_assert!(found, "live slot missing from index");
        let stored = *self.slot(new_pos);
        self.maintain(hb);
        stored
    }

    /// Pops tombstones off the front and compacts when tombstones outnumber live entries.
    fn maintain(&mut self, hb: &SipBuild) {
        while self.ring.front().is_some_and(|s| !s.alive()) {
            self.ring.pop_front();
            self.head = self.head.wrapping_add(1);
        }
        if self.ring.len() - self.live > self.live.max(MIN_COMPACT) {
            self.compact(hb);
        }
        self.shrink();
    }

    /// Squeezes tombstones out of the ring, keeping order, and repoints the index.
    /// O(ring length), paid for by the tombstones it removes.
    fn compact(&mut self, hb: &SipBuild) {
        let mut w = 0usize;
        let mut warmed_to = 0usize;
        for r in 0..self.ring.len() {
            let s = self.ring[r];
            if !s.alive() {
                continue;
            }
            if r >= warmed_to && self.index.buckets.len() >= WARM_MIN_BUCKETS {
                // As in `expire`: load the next batch of index lines together.
                let mut k = r;
                let mut n = 0;
                while n < WARM_BATCH {
                    let Some(t) = self.ring.get(k) else { break };
                    if t.alive() {
                        self.index.prefetch_bucket(short_hash(hb.hash_one(t.key)));
                        n += 1;
                    }
                    k += 1;
                }
                warmed_to = k;
            }
            if w != r {
                self.ring[w] = s;
                let old = self.head.wrapping_add(r as u32);
                let new = self.head.wrapping_add(w as u32);
                // No index value equals `new` here: positions below `r` that are still
                // indexed were already rewritten to values below `w`.
                let found = self.index.repoint(short_hash(hb.hash_one(s.key)), old, new);
                debug_assert!(found, "live slot missing from index");
            }
            w += 1;
        }
        self.ring.truncate(w);
    }

    /// Gives memory back once a structure is less than a quarter full (halving at 1/4
    /// after doubling at full keeps resizes amortised O(1)).
    ///
    /// Runs after every removal and rarely finds anything to do: the checks are inlined,
    /// the work is not.
    #[inline]
    fn shrink(&mut self) {
        if self.ring.can_shrink() || self.index.can_shrink() || self.locals_can_shrink() {
            self.shrink_now();
        }
    }

    #[cold]
    #[inline(never)]
    fn shrink_now(&mut self) {
        self.ring.shrink();
        self.index.shrink();
        if self.locals_can_shrink() {
            self.locals.shrink_to(self.locals.len() * 2);
        }
    }

    /// Whether the local counts' map is large and under a quarter full.
    #[inline]
    fn locals_can_shrink(&self) -> bool {
        self.locals.capacity() > MIN_SHRINK && self.locals.len() < self.locals.capacity() / 4
    }

    /// Expiry (µs) of the oldest live entry.
    fn front_expiry(&self, epoch_ms: u64) -> Option<u64> {
        self.ring.front().map(|s| s.expires_us(epoch_ms))
    }

    /// Removes the oldest live entry.
    fn pop_oldest(&mut self, hb: &SipBuild) -> Option<Slot<K>> {
        if self.ring.is_empty() {
            return None;
        }
        let s = self.kill(hb, self.head);
        self.maintain(hb);
        Some(s)
    }

    fn expire(&mut self, hb: &SipBuild, now_us: u64, epoch_ms: u64) -> usize {
        let due = |s: &Slot<K>| s.expires_us(epoch_ms) <= now_us;
        let mut n = 0;
        // Index hashes of the next due live entries, in ring order: the front is always
        // alive, so they are killed in exactly this order.
        let mut ahead = [0u32; WARM_BATCH];
        let (mut next, mut end) = (0, 0);
        let big = self.index.buckets.len() >= WARM_MIN_BUCKETS;
        while self.ring.front().is_some_and(due) {
            if next == end && big && self.ring.get(1).is_some_and(due) {
                // Each removal reads a random index line: prefetching the next few lets
                // their misses overlap instead of queueing one per entry.
                (next, end) = (0, 0);
                for s in (0..WARM_BATCH).map_while(|k| self.ring.get(k)) {
                    if !due(s) {
                        break;
                    }
                    if s.alive() {
                        let h = short_hash(hb.hash_one(s.key));
                        self.index.prefetch_home(h);
                        ahead[end] = h;
                        end += 1;
                    }
                }
            }
            if next < end {
                self.kill_hashed(hb, self.head, ahead[next]);
                next += 1;
            } else {
                self.kill(hb, self.head);
            }
            while self.ring.front().is_some_and(|s| !s.alive()) {
                self.ring.pop_front();
                self.head = self.head.wrapping_add(1);
            }
            n += 1;
        }
        if n > 0 {
            // Nothing else shrinks between removals, and only removals make room to give.
            self.shrink();
        }
        if big {
            // The entry that expires next is known now, and under steady churn its
            // expiry comes alone, with nothing to overlap its miss: start loading its
            // index lines here, a whole expiry interval ahead.
            if let Some(s) = self.ring.front() {
                self.index.prefetch_home(short_hash(hb.hash_one(s.key)));
            }
        }
        n
    }

    /// Re-expresses every expiry relative to `new_epoch` (clamping the long-expired to 0).
    fn rebase(&mut self, old_epoch: u64, new_epoch: u64) {
        for s in self.ring.iter_mut() {
            let abs = old_epoch + s.exp_off() as u64;
            let off = abs.saturating_sub(new_epoch).min(EXP_MASK as u64) as u32;
            s.meta = (s.meta & !EXP_MASK) | off;
        }
    }

    fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &K,
        seg: &TwSegment,
        restart_off: u32,
    ) -> Option<TwAction> {
        let hb = ctx.hb;
        let h = Self::hash(&hb, key);
        let pos = self.find(h, key)?;
        let slot = *self.slot(pos);
        let stats = &mut *ctx.stats;
        let rcv_nxt = SeqNum(slot.rcv_nxt);

        // RFC 9293 §3.10.7.4 (first/fourth check in TIME-WAIT) and RFC 1337: an RST in
        // TIME-WAIT would assassinate the entry and expose the tuple to old duplicates,
        // so by default it is ignored. Without RFC 1337 only an exact hit is believed
        // (RFC 5961 §3.2 reasoning: blind RSTs must guess rcv_nxt exactly).
        if seg.rst {
            if !ctx.rfc1337 && seg.seq == rcv_nxt {
                self.kill_hashed(&hb, pos, h);
                self.maintain(&hb);
                stats.rst_accepted += 1;
                return Some(TwAction::ResetAccepted);
            }
            stats.rst_ignored += 1;
            return Some(TwAction::Ignore);
        }

        let bare_syn = seg.syn && seg.ack.is_none();
        // Signed age of the segment's TSval against TS.Recent (RFC 7323 §5.3: modular
        // comparison); only meaningful when both sides used timestamps.
        let ts_delta = match (slot.ts(), seg.tsval) {
            (Some(recent), Some(tsval)) => Some(tsval.wrapping_sub(recent) as i32),
            _ => None,
        };

        // PAWS, RFC 7323 §5.3 R1: a segment whose TSval is older than TS.Recent is an old
        // duplicate; answer with an ACK and keep the timer (as gVisor; Linux restarts it).
        // TS.Recent is at most one TIME-WAIT lifetime old (< 6.2 days, MAX_LIFETIME), so
        // the 24-day invalidation of §5.5 never applies.
        if ts_delta.is_some_and(|d| d < 0) {
            stats.paws_rejected += 1;
            if bare_syn {
                stats.old_duplicates += 1;
            }
            stats.acks_sent += 1;
            return Some(slot.ack());
        }

        // RFC 1122 §4.2.2.13 and RFC 6191 §2 (Linux tcp_timewait_state_process): a new
        // SYN may reopen the tuple when it is provably not an old duplicate: its sequence
        // number lies beyond everything the old incarnation received, or its timestamp is
        // newer than anything it sent.
        if bare_syn {
            if seg.seq > rcv_nxt || ts_delta.is_some_and(|d| d > 0) {
                let old = self.kill_hashed(&hb, pos, h);
                self.maintain(&hb);
                stats.reopened += 1;
                return Some(TwAction::Reopen {
                    old: old.entry(ctx.epoch_ms, ctx.lifetime_us),
                });
            }
            stats.old_duplicates += 1;
            stats.acks_sent += 1;
            return Some(slot.ack());
        }

        // A SYN-ACK cannot belong to anything here: RFC 9293 §3.10.7.4 (SYN in a
        // synchronized state) answers with an ACK (RFC 5961 §4 challenge ACK).
        if seg.syn {
            stats.acks_sent += 1;
            return Some(slot.ack());
        }

        // RFC 9293 §3.10.7.4, eighth check, TIME-WAIT: "The only thing that can arrive in
        // this state is a retransmission of the remote FIN. Acknowledge it, and restart
        // the 2 MSL timeout." The retransmission ends exactly at rcv_nxt.
        if seg.fin && seg.seq + seg.payload_len + 1u32 == rcv_nxt {
            let mut new = slot;
            if let (Some(_), Some(tsval)) = (ts_delta, seg.tsval) {
                // RFC 7323 §4.3: not older (PAWS passed) and at rcv_nxt, so record it.
                new.ts_recent = tsval;
            }
            new.meta = (slot.meta & (ALIVE | HAS_TS)) | restart_off;
            let stored = self.move_to_tail(&hb, h, pos, new);
            stats.fin_reacked += 1;
            stats.acks_sent += 1;
            return Some(stored.ack());
        }

        // An acceptable bare ACK (e.g. the peer's ACK of our FIN arriving late, or a
        // keepalive-free duplicate) needs no answer; answering would start an ACK war.
        if seg.payload_len == 0 && !seg.fin && seg.seq == rcv_nxt {
            if let (Some(_), Some(tsval)) = (ts_delta, seg.tsval) {
                // RFC 7323 §4.3 (as Linux does in TIME-WAIT).
                let i = self.rel(pos);
                self.ring[i].ts_recent = tsval;
            }
            return Some(TwAction::Ignore);
        }

        // Data or out-of-window: RFC 9293 §3.10.7.4 first check, send an ACK.
        stats.acks_sent += 1;
        Some(slot.ack())
    }
}

/// What [`Lane::handle`] needs from the table besides the lane.
struct Ctx<'a> {
    hb: SipBuild,
    stats: &'a mut TwStats,
    rfc1337: bool,
    epoch_ms: u64,
    lifetime_us: u64,
}

/// The TIME_WAIT table: exact-4-tuple entries with one shared 2*MSL lifetime.
///
/// Getters: [`get`](Self::get), [`contains`](Self::contains), [`iter`](Self::iter),
/// [`local_in_use`](Self::local_in_use), [`len`](Self::len), [`stats`](Self::stats),
/// [`memory_bytes`](Self::memory_bytes), [`next_expiry`](Self::next_expiry).
/// Inputs: [`handle_segment`](Self::handle_segment), [`expire`](Self::expire) (call it at
/// `next_expiry`). Mutators: [`insert`](Self::insert), [`remove`](Self::remove),
/// [`set_rfc1337`](Self::set_rfc1337), [`set_local_counts`](Self::set_local_counts).
///
/// `now` is expected not to go backwards; if it does, new expiries are clamped so that
/// expiry order stays insertion order.
pub struct TimeWaitTable {
    v4: Lane<V4Key>,
    wide: Lane<FourTuple>,
    hb: SipBuild,
    /// Expiry offsets in slots are milliseconds after this.
    epoch_ms: u64,
    lifetime: Duration,
    lifetime_us: u64,
    /// Lifetime in whole ms, rounded up.
    lifetime_ms: u64,
    cap: usize,
    overflow: TwOverflow,
    rfc1337: bool,
    stats: TwStats,
    /// [`next_expiry`](Self::next_expiry), kept by every mutator: drivers ask for it
    /// after every batch of events, far more often than the front of the table moves.
    next_exp: Option<Instant>,
}

impl core::fmt::Debug for TimeWaitTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TimeWaitTable")
            .field("len", &self.len())
            .field("cap", &self.cap)
            .field("lifetime", &self.lifetime)
            .field("overflow", &self.overflow)
            .field("rfc1337", &self.rfc1337)
            .field("stats", &self.stats)
            .finish()
    }
}

impl TimeWaitTable {
    /// A table whose entries last `lifetime` (2*MSL), holding at most `cap` entries, with
    /// `overflow` applied when full and RSTs ignored when `rfc1337`.
    ///
    /// The hash key is drawn from hashbrown's default random state; use
    /// [`with_seed`](Self::with_seed) to supply it. `lifetime` is clamped to
    /// [`MAX_LIFETIME`] and `cap` to [`MAX_CAP`].
    pub fn new(lifetime: Duration, cap: usize, overflow: TwOverflow, rfc1337: bool) -> Self {
        let s = hashbrown::DefaultHashBuilder::default();
        let k0 = s.hash_one(0x7469_6d65_5f77_6169u64);
        let k1 = s.hash_one(k0 ^ 0x9e37_79b9_7f4a_7c15);
        let mut seed = [0u8; 16];
        seed[..8].copy_from_slice(&k0.to_le_bytes());
        seed[8..].copy_from_slice(&k1.to_le_bytes());
        Self::with_seed(lifetime, cap, overflow, rfc1337, seed)
    }

    /// Like [`new`](Self::new), with the SipHash key of the index given by the caller
    /// (e.g. derived from the stack's secret), so bucket placement is unpredictable to peers.
    pub fn with_seed(
        lifetime: Duration,
        cap: usize,
        overflow: TwOverflow,
        rfc1337: bool,
        seed: [u8; 16],
    ) -> Self {
        if lifetime > MAX_LIFETIME {
            log::warn!("TIME_WAIT lifetime {lifetime:?} clamped to {MAX_LIFETIME:?}");
        }
        let lifetime = lifetime.min(MAX_LIFETIME);
        let lifetime_us = lifetime.as_micros() as u64;
        let mut k = [0u8; 8];
        k.copy_from_slice(&seed[..8]);
        let k0 = u64::from_le_bytes(k);
        k.copy_from_slice(&seed[8..]);
        let k1 = u64::from_le_bytes(k);
        let hb = SipBuild { k0, k1 };
        TimeWaitTable {
            v4: Lane::new(hb),
            wide: Lane::new(hb),
            hb,
            epoch_ms: 0,
            lifetime,
            lifetime_us,
            lifetime_ms: lifetime_us.div_ceil(1000),
            cap: cap.min(MAX_CAP),
            overflow,
            rfc1337,
            stats: TwStats::default(),
            next_exp: None,
        }
    }

    /// Expiry offset for an entry (re)started at `now`; rebases the epoch when needed.
    fn expiry_offset(&mut self, now: Instant) -> u32 {
        let want_ms = now.micros().saturating_add(self.lifetime_us).div_ceil(1000);
        if self.v4.ring.is_empty() && self.wide.ring.is_empty() {
            // Nothing stored: the epoch can move for free.
            self.epoch_ms = want_ms - self.lifetime_ms.min(want_ms);
        }
        if want_ms < self.epoch_ms {
            // The clock stepped back before the epoch; `push` clamps to the tail anyway.
            return 0;
        }
        let off = want_ms - self.epoch_ms;
        if off <= EXP_MASK as u64 {
            return off as u32;
        }
        // Out of range (after ~6+ days of table time): one O(n) pass.
        let new_epoch = want_ms - self.lifetime_ms;
        self.v4.rebase(self.epoch_ms, new_epoch);
        self.wide.rebase(self.epoch_ms, new_epoch);
        self.epoch_ms = new_epoch;
        self.lifetime_ms as u32
    }

    /// Puts `tuple` into TIME-WAIT as of `now` (expiry `now + lifetime`).
    ///
    /// An existing entry for the tuple is overwritten and moves to the tail. When the table
    /// is full, entries already due at `now` are expired first; if it is still full, the
    /// overflow policy applies. A cap of 0 stores nothing ([`TwInsert::Dropped`]).
    pub fn insert(&mut self, now: Instant, tuple: FourTuple, state: TimeWaitState) -> TwInsert {
        let r = self.insert_inner(now, tuple, state);
        self.refresh_next_expiry();
        r
    }

    fn insert_inner(&mut self, now: Instant, tuple: FourTuple, state: TimeWaitState) -> TwInsert {
        let off = self.expiry_offset(now);
        match route(&tuple) {
            Route::V4(k) => self.insert_key(now, |t| &mut t.v4, Slot::new(k, &state, off)),
            Route::Wide(k) => self.insert_key(now, |t| &mut t.wide, Slot::new(k, &state, off)),
        }
    }

    /// [`insert`](Self::insert) of `slot` into the lane `lane` picks.
    fn insert_key<K: Key>(
        &mut self,
        now: Instant,
        lane: fn(&mut Self) -> &mut Lane<K>,
        slot: Slot<K>,
    ) -> TwInsert {
        let hb = self.hb;
        let h = Lane::hash(&hb, &slot.key);
        if let Some(pos) = lane(self).find(h, &slot.key) {
            lane(self).move_to_tail(&hb, h, pos, slot);
            self.stats.replaced += 1;
            return TwInsert::Replaced;
        }
        let mut outcome = TwInsert::Inserted;
        if self.len() >= self.cap {
            self.expire(now);
        }
        if self.len() >= self.cap {
            if self.cap == 0 || self.overflow == TwOverflow::DropNew {
                self.stats.dropped_full += 1;
                return TwInsert::Dropped;
            }
            let evicted = self.evict_oldest();
            self.stats.evicted_oldest += 1;
            outcome = TwInsert::EvictedOldest(evicted);
        }
        lane(self).insert_new(h, slot);
        self.stats.inserted += 1;
        outcome
    }

    /// Removes the live entry closest to expiry (whichever lane holds it).
    fn evict_oldest(&mut self) -> FourTuple {
        let a = self.v4.front_expiry(self.epoch_ms);
        let b = self.wide.front_expiry(self.epoch_ms);
        let take_v4 = match (a, b) {
            (Some(a), Some(b)) => a <= b,
            (a, _) => a.is_some(),
        };
        let hb = self.hb;
        let t = if take_v4 {
            self.v4.pop_oldest(&hb).map(|s| s.key.tuple())
        } else {
            self.wide.pop_oldest(&hb).map(|s| s.key.tuple())
        };
        t.expect("evict_oldest called on a non-empty table")
    }

    /// The entry for `tuple`, if it is in TIME-WAIT (not yet expired by [`expire`](Self::expire)).
    #[inline]
    pub fn get(&self, tuple: &FourTuple) -> Option<TimeWaitEntry> {
        let (e, l) = (self.epoch_ms, self.lifetime_us);
        // The stored key equals the query, so the query is the entry's tuple: copying it
        // leaves less work waiting on the ring load.
        match route(tuple) {
            Route::V4(k) => {
                self.v4
                    .lookup(Lane::hash(&self.hb, &k), &k)
                    .map(|(_, s)| TimeWaitEntry {
                        tuple: *tuple,
                        ..s.entry(e, l)
                    })
            }
            Route::Wide(k) => self
                .wide
                .lookup(Lane::hash(&self.hb, &k), &k)
                .map(|(_, s)| TimeWaitEntry {
                    tuple: *tuple,
                    ..s.entry(e, l)
                }),
        }
    }

    /// Loads into the cache the lines that lookups of `tuples` will read: for each, its
    /// index side word, bucket lines and candidate ring slot. Answers nothing; the
    /// [`get`](Self::get), [`contains`](Self::contains) or
    /// [`handle_segment`](Self::handle_segment) calls that follow find their lines ready.
    ///
    /// A lookup in a large table is two dependent cache misses (bucket, then ring slot),
    /// and one lookup after another waits for each in turn. Here, for up to
    /// [`PREFETCH_GROUP`] tuples at a time, the index lines of all of them are requested
    /// first, then their slots, so a round waits for about two misses rather than two
    /// per tuple (at 10M entries: ~85-105 ns per lookup against ~200 alone). Worth it
    /// when a driver holds several packets or tuples at once and the table is larger
    /// than the caches. With a small table (index under 4 MiB) it returns at once: there
    /// it would only add a hash per tuple, and callers need not check.
    pub fn prefetch(&self, tuples: &[FourTuple]) {
        if self
            .v4
            .index
            .buckets
            .len()
            .max(self.wide.index.buckets.len())
            < WARM_MIN_BUCKETS
        {
            return;
        }
        for group in tuples.chunks(PREFETCH_GROUP) {
            let mut hs = [(0u32, false); PREFETCH_GROUP];
            for (h, t) in hs.iter_mut().zip(group) {
                *h = match route(t) {
                    Route::V4(k) => (Lane::hash(&self.hb, &k), true),
                    Route::Wide(k) => (Lane::hash(&self.hb, &k), false),
                };
                let index = if h.1 {
                    &self.v4.index
                } else {
                    &self.wide.index
                };
                index.prefetch_home(h.0);
            }
            // Finding the candidate slots reads the lines asked for above: the first
            // waits, the rest arrive with it.
            for &(h, v4) in &hs[..group.len()] {
                if v4 {
                    if let Some(s) = self.v4.candidate(h) {
                        s.prefetch();
                    }
                } else if let Some(s) = self.wide.candidate(h) {
                    s.prefetch();
                }
            }
        }
    }

    /// Starts loading the index lines a lookup or an [`insert`](Self::insert) of `tuple`
    /// reads first (its home's side word and bucket), for a caller that knows one is
    /// coming: a connection that has begun an active close will most likely be inserted
    /// about a round trip later. Returns at once below a 4 MiB index, like
    /// [`prefetch`](Self::prefetch).
    #[inline]
    pub fn prefetch_index(&self, tuple: &FourTuple) {
        match route(tuple) {
            Route::V4(k) if self.v4.index.buckets.len() >= WARM_MIN_BUCKETS => {
                self.v4.index.prefetch_home(Lane::hash(&self.hb, &k));
            }
            Route::Wide(k) if self.wide.index.buckets.len() >= WARM_MIN_BUCKETS => {
                self.wide.index.prefetch_home(Lane::hash(&self.hb, &k));
            }
            _ => {}
        }
    }

    /// True when `tuple` has an entry.
    #[inline]
    pub fn contains(&self, tuple: &FourTuple) -> bool {
        match route(tuple) {
            Route::V4(k) => self.v4.find(Lane::hash(&self.hb, &k), &k).is_some(),
            Route::Wide(k) => self.wide.find(Lane::hash(&self.hb, &k), &k).is_some(),
        }
    }

    /// Takes the entry for `tuple` out of the table (e.g. a timestamp-reuse takeover).
    pub fn remove(&mut self, tuple: &FourTuple) -> Option<TimeWaitEntry> {
        let r = self.remove_inner(tuple);
        self.refresh_next_expiry();
        r
    }

    fn remove_inner(&mut self, tuple: &FourTuple) -> Option<TimeWaitEntry> {
        let (e, l, hb) = (self.epoch_ms, self.lifetime_us, self.hb);
        let slot = match route(tuple) {
            Route::V4(k) => Self::remove_in(&mut self.v4, &hb, &k).map(|s| s.entry(e, l)),
            Route::Wide(k) => Self::remove_in(&mut self.wide, &hb, &k).map(|s| s.entry(e, l)),
        };
        if slot.is_some() {
            self.stats.removed += 1;
        }
        slot
    }

    fn remove_in<K: Key>(lane: &mut Lane<K>, hb: &SipBuild, key: &K) -> Option<Slot<K>> {
        let h = Lane::hash(hb, key);
        let pos = lane.find(h, key)?;
        let s = lane.kill_hashed(hb, pos, h);
        lane.maintain(hb);
        Some(s)
    }

    /// None when no entry exists for tuple.
    ///
    /// Otherwise applies, in order: RST (RFC 1337), PAWS (RFC 7323), bare SYN reopen or
    /// old duplicate (RFC 1122 §4.2.2.13, RFC 6191), SYN-ACK, retransmitted FIN (re-ACK and
    /// restart the 2MSL timer, RFC 9293 §3.10.7.4), acceptable bare ACK (ignored), and
    /// anything else (ACK). The caller sends what [`TwAction`] says.
    pub fn handle_segment(
        &mut self,
        now: Instant,
        tuple: &FourTuple,
        seg: &TwSegment,
    ) -> Option<TwAction> {
        let r = self.handle_segment_inner(now, tuple, seg);
        self.refresh_next_expiry();
        r
    }

    fn handle_segment_inner(
        &mut self,
        now: Instant,
        tuple: &FourTuple,
        seg: &TwSegment,
    ) -> Option<TwAction> {
        // Computed up front (it may rebase both lanes) so a FIN restart can use it.
        let restart_off = self.expiry_offset(now);
        let mut ctx = Ctx {
            hb: self.hb,
            stats: &mut self.stats,
            rfc1337: self.rfc1337,
            epoch_ms: self.epoch_ms,
            lifetime_us: self.lifetime_us,
        };
        match route(tuple) {
            Route::V4(k) => self.v4.handle(&mut ctx, &k, seg, restart_off),
            Route::Wide(k) => self.wide.handle(&mut ctx, &k, seg, restart_off),
        }
    }

    /// Drops every entry whose expiry is <= now; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let hb = self.hb;
        let n = self.v4.expire(&hb, now.micros(), self.epoch_ms)
            + self.wide.expire(&hb, now.micros(), self.epoch_ms);
        self.stats.expired += n as u64;
        self.refresh_next_expiry();
        n
    }

    /// When the oldest entry expires: the time to call [`expire`](Self::expire) next.
    #[inline]
    pub fn next_expiry(&self) -> Option<Instant> {
        debug_assert_eq!(self.next_exp, self.compute_next_expiry());
        self.next_exp
    }

    fn refresh_next_expiry(&mut self) {
        self.next_exp = self.compute_next_expiry();
    }

    fn compute_next_expiry(&self) -> Option<Instant> {
        let a = self.v4.front_expiry(self.epoch_ms);
        let b = self.wide.front_expiry(self.epoch_ms);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(Instant::from_micros)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.v4.live + self.wide.live
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maximum number of entries.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Entry lifetime (2*MSL).
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Live entries only: IPv4 entries in expiry order, then the others in expiry order.
    pub fn iter(&self) -> impl Iterator<Item = TimeWaitEntry> + '_ {
        let (e, l) = (self.epoch_ms, self.lifetime_us);
        let v4 = self
            .v4
            .ring
            .iter()
            .filter(|s| s.alive())
            .map(move |s| s.entry(e, l));
        let wide = self
            .wide
            .ring
            .iter()
            .filter(|s| s.alive())
            .map(move |s| s.entry(e, l));
        v4.chain(wide)
    }

    /// True when any live entry has this exact local ip:port (for the local-port policy).
    ///
    /// O(1) while the table counts entries per local address (the default, see
    /// [`set_local_counts`](Self::set_local_counts)); otherwise a scan of every entry, O(n),
    /// with the same answer.
    pub fn local_in_use(&self, local: SocketAddr) -> bool {
        let wide = self.wide.has_local(&local);
        match local {
            SocketAddr::V4(a) => wide || self.v4.has_local(&v4_local(&a)),
            SocketAddr::V6(_) => wide,
        }
    }

    /// Whether the table counts its entries per local ip:port, which makes
    /// [`local_in_use`](Self::local_in_use) O(1) (on by default).
    ///
    /// The counts cost a hash map update, and its cache misses, on every insert and
    /// removal; a caller that never asks `local_in_use`, or only rarely, turns them off.
    /// Turning them back on rebuilds them from the entries, O(n).
    pub fn set_local_counts(&mut self, on: bool) {
        self.v4.set_count_locals(on);
        self.wide.set_count_locals(on);
    }

    /// Counters since creation.
    pub fn stats(&self) -> TwStats {
        self.stats
    }

    /// Heap bytes currently allocated by the table (capacities, not lengths).
    pub fn memory_bytes(&self) -> usize {
        fn lane<K: Key>(l: &Lane<K>) -> usize {
            l.ring.allocation_size() + l.index.allocation_size() + l.locals.allocation_size()
        }
        lane(&self.v4) + lane(&self.wide)
    }

    /// Whether RSTs are ignored in TIME-WAIT (RFC 1337). Applies to later segments.
    pub fn set_rfc1337(&mut self, on: bool) {
        self.rfc1337 = on;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap as StdMap;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    const LIFE: Duration = Duration::from_secs(60);

    fn t4(lport: u16, rport: u16) -> FourTuple {
        FourTuple::new(
            SocketAddr::from((Ipv4Addr::new(192, 0, 2, 2), lport)),
            SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), rport)),
        )
    }

    fn t6(lport: u16, rport: u16) -> FourTuple {
        FourTuple::new(
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
                lport,
                0,
                3,
            )),
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
                rport,
                7,
                3,
            )),
        )
    }

    fn st(snd: u32, rcv: u32, ts: Option<u32>) -> TimeWaitState {
        TimeWaitState {
            snd_nxt: SeqNum(snd),
            rcv_nxt: SeqNum(rcv),
            ts_recent: ts,
        }
    }

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn table() -> TimeWaitTable {
        TimeWaitTable::with_seed(LIFE, 1000, TwOverflow::EvictOldest, true, [7; 16])
    }

    fn seg(seq: u32) -> TwSegment {
        TwSegment {
            seq: SeqNum(seq),
            ack: Some(SeqNum(1000)),
            ..TwSegment::default()
        }
    }

    fn syn(seq: u32, tsval: Option<u32>) -> TwSegment {
        TwSegment {
            seq: SeqNum(seq),
            syn: true,
            tsval,
            ..TwSegment::default()
        }
    }

    fn ack_of(snd: u32, rcv: u32, ts: Option<u32>) -> TwAction {
        TwAction::Ack {
            seq: SeqNum(snd),
            ack: SeqNum(rcv),
            tsecr: ts,
        }
    }

    /// Structural invariants every operation must keep.
    fn check<K: Key>(l: &Lane<K>, hb: &SipBuild) {
        assert_eq!(l.index.len(), l.live);
        assert_eq!(l.ring.iter().filter(|s| s.alive()).count(), l.live);
        assert!(
            l.ring.front().is_none_or(|s| s.alive()),
            "front must be alive"
        );
        assert!(l.ring.len() - l.live <= l.live.max(MIN_COMPACT));
        let mut prev = 0;
        for (i, s) in l.ring.iter().enumerate() {
            assert!(s.exp_off() >= prev, "ring out of expiry order");
            prev = s.exp_off();
            if s.alive() {
                let pos = l.head.wrapping_add(i as u32);
                assert_eq!(l.find(Lane::hash(hb, &s.key), &s.key), Some(pos));
            }
        }
        if l.count_locals {
            let mut want = StdMap::new();
            for s in l.ring.iter().filter(|s| s.alive()) {
                *want.entry(s.key.local()).or_insert(0u32) += 1;
            }
            let got: StdMap<_, _> = l.locals.iter().map(|(&k, &n)| (k, n)).collect();
            assert!(got == want, "local counts disagree with the ring");
        } else {
            assert!(l.locals.is_empty());
        }
    }

    fn check_all(t: &TimeWaitTable) {
        check(&t.v4, &t.hb);
        check(&t.wide, &t.hb);
    }

    #[test]
    fn insert_get_entry_fields() {
        let mut t = table();
        assert_eq!(
            t.insert(ms(5), t4(1, 80), st(10, 20, Some(99))),
            TwInsert::Inserted
        );
        let e = t.get(&t4(1, 80)).unwrap();
        assert_eq!(
            e,
            TimeWaitEntry {
                tuple: t4(1, 80),
                snd_nxt: SeqNum(10),
                rcv_nxt: SeqNum(20),
                ts_recent: Some(99),
                last_seen: ms(5),
                expires: ms(5) + LIFE,
            }
        );
        assert!(t.contains(&t4(1, 80)));
        assert!(!t.contains(&t4(2, 80)));
        assert_eq!(t.len(), 1);
        assert_eq!(t.lifetime(), LIFE);
        assert_eq!(t.cap(), 1000);
        assert_eq!(t.stats().inserted, 1);
        check_all(&t);
    }

    #[test]
    fn sub_millisecond_expiry_rounds_up_never_early() {
        let mut t = table();
        t.insert(Instant::from_micros(1_500), t4(1, 80), st(1, 1, None));
        let exp = t.next_expiry().unwrap();
        assert!(exp >= Instant::from_micros(1_500) + LIFE);
        assert!(exp < Instant::from_micros(2_500) + LIFE);
        assert_eq!(t.expire(Instant::from_micros(1_499) + LIFE), 0);
        assert_eq!(t.expire(exp), 1);
    }

    #[test]
    fn retransmitted_fin_is_reacked_and_restarts_timer() {
        let mut t = table();
        t.insert(ms(0), t4(1, 80), st(500, 1000, Some(10)));
        t.insert(ms(100), t4(2, 80), st(1, 1, None));
        // The peer's FIN carried seq 999 (rcv_nxt 1000 = FIN + 1).
        let fin = TwSegment {
            seq: SeqNum(999),
            ack: Some(SeqNum(500)),
            fin: true,
            tsval: Some(15),
            ..TwSegment::default()
        };
        let a = t.handle_segment(ms(30_000), &t4(1, 80), &fin);
        assert_eq!(a, Some(ack_of(500, 1000, Some(15))));
        let e = t.get(&t4(1, 80)).unwrap();
        assert_eq!(e.expires, ms(30_000) + LIFE);
        assert_eq!(e.last_seen, ms(30_000));
        assert_eq!(e.ts_recent, Some(15));
        // A FIN with data ending at rcv_nxt is the same retransmission.
        let fin_data = TwSegment {
            seq: SeqNum(989),
            payload_len: 10,
            fin: true,
            ..fin
        };
        assert!(matches!(
            t.handle_segment(ms(31_000), &t4(1, 80), &fin_data),
            Some(TwAction::Ack { .. })
        ));
        assert_eq!(t.stats().fin_reacked, 2);
        assert_eq!(t.stats().acks_sent, 2);
        // The old expiry no longer applies; the restarted one does.
        assert_eq!(t.expire(ms(60_000)), 0);
        assert_eq!(t.expire(ms(60_100)), 1);
        assert!(t.contains(&t4(1, 80)));
        assert_eq!(t.expire(ms(91_000)), 1);
        assert!(t.is_empty());
        check_all(&t);
    }

    #[test]
    fn fin_not_ending_at_rcv_nxt_is_acked_without_restart() {
        let mut t = table();
        t.insert(ms(0), t4(1, 80), st(500, 1000, None));
        let fin = TwSegment {
            seq: SeqNum(1000),
            fin: true,
            ..TwSegment::default()
        };
        assert_eq!(
            t.handle_segment(ms(10), &t4(1, 80), &fin),
            Some(ack_of(500, 1000, None))
        );
        assert_eq!(t.get(&t4(1, 80)).unwrap().expires, ms(0) + LIFE);
        assert_eq!(t.stats().fin_reacked, 0);
    }

    #[test]
    fn rst_ignored_by_default_rfc1337() {
        let mut t = table();
        t.insert(ms(0), t4(1, 80), st(500, 1000, None));
        let rst = TwSegment {
            seq: SeqNum(1000),
            rst: true,
            ..TwSegment::default()
        };
        assert_eq!(
            t.handle_segment(ms(1), &t4(1, 80), &rst),
            Some(TwAction::Ignore)
        );
        assert!(t.contains(&t4(1, 80)));
        assert_eq!(t.stats().rst_ignored, 1);
        assert_eq!(t.stats().acks_sent, 0);
    }

    #[test]
    fn rst_accepted_when_rfc1337_off_only_at_rcv_nxt() {
        let mut t = table();
        t.set_rfc1337(false);
        t.insert(ms(0), t4(1, 80), st(500, 1000, None));
        let rst = |seq| TwSegment {
            seq: SeqNum(seq),
            rst: true,
            ..TwSegment::default()
        };
        assert_eq!(
            t.handle_segment(ms(1), &t4(1, 80), &rst(1001)),
            Some(TwAction::Ignore)
        );
        assert_eq!(
            t.handle_segment(ms(1), &t4(1, 80), &rst(999)),
            Some(TwAction::Ignore)
        );
        assert!(t.contains(&t4(1, 80)));
        assert_eq!(
            t.handle_segment(ms(1), &t4(1, 80), &rst(1000)),
            Some(TwAction::ResetAccepted)
        );
        assert!(!t.contains(&t4(1, 80)));
        assert!(!t.local_in_use(t4(1, 80).local));
        let s = t.stats();
        assert_eq!((s.rst_ignored, s.rst_accepted), (2, 1));
        check_all(&t);
    }

    #[test]
    fn unknown_tuple_returns_none() {
        let mut t = table();
        t.insert(ms(0), t4(1, 80), st(500, 1000, None));
        assert_eq!(t.handle_segment(ms(1), &t4(1, 81), &seg(1000)), None);
        assert_eq!(t.handle_segment(ms(1), &t6(1, 80), &seg(1000)), None);
    }

    #[test]
    fn syn_with_greater_seq_reopens() {
        let mut t = table();
        t.insert(ms(0), t4(1, 80), st(500, 1000, None));
        let a = t.handle_segment(ms(5), &t4(1, 80), &syn(1001, None));
        let Some(TwAction::Reopen { old }) = a else {
            panic!("expected reopen, got {a:?}")
        };
        assert_eq!(old.tuple, t4(1, 80));
        assert_eq!(old.snd_nxt, SeqNum(500));
        assert_eq!(old.rcv_nxt, SeqNum(1000));
        assert!(!t.contains(&t4(1, 80)));
        assert!(!t.local_in_use(t4(1, 80).local));
        assert_eq!(t.stats().reopened, 1);
        check_all(&t);
    }

    #[test]
    fn syn_with_lower_seq_is_old_duplicate_answered_with_ack_and_entry_kept() {
        let mut t = table();
        t.insert(ms(0), t4(1, 80), st(500, 1000, None));
        for seq in [999, 1000, 10] {
            assert_eq!(
                t.handle_segment(ms(20_000), &t4(1, 80), &syn(seq, None)),
                Some(ack_of(500, 1000, None))
            );
        }
        let e = t.get(&t4(1, 80)).unwrap();
        assert_eq!(e.expires, ms(0) + LIFE, "timer must not restart");
        assert_eq!(t.stats().old_duplicates, 3);
        assert_eq!(t.stats().acks_sent, 3);
    }

    #[test]
    fn syn_with_newer_timestamp_reopens_even_with_lower_seq() {
        let mut t = table();
        t.insert(ms(0), t4(1, 80), st(500, 1000, Some(7_000)));
        // Equal timestamp and lower seq: old duplicate.
        assert_eq!(
            t.handle_segment(ms(1), &t4(1, 80), &syn(5, Some(7_000))),
            Some(ack_of(500, 1000, Some(7_000)))
        );
        // Newer timestamp: RFC 6191 reopen, whatever the sequence number.
        assert!(matches!(
            t.handle_segment(ms(2), &t4(1, 80), &syn(5, Some(7_001))),
            Some(TwAction::Reopen { .. })
        ));
        // Timestamp on the segment but not in the entry: only seq counts.
        t.insert(ms(3), t4(2, 80), st(500, 1000, None));
        assert!(matches!(
            t.handle_segment(ms(4), &t4(2, 80), &syn(5, Some(u32::MAX))),
            Some(TwAction::Ack { tsecr: None, .. })
        ));
    }

    #[test]
    fn syn_ack_is_answered_with_ack() {
        let mut t = table();
        t.insert(ms(0), t4(1, 80), st(500, 1000, None));
        let synack = TwSegment {
            ack: Some(SeqNum(500)),
            ..syn(5000, None)
        };
        assert_eq!(
            t.handle_segment(ms(1), &t4(1, 80), &synack),
            Some(ack_of(500, 1000, None))
        );
        assert!(t.contains(&t4(1, 80)));
        assert_eq!(t.stats().reopened, 0);
    }

    #[test]
    fn paws_rejects_older_timestamp() {
        let mut t = table();
        t.insert(ms(0), t4(1, 80), st(500, 1000, Some(100)));
        let mut fin = TwSegment {
            seq: SeqNum(999),
            fin: true,
            tsval: Some(99),
            ..TwSegment::default()
        };
        // Even a perfect FIN retransmission is refused when its TSval is older.
        assert_eq!(
            t.handle_segment(ms(9), &t4(1, 80), &fin),
            Some(ack_of(500, 1000, Some(100)))
        );
        assert_eq!(t.get(&t4(1, 80)).unwrap().expires, ms(0) + LIFE);
        // SYN with greater seq but older timestamp: PAWS wins, old duplicate.
        assert!(matches!(
            t.handle_segment(ms(9), &t4(1, 80), &syn(5000, Some(50))),
            Some(TwAction::Ack { .. })
        ));
        // Modular: 100 - 2^31 - 1 wraps to "newer"... and u32::MAX is older than 100.
        fin.tsval = Some(u32::MAX);
        assert!(matches!(
            t.handle_segment(ms(9), &t4(1, 80), &fin),
            Some(TwAction::Ack { .. })
        ));
        let s = t.stats();
        assert_eq!(s.paws_rejected, 3);
        assert_eq!(s.old_duplicates, 1);
        assert_eq!(s.fin_reacked, 0);
        assert!(t.contains(&t4(1, 80)));
    }

    #[test]
    fn timestamps_wrap_modularly() {
        let mut t = table();
        t.insert(ms(0), t4(1, 80), st(500, 1000, Some(u32::MAX - 5)));
        // TSval 3 is 9 ticks after u32::MAX - 5: newer, so a SYN reopens.
        assert!(matches!(
            t.handle_segment(ms(1), &t4(1, 80), &syn(0, Some(3))),
            Some(TwAction::Reopen { .. })
        ));
    }

    #[test]
    fn acceptable_pure_ack_is_ignored_and_others_are_acked() {
        let mut t = table();
        t.insert(ms(0), t4(1, 80), st(500, 1000, Some(1)));
        let mut s = seg(1000);
        s.tsval = Some(2);
        assert_eq!(
            t.handle_segment(ms(1), &t4(1, 80), &s),
            Some(TwAction::Ignore)
        );
        assert_eq!(t.get(&t4(1, 80)).unwrap().ts_recent, Some(2));
        // Data, or an ACK outside rcv_nxt: ACK.
        let data = TwSegment {
            payload_len: 10,
            ..seg(1000)
        };
        assert_eq!(
            t.handle_segment(ms(2), &t4(1, 80), &data),
            Some(ack_of(500, 1000, Some(2)))
        );
        assert!(matches!(
            t.handle_segment(ms(2), &t4(1, 80), &seg(2000)),
            Some(TwAction::Ack { .. })
        ));
        assert_eq!(t.stats().acks_sent, 2);
        assert_eq!(t.get(&t4(1, 80)).unwrap().expires, ms(0) + LIFE);
    }

    #[test]
    fn seq_wraparound_near_u32_max() {
        let mut t = table();
        // rcv_nxt wrapped past zero: the FIN was at u32::MAX.
        t.insert(ms(0), t4(1, 80), st(u32::MAX - 1, 0, None));
        let fin = TwSegment {
            seq: SeqNum(u32::MAX),
            fin: true,
            ..TwSegment::default()
        };
        assert!(matches!(
            t.handle_segment(ms(1), &t4(1, 80), &fin),
            Some(TwAction::Ack { .. })
        ));
        assert_eq!(t.stats().fin_reacked, 1);
        // u32::MAX - 10 is before 0 in modular order: old duplicate.
        assert!(matches!(
            t.handle_segment(ms(2), &t4(1, 80), &syn(u32::MAX - 10, None)),
            Some(TwAction::Ack { .. })
        ));
        // 5 is after 0: reopen; the floor wraps past zero too.
        let Some(TwAction::Reopen { old }) = t.handle_segment(ms(3), &t4(1, 80), &syn(5, None))
        else {
            panic!("expected reopen")
        };
        let floor = reopen_isn_floor(&old);
        assert_eq!(floor, SeqNum(65535));
        assert!(floor > old.snd_nxt);
    }

    #[test]
    fn reopen_isn_floor_above_snd_nxt() {
        let mut t = table();
        t.insert(ms(0), t4(1, 80), st(123_456, 1000, None));
        let old = t.get(&t4(1, 80)).unwrap();
        let floor = reopen_isn_floor(&old);
        assert_eq!(floor, SeqNum(123_456 + 65_537));
        assert!(floor > old.snd_nxt);
        assert_eq!(floor - old.snd_nxt, 65_537);
    }

    #[test]
    fn expiry_is_fifo_after_2msl() {
        let mut t = table();
        for i in 0..10u16 {
            t.insert(ms(i as u64 * 1000), t4(i, 80), st(1, 1, None));
        }
        assert_eq!(t.next_expiry(), Some(ms(0) + LIFE));
        assert_eq!(t.expire(ms(59_999)), 0);
        assert_eq!(t.expire(ms(60_000)), 1);
        assert!(!t.contains(&t4(0, 80)));
        assert_eq!(t.next_expiry(), Some(ms(61_000)));
        assert_eq!(t.expire(ms(64_500)), 4);
        let left: Vec<u16> = t.iter().map(|e| e.tuple.local.port()).collect();
        assert_eq!(left, vec![5, 6, 7, 8, 9]);
        assert_eq!(t.expire(ms(1_000_000)), 5);
        assert_eq!(t.next_expiry(), None);
        assert_eq!(t.stats().expired, 10);
        check_all(&t);
    }

    #[test]
    fn restart_moves_entry_to_tail() {
        let mut t = table();
        t.insert(ms(0), t4(1, 80), st(1, 100, None));
        t.insert(ms(10), t4(2, 80), st(1, 100, None));
        t.insert(ms(20), t4(3, 80), st(1, 100, None));
        let fin = TwSegment {
            seq: SeqNum(99),
            fin: true,
            ..TwSegment::default()
        };
        t.handle_segment(ms(30), &t4(1, 80), &fin);
        let order: Vec<u16> = t.iter().map(|e| e.tuple.local.port()).collect();
        assert_eq!(order, vec![2, 3, 1]);
        assert_eq!(t.next_expiry(), Some(ms(10) + LIFE));
        // Re-inserting an existing tuple is a replace and also moves it to the tail.
        assert_eq!(
            t.insert(ms(40), t4(2, 80), st(7, 8, None)),
            TwInsert::Replaced
        );
        let order: Vec<u16> = t.iter().map(|e| e.tuple.local.port()).collect();
        assert_eq!(order, vec![3, 1, 2]);
        assert_eq!(t.get(&t4(2, 80)).unwrap().snd_nxt, SeqNum(7));
        assert_eq!(t.len(), 3);
        assert_eq!(t.stats().replaced, 1);
        check_all(&t);
    }

    #[test]
    fn overflow_evicts_oldest() {
        let mut t = TimeWaitTable::with_seed(LIFE, 3, TwOverflow::EvictOldest, true, [1; 16]);
        for i in 0..3u16 {
            assert_eq!(
                t.insert(ms(i as u64), t4(i, 80), st(1, 1, None)),
                TwInsert::Inserted
            );
        }
        assert_eq!(
            t.insert(ms(5), t4(9, 80), st(1, 1, None)),
            TwInsert::EvictedOldest(t4(0, 80))
        );
        assert_eq!(t.len(), 3);
        assert!(!t.contains(&t4(0, 80)) && t.contains(&t4(9, 80)));
        // The oldest across families: an IPv6 entry older than every IPv4 one goes first.
        let mut t = TimeWaitTable::with_seed(LIFE, 2, TwOverflow::EvictOldest, true, [1; 16]);
        t.insert(ms(0), t6(1, 80), st(1, 1, None));
        t.insert(ms(1), t4(1, 80), st(1, 1, None));
        assert_eq!(
            t.insert(ms(2), t4(2, 80), st(1, 1, None)),
            TwInsert::EvictedOldest(t6(1, 80))
        );
        // Replacing at cap does not evict.
        assert_eq!(
            t.insert(ms(3), t4(1, 80), st(2, 2, None)),
            TwInsert::Replaced
        );
        assert_eq!(t.stats().evicted_oldest, 1);
        check_all(&t);
    }

    #[test]
    fn overflow_drop_new() {
        let mut t = TimeWaitTable::with_seed(LIFE, 2, TwOverflow::DropNew, true, [1; 16]);
        t.insert(ms(0), t4(1, 80), st(1, 1, None));
        t.insert(ms(1), t4(2, 80), st(1, 1, None));
        assert_eq!(
            t.insert(ms(2), t4(3, 80), st(1, 1, None)),
            TwInsert::Dropped
        );
        assert!(!t.contains(&t4(3, 80)));
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().dropped_full, 1);
        // Entries already due do not count against the cap.
        assert_eq!(
            t.insert(ms(0) + LIFE, t4(3, 80), st(1, 1, None)),
            TwInsert::Inserted
        );
        assert!(!t.contains(&t4(1, 80)));
        assert_eq!(t.stats().expired, 1);
        // Cap 0 stores nothing, whatever the policy.
        let mut z = TimeWaitTable::with_seed(LIFE, 0, TwOverflow::EvictOldest, true, [1; 16]);
        assert_eq!(
            z.insert(ms(0), t4(1, 80), st(1, 1, None)),
            TwInsert::Dropped
        );
        assert!(z.is_empty());
    }

    #[test]
    fn summary_bits_are_one_of_sixteen_and_one_of_eight() {
        for h in (0..1u32 << 12).chain((0..64).map(|i| 0x9e37_79b9u32.wrapping_mul(i))) {
            let want = (1 << (8 + ((h >> 1) & 15))) | (1 << (24 + ((h >> 5) & 7)));
            assert_eq!(sum_bits(h), want, "{h:#x}");
        }
    }

    #[test]
    fn local_in_use_counts_exactly() {
        let mut t = table();
        let local = t4(1000, 80).local;
        assert!(!t.local_in_use(local));
        t.insert(ms(0), t4(1000, 80), st(1, 1, None));
        t.insert(ms(1), t4(1000, 81), st(1, 1, None));
        t.insert(ms(2), t4(1001, 80), st(1, 1, None));
        t.insert(ms(3), t4(1000, 81), st(1, 1, None)); // replace: no double count
        assert_eq!(
            t.v4.locals[&v4_local(&"192.0.2.2:1000".parse().unwrap())],
            2
        );
        assert!(t.local_in_use(local));
        assert!(!t.local_in_use("192.0.2.3:1000".parse().unwrap()));
        t.remove(&t4(1000, 80));
        assert!(t.local_in_use(local));
        t.expire(ms(3) + LIFE);
        assert!(!t.local_in_use(local));
        assert!(!t.local_in_use(t4(1001, 80).local));
        assert!(t.v4.locals.is_empty());
        // IPv6 locals, and v4 locals of mixed-family tuples, are tracked too.
        t.insert(ms(100_000), t6(5, 80), st(1, 1, None));
        assert!(t.local_in_use(t6(5, 80).local));
        assert!(!t.local_in_use(t6(6, 80).local));
        let mixed = FourTuple::new(t4(7, 80).local, t6(1, 80).remote);
        t.insert(ms(100_000), mixed, st(1, 1, None));
        assert!(t.local_in_use(t4(7, 80).local));
        assert_eq!(t.get(&mixed).unwrap().tuple, mixed);
        check_all(&t);
    }

    #[test]
    fn local_in_use_without_counts_scans_exactly() {
        let mut t = table();
        t.set_local_counts(false);
        assert_eq!(t.memory_bytes(), 0);
        let local = t4(1000, 80).local;
        assert!(!t.local_in_use(local));
        t.insert(ms(0), t4(1000, 80), st(1, 1, None));
        t.insert(ms(1), t4(1000, 81), st(1, 1, None));
        t.insert(ms(2), t6(5, 80), st(1, 1, None));
        let mixed = FourTuple::new(t4(7, 80).local, t6(1, 80).remote);
        t.insert(ms(3), mixed, st(1, 1, None));
        check_all(&t);
        assert!(t.v4.locals.is_empty() && t.wide.locals.is_empty());
        let asked = [
            local,
            t4(1001, 80).local,
            t6(5, 80).local,
            t6(6, 80).local,
            t4(7, 80).local,
        ];
        let want = [true, false, true, false, true];
        let answers = |t: &TimeWaitTable| asked.map(|l| t.local_in_use(l));
        assert_eq!(answers(&t), want);
        // A tombstone (the removed entry's slot) must not count.
        t.remove(&t4(1000, 81));
        assert_eq!(answers(&t), want);
        t.remove(&t4(1000, 80));
        assert_eq!(answers(&t), [false, false, true, false, true]);
        // Back on: the counts are rebuilt from the entries.
        t.insert(ms(4), t4(1000, 82), st(1, 1, None));
        t.set_local_counts(true);
        check_all(&t);
        assert_eq!(answers(&t), want);
        t.set_local_counts(false);
        check_all(&t);
        assert_eq!(answers(&t), want);
        t.expire(ms(4) + LIFE);
        assert_eq!(answers(&t), [false; 5]);
    }

    #[test]
    fn ipv6_entries_work() {
        let mut t = table();
        t.insert(ms(0), t6(1, 80), st(500, 1000, Some(3)));
        t.insert(ms(1), t4(1, 80), st(1, 1, None));
        let e = t.get(&t6(1, 80)).unwrap();
        assert_eq!(e.tuple, t6(1, 80), "scope id and flow info round-trip");
        assert_eq!(e.ts_recent, Some(3));
        assert!(!t.contains(&t6(2, 80)));
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.handle_segment(ms(2), &t6(1, 80), &syn(10, None)),
            Some(ack_of(500, 1000, Some(3)))
        );
        let fin = TwSegment {
            seq: SeqNum(999),
            fin: true,
            ..TwSegment::default()
        };
        t.handle_segment(ms(5), &t6(1, 80), &fin);
        assert_eq!(t.next_expiry(), Some(ms(1) + LIFE));
        assert_eq!(t.expire(ms(1) + LIFE), 1);
        assert_eq!(t.next_expiry(), Some(ms(5) + LIFE));
        assert_eq!(t.iter().count(), 1);
        assert!(t.remove(&t6(1, 80)).is_some());
        assert!(t.is_empty());
        check_all(&t);
    }

    #[test]
    fn many_restarts_keep_tombstones_bounded() {
        let mut t = table();
        for i in 0..10u16 {
            t.insert(ms(0), t4(i, 80), st(1, 100, None));
        }
        let fin = TwSegment {
            seq: SeqNum(99),
            fin: true,
            ..TwSegment::default()
        };
        for n in 0..10_000u64 {
            t.handle_segment(ms(n), &t4((n % 7) as u16 + 1, 80), &fin);
            assert!(t.v4.ring.len() <= 10 + MIN_COMPACT + 1);
        }
        assert_eq!(t.len(), 10);
        check_all(&t);
    }

    #[test]
    fn epoch_rebases_over_long_runs() {
        // A week of table time in 1-hour steps crosses the 30-bit ms range at least once.
        let mut t = table();
        let mut now = ms(1_000);
        t.insert(now, t4(0, 80), st(1, 1, None));
        for i in 1..(24 * 14) {
            now = now + Duration::from_secs(3_600);
            t.insert(now, t4(i as u16, 80), st(1, 1, None));
            // One entry kept alive through the whole run by FIN retransmissions.
            let fin = TwSegment {
                seq: SeqNum(0),
                fin: true,
                ..TwSegment::default()
            };
            t.handle_segment(now, &t4(0, 80), &fin);
            assert_eq!(t.get(&t4(0, 80)).unwrap().expires, now + LIFE);
            assert_eq!(t.get(&t4(i as u16, 80)).unwrap().expires, now + LIFE);
            t.expire(now);
            assert_eq!(t.len(), 2);
            check_all(&t);
        }
        assert!(now.millis() > EXP_MASK as u64);
        assert!(
            t.epoch_ms > EXP_MASK as u64 / 2,
            "the epoch must have moved"
        );
    }

    #[test]
    fn lifetime_is_clamped() {
        let t = TimeWaitTable::new(
            Duration::from_secs(30 * 86_400),
            10,
            TwOverflow::DropNew,
            true,
        );
        assert_eq!(t.lifetime(), MAX_LIFETIME);
    }

    /// Small deterministic PRNG (xorshift64*) so the model test replays exactly.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[derive(Clone, Copy, Debug)]
    struct ModelEntry {
        snd: u32,
        rcv: u32,
        ts: Option<u32>,
        expires_ms: u64,
    }

    fn run_model(seed: u64, cap: usize, overflow: TwOverflow, steps: usize) {
        let mut rng = XorShift(seed);
        let mut t = TimeWaitTable::with_seed(
            LIFE,
            cap,
            overflow,
            true,
            seed.to_le_bytes().repeat(2).try_into().unwrap(),
        );
        let mut model: StdMap<FourTuple, ModelEntry> = StdMap::new();
        let life_ms = LIFE.as_millis() as u64;
        // A pool small enough for collisions; mixing v4 and v6.
        let pool: Vec<FourTuple> = (0..200u16)
            .map(|i| {
                if i % 5 == 0 {
                    t6(i / 10, 80 + i % 3)
                } else {
                    t4(i / 4, 80 + i % 4)
                }
            })
            .collect();
        let mut now_ms = 1_000u64;
        for step in 0..steps {
            let jump = if rng.below(50) == 0 { 40_000 } else { 300 };
            now_ms += 1 + rng.below(jump);
            let now = ms(now_ms);
            let tuple = pool[rng.below(pool.len() as u64) as usize];
            match rng.below(10) {
                0..=3 => {
                    let s = st(
                        rng.next() as u32,
                        rng.next() as u32,
                        (rng.below(2) == 0).then(|| rng.next() as u32),
                    );
                    let got = t.insert(now, tuple, s);
                    let new = ModelEntry {
                        snd: s.snd_nxt.0,
                        rcv: s.rcv_nxt.0,
                        ts: s.ts_recent,
                        expires_ms: now_ms + life_ms,
                    };
                    let want = if model.contains_key(&tuple) {
                        TwInsert::Replaced
                    } else {
                        if model.len() >= cap {
                            model.retain(|_, e| e.expires_ms > now_ms);
                        }
                        if model.len() >= cap {
                            if overflow == TwOverflow::DropNew || cap == 0 {
                                TwInsert::Dropped
                            } else {
                                let (&old, _) =
                                    model.iter().min_by_key(|(_, e)| e.expires_ms).unwrap();
                                model.remove(&old);
                                TwInsert::EvictedOldest(old)
                            }
                        } else {
                            TwInsert::Inserted
                        }
                    };
                    if want != TwInsert::Dropped {
                        model.insert(tuple, new);
                    }
                    assert_eq!(got, want, "step {step}");
                }
                4 => {
                    let got = t.remove(&tuple).map(|e| (e.snd_nxt.0, e.expires));
                    let want = model.remove(&tuple).map(|e| (e.snd, ms(e.expires_ms)));
                    assert_eq!(got, want, "step {step}");
                }
                5 | 6 => {
                    // Retransmitted FIN: restart.
                    let rcv = model.get(&tuple).map_or(0, |e| e.rcv);
                    let fin = TwSegment {
                        seq: SeqNum(rcv.wrapping_sub(1)),
                        fin: true,
                        ..TwSegment::default()
                    };
                    let got = t.handle_segment(now, &tuple, &fin);
                    match model.get_mut(&tuple) {
                        Some(e) => {
                            e.expires_ms = now_ms + life_ms;
                            assert_eq!(got, Some(ack_of(e.snd, e.rcv, e.ts)), "step {step}");
                        }
                        None => assert_eq!(got, None),
                    }
                }
                7 => {
                    // SYN beyond rcv_nxt: reopen.
                    let rcv = model.get(&tuple).map_or(0, |e| e.rcv);
                    let got = t.handle_segment(
                        now,
                        &tuple,
                        &syn(rcv.wrapping_add(1 + rng.below(1 << 20) as u32), None),
                    );
                    match model.remove(&tuple) {
                        Some(e) => {
                            let Some(TwAction::Reopen { old }) = got else {
                                panic!("step {step}: {got:?}")
                            };
                            assert_eq!(
                                (old.snd_nxt.0, old.ts_recent, old.expires),
                                (e.snd, e.ts, ms(e.expires_ms))
                            );
                        }
                        None => assert_eq!(got, None),
                    }
                }
                _ => {
                    let got = t.expire(now);
                    let before = model.len();
                    model.retain(|_, e| e.expires_ms > now_ms);
                    assert_eq!(got, before - model.len(), "step {step}");
                }
            }
            assert_eq!(t.len(), model.len(), "step {step}");
            if step % 16 == 0 {
                check_all(&t);
                for p in &pool {
                    let got = t.get(p).map(|e| {
                        (
                            e.snd_nxt.0,
                            e.rcv_nxt.0,
                            e.ts_recent,
                            e.expires,
                            e.last_seen,
                        )
                    });
                    let want = model.get(p).map(|e| {
                        (
                            e.snd,
                            e.rcv,
                            e.ts,
                            ms(e.expires_ms),
                            ms(e.expires_ms - life_ms),
                        )
                    });
                    assert_eq!(got, want, "step {step} {p}");
                    assert_eq!(
                        t.local_in_use(p.local),
                        model.keys().any(|k| k.local == p.local),
                        "step {step}"
                    );
                }
                let mut it: Vec<FourTuple> = t.iter().map(|e| e.tuple).collect();
                let mut mk: Vec<FourTuple> = model.keys().copied().collect();
                it.sort_by_key(|t| t.to_string());
                mk.sort_by_key(|t| t.to_string());
                assert_eq!(it, mk);
                assert_eq!(
                    t.next_expiry(),
                    model.values().map(|e| ms(e.expires_ms)).min()
                );
            }
        }
    }

    #[test]
    fn model_based_random_operations_match_a_hashmap() {
        run_model(
            0x1234_5678_9abc_def1,
            1_000,
            TwOverflow::EvictOldest,
            40_000,
        );
        run_model(0xfeed_face_cafe_beef, 60, TwOverflow::EvictOldest, 40_000);
        run_model(0x0bad_5eed_0000_0001, 60, TwOverflow::DropNew, 40_000);
    }

    /// The index alone, with hashes chosen to collide: long overflow runs, wrap-around at
    /// the last bucket, removal from the middle of a run, and the overflow counts exact.
    #[test]
    fn index_overflow_runs_and_counts_stay_exact() {
        let mut rng = XorShift(0x5eed);
        let mut ix = HashIndex::new();
        let mut model: StdMap<u32, u32> = StdMap::new();
        // Few distinct hashes, all odd, many near u32::MAX so runs wrap to bucket 0.
        let mut hashes: Vec<u32> = (0..24u32)
            .map(|i| {
                if i % 3 == 0 {
                    u32::MAX - 2 * i
                } else {
                    (i << 27) | 1
                }
            })
            .collect();
        // And spread ones, so that most buckets take the no-overflow paths.
        hashes.extend((0..200).map(|_| rng.next() as u32 | 1));
        for step in 0..20_000u32 {
            if rng.below(3) != 0 || model.is_empty() {
                let h = hashes[rng.below(hashes.len() as u64) as usize];
                ix.insert(h, step);
                model.insert(step, h);
            } else {
                let k = *model
                    .keys()
                    .nth(rng.below(model.len() as u64) as usize)
                    .unwrap();
                let h = model.remove(&k).unwrap();
                assert!(ix.remove(h, k));
                assert!(!ix.remove(h, k));
            }
            if step % 64 == 0 {
                ix.shrink();
            }
            if step % 97 == 0 {
                assert_eq!(ix.len(), model.len());
                for (&p, &h) in &model {
                    assert_eq!(ix.find_map(h, |q| (q == p).then_some(q)), Some(p));
                    assert_eq!(ix.locate(h, p).map(|(b, i)| ix.buckets[b].pos[i]), Some(p));
                }
                assert_eq!(
                    ix.find_map(hashes[0], |q| (q == u32::MAX).then_some(q)),
                    None
                );
                // Recount the overflow counters from the entries' homes.
                let n = ix.buckets.len();
                let mut want = vec![0u32; n];
                for (b, bk) in ix.buckets.iter().enumerate() {
                    for i in 0..B_SLOTS {
                        if ix.side[b] & (1 << i) != 0 {
                            assert_ne!(bk.tags[i], 0);
                            let mut x = ix.home(bk.tags[i]);
                            while x != b {
                                want[x] += 2;
                                x = (x + 1) % n;
                            }
                        }
                    }
                }
                let got: Vec<u32> = ix.buckets.iter().map(|bk| bk.tags[B_SLOTS]).collect();
                assert_eq!(got, want, "step {step}");
                // And the side words, exactly (used bits, no stale summary bits).
                let mut side = vec![0u32; n];
                for (b, bk) in ix.buckets.iter().enumerate() {
                    if bk.overflowed() {
                        side[b] |= OVER_BIT;
                    }
                    for i in 0..B_SLOTS {
                        if bk.tags[i] != 0 {
                            side[b] |= 1 << i;
                            side[ix.home(bk.tags[i])] |= sum_bits(bk.tags[i]);
                        }
                    }
                }
                assert_eq!(ix.side, side, "step {step}");
            }
        }
        for (p, h) in model.drain() {
            assert!(ix.remove(h, p));
        }
        ix.shrink();
        assert_eq!(ix.allocation_size(), 0);
    }

    /// A removal from a bucket that entries probed past pulls one of them back from the
    /// next bucket, and the counts follow: the bucket's overflow count drops to 0 when
    /// the last one comes home.
    #[test]
    fn removal_pulls_an_overflowed_entry_back() {
        let mut ix = HashIndex::new();
        // Hashes whose home is bucket 1 of 4 (multiply-shift: the top two bits).
        let h = |k: u32| (1 << 30) | (k << 1) | 1;
        for k in 0..9 {
            ix.insert(h(k), k);
        }
        assert_eq!(ix.buckets.len(), 4);
        assert_eq!(
            ix.buckets[1].tags[B_SLOTS], 4,
            "two entries passed bucket 1"
        );
        assert_eq!(ix.locate(h(7), 7).map(|(b, _)| b), Some(2));
        assert_eq!(ix.locate(h(8), 8).map(|(b, _)| b), Some(2));
        assert!(ix.remove(h(3), 3));
        // One of the two came back to its home, into the freed slot.
        let homes: Vec<usize> = [7, 8]
            .iter()
            .map(|&k| ix.locate(h(k), k).unwrap().0)
            .collect();
        assert!(homes.contains(&1) && homes.contains(&2), "{homes:?}");
        assert_eq!(ix.buckets[1].tags[B_SLOTS], 2);
        assert_ne!(ix.side[1] & OVER_BIT, 0);
        assert!(ix.remove(h(0), 0));
        assert_eq!(ix.locate(h(7), 7).map(|(b, _)| b), Some(1));
        assert_eq!(ix.locate(h(8), 8).map(|(b, _)| b), Some(1));
        assert_eq!(ix.buckets[1].tags[B_SLOTS], 0);
        assert_eq!(ix.side[1] & OVER_BIT, 0);
        assert_eq!(ix.side[2] & USED_MASK, 0);
        for k in (1..9).filter(|&k| k != 3) {
            assert_eq!(ix.find_map(h(k), |p| (p == k).then_some(p)), Some(k));
        }
    }

    /// What `prefetch` loads is what lookups read: for an entry in its home bucket or the
    /// next one (where all but a few live: 99.3% here), the candidate slot is the entry's
    /// own, and misses load no slot. Run on a table churned long enough for entries to sit
    /// past their home, in both lanes. (`prefetch` itself runs in
    /// `expiry_with_lines_loaded_ahead_and_tombstones`, over a table large enough.)
    #[test]
    fn prefetch_candidates_are_the_slots_lookups_read() {
        let mut t = TimeWaitTable::with_seed(LIFE, 1 << 20, TwOverflow::EvictOldest, true, [9; 16]);
        let tuple = |i: u32| {
            if i.is_multiple_of(16) {
                t6((i >> 4) as u16, 443)
            } else {
                FourTuple::new(
                    SocketAddr::from((Ipv4Addr::new(198, 51, 100, 1), 80)),
                    SocketAddr::from((Ipv4Addr::from(0xcb00_7100 + (i >> 16)), i as u16)),
                )
            }
        };
        // A sliding window of 50k live entries, 200k inserts: removals free slots in
        // full buckets, so later inserts land home while older ones still sit past it.
        const LIVE: u32 = 50_000;
        for i in 0..200_000u32 {
            t.insert(ms(1), tuple(i), st(i, i, None));
            if i >= LIVE {
                assert!(t.remove(&tuple(i - LIVE)).is_some());
            }
        }
        let live: Vec<FourTuple> = (200_000 - LIVE..200_000).map(tuple).collect();
        // (buckets from home, whether the candidate is the entry's slot, whether it is
        // the slot of another key with the same 32-bit index hash).
        fn probe<K: Key>(lane: &Lane<K>, hb: &SipBuild, key: &K) -> (usize, bool, bool) {
            let h = Lane::hash(hb, key);
            let cand = lane.candidate(h).map(|s| s.key);
            let (b, _) = lane.index.locate(h, lane.find(h, key).unwrap()).unwrap();
            let n = lane.index.buckets.len();
            let twin = cand.is_some_and(|c| c != *key && Lane::hash(hb, &c) == h);
            ((b + n - lane.index.home(h)) % n, cand == Some(*key), twin)
        }
        let (mut own, mut next, mut far, mut twins) = (0, 0, 0, 0);
        for k in &live {
            let (away, found, twin) = match route(k) {
                Route::V4(key) => probe(&t.v4, &t.hb, &key),
                Route::Wide(key) => probe(&t.wide, &t.hb, &key),
            };
            match away {
                // A 32-bit hash shared with another live key (a few in 50k entries)
                // makes the first match that key's slot; the lookup reads both.
                _ if twin => twins += 1,
                0 | 1 => {
                    assert!(
                        found,
                        "{k}: {away} buckets from home, candidate not its slot"
                    );
                    if away == 0 {
                        own += 1;
                    } else {
                        next += 1;
                    }
                }
                _ => far += 1,
            }
        }
        assert!(
            next > 100,
            "too few entries past their home to test: {next}"
        );
        assert!(
            far * 50 < live.len(),
            "{far} of {} entries 2+ buckets away ({own} home, {next} next, {twins} twins, {} buckets)",
            live.len(), t.v4.index.buckets.len()
        );
        assert!(twins < 10, "{twins} hash twins");
        assert_eq!(own + next + far + twins, live.len());
        // Misses: mostly stopped by the summary, and never a slot of another key.
        for i in 0..10_000u32 {
            let k = tuple(300_000 + i);
            if let Route::V4(key) = route(&k) {
                let h = Lane::hash(&t.hb, &key);
                assert!(t.v4.candidate(h).is_none_or(|s| s.key != key));
            }
        }
        check_all(&t);
    }

    /// Expiry over an index large enough to load lines ahead, with tombstones (removed
    /// and restarted entries) among the due ones: every due entry goes, nothing else.
    #[test]
    fn expiry_with_lines_loaded_ahead_and_tombstones() {
        const N: u16 = 60_000;
        let mut t =
            TimeWaitTable::with_seed(LIFE, 1_000_000, TwOverflow::EvictOldest, true, [5; 16]);
        let tuple = |i: u32| {
            FourTuple::new(
                SocketAddr::from((Ipv4Addr::new(198, 51, 100, 1), 80)),
                SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + (i >> 16)), i as u16)),
            )
        };
        let n = 6 * N as u32;
        for i in 0..n {
            t.insert(ms(i as u64 / 100), tuple(i), st(i, i, None));
        }
        assert!(t.v4.index.buckets.len() >= WARM_MIN_BUCKETS);
        // Large enough for `prefetch` to load: hits, misses and a partial last group.
        let probe: Vec<FourTuple> = (0..n + 1000).step_by(97).map(tuple).collect();
        let before: Vec<_> = probe.iter().map(|k| t.get(k)).collect();
        t.prefetch(&probe);
        assert_eq!(probe.iter().map(|k| t.get(k)).collect::<Vec<_>>(), before);
        let late_ms = n as u64 / 100;
        let late = ms(late_ms);
        let mut want = n as usize;
        for i in (0..n).step_by(3) {
            assert!(t.remove(&tuple(i)).is_some());
            want -= 1;
        }
        for i in (1..n).step_by(5) {
            if t.insert(late, tuple(i), st(i, i, None)) == TwInsert::Inserted {
                want += 1;
            }
        }
        check_all(&t);
        // Due in small steps, from the first expiry on.
        let life_ms = LIFE.as_millis() as u64;
        for now in (life_ms..late_ms + life_ms).step_by(7) {
            want -= t.expire(ms(now));
        }
        check_all(&t);
        assert_eq!(t.len(), want);
        // The last original entry went in at `late_ms - 1`; the restarted ones at `late`.
        t.expire(ms(late_ms - 1 + life_ms));
        check_all(&t);
        assert_eq!(t.len(), (1..n).step_by(5).count());
        assert!((1..n).step_by(5).all(|i| t.contains(&tuple(i))));
    }

    #[test]
    fn memory_per_ipv4_entry_is_at_most_48_bytes() {
        const N: u32 = 1_000_000;
        let mut t =
            TimeWaitTable::with_seed(LIFE, 2_000_000, TwOverflow::EvictOldest, true, [3; 16]);
        // A server's view: one local ip:port, many clients.
        let local = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 1), 80));
        for i in 0..N {
            let remote = SocketAddr::from((
                Ipv4Addr::from(0x0a00_0000 + (i >> 14)),
                1024 + (i & 0x3fff) as u16,
            ));
            t.insert(
                ms(i as u64 / 1000),
                FourTuple::new(local, remote),
                st(i, i, Some(i)),
            );
        }
        assert_eq!(t.len(), N as usize);
        let per = t.memory_bytes() as f64 / t.len() as f64;
        println!(
            "TIME_WAIT memory: {} bytes for {} IPv4 entries = {per:.2} bytes/entry (slot {} B)",
            t.memory_bytes(),
            t.len(),
            core::mem::size_of::<Slot<V4Key>>()
        );
        assert!(per <= 48.0, "{per} bytes per entry");
        assert_eq!(core::mem::size_of::<Slot<V4Key>>(), 28);
        let probe = FourTuple::new(
            local,
            SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + 3), 1024 + 77)),
        );
        assert_eq!(t.get(&probe).unwrap().snd_nxt, SeqNum(3 * 0x4000 + 77));
        assert_eq!(t.expire(ms(N as u64 / 1000) + LIFE), N as usize);
        assert!(t.is_empty());
        println!("after expiring everything: {} bytes", t.memory_bytes());
        assert!(
            t.memory_bytes() <= 64 * 1024,
            "{} bytes left",
            t.memory_bytes()
        );
    }
}
