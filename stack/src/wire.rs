//! Packet parsing and emission: IPv4, IPv6 and TCP by hand on raw bytes (the per-packet
//! path), ICMP echo through `smoltcp::wire`.
//!
//! This module owns the translation between bytes and the stack's own segment structs. It
//! validates every length once, so nothing downstream can index out of bounds, and it never
//! panics on any input: a packet is either parsed or rejected with a [`DropReason`].
//!
//! Both directions have a fast path for what nearly every packet is, IPv4 without IP
//! options carrying TCP with no options, timestamps, or a SYN's usual options, and a
//! general path for everything else. The fast paths read and write the headers at fixed
//! offsets as 32- and 64-bit words and checksum those words from registers; the unit tests
//! hold each against its general path, byte for byte and drop reason for drop reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet};

use crate::checksum::{self, Checksum};
use crate::seq::SeqNum;
use crate::tuple::FourTuple;

/// Why an incoming packet was dropped. Every drop is counted under one of these.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum DropReason {
    /// Not an IPv4 or IPv6 packet, or shorter than its IP header.
    MalformedIp,
    /// The IPv4 header checksum is wrong.
    BadIpChecksum,
    /// An IP fragment; fourtuple does not reassemble.
    Fragment,
    /// The destination is not one of this host's addresses.
    NotOurAddress,
    /// A transport protocol the stack does not serve.
    UnsupportedProtocol,
    /// TCP header too short or data offset out of range.
    MalformedTcp,
    /// TCP checksum mismatch.
    BadTcpChecksum,
    /// Source or destination port 0, or a broadcast/multicast/unspecified source.
    BadAddress,
    /// Malformed ICMP or ICMPv6.
    MalformedIcmp,
    /// ICMP that is not an echo request (or ping answering is off).
    IcmpIgnored,
    /// IPv6 extension headers are not handled.
    Ipv6ExtensionHeader,
}

impl DropReason {
    /// All reasons, for iteration in counters.
    pub const ALL: [DropReason; 11] = [
        DropReason::MalformedIp,
        DropReason::BadIpChecksum,
        DropReason::Fragment,
        DropReason::NotOurAddress,
        DropReason::UnsupportedProtocol,
        DropReason::MalformedTcp,
        DropReason::BadTcpChecksum,
        DropReason::BadAddress,
        DropReason::MalformedIcmp,
        DropReason::IcmpIgnored,
        DropReason::Ipv6ExtensionHeader,
    ];

    /// A stable snake_case name for counters and JSON.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::MalformedIp => "malformed_ip",
            DropReason::BadIpChecksum => "bad_ip_checksum",
            DropReason::Fragment => "fragment",
            DropReason::NotOurAddress => "not_our_address",
            DropReason::UnsupportedProtocol => "unsupported_protocol",
            DropReason::MalformedTcp => "malformed_tcp",
            DropReason::BadTcpChecksum => "bad_tcp_checksum",
            DropReason::BadAddress => "bad_address",
            DropReason::MalformedIcmp => "malformed_icmp",
            DropReason::IcmpIgnored => "icmp_ignored",
            DropReason::Ipv6ExtensionHeader => "ipv6_extension_header",
        }
    }
}

/// TCP flags the state machine looks at.
#[derive(Copy, Clone, PartialEq, Eq, Default, Debug)]
pub struct Flags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
    /// PSH.
    pub psh: bool,
}

/// The TCP options fourtuple understands, as parsed from one segment.
#[derive(Copy, Clone, PartialEq, Eq, Default, Debug)]
pub struct TcpOpts {
    /// MSS option (only meaningful on SYN).
    pub mss: Option<u16>,
    /// Window scale shift (only meaningful on SYN).
    pub wscale: Option<u8>,
    /// SACK-permitted (only meaningful on SYN).
    pub sack_permitted: bool,
    /// Timestamps (TSval, TSecr).
    pub timestamp: Option<(u32, u32)>,
    /// SACK blocks, left and right edges.
    pub sack: [Option<(SeqNum, SeqNum)>; 4],
    /// Some option was malformed; the rest of the option list was ignored.
    pub malformed: bool,
}

/// A parsed TCP segment. `tuple.local` is the destination (this host), `tuple.remote` the
/// source.
#[derive(Clone, Debug)]
pub struct Segment<'a> {
    /// The connection it belongs to, from this host's point of view.
    pub tuple: FourTuple,
    /// SEG.SEQ.
    pub seq: SeqNum,
    /// SEG.ACK (valid when `flags.ack`).
    pub ack: SeqNum,
    /// Flags.
    pub flags: Flags,
    /// SEG.WND as carried (unscaled).
    pub window: u16,
    /// Options.
    pub opts: TcpOpts,
    /// Payload bytes.
    pub payload: &'a [u8],
}

impl Segment<'_> {
    /// SEG.LEN: payload plus one for each of SYN and FIN.
    pub fn seg_len(&self) -> u32 {
        self.payload.len() as u32 + self.flags.syn as u32 + self.flags.fin as u32
    }
}

/// An ICMP echo request to answer.
#[derive(Clone, Debug)]
pub struct EchoRequest<'a> {
    /// Who asked (the reply goes there).
    pub src: IpAddr,
    /// Which of our addresses was asked.
    pub dst: IpAddr,
    /// Identifier.
    pub ident: u16,
    /// Sequence number.
    pub seq_no: u16,
    /// Payload to echo.
    pub data: &'a [u8],
}

/// What an incoming IP packet turned out to be.
#[derive(Clone, Debug)]
pub enum Incoming<'a> {
    /// A TCP segment.
    Tcp(Segment<'a>),
    /// An ICMP or ICMPv6 echo request.
    Echo(EchoRequest<'a>),
}

fn bad_source(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_unspecified() || a.is_broadcast() || a.is_multicast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
    }
}

/// Under `cfg(fuzzing)` (cargo fuzz) checksums are not verified, as smoltcp did before this
/// parser replaced it, so that fuzzers reach past them; the fuzz targets drop packets with
/// bad checksums themselves, so corpora replay the same way in ordinary builds.
const VERIFY_CHECKSUMS: bool = !cfg!(fuzzing);

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn addr4(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn addr6(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

/// Parses one IP packet. `is_local` says whether a destination address is ours.
#[inline]
pub fn parse<'a>(
    packet: &'a [u8],
    is_local: impl Fn(IpAddr) -> bool,
) -> Result<Incoming<'a>, DropReason> {
    parse_with::<true>(packet, is_local)
}

/// [`parse`] for a packet whose transport checksum needs no verification: the device
/// verified it, or the local host built the packet and left the checksum to the device
/// (Linux's `CHECKSUM_PARTIAL`, which a TUN with offloads hands over as is). The IPv4
/// header checksum is still checked; everything else is as in [`parse`].
#[inline]
pub fn parse_trusted<'a>(
    packet: &'a [u8],
    is_local: impl Fn(IpAddr) -> bool,
) -> Result<Incoming<'a>, DropReason> {
    parse_with::<false>(packet, is_local)
}

