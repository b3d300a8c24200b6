//! The hand-written fast paths against simple references: the checksum module against
//! RFC 1071 word by word, emitted packets against smoltcp's checksums, and the parser
//! against the smoltcp-based one it replaced, on random and mutated packets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use fourtuple_stack::checksum::{self, Checksum};
use fourtuple_stack::wire::{self, EchoRequest, Flags, Incoming, OutSegment};
use fourtuple_stack::{DropReason, FourTuple, SeqNum};

/// SplitMix64: a small deterministic generator, so failures reproduce from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// RFC 1071 one 16-bit word at a time, carry folded after every addition.
fn reference_sum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[test]
fn checksum_matches_reference_on_random_lengths_and_offsets() {
    let mut rng = Rng(1);
    for round in 0..20_000 {
        let len = if round % 50 == 0 {
            rng.below(70_000)
        } else {
            rng.below(200)
        };
        // Mostly random bytes; sometimes all 0xff or all zero, where carries pile up or
        // where 0 and 0xffff must stay apart.
        let buf = match round % 7 {
            0 => vec![0xff; len + 9],
            1 => vec![0; len + 9],
            _ => rng.bytes(len + 9),
        };
        let off = rng.below(9);
        let data = &buf[off..off + len];
        let want = reference_sum(data);
        assert_eq!(checksum::sum(data), want, "len {len} off {off}");

        // Split into pieces at arbitrary points, odd ones included.
        let mut c = Checksum::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = rng.below(rest.len() + 1);
            let (a, b) = rest.split_at(n);
            match rng.below(3) {
                0 => c.add_bytes(a),
                1 => {
                    let mut piece = Checksum::new();
                    piece.add_bytes(a);
                    c.add(piece);
                }
                _ => {
                    let mut out = vec![0u8; a.len() + 3];
                    let o = rng.below(4);
                    assert!(c.copy_and_add(&mut out[o..o + a.len()], a));
                    assert_eq!(&out[o..o + a.len()], a);
                }
            }
            rest = b;
        }
        assert_eq!(c.sum(), want, "pieces, len {len} off {off}");
    }
}

#[test]
fn copy_and_add_refuses_length_mismatch() {
    let mut c = Checksum::new();
    let mut out = [0u8; 3];
    assert!(!c.copy_and_add(&mut out, &[1, 2]));
    assert_eq!(c, Checksum::new());
    assert_eq!(out, [0; 3]);
}

#[test]
fn fields_at_odd_offsets_sum_like_their_bytes() {
    let mut rng = Rng(2);
    for _ in 0..10_000 {
        let n = rng.below(6);
        let pre = rng.bytes(n);
        let (a, b) = (rng.next() as u16, rng.next() as u32);
        let mut bytes = pre.clone();
        bytes.extend_from_slice(&a.to_be_bytes());
        bytes.extend_from_slice(&b.to_be_bytes());
        let mut c = Checksum::new();
        c.add_bytes(&pre);
        c.add_u16(a);
        c.add_u32(b);
        assert_eq!(c.sum(), reference_sum(&bytes));
        let mut d = Checksum::new();
        d.add_bytes(&pre);
        d.add_be_sum(u64::from(a) + u64::from(b));
        assert_eq!(d.sum(), reference_sum(&bytes));
    }
}

#[test]
fn pseudo_headers_match_their_byte_layout() {
    let mut rng = Rng(3);
    for _ in 0..10_000 {
        let (s4, d4) = (
            Ipv4Addr::from(rng.next() as u32),
            Ipv4Addr::from(rng.next() as u32),
        );
        let proto = rng.next() as u8;
        let len = rng.next() as u16;
        let mut v4 = Vec::new();
        v4.extend_from_slice(&s4.octets());
        v4.extend_from_slice(&d4.octets());
        v4.extend_from_slice(&[0, proto]);
        v4.extend_from_slice(&len.to_be_bytes());
        assert_eq!(
            checksum::pseudo_header_v4(s4, d4, proto, len).sum(),
            reference_sum(&v4)
        );

        let s6 = Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()));
        let d6 = Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()));
        let len = rng.next() as u32;
        let mut v6 = Vec::new();
        v6.extend_from_slice(&s6.octets());
        v6.extend_from_slice(&d6.octets());
        v6.extend_from_slice(&len.to_be_bytes());
        v6.extend_from_slice(&[0, 0, 0, proto]);
        assert_eq!(
            checksum::pseudo_header_v6(s6, d6, proto, len).sum(),
            reference_sum(&v6)
        );
    }
}

