//! The Internet checksum (RFC 1071), for IPv4 headers and the TCP, ICMP and ICMPv6
//! pseudo-header checksums.
//!
//! It owns the one's-complement arithmetic only; which bytes are covered is the caller's
//! business (wire.rs). The sum is kept in big-endian order so that header fields can be
//! added as plain integers without going through bytes, and it is accumulated eight bytes at
//! a time: RFC 1071 §2 notes that one's-complement addition is associative and commutative
//! and that a wider accumulator can be folded down at the end, because 2^16 ≡ 1 modulo
//! 0xffff. Pieces may have any length: a piece that starts at an odd offset is added
//! byte-swapped (§2(B)), so a payload split across a ring buffer's two slices sums the same
//! as if it were contiguous.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A one's-complement sum in progress over a byte string that may be added in pieces.
#[derive(Copy, Clone, Default, Debug, PartialEq, Eq)]
pub struct Checksum {
    /// Sum of big-endian 16-bit words, not yet folded. Every addition keeps it below 2^63
    /// (see [`Checksum::add_bytes`]), so it never overflows.
    acc: u64,
    /// An odd number of bytes has been added so far: the next byte is the low half of a
    /// 16-bit word.
    odd: bool,
}

/// Bytes summed per block before the block's sum is folded into the accumulator. Each
/// 8-byte word adds less than 2^33, so a block sums to less than 2^33 * 2^17 = 2^50, and
/// folding blocks keeps the accumulator far from overflow for inputs of any length.
const BLOCK: usize = 1 << 20;

/// One's-complement sum of `data` as 16-bit big-endian words (a trailing odd byte is the
/// high half of a word padded with zero), not folded.
#[inline]
fn sum_block(data: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        // Each half of a 64-bit word is two 16-bit words; adding the halves as u32 keeps
        // the carries in the accumulator instead of handling them per word.
        let w = u64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        // Zero padding at the end adds nothing and puts an odd last byte in the high half
        // of its word, where RFC 1071 wants it.
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        let w = u64::from_be_bytes(tail);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    acc
}

/// [`sum_block`] of `src`, copying it into `dst` (of the same length) on the way.
#[inline]
fn copy_block(dst: &mut [u8], src: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut words = src.chunks_exact(8);
    let mut out = dst.chunks_exact_mut(8);
    for (w, o) in (&mut words).zip(&mut out) {
        let w = [w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]];
        o.copy_from_slice(&w);
        let w = u64::from_be_bytes(w);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let rest = words.remainder();
    out.into_remainder().copy_from_slice(rest);
    acc + sum_block(rest)
}

/// Folds a wide sum to 16 bits with end-around carries. The result is 0 only when the sum
/// is 0, as with a 16-bit one's-complement accumulator.
#[inline]
fn fold(acc: u64) -> u16 {
    let (s, c) = ((acc >> 32) as u32).overflowing_add(acc as u32);
    // When the addition carried, s <= 2^32 - 2, so adding the carry cannot overflow.
    let s = s + c as u32;
    let (t, c) = ((s >> 16) as u16).overflowing_add(s as u16);
    t + c as u16
}

impl Checksum {
    /// An empty sum.
    pub const fn new() -> Self {
        Checksum { acc: 0, odd: false }
    }

    /// Adds `data`, which follows whatever was added before.
    #[inline]
    pub fn add_bytes(&mut self, data: &[u8]) {
        let mut blocks = data.chunks(BLOCK);
        let Some(first) = blocks.next() else {
            return;
        };
        let mut sum = sum_block(first);
        for block in blocks {
            sum = u64::from(fold(sum)) + sum_block(block);
        }
        self.add_piece(sum, data.len());
    }

    /// Adds the sum of a piece of `len` bytes computed as if it started at an even offset.
    #[inline]
    fn add_piece(&mut self, sum: u64, len: usize) {
        let sum = if self.odd {
            // Shifted by one byte, every word contributes byte-swapped; swapping the folded
            // sum is the same (multiplying by 2^8 modulo 0xffff).
            u64::from(fold(sum).swap_bytes())
        } else {
            sum
        };
        self.acc = u64::from(fold(self.acc)) + sum;
        self.odd ^= len % 2 == 1;
    }