/// [`parse`], verifying the TCP checksum when `TCP_SUM`.
#[inline(always)]
fn parse_with<'a, const TCP_SUM: bool>(
    packet: &'a [u8],
    is_local: impl Fn(IpAddr) -> bool,
) -> Result<Incoming<'a>, DropReason> {
    // Nearly every packet is unfragmented TCP in IPv4 without IP options, and its TCP
    // options are one of the layouts of `common_options`. Those are parsed from fixed
    // offsets; everything else takes the general path. The shape checked here implies that
    // every check the general path makes before the IP checksum passes, so both paths make
    // the same checks in the same order from there on and drop for the same reasons (TCP
    // options never drop a packet).
    let Some(h) = packet.first_chunk::<FAST_HDRS>() else {
        return parse_general::<TCP_SUM>(packet, is_local);
    };
    // The shape is tested on the words the header checksum sums anyway, rather than byte by
    // byte: the compiler would otherwise rebuild the words from the bytes it had tested.
    let w0 = ne64(h, 0);
    let w1 = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let hl = usize::from(h[32] >> 4) * 4;
    if w0 & SHAPE0.0 != SHAPE0.1
        || w1 & SHAPE1.0 != SHAPE1.1
        || total > packet.len()
        || IPV4_HDR + hl > total
    {
        return parse_general::<TCP_SUM>(packet, is_local);
    }
    let packet = &packet[..total];
    let Some((opts, opts_sum)) = common_options(packet, hl) else {
        return parse_general::<TCP_SUM>(packet, is_local);
    };
    parse_v4_tcp::<TCP_SUM>(h, w0, w1, packet, hl, opts, opts_sum, is_local)
}

/// IPv4 and TCP headers without options: the fast path's one bounds check.
const FAST_HDRS: usize = IPV4_HDR + 20;

/// Mask and value of the IPv4 header's first 8 bytes, loaded in native order, on the fast
/// path: version 4 with IHL 5, no more-fragments flag and a zero offset (DF alone is not a
/// fragment).
const SHAPE0: (u64, u64) = (
    u64::from_ne_bytes([0xff, 0, 0, 0, 0, 0, 0x3f, 0xff]),
    u64::from_ne_bytes([0x45, 0, 0, 0, 0, 0, 0, 0]),
);

/// Mask and value of the IPv4 header's bytes 8..12 (TTL, protocol, checksum): TCP.
const SHAPE1: (u32, u32) = (
    u32::from_ne_bytes([0, 0xff, 0, 0]),
    u32::from_ne_bytes([0, PROTO_TCP, 0, 0]),
);

/// Loads 8 bytes of `b` at `at` in native order, for checksumming.
#[inline(always)]
fn ne64(b: &[u8; FAST_HDRS], at: usize) -> u64 {
    u64::from_ne_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}

/// The TCP options of an IPv4 + TCP `packet` with a `hl`-byte TCP header (both headers
/// present), if they are one of the layouts [`parse_options`] has fast paths for, and the
/// plain sum of their 32-bit words in native order, for the checksum. Compared and summed
/// four bytes at a time.
#[inline(always)]
fn common_options(packet: &[u8], hl: usize) -> Option<(TcpOpts, u64)> {
    let word = |at: usize| -> Option<u32> {
        let b = packet.get(at..)?.first_chunk::<4>()?;
        Some(u32::from_ne_bytes(*b))
    };
    let be = |w: u32| u32::from_be_bytes(w.to_ne_bytes());
    const TS: u32 = u32::from_ne_bytes([1, 1, 8, 10]);
    const SACK_OK_TS: u32 = u32::from_ne_bytes([4, 2, 8, 10]);
    const KIND_LEN: u32 = u32::from_ne_bytes([0xff, 0xff, 0, 0]);
    const MSS: u32 = u32::from_ne_bytes([2, 4, 0, 0]);
    const WS: u32 = u32::from_ne_bytes([1, 3, 3, 0]);
    const WS_MASK: u32 = u32::from_ne_bytes([0xff, 0xff, 0xff, 0]);
    let sum = |words: &[u32]| words.iter().map(|&w| u64::from(w)).sum::<u64>();
    match hl {
        20 => Some((TcpOpts::default(), 0)),
        32 if word(40)? == TS => {
            let (v, e) = (word(44)?, word(48)?);
            let opts = TcpOpts {
                timestamp: Some((be(v), be(e))),
                ..TcpOpts::default()
            };
            Some((opts, sum(&[TS, v, e])))
        }
        40 if word(40)? & KIND_LEN == MSS => {
            let (m, a, b, c, e) = (word(40)?, word(44)?, word(48)?, word(52)?, word(56)?);
            // fourtuple's SYN layout (window scale first) or Linux's (window scale last).
            let (ws, ts) = if a & WS_MASK == WS && b == SACK_OK_TS {
                (a, (c, e))
            } else if a == SACK_OK_TS && e & WS_MASK == WS {
                (e, (b, c))
            } else {
                return None;
            };
            let opts = TcpOpts {
                mss: Some(be(m) as u16),
                wscale: Some(ws.to_ne_bytes()[3]),
                sack_permitted: true,
                timestamp: Some((be(ts.0), be(ts.1))),
                ..TcpOpts::default()
            };
            Some((opts, sum(&[m, a, b, c, e])))
        }
        _ => None,
    }
}

/// [`Flags`] for each value of the low five flag bits (FIN, SYN, RST, PSH, ACK): one
/// five-byte copy instead of five shifts and masks.
const FLAGS: [Flags; 32] = {
    let mut t = [Flags {
        syn: false,
        ack: false,
        fin: false,
        rst: false,
        psh: false,
    }; 32];
    let mut f = 0;
    while f < 32 {
        t[f] = Flags {
            fin: f & 0x01 != 0,
            syn: f & 0x02 != 0,
            rst: f & 0x04 != 0,
            psh: f & 0x08 != 0,
            ack: f & 0x10 != 0,
        };
        f += 1;
    }
    t
};