fn random_tuple(rng: &mut Rng) -> FourTuple {
    if rng.below(3) == 0 {
        let a = Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()));
        let b = Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()));
        FourTuple::new(
            SocketAddr::new(IpAddr::V6(a), rng.next() as u16),
            SocketAddr::new(IpAddr::V6(b), rng.next() as u16),
        )
    } else {
        let a = Ipv4Addr::from(rng.next() as u32);
        let b = Ipv4Addr::from(rng.next() as u32);
        FourTuple::new(
            SocketAddr::new(IpAddr::V4(a), rng.next() as u16),
            SocketAddr::new(IpAddr::V4(b), rng.next() as u16),
        )
    }
}

fn random_out_segment(rng: &mut Rng) -> OutSegment {
    let bits = rng.next();
    let maybe = |rng: &mut Rng| rng.below(2) == 0;
    let mut seg = OutSegment {
        seq: SeqNum(rng.next() as u32),
        ack: SeqNum(rng.next() as u32),
        flags: Flags {
            syn: bits & 1 != 0,
            ack: bits & 2 != 0,
            fin: bits & 4 != 0,
            rst: bits & 8 != 0,
            psh: bits & 16 != 0,
        },
        window: rng.next() as u16,
        ..OutSegment::default()
    };
    if maybe(rng) {
        seg.mss = Some(rng.next() as u16);
    }
    if maybe(rng) {
        seg.wscale = Some(rng.next() as u8);
    }
    seg.sack_permitted = maybe(rng);
    if maybe(rng) {
        seg.timestamp = Some((rng.next() as u32, rng.next() as u32));
    }
    for b in seg.sack.iter_mut() {
        if maybe(rng) {
            *b = Some((SeqNum(rng.next() as u32), SeqNum(rng.next() as u32)));
        }
    }
    seg
}

/// Zeroes the checksums of an emitted packet and recomputes them with smoltcp.
fn smoltcp_checksums(pkt: &mut [u8], tuple: &FourTuple) {
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket};
    let ip_of = |a: IpAddr| match a {
        IpAddr::V4(a) => IpAddress::Ipv4(a),
        IpAddr::V6(a) => IpAddress::Ipv6(a),
    };
    let hl = if tuple.local.is_ipv4() {
        let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..20]);
        ip.set_checksum(0);
        ip.fill_checksum();
        20
    } else {
        40
    };
    let mut tcp = TcpPacket::new_unchecked(&mut pkt[hl..]);
    tcp.set_checksum(0);
    tcp.fill_checksum(&ip_of(tuple.local.ip()), &ip_of(tuple.remote.ip()));
}

#[test]
fn emitted_checksums_match_smoltcp() {
    let mut rng = Rng(4);
    for round in 0..20_000 {
        let tuple = random_tuple(&mut rng);
        let seg = random_out_segment(&mut rng);
        let plen = if round % 20 == 0 {
            rng.below(3000)
        } else {
            rng.below(40)
        };
        let data = rng.bytes(plen);
        let cut = rng.below(plen + 1);
        let mut buf = vec![0u8; 3200];
        let n = wire::emit_tcp(&mut buf, &tuple, &seg, (&data[..cut], &data[cut..])).unwrap();
        assert_eq!(n, wire::header_len(&tuple, &seg) + plen);
        let mut want = buf[..n].to_vec();
        smoltcp_checksums(&mut want, &tuple);
        assert_eq!(&buf[..n], &want[..], "{seg:?} {tuple:?} cut {cut}");
        // And it parses back to what was asked for (SACK blocks as far as they fit).
        let ours = tuple.remote.ip();
        let bad_source = match tuple.local.ip() {
            IpAddr::V4(a) => a.is_unspecified() || a.is_broadcast() || a.is_multicast(),
            IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
        };
        let got = match wire::parse(&buf[..n], |a| a == ours) {
            Ok(Incoming::Tcp(got)) => got,
            Err(DropReason::BadAddress)
                if bad_source || tuple.local.port() == 0 || tuple.remote.port() == 0 =>
            {
                continue;
            }
            other => panic!("{seg:?} {tuple:?} does not parse back: {other:?}"),
        };
        assert_eq!(got.tuple, tuple.reversed());
        assert_eq!(
            (got.seq, got.flags, got.window),
            (seg.seq, seg.flags, seg.window)
        );
        assert_eq!(got.ack, if seg.flags.ack { seg.ack } else { SeqNum(0) });
        let o = got.opts;
        assert!(!o.malformed);
        assert_eq!(
            (o.mss, o.wscale, o.timestamp),
            (seg.mss, seg.wscale, seg.timestamp)
        );
        assert_eq!(o.sack_permitted, seg.sack_permitted);
        let sent: Vec<_> = seg.sack.iter().flatten().collect();
        let back: Vec<_> = o.sack.iter().flatten().collect();
        assert!(!back.is_empty() || sent.is_empty() || wire::header_len(&tuple, &seg) >= 56);
        assert_eq!(&sent[..back.len()], &back[..]);
        assert_eq!(got.payload, &data[..]);
        // Too small a buffer: nothing but None.
        assert_eq!(
            wire::emit_tcp(
                &mut buf[..n - 1],
                &tuple,
                &seg,
                (&data[..cut], &data[cut..])
            ),
            None
        );
    }
}

