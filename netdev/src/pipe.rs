//! An in-memory link between two simulated hosts, with seeded impairment.
//!
//! This module owns the packets in flight between two ends, [`End::A`] and [`End::B`], the
//! time each is due, the per-direction random stream that decides loss, duplication, jitter
//! and reordering, and the per-direction counters. It must never read a clock, sleep, spawn
//! a thread or touch the host network: time is whatever the caller passes as `now`, and the
//! same calls with the same seeds always give the same trace.
//!
//! # Driving a pipe
//!
//! A test or bench moves a simulated clock forward. At each step it lets each stack
//! [`Pipe::send`] what it transmits at `now`, then drains [`Pipe::recv`] for each end until it
//! returns `None`, and finally jumps the clock to the earlier of the stacks' next timers and
//! [`Pipe::next_delivery`].
//!
//! # Cost
//!
//! In steady state the pipe allocates nothing per packet: payload buffers are recycled
//! through a free list, packets whose delivery times arrive in order wait in a FIFO per
//! direction, and only packets overtaken by jitter or reordering go through a binary heap
//! keyed by `(deliver_at, send sequence)`.

use core::cmp::Ordering;
use core::time::Duration;
use std::collections::{BinaryHeap, VecDeque};

use fourtuple_stack::Instant;

/// The shortest time a reordered packet is held back, on top of its normal delay.
///
/// A reordered packet waits an extra `H + U[0, H]`, where `H` is the larger of this and the
/// direction's [`Impairment::delay`], so every packet sent within `H` after it overtakes it.
pub const REORDER_HOLD_MIN: Duration = Duration::from_millis(1);

/// How one direction of a [`Pipe`] mistreats packets.
///
/// Probabilities are in `[0, 1]`: `0` (or less, or NaN) never, `1` (or more) always. The
/// default is a perfect link: nothing lost, duplicated or reordered, zero delay.
#[derive(Clone, Debug, PartialEq)]
pub struct Impairment {
    /// Probability that a sent packet is lost.
    pub loss: f64,
    /// Probability that a packet which was not lost is delivered twice. The copy gets its own
    /// jitter and reordering draws.
    pub duplicate: f64,
    /// Probability that a copy is held back by an extra delay (see [`REORDER_HOLD_MIN`]) so
    /// that later packets overtake it.
    pub reorder: f64,
    /// Fixed one-way delay added to every packet.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per copy, at microsecond resolution.
    /// Non-zero jitter can itself reorder packets.
    pub jitter: Duration,
    /// Seed of this direction's random stream.
    pub seed: u64,
}

impl Default for Impairment {
    fn default() -> Impairment {
        Impairment {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            seed: 0,
        }
    }
}

impl Impairment {
    /// A perfect link: no loss, duplication or reordering, zero delay.
    pub fn perfect() -> Impairment {
        Impairment::default()
    }
}

/// One end of a [`Pipe`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum End {
    /// The first end; it sends with the `a_to_b` impairment.
    A,
    /// The second end; it sends with the `b_to_a` impairment.
    B,
}

impl End {
    /// The other end.
    pub fn peer(self) -> End {
        match self {
            End::A => End::B,
            End::B => End::A,
        }
    }

    fn index(self) -> usize {
        match self {
            End::A => 0,
            End::B => 1,
        }
    }
}

/// Counters for one direction of a [`Pipe`].
///
/// Every sent packet is either lost or enqueued once or twice; every enqueued copy is
/// eventually delivered, dropped as oversize, or still in flight. So
/// `sent - lost + duplicated == delivered + dropped_oversize + in flight`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets handed to [`Pipe::send`].
    pub sent: u64,
    /// Copies handed out by [`Pipe::recv`].
    pub delivered: u64,
    /// Packets lost.
    pub lost: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
    /// Copies held back for reordering.
    pub reordered: u64,
    /// Copies dropped at [`Pipe::recv`] because they did not fit the caller's buffer.
    pub dropped_oversize: u64,
    /// Bytes handed to [`Pipe::send`].
    pub bytes_sent: u64,
    /// Bytes handed out by [`Pipe::recv`].
    pub bytes_delivered: u64,
}