/// The rest of [`parse`] for an unfragmented IPv4 packet with a 20-byte header carrying
/// TCP with a `hl`-byte header, whose options are `opts` and sum to `opts_sum`: its first
/// 40 bytes are `h`, whose first 12 are also loaded as `w0` and `w1`, and `packet` is cut
/// to the total length, which covers both headers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn parse_v4_tcp<'a, const TCP_SUM: bool>(
    h: &[u8; FAST_HDRS],
    w0: u64,
    w1: u32,
    packet: &'a [u8],
    hl: usize,
    opts: TcpOpts,
    opts_sum: u64,
    is_local: impl Fn(IpAddr) -> bool,
) -> Result<Incoming<'a>, DropReason> {
    // The addresses are loaded once, for the header checksum and for the pseudo-header.
    let addrs = ne64(h, 12);
    if VERIFY_CHECKSUMS {
        let ip = checksum::add_carry(checksum::add_carry(w0, u64::from(w1)), addrs);
        if !checksum::folds_to_ones(ip) {
            return Err(DropReason::BadIpChecksum);
        }
    }
    let src = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
    let dst = Ipv4Addr::from(u32::from_be_bytes([h[16], h[17], h[18], h[19]]));
    if !is_local(IpAddr::V4(dst)) {
        return Err(DropReason::NotOurAddress);
    }
    let data = packet.get(IPV4_HDR..).unwrap_or_default();
    let payload = data.get(hl..).unwrap_or_default();
    if VERIFY_CHECKSUMS && TCP_SUM {
        // The pseudo-header (the addresses, then zero, the protocol and the TCP length,
        // which fits 16 bits as the IP total length does), the fixed header and the options
        // from the words already loaded, and only the payload from memory.
        let len = (data.len() as u16).to_be_bytes();
        let proto_len = u32::from_ne_bytes([0, PROTO_TCP, len[0], len[1]]);
        let last = u32::from_ne_bytes([h[36], h[37], h[38], h[39]]);
        // Sums of a few 32-bit words cannot overflow 64 bits.
        let words = u64::from(proto_len) + u64::from(last) + opts_sum;
        let sum = checksum::add_carry(addrs, words);
        let sum = checksum::add_carry(sum, ne64(h, 20));
        let sum = checksum::add_carry(sum, ne64(h, 28));
        // Most segments carry no payload: skip the summing loop's length tests for them.
        let sum = if payload.is_empty() {
            sum
        } else {
            checksum::add_carry(sum, checksum::native_sum(payload))
        };
        if !checksum::folds_to_ones(sum) {
            return Err(DropReason::BadTcpChecksum);
        }
    }
    let (sport, dport) = (
        u16::from_be_bytes([h[20], h[21]]),
        u16::from_be_bytes([h[22], h[23]]),
    );
    // Unspecified, broadcast or multicast, as bad_source on an IPv4 address.
    if sport == 0 || dport == 0 || src == 0 || src == u32::MAX || src >> 28 == 0xe {
        return Err(DropReason::BadAddress);
    }
    Ok(Incoming::Tcp(Segment {
        tuple: FourTuple::new(
            SocketAddr::new(IpAddr::V4(dst), dport),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::from(src)), sport),
        ),
        seq: SeqNum(u32::from_be_bytes([h[24], h[25], h[26], h[27]])),
        ack: SeqNum(u32::from_be_bytes([h[28], h[29], h[30], h[31]])),
        flags: FLAGS[usize::from(h[33] & 0x1f)],
        window: u16::from_be_bytes([h[34], h[35]]),
        opts,
        payload,
    }))
}

/// [`parse`] for every packet but the common shape of its fast path.
#[inline(never)]
fn parse_general<'a, const TCP_SUM: bool>(
    packet: &'a [u8],
    is_local: impl Fn(IpAddr) -> bool,
) -> Result<Incoming<'a>, DropReason> {
    let first = *packet.first().ok_or(DropReason::MalformedIp)?;
    let (src, dst, proto, payload) = match first >> 4 {
        4 => {
            if packet.len() < IPV4_HDR {
                return Err(DropReason::MalformedIp);
            }
            let hl = usize::from(first & 0x0f) * 4;
            let total = usize::from(be16(packet, 2));
            if hl < IPV4_HDR || hl > total || total > packet.len() {
                return Err(DropReason::MalformedIp);
            }
            // total <= packet.len() and hl <= total: both slices below are in bounds.
            let header = &packet[..hl];
            if VERIFY_CHECKSUMS {
                // Summing a constant length lets the compiler unroll the common case.
                let sum = if hl == IPV4_HDR {
                    checksum::sum(&packet[..IPV4_HDR])
                } else {
                    checksum::sum(header)
                };
                if sum != 0xffff {
                    return Err(DropReason::BadIpChecksum);
                }
            }
            // More-fragments or a nonzero offset; DF (0x4000) alone is not a fragment.
            if be16(header, 6) & 0x3fff != 0 {
                return Err(DropReason::Fragment);
            }
            (
                IpAddr::V4(addr4(header, 12)),
                IpAddr::V4(addr4(header, 16)),
                header[9],
                &packet[hl..total],
            )
        }
        6 => {
            if packet.len() < IPV6_HDR {
                return Err(DropReason::MalformedIp);
            }
            let total = IPV6_HDR + usize::from(be16(packet, 4));
            let payload = packet.get(IPV6_HDR..total).ok_or(DropReason::MalformedIp)?;
            let proto = packet[6];
            if proto != PROTO_TCP && proto != PROTO_ICMPV6 {
                return Err(match proto {
                    // Hop-by-hop, routing, fragment and destination options.
                    0 | 43 | 44 | 60 => DropReason::Ipv6ExtensionHeader,
                    _ => DropReason::UnsupportedProtocol,
                });
            }
            (
                IpAddr::V6(addr6(packet, 8)),
                IpAddr::V6(addr6(packet, 24)),
                proto,
                payload,
            )
        }
        _ => return Err(DropReason::MalformedIp),
    };
    if !is_local(dst) {
        return Err(DropReason::NotOurAddress);
    }
    match proto {
        PROTO_TCP => parse_tcp::<TCP_SUM>(src, dst, payload),
        PROTO_ICMP if src.is_ipv4() => parse_icmpv4(src, dst, payload),
        PROTO_ICMPV6 if src.is_ipv6() => parse_icmpv6(src, dst, payload),
        _ => Err(DropReason::UnsupportedProtocol),
    }
}

/// The 4-tuple of `packet` (an IP packet, seen from the receiving host) if it looks like a
/// SYN without ACK: a connection request, the segment that finds a 4-tuple in TIME-WAIT.
///
/// A look ahead for [`Stack::receive_batch`](crate::Stack::receive_batch), which prefetches
/// the TIME_WAIT lines these will read; nothing is verified (no checksums, addresses or
/// lengths beyond what the reads need), so a `Some` is a guess that [`parse`] decides.
/// Whenever `parse` accepts a SYN without ACK, this gives its tuple.
pub fn peek_syn_tuple(packet: &[u8]) -> Option<FourTuple> {
    let first = *packet.first()?;
    let (src, dst, tcp) = match first >> 4 {
        4 => {
            let hl = usize::from(first & 0x0f) * 4;
            let header = packet.get(..IPV4_HDR)?;
            if header[9] != PROTO_TCP || be16(header, 6) & 0x3fff != 0 {
                return None;
            }
            (
                IpAddr::V4(addr4(header, 12)),
                IpAddr::V4(addr4(header, 16)),
                packet.get(hl.max(IPV4_HDR)..)?,
            )
        }
        6 => {
            let header = packet.get(..IPV6_HDR)?;
            if header[6] != PROTO_TCP {
                return None;
            }
            (
                IpAddr::V6(addr6(header, 8)),
                IpAddr::V6(addr6(header, 24)),
                &packet[IPV6_HDR..],
            )
        }
        _ => return None,
    };
    let t = tcp.get(..14)?;
    if t[13] & 0x12 != 0x02 {
        return None;
    }
    Some(FourTuple::new(
        SocketAddr::new(dst, be16(t, 2)),
        SocketAddr::new(src, be16(t, 0)),
    ))
}