/// The smoltcp-based parser this crate used before the hand-written one, kept verbatim
/// (ICMP included) as the reference the new one must agree with on every input.
mod old {
    use std::net::{IpAddr, SocketAddr};

    use fourtuple_stack::wire::{parse_options, DropReason, EchoRequest, Flags, Incoming, Segment};
    use fourtuple_stack::{FourTuple, SeqNum};
    use smoltcp::wire::{
        Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpAddress, IpProtocol,
        Ipv4Packet, Ipv6Packet, TcpPacket,
    };

    fn ip_of(addr: IpAddr) -> IpAddress {
        match addr {
            IpAddr::V4(a) => IpAddress::Ipv4(a),
            IpAddr::V6(a) => IpAddress::Ipv6(a),
        }
    }

    fn bad_source(addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => a.is_unspecified() || a.is_broadcast() || a.is_multicast(),
            IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
        }
    }

    /// Parses one IP packet. `is_local` says whether a destination address is ours.
    pub(crate) fn parse<'a>(
        packet: &'a [u8],
        is_local: impl Fn(IpAddr) -> bool,
    ) -> Result<Incoming<'a>, DropReason> {
        let version = packet.first().ok_or(DropReason::MalformedIp)? >> 4;
        let (src, dst, proto, payload) = match version {
            4 => {
                let ip = Ipv4Packet::new_checked(packet).map_err(|_| DropReason::MalformedIp)?;
                if !ip.verify_checksum() {
                    return Err(DropReason::BadIpChecksum);
                }
                if ip.more_frags() || ip.frag_offset() != 0 {
                    return Err(DropReason::Fragment);
                }
                let total = ip.total_len() as usize;
                let hl = ip.header_len() as usize;
                let payload = packet.get(hl..total).ok_or(DropReason::MalformedIp)?;
                (
                    IpAddr::V4(ip.src_addr()),
                    IpAddr::V4(ip.dst_addr()),
                    ip.next_header(),
                    payload,
                )
            }
            6 => {
                let ip = Ipv6Packet::new_checked(packet).map_err(|_| DropReason::MalformedIp)?;
                let total = ip.total_len();
                let payload = packet.get(40..total).ok_or(DropReason::MalformedIp)?;
                let proto = ip.next_header();
                if !matches!(proto, IpProtocol::Tcp | IpProtocol::Icmpv6) {
                    return Err(match proto {
                        IpProtocol::HopByHop
                        | IpProtocol::Ipv6Route
                        | IpProtocol::Ipv6Frag
                        | IpProtocol::Ipv6Opts => DropReason::Ipv6ExtensionHeader,
                        _ => DropReason::UnsupportedProtocol,
                    });
                }
                (
                    IpAddr::V6(ip.src_addr()),
                    IpAddr::V6(ip.dst_addr()),
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
            IpProtocol::Tcp => parse_tcp(src, dst, payload).map(Incoming::Tcp),
            IpProtocol::Icmp if src.is_ipv4() => parse_icmpv4(src, dst, payload),
            IpProtocol::Icmpv6 if src.is_ipv6() => parse_icmpv6(src, dst, payload),
            _ => Err(DropReason::UnsupportedProtocol),
        }
    }

    fn parse_tcp<'a>(src: IpAddr, dst: IpAddr, data: &'a [u8]) -> Result<Segment<'a>, DropReason> {
        let tcp = TcpPacket::new_checked(data).map_err(|_| DropReason::MalformedTcp)?;
        if !tcp.verify_checksum(&ip_of(src), &ip_of(dst)) {
            return Err(DropReason::BadTcpChecksum);
        }
        if tcp.src_port() == 0 || tcp.dst_port() == 0 || bad_source(src) {
            return Err(DropReason::BadAddress);
        }
        let opts = parse_options(tcp.options());
        let flags = Flags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            psh: tcp.psh(),
        };
        let hl = tcp.header_len() as usize;
        let payload = data.get(hl..).ok_or(DropReason::MalformedTcp)?;
        Ok(Segment {
            tuple: FourTuple::new(
                SocketAddr::new(dst, tcp.dst_port()),
                SocketAddr::new(src, tcp.src_port()),
            ),
            seq: SeqNum(tcp.seq_number().0 as u32),
            ack: SeqNum(tcp.ack_number().0 as u32),
            flags,
            window: tcp.window_len(),
            opts,
            payload,
        })
    }

    fn parse_icmpv4<'a>(
        src: IpAddr,
        dst: IpAddr,
        data: &'a [u8],
    ) -> Result<Incoming<'a>, DropReason> {
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

    fn parse_icmpv6<'a>(
        src: IpAddr,
        dst: IpAddr,
        data: &'a [u8],
    ) -> Result<Incoming<'a>, DropReason> {
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
}

