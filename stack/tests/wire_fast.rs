//! The hand-written fast paths against simple references: the checksum module against
//! RFC 1071 word by word, emitted packets against smoltcp's checksums.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use fourtuple_stack::checksum::{self, Checksum};
use fourtuple_stack::wire::{self, Flags, OutSegment};
use fourtuple_stack::{FourTuple, SeqNum};

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