/// Builds the `Incoming` itself rather than a `Segment` to wrap: the 168-byte result is then
/// written once, in place, instead of being copied into the enum.
fn parse_tcp<'a, const TCP_SUM: bool>(
    src: IpAddr,
    dst: IpAddr,
    data: &'a [u8],
) -> Result<Incoming<'a>, DropReason> {
    if data.len() < 20 {
        return Err(DropReason::MalformedTcp);
    }
    let hl = usize::from(data[12] >> 4) * 4;
    if hl < 20 || hl > data.len() {
        return Err(DropReason::MalformedTcp);
    }
    if VERIFY_CHECKSUMS && TCP_SUM {
        // The IP layer bounds a TCP segment to 65535 bytes, so its length fits the field.
        let len = data.len() as u16;
        let mut sum = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_header_v4(s, d, PROTO_TCP, len),
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                checksum::pseudo_header_v6(s, d, PROTO_TCP, u32::from(len))
            }
            _ => return Err(DropReason::BadTcpChecksum),
        };
        sum.add_bytes(data);
        if sum.sum() != 0xffff {
            return Err(DropReason::BadTcpChecksum);
        }
    }
    let (sport, dport) = (be16(data, 0), be16(data, 2));
    if sport == 0 || dport == 0 || bad_source(src) {
        return Err(DropReason::BadAddress);
    }
    let f = data[13];
    Ok(Incoming::Tcp(Segment {
        tuple: FourTuple::new(SocketAddr::new(dst, dport), SocketAddr::new(src, sport)),
        seq: SeqNum(be32(&data[4..8])),
        ack: SeqNum(be32(&data[8..12])),
        flags: Flags {
            fin: f & 0x01 != 0,
            syn: f & 0x02 != 0,
            rst: f & 0x04 != 0,
            psh: f & 0x08 != 0,
            ack: f & 0x10 != 0,
        },
        window: be16(data, 14),
        opts: parse_options(&data[20..hl]),
        payload: &data[hl..],
    }))
}

/// Parses a TCP option list. Malformed options stop the walk and set `malformed`; what
/// was parsed before stays (Linux behaves the same way: a bad length ends option parsing).
#[inline]
pub fn parse_options(bytes: &[u8]) -> TcpOpts {
    // Fast paths for the layouts seen on nearly every segment: none, timestamps after the
    // handshake, and the SYNs below. Anything else takes the general walk.
    match *bytes {
        [] => TcpOpts::default(),
        [1, 1, 8, 10, v0, v1, v2, v3, e0, e1, e2, e3] => TcpOpts {
            timestamp: Some((
                u32::from_be_bytes([v0, v1, v2, v3]),
                u32::from_be_bytes([e0, e1, e2, e3]),
            )),
            ..TcpOpts::default()
        },
        // The two SYN layouts of a connection between fourtuple and Linux: fourtuple's
        // (MSS, window scale, SACK-permitted + timestamps) and Linux's (MSS,
        // SACK-permitted + timestamps, window scale).
        [2, 4, m0, m1, 1, 3, 3, ws, 4, 2, 8, 10, v0, v1, v2, v3, e0, e1, e2, e3]
        | [2, 4, m0, m1, 4, 2, 8, 10, v0, v1, v2, v3, e0, e1, e2, e3, 1, 3, 3, ws] => TcpOpts {
            mss: Some(u16::from_be_bytes([m0, m1])),
            wscale: Some(ws),
            sack_permitted: true,
            timestamp: Some((
                u32::from_be_bytes([v0, v1, v2, v3]),
                u32::from_be_bytes([e0, e1, e2, e3]),
            )),
            ..TcpOpts::default()
        },
        _ => parse_options_slow(bytes),
    }
}

/// [`parse_options`] for anything but the common layouts: SACK blocks, other stacks' SYNs.
#[inline(never)]
fn parse_options_slow(bytes: &[u8]) -> TcpOpts {
    let mut opts = TcpOpts::default();
    let mut i = 0;
    let mut sacks = 0;
    while i < bytes.len() {
        let kind = bytes[i];
        match kind {
            0 => break,
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = bytes.get(i + 1) else {
            opts.malformed = true;
            break;
        };
        let len = len as usize;
        if len < 2 || i + len > bytes.len() {
            opts.malformed = true;
            break;
        }
        let data = &bytes[i + 2..i + len];
        match (kind, len) {
            (2, 4) => opts.mss = Some(u16::from_be_bytes([data[0], data[1]])),
            (3, 3) => opts.wscale = Some(data[0]),
            (4, 2) => opts.sack_permitted = true,
            (5, l) if l >= 10 && (l - 2) % 8 == 0 => {
                for block in data.chunks_exact(8) {
                    if sacks < opts.sack.len() {
                        opts.sack[sacks] =
                            Some((SeqNum(be32(&block[..4])), SeqNum(be32(&block[4..]))));
                        sacks += 1;
                    }
                }
            }
            (8, 10) => opts.timestamp = Some((be32(&data[..4]), be32(&data[4..8]))),
            // A known option with the wrong length is malformed (RFC 9293 §3.1 says a
            // receiver must be prepared for any length; we stop rather than guess).
            (2, _) | (3, _) | (4, _) | (5, _) | (8, _) => {
                opts.malformed = true;
                break;
            }
            _ => {}
        }
        i += len;
    }
    opts
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn parse_icmpv4<'a>(src: IpAddr, dst: IpAddr, data: &'a [u8]) -> Result<Incoming<'a>, DropReason> {
    let icmp = Icmpv4Packet::new_checked(data).map_err(|_| DropReason::MalformedIcmp)?;
    if !icmp.verify_checksum() {
        return Err(DropReason::MalformedIcmp);
    }
    if icmp.msg_type() != Icmpv4Message::EchoRequest || icmp.msg_code() != 0 {
        return Err(DropReason::IcmpIgnored);
    }
    Ok(Incoming::Echo(EchoRequest {
        src,
        dst,
        ident: icmp.echo_ident(),
        seq_no: icmp.echo_seq_no(),
        data: icmp.data(),
    }))
}

fn parse_icmpv6<'a>(src: IpAddr, dst: IpAddr, data: &'a [u8]) -> Result<Incoming<'a>, DropReason> {
    let icmp = Icmpv6Packet::new_checked(data).map_err(|_| DropReason::MalformedIcmp)?;
    let (IpAddr::V6(s6), IpAddr::V6(d6)) = (src, dst) else {
        return Err(DropReason::MalformedIcmp);
    };
    if !icmp.verify_checksum(&s6, &d6) {
        return Err(DropReason::MalformedIcmp);
    }
    if icmp.msg_type() != Icmpv6Message::EchoRequest || icmp.msg_code() != 0 {
        return Err(DropReason::IcmpIgnored);
    }
    Ok(Incoming::Echo(EchoRequest {
        src,
        dst,
        ident: icmp.echo_ident(),
        seq_no: icmp.echo_seq_no(),
        data: icmp.payload(),
    }))
}

/// A TCP segment to emit.
#[derive(Clone, Debug, Default)]
pub struct OutSegment {
    /// SEG.SEQ.
    pub seq: SeqNum,
    /// SEG.ACK (sent when `flags.ack`).
    pub ack: SeqNum,
    /// Flags.
    pub flags: Flags,
    /// Window field, already scaled down.
    pub window: u16,
    /// MSS option (SYN only).
    pub mss: Option<u16>,
    /// Window scale option (SYN only).
    pub wscale: Option<u8>,
    /// SACK-permitted option (SYN only).
    pub sack_permitted: bool,
    /// Timestamps (TSval, TSecr).
    pub timestamp: Option<(u32, u32)>,
    /// SACK blocks to report (at most 3 with timestamps, 4 without).
    pub sack: [Option<(SeqNum, SeqNum)>; 4],
}

const IPV4_HDR: usize = 20;
const IPV6_HDR: usize = 40;