/// Recomputes, where the headers say they are and only within bounds, the IPv4 header
/// checksum and the TCP or ICMP checksum, so that mutated packets reach past them.
fn repair(pkt: &mut [u8]) {
    let Some(&first) = pkt.first() else { return };
    let (src, dst, proto, l4) = match first >> 4 {
        4 if pkt.len() >= 20 => {
            let hl = usize::from(first & 0xf) * 4;
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]])).min(pkt.len());
            if hl < 20 || hl > total {
                return;
            }
            pkt[10] = 0;
            pkt[11] = 0;
            let c = !reference_sum(&pkt[..hl]);
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
            (
                pkt[12..16].to_vec(),
                pkt[16..20].to_vec(),
                pkt[9],
                hl..total,
            )
        }
        6 if pkt.len() >= 40 => {
            let total = (40 + usize::from(u16::from_be_bytes([pkt[4], pkt[5]]))).min(pkt.len());
            (pkt[8..24].to_vec(), pkt[24..40].to_vec(), pkt[6], 40..total)
        }
        _ => return,
    };
    let at = match proto {
        6 => 16,
        1 | 58 => 2,
        _ => return,
    };
    let l4 = &mut pkt[l4];
    if l4.len() < at + 2 {
        return;
    }
    l4[at] = 0;
    l4[at + 1] = 0;
    let mut covered = Vec::new();
    if proto != 1 {
        covered.extend_from_slice(&src);
        covered.extend_from_slice(&dst);
        if src.len() == 4 {
            covered.extend_from_slice(&[0, proto]);
            covered.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        } else {
            covered.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            covered.extend_from_slice(&[0, 0, 0, proto]);
        }
    }
    covered.extend_from_slice(l4);
    let c = !reference_sum(&covered);
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// A valid packet to start mutating from: a TCP segment, or an ICMP echo request.
fn seed_packet(rng: &mut Rng, tuple: &FourTuple) -> Vec<u8> {
    let mut buf = vec![0u8; 2000];
    let max = if rng.below(4) == 0 { 1400 } else { 24 };
    let plen = rng.below(max);
    let data = rng.bytes(plen);
    if rng.below(8) == 0 {
        // An echo reply to a request from the remote end, sent from the local end to the
        // remote one like every seed, turned into a request.
        let req = EchoRequest {
            src: tuple.remote.ip(),
            dst: tuple.local.ip(),
            ident: rng.next() as u16,
            seq_no: rng.next() as u16,
            data: &data,
        };
        let n = wire::emit_echo_reply(&mut buf, &req).unwrap();
        buf.truncate(n);
        let hl = if tuple.local.is_ipv4() { 20 } else { 40 };
        buf[hl] = if tuple.local.is_ipv4() { 8 } else { 128 };
        repair(&mut buf);
        return buf;
    }
    let seg = random_out_segment(rng);
    let n = wire::emit_tcp(&mut buf, tuple, &seg, (&data, b"")).unwrap();
    buf.truncate(n);
    buf
}