/// Counters for both directions of a [`Pipe`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PipeStats {
    /// Packets sent by [`End::A`] towards [`End::B`].
    pub a_to_b: DirectionStats,
    /// Packets sent by [`End::B`] towards [`End::A`].
    pub b_to_a: DirectionStats,
}

impl PipeStats {
    /// The counters of the direction `from` sends on.
    pub fn from(&self, from: End) -> &DirectionStats {
        match from {
            End::A => &self.a_to_b,
            End::B => &self.b_to_a,
        }
    }
}

/// SplitMix64: a small, fast, seedable generator; every seed (zero included) is fine.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`. Draws nothing when `p` is certain either way, so a perfect
    /// link never touches the generator.
    fn chance(&mut self, p: f64) -> bool {
        if p.is_nan() || p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        // 53 random bits as a float in [0, 1).
        let unit = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        unit < p
    }

    /// Uniform in `[0, n]` (inclusive); draws nothing when `n == 0`.
    fn up_to(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        match n.checked_add(1) {
            // Multiply-high maps 64 random bits onto [0, n + 1) with negligible bias.
            Some(span) => ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u64,
            None => self.next_u64(),
        }
    }
}

fn duration_micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// A copy of a packet waiting for its delivery time.
#[derive(Debug)]
struct InFlight {
    deliver_at: u64,
    seq: u64,
    data: Vec<u8>,
}

impl InFlight {
    fn key(&self) -> (u64, u64) {
        (self.deliver_at, self.seq)
    }
}

/// Heap entry ordered so that `BinaryHeap` (a max-heap) pops the earliest key first.
#[derive(Debug)]
struct Earliest(InFlight);

impl PartialEq for Earliest {
    fn eq(&self, other: &Earliest) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for Earliest {}

impl PartialOrd for Earliest {
    fn partial_cmp(&self, other: &Earliest) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Earliest {
    fn cmp(&self, other: &Earliest) -> Ordering {
        other.0.key().cmp(&self.0.key())
    }
}

/// One direction: its impairment, random stream, queues and counters.
#[derive(Debug)]
struct Direction {
    imp: Impairment,
    delay_us: u64,
    jitter_us: u64,
    reorder_hold_us: u64,
    rng: Rng,
    /// Copies whose `(deliver_at, seq)` keys were enqueued in increasing order.
    fifo: VecDeque<InFlight>,
    /// Copies that would have broken the FIFO's order.
    heap: BinaryHeap<Earliest>,
    next_seq: u64,
    stats: DirectionStats,
}

impl Direction {
    fn new(imp: Impairment) -> Direction {
        let delay_us = duration_micros(imp.delay);
        Direction {
            delay_us,
            jitter_us: duration_micros(imp.jitter),
            reorder_hold_us: delay_us.max(duration_micros(REORDER_HOLD_MIN)),
            rng: Rng(imp.seed),
            imp,
            fifo: VecDeque::new(),
            heap: BinaryHeap::new(),
            next_seq: 0,
            stats: DirectionStats::default(),
        }
    }

    /// Picks the delivery time of one copy sent at `now`.
    fn delivery_time(&mut self, now: Instant) -> u64 {
        let mut at = now.micros().saturating_add(self.delay_us);
        if self.jitter_us != 0 {
            at = at.saturating_add(self.rng.up_to(self.jitter_us));
        }
        if self.rng.chance(self.imp.reorder) {
            let hold = self
                .reorder_hold_us
                .saturating_add(self.rng.up_to(self.reorder_hold_us));
            at = at.saturating_add(hold);
            self.stats.reordered += 1;
        }
        at
    }

    fn enqueue(&mut self, deliver_at: u64, data: Vec<u8>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let copy = InFlight {
            deliver_at,
            seq,
            data,
        };
        // Sequence numbers only grow, so a delivery time no earlier than the FIFO's last one
        // keeps the FIFO sorted by key.
        match self.fifo.back() {
            Some(last) if last.deliver_at > deliver_at => self.heap.push(Earliest(copy)),
            _ => self.fifo.push_back(copy),
        }
    }