/// Bytes of IP + TCP header this segment will need (before payload).
pub fn header_len(tuple: &FourTuple, seg: &OutSegment) -> usize {
    let ip = if tuple.local.is_ipv4() {
        IPV4_HDR
    } else {
        IPV6_HDR
    };
    ip + 20 + options_len(seg)
}

/// Bytes of MSS, window scale, SACK-permitted and timestamps options.
fn options_len_without_sack(seg: &OutSegment) -> usize {
    let mut n = 0;
    if seg.mss.is_some() {
        n += 4;
    }
    if seg.wscale.is_some() {
        n += 4; // NOP + 3
    }
    n + match (seg.sack_permitted, seg.timestamp.is_some()) {
        (true, true) | (false, true) => 12,
        (true, false) => 4,
        (false, false) => 0,
    }
}

fn options_len(seg: &OutSegment) -> usize {
    let n = options_len_without_sack(seg);
    let blocks = seg.sack.iter().filter(|b| b.is_some()).count();
    let room = (40usize - n).saturating_sub(4) / 8;
    let blocks = blocks.min(room);
    if blocks > 0 {
        n + 4 + blocks * 8 // NOP NOP kind len
    } else {
        n
    }
}

/// Writes the options as the 32-bit words they all pack into and returns the plain sum of
/// those words, which is their one's-complement sum before folding (2^16 ≡ 1), so the
/// checksum needs no second pass over them.
fn write_options(seg: &OutSegment, out: &mut [u8]) -> u64 {
    let mut words = out.chunks_exact_mut(4);
    let mut sum = 0u64;
    let mut put = |w: u32| {
        if let Some(o) = words.next() {
            o.copy_from_slice(&w.to_be_bytes());
            sum += u64::from(w);
        }
    };
    if let Some(mss) = seg.mss {
        put(0x0204_0000 | u32::from(mss));
    }
    if let Some(ws) = seg.wscale {
        put(0x0103_0300 | u32::from(ws));
    }
    match (seg.sack_permitted, seg.timestamp) {
        (true, Some((v, e))) => {
            // SACK-permitted followed by timestamps packs into 12 bytes, as Linux sends it.
            put(0x0402_080a);
            put(v);
            put(e);
        }
        (true, None) => put(0x0101_0402),
        (false, Some((v, e))) => {
            put(0x0101_080a);
            put(v);
            put(e);
        }
        (false, None) => {}
    }
    let used = options_len_without_sack(seg);
    let room = (40usize - used).saturating_sub(4) / 8;
    let n = seg.sack.iter().filter(|b| b.is_some()).count().min(room);
    if n > 0 {
        put(0x0101_0500 | (2 + n as u32 * 8));
        for (l, r) in seg.sack.iter().flatten().take(n) {
            put(l.raw());
            put(r.raw());
        }
    }
    debug_assert!(words.next().is_none());
    sum
}

/// Writes an IP + TCP packet into `buf`, copying `payload` (given as up to two slices, as
/// a ring buffer hands them out). Returns the packet length, or None when `buf` is too small
/// (or the tuple mixes address families, which connect and listen never let happen).
pub fn emit_tcp(
    buf: &mut [u8],
    tuple: &FourTuple,
    seg: &OutSegment,
    payload: (&[u8], &[u8]),
) -> Option<usize> {
    // IPv4 with the option layouts of nearly every segment (see `fast_options_len`) is
    // written from fixed offsets; anything else takes the general path.
    if let (SocketAddr::V4(l), SocketAddr::V4(r)) = (&tuple.local, &tuple.remote) {
        if let Some(opt_len) = fast_options_len(seg) {
            return emit_v4(buf, l, r, seg, opt_len, payload);
        }
    }
    emit_general(buf, tuple, seg, payload)
}

/// The length of `seg`'s options if they are one of the layouts [`emit_tcp`] writes on its
/// fast path, exactly as [`write_options`] would: none; timestamps (NOP, NOP, timestamps);
/// and fourtuple's SYN (MSS, NOP + window scale, SACK-permitted + timestamps).
#[inline(always)]
fn fast_options_len(seg: &OutSegment) -> Option<usize> {
    // One test per block: the compiler vectorises `iter().all()` into a dozen instructions.
    if seg.sack[0].is_some() || seg.sack[1].is_some() {
        return None;
    }
    if seg.sack[2].is_some() || seg.sack[3].is_some() {
        return None;
    }
    match (seg.mss, seg.wscale, seg.sack_permitted, seg.timestamp) {
        (None, None, false, None) => Some(0),
        (None, None, false, Some(_)) => Some(12),
        (Some(_), Some(_), true, Some(_)) => Some(20),
        _ => None,
    }
}

/// Native-order view of four bytes, the unit the options and the checksum work in.
#[inline(always)]
fn ne32(b: [u8; 4]) -> u32 {
    u32::from_ne_bytes(b)
}