/// One random edit of the kind that reaches each of the parser's checks.
fn mutate(rng: &mut Rng, pkt: &mut Vec<u8>) {
    let v4 = pkt.first().is_some_and(|b| b >> 4 == 4);
    let ip_hl = if v4 { 20 } else { 40 };
    match rng.below(14) {
        0 => {
            let n = rng.below(pkt.len() + 1);
            pkt.truncate(n);
        }
        1 => {
            let n = rng.below(8);
            pkt.extend(rng.bytes(n));
        }
        2 | 3 if !pkt.is_empty() => {
            let i = rng.below(pkt.len());
            pkt[i] ^= 1 << rng.below(8);
        }
        4 if !pkt.is_empty() => {
            let i = rng.below(pkt.len().min(ip_hl + 20));
            pkt[i] = rng.next() as u8;
        }
        // Version and IHL.
        5 if !pkt.is_empty() => pkt[0] = rng.next() as u8,
        6 if !pkt.is_empty() => pkt[0] = (pkt[0] & 0xf0) | rng.below(16) as u8,
        // Total or payload length.
        7 if pkt.len() >= 6 => {
            let at = if v4 { 2 } else { 4 };
            let len = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
            let len = match rng.below(3) {
                0 => rng.next() as u16,
                1 => len.wrapping_add(rng.below(5) as u16),
                _ => len.wrapping_sub(rng.below(5) as u16),
            };
            pkt[at..at + 2].copy_from_slice(&len.to_be_bytes());
        }
        // Fragment bits.
        8 if v4 && pkt.len() >= 8 => {
            pkt[6] = [0x40, 0x20, 0x00, 0x80, 0x41, rng.next() as u8][rng.below(6)];
            pkt[7] = [0, 0, 1, rng.next() as u8][rng.below(4)];
        }
        // Protocol / next header.
        9 if pkt.len() >= 10 => {
            let at = if v4 { 9 } else { 6 };
            pkt[at] = [0, 1, 6, 17, 43, 44, 58, 59, 60, rng.next() as u8][rng.below(10)];
        }
        // TCP data offset.
        10 if pkt.len() > ip_hl + 12 => pkt[ip_hl + 12] = rng.next() as u8,
        // TCP ports, source address: zero, broadcast, multicast.
        11 if pkt.len() > ip_hl + 4 => {
            let i = ip_hl + rng.below(4);
            pkt[i] = 0;
        }
        12 if pkt.len() >= 24 => {
            if v4 {
                pkt[12..16].copy_from_slice(&[[0; 4], [255; 4], [224, 0, 0, 1]][rng.below(3)]);
            } else {
                pkt[8] = [0, 0xff][rng.below(2)];
            }
        }
        // TCP option bytes.
        _ if pkt.len() > ip_hl + 20 => {
            let i = ip_hl + 20 + rng.below(pkt.len() - ip_hl - 20).min(40);
            pkt[i] = [0, 1, 2, 3, 4, 5, 8, 10, 34, rng.next() as u8][rng.below(10)];
        }
        _ => {}
    }
}

fn agree(pkt: &[u8], is_local: impl Fn(IpAddr) -> bool + Copy) {
    let new = format!("{:?}", wire::parse(pkt, is_local));
    let old = format!("{:?}", old::parse(pkt, is_local));
    assert_eq!(new, old, "packet {pkt:02x?}");
}

