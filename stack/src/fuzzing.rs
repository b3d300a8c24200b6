//! Fuzz target bodies, shared by `cargo fuzz` (the `fuzz/` crate) and `cargo test`
//! (`stack/tests/fuzz_corpora.rs` replays every corpus file under `fuzz/corpus/`).
//!
//! This module owns the four fuzz targets of issue #6 and the invariants they check. It
//! drives [`Stack`] and [`TimeWaitTable`] through their public API only, exactly as a driver
//! would, so whatever it finds, a driver fed hostile traffic can hit too. It must stay
//! deterministic: no clock, no randomness but the input, so that every input replays the
//! same way under `cargo fuzz run`, under `cargo test` and in a reproduction test.
//!
//! Targets, each a submodule with `run(&[u8])` and `seeds()`:
//! - [`packet`]: one arbitrary packet into a host that has listeners, connections in
//!   several states (one with data in flight) and TIME_WAIT entries; the invariants are
//!   checked after it, after the clock moves, after the host and its peer settle, and the
//!   host must then still accept and serve a new connection.
//! - [`segments`]: an arbitrary sequence of packets, clock steps, application calls and
//!   exchanges with a well-behaved peer; the invariants after every step.
//! - [`time_wait`]: the TIME_WAIT table against a plain model (a small array and the rules
//!   of DESIGN.md) under insert, lookup, SYN, FIN, RST, ACK, expiry and removal.
//! - [`pair`]: two stacks through a link whose loss, reordering, duplication and delay come
//!   from the input; whenever both applications complete, each received exactly what the
//!   other sent, and both stacks end with no connection and no TIME_WAIT entry.
//!
//! # Invariants
//!
//! [`check_stack`] holds for any stack between calls: per-state counts agree with the
//! connection table, the TIME_WAIT table is within its cap and its statistics add up to its
//! length, the counters are consistent with each other, and memory is within the configured
//! limits. The drivers here add: counters never decrease; every packet a stack emits parses,
//! has valid checksums, comes from one of its addresses and fits the MTU its MSS implies;
//! every event names a handle the application holds; a live connection is never also in
//! TIME_WAIT; buffers stay within their configured sizes.
//!
//! # Input format
//!
//! Inputs are read as fixed-width big-endian fields; bytes past the end read as zero, so every
//! byte string is a valid input and a truncated one still means something. The layout is
//! written by hand rather than derived with `arbitrary`, so that it stays stable across
//! dependency upgrades (checked-in corpora keep their meaning) and so that [`seeds`] can
//! encode meaningful inputs: handshakes, reopening SYNs, loss patterns.

use core::time::Duration;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::time_wait::{TimeWaitState, TwAction, TwInsert, TwSegment, TwStats};
use crate::wire::{self, DropReason, Incoming};
use crate::{
    Config, ConnError, ConnHandle, ConnectOptions, Error, Event, FourTuple, Instant,
    ListenerHandle, ReusePolicy, SeqNum, Stack, TcpState, TimeWaitEntry, TimeWaitTable, TwOverflow,
};

/// The names of the fuzz targets, as `cargo fuzz` and `fuzz/corpus/` know them.
pub const TARGETS: [&str; 4] = ["packet", "segments", "time_wait", "pair"];

/// Runs the body of fuzz target `target` on one input; panics when an invariant breaks.
///
/// # Panics
/// On an unknown target name, and on every finding.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "packet" => packet::run(data),
        "segments" => segments::run(data),
        "time_wait" => time_wait::run(data),
        "pair" => pair::run(data),
        other => panic!("unknown fuzz target {other:?}; expected one of {TARGETS:?}"),
    }
}

/// The seed corpus of fuzz target `target`: (file name, input) pairs.
///
/// These are what `fuzz/corpus/TARGET/seed-*` hold; `stack/tests/fuzz_corpora.rs` has the
/// (ignored) test that rewrites them from here.
///
/// # Panics
/// On an unknown target name.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "packet" => packet::seeds(),
        "segments" => segments::seeds(),
        "time_wait" => time_wait::seeds(),
        "pair" => pair::seeds(),
        other => panic!("unknown fuzz target {other:?}; expected one of {TARGETS:?}"),
    }
}

// ---- input encoding ------------------------------------------------------------------

/// Reads fuzzer bytes as fixed-width big-endian fields; past the end every field is zero.
struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8]) -> Cursor<'a> {
        Cursor { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Exactly `n` bytes, zero-padded past the end.
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let k = n.min(self.data.len());
        let mut v = self.data[..k].to_vec();
        self.data = &self.data[k..];
        v.resize(n, 0);
        v
    }
}

/// Writes fields in the layout [`Cursor`] reads them, to build seeds.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) -> &mut Enc {
        self.0.push(v);
        self
    }

    fn u16(&mut self, v: u16) -> &mut Enc {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn u32(&mut self, v: u32) -> &mut Enc {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Enc {
        self.0.extend_from_slice(b);
        self
    }
}

/// Deterministic, non-periodic test data: byte `i` of stream `salt`.
fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 131 + salt as u64 * 7 + (i as u64 >> 8)) % 251) as u8)
        .collect()
}

// ---- addresses -------------------------------------------------------------------------

/// The host under test (`packet`, `segments`) and the client side of `pair`.
const H4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const H6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// Its well-behaved peer.
const P4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const P6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// Nobody: packets to it vanish.
const BLACKHOLE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
/// The host's listening port, and the peer's.
const SERVICE: u16 = 80;
const PEER_SERVICE: u16 = 8080;

fn spoof4(x: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, x))
}

fn spoof6(x: u8) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, x as u16))
}

/// Sources a hostile packet may claim, including ones the stack must refuse to answer.
fn odd_source(v6: bool, i: u8) -> IpAddr {
    let v4s = [
        IpAddr::V4(P4),
        spoof4(1),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(H4),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(BLACKHOLE),
    ];
    let v6s = [
        IpAddr::V6(P6),
        spoof6(1),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)),
        IpAddr::V6(H6),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(P4.to_ipv6_mapped()),
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
    ];
    if v6 {
        v6s[i as usize % v6s.len()]
    } else {
        v4s[i as usize % v4s.len()]
    }
}

// ---- packet construction ---------------------------------------------------------------

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_ICMPV6: u8 = 58;

fn sum_words(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    if let [b] = words.remainder() {
        acc += (*b as u64) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// The transport checksum of `l4` (its checksum field zeroed) under the pseudo-header.
fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> u16 {
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum_words(sum_words(0, &s.octets()), &d.octets()) + proto as u64 + l4.len() as u64
        }
        _ => {
            let len = l4.len() as u64;
            sum_words(sum_words(0, &as_v6(src).octets()), &as_v6(dst).octets())
                + (len >> 16)
                + (len & 0xffff)
                + proto as u64
        }
    };
    fold(sum_words(pseudo, l4))
}

/// An IP packet around `l4`. IPv4 gets `ip_opts` (a multiple of 4 bytes, at most 40) and
/// the flags/fragment-offset word `frag`; both families get a correct header.
fn ip_wrap(src: IpAddr, dst: IpAddr, proto: u8, ip_opts: &[u8], frag: u16, l4: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let hl = 20 + ip_opts.len();
            let total = hl + l4.len();
            let mut p = Vec::with_capacity(total);
            p.push(0x40 | (hl / 4) as u8);
            p.push(0);
            p.extend_from_slice(&(total as u16).to_be_bytes());
            p.extend_from_slice(&[0x12, 0x34]);
            p.extend_from_slice(&frag.to_be_bytes());
            p.extend_from_slice(&[64, proto, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(ip_opts);
            let c = fold(sum_words(0, &p[..hl]));
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p.extend_from_slice(l4);
            p
        }
        _ => {
            let mut p = Vec::with_capacity(40 + l4.len());
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            p.extend_from_slice(&[proto, 64]);
            p.extend_from_slice(&as_v6(src).octets());
            p.extend_from_slice(&as_v6(dst).octets());
            p.extend_from_slice(l4);
            p
        }
    }
}

/// Fields of one hand-made TCP segment.
struct RawTcp<'a> {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    /// The flags byte as on the wire: FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32, ECE 64,
    /// CWR 128.
    flags: u8,
    window: u16,
    urgent: u16,
    /// Option bytes; padded with EOL to a multiple of 4, cut at 40.
    options: &'a [u8],
    payload: &'a [u8],
    /// Overrides the data offset nibble (checksum still correct).
    data_offset: Option<u8>,
}

impl RawTcp<'_> {
    /// The TCP header and payload, with a correct checksum.
    fn segment(&self) -> Vec<u8> {
        let mut opts = self.options[..self.options.len().min(40)].to_vec();
        while opts.len() & 3 != 0 {
            opts.push(0);
        }
        let doff = self.data_offset.unwrap_or(((20 + opts.len()) / 4) as u8);
        let mut t = Vec::with_capacity(20 + opts.len() + self.payload.len());
        t.extend_from_slice(&self.src.port().to_be_bytes());
        t.extend_from_slice(&self.dst.port().to_be_bytes());
        t.extend_from_slice(&self.seq.to_be_bytes());
        t.extend_from_slice(&self.ack.to_be_bytes());
        t.push(doff << 4);
        t.push(self.flags);
        t.extend_from_slice(&self.window.to_be_bytes());
        t.extend_from_slice(&[0, 0]);
        t.extend_from_slice(&self.urgent.to_be_bytes());
        t.extend_from_slice(&opts);
        t.extend_from_slice(self.payload);
        let c = l4_checksum(self.src.ip(), self.dst.ip(), PROTO_TCP, &t);
        t[16..18].copy_from_slice(&c.to_be_bytes());
        t
    }

    /// The whole IP packet.
    fn packet(&self) -> Vec<u8> {
        ip_wrap(
            self.src.ip(),
            self.dst.ip(),
            PROTO_TCP,
            &[],
            0x4000,
            &self.segment(),
        )
    }
}

/// An ICMP (v4) or ICMPv6 echo request.
fn echo_request(src: IpAddr, dst: IpAddr, ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let v6 = src.is_ipv6() || dst.is_ipv6();
    let mut m = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    let (c, proto) = if v6 {
        (l4_checksum(src, dst, PROTO_ICMPV6, &m), PROTO_ICMPV6)
    } else {
        (fold(sum_words(0, &m)), PROTO_ICMP)
    };
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ip_wrap(src, dst, proto, &[], 0, &m)
}

/// Whether every checksum the stack's parser verifies is right: the IPv4 header's, and the
/// TCP, ICMP or ICMPv6 checksum over the payload the IP header delimits. False also for a
/// packet too malformed to tell (which the parser drops anyway). Never false for a packet
/// the parser would accept.
fn checksums_ok(pkt: &[u8]) -> bool {
    let Some(&first) = pkt.first() else {
        return false;
    };
    let (src, dst, proto, payload): (IpAddr, IpAddr, u8, &[u8]) = match first >> 4 {
        4 => {
            let hl = (first as usize & 0xf) * 4;
            let Some(header) = pkt.get(..hl.max(20)) else {
                return false;
            };
            if hl < 20 || fold(sum_words(0, header)) != 0 {
                return false;
            }
            let total = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
            let Some(payload) = pkt.get(hl..total) else {
                return false;
            };
            let ip = |o: usize| IpAddr::from([pkt[o], pkt[o + 1], pkt[o + 2], pkt[o + 3]]);
            (ip(12), ip(16), pkt[9], payload)
        }
        6 => {
            let Some(header) = pkt.get(..40) else {
                return false;
            };
            let len = u16::from_be_bytes([header[4], header[5]]) as usize;
            let Some(payload) = pkt.get(40..40 + len) else {
                return false;
            };
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&header[o..o + 16]);
                IpAddr::from(b)
            };
            (ip(8), ip(24), header[6], payload)
        }
        _ => return false,
    };
    match proto {
        PROTO_TCP | PROTO_ICMPV6 => l4_checksum(src, dst, proto, payload) == 0,
        PROTO_ICMP => fold(sum_words(0, payload)) == 0,
        _ => true,
    }
}

/// Bytes as an IP packet with every checksum recomputed, where its headers say where they
/// are (IPv4 header, TCP, ICMP, ICMPv6); other bytes are left as they are.
fn repair_checksums(mut pkt: Vec<u8>) -> Vec<u8> {
    let Some(&first) = pkt.first() else {
        return pkt;
    };
    let (hl, end, proto) = match first >> 4 {
        4 => {
            let hl = (first as usize & 0xf) * 4;
            if hl < 20 || pkt.len() < hl {
                return pkt;
            }
            pkt[10..12].copy_from_slice(&[0, 0]);
            let c = fold(sum_words(0, &pkt[..hl]));
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
            (hl, u16::from_be_bytes([pkt[2], pkt[3]]) as usize, pkt[9])
        }
        6 if pkt.len() >= 40 => (
            40,
            40 + u16::from_be_bytes([pkt[4], pkt[5]]) as usize,
            pkt[6],
        ),
        _ => return pkt,
    };
    let at = match proto {
        PROTO_TCP => 16,
        PROTO_ICMP | PROTO_ICMPV6 => 2,
        _ => return pkt,
    };
    if end > pkt.len() || end < hl + at + 2 {
        return pkt;
    }
    pkt[hl + at..hl + at + 2].copy_from_slice(&[0, 0]);
    let c = if proto == PROTO_ICMP {
        fold(sum_words(0, &pkt[hl..end]))
    } else {
        let ip = |o: usize, n: usize| -> IpAddr {
            if n == 4 {
                IpAddr::from([pkt[o], pkt[o + 1], pkt[o + 2], pkt[o + 3]])
            } else {
                let mut b = [0u8; 16];
                b.copy_from_slice(&pkt[o..o + 16]);
                IpAddr::from(b)
            }
        };
        let (src, dst) = if hl == 40 && first >> 4 == 6 {
            (ip(8, 16), ip(24, 16))
        } else {
            (ip(12, 4), ip(16, 4))
        };
        l4_checksum(src, dst, proto, &pkt[hl..end])
    };
    pkt[hl + at..hl + at + 2].copy_from_slice(&c.to_be_bytes());
    pkt
}