/// [`emit_tcp`] for IPv4 with `opt_len` bytes of options in a layout of
/// [`fast_options_len`]. Every header word is built in native byte order, stored once and
/// summed from the register for both checksums, so no byte of the headers is read back;
/// only the payload is summed from memory, as it is copied.
#[inline(always)]
fn emit_v4(
    buf: &mut [u8],
    local: &std::net::SocketAddrV4,
    remote: &std::net::SocketAddrV4,
    seg: &OutSegment,
    opt_len: usize,
    payload: (&[u8], &[u8]),
) -> Option<usize> {
    let hdr_len = 20 + opt_len;
    let data_len = payload.0.len() + payload.1.len();
    // The limits of the general path: a TCP length that fits 16 bits, a buffer that fits
    // the packet. Tested in this form, the lengths cannot overflow, and the compiler sees
    // that the slicing below is in bounds.
    if data_len > u16::MAX as usize - hdr_len {
        return None;
    }
    let tcp_len = hdr_len + data_len;
    let total = IPV4_HDR + tcp_len;
    let (hdrs, rest) = buf.get_mut(..total)?.split_first_chunk_mut::<FAST_HDRS>()?;
    // IPv4: no options, DF (TCP does its own MSS sizing), TTL 64.
    let tl = (total as u16).to_be_bytes();
    let w0 = u64::from_ne_bytes([0x45, 0, tl[0], tl[1], 0, 0, 0x40, 0]);
    let (src, dst) = (ne32(local.ip().octets()), ne32(remote.ip().octets()));
    let addrs = u64::from(src) + u64::from(dst);
    let ip = checksum::add_carry(w0, addrs + u64::from(ne32([64, PROTO_TCP, 0, 0])));
    let ck = (!checksum::fold_native(ip)).to_ne_bytes();
    hdrs[..8].copy_from_slice(&w0.to_ne_bytes());
    hdrs[8..12].copy_from_slice(&[64, PROTO_TCP, ck[0], ck[1]]);
    hdrs[12..16].copy_from_slice(&src.to_ne_bytes());
    hdrs[16..20].copy_from_slice(&dst.to_ne_bytes());

    // The pseudo-header's protocol and TCP length, then the TCP header's words as they are
    // stored (checksum and urgent pointer zero): plain sums of a few 32-bit words cannot
    // overflow.
    let tl = (tcp_len as u16).to_be_bytes();
    let mut words = u64::from(ne32([0, PROTO_TCP, tl[0], tl[1]]));
    let mut put = |o: &mut [u8], w: u32| {
        o.copy_from_slice(&w.to_ne_bytes());
        words += u64::from(w);
    };
    let (sp, dp) = (local.port().to_be_bytes(), remote.port().to_be_bytes());
    put(&mut hdrs[20..24], ne32([sp[0], sp[1], dp[0], dp[1]]));
    put(&mut hdrs[24..28], ne32(seg.seq.raw().to_be_bytes()));
    let f = &seg.flags;
    let ack = if f.ack { seg.ack.raw() } else { 0 };
    put(&mut hdrs[28..32], ne32(ack.to_be_bytes()));
    let flags = u8::from(f.fin)
        | u8::from(f.syn) << 1
        | u8::from(f.rst) << 2
        | u8::from(f.psh) << 3
        | u8::from(f.ack) << 4;
    let win = seg.window.to_be_bytes();
    put(
        &mut hdrs[32..36],
        ne32([(hdr_len as u8 / 4) << 4, flags, win[0], win[1]]),
    );
    hdrs[36..40].copy_from_slice(&[0; 4]);
    let (o, data) = rest.split_at_mut_checked(opt_len)?;
    let (v, e) = seg.timestamp.unwrap_or_default();
    let (v, e) = (ne32(v.to_be_bytes()), ne32(e.to_be_bytes()));
    if let Some(o) = o.first_chunk_mut::<20>() {
        let m = seg.mss.unwrap_or_default().to_be_bytes();
        put(&mut o[..4], ne32([2, 4, m[0], m[1]]));
        put(
            &mut o[4..8],
            ne32([1, 3, 3, seg.wscale.unwrap_or_default()]),
        );
        put(&mut o[8..12], ne32([4, 2, 8, 10]));
        put(&mut o[12..16], v);
        put(&mut o[16..], e);
    } else if let Some(o) = o.first_chunk_mut::<12>() {
        put(&mut o[..4], ne32([1, 1, 8, 10]));
        put(&mut o[4..8], v);
        put(&mut o[8..], e);
    }
    // The addresses are in the pseudo-header too.
    let mut sum = checksum::add_carry(addrs, words);
    if !data.is_empty() {
        // The payload is summed while it is copied, so its bytes are read once.
        let (d0, d1) = data.split_at_mut_checked(payload.0.len())?;
        sum = checksum::add_carry(sum, checksum::copy_native(d0, payload.0)?);
        if !d1.is_empty() {
            // A second slice starts at an odd offset when the first is odd in length.
            let s1 = checksum::copy_native(d1, payload.1)?;
            let s1 = if payload.0.len() % 2 == 1 {
                u64::from(checksum::fold_native(s1).swap_bytes())
            } else {
                s1
            };
            sum = checksum::add_carry(sum, s1);
        }
    }
    hdrs[36..38].copy_from_slice(&(!checksum::fold_native(sum)).to_ne_bytes());
    Some(total)
}

/// [`emit_tcp`] for IPv6, mixed families and less common options.
#[inline(never)]
fn emit_general(
    buf: &mut [u8],
    tuple: &FourTuple,
    seg: &OutSegment,
    payload: (&[u8], &[u8]),
) -> Option<usize> {
    let opt_len = options_len(seg);
    let hdr_len = 20 + opt_len;
    let tcp_len = hdr_len + payload.0.len() + payload.1.len();
    let (src, dst) = (tuple.local.ip(), tuple.remote.ip());
    let ip_len = if src.is_ipv4() { IPV4_HDR } else { IPV6_HDR };
    let total = ip_len + tcp_len;
    if buf.len() < total || total > u16::MAX as usize + ip_len {
        return None;
    }
    let (ip, rest) = buf.split_at_mut(ip_len);
    let mut sum = write_ip_header(ip, src, dst, PROTO_TCP, tcp_len)?;
    let t = &mut rest[..tcp_len];
    let (h, data) = t.split_at_mut(hdr_len);
    let ack = if seg.flags.ack { seg.ack.raw() } else { 0 };
    let flags = u32::from(seg.flags.fin)
        | u32::from(seg.flags.syn) << 1
        | u32::from(seg.flags.rst) << 2
        | u32::from(seg.flags.psh) << 3
        | u32::from(seg.flags.ack) << 4;
    let fixed = [
        u32::from(tuple.local.port()) << 16 | u32::from(tuple.remote.port()),
        seg.seq.raw(),
        ack,
        ((hdr_len / 4) as u32) << 28 | flags << 16 | u32::from(seg.window),
        0, // checksum (filled in below) and urgent pointer
    ];
    // The header's words are summed as integers while they are written, as the options'.
    let mut words = 0u64;
    for (o, w) in h.chunks_exact_mut(4).zip(fixed) {
        o.copy_from_slice(&w.to_be_bytes());
        words += u64::from(w);
    }
    words += write_options(seg, &mut h[20..]);
    sum.add_be_sum(words);
    // The payload is summed while it is copied, so its bytes are read once.
    // Most segments carry no payload, or only one slice of it.
    if !data.is_empty() {
        let (d0, d1) = data.split_at_mut(payload.0.len());
        sum.copy_and_add(d0, payload.0);
        if !d1.is_empty() {
            sum.copy_and_add(d1, payload.1);
        }
    }
    h[16..18].copy_from_slice(&sum.finish().to_be_bytes());
    Some(total)
}

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_ICMPV6: u8 = 58;

/// Writes the IP header for `payload` bytes of `proto` and returns the transport
/// pseudo-header sum, or None when the addresses are of different families.
#[inline(always)]
fn write_ip_header(
    h: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    payload: usize,
) -> Option<Checksum> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (IPV4_HDR + payload) as u16;
            h[0] = 0x45;
            h[1] = 0;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[4..6].copy_from_slice(&[0, 0]);
            h[6..8].copy_from_slice(&[0x40, 0]); // DF: TCP does its own MSS sizing
            h[8] = 64;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            // The header checksum from the fields, not from the bytes just written: the
            // addresses are summed once for it and for the pseudo-header.
            let mut addrs = Checksum::new();
            addrs.add_u32(s.to_bits());
            addrs.add_u32(d.to_bits());
            let mut ip = addrs;
            ip.add_u16(0x4500);
            ip.add_u16(total);
            ip.add_u16(0x4000);
            ip.add_u16(64 << 8 | u16::from(proto));
            h[10..12].copy_from_slice(&ip.finish().to_be_bytes());
            let mut pseudo = addrs;
            pseudo.add_u16(u16::from(proto));
            pseudo.add_u16(payload as u16);
            Some(pseudo)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            h[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
            h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
            h[6] = proto;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            Some(checksum::pseudo_header_v6(s, d, proto, payload as u32))
        }
        _ => None,
    }
}