#[test]
fn parser_agrees_with_the_smoltcp_one() {
    let mut rng = Rng(5);
    let mut outcomes = std::collections::HashMap::<String, usize>::new();
    for round in 0..100_000 {
        let tuple = random_tuple(&mut rng);
        let ours = tuple.remote.ip();
        let mut pkt = if round % 16 == 0 {
            // Pure noise, with a plausible first byte half of the time.
            let n = rng.below(80);
            let mut p = rng.bytes(n);
            if let (Some(b), true) = (p.first_mut(), rng.below(2) == 0) {
                *b = [0x45, 0x46, 0x4f, 0x60][rng.below(4)];
            }
            p
        } else {
            seed_packet(&mut rng, &tuple)
        };
        for _ in 0..rng.below(4) {
            mutate(&mut rng, &mut pkt);
        }
        if rng.below(2) == 0 {
            repair(&mut pkt);
        }
        match rng.below(8) {
            0 => agree(&pkt, |_| true),
            1 => agree(&pkt, |_| false),
            _ => agree(&pkt, |a| a == ours),
        }
        let key = match wire::parse(&pkt, |a| a == ours) {
            Ok(Incoming::Tcp(_)) => "tcp".to_string(),
            Ok(Incoming::Echo(_)) => "echo".to_string(),
            Err(e) => e.name().to_string(),
        };
        *outcomes.entry(key).or_default() += 1;
    }
    // Every outcome was reached, so every check was compared (checksums fail only where
    // they are verified).
    let unverified = |key: &&str| cfg!(fuzzing) && key.ends_with("checksum");
    for key in DropReason::ALL
        .iter()
        .map(|r| r.name())
        .chain(["tcp", "echo"])
        .filter(|k| !unverified(k))
    {
        assert!(
            outcomes.get(key).copied().unwrap_or(0) >= 20,
            "{key}: {outcomes:?}"
        );
    }
}

/// Under `cfg(fuzzing)` (cargo fuzz) checksums are not verified, as smoltcp's were not, so
/// fuzzers get past them; in ordinary builds they are.
#[test]
fn checksums_are_verified_except_when_fuzzing() {
    let mut rng = Rng(6);
    for v6 in [false, true] {
        let tuple = loop {
            let t = random_tuple(&mut rng);
            if t.local.is_ipv6() == v6 {
                break t;
            }
        };
        let ours = tuple.remote.ip();
        let mut buf = vec![0u8; 200];
        let seg = random_out_segment(&mut rng);
        let n = wire::emit_tcp(&mut buf, &tuple, &seg, (b"abc", b"")).unwrap();
        let mut pkt = buf[..n].to_vec();
        let at = if v6 { 40 + 16 } else { 20 + 16 };
        pkt[at] ^= 0x10;
        let got = wire::parse(&pkt, |a| a == ours);
        assert_eq!(
            got.map(|_| ()).map_err(|e| e.name()),
            if cfg!(fuzzing) {
                Ok(())
            } else {
                Err("bad_tcp_checksum")
            }
        );
        if !v6 {
            pkt[at] ^= 0x10;
            pkt[10] ^= 0x10;
            let got = wire::parse(&pkt, |a| a == ours);
            assert_eq!(
                got.map(|_| ()).map_err(|e| e.name()),
                if cfg!(fuzzing) {
                    Ok(())
                } else {
                    Err("bad_ip_checksum")
                }
            );
        }
    }
}

/// `peek_syn_tuple`, the look-ahead of `Stack::receive_batch`, names the tuple of every SYN
/// without ACK that the parser accepts, and nothing for any other segment it accepts.
#[test]
fn syn_peek_finds_every_syn_the_parser_accepts() {
    let mut rng = Rng(11);
    let (mut syns, mut others) = (0, 0);
    for _ in 0..100_000 {
        let tuple = random_tuple(&mut rng);
        let mut pkt = seed_packet(&mut rng, &tuple);
        for _ in 0..rng.below(3) {
            mutate(&mut rng, &mut pkt);
        }
        repair(&mut pkt);
        let peek = wire::peek_syn_tuple(&pkt);
        if let Ok(Incoming::Tcp(seg)) = wire::parse(&pkt, |_| true) {
            if seg.flags.syn && !seg.flags.ack {
                assert_eq!(peek, Some(seg.tuple), "packet {pkt:02x?}");
                syns += 1;
            } else {
                assert_eq!(peek, None, "packet {pkt:02x?}");
                others += 1;
            }
        }
    }
    // Enough of both to mean something: a quarter of the seeds are SYNs without ACK.
    assert!(
        syns > 10_000 && others > 30_000,
        "{syns} SYNs, {others} others"
    );
}