/// The destination address of an IP packet the stack emitted.
fn packet_dst(pkt: &[u8]) -> Option<IpAddr> {
    match pkt.first()? >> 4 {
        4 => {
            let b: [u8; 4] = pkt.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = pkt.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

// ---- what a stack emits -----------------------------------------------------------------

/// A TCP segment a stack emitted, summarised from the sender's point of view.
#[derive(Copy, Clone, Debug)]
struct Sent {
    /// local = the sender.
    tuple: FourTuple,
    seq: SeqNum,
    ack: Option<SeqNum>,
    seg_len: u32,
    syn: bool,
    rst: bool,
    timestamp: Option<(u32, u32)>,
}

/// Checks one packet `stack` emitted: it parses with valid checksums, comes from one of the
/// stack's addresses and fits the MTU implied by the stack's MSS. Returns its TCP summary
/// (`None` for an echo reply).
fn check_emitted(stack: &Stack, pkt: &[u8]) -> Option<Sent> {
    // smoltcp skips checksum verification under cfg(fuzzing) (cargo fuzz sets it).
    assert!(
        checksums_ok(pkt),
        "the stack emitted a packet with a wrong checksum: {pkt:02x?}"
    );
    match wire::parse(pkt, |_| true) {
        Ok(Incoming::Tcp(seg)) => {
            let tuple = seg.tuple.reversed();
            assert!(
                stack.addresses().contains(&tuple.local.ip()),
                "emitted a segment from {}, not one of the stack's addresses",
                tuple.local
            );
            let cfg = stack.config();
            // RFC 6691 / RFC 9293 §3.7.1: the MSS counts payload only; options come out of
            // it, so nothing is larger than MSS + the fixed IP and TCP headers.
            let mtu = if tuple.local.is_ipv4() {
                cfg.mss_v4 as usize + 40
            } else {
                cfg.mss_v6 as usize + 60
            };
            assert!(
                pkt.len() <= mtu,
                "emitted a {}-byte packet on {tuple}, above the {mtu}-byte MTU its MSS implies",
                pkt.len()
            );
            Some(Sent {
                tuple,
                seq: seg.seq,
                ack: seg.flags.ack.then_some(seg.ack),
                seg_len: seg.seg_len(),
                syn: seg.flags.syn,
                rst: seg.flags.rst,
                timestamp: seg.opts.timestamp,
            })
        }
        // An echo reply: the parser only takes requests, after checking the checksum.
        Err(DropReason::IcmpIgnored) => None,
        Ok(Incoming::Echo(_)) => panic!("the stack emitted an echo request: {pkt:02x?}"),
        Err(r) => panic!("the stack emitted a packet that does not parse ({r:?}): {pkt:02x?}"),
    }
}

// ---- invariants ---------------------------------------------------------------------------

/// Upper bound on the heap a TIME_WAIT table of capacity `cap` may hold (capacities, not
/// lengths): the table keeps at most about twice its live entries plus a few dozen
/// tombstones per lane, and never shrinks below 1024 slots.
fn tw_memory_bound(cap: usize) -> usize {
    let cap = cap.min(1 << 16);
    256 * 1024 + 1024 * cap
}

/// Checks what must hold of any [`Stack`] between two calls, whatever it was fed: per-state
/// counts agree with the connection table, the TIME_WAIT table is within its cap and
/// consistent (see [`check_time_wait_table`]), the counters agree with each other and with
/// the table's statistics, and memory is within the configured limits.
///
/// # Panics
/// With a description of the first invariant that does not hold.
pub fn check_stack(stack: &Stack) {
    let cfg = stack.config();
    let c = stack.counters();
    let tw = stack.time_wait();
    let mut live = 0usize;
    for (state, n) in stack.state_counts() {
        match state {
            TcpState::Closed => assert_eq!(n, 0, "a connection in the table is counted CLOSED"),
            TcpState::Listen => {}
            TcpState::TimeWait => assert_eq!(n, tw.len(), "TIME-WAIT count != table length"),
            _ => live += n,
        }
    }
    assert_eq!(
        live,
        stack.connection_count(),
        "per-state counts disagree with the connection table"
    );
    assert!(
        stack.connection_count() <= cfg.max_connections,
        "{} connections, above max_connections {}",
        stack.connection_count(),
        cfg.max_connections
    );
    check_time_wait_table(tw);
    assert!(
        tw.cap() <= cfg.max_time_wait,
        "TIME_WAIT cap above the configured one"
    );

    let opens = c.active_opens + c.passive_opens;
    assert!(
        c.established <= opens,
        "more handshakes completed ({}) than connections opened ({opens})",
        c.established
    );
    // Every connection ends at most once, under one of these; live ones have not ended.
    let ends = counted_ends(stack);
    assert!(
        ends + live as u64 <= opens,
        "{ends} ended + {live} live connections > {opens} opened: {:?}",
        c.entries()
    );
    let dropped: u64 = c.dropped.iter().sum();
    assert!(
        dropped + c.segments_in <= c.packets_in,
        "{dropped} dropped + {} segments > {} packets in",
        c.segments_in,
        c.packets_in
    );
    let s = tw.stats();
    assert_eq!(
        c.time_wait_entered,
        s.inserted + s.replaced + s.dropped_full,
        "time_wait_entered disagrees with the table's inserts: {s:?}"
    );
    assert_eq!(c.time_wait_evicted, s.evicted_oldest, "evictions: {s:?}");
    assert_eq!(c.time_wait_dropped_full, s.dropped_full, "drops: {s:?}");
    assert_eq!(c.time_wait_reopened, s.reopened, "reopens: {s:?}");
}

/// Connections that ended under one of the counters that say how a connection ended.
fn counted_ends(stack: &Stack) -> u64 {
    let c = stack.counters();
    c.closed_orderly + c.resets_received + c.refused + c.timeouts + c.aborted + c.time_wait_entered
}

/// Connections that ended without any of those counters: opened, not live, not counted. A
/// passive connection that gives up in SYN-RECEIVED (its SYN-ACKs unanswered) is one.
fn uncounted_ends(stack: &Stack) -> u64 {
    let c = stack.counters();
    (c.active_opens + c.passive_opens)
        .saturating_sub(counted_ends(stack) + stack.connection_count() as u64)
}

/// Checks a TIME_WAIT table on its own: within its cap, every entry found by lookup and
/// counted once, statistics that add up to its length, memory within a bound set by its cap.
///
/// # Panics
/// With a description of the first invariant that does not hold.
pub fn check_time_wait_table(tw: &TimeWaitTable) {
    assert!(
        tw.len() <= tw.cap(),
        "{} entries above the cap {}",
        tw.len(),
        tw.cap()
    );
    assert_eq!(tw.is_empty(), tw.iter().next().is_none());
    let mut n = 0;
    for e in tw.iter() {
        n += 1;
        assert_eq!(
            tw.get(&e.tuple),
            Some(e),
            "iter and get disagree on {}",
            e.tuple
        );
        assert!(
            tw.local_in_use(e.tuple.local),
            "{} not in use",
            e.tuple.local
        );
        assert!(
            e.expires >= e.last_seen,
            "{} expires before it was seen",
            e.tuple
        );
    }
    assert_eq!(
        n,
        tw.len(),
        "iter yields {n} entries, len says {}",
        tw.len()
    );
    let s = tw.stats();
    let gone = s.expired + s.removed + s.reopened + s.rst_accepted + s.evicted_oldest;
    assert_eq!(
        s.inserted,
        tw.len() as u64 + gone,
        "TIME_WAIT statistics do not add up to its length {}: {s:?}",
        tw.len()
    );
    assert!(
        tw.memory_bytes() <= tw_memory_bound(tw.cap()),
        "TIME_WAIT table holds {} bytes for a cap of {}",
        tw.memory_bytes(),
        tw.cap()
    );
}

/// Checks the connections an application holds: none is LISTEN, buffers within their
/// configured sizes, no live connection also in TIME_WAIT, no two live ones on a 4-tuple.
fn check_handles(stack: &Stack, handles: &[ConnHandle]) {
    let cfg = stack.config();
    let recv_cap = if cfg.window_scaling {
        cfg.recv_buffer.max(1)
    } else {
        cfg.recv_buffer.clamp(1, 65535)
    };
    let mut live: Vec<FourTuple> = Vec::new();
    for &h in handles {
        let Ok(state) = stack.state(h) else {
            continue;
        };
        let tuple = stack.tuple(h).expect("tuple of a held handle");
        assert_ne!(state, TcpState::Listen, "{tuple} is a connection in LISTEN");
        let queued = stack.send_queued(h).expect("send_queued of a held handle");
        assert!(
            queued <= cfg.send_buffer.max(1),
            "{tuple}: {queued} bytes queued, send buffer {}",
            cfg.send_buffer
        );
        let readable = stack
            .recv_available(h)
            .expect("recv_available of a held handle");
        assert!(
            readable <= recv_cap,
            "{tuple}: {readable} bytes readable, receive buffer {recv_cap}"
        );
        if !matches!(state, TcpState::Closed | TcpState::TimeWait) {
            assert!(
                !stack.time_wait().contains(&tuple),
                "{tuple} is {state:?} and in TIME_WAIT at once"
            );
            assert!(!live.contains(&tuple), "two live connections on {tuple}");
            live.push(tuple);
        }
    }
}

/// Remembers counters to check that none ever decreases.
#[derive(Default)]
struct Watch {
    counters: Vec<(&'static str, u64)>,
    tw: Option<TwStats>,
}

impl Watch {
    fn check(&mut self, stack: &Stack) {
        let now = stack.counters().entries();
        for ((name, before), (name2, after)) in self.counters.iter().zip(now.iter()) {
            assert_eq!(name, name2);
            assert!(
                after >= before,
                "counter {name} went from {before} to {after}"
            );
        }
        self.counters = now;
        let s = stack.time_wait().stats();
        if let Some(b) = self.tw {
            let pairs = [
                (b.inserted, s.inserted),
                (b.expired, s.expired),
                (b.removed, s.removed),
                (b.reopened, s.reopened),
                (b.acks_sent, s.acks_sent),
                (b.rst_ignored, s.rst_ignored),
            ];
            assert!(
                pairs.iter().all(|(x, y)| y >= x),
                "TIME_WAIT statistics went down: {b:?} -> {s:?}"
            );
        }
        self.tw = Some(s);
    }
}

/// Drains a stack's events, checking each names something the application holds.
fn drain_events(stack: &mut Stack) -> Vec<ListenerHandle> {
    let mut incoming = Vec::new();
    let mut n = 0;
    while let Some(ev) = stack.poll_event() {
        n += 1;
        assert!(n < 1_000_000, "poll_event never returns None");
        match ev {
            Event::Conn { handle, events } => {
                assert!(!events.is_empty(), "an empty event for {handle:?}");
                assert!(
                    stack.state(handle).is_ok(),
                    "an event for {handle:?}, which the application does not hold"
                );
            }
            Event::Incoming { listener } => incoming.push(listener),
        }
    }
    incoming
}

// ---- the world of `packet` and `segments` ----------------------------------------------

/// What the fuzzer needs to aim a segment at one of the host's 4-tuples: the sequence
/// numbers and timestamps the host expects, learned from what it sent.
#[derive(Copy, Clone, Debug)]
struct Hint {
    /// From the host's point of view: local = host.
    tuple: FourTuple,
    /// The next sequence number the host expects (its RCV.NXT, from its last ACK).
    peer_seq: SeqNum,
    /// What the host has sent up to (its SND.NXT).
    peer_ack: SeqNum,
    /// The host's TS.Recent, as echoed in its TSecr.
    peer_tsval: u32,
    /// The host's last TSval.
    peer_tsecr: u32,
}

/// Whether the targets check liveness: `packet` and `segments` require the host and its
/// peer to go quiet once the fuzzer stops, and `pair` requires both applications to
/// complete (unless a connection gave up) without a packet storm. Integrity checks do not
/// depend on it. Turn it off only to fuzz past an open liveness finding, and say so next to
/// that finding's test in stack/tests/fuzz_findings.rs (it was off until the ACK war and the
/// zero-window probe wedge reproduced there were fixed).
pub const LIVENESS_CHECKS: bool = true;

/// Deliveries after which a link that has not gone quiet is an ACK war or a storm.
const QUIET_ROUNDS: usize = 5_000;

const LATENCY: Duration = Duration::from_millis(1);
const MAX_HINTS: usize = 48;
const MAX_HANDLES: usize = 64;
const TX_BUF: usize = 70_000;

/// The host under test (`h`), its well-behaved peer (`p`), a perfect 1 ms link between them,
/// and a clock. Packets to any other address vanish; packets from the fuzzer go straight
/// into `h`.
struct World {
    h: Stack,
    p: Stack,
    now: Instant,
    /// (deliver at, to the host?, packet), in sending order.
    wire: VecDeque<(Instant, bool, Vec<u8>)>,
    /// `receive` calls on the host.
    h_received: u64,
    hints: Vec<Hint>,
    h_conns: Vec<ConnHandle>,
    p_conns: Vec<ConnHandle>,
    h_listeners: Vec<ListenerHandle>,
    h_watch: Watch,
    p_watch: Watch,
    buf: Vec<u8>,
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

impl World {
    /// The host's configuration: small limits so that the fuzzer reaches them. `bits`
    /// (the input's first byte) turns policies and options on and off.
    fn host_config(bits: u8) -> Config {
        Config {
            msl: Duration::from_secs(5),
            reuse_policy: match (bits >> 2) & 3 {
                1 => ReusePolicy::LocalPort,
                2 => ReusePolicy::TimestampReuse,
                _ => ReusePolicy::ExactTuple,
            },
            max_time_wait: 6,
            tw_overflow: if bits & 2 != 0 {
                TwOverflow::DropNew
            } else {
                TwOverflow::EvictOldest
            },
            rfc1337: bits & 1 == 0,
            max_connections: 24,
            ephemeral_ports: (49152, 49215),
            send_buffer: 16 * 1024,
            recv_buffer: 16 * 1024,
            max_ooo_bytes_per_conn: 8 * 1024,
            max_ooo_bytes_total: 24 * 1024,
            timestamps: bits & 16 == 0,
            sack: bits & 32 == 0,
            window_scaling: bits & 64 == 0,
            syn_cookies: bits & 128 == 0,
            syn_retries: 3,
            data_retries: 5,
            fin_wait_2_timeout: Duration::from_secs(20),
            keepalive_idle: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(5),
            keepalive_probes: 3,
            challenge_ack_limit: 20,
            default_backlog: 4,
            ..Config::default()
        }
    }

    fn peer_config() -> Config {
        Config {
            msl: Duration::from_secs(5),
            send_buffer: 64 * 1024,
            recv_buffer: 64 * 1024,
            ..Config::default()
        }
    }

    /// Two stacks with addresses and listeners, nothing else.
    fn bare(bits: u8) -> World {
        let mut h = Stack::new(World::host_config(bits), [0x11; 16]);
        h.add_address(IpAddr::V4(H4));
        h.add_address(IpAddr::V6(H6));
        let mut p = Stack::new(World::peer_config(), [0x22; 16]);
        p.add_address(IpAddr::V4(P4));
        p.add_address(IpAddr::V6(P6));
        let h_listeners = vec![
            h.listen(sa(Ipv4Addr::UNSPECIFIED, SERVICE), 8)
                .expect("listen"),
            h.listen(sa(H6, SERVICE), 8).expect("listen"),
        ];
        p.listen(sa(P4, PEER_SERVICE), 64).expect("listen");
        p.listen(sa(P6, PEER_SERVICE), 64).expect("listen");
        World {
            h,
            p,
            now: Instant::from_millis(1_000),
            wire: VecDeque::new(),
            h_received: 0,
            hints: Vec::new(),
            h_conns: Vec::new(),
            p_conns: Vec::new(),
            h_listeners,
            h_watch: Watch::default(),
            p_watch: Watch::default(),
            buf: vec![0; TX_BUF],
        }
    }

    /// The fixture: listeners; ESTABLISHED connections (IPv4 and IPv6), one with data in
    /// flight; FIN-WAIT-2, CLOSE-WAIT, SYN-SENT, SYN-RECEIVED; one connection waiting in the
    /// accept queue; four TIME_WAIT entries (IPv4 with and without timestamps, IPv6, active
    /// open).
    fn new(bits: u8) -> World {
        let mut w = World::bare(bits);
        let svc4 = sa(H4, SERVICE);
        let svc6 = sa(H6, SERVICE);
        // ESTABLISHED, data both ways, still open.
        let (h1, p1) = w.peer_open(sa(P4, 40001), svc4, None);
        w.p_send(p1, 300);
        w.settle(16);
        w.h_read(h1);
        w.h_send(h1, 200);
        w.settle(16);
        w.p_read(p1);
        // The host closes first and the peer never does: FIN-WAIT-2 (orphaned).
        let (h2, _) = w.peer_open(sa(P4, 40002), svc4, None);
        let _ = w.h.close(w.now, h2);
        w.settle(16);
        // The peer closes first: CLOSE-WAIT.
        let (h3, p3) = w.peer_open(sa(P4, 40003), svc4, None);
        let _ = w.p.shutdown_write(w.now, p3);
        w.settle(16);
        w.h_read(h3);
        // Active open by the host, closed first by it: TIME_WAIT.
        if let Ok(h4) = w.h.connect(w.now, sa(P4, PEER_SERVICE), None) {
            w.push_h(h4);
            w.settle(16);
            let tuple = w.h.tuple(h4).ok();
            let _ = w.h.close(w.now, h4);
            w.settle(16);
            w.p_close_tuple(tuple.map(FourTuple::reversed));
            w.settle(16);
        }
        // Passive opens closed first by the host: TIME_WAIT with and without timestamps.
        for (port, ts) in [(40005, None), (40006, Some(false))] {
            let (h, p) = w.peer_open(sa(P4, port), svc4, ts);
            let _ = w.h.close(w.now, h);
            w.settle(16);
            let _ = w.p.close(w.now, p);
            w.settle(16);
        }
        // IPv6: one ESTABLISHED, one TIME_WAIT.
        let (h7, p7) = w.peer_open(sa(P6, 40007), svc6, None);
        w.p_send(p7, 100);
        w.settle(16);
        w.h_read(h7);
        let (h8, p8) = w.peer_open(sa(P6, 40008), svc6, None);
        let _ = w.h.close(w.now, h8);
        w.settle(16);
        let _ = w.p.close(w.now, p8);
        w.settle(16);
        // SYN-SENT towards nobody.
        if let Ok(h9) = w.h.connect(w.now, sa(BLACKHOLE, SERVICE), None) {
            w.push_h(h9);
        }
        // SYN-RECEIVED from a spoofed source.
        let syn = RawTcp {
            src: sa(spoof4(7), 5555),
            dst: svc4,
            seq: 1_000_000,
            ack: 0,
            flags: 2,
            window: 8192,
            urgent: 0,
            options: &[2, 4, 5, 180],
            payload: &[],
            data_offset: None,
        }
        .packet();
        w.inject(&syn);
        // ESTABLISHED but not accepted yet.
        let _ = w.p.connect(w.now, svc4, Some(sa(P4, 40011)));
        w.settle(16);
        // Data in flight from the host when the fuzzer's packet arrives.
        w.h_send(h1, 3000);
        w.flush();
        assert!(
            w.h.time_wait().len() >= 3 && w.h.connection_count() >= 7,
            "fixture: expected TIME_WAIT entries and live connections, got {} and {}",
            w.h.time_wait().len(),
            w.h.connection_count()
        );
        w.check();
        w
    }

    /// The peer connects from `local` to the host's `remote`; returns both handles (the
    /// host's once accepted).
    fn peer_open(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        timestamps: Option<bool>,
    ) -> (ConnHandle, ConnHandle) {
        let opts = ConnectOptions {
            timestamps,
            ..ConnectOptions::default()
        };
        let pc = self
            .p
            .connect_with(self.now, remote, Some(local), opts)
            .expect("fixture: peer connect");
        self.push_p(pc);
        self.settle(16);
        let hc = self
            .h_accept(FourTuple::new(remote, local))
            .expect("fixture: the host did not accept the peer's connection");
        (hc, pc)
    }

    /// Accepts everything waiting on the host's listeners; returns the connection on `want`.
    fn h_accept(&mut self, want: FourTuple) -> Option<ConnHandle> {
        let mut found = None;
        for l in self.h_listeners.clone() {
            while let Ok(Some(c)) = self.h.accept(l) {
                self.push_h(c);
                if self.h.tuple(c).ok() == Some(want) {
                    found = Some(c);
                }
            }
        }
        found
    }

    fn push_h(&mut self, c: ConnHandle) {
        if self.h_conns.len() < MAX_HANDLES && !self.h_conns.contains(&c) {
            self.h_conns.push(c);
        }
    }

    fn push_p(&mut self, c: ConnHandle) {
        if self.p_conns.len() < MAX_HANDLES && !self.p_conns.contains(&c) {
            self.p_conns.push(c);
        }
    }

    fn h_send(&mut self, c: ConnHandle, len: usize) {
        let _ = self.h.send(self.now, c, &pattern(len, 1));
    }

    fn p_send(&mut self, c: ConnHandle, len: usize) {
        let _ = self.p.send(self.now, c, &pattern(len, 2));
    }

    fn h_read(&mut self, c: ConnHandle) {
        let mut b = vec![0; 64 * 1024];
        let _ = self.h.recv(self.now, c, &mut b);
    }

    fn p_read(&mut self, c: ConnHandle) {
        let mut b = vec![0; 64 * 1024];
        let _ = self.p.recv(self.now, c, &mut b);
    }

    fn p_close_tuple(&mut self, tuple: Option<FourTuple>) {
        for c in self.p_conns.clone() {
            if self.p.tuple(c).ok() == tuple {
                let _ = self.p.close(self.now, c);
            }
        }
    }

    /// Takes everything both stacks want to send and puts it on the wire (or drops it when
    /// it is addressed to nobody); drains events; the peer accepts what comes in.
    fn flush(&mut self) {
        let mut n = 0usize;
        loop {
            let mut any = false;
            while let Some(len) = self.h.poll_transmit(self.now, &mut self.buf) {
                any = true;
                n += 1;
                assert!(n < 200_000, "the host emits without end");
                let pkt = self.buf[..len].to_vec();
                if let Some(s) = check_emitted(&self.h, &pkt) {
                    self.learn(&s);
                }
                if matches!(packet_dst(&pkt), Some(ip) if self.p.addresses().contains(&ip)) {
                    self.wire.push_back((self.now + LATENCY, false, pkt));
                }
            }
            while let Some(len) = self.p.poll_transmit(self.now, &mut self.buf) {
                any = true;
                n += 1;
                assert!(n < 200_000, "the peer emits without end");
                let pkt = self.buf[..len].to_vec();
                check_emitted(&self.p, &pkt);
                if matches!(packet_dst(&pkt), Some(ip) if self.h.addresses().contains(&ip)) {
                    self.wire.push_back((self.now + LATENCY, true, pkt));
                }
            }
            if !any {
                break;
            }
        }
        drain_events(&mut self.h);
        for l in drain_events(&mut self.p) {
            while let Ok(Some(c)) = self.p.accept(l) {
                self.push_p(c);
            }
        }
    }

    /// Remembers the sequence numbers and timestamps of a segment the host sent.
    fn learn(&mut self, s: &Sent) {
        let i = match self.hints.iter().position(|h| h.tuple == s.tuple) {
            Some(i) => i,
            None if self.hints.len() < MAX_HINTS && !s.rst => {
                self.hints.push(Hint {
                    tuple: s.tuple,
                    peer_seq: SeqNum(0),
                    peer_ack: s.seq,
                    peer_tsval: 0,
                    peer_tsecr: 0,
                });
                self.hints.len() - 1
            }
            None => return,
        };
        let h = &mut self.hints[i];
        if let Some(ack) = s.ack {
            h.peer_seq = ack;
        }
        let end = s.seq + s.seg_len;
        if s.syn || end > h.peer_ack {
            h.peer_ack = end;
        }
        if let Some((tsval, tsecr)) = s.timestamp {
            h.peer_tsecr = tsval;
            if tsecr != 0 {
                h.peer_tsval = tsecr;
            }
        }
    }

    /// Hint `i`, refreshed from the TIME_WAIT table when its tuple is there.
    fn hint(&self, i: usize) -> Hint {
        let mut h = self.hints[i];
        if let Some(e) = self.h.time_wait().get(&h.tuple) {
            h.peer_seq = e.rcv_nxt;
            h.peer_ack = e.snd_nxt;
            if let Some(ts) = e.ts_recent {
                h.peer_tsval = ts;
            }
        }
        h
    }

    /// Delivers what is due.
    fn deliver_due(&mut self) {
        while let Some((at, _, _)) = self.wire.front() {
            if *at > self.now {
                break;
            }
            let (_, to_h, pkt) = self.wire.pop_front().expect("front exists");
            if to_h {
                self.h.receive(self.now, &pkt);
                self.h_received += 1;
            } else {
                self.p.receive(self.now, &pkt);
            }
        }
    }

    /// A packet from the fuzzer into the host.
    ///
    /// Under `cfg(fuzzing)` (set by cargo fuzz) smoltcp accepts any checksum, so a packet
    /// with a wrong one is dropped here instead, as the parser of an ordinary build would:
    /// the fuzzer then explores what `cargo test` replays, and every crash it saves
    /// reproduces there.
    #[allow(unexpected_cfgs)] // `fuzzing` is set by cargo fuzz (--cfg fuzzing), not Cargo.
    fn inject(&mut self, pkt: &[u8]) {
        if cfg!(fuzzing) && !checksums_ok(pkt) {
            return;
        }
        self.h.receive(self.now, pkt);
        self.h_received += 1;
        self.flush();
    }

    /// Up to `rounds` deliveries of what is on the wire, moving the clock to each.
    fn settle(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.flush();
            let Some(&(at, _, _)) = self.wire.front() else {
                break;
            };
            self.now = self.now.max(at);
            self.deliver_due();
            self.h.handle_timeout(self.now);
            self.p.handle_timeout(self.now);
        }
        self.flush();
    }

    /// Settles; with [`LIVENESS_CHECKS`], the link must then be quiet.
    fn settle_quiet(&mut self) {
        // While the check is off, an ACK war would make every such input slow.
        self.settle(if LIVENESS_CHECKS { QUIET_ROUNDS } else { 256 });
        if LIVENESS_CHECKS {
            assert!(
                self.wire.is_empty(),
                "still {} packets in flight after {QUIET_ROUNDS} deliveries: an ACK war?",
                self.wire.len()
            );
        }
    }

    /// Moves the clock by `dt`, delivering what is due and firing timers (late, if `dt`
    /// jumps past them, as a sleepy driver would).
    fn advance(&mut self, dt: Duration) {
        self.now = self.now + dt;
        self.deliver_due();
        self.h.handle_timeout(self.now);
        self.p.handle_timeout(self.now);
        self.flush();
    }

    /// Moves the clock to the next timer or delivery, whichever is first.
    fn step_to_next_event(&mut self) {
        let next = [
            self.h.poll_timeout(),
            self.p.poll_timeout(),
            self.wire.front().map(|w| w.0),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(t) = next {
            self.now = self.now.max(t);
        }
        self.deliver_due();
        self.h.handle_timeout(self.now);
        self.p.handle_timeout(self.now);
        self.flush();
    }

    /// Every invariant, on both stacks.
    fn check(&mut self) {
        check_stack(&self.h);
        check_stack(&self.p);
        self.h_watch.check(&self.h);
        self.p_watch.check(&self.p);
        check_handles(&self.h, &self.h_conns);
        check_handles(&self.p, &self.p_conns);
        assert_eq!(
            self.h.counters().packets_in,
            self.h_received,
            "packets_in != receive calls"
        );
    }

    /// After whatever the fuzzer did, the host still serves: a new connection from the peer
    /// (on a port the fuzzer did not use) is accepted and carries data both ways.
    fn check_still_serving(&mut self, avoid_port: Option<u16>) {
        let port = if avoid_port == Some(7777) { 7778 } else { 7777 };
        let svc = sa(H4, SERVICE);
        let want = FourTuple::new(svc, sa(P4, port));
        let pc = self
            .p
            .connect(self.now, svc, Some(sa(P4, port)))
            .expect("liveness: the peer cannot connect");
        let deadline = self.now + Duration::from_secs(30);
        let mut hc = None;
        while hc.is_none() && self.now < deadline {
            self.step_to_next_event();
            hc = self.h_accept(want);
        }
        let hc = hc.unwrap_or_else(|| {
            panic!(
                "liveness: the host never accepted a new connection; counters {:?}",
                self.h.counters().entries()
            )
        });
        let msg = pattern(100, 9);
        assert_eq!(self.p.send(self.now, pc, &msg), Ok(100));
        let mut got = Vec::new();
        let mut b = [0u8; 256];
        while got.len() < msg.len() && self.now < deadline {
            self.step_to_next_event();
            if let Ok(n) = self.h.recv(self.now, hc, &mut b) {
                got.extend_from_slice(&b[..n]);
            }
        }
        assert_eq!(got, msg, "liveness: the new connection did not carry data");
    }
}

// ---- hostile packets -----------------------------------------------------------------

/// TCP options, structured (relative to what the host expects) or raw.
#[derive(Clone, Debug, Default)]
struct OptSpec {
    /// 0: none; 1, 3: structured; 2: raw.
    kind: u8,
    /// Which options: 1 MSS, 2 window scale, 4 SACK-permitted, 8 timestamps, 16 SACK
    /// blocks, 32 an unknown option, 64 EOL followed by garbage.
    mask: u8,
    mss: u16,
    wscale: u8,
    /// Added to the host's TS.Recent.
    tsval: u32,
    /// Added to the host's last TSval.
    tsecr: u32,
    /// (left edge relative to the host's SND.NXT, length), up to 4.
    sack: Vec<(u32, u16)>,
    raw: Vec<u8>,
}

impl OptSpec {
    fn read(c: &mut Cursor<'_>) -> OptSpec {
        let kind = c.u8() % 4;
        let mut o = OptSpec {
            kind,
            ..OptSpec::default()
        };
        match kind {
            0 => {}
            2 => {
                let n = c.u8() as usize % 48;
                o.raw = c.bytes(n);
            }
            _ => {
                o.mask = c.u8();
                o.mss = c.u16();
                o.wscale = c.u8();
                o.tsval = c.u32();
                o.tsecr = c.u32();
                let n = c.u8() % 5;
                for _ in 0..n {
                    o.sack.push((c.u32(), c.u16()));
                }
            }
        }
        o
    }

    fn write(&self, e: &mut Enc) {
        e.u8(self.kind);
        match self.kind % 4 {
            0 => {}
            2 => {
                e.u8(self.raw.len() as u8).bytes(&self.raw);
            }
            _ => {
                e.u8(self.mask)
                    .u16(self.mss)
                    .u8(self.wscale)
                    .u32(self.tsval)
                    .u32(self.tsecr)
                    .u8(self.sack.len() as u8);
                for (l, n) in &self.sack {
                    e.u32(*l).u16(*n);
                }
            }
        }
    }

    fn bytes(&self, base: Option<&Hint>) -> Vec<u8> {
        match self.kind % 4 {
            0 => Vec::new(),
            2 => self.raw.clone(),
            _ => {
                let (ts0, ecr0, ack0) = base.map_or((0, 0, SeqNum(0)), |h| {
                    (h.peer_tsval, h.peer_tsecr, h.peer_ack)
                });
                let mut o = Vec::new();
                if self.mask & 1 != 0 {
                    o.extend_from_slice(&[2, 4]);
                    o.extend_from_slice(&self.mss.to_be_bytes());
                }
                if self.mask & 2 != 0 {
                    o.extend_from_slice(&[1, 3, 3, self.wscale]);
                }
                if self.mask & 4 != 0 {
                    o.extend_from_slice(&[1, 1, 4, 2]);
                }
                if self.mask & 8 != 0 {
                    o.extend_from_slice(&[1, 1, 8, 10]);
                    o.extend_from_slice(&ts0.wrapping_add(self.tsval).to_be_bytes());
                    o.extend_from_slice(&ecr0.wrapping_add(self.tsecr).to_be_bytes());
                }
                if self.mask & 16 != 0 && !self.sack.is_empty() {
                    o.extend_from_slice(&[1, 1, 5, 2 + 8 * self.sack.len() as u8]);
                    for (l, n) in &self.sack {
                        let left = ack0 + *l;
                        o.extend_from_slice(&left.raw().to_be_bytes());
                        o.extend_from_slice(&(left + *n as u32).raw().to_be_bytes());
                    }
                }
                if self.mask & 32 != 0 {
                    o.extend_from_slice(&[254, 4, 0xf9, 0x89]);
                }
                if self.mask & 64 != 0 {
                    o.extend_from_slice(&[0, 2, 0, 8]);
                }
                o
            }
        }
    }
}

/// One TCP segment aimed at the host, relative to what it expects where possible.
#[derive(Clone, Debug, Default)]
struct TcpSpec {
    /// Which 4-tuple: a learned one ([`Hint`]), a fresh one to a listener (index = number of
    /// hints), or an arbitrary, possibly invalid, one (index = hints + 1); modulo.
    tuple: u8,
    /// For fresh and arbitrary tuples: the family (bit 0), the source address, and for an
    /// arbitrary tuple a destination that is not ours (bit 7).
    ip_sel: u8,
    sport: u16,
    dport: u16,
    /// Bit 0: `seq` is absolute rather than added to the host's RCV.NXT.
    seq_mode: u8,
    seq: u32,
    /// Bit 0: `ack` is absolute rather than added to the host's SND.NXT.
    ack_mode: u8,
    ack: u32,
    flags: u8,
    window: u16,
    opts: OptSpec,
    payload_len: u16,
    payload_salt: u8,
    /// 0 and anything unlisted: intact. 1: bad TCP checksum; 2: bad IP checksum (IPv6: bad
    /// payload length); 3: data offset `arg`; 4: truncated by `arg`; 5: IP length `arg`;
    /// 6: fragment; 7: IPv4 options; 8: trailing bytes; 9: urgent pointer; 10: another
    /// protocol.
    corrupt: u8,
    arg: u16,
}

impl TcpSpec {
    fn read(c: &mut Cursor<'_>) -> TcpSpec {
        TcpSpec {
            tuple: c.u8(),
            ip_sel: c.u8(),
            sport: c.u16(),
            dport: c.u16(),
            seq_mode: c.u8(),
            seq: c.u32(),
            ack_mode: c.u8(),
            ack: c.u32(),
            flags: c.u8(),
            window: c.u16(),
            opts: OptSpec::read(c),
            payload_len: c.u16(),
            payload_salt: c.u8(),
            corrupt: c.u8(),
            arg: c.u16(),
        }
    }

    fn write(&self, e: &mut Enc) {
        e.u8(self.tuple)
            .u8(self.ip_sel)
            .u16(self.sport)
            .u16(self.dport)
            .u8(self.seq_mode)
            .u32(self.seq)
            .u8(self.ack_mode)
            .u32(self.ack);
        e.u8(self.flags).u16(self.window);
        self.opts.write(e);
        e.u16(self.payload_len)
            .u8(self.payload_salt)
            .u8(self.corrupt)
            .u16(self.arg);
    }

    /// The packet, and the 4-tuple it is on from the host's point of view.
    fn build(&self, w: &World) -> (Vec<u8>, FourTuple) {
        let n = w.hints.len();
        let sel = self.tuple as usize % (n + 2);
        let want_v6 = self.ip_sel & 1 != 0;
        let sport = self.sport | 1;
        let (local, remote, base) = if sel < n {
            let h = w.hint(sel);
            (h.tuple.local, h.tuple.remote, Some(h))
        } else if sel == n {
            let x = (self.ip_sel >> 1) | 1;
            if want_v6 {
                (sa(H6, SERVICE), SocketAddr::new(spoof6(x), sport), None)
            } else {
                (sa(H4, SERVICE), SocketAddr::new(spoof4(x), sport), None)
            }
        } else {
            let src = odd_source(want_v6, self.ip_sel >> 1);
            let dst: IpAddr = match (want_v6, self.ip_sel & 0x80 != 0) {
                (false, false) => H4.into(),
                (false, true) => Ipv4Addr::new(192, 0, 2, 99).into(),
                (true, false) => H6.into(),
                (true, true) => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99).into(),
            };
            (
                SocketAddr::new(dst, self.dport),
                SocketAddr::new(src, self.sport),
                None,
            )
        };
        let v6 = local.is_ipv6();
        let seq = if self.seq_mode & 1 == 0 {
            base.map_or(SeqNum(0), |h| h.peer_seq) + self.seq
        } else {
            SeqNum(self.seq)
        };
        let ack = if self.ack_mode & 1 == 0 {
            base.map_or(SeqNum(0), |h| h.peer_ack) + self.ack
        } else {
            SeqNum(self.ack)
        };
        let opts = self.opts.bytes(base.as_ref());
        let payload = pattern(self.payload_len as usize % 1600, self.payload_salt);
        let arg = self.arg;
        let mut raw = RawTcp {
            src: remote,
            dst: local,
            seq: seq.raw(),
            ack: ack.raw(),
            flags: self.flags,
            window: self.window,
            urgent: 0,
            options: &opts,
            payload: &payload,
            data_offset: None,
        };
        match self.corrupt % 16 {
            3 => raw.data_offset = Some(arg as u8 & 0xf),
            9 => {
                raw.flags |= 32;
                raw.urgent = arg;
            }
            _ => {}
        }
        let seg = raw.segment();
        let (src, dst) = (remote.ip(), local.ip());
        let mut pkt = match self.corrupt % 16 {
            6 if !v6 => ip_wrap(src, dst, PROTO_TCP, &[], 0x2000 | (arg & 0x1fff), &seg),
            6 => ip_wrap(src, dst, 44, &[], 0, &seg),
            7 if !v6 => {
                let words = (arg as usize % 10) + 1;
                let mut o = vec![1u8; words * 4];
                if arg & 0x100 != 0 {
                    // A record-route option with a wild length.
                    o[0] = 7;
                    o[1] = (arg >> 9) as u8;
                }
                ip_wrap(src, dst, PROTO_TCP, &o, 0x4000, &seg)
            }
            10 => ip_wrap(src, dst, arg as u8, &[], 0x4000, &seg),
            _ => ip_wrap(src, dst, PROTO_TCP, &[], 0x4000, &seg),
        };
        let ip_hl = if v6 { 40 } else { (pkt[0] as usize & 0xf) * 4 };
        match self.corrupt % 16 {
            1 => pkt[ip_hl + 16] ^= (arg as u8) | 1,
            2 if v6 => pkt[4] ^= (arg as u8) | 1,
            2 => pkt[10] ^= (arg as u8) | 1,
            4 => {
                let cut = arg as usize % pkt.len();
                pkt.truncate(pkt.len() - cut);
            }
            5 if v6 => pkt[4..6].copy_from_slice(&arg.to_be_bytes()),
            5 => {
                pkt[2..4].copy_from_slice(&arg.to_be_bytes());
                pkt[10..12].copy_from_slice(&[0, 0]);
                let c = fold(sum_words(0, &pkt[..ip_hl]));
                pkt[10..12].copy_from_slice(&c.to_be_bytes());
            }
            8 => pkt.extend(std::iter::repeat_n(0xa5, arg as usize % 64)),
            _ => {}
        }
        (pkt, FourTuple::new(local, remote))
    }
}

/// One packet from the fuzzer to the host.
#[derive(Clone, Debug)]
enum PacketSpec {
    /// Bytes as they are (false), or with their checksums recomputed (true), so that
    /// arbitrary headers get past checksum verification.
    Raw(bool, Vec<u8>),
    /// An echo request: (IPv6?, source selector, ident, sequence, data length).
    Echo(bool, u8, u16, u16, u16),
    /// A TCP segment.
    Tcp(TcpSpec),
}

impl PacketSpec {
    fn read(c: &mut Cursor<'_>) -> PacketSpec {
        let kind = c.u8();
        match kind % 8 {
            0 => {
                let n = c.u16() as usize % 2048;
                PacketSpec::Raw(kind >= 128, c.bytes(n))
            }
            1 => PacketSpec::Echo(c.u8() & 1 != 0, c.u8(), c.u16(), c.u16(), c.u16()),
            _ => PacketSpec::Tcp(TcpSpec::read(c)),
        }
    }

    fn write(&self, e: &mut Enc) {
        match self {
            PacketSpec::Raw(repair, b) => {
                e.u8(if *repair { 128 } else { 0 })
                    .u16(b.len() as u16)
                    .bytes(b);
            }
            PacketSpec::Echo(v6, src, ident, seq, len) => {
                e.u8(1)
                    .u8(*v6 as u8)
                    .u8(*src)
                    .u16(*ident)
                    .u16(*seq)
                    .u16(*len);
            }
            PacketSpec::Tcp(t) => {
                e.u8(2);
                t.write(e);
            }
        }
    }

    /// The packet, and its 4-tuple (host's view) when it is TCP.
    fn build(&self, w: &World) -> (Vec<u8>, Option<FourTuple>) {
        match self {
            PacketSpec::Raw(false, b) => (b.clone(), None),
            PacketSpec::Raw(true, b) => (repair_checksums(b.clone()), None),
            PacketSpec::Echo(v6, src, ident, seq, len) => {
                let (s, d): (IpAddr, IpAddr) = if *v6 {
                    (odd_source(true, *src), H6.into())
                } else {
                    (odd_source(false, *src), H4.into())
                };
                let data = pattern(*len as usize % 4096, *src);
                (echo_request(s, d, *ident, *seq, &data), None)
            }
            PacketSpec::Tcp(t) => {
                let (p, tuple) = t.build(w);
                (p, Some(tuple))
            }
        }
    }
}

/// Clock steps the fuzzer picks from: around every timer the host has.
fn step(sel: u8, raw: u32) -> Duration {
    const STEPS_US: [u64; 14] = [
        0,
        1,
        999,
        1_000,
        10_000,
        40_000,
        200_000,
        1_000_000,
        3_000_000,
        10_000_000,
        30_000_000,
        61_000_000,
        121_000_000,
        7_200_000_000,
    ];
    match STEPS_US.get(sel as usize % (STEPS_US.len() + 1)) {
        Some(&us) => Duration::from_micros(us),
        None => Duration::from_micros(raw as u64),
    }
}

/// Fuzz target `packet`: one arbitrary packet into a busy host.
///
/// Input: a configuration byte (RFC 1337, TIME_WAIT overflow policy, reuse policy,
/// timestamps, SACK, window scaling, SYN cookies: see `World::host_config`), one packet
/// (raw bytes, an echo request or a TCP segment aimed relative to a known connection), and a
/// clock step taken afterwards.
pub mod packet {
    use super::*;

    /// The target body.
    pub fn run(data: &[u8]) {
        let mut c = Cursor::new(data);
        let bits = c.u8();
        let spec = PacketSpec::read(&mut c);
        let (sel, raw) = (c.u8(), c.u32());
        let mut w = World::new(bits);
        let (pkt, tuple) = spec.build(&w);
        w.inject(&pkt);
        w.check();
        w.advance(step(sel, raw));
        w.check();
        w.settle_quiet();
        w.check();
        w.check_still_serving(tuple.map(|t| t.remote.port()));
        w.check();
    }

    fn input(bits: u8, spec: PacketSpec, step_sel: u8) -> Vec<u8> {
        let mut e = Enc::default();
        e.u8(bits);
        spec.write(&mut e);
        e.u8(step_sel).u32(0);
        e.0
    }

    /// The seed corpus: a segment of each kind on each kind of connection, malformed
    /// packets of each kind, echo requests.
    pub fn seeds() -> Vec<(String, Vec<u8>)> {
        let w = World::new(0);
        let find = |local: SocketAddr, remote: SocketAddr| -> u8 {
            w.hints
                .iter()
                .position(|h| h.tuple == FourTuple::new(local, remote))
                .unwrap_or_else(|| panic!("seed: no hint for {local} {remote}")) as u8
        };
        let est = find(sa(H4, SERVICE), sa(P4, 40001));
        let fw2 = find(sa(H4, SERVICE), sa(P4, 40002));
        let cw = find(sa(H4, SERVICE), sa(P4, 40003));
        let tw_ts = find(sa(H4, SERVICE), sa(P4, 40005));
        let tw_nots = find(sa(H4, SERVICE), sa(P4, 40006));
        let tw6 = find(sa(H6, SERVICE), sa(P6, 40008));
        let est6 = find(sa(H6, SERVICE), sa(P6, 40007));
        let syn_rcvd = find(sa(H4, SERVICE), sa(spoof4(7), 5555));
        let syn_sent = w
            .hints
            .iter()
            .position(|h| h.tuple.remote == sa(BLACKHOLE, SERVICE))
            .expect("seed: SYN-SENT hint") as u8;
        let fresh = w.hints.len() as u8;
        let odd = fresh + 1;
        let ts = |mask: u8| OptSpec {
            kind: 1,
            mask: mask | 8,
            tsval: 1,
            ..OptSpec::default()
        };
        let seg = |tuple: u8, flags: u8, len: u16, opts: OptSpec| TcpSpec {
            tuple,
            flags,
            window: 65535,
            opts,
            payload_len: len,
            ..TcpSpec::default()
        };
        let mut out = Vec::new();
        let mut add = |name: &str, spec: TcpSpec, step_sel: u8| {
            out.push((name.to_string(), input(0, PacketSpec::Tcp(spec), step_sel)));
        };
        add("ack-established", seg(est, 16, 0, ts(0)), 6);
        add("data-established", seg(est, 24, 500, ts(0)), 5);
        add("data-established-v6", seg(est6, 24, 700, ts(0)), 5);
        let mut ooo = seg(est, 24, 800, ts(0));
        ooo.seq = 3000;
        add("data-out-of-order", ooo, 5);
        let mut sack = seg(est, 16, 0, ts(16));
        sack.opts.sack = vec![(1448, 1448), (100, 200)];
        add("dupack-with-sack", sack, 6);
        add("fin-fin-wait-2", seg(fw2, 17, 0, ts(0)), 9);
        add("fin-close-wait-again", seg(cw, 17, 0, ts(0)), 6);
        add("rst-exact", seg(est, 4, 0, OptSpec::default()), 6);
        let mut rst_off = seg(est, 4, 0, OptSpec::default());
        rst_off.seq = 1000;
        add("rst-in-window", rst_off, 6);
        add("syn-on-established", seg(est, 2, 0, ts(5)), 6);
        let mut reopen = seg(tw_ts, 2, 0, ts(7));
        reopen.seq = 100_000;
        add("syn-reopens-time-wait", reopen, 6);
        let mut old = seg(tw_ts, 2, 0, ts(7));
        old.seq = 0u32.wrapping_sub(100_000);
        old.opts.tsval = 0u32.wrapping_sub(5);
        add("syn-old-duplicate-time-wait", old, 6);
        let mut reopen_nots = seg(tw_nots, 2, 0, OptSpec::default());
        reopen_nots.seq = 1;
        add("syn-reopens-time-wait-no-ts", reopen_nots, 6);
        let mut fin_tw = seg(tw6, 17, 0, ts(0));
        fin_tw.seq = u32::MAX;
        add("fin-retransmit-time-wait-v6", fin_tw, 9);
        add("rst-time-wait", seg(tw_ts, 4, 0, OptSpec::default()), 6);
        let mut synack = seg(syn_sent, 18, 0, ts(7));
        synack.seq_mode = 1;
        synack.seq = 77_777;
        synack.opts.mss = 536;
        synack.opts.wscale = 14;
        add("syn-ack-to-syn-sent", synack, 6);
        add(
            "ack-completes-syn-received",
            seg(syn_rcvd, 16, 0, OptSpec::default()),
            6,
        );
        let mut syn_fresh = seg(fresh, 2, 0, ts(7));
        syn_fresh.opts.mss = 1460;
        syn_fresh.opts.wscale = 7;
        syn_fresh.sport = 5000;
        add("syn-to-listener", syn_fresh.clone(), 6);
        let mut syn_fresh6 = syn_fresh.clone();
        syn_fresh6.ip_sel = 1;
        add("syn-to-listener-v6", syn_fresh6, 6);
        let mut syn_data = syn_fresh.clone();
        syn_data.flags = 3;
        syn_data.payload_len = 100;
        add("syn-fin-with-data", syn_data, 6);
        let mut cookie_ack = seg(fresh, 16, 0, ts(0));
        cookie_ack.sport = 5001;
        add("ack-to-listener", cookie_ack, 6);
        let mut land = seg(odd, 2, 0, OptSpec::default());
        land.ip_sel = 10; // source = the host itself
        land.sport = SERVICE;
        land.dport = SERVICE;
        add("syn-land", land, 6);
        let mut bcast = seg(odd, 2, 0, OptSpec::default());
        bcast.ip_sel = 4;
        bcast.dport = SERVICE;
        add("syn-from-broadcast", bcast, 6);
        for (name, raw) in [
            ("opt-len-0", vec![2, 0, 5, 180]),
            ("opt-len-1", vec![8, 1, 0, 0]),
            ("opt-overlong", vec![8, 40, 0, 0, 0, 1]),
            ("opt-sack-odd", vec![5, 7, 0, 0, 0, 0, 0]),
        ] {
            let mut s = seg(est, 16, 0, OptSpec::default());
            s.opts = OptSpec {
                kind: 2,
                raw,
                ..OptSpec::default()
            };
            add(name, s, 6);
        }
        for (i, name) in [
            "bad-tcp-checksum",
            "bad-ip-checksum",
            "data-offset",
            "truncated",
            "ip-length",
            "fragment",
            "ip-options",
            "trailing-bytes",
            "urgent",
            "other-protocol",
        ]
        .iter()
        .enumerate()
        {
            let mut s = seg(est, 24, 40, ts(0));
            s.corrupt = i as u8 + 1;
            s.arg = [0x55, 1, 3, 30, 19, 8, 0x302, 7, 20, 17][i];
            add(&format!("malformed-{name}"), s, 6);
        }
        out.push((
            "raw-garbage".into(),
            input(
                0,
                PacketSpec::Raw(false, b"\x45\x00\x00\x14garbage".to_vec()),
                0,
            ),
        ));
        // A SYN whose header fields are arbitrary but whose checksums are right.
        let mut syn = RawTcp {
            src: sa(spoof4(9), 4000),
            dst: sa(H4, SERVICE),
            seq: 7,
            ack: 0,
            flags: 2,
            window: 512,
            urgent: 0,
            options: &[3, 3, 14, 1, 2, 4, 0, 1],
            payload: b"hello",
            data_offset: None,
        }
        .packet();
        syn[1] = 0xb8; // DSCP EF
        syn[16 + 20] = 0; // checksums to be repaired
        out.push((
            "raw-repaired-syn".into(),
            input(0, PacketSpec::Raw(true, syn), 0),
        ));
        out.push((
            "echo-v4".into(),
            input(0, PacketSpec::Echo(false, 0, 7, 1, 56), 0),
        ));
        out.push((
            "echo-v6".into(),
            input(0, PacketSpec::Echo(true, 0, 7, 1, 1200), 0),
        ));
        let mut rst_tw = seg(tw_ts, 4, 0, OptSpec::default());
        rst_tw.payload_len = 0;
        out.push((
            "rst-time-wait-rfc1337-off".into(),
            input(1, PacketSpec::Tcp(rst_tw), 6),
        ));
        out.push((
            "syn-reopen-timestamp-reuse-dropnew".into(),
            input(
                2 | 8,
                PacketSpec::Tcp({
                    let mut s = seg(tw_ts, 2, 0, ts(0));
                    s.seq = 5;
                    s
                }),
                11,
            ),
        ));
        out
    }
}

/// Fuzz target `segments`: an arbitrary sequence of packets, clock steps, application calls
/// on the host and on its peer, and exchanges between them.
///
/// Input: a configuration byte (as for [`packet`]), then operations until the input ends (at
/// most 400). Invariants are checked after every operation; at the end the clock runs on
/// through the next 64 events, checking again.
pub mod segments {
    use super::*;

    const MAX_OPS: usize = 400;

    /// One step of the script.
    #[derive(Clone, Debug)]
    enum Op {
        /// A packet from the fuzzer into the host.
        Packet(PacketSpec),
        /// Move the clock (a step selector and a raw number of microseconds), fire timers.
        Advance(u8, u32),
        /// Move the clock to the next timer or delivery.
        NextEvent,
        /// Let the host and the peer exchange up to n + 1 deliveries.
        Settle(u8),
        /// An application call on the host: (call, target, argument).
        Host(u8, u8, u16),
        /// An application call on the peer: (call, target, argument).
        Peer(u8, u8, u16),
    }

    impl Op {
        fn read(c: &mut Cursor<'_>) -> Op {
            match c.u8() % 10 {
                0..=3 => Op::Packet(PacketSpec::read(c)),
                4 => Op::Advance(c.u8(), c.u32()),
                5 => Op::NextEvent,
                6 => Op::Settle(c.u8()),
                7 | 8 => Op::Host(c.u8(), c.u8(), c.u16()),
                _ => Op::Peer(c.u8(), c.u8(), c.u16()),
            }
        }

        fn write(&self, e: &mut Enc) {
            match self {
                Op::Packet(p) => {
                    e.u8(0);
                    p.write(e);
                }
                Op::Advance(sel, raw) => {
                    e.u8(4).u8(*sel).u32(*raw);
                }
                Op::NextEvent => {
                    e.u8(5);
                }
                Op::Settle(n) => {
                    e.u8(6).u8(*n);
                }
                Op::Host(k, t, a) => {
                    e.u8(7).u8(*k).u8(*t).u16(*a);
                }
                Op::Peer(k, t, a) => {
                    e.u8(9).u8(*k).u8(*t).u16(*a);
                }
            }
        }
    }

    /// Errors an application call may legitimately return on hostile state.
    fn expected_error(e: &Error) -> bool {
        !matches!(e, Error::InvalidHandle)
    }

    fn host(w: &mut World, kind: u8, target: u8, arg: u16) {
        let now = w.now;
        let conn = (!w.h_conns.is_empty()).then(|| w.h_conns[target as usize % w.h_conns.len()]);
        match kind % 10 {
            0 => {
                let remote = if arg & 1 == 0 {
                    sa(P4, PEER_SERVICE)
                } else {
                    sa(P6, PEER_SERVICE)
                };
                if let Ok(c) = w.h.connect(now, remote, None) {
                    w.push_h(c);
                }
            }
            1 => {
                // A connect on the exact 4-tuple of a known connection or TIME_WAIT entry
                // (or from its local port to the peer): the reuse policy decides.
                if w.hints.is_empty() {
                    return;
                }
                let t = w.hints[target as usize % w.hints.len()].tuple;
                let remote = if arg & 1 == 0 {
                    t.remote
                } else {
                    sa(P4, PEER_SERVICE)
                };
                let opts = ConnectOptions {
                    isn: (arg & 2 != 0).then_some(SeqNum((arg as u32) << 16)),
                    timestamps: (arg & 4 != 0).then_some(arg & 8 != 0),
                };
                match w.h.connect_with(now, remote, Some(t.local), opts) {
                    Ok(c) => w.push_h(c),
                    Err(e) => assert!(expected_error(&e), "connect: {e:?}"),
                }
            }
            2 => {
                if let Some(c) = conn {
                    let _ = w.h.send(now, c, &pattern(arg as usize % 20_000, target));
                }
            }
            3 => {
                if let Some(c) = conn {
                    let mut b = vec![0; arg as usize % 20_000];
                    let _ = w.h.recv(now, c, &mut b);
                }
            }
            4 => {
                if let Some(c) = conn {
                    let _ = w.h.close(now, c);
                }
            }
            5 => {
                if let Some(c) = conn {
                    let _ = w.h.abort(now, c);
                }
            }
            6 => {
                if let Some(c) = conn {
                    let _ = w.h.shutdown_write(now, c);
                }
            }
            7 => {
                let l = w.h_listeners[target as usize % w.h_listeners.len()];
                while let Ok(Some(c)) = w.h.accept(l) {
                    w.push_h(c);
                }
            }
            8 => {
                if let Some(c) = conn {
                    let _ = w.h.set_nodelay(c, arg & 1 != 0);
                    let _ = w.h.set_linger_zero(c, arg & 2 != 0);
                    let _ = w.h.set_keepalive(now, c, arg & 4 != 0);
                }
            }
            _ => {
                if arg & 0x8000 == 0 {
                    if let Ok(l) = w.h.listen(sa(H4, arg | 1), target as usize % 8) {
                        if w.h_listeners.len() < 8 {
                            w.h_listeners.push(l);
                        }
                    }
                } else {
                    let l = w.h_listeners[target as usize % w.h_listeners.len()];
                    let _ = w.h.close_listener(now, l);
                }
            }
        }
        w.flush();
    }

    fn peer(w: &mut World, kind: u8, target: u8, arg: u16) {
        let now = w.now;
        let conn = (!w.p_conns.is_empty()).then(|| w.p_conns[target as usize % w.p_conns.len()]);
        match kind % 5 {
            0 => {
                if let Some(c) = conn {
                    let _ = w.p.send(now, c, &pattern(arg as usize % 20_000, target));
                }
            }
            1 => {
                if let Some(c) = conn {
                    w.p_read(c);
                }
            }
            2 => {
                if let Some(c) = conn {
                    let _ = w.p.close(now, c);
                }
            }
            3 => {
                if let Some(c) = conn {
                    let _ = w.p.abort(now, c);
                }
            }
            _ => {
                let port = 41_000 + arg % 1000;
                let (local, remote) = if arg & 0x8000 == 0 {
                    (sa(P4, port), sa(H4, SERVICE))
                } else {
                    (sa(P6, port), sa(H6, SERVICE))
                };
                if let Ok(c) = w.p.connect(now, remote, Some(local)) {
                    w.push_p(c);
                }
            }
        }
        w.flush();
    }

    fn apply(w: &mut World, op: &Op) {
        match op {
            Op::Packet(spec) => {
                let (pkt, _) = spec.build(w);
                w.inject(&pkt);
            }
            Op::Advance(sel, raw) => {
                w.advance(step(*sel, *raw));
                check_timers_in_future(w);
            }
            Op::NextEvent => {
                w.step_to_next_event();
                check_timers_in_future(w);
            }
            Op::Settle(n) => w.settle(*n as usize % 32 + 1),
            Op::Host(k, t, a) => host(w, *k, *t, *a),
            Op::Peer(k, t, a) => peer(w, *k, *t, *a),
        }
    }

    /// After `handle_timeout(now)`, nothing is due any more: a driver that sleeps until
    /// `poll_timeout` never spins.
    fn check_timers_in_future(w: &World) {
        for (name, s) in [("host", &w.h), ("peer", &w.p)] {
            if let Some(t) = s.poll_timeout() {
                assert!(
                    t > w.now,
                    "{name}: poll_timeout {t:?} is not after now {:?} right after handle_timeout",
                    w.now
                );
            }
        }
    }

    /// The target body.
    pub fn run(data: &[u8]) {
        let mut c = Cursor::new(data);
        let bits = c.u8();
        let mut w = World::new(bits);
        let mut ops = 0;
        while !c.is_empty() && ops < MAX_OPS {
            ops += 1;
            let op = Op::read(&mut c);
            apply(&mut w, &op);
            w.check();
        }
        w.settle_quiet();
        w.check();
        for _ in 0..64 {
            w.step_to_next_event();
            check_timers_in_future(&w);
        }
        w.check();
    }

    /// Builds a seed by running its operations on a world as it encodes them, so that seeds
    /// can aim at tuples the host learns along the way.
    struct Script {
        w: World,
        e: Enc,
    }

    impl Script {
        fn new(bits: u8) -> Script {
            let mut e = Enc::default();
            e.u8(bits);
            Script {
                w: World::new(bits),
                e,
            }
        }

        fn op(&mut self, op: Op) -> &mut Script {
            op.write(&mut self.e);
            apply(&mut self.w, &op);
            self.w.check();
            self
        }

        fn hint(&self, local: SocketAddr, remote: SocketAddr) -> u8 {
            self.w
                .hints
                .iter()
                .position(|h| h.tuple == FourTuple::new(local, remote))
                .unwrap_or_else(|| panic!("seed: no hint for {local} {remote}")) as u8
        }

        fn handle(&self, local: SocketAddr, remote: SocketAddr) -> u8 {
            let want = FourTuple::new(local, remote);
            self.w
                .h_conns
                .iter()
                .position(|&c| self.w.h.tuple(c).ok() == Some(want))
                .unwrap_or_else(|| panic!("seed: no handle for {local} {remote}")) as u8
        }

        fn seg(&mut self, tuple: u8, flags: u8, len: u16) -> &mut Script {
            self.op(Op::Packet(PacketSpec::Tcp(TcpSpec {
                tuple,
                flags,
                window: 65535,
                opts: OptSpec {
                    kind: 1,
                    mask: 8,
                    tsval: 1,
                    ..OptSpec::default()
                },
                payload_len: len,
                ..TcpSpec::default()
            })))
        }

        fn done(&self) -> Vec<u8> {
            self.e.0.clone()
        }
    }

    /// The seed corpus: a handshake driven by the fuzzer, connection lifecycles through
    /// TIME_WAIT, zero windows, keepalives, SYN floods into cookies, reopening, floods of
    /// out-of-order data and RSTs.
    pub fn seeds() -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let svc = sa(H4, SERVICE);
        let est = (svc, sa(P4, 40001));

        // The fuzzer as a client: SYN, ACK, data, FIN; the host accepts, reads, answers,
        // closes.
        let mut s = Script::new(0);
        let fresh = s.w.hints.len() as u8;
        s.op(Op::Packet(PacketSpec::Tcp(TcpSpec {
            tuple: fresh,
            ip_sel: 2,
            sport: 6000,
            flags: 2,
            window: 65535,
            opts: OptSpec {
                kind: 1,
                mask: 1 | 2 | 4 | 8,
                mss: 1460,
                wscale: 7,
                tsval: 1000,
                ..OptSpec::default()
            },
            ..TcpSpec::default()
        })));
        let me = (svc, sa(spoof4(1), 6001));
        let t = s.hint(me.0, me.1);
        s.seg(t, 16, 0).seg(t, 24, 500);
        s.op(Op::Host(7, 0, 0));
        let hc = s.handle(me.0, me.1);
        s.op(Op::Host(3, hc, 4096))
            .op(Op::Host(2, hc, 3000))
            .seg(t, 16, 0)
            .seg(t, 17, 0)
            .op(Op::Host(4, hc, 0))
            .seg(t, 16, 0)
            .op(Op::Advance(9, 0));
        out.push(("fuzzer-client-lifecycle".to_string(), s.done()));

        // The host closes an established connection first; the peer closes; TIME_WAIT,
        // then expiry.
        let mut s = Script::new(0);
        let hc = s.handle(est.0, est.1);
        s.op(Op::Host(4, hc, 0))
            .op(Op::Settle(31))
            .op(Op::Peer(2, 0, 0))
            .op(Op::Settle(31))
            .op(Op::Advance(9, 0))
            .op(Op::NextEvent)
            .op(Op::Advance(9, 0));
        out.push(("host-closes-time-wait-expires".to_string(), s.done()));

        // Zero window: the peer sends more than the host's buffer and the host does not read.
        let mut s = Script::new(0);
        s.op(Op::Peer(0, 0, 19_999))
            .op(Op::Peer(0, 0, 19_999))
            .op(Op::Settle(31));
        for _ in 0..6 {
            s.op(Op::Advance(7, 0)).op(Op::Settle(7));
        }
        let hc = s.handle(est.0, est.1);
        s.op(Op::Host(3, hc, 19_999)).op(Op::Settle(31));
        out.push(("zero-window-then-read".to_string(), s.done()));

        // Keepalive probes to a peer that has gone quiet.
        let mut s = Script::new(0);
        let hc = s.handle(est.0, est.1);
        s.op(Op::Settle(31)).op(Op::Host(8, hc, 4));
        for _ in 0..8 {
            s.op(Op::Advance(11, 0));
        }
        out.push(("keepalive".to_string(), s.done()));

        // A SYN flood past the backlog: SYN cookies; then the ACK answering one.
        let mut s = Script::new(0);
        for i in 0..12u16 {
            let fresh = s.w.hints.len() as u8;
            s.op(Op::Packet(PacketSpec::Tcp(TcpSpec {
                tuple: fresh,
                ip_sel: 6,
                sport: 7000 + 2 * i,
                flags: 2,
                window: 65535,
                opts: OptSpec {
                    kind: 1,
                    mask: 1 | 2 | 4 | 8,
                    mss: 1400,
                    wscale: 9,
                    tsval: 50,
                    ..OptSpec::default()
                },
                ..TcpSpec::default()
            })));
        }
        let last = s.hint(svc, sa(spoof4(3), 7023));
        s.seg(last, 16, 0).seg(last, 24, 100).op(Op::Host(7, 0, 0));
        out.push(("syn-flood-cookies".to_string(), s.done()));

        // A SYN reopens a TIME_WAIT entry; the handshake completes.
        let mut s = Script::new(0);
        let tw = s.hint(svc, sa(P4, 40005));
        s.op(Op::Packet(PacketSpec::Tcp(TcpSpec {
            tuple: tw,
            seq: 100_000,
            flags: 2,
            window: 65535,
            opts: OptSpec {
                kind: 1,
                mask: 1 | 8,
                mss: 1460,
                tsval: 10,
                ..OptSpec::default()
            },
            ..TcpSpec::default()
        })));
        s.seg(tw, 16, 0).op(Op::Host(7, 0, 0));
        out.push(("reopen-time-wait".to_string(), s.done()));

        // Out-of-order data beyond the per-connection limit, then the hole filled.
        let mut s = Script::new(0);
        let e = s.hint(est.0, est.1);
        for k in 1..8u32 {
            s.op(Op::Packet(PacketSpec::Tcp(TcpSpec {
                tuple: e,
                seq: k * 1400,
                flags: 24,
                window: 65535,
                payload_len: 1400,
                payload_salt: k as u8,
                ..TcpSpec::default()
            })));
        }
        s.seg(e, 24, 1400).op(Op::Settle(31));
        out.push(("out-of-order-flood".to_string(), s.done()));

        // RSTs and SYNs in the window of an established connection: challenge ACKs, rate
        // limited.
        let mut s = Script::new(1);
        let e = s.hint(est.0, est.1);
        for k in 0..24u32 {
            s.op(Op::Packet(PacketSpec::Tcp(TcpSpec {
                tuple: e,
                seq: 1 + k * 97,
                flags: if k % 2 == 0 { 4 } else { 2 },
                window: 1000,
                ..TcpSpec::default()
            })));
        }
        s.op(Op::Settle(31));
        out.push(("blind-rst-syn".to_string(), s.done()));

        // Outbound churn from the host: connects to the peer, the peer answers and closes,
        // the host closes; connects on tuples in TIME_WAIT under each policy.
        for (bits, name) in [(0u8, "exact"), (4, "local-port"), (8, "timestamp-reuse")] {
            let mut s = Script::new(bits);
            for i in 0..6u8 {
                s.op(Op::Host(0, 0, 0)).op(Op::Settle(15));
                let n = s.w.h_conns.len() as u8;
                s.op(Op::Host(4, n - 1, 0))
                    .op(Op::Settle(15))
                    .op(Op::Peer(2, 100 + i, 0))
                    .op(Op::Settle(15));
            }
            let tw = s.hint(svc, sa(P4, 40005));
            s.op(Op::Advance(8, 0))
                .op(Op::Host(1, tw, 0))
                .op(Op::Host(1, tw, 1))
                .op(Op::Settle(31));
            out.push((format!("outbound-churn-{name}"), s.done()));
        }

        // The SYN-SENT connection gets a SYN-ACK, then simultaneous close.
        let mut s = Script::new(0);
        let ss =
            s.w.hints
                .iter()
                .position(|h| h.tuple.remote == sa(BLACKHOLE, SERVICE))
                .expect("seed: SYN-SENT hint") as u8;
        s.op(Op::Packet(PacketSpec::Tcp(TcpSpec {
            tuple: ss,
            seq_mode: 1,
            seq: 5_000_000,
            flags: 18,
            window: 65535,
            opts: OptSpec {
                kind: 1,
                mask: 1,
                mss: 536,
                ..OptSpec::default()
            },
            ..TcpSpec::default()
        })));
        let hc = s.handle(ss_local(&s.w, ss), sa(BLACKHOLE, SERVICE));
        s.op(Op::Host(4, hc, 0))
            .seg(ss, 17, 0)
            .op(Op::Advance(9, 0));
        out.push(("syn-sent-simultaneous-close".to_string(), s.done()));
        out
    }

    fn ss_local(w: &World, hint: u8) -> SocketAddr {
        w.hints[hint as usize].tuple.local
    }
}

/// Fuzz target `time_wait`: the TIME_WAIT table against a plain model.
///
/// The model is an array over eight 4-tuples (IPv4 ones sharing local and remote halves in
/// different ways, IPv6 ones, a mixed-family one and a v4-mapped one, so both lanes of the
/// table are used) holding what each entry must hold, with the rules of DESIGN.md written
/// out directly: RST ignored (RFC 1337) or accepted only at exactly RCV.NXT; PAWS; a bare
/// SYN reopens when its sequence number is above RCV.NXT or its TSval above TS.Recent (RFC
/// 6191), else it is an old duplicate answered with an ACK; a retransmitted FIN is ACKed and
/// restarts the 2MSL timer; an acceptable bare ACK is ignored; anything else gets an ACK.
/// Expiry is `now + lifetime` rounded up to the millisecond; a full table evicts the
/// entry closest to expiry or drops the new one.
///
/// Input: the lifetime, the cap (0 to 8), the overflow policy and RFC 1337, then operations
/// until the input ends (at most 2000). The clock only moves forward, in whole milliseconds;
/// the lifetimes include sub-millisecond ones, so rounding is exercised.
pub mod time_wait {
    use super::*;

    const N: usize = 8;
    const MAX_OPS: usize = 2000;

    fn universe() -> [FourTuple; N] {
        let v4 = |l: [u8; 4], lp: u16, r: [u8; 4], rp: u16| {
            FourTuple::new(sa(Ipv4Addr::from(l), lp), sa(Ipv4Addr::from(r), rp))
        };
        [
            v4([192, 0, 2, 2], 80, [198, 51, 100, 1], 1000),
            v4([192, 0, 2, 2], 80, [198, 51, 100, 1], 1001),
            v4([192, 0, 2, 2], 40000, [198, 51, 100, 2], 80),
            v4([192, 0, 2, 3], 40000, [198, 51, 100, 2], 80),
            FourTuple::new(sa(H6, 80), SocketAddr::new(spoof6(1), 1000)),
            FourTuple::new(sa(H6, 40000), SocketAddr::new(spoof6(2), 80)),
            FourTuple::new(sa(H4, 80), SocketAddr::new(spoof6(3), 1000)),
            FourTuple::new(
                sa(H4.to_ipv6_mapped(), 80),
                sa(Ipv4Addr::new(198, 51, 100, 1).to_ipv6_mapped(), 1000),
            ),
        ]
    }

    fn is_v4(t: &FourTuple) -> bool {
        t.local.is_ipv4() && t.remote.is_ipv4()
    }

    fn ceil_ms(us: u64) -> u64 {
        us.div_ceil(1000) * 1000
    }

    #[derive(Copy, Clone, Debug, PartialEq, Eq)]
    struct Entry {
        snd: SeqNum,
        rcv: SeqNum,
        ts: Option<u32>,
        /// µs.
        expires: u64,
        /// Insertion (or restart) order: the table's ring order within a lane.
        order: u64,
    }

    struct Model {
        u: [FourTuple; N],
        e: [Option<Entry>; N],
        order: u64,
        stats: TwStats,
        rfc1337: bool,
        cap: usize,
        overflow: TwOverflow,
        life_us: u64,
    }

    impl Model {
        fn len(&self) -> usize {
            self.e.iter().flatten().count()
        }

        fn next_order(&mut self) -> u64 {
            self.order += 1;
            self.order
        }

        fn entry(&self, i: usize) -> Option<TimeWaitEntry> {
            self.e[i].map(|e| TimeWaitEntry {
                tuple: self.u[i],
                snd_nxt: e.snd,
                rcv_nxt: e.rcv,
                ts_recent: e.ts,
                last_seen: Instant::from_micros(e.expires.saturating_sub(self.life_us)),
                expires: Instant::from_micros(e.expires),
            })
        }

        fn expire(&mut self, now: u64) -> usize {
            let mut n = 0;
            for slot in self.e.iter_mut() {
                if slot.is_some_and(|e| e.expires <= now) {
                    *slot = None;
                    n += 1;
                }
            }
            self.stats.expired += n as u64;
            n
        }

        /// The oldest entry of one lane (the front of its ring).
        fn oldest(&self, v4: bool) -> Option<usize> {
            (0..N)
                .filter(|&i| is_v4(&self.u[i]) == v4)
                .filter_map(|i| self.e[i].map(|e| (e.order, i)))
                .min()
                .map(|(_, i)| i)
        }

        fn insert(&mut self, now: u64, i: usize, st: TimeWaitState) -> TwInsert {
            let expires = ceil_ms(now + self.life_us);
            let fresh = |order| Entry {
                snd: st.snd_nxt,
                rcv: st.rcv_nxt,
                ts: st.ts_recent,
                expires,
                order,
            };
            if self.e[i].is_some() {
                let o = self.next_order();
                self.e[i] = Some(fresh(o));
                self.stats.replaced += 1;
                return TwInsert::Replaced;
            }
            let mut out = TwInsert::Inserted;
            if self.len() >= self.cap {
                self.expire(now);
            }
            if self.len() >= self.cap {
                if self.cap == 0 || self.overflow == TwOverflow::DropNew {
                    self.stats.dropped_full += 1;
                    return TwInsert::Dropped;
                }
                let exp = |k: usize| self.e[k].map_or(u64::MAX, |e| e.expires);
                let victim = match (self.oldest(true), self.oldest(false)) {
                    (Some(a), Some(b)) => {
                        if exp(a) <= exp(b) {
                            a
                        } else {
                            b
                        }
                    }
                    (Some(a), None) => a,
                    (None, Some(b)) => b,
                    (None, None) => unreachable!("a full table with a cap above 0 is not empty"),
                };
                self.e[victim] = None;
                self.stats.evicted_oldest += 1;
                out = TwInsert::EvictedOldest(self.u[victim]);
            }
            let o = self.next_order();
            self.e[i] = Some(fresh(o));
            self.stats.inserted += 1;
            out
        }

        fn remove(&mut self, i: usize) -> Option<TimeWaitEntry> {
            let old = self.entry(i);
            if old.is_some() {
                self.e[i] = None;
                self.stats.removed += 1;
            }
            old
        }

        fn ack(e: &Entry) -> TwAction {
            TwAction::Ack {
                seq: e.snd,
                ack: e.rcv,
                tsecr: e.ts,
            }
        }

        /// DESIGN.md's TIME_WAIT rules, written out.
        fn handle(&mut self, now: u64, i: usize, seg: &TwSegment) -> Option<TwAction> {
            let e = self.e[i]?;
            if seg.rst {
                if !self.rfc1337 && seg.seq == e.rcv {
                    self.e[i] = None;
                    self.stats.rst_accepted += 1;
                    return Some(TwAction::ResetAccepted);
                }
                self.stats.rst_ignored += 1;
                return Some(TwAction::Ignore);
            }
            let bare_syn = seg.syn && seg.ack.is_none();
            let ts_delta = match (e.ts, seg.tsval) {
                (Some(recent), Some(v)) => Some(v.wrapping_sub(recent) as i32),
                _ => None,
            };
            if ts_delta.is_some_and(|d| d < 0) {
                self.stats.paws_rejected += 1;
                if bare_syn {
                    self.stats.old_duplicates += 1;
                }
                self.stats.acks_sent += 1;
                return Some(Model::ack(&e));
            }
            if bare_syn {
                if seg.seq > e.rcv || ts_delta.is_some_and(|d| d > 0) {
                    let old = self.entry(i).expect("present");
                    self.e[i] = None;
                    self.stats.reopened += 1;
                    return Some(TwAction::Reopen { old });
                }
                self.stats.old_duplicates += 1;
                self.stats.acks_sent += 1;
                return Some(Model::ack(&e));
            }
            if seg.syn {
                self.stats.acks_sent += 1;
                return Some(Model::ack(&e));
            }
            if seg.fin && seg.seq + seg.payload_len + 1u32 == e.rcv {
                let mut n = e;
                if ts_delta.is_some() {
                    n.ts = seg.tsval;
                }
                n.expires = ceil_ms(now + self.life_us);
                n.order = self.next_order();
                self.e[i] = Some(n);
                self.stats.fin_reacked += 1;
                self.stats.acks_sent += 1;
                return Some(Model::ack(&n));
            }
            if seg.payload_len == 0 && !seg.fin && seg.seq == e.rcv {
                if ts_delta.is_some() {
                    if let Some(slot) = self.e[i].as_mut() {
                        slot.ts = seg.tsval;
                    }
                }
                return Some(TwAction::Ignore);
            }
            self.stats.acks_sent += 1;
            Some(Model::ack(&e))
        }
    }

    /// Compares two entries; the expiry only when it is still ahead (an entry past its
    /// expiry but not yet expired may report an earlier, rebased, expiry).
    fn same_entry(what: &str, t: Option<TimeWaitEntry>, m: Option<TimeWaitEntry>, now: u64) {
        match (t, m) {
            (None, None) => {}
            (Some(t), Some(m)) => {
                assert_eq!(
                    (t.tuple, t.snd_nxt, t.rcv_nxt, t.ts_recent),
                    (m.tuple, m.snd_nxt, m.rcv_nxt, m.ts_recent),
                    "{what}: table {t:?}, model {m:?}"
                );
                if m.expires.micros() > now {
                    assert_eq!(
                        (t.expires, t.last_seen),
                        (m.expires, m.last_seen),
                        "{what}: expiry; table {t:?}, model {m:?}"
                    );
                } else {
                    assert!(
                        t.expires.micros() <= now,
                        "{what}: due at {now} in the model, table says {t:?}"
                    );
                }
            }
            (t, m) => panic!("{what}: table {t:?}, model {m:?}"),
        }
    }

    fn compare(t: &TimeWaitTable, m: &Model, now: u64) {
        check_time_wait_table(t);
        assert_eq!(t.len(), m.len(), "length");
        let mut due = false;
        for i in 0..N {
            let what = format!("entry {} ({})", i, m.u[i]);
            same_entry(&what, t.get(&m.u[i]), m.entry(i), now);
            assert_eq!(t.contains(&m.u[i]), m.e[i].is_some(), "{what}: contains");
            due |= m.e[i].is_some_and(|e| e.expires <= now);
            let local = m.u[i].local;
            let in_use = (0..N).any(|j| m.e[j].is_some() && m.u[j].local == local);
            assert_eq!(t.local_in_use(local), in_use, "local_in_use({local})");
        }
        let next = t.next_expiry().map(|x| x.micros());
        if due {
            assert!(
                next.is_some_and(|x| x <= now),
                "next_expiry {next:?} with entries due"
            );
        } else {
            let want = m.e.iter().flatten().map(|e| e.expires).min();
            assert_eq!(next, want, "next_expiry");
        }
        let mut order: Vec<(bool, u64, usize)> = (0..N)
            .filter_map(|i| m.e[i].map(|e| (!is_v4(&m.u[i]), e.order, i)))
            .collect();
        order.sort_unstable();
        let want: Vec<FourTuple> = order.iter().map(|&(_, _, i)| m.u[i]).collect();
        let got: Vec<FourTuple> = t.iter().map(|e| e.tuple).collect();
        assert_eq!(got, want, "iteration order");
        let (a, b) = (t.stats(), m.stats);
        let fields = [
            ("inserted", a.inserted, b.inserted),
            ("replaced", a.replaced, b.replaced),
            ("expired", a.expired, b.expired),
            ("removed", a.removed, b.removed),
            ("reopened", a.reopened, b.reopened),
            ("old_duplicates", a.old_duplicates, b.old_duplicates),
            ("fin_reacked", a.fin_reacked, b.fin_reacked),
            ("acks_sent", a.acks_sent, b.acks_sent),
            ("rst_ignored", a.rst_ignored, b.rst_ignored),
            ("rst_accepted", a.rst_accepted, b.rst_accepted),
            ("paws_rejected", a.paws_rejected, b.paws_rejected),
            ("evicted_oldest", a.evicted_oldest, b.evicted_oldest),
            ("dropped_full", a.dropped_full, b.dropped_full),
        ];
        for (name, got, want) in fields {
            assert_eq!(got, want, "stats.{name}: table {a:?}, model {b:?}");
        }
    }

    /// Lifetimes: sub-millisecond ones for rounding, real ones, one above the table's maximum.
    fn lifetime(sel: u8, raw: u16) -> Duration {
        const US: [u64; 8] = [
            1,
            999,
            1_000,
            1_500,
            1_000_000,
            60_000_000,
            240_000_000,
            7 * 86_400_000_000,
        ];
        match US.get(sel as usize % (US.len() + 1)) {
            Some(&us) => Duration::from_micros(us),
            None => Duration::from_micros(raw as u64 * 1000 + raw as u64 % 1000),
        }
    }

    /// Clock steps, whole milliseconds: around lifetimes, and past the table's 12-day
    /// expiry range.
    fn step_ms(sel: u8, raw: u32) -> u64 {
        const MS: [u64; 13] = [
            0,
            1,
            2,
            999,
            1_000,
            30_000,
            60_000,
            61_000,
            240_000,
            3_600_000,
            86_400_000,
            7 * 86_400_000,
            13 * 86_400_000,
        ];
        match MS.get(sel as usize % (MS.len() + 1)) {
            Some(&ms) => ms,
            None => raw as u64 % (30 * 86_400_000),
        }
    }

    /// A TSval relative to TS.Recent, or none (mode 0).
    fn tsval(m: &Model, i: usize, mode: u8, delta: u32) -> Option<u32> {
        (mode & 3 != 0).then(|| m.e[i].and_then(|e| e.ts).unwrap_or(0).wrapping_add(delta))
    }

    fn rcv(m: &Model, i: usize) -> SeqNum {
        m.e[i].map_or(SeqNum(0), |e| e.rcv)
    }

    /// The target body.
    pub fn run(data: &[u8]) {
        let mut c = Cursor::new(data);
        let life = lifetime(c.u8(), c.u16());
        let cap = c.u8() as usize % 9;
        let flags = c.u8();
        let overflow = if flags & 1 != 0 {
            TwOverflow::DropNew
        } else {
            TwOverflow::EvictOldest
        };
        let rfc1337 = flags & 2 == 0;
        let mut t = TimeWaitTable::with_seed(life, cap, overflow, rfc1337, [7; 16]);
        // Without local counts `local_in_use` scans; `compare` checks it exactly either way.
        t.set_local_counts(flags & 4 == 0);
        let mut m = Model {
            u: universe(),
            e: [None; N],
            order: 0,
            stats: TwStats::default(),
            rfc1337,
            cap,
            overflow,
            life_us: t.lifetime().as_micros() as u64,
        };
        let u = m.u;
        let mut now = 1_000_000u64;
        let mut ops = 0;
        while !c.is_empty() && ops < MAX_OPS {
            ops += 1;
            let at = Instant::from_micros(now);
            match c.u8() % 10 {
                0 => {
                    let i = c.u8() as usize % N;
                    let st = TimeWaitState {
                        snd_nxt: SeqNum(c.u32()),
                        rcv_nxt: SeqNum(c.u32()),
                        ts_recent: (c.u8() & 1 != 0).then_some(c.u32()),
                    };
                    let got = t.insert(at, u[i], st);
                    let want = m.insert(now, i, st);
                    assert_eq!(got, want, "insert {}", u[i]);
                }
                1 => {
                    let i = c.u8() as usize % N;
                    let got = t.remove(&u[i]);
                    let want = m.remove(i);
                    same_entry("remove", got, want, now);
                }
                k @ 2..=5 => {
                    let i = c.u8() as usize % N;
                    let bits = c.u8();
                    let delta = c.u32();
                    let len = c.u16() as usize % 2000;
                    let (mode, ts_delta) = (c.u8(), c.u32());
                    let base = rcv(&m, i);
                    let payload = if bits & 2 != 0 { len } else { 0 };
                    let seg = match k {
                        // A SYN, above or below RCV.NXT; bit 0: a SYN-ACK.
                        2 => TwSegment {
                            seq: base + delta,
                            ack: (bits & 1 != 0).then_some(SeqNum(delta)),
                            syn: true,
                            tsval: tsval(&m, i, mode, ts_delta),
                            ..TwSegment::default()
                        },
                        // A FIN: bit 0, exactly the retransmission of the peer's FIN.
                        3 => TwSegment {
                            seq: if bits & 1 != 0 {
                                base - (payload as u32 + 1)
                            } else {
                                base + delta
                            },
                            ack: Some(m.e[i].map_or(SeqNum(0), |e| e.snd)),
                            fin: true,
                            payload_len: payload,
                            tsval: tsval(&m, i, mode, ts_delta),
                            ..TwSegment::default()
                        },
                        // An RST at RCV.NXT + delta.
                        4 => TwSegment {
                            seq: base + delta,
                            rst: true,
                            ack: (bits & 1 != 0).then_some(SeqNum(delta)),
                            ..TwSegment::default()
                        },
                        // Anything: the flags from `bits`.
                        _ => TwSegment {
                            seq: base + delta,
                            ack: (bits & 8 != 0).then_some(SeqNum(ts_delta)),
                            syn: bits & 1 != 0,
                            fin: bits & 2 != 0,
                            rst: bits & 4 != 0,
                            payload_len: if bits & 16 != 0 { len } else { 0 },
                            tsval: tsval(&m, i, mode, ts_delta),
                        },
                    };
                    let got = t.handle_segment(at, &u[i], &seg);
                    let want = m.handle(now, i, &seg);
                    match (got, want) {
                        (Some(TwAction::Reopen { old: a }), Some(TwAction::Reopen { old: b })) => {
                            same_entry("reopen", Some(a), Some(b), now)
                        }
                        (a, b) => assert_eq!(a, b, "segment {seg:?} on {}", u[i]),
                    }
                }
                6 => {
                    now += step_ms(c.u8(), c.u32()) * 1000;
                    let got = t.expire(Instant::from_micros(now));
                    let want = m.expire(now);
                    assert_eq!(got, want, "expire");
                }
                7 => now += step_ms(c.u8(), c.u32()) * 1000,
                8 => {
                    let bits = c.u8();
                    m.rfc1337 = bits & 1 != 0;
                    t.set_rfc1337(m.rfc1337);
                    // Bit 1 turns the local counts off; clear, it rebuilds them if off.
                    t.set_local_counts(bits & 2 == 0);
                }
                _ => {
                    let got = t.expire(at);
                    let want = m.expire(now);
                    assert_eq!(got, want, "expire");
                }
            }
            compare(&t, &m, now);
        }
    }

    /// Encodes operations in the layout `run` reads.
    #[derive(Default)]
    struct Ops(Enc);

    impl Ops {
        fn new(life_sel: u8, cap: u8, flags: u8) -> Ops {
            let mut e = Enc::default();
            e.u8(life_sel).u16(0).u8(cap).u8(flags);
            Ops(e)
        }
        fn insert(&mut self, i: u8, snd: u32, rcv: u32, ts: Option<u32>) -> &mut Ops {
            self.0.u8(0).u8(i).u32(snd).u32(rcv);
            self.0.u8(ts.is_some() as u8).u32(ts.unwrap_or(0));
            self
        }
        fn remove(&mut self, i: u8) -> &mut Ops {
            self.0.u8(1).u8(i);
            self
        }
        #[allow(clippy::too_many_arguments)]
        fn seg(
            &mut self,
            k: u8,
            i: u8,
            bits: u8,
            delta: u32,
            len: u16,
            ts: Option<u32>,
        ) -> &mut Ops {
            self.0.u8(k).u8(i).u8(bits).u32(delta).u16(len);
            self.0.u8(ts.is_some() as u8).u32(ts.unwrap_or(0));
            self
        }
        fn syn(&mut self, i: u8, delta: u32, ts: Option<u32>) -> &mut Ops {
            self.seg(2, i, 0, delta, 0, ts)
        }
        fn fin_retransmit(&mut self, i: u8, ts: Option<u32>) -> &mut Ops {
            self.seg(3, i, 1, 0, 0, ts)
        }
        fn rst(&mut self, i: u8, delta: u32) -> &mut Ops {
            self.seg(4, i, 0, delta, 0, None)
        }
        fn advance(&mut self, sel: u8, expire: bool) -> &mut Ops {
            self.0.u8(if expire { 6 } else { 7 }).u8(sel).u32(0);
            self
        }
        fn rfc1337(&mut self, on: bool) -> &mut Ops {
            self.0.u8(8).u8(on as u8);
            self
        }
        fn done(&self) -> Vec<u8> {
            self.0 .0.clone()
        }
    }

    /// The seed corpus: each rule of DESIGN.md's TIME_WAIT section, overflow under both
    /// policies, expiry with rounding, the epoch rebase, tombstone compaction.
    pub fn seeds() -> Vec<(String, Vec<u8>)> {
        const MINUS: fn(u32) -> u32 = |x| 0u32.wrapping_sub(x);
        let mut out = Vec::new();
        let mut add = |name: &str, ops: &Ops| out.push((name.to_string(), ops.done()));
        add(
            "syn-greater-seq-reopens",
            Ops::new(5, 4, 0)
                .insert(0, 1000, 5000, None)
                .syn(0, 1, None),
        );
        add(
            "syn-lower-seq-old-duplicate",
            Ops::new(5, 4, 0)
                .insert(0, 1000, 5000, None)
                .syn(0, MINUS(1), None)
                .syn(0, 0, None),
        );
        add(
            "syn-lower-seq-newer-ts-reopens",
            Ops::new(5, 4, 0)
                .insert(4, 1000, 5000, Some(777))
                .syn(4, MINUS(100), Some(1)),
        );
        add(
            "syn-greater-seq-older-ts-paws",
            Ops::new(5, 4, 0)
                .insert(2, 1000, 5000, Some(777))
                .syn(2, 100, Some(MINUS(1)))
                .syn(2, 100, Some(0)),
        );
        add(
            "syn-ack-gets-ack",
            Ops::new(5, 4, 0)
                .insert(1, 9, 9, None)
                .seg(2, 1, 1, 1, 0, None),
        );
        add(
            "fin-retransmit-restarts-timer",
            Ops::new(5, 4, 0)
                .insert(0, 1, 2, Some(5))
                .advance(5, true)
                .fin_retransmit(0, Some(3))
                .advance(5, true)
                .advance(1, true)
                .advance(7, true),
        );
        add(
            "rst-ignored-rfc1337",
            Ops::new(5, 4, 0).insert(3, 1, 2, None).rst(3, 0).rst(3, 1),
        );
        add(
            "rst-accepted-exact-without-rfc1337",
            Ops::new(5, 4, 2)
                .insert(3, 1, 2, None)
                .rst(3, 1)
                .rst(3, 0)
                .insert(3, 1, 2, None)
                .rfc1337(true)
                .rst(3, 0),
        );
        add(
            "ack-and-data",
            Ops::new(5, 4, 0)
                .insert(5, 1, 2, Some(10))
                .seg(5, 5, 8, 0, 0, Some(11))
                .seg(5, 5, 8 | 16, 0, 100, Some(12))
                .seg(5, 5, 8, 5, 0, None),
        );
        let mut evict = Ops::new(5, 3, 0);
        for (i, sel) in [(0u8, 1u8), (4, 1), (2, 1), (6, 1), (7, 0), (1, 0)] {
            evict.insert(i, 1, 1, None).advance(sel, false);
        }
        add("full-evicts-oldest-both-lanes", &evict);
        let mut dropnew = Ops::new(5, 2, 1);
        for i in 0..4u8 {
            dropnew.insert(i, 1, 1, None);
        }
        dropnew.advance(6, false).insert(5, 1, 1, None);
        add("full-drops-new", &dropnew);
        add(
            "cap-zero",
            Ops::new(5, 0, 0).insert(0, 1, 1, None).syn(0, 5, None),
        );
        add(
            "sub-millisecond-lifetime-rounding",
            Ops::new(3, 4, 0)
                .insert(0, 1, 1, None)
                .advance(1, true)
                .advance(1, true)
                .insert(1, 1, 1, None)
                .advance(0, true),
        );
        add(
            "replace-restarts",
            Ops::new(4, 4, 0)
                .insert(0, 1, 1, None)
                .advance(3, false)
                .insert(0, 2, 2, Some(1))
                .advance(1, true)
                .remove(0)
                .remove(0),
        );
        add(
            "epoch-rebase",
            Ops::new(7, 8, 0)
                .insert(0, 1, 1, None)
                .insert(4, 1, 1, Some(1))
                .advance(12, false)
                .insert(1, 1, 1, None)
                .advance(12, false)
                .syn(4, 1, None)
                .insert(2, 1, 1, None)
                .advance(11, true),
        );
        let mut churn = Ops::new(6, 2, 0);
        churn.insert(0, 1, 100, Some(1)).insert(4, 1, 100, None);
        for k in 0..150u32 {
            churn.fin_retransmit((k % 2) as u8 * 4, Some(k + 2));
        }
        churn.advance(6, true);
        add("fin-storm-compaction", &churn);
        out
    }
}

/// Fuzz target `pair`: a client and a server stack through a link whose fate for each
/// packet comes from the input.
///
/// Input: a [`Setup`](pair) (options on each side, IPv4 or IPv6, MSS, receive buffers, close
/// order, how much each side sends, write and read sizes, how slowly each application reads),
/// then the link schedule: one byte per packet, in the order packets are sent, whose low two
/// bits say deliver / drop / duplicate / deliver late and whose high six bits a delay in
/// milliseconds (so packets overtake each other). When the schedule runs out the link is
/// perfect (1 ms).
///
/// Checked: every packet each stack emits, [`check_stack`] on both after every event; what
/// each side received is always a prefix of what the other sent; an application error only
/// when a connection gave up on retransmissions (a timeout, or a passive connection giving
/// up in SYN-RECEIVED); when both applications complete without error, each received
/// exactly what the other sent, and a few simulated hours later both stacks hold no
/// connection and no TIME_WAIT entry. With [`LIVENESS_CHECKS`], also: unless
/// a connection gave up, both complete within six simulated hours of the schedule running
/// out, without a packet storm.
pub mod pair {
    use super::*;

    /// Events after which a run is a packet storm or a livelock (legitimate runs stay below
    /// a few thousand); lower while [`LIVENESS_CHECKS`] is off, to keep such inputs cheap.
    const MAX_EVENTS: usize = if LIVENESS_CHECKS { 400_000 } else { 40_000 };
    const SERVER_PORT: u16 = 80;

    /// Everything but the schedule.
    #[derive(Clone, Debug, Default)]
    struct Setup {
        /// Bit 0/1: no timestamps on the client/server; 2/3: no SACK; 4/5: no window
        /// scaling; 6: IPv6; 7: TCP_NODELAY on both.
        opts: u8,
        /// Bits 0-1: MSS (1460, 536, 200, 88); 2-3: the server's receive buffer; 4-5: the
        /// client's (256 KiB, 32 KiB, 4 KiB, 1 KiB); 6-7: close order (client first, server
        /// first, both at once, client closes without waiting for EOF).
        shape: u8,
        a_len: u16,
        b_len: u16,
        salt: u8,
        a_write: u16,
        b_write: u16,
        a_read: u16,
        b_read: u16,
        /// Milliseconds between reads: low nibble the client, high nibble the server.
        read_delay: u8,
    }

    impl Setup {
        fn read(c: &mut Cursor<'_>) -> Setup {
            Setup {
                opts: c.u8(),
                shape: c.u8(),
                a_len: c.u16(),
                b_len: c.u16(),
                salt: c.u8(),
                a_write: c.u16(),
                b_write: c.u16(),
                a_read: c.u16(),
                b_read: c.u16(),
                read_delay: c.u8(),
            }
        }

        fn write(&self, e: &mut Enc) {
            e.u8(self.opts)
                .u8(self.shape)
                .u16(self.a_len)
                .u16(self.b_len);
            e.u8(self.salt).u16(self.a_write).u16(self.b_write);
            e.u16(self.a_read).u16(self.b_read).u8(self.read_delay);
        }

        fn config(&self, client: bool) -> Config {
            let bit = |n: u8| self.opts & (1 << (n + !client as u8)) != 0;
            let mss = [1460u16, 536, 200, 88][self.shape as usize & 3];
            let rbuf_sel = if client {
                self.shape >> 4
            } else {
                self.shape >> 2
            };
            Config {
                timestamps: !bit(0),
                sack: !bit(2),
                window_scaling: !bit(4),
                mss_v4: mss,
                mss_v6: mss.min(1440),
                recv_buffer: [256 * 1024, 32 * 1024, 4096, 1024][rbuf_sel as usize & 3],
                send_buffer: 64 * 1024,
                ..Config::default()
            }
        }
    }

    /// A packet on the link: (deliver at, sending order, to the server?, bytes).
    type InFlight = Reverse<(Instant, u64, bool, Vec<u8>)>;

    /// The link: packets in flight ordered by delivery time, then by sending order.
    struct Link<'a> {
        schedule: Cursor<'a>,
        flight: BinaryHeap<InFlight>,
        sent: u64,
        exhausted_at: Option<Instant>,
    }

    impl Link<'_> {
        fn send(&mut self, now: Instant, to_b: bool, pkt: Vec<u8>) {
            let ms = |n: u64| Duration::from_millis(n);
            if self.schedule.is_empty() {
                self.exhausted_at.get_or_insert(now);
                self.push(now + LATENCY, to_b, pkt);
                return;
            }
            let fate = self.schedule.u8();
            let delay = (fate >> 2) as u64;
            let at = now + LATENCY + ms(delay);
            match fate & 3 {
                0 => self.push(at, to_b, pkt),
                1 => {}
                2 => {
                    self.push(at, to_b, pkt.clone());
                    self.push(now + LATENCY + ms((delay * 5 + 3) % 64), to_b, pkt);
                }
                _ => self.push(now + LATENCY + ms(64 + delay * 4), to_b, pkt),
            }
        }

        fn push(&mut self, at: Instant, to_b: bool, pkt: Vec<u8>) {
            self.sent += 1;
            self.flight.push(Reverse((at, self.sent, to_b, pkt)));
        }

        fn next(&self) -> Option<Instant> {
            self.flight.peek().map(|Reverse((at, ..))| *at)
        }
    }

    /// One side's application: send everything, half-close when the close order says so,
    /// read until EOF, close.
    struct App {
        conn: Option<ConnHandle>,
        out: Vec<u8>,
        sent: usize,
        got: Vec<u8>,
        eof: bool,
        shut: bool,
        closed: bool,
        error: Option<ConnError>,
        write: usize,
        read: usize,
        read_delay: Duration,
        next_read: Instant,
        /// Half-closes as soon as everything is queued, without waiting for EOF.
        first: bool,
        /// Closes (rather than half-closes) once it has everything the other side sends.
        close_early: bool,
        expect: usize,
    }

    impl App {
        fn done(&self) -> bool {
            self.closed || self.error.is_some()
        }

        fn step(&mut self, s: &mut Stack, now: Instant) {
            let Some(c) = self.conn else {
                return;
            };
            if self.done() {
                return;
            }
            if let Ok(Some(e)) = s.error(c) {
                self.error = Some(e);
                let _ = s.close(now, c);
                return;
            }
            while self.sent < self.out.len() {
                let end = (self.sent + self.write).min(self.out.len());
                match s.send(now, c, &self.out[self.sent..end]) {
                    Ok(n) if n > 0 => self.sent += n,
                    _ => break,
                }
            }
            // One read of up to `read` bytes every `read_delay`; back to back without one.
            let mut buf = vec![0u8; self.read];
            while now >= self.next_read && !self.eof {
                match s.recv(now, c, &mut buf) {
                    Ok(0) => self.eof = true,
                    Ok(n) => {
                        self.got.extend_from_slice(&buf[..n]);
                        self.next_read = now + self.read_delay;
                    }
                    Err(Error::WouldBlock) => break,
                    Err(Error::Connection(e)) => {
                        self.error = Some(e);
                        let _ = s.close(now, c);
                        return;
                    }
                    Err(e) => panic!("recv: {e:?}"),
                }
            }
            // Closing in SYN-SENT abandons the connection (RFC 9293 §3.10.4), so the
            // application waits for the handshake before it closes.
            let all_sent =
                self.sent == self.out.len() && s.state(c).is_ok_and(|st| st != TcpState::SynSent);
            if self.close_early && all_sent && self.got.len() == self.expect {
                assert_eq!(s.close(now, c), Ok(()), "close");
                self.closed = true;
                return;
            }
            if !self.shut && all_sent && (self.first || self.eof) {
                assert_eq!(s.shutdown_write(now, c), Ok(()), "shutdown_write");
                self.shut = true;
            }
            if self.shut && self.eof {
                assert_eq!(s.close(now, c), Ok(()), "close");
                self.closed = true;
            }
        }

        /// When this application wants to run again on its own: its next read, while it
        /// has not seen EOF (data or the FIN may be waiting).
        fn wake(&self, now: Instant) -> Option<Instant> {
            (self.conn.is_some() && !self.done() && !self.eof && self.next_read > now)
                .then_some(self.next_read)
        }
    }

    /// Takes everything a stack wants to send onto the link.
    fn flush(s: &mut Stack, link: &mut Link<'_>, now: Instant, to_b: bool, buf: &mut [u8]) {
        let mut n = 0;
        while let Some(len) = s.poll_transmit(now, buf) {
            n += 1;
            assert!(n < 100_000, "a stack emits without end");
            check_emitted(s, &buf[..len]);
            link.send(now, to_b, buf[..len].to_vec());
        }
        drain_events(s);
    }

    /// The target body.
    pub fn run(data: &[u8]) {
        let mut c = Cursor::new(data);
        let setup = Setup::read(&mut c);
        let v6 = setup.opts & 64 != 0;
        let (a_ip, b_ip): (IpAddr, IpAddr) = if v6 {
            (H6.into(), P6.into())
        } else {
            (H4.into(), P4.into())
        };
        let mut a = Stack::new(setup.config(true), [0x33; 16]);
        a.add_address(a_ip);
        let mut b = Stack::new(setup.config(false), [0x44; 16]);
        b.add_address(b_ip);
        let server = SocketAddr::new(b_ip, SERVER_PORT);
        let listener = b.listen(server, 16).expect("listen");
        let mut now = Instant::from_millis(1_000);
        let a_data = pattern(setup.a_len as usize % 40_001, setup.salt);
        let b_data = pattern(setup.b_len as usize % 40_001, setup.salt.wrapping_add(1));
        let mode = setup.shape >> 6;
        let app = |out: &Vec<u8>, write: u16, read: u16, delay: u8, first: bool, expect| App {
            conn: None,
            out: out.clone(),
            sent: 0,
            got: Vec::new(),
            eof: false,
            shut: false,
            closed: false,
            error: None,
            write: (write as usize).max(1),
            read: (read as usize).max(256),
            read_delay: Duration::from_millis(delay as u64 & 15),
            next_read: Instant::ZERO,
            first,
            close_early: false,
            expect,
        };
        let mut ca = app(
            &a_data,
            setup.a_write,
            setup.a_read,
            setup.read_delay,
            matches!(mode, 0 | 2),
            b_data.len(),
        );
        ca.close_early = mode == 3;
        let mut cb = app(
            &b_data,
            setup.b_write,
            setup.b_read,
            setup.read_delay >> 4,
            matches!(mode, 1 | 2),
            a_data.len(),
        );
        let conn = a.connect(now, server, None).expect("connect");
        if setup.opts & 128 != 0 {
            a.set_nodelay(conn, true).expect("nodelay");
        }
        ca.conn = Some(conn);
        let mut link = Link {
            schedule: c,
            flight: BinaryHeap::new(),
            sent: 0,
            exhausted_at: None,
        };
        let (mut wa, mut wb) = (Watch::default(), Watch::default());
        let mut buf = vec![0u8; TX_BUF];
        let mut finished_at: Option<Instant> = None;
        let mut events = 0;
        let mut capped = false;
        loop {
            events += 1;
            if events >= MAX_EVENTS {
                if LIVENESS_CHECKS {
                    panic!(
                        "{MAX_EVENTS} events: a packet storm or a livelock; client {}, server {}",
                        describe(&a, &ca),
                        describe(&b, &cb)
                    );
                }
                capped = true;
                break;
            }
            if cb.conn.is_none() {
                if let Ok(Some(h)) = b.accept(listener) {
                    if setup.opts & 128 != 0 {
                        let _ = b.set_nodelay(h, true);
                    }
                    cb.conn = Some(h);
                }
            }
            ca.step(&mut a, now);
            cb.step(&mut b, now);
            flush(&mut a, &mut link, now, true, &mut buf);
            flush(&mut b, &mut link, now, false, &mut buf);
            check_stack(&a);
            check_stack(&b);
            wa.check(&a);
            wb.check(&b);
            check_handles(&a, &ca.conn.into_iter().collect::<Vec<_>>());
            check_handles(&b, &cb.conn.into_iter().collect::<Vec<_>>());
            let gave_up = gave_up(&a, &b);
            if finished_at.is_none() && ca.done() && cb.done() {
                finished_at = Some(now);
            }
            let next = [
                link.next(),
                a.poll_timeout(),
                b.poll_timeout(),
                ca.wake(now),
                cb.wake(now),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else {
                break;
            };
            match (finished_at, link.exhausted_at) {
                (Some(f), _) if next > f + Duration::from_secs(3 * 3600) => break,
                (None, Some(x)) if next > x + Duration::from_secs(6 * 3600) => {
                    assert!(
                        gave_up || !LIVENESS_CHECKS,
                        "no completion 6 h after the link became perfect: client {}, server {}",
                        describe(&a, &ca),
                        describe(&b, &cb)
                    );
                    break;
                }
                _ => {}
            }
            now = now.max(next);
            while link.next().is_some_and(|t| t <= now) {
                let Some(Reverse((_, _, to_b, pkt))) = link.flight.pop() else {
                    break;
                };
                if to_b {
                    b.receive(now, &pkt);
                } else {
                    a.receive(now, &pkt);
                }
            }
            a.handle_timeout(now);
            b.handle_timeout(now);
        }
        let gave_up = gave_up(&a, &b);
        verify(&ca, &cb, &a_data, &b_data, gave_up, finished_at.is_some());
        assert!(
            finished_at.is_some() || gave_up || !LIVENESS_CHECKS,
            "stalled with nothing left to do: client {}, server {}",
            describe(&a, &ca),
            describe(&b, &cb)
        );
        if finished_at.is_none() || capped || ca.error.is_some() || cb.error.is_some() {
            // The other side may legitimately wait forever (no keepalive).
            return;
        }
        for (name, s) in [("client", &a), ("server", &b)] {
            assert_eq!(
                (s.connection_count(), s.time_wait().len()),
                (0, 0),
                "{name}: connections or TIME_WAIT entries left hours after both closed: {:?}",
                s.state_counts()
            );
        }
    }

    /// Whether a connection gave up on retransmissions: a timeout, or a passive connection
    /// that ended in SYN-RECEIVED (the stack counts those under no counter). Even one the
    /// application has released excuses everything after it: its RST may be lost too.
    fn gave_up(a: &Stack, b: &Stack) -> bool {
        a.counters().timeouts + b.counters().timeouts + uncounted_ends(a) + uncounted_ends(b) > 0
    }

    fn describe(s: &Stack, app: &App) -> String {
        let conn = app
            .conn
            .map(|c| s.debug_conn(c).unwrap_or_else(|e| format!("{e:?}")));
        format!(
            "sent {}/{} got {} eof {} shut {} closed {} error {:?} conn {:?} states {:?}",
            app.sent,
            app.out.len(),
            app.got.len(),
            app.eof,
            app.shut,
            app.closed,
            app.error,
            conn,
            s.state_counts()
        )
    }

    /// What each side received is a prefix of what the other sent. An application error
    /// only when a connection gave up; when both finished without one, each got everything.
    fn verify(ca: &App, cb: &App, a_data: &[u8], b_data: &[u8], gave_up: bool, finished: bool) {
        assert!(
            b_data.starts_with(&ca.got),
            "the client received bytes the server did not send (at {} of {})",
            first_difference(&ca.got, b_data),
            ca.got.len()
        );
        assert!(
            a_data.starts_with(&cb.got),
            "the server received bytes the client did not send (at {} of {})",
            first_difference(&cb.got, a_data),
            cb.got.len()
        );
        let errors = (ca.error, cb.error);
        assert!(
            errors == (None, None) || gave_up,
            "a connection failed without either side giving up: {errors:?}"
        );
        if finished && errors == (None, None) {
            assert_eq!(
                ca.got.len(),
                b_data.len(),
                "the client did not get everything"
            );
            assert_eq!(
                cb.got.len(),
                a_data.len(),
                "the server did not get everything"
            );
        }
    }

    fn first_difference(a: &[u8], b: &[u8]) -> usize {
        a.iter().zip(b).take_while(|(x, y)| x == y).count()
    }

    fn input(setup: &Setup, schedule: &[u8]) -> Vec<u8> {
        let mut e = Enc::default();
        setup.write(&mut e);
        e.bytes(schedule);
        e.0
    }

    /// The seed corpus: clean transfers in each close order and family, loss, reordering,
    /// duplication, late packets, small MSS and windows with slow readers, options off.
    pub fn seeds() -> Vec<(String, Vec<u8>)> {
        let base = Setup {
            a_len: 20_000,
            b_len: 30_000,
            salt: 5,
            a_write: 4096,
            b_write: 1000,
            a_read: 4096,
            b_read: 8192,
            ..Setup::default()
        };
        let with = |f: &dyn Fn(&mut Setup)| {
            let mut s = base.clone();
            f(&mut s);
            s
        };
        let mut out = Vec::new();
        let mut add = |name: &str, s: Setup, schedule: Vec<u8>| {
            out.push((name.to_string(), input(&s, &schedule)));
        };
        add("clean-client-closes-first", base.clone(), vec![]);
        add(
            "clean-server-closes-first",
            with(&|s| s.shape = 1 << 6),
            vec![],
        );
        add(
            "clean-simultaneous-close",
            with(&|s| s.shape = 2 << 6),
            vec![],
        );
        add(
            "clean-client-closes-early",
            with(&|s| s.shape = 3 << 6),
            vec![],
        );
        add("v6", with(&|s| s.opts = 64), vec![]);
        add(
            "empty-both-ways",
            with(&|s| {
                s.a_len = 0;
                s.b_len = 0;
            }),
            vec![],
        );
        add("syn-lost-three-times", base.clone(), vec![1, 1, 1]);
        add("every-fourth-lost", base.clone(), [0, 0, 0, 1].repeat(40));
        add(
            "reordered",
            base.clone(),
            (0..120u32).map(|i| (((i * 37) % 64) << 2) as u8).collect(),
        );
        add("duplicated", base.clone(), [2, 6, 10, 0].repeat(40));
        add("late-past-rto", base.clone(), [0, 3, 0, 0, 0x7b].repeat(30));
        add(
            "small-mss-small-windows-slow-readers",
            with(&|s| {
                s.shape = 3 | 3 << 2 | 3 << 4;
                s.a_len = 6000;
                s.b_len = 5000;
                s.read_delay = 0x9f;
            }),
            [0, 0, 1, 0, 2, 0, 0, 0].repeat(20),
        );
        add(
            "no-options-nodelay",
            with(&|s| {
                s.opts = 0x3f | 0x80;
                s.a_write = 7;
                s.b_write = 13;
            }),
            [0, 4, 8, 1].repeat(30),
        );
        add(
            "fin-lost",
            with(&|s| {
                s.a_len = 100;
                s.b_len = 100;
            }),
            vec![0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 0],
        );
        out
    }
}