/// Writes an echo reply answering `req` into `buf`; returns its length, or None when
/// `buf` is too small.
pub fn emit_echo_reply(buf: &mut [u8], req: &EchoRequest<'_>) -> Option<usize> {
    let icmp_len = 8 + req.data.len();
    let ip_len = if req.src.is_ipv4() {
        IPV4_HDR
    } else {
        IPV6_HDR
    };
    let total = ip_len + icmp_len;
    if buf.len() < total || icmp_len > u16::MAX as usize - ip_len {
        return None;
    }
    let (proto, src, dst) = match req.src {
        IpAddr::V4(_) => (PROTO_ICMP, req.dst, req.src),
        IpAddr::V6(_) => (PROTO_ICMPV6, req.dst, req.src),
    };
    let pseudo = write_ip_header(&mut buf[..ip_len], src, dst, proto, icmp_len)?;
    let body = &mut buf[ip_len..total];
    body[0] = if req.src.is_ipv4() { 0 } else { 129 };
    body[1] = 0;
    body[2..4].copy_from_slice(&[0, 0]);
    body[4..6].copy_from_slice(&req.ident.to_be_bytes());
    body[6..8].copy_from_slice(&req.seq_no.to_be_bytes());
    body[8..].copy_from_slice(req.data);
    // ICMPv6 covers a pseudo-header (RFC 4443 §2.3), ICMPv4 only its own bytes.
    let mut sum = if proto == PROTO_ICMPV6 {
        pseudo
    } else {
        Checksum::new()
    };
    sum.add_bytes(body);
    body[2..4].copy_from_slice(&sum.finish().to_be_bytes());
    Some(total)
}