    /// Adds a 16-bit field as it appears in a header (big-endian on the wire).
    #[inline]
    pub fn add_u16(&mut self, v: u16) {
        let v = if self.odd { v.swap_bytes() } else { v };
        self.acc += u64::from(v);
    }

    /// Adds a 32-bit field as it appears in a header (big-endian on the wire).
    #[inline]
    pub fn add_u32(&mut self, v: u32) {
        self.add_u16((v >> 16) as u16);
        self.add_u16(v as u16);
    }

    /// Adds another sum whose bytes follow the ones added so far.
    #[inline]
    pub fn add(&mut self, other: Checksum) {
        let sum = u64::from(fold(other.acc));
        self.add_piece(sum, other.odd as usize);
    }

    /// Copies `src` into `dst` (same length) and adds the copied bytes, in one pass over
    /// them. Returns false, copying nothing, when the lengths differ.
    #[inline]
    pub fn copy_and_add(&mut self, dst: &mut [u8], src: &[u8]) -> bool {
        if dst.len() != src.len() {
            return false;
        }
        let mut blocks = src.chunks(BLOCK).zip(dst.chunks_mut(BLOCK));
        let Some((s, d)) = blocks.next() else {
            return true;
        };
        let mut sum = copy_block(d, s);
        for (s, d) in blocks {
            sum = u64::from(fold(sum)) + copy_block(d, s);
        }
        self.add_piece(sum, src.len());
        true
    }

    /// The folded one's-complement sum (not complemented). A correct checksum makes the sum
    /// over the covered bytes, checksum field included, 0xffff.
    #[inline]
    pub fn sum(self) -> u16 {
        fold(self.acc)
    }

    /// The value for the checksum field: the complement of the sum of the covered bytes,
    /// added with the field zeroed.
    #[inline]
    pub fn finish(self) -> u16 {
        !self.sum()
    }
}

/// The TCP/UDP pseudo-header sum for IPv4 (RFC 9293 §3.1): addresses, protocol and the
/// transport length.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> Checksum {
    let mut c = Checksum::new();
    c.add_u32(src.to_bits());
    c.add_u32(dst.to_bits());
    c.add_u16(u16::from(proto));
    c.add_u16(len);
    c
}

/// The upper-layer pseudo-header sum for IPv6 (RFC 8200 §8.1): addresses, the 32-bit
/// upper-layer length and the next header value.
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: u32) -> Checksum {
    let mut c = Checksum::new();
    let (s, d) = (src.to_bits(), dst.to_bits());
    for half in [s >> 64, s, d >> 64, d] {
        let half = half as u64;
        c.acc += (half >> 48) + ((half >> 32) & 0xffff) + ((half >> 16) & 0xffff) + (half & 0xffff);
    }
    c.add_u32(len);
    c.add_u16(u16::from(proto));
    c
}

/// The one's-complement sum of `data` (not complemented), folded to 16 bits.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    let mut c = Checksum::new();
    c.add_bytes(data);
    c.sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 word by word, with the carry folded after every addition.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3's example bytes sum to 0xddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
    }

    #[test]
    fn fold_keeps_zero_and_all_ones_apart() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0; 9]), 0);
        assert_eq!(sum(&[0xff; 2]), 0xffff);
        assert_eq!(sum(&[0xff; 64]), 0xffff);
        assert_eq!(fold(u64::MAX), 0xffff);
    }

    #[test]
    fn long_inputs_fold_per_block() {
        let data = vec![0xffu8; 3 * BLOCK + 5];
        assert_eq!(sum(&data), reference(&data));
        let mut out = vec![0u8; data.len()];
        let mut c = Checksum::new();
        assert!(c.copy_and_add(&mut out, &data));
        assert_eq!(c.sum(), reference(&data));
    }
}