    /// The earliest pending key, and whether it sits in the FIFO.
    fn earliest(&self) -> Option<((u64, u64), bool)> {
        let fifo = self.fifo.front().map(InFlight::key);
        let heap = self.heap.peek().map(|e| e.0.key());
        match (fifo, heap) {
            (Some(f), Some(h)) if h < f => Some((h, false)),
            (Some(f), _) => Some((f, true)),
            (None, Some(h)) => Some((h, false)),
            (None, None) => None,
        }
    }

    fn next_due(&self) -> Option<u64> {
        self.earliest().map(|((at, _), _)| at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<InFlight> {
        let ((at, _), in_fifo) = self.earliest()?;
        if at > now.micros() {
            return None;
        }
        if in_fifo {
            self.fifo.pop_front()
        } else {
            self.heap.pop().map(|e| e.0)
        }
    }

    fn len(&self) -> usize {
        self.fifo.len() + self.heap.len()
    }
}

/// A simulated link between [`End::A`] and [`End::B`], each direction with its own
/// [`Impairment`]. See the [module documentation](self) for how to drive it.
#[derive(Debug)]
pub struct Pipe {
    /// Index 0 carries A to B, index 1 carries B to A.
    dirs: [Direction; 2],
    /// Emptied payload buffers, reused by [`Pipe::send`].
    free: Vec<Vec<u8>>,
}

impl Pipe {
    /// A pipe whose A-to-B direction suffers `a_to_b` and whose B-to-A direction suffers
    /// `b_to_a`.
    pub fn new(a_to_b: Impairment, b_to_a: Impairment) -> Pipe {
        Pipe {
            dirs: [Direction::new(a_to_b), Direction::new(b_to_a)],
            free: Vec::new(),
        }
    }

    /// A perfect pipe in both directions: packets arrive in order, intact, at the time sent.
    pub fn perfect() -> Pipe {
        Pipe::new(Impairment::perfect(), Impairment::perfect())
    }

    /// The impairment of the direction `from` sends on.
    pub fn impairment(&self, from: End) -> &Impairment {
        &self.dirs[from.index()].imp
    }

    /// Sends `packet` from `from` at time `now`.
    ///
    /// Unless lost, it becomes due at the other end at `now + delay`, plus a jitter draw, plus
    /// a hold-back if it is picked for reordering; it may also be duplicated. `now` need not
    /// grow between calls: each copy is delivered by its own due time whatever the order of
    /// sends.
    pub fn send(&mut self, from: End, now: Instant, packet: &[u8]) {
        let dir = &mut self.dirs[from.index()];
        dir.stats.sent += 1;
        dir.stats.bytes_sent += packet.len() as u64;
        if dir.rng.chance(dir.imp.loss) {
            dir.stats.lost += 1;
            return;
        }
        let copies = if dir.rng.chance(dir.imp.duplicate) {
            dir.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut data = self.free.pop().unwrap_or_default();
            data.extend_from_slice(packet);
            let at = dir.delivery_time(now);
            dir.enqueue(at, data);
        }
    }

    /// Takes the next packet due for `to` at or before `now` and copies it into `buf`,
    /// returning its length; `None` when nothing is due.
    ///
    /// Packets come out in order of due time, ties in send order. A packet longer than `buf`
    /// is dropped (counted in [`DirectionStats::dropped_oversize`]) and the next due packet
    /// is tried, as a NIC drops a frame larger than its receive buffer.
    pub fn recv(&mut self, to: End, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let dir = &mut self.dirs[to.peer().index()];
        loop {
            let mut copy = dir.pop_due(now)?;
            let len = copy.data.len();
            let fits = len <= buf.len();
            if fits {
                buf[..len].copy_from_slice(&copy.data);
                dir.stats.delivered += 1;
                dir.stats.bytes_delivered += len as u64;
            } else {
                dir.stats.dropped_oversize += 1;
                log::trace!(
                    "pipe: dropped {len}-byte packet for {to:?}: buffer holds {}",
                    buf.len()
                );
            }
            copy.data.clear();
            self.free.push(copy.data);
            if fits {
                return Some(len);
            }
        }
    }

    /// The earliest time a pending packet becomes due, in either direction.
    pub fn next_delivery(&self) -> Option<Instant> {
        let a = self.dirs[0].next_due();
        let b = self.dirs[1].next_due();
        let at = match (a, b) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(Instant::from_micros(at))
    }

    /// The earliest time a pending packet for `to` becomes due.
    pub fn next_delivery_to(&self, to: End) -> Option<Instant> {
        self.dirs[to.peer().index()]
            .next_due()
            .map(Instant::from_micros)
    }

    /// Copies in flight in both directions, due or not.
    pub fn in_flight(&self) -> usize {
        self.dirs[0].len() + self.dirs[1].len()
    }

    /// Copies in flight towards `to`, due or not.
    pub fn in_flight_to(&self, to: End) -> usize {
        self.dirs[to.peer().index()].len()
    }

    /// The counters of both directions.
    pub fn stats(&self) -> PipeStats {
        PipeStats {
            a_to_b: self.dirs[0].stats,
            b_to_a: self.dirs[1].stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Instant = Instant::ZERO;

    fn at_us(us: u64) -> Instant {
        Instant::from_micros(us)
    }

    fn payload(i: u32) -> [u8; 4] {
        i.to_be_bytes()
    }

    /// Drains every packet due for `to` at `now`, as u32 sequence numbers.
    fn drain(pipe: &mut Pipe, to: End, now: Instant) -> Vec<u32> {
        let mut buf = [0u8; 64];
        let mut out = Vec::new();
        while let Some(n) = pipe.recv(to, now, &mut buf) {
            assert_eq!(n, 4);
            out.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
        }
        out
    }

    fn one_way(imp: Impairment) -> Pipe {
        Pipe::new(imp, Impairment::perfect())
    }

    #[test]
    fn perfect_link_preserves_order_and_bytes() {
        let mut pipe = Pipe::perfect();
        let packets: Vec<Vec<u8>> = (0..1000u32)
            .map(|i| {
                (0..(i % 300) as usize)
                    .map(|j| (i as usize * 7 + j) as u8)
                    .collect()
            })
            .collect();
        for p in &packets {
            pipe.send(End::A, T0, p);
        }
        pipe.send(End::B, T0, b"reverse");
        assert_eq!(pipe.in_flight(), 1001);
        assert_eq!(pipe.next_delivery(), Some(T0));

        let mut buf = [0u8; 1500];
        for p in &packets {
            let n = pipe.recv(End::B, T0, &mut buf).expect("packet due");
            assert_eq!(&buf[..n], &p[..]);
        }
        assert_eq!(pipe.recv(End::B, T0, &mut buf), None);
        let n = pipe.recv(End::A, T0, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"reverse");
        assert_eq!(pipe.in_flight(), 0);
        assert_eq!(pipe.next_delivery(), None);

        let s = pipe.stats();
        assert_eq!(s.a_to_b.sent, 1000);
        assert_eq!(s.a_to_b.delivered, 1000);
        assert_eq!(s.a_to_b.bytes_sent, s.a_to_b.bytes_delivered);
        assert_eq!(s.b_to_a.delivered, 1);
        assert_eq!(s.from(End::B).bytes_delivered, 7);
    }

    #[test]
    fn perfect_link_reuses_buffers() {
        let mut pipe = Pipe::perfect();
        let mut buf = [0u8; 64];
        for i in 0..100u32 {
            pipe.send(End::A, T0, &payload(i));
            pipe.send(End::A, T0, &payload(i));
            assert!(pipe.recv(End::B, T0, &mut buf).is_some());
            assert!(pipe.recv(End::B, T0, &mut buf).is_some());
        }
        // Never more than two in flight, so never more than two buffers.
        assert_eq!(pipe.free.len(), 2);
    }

    #[test]
    fn loss_rate_within_tolerance() {
        let mut pipe = one_way(Impairment {
            loss: 0.1,
            seed: 42,
            ..Impairment::default()
        });
        let n = 100_000u32;
        for i in 0..n {
            pipe.send(End::A, T0, &payload(i));
        }
        let got = drain(&mut pipe, End::B, T0);
        let s = pipe.stats().a_to_b;
        assert_eq!(s.lost + s.delivered, u64::from(n));
        assert_eq!(got.len() as u64, s.delivered);
        // One standard deviation is about 95 packets; allow about five.
        let rate = s.lost as f64 / f64::from(n);
        assert!((rate - 0.1).abs() < 0.005, "loss rate {rate}");
        // Survivors keep their order.
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn full_loss_delivers_nothing() {
        let mut pipe = one_way(Impairment {
            loss: 1.0,
            ..Impairment::default()
        });
        for i in 0..100 {
            pipe.send(End::A, T0, &payload(i));
        }
        assert_eq!(pipe.in_flight(), 0);
        assert_eq!(pipe.stats().a_to_b.lost, 100);
    }

    #[test]
    fn duplication_delivers_extra_copies() {
        let mut pipe = one_way(Impairment {
            duplicate: 0.2,
            seed: 7,
            ..Impairment::default()
        });
        let n = 10_000u32;
        for i in 0..n {
            pipe.send(End::A, T0, &payload(i));
        }
        let got = drain(&mut pipe, End::B, T0);
        let s = pipe.stats().a_to_b;
        assert_eq!(got.len() as u64, u64::from(n) + s.duplicated);
        let rate = s.duplicated as f64 / f64::from(n);
        assert!((rate - 0.2).abs() < 0.02, "duplication rate {rate}");
        // Without delay a copy follows its original directly.
        let mut dups = 0;
        for w in got.windows(2) {
            assert!(w[1] == w[0] || w[1] == w[0] + 1);
            dups += usize::from(w[1] == w[0]);
        }
        assert_eq!(dups as u64, s.duplicated);
    }

    #[test]
    fn reordering_reorders() {
        let mut pipe = one_way(Impairment {
            reorder: 0.1,
            seed: 3,
            ..Impairment::default()
        });
        // One packet every 100 µs for 1 s, draining as the clock moves.
        let mut got = Vec::new();
        for i in 0..10_000u32 {
            let now = at_us(u64::from(i) * 100);
            pipe.send(End::A, now, &payload(i));
            got.extend(drain(&mut pipe, End::B, now));
        }
        while let Some(t) = pipe.next_delivery() {
            got.extend(drain(&mut pipe, End::B, t));
        }
        let s = pipe.stats().a_to_b;
        assert_eq!(got.len(), 10_000);
        assert!(s.reordered > 800 && s.reordered < 1200, "{s:?}");
        let inversions = got.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(inversions > 500, "only {inversions} inversions");
        // Nothing lost or duplicated: a permutation of the sent packets.
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert!(sorted.iter().enumerate().all(|(i, &v)| v == i as u32));
    }

    #[test]
    fn delay_respected() {
        let delay = Duration::from_millis(10);
        let mut pipe = one_way(Impairment {
            delay,
            ..Impairment::default()
        });
        pipe.send(End::A, at_us(1_000), &payload(1));
        pipe.send(End::A, at_us(2_000), &payload(2));
        assert_eq!(pipe.next_delivery(), Some(at_us(11_000)));
        assert_eq!(pipe.next_delivery_to(End::B), Some(at_us(11_000)));
        assert_eq!(pipe.next_delivery_to(End::A), None);
        assert!(drain(&mut pipe, End::B, at_us(10_999)).is_empty());
        assert_eq!(drain(&mut pipe, End::B, at_us(11_000)), vec![1]);
        assert!(drain(&mut pipe, End::B, at_us(11_999)).is_empty());
        assert_eq!(pipe.next_delivery(), Some(at_us(12_000)));
        assert_eq!(drain(&mut pipe, End::B, at_us(50_000)), vec![2]);
        // The reverse direction has no delay.
        pipe.send(End::B, at_us(3_000), &payload(3));
        assert_eq!(drain(&mut pipe, End::A, at_us(3_000)), vec![3]);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut pipe = one_way(Impairment {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(2),
            seed: 11,
            ..Impairment::default()
        });
        for i in 0..1000u32 {
            pipe.send(End::A, at_us(u64::from(i)), &payload(i));
        }
        let mut last = 0;
        while let Some(t) = pipe.next_delivery() {
            assert!(t.micros() >= last, "due times must not go backwards");
            last = t.micros();
            for i in drain(&mut pipe, End::B, t) {
                let sent = u64::from(i);
                assert!(t.micros() >= sent + 5_000 && t.micros() <= sent + 7_000);
            }
        }
        assert_eq!(pipe.stats().a_to_b.delivered, 1000);
    }

    #[test]
    fn ties_come_out_in_send_order() {
        // Sends out of time order: the later send is due first; equal due times keep send
        // order even when one copy went through the heap.
        let mut pipe = one_way(Impairment {
            delay: Duration::from_millis(1),
            ..Impairment::default()
        });
        pipe.send(End::A, at_us(500), &payload(0));
        pipe.send(End::A, at_us(100), &payload(1));
        pipe.send(End::A, at_us(100), &payload(2));
        pipe.send(End::A, at_us(500), &payload(3));
        assert_eq!(drain(&mut pipe, End::B, at_us(1_100)), vec![1, 2]);
        assert_eq!(drain(&mut pipe, End::B, at_us(1_500)), vec![0, 3]);
    }

    #[test]
    fn oversize_packets_are_dropped_and_counted() {
        let mut pipe = Pipe::perfect();
        pipe.send(End::A, T0, &[1; 100]);
        pipe.send(End::A, T0, &[2; 10]);
        let mut small = [0u8; 50];
        assert_eq!(pipe.recv(End::B, T0, &mut small), Some(10));
        assert_eq!(small[..10], [2; 10]);
        let s = pipe.stats().a_to_b;
        assert_eq!(s.dropped_oversize, 1);
        assert_eq!(s.delivered, 1);
        assert_eq!(pipe.in_flight(), 0);
    }

    fn trace(seed: u64) -> Vec<(u64, End, u32)> {
        let imp = |seed| Impairment {
            loss: 0.05,
            duplicate: 0.05,
            reorder: 0.05,
            delay: Duration::from_millis(2),
            jitter: Duration::from_micros(300),
            seed,
        };
        let mut pipe = Pipe::new(imp(seed), imp(seed ^ 0xdead_beef));
        let mut out = Vec::new();
        for i in 0..5_000u32 {
            let now = at_us(u64::from(i) * 37);
            let from = if i % 3 == 0 { End::B } else { End::A };
            pipe.send(from, now, &payload(i));
            for to in [End::A, End::B] {
                for p in drain(&mut pipe, to, now) {
                    out.push((now.micros(), to, p));
                }
            }
        }
        while let Some(t) = pipe.next_delivery() {
            for to in [End::A, End::B] {
                for p in drain(&mut pipe, to, t) {
                    out.push((t.micros(), to, p));
                }
            }
        }
        out
    }

    #[test]
    fn same_seed_same_trace() {
        let a = trace(1234);
        assert_eq!(a, trace(1234));
        assert_ne!(a, trace(1235));
    }

    #[test]
    fn counters_balance() {
        let imp = Impairment {
            loss: 0.1,
            duplicate: 0.1,
            reorder: 0.1,
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(1),
            seed: 99,
        };
        let mut pipe = Pipe::new(imp.clone(), imp);
        for i in 0..10_000u32 {
            pipe.send(End::A, at_us(u64::from(i)), &payload(i));
        }
        let half = drain(&mut pipe, End::B, at_us(5_000)).len() as u64;
        let s = pipe.stats().a_to_b;
        assert_eq!(s.delivered, half);
        assert_eq!(
            s.sent - s.lost + s.duplicated,
            s.delivered + s.dropped_oversize + pipe.in_flight() as u64
        );
    }

    #[test]
    fn throughput_perfect_link() {
        // A measurement, not an assertion: run with --release --nocapture to read it.
        let n: u64 = if cfg!(debug_assertions) {
            200_000
        } else {
            5_000_000
        };
        let mut pipe = Pipe::perfect();
        let packet = [0x45u8; 64];
        let mut buf = [0u8; 1500];
        let burst = 32;
        let start = std::time::Instant::now();
        let mut now = 0u64;
        let mut received = 0u64;
        while received < n {
            let t = at_us(now);
            for _ in 0..burst {
                pipe.send(End::A, t, &packet);
            }
            while let Some(len) = pipe.recv(End::B, t, &mut buf) {
                received += 1;
                std::hint::black_box(&buf[..len]);
            }
            now += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "pipe throughput (perfect link, 64-byte packets, bursts of {burst}): {:.1} Mpkt/s \
             ({received} packets in {secs:.3} s)",
            received as f64 / secs / 1e6
        );
        assert_eq!(pipe.stats().a_to_b.delivered, received);
    }
}