/// The unspecified address of the family of `addr`.
pub fn unspecified_like(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_fast_path_and_general_path_agree() {
        let ts = [1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 9];
        assert_eq!(parse_options(&ts).timestamp, Some((5, 9)));
        let ts_other_layout = [8, 10, 0, 0, 0, 5, 0, 0, 0, 9, 1, 0];
        assert_eq!(parse_options(&ts_other_layout).timestamp, Some((5, 9)));
    }

    #[test]
    fn syn_options_parse() {
        let o = parse_options(&[
            2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ]);
        assert_eq!(o.mss, Some(1460));
        assert!(o.sack_permitted);
        assert_eq!(o.timestamp, Some((1, 0)));
        assert_eq!(o.wscale, Some(7));
        assert!(!o.malformed);
    }

    #[test]
    fn sack_blocks_parse_up_to_four() {
        let mut b = vec![1, 1, 5, 34];
        for i in 0..4u32 {
            b.extend_from_slice(&(i * 100).to_be_bytes());
            b.extend_from_slice(&(i * 100 + 50).to_be_bytes());
        }
        let o = parse_options(&b);
        assert_eq!(o.sack[3], Some((SeqNum(300), SeqNum(350))));
    }

    #[test]
    fn fast_paths_agree_with_the_general_walk() {
        let layouts: [&[u8]; 4] = [
            &[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 9],
            &[
                2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2,
            ],
            &[
                2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 3, 3, 7,
            ],
            &[],
        ];
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        for _ in 0..200_000 {
            let mut b = layouts[(next() % 4) as usize].to_vec();
            // Up to three edits: a byte changed (often to an option kind or length), one
            // added or one removed, so near misses of each layout are compared too.
            for _ in 0..next() % 4 {
                let r = next();
                let v = [0, 1, 2, 3, 4, 8, 10, r as u8][(r >> 8) as usize % 8];
                match (r >> 16) % 3 {
                    0 if !b.is_empty() => {
                        let i = (r >> 24) as usize % b.len();
                        b[i] = v;
                    }
                    1 => b.insert((r >> 24) as usize % (b.len() + 1), v),
                    _ if !b.is_empty() => {
                        b.remove((r >> 24) as usize % b.len());
                    }
                    _ => {}
                }
            }
            assert_eq!(parse_options(&b), parse_options_slow(&b), "{b:?}");
        }
    }

    /// Recomputes the IPv4 header and TCP checksums of an IPv4 packet (where its lengths
    /// allow), so that mutations reach the checks behind them.
    /// A xorshift64 stream: reproducible random input for the generators below.
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Flags from the low five bits of `f`, written out rather than read from the
    /// parser's table so the generators do not lean on the code they test.
    fn flags_from(f: u64) -> Flags {
        Flags {
            fin: f & 1 != 0,
            syn: f & 2 != 0,
            rst: f & 4 != 0,
            psh: f & 8 != 0,
            ack: f & 16 != 0,
        }
    }

    fn repair_v4(p: &mut [u8]) {
        if p.len() < IPV4_HDR || p[0] >> 4 != 4 {
            return;
        }
        let hl = usize::from(p[0] & 0xf) * 4;
        let total = usize::from(be16(p, 2)).min(p.len());
        if hl < IPV4_HDR || hl > total {
            return;
        }
        p[10..12].copy_from_slice(&[0, 0]);
        let c = !checksum::sum(&p[..hl]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        if total - hl < 18 {
            return;
        }
        let (s, d, proto) = (addr4(p, 12), addr4(p, 16), p[9]);
        let tcp = &mut p[hl..total];
        tcp[16..18].copy_from_slice(&[0, 0]);
        let mut sum = checksum::pseudo_header_v4(s, d, proto, tcp.len() as u16);
        sum.add_bytes(tcp);
        tcp[16..18].copy_from_slice(&sum.finish().to_be_bytes());
    }

    /// The fast path against the general one on IPv4 TCP packets of the shapes it takes,
    /// and near misses of them: the same result, down to the drop reason, on every input.
    #[test]
    fn fast_path_agrees_with_the_general_path() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        let ours = Ipv4Addr::new(192, 0, 2, 2);
        for round in 0..300_000u32 {
            let r = next();
            let src = match r % 8 {
                0 => Ipv4Addr::from(next() as u32),
                1 => [Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST][(r >> 3) as usize % 2],
                2 => Ipv4Addr::new(224 + (r >> 3) as u8 % 16, 0, 0, 1),
                _ => Ipv4Addr::new(192, 0, 2, 1),
            };
            let dst = if r >> 8 & 7 == 0 { src } else { ours };
            let port = |v: u64| if v & 15 == 0 { 0 } else { v as u16 };
            let tuple = FourTuple::new(
                SocketAddr::new(IpAddr::V4(src), port(next())),
                SocketAddr::new(IpAddr::V4(dst), port(next())),
            );
            let f = next();
            let mut seg = OutSegment {
                seq: SeqNum(next() as u32),
                ack: SeqNum(next() as u32),
                flags: flags_from(f),
                window: next() as u16,
                ..OutSegment::default()
            };
            // The layouts of the fast path: none, timestamps, fourtuple's SYN; Linux's SYN
            // is rewritten from fourtuple's below.
            let layout = (f >> 8) % 4;
            if layout > 0 {
                seg.timestamp = Some((next() as u32, next() as u32));
            }
            if layout > 1 {
                seg.mss = Some(next() as u16);
                seg.wscale = Some(next() as u8);
                seg.sack_permitted = true;
            }
            let plen = match (f >> 12) % 8 {
                0 => (next() % 1500) as usize,
                1..=3 => 0,
                _ => (next() % 40) as usize,
            };
            let data: Vec<u8> = (0..plen).map(|_| next() as u8).collect();
            let mut buf = vec![0u8; 1600];
            let n = emit_tcp(&mut buf, &tuple, &seg, (&data, &[])).unwrap();
            buf.truncate(n);
            if layout == 3 {
                // MSS, SACK-permitted + timestamps, window scale.
                let ws = buf[47];
                buf.copy_within(48..60, 44);
                buf[56..60].copy_from_slice(&[1, 3, 3, ws]);
                repair_v4(&mut buf);
            }
            // A few edits, each usually followed by a checksum repair.
            for _ in 0..next() % 4 {
                let e = next();
                let len = buf.len();
                let i = (e >> 8) as usize % len.max(1);
                match e % 8 {
                    0 => buf.truncate(i),
                    1 => buf.push(e as u8),
                    2 if len > 0 => buf[i.min(59) % len] = (e >> 32) as u8,
                    3 if len > 0 => buf[i] ^= 1 << ((e >> 32) % 8),
                    4 if buf.len() >= 4 => {
                        let total = be16(&buf, 2).wrapping_add((e >> 32) as u16 % 9);
                        buf[2..4].copy_from_slice(&total.wrapping_sub(4).to_be_bytes());
                    }
                    5 if buf.len() > 32 => buf[32] = (e >> 32) as u8,
                    6 if buf.len() >= 8 => buf[6] = [0x40, 0x20, 0, 0x80][(e >> 32) as usize % 4],
                    _ => {}
                }
                if e >> 40 & 3 != 0 {
                    repair_v4(&mut buf);
                }
            }
            let local = |a: IpAddr| a == IpAddr::V4(ours) || round % 64 == 0;
            let fast = format!("{:?}", parse(&buf, local));
            let general = format!("{:?}", parse_general::<true>(&buf, local));
            assert_eq!(fast, general, "{buf:?}");
        }
    }

    /// The IPv4 fast path of emit_tcp against the general one: the same bytes and the same
    /// length, or None for both, leaving the buffer untouched.
    #[test]
    fn fast_emit_agrees_with_the_general_path() {
        let mut next = xorshift(0x8c3f_5e21_b7a9_0d43u64);
        for _ in 0..100_000 {
            let tuple = FourTuple::new(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(next() as u32)), next() as u16),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(next() as u32)), next() as u16),
            );
            let f = next();
            let some = |bit: u64| f >> bit & 3 != 0;
            let mut seg = OutSegment {
                seq: SeqNum(next() as u32),
                ack: SeqNum(next() as u32),
                flags: flags_from(f),
                window: next() as u16,
                ..OutSegment::default()
            };
            // Mostly the fast layouts, sometimes one field off them.
            let syn = f >> 5 & 1 != 0;
            seg.timestamp = some(6).then(|| (next() as u32, next() as u32));
            seg.mss = (syn && some(8)).then(|| next() as u16);
            seg.wscale = (syn && some(10)).then(|| next() as u8);
            seg.sack_permitted = syn && some(12);
            if f >> 14 & 15 == 0 {
                seg.sack[(f >> 18) as usize % 4] = Some((SeqNum(next() as u32), SeqNum(1)));
            }
            let plen = match f >> 20 & 3 {
                0 => (next() % 3000) as usize,
                1 => 0,
                _ => (next() % 40) as usize,
            };
            let data: Vec<u8> = (0..plen).map(|_| next() as u8).collect();
            let cut = (next() as usize) % (plen + 1);
            let len = header_len(&tuple, &seg) + plen;
            let size = match f >> 22 & 3 {
                0 => len.saturating_sub((next() % 8) as usize),
                _ => len + (next() % 64) as usize,
            };
            let fill = next() as u8;
            let (mut a, mut b) = (vec![fill; size], vec![fill; size]);
            let payload = (&data[..cut], &data[cut..]);
            let fast = emit_tcp(&mut a, &tuple, &seg, payload);
            let general = emit_general(&mut b, &tuple, &seg, payload);
            assert_eq!(fast, general, "{seg:?} {tuple:?}");
            assert_eq!(a, b, "{seg:?} {tuple:?} cut {cut}");
        }
    }

    #[test]
    fn bad_lengths_stop_parsing() {
        for bad in [
            &[2u8, 0][..],
            &[2, 1, 0],
            &[8, 40, 0, 0],
            &[2, 3, 0],
            &[5, 6, 0, 0, 0, 0],
        ] {
            assert!(parse_options(bad).malformed, "{bad:?}");
        }
        let o = parse_options(&[2, 4, 5, 0xb4, 3, 0]);
        assert_eq!(o.mss, Some(1460), "what came before a bad option stays");
        assert!(o.malformed);
    }

    /// `parse_trusted` skips the TCP checksum and nothing else, on the IPv4 fast path
    /// (with and without options), the general path (IP options, IPv6) alike.
    #[test]
    fn trusted_parse_skips_only_the_tcp_checksum() {
        let v4 = FourTuple::new(
            "192.0.2.1:1000".parse().unwrap(),
            "192.0.2.2:80".parse().unwrap(),
        );
        let v6 = FourTuple::new(
            "[2001:db8::1]:1000".parse().unwrap(),
            "[2001:db8::2]:80".parse().unwrap(),
        );
        let ours = |a: IpAddr| a == "192.0.2.2".parse::<IpAddr>().unwrap() || a.is_ipv6();
        for (tuple, ts, ip_options) in [
            (v4, None, false),
            (v4, Some((5, 6)), false),
            (v4, None, true),
            (v6, Some((5, 6)), false),
        ] {
            let seg = OutSegment {
                seq: SeqNum(7),
                ack: SeqNum(9),
                flags: Flags {
                    ack: true,
                    ..Flags::default()
                },
                window: 100,
                timestamp: ts,
                ..OutSegment::default()
            };
            let mut buf = [0u8; 200];
            let n = emit_tcp(&mut buf, &tuple, &seg, (b"data", b"")).unwrap();
            let mut p = buf[..n].to_vec();
            if ip_options {
                // Four bytes of NOPs after the IPv4 header: the general path.
                p.splice(20..20, [1, 1, 1, 1]);
                p[0] = 0x46;
                p[2..4].copy_from_slice(&((n + 4) as u16).to_be_bytes());
                p[10..12].copy_from_slice(&[0, 0]);
                let c = checksum::sum(&p[..24]);
                p[10..12].copy_from_slice(&(!c).to_be_bytes());
            }
            let what = format!("{tuple} ts {ts:?} ip options {ip_options}");
            let ip_hl = match (tuple.local.is_ipv6(), ip_options) {
                (true, _) => IPV6_HDR,
                (false, true) => IPV4_HDR + 4,
                (false, false) => IPV4_HDR,
            };
            assert!(matches!(parse(&p, ours), Ok(Incoming::Tcp(_))), "{what}");
            // Corrupt the TCP checksum field: only the trusted parse accepts it.
            let at = ip_hl + 16;
            p[at] ^= 0x5a;
            assert_eq!(
                parse(&p, ours).err(),
                Some(DropReason::BadTcpChecksum),
                "{what}"
            );
            match parse_trusted(&p, ours) {
                Ok(Incoming::Tcp(s)) => {
                    assert_eq!(
                        (s.seq, s.ack, s.payload),
                        (SeqNum(7), SeqNum(9), &b"data"[..])
                    );
                    assert_eq!(s.opts.timestamp, ts, "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
            // An IPv4 header checksum is still checked.
            if tuple.local.is_ipv4() {
                p[8] ^= 1;
                let r = parse_trusted(&p, ours).err();
                assert_eq!(r, Some(DropReason::BadIpChecksum), "{what}");
            }
        }
    }
}
