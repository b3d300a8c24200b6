//! The hand-written fast paths against simple references: the checksum module against
//! RFC 1071 word by word.

use std::net::{Ipv4Addr, Ipv6Addr};

use fourtuple_stack::checksum::{self, Checksum};

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
