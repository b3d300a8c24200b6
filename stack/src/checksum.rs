//! The Internet checksum (RFC 1071), for IPv4 headers and the TCP, ICMP and ICMPv6
//! pseudo-header checksums.
//!
//! It owns the one's-complement arithmetic only; which bytes are covered is the caller's
//! business (wire.rs). RFC 1071 §2 is what makes it fast: one's-complement addition is
//! associative and commutative, so the sum is accumulated eight bytes at a time in a wide
//! accumulator and folded to 16 bits at the end (2^16 ≡ 1 modulo 0xffff); and it is
//! byte-order independent, so words are added in native order and the sum is swapped into
//! network order once, when it is folded. Pieces may have any length: a piece that starts
//! at an odd offset is added byte-swapped (§2(B)), so a payload split across a ring
//! buffer's two slices sums the same as if it were contiguous.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A one's-complement sum in progress over a byte string that may be added in pieces.
#[derive(Copy, Clone, Default, Debug, PartialEq, Eq)]
pub struct Checksum {
    /// Sum of native-endian 16-bit words, not yet folded; additions carry around
    /// ([`add_carry`]). On a little-endian host it is the byte-swapped network-order sum.
    acc: u64,
    /// An odd number of bytes has been added so far: the next byte is the low half of a
    /// 16-bit word.
    odd: bool,
}

/// One's-complement sum of `data` as native-endian 16-bit words (a trailing odd byte is
/// the first byte of a word padded with zero), not folded.
#[inline(always)]
fn sum_words(data: &[u8]) -> u64 {
    if data.len() >= FOUR_CHAINS {
        return sum_long(data);
    }
    // Headers and small segments: one carry chain, 16 bytes a turn, no setup to amortise.
    let mut acc = 0u64;
    let mut rest = data;
    while let Some((p, more)) = rest.split_first_chunk::<16>() {
        acc = add_carry(acc, load64(&p[..8]));
        acc = add_carry(acc, load64(&p[8..]));
        rest = more;
    }
    if let Some((w, more)) = rest.split_first_chunk::<8>() {
        acc = add_carry(acc, u64::from_ne_bytes(*w));
        rest = more;
    }
    add_carry(acc, sum_tail(rest))
}

/// Eight bytes of `w` (at least 8 long) in native order.
#[inline(always)]
fn load64(w: &[u8]) -> u64 {
    u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])
}

/// [`sum_words`] of a payload.
#[inline(never)]
fn sum_long(data: &[u8]) -> u64 {
    // 128-bit accumulators take each 64-bit word with one add and one add-with-carry; their
    // high halves count the carries out of bit 63, each worth 1 (2^64 ≡ 1 modulo 0xffff).
    // A slice has fewer than 2^61 words, so none can overflow. Four of them, fed from 32-byte
    // blocks, keep four carry chains in flight: on 1480-byte payloads, measured faster than
    // one chain and than smoltcp's vectorised 16-bit sum, at about two instructions per
    // 8 bytes whether or not the compiler vectorises anything.
    let mut acc = [0u128; 4];
    let mut blocks = data.chunks_exact(32);
    for block in &mut blocks {
        for (a, w) in acc.iter_mut().zip(block.chunks_exact(8)) {
            *a += u128::from(load64(w));
        }
    }
    let mut total: u128 = acc.into_iter().sum();
    let mut words = blocks.remainder().chunks_exact(8);
    for w in &mut words {
        total += u128::from(load64(w));
    }
    let acc = add_carry(total as u64, (total >> 64) as u64);
    add_carry(acc, sum_tail(words.remainder()))
}

/// From this length on [`sum_words`] runs four carry chains; below it, headers, one chain
/// costs fewer instructions than setting up and joining four.
const FOUR_CHAINS: usize = 64;

/// From this length on, [`Checksum::copy_and_add`] copies with memcpy and then sums the
/// copy, rather than summing word by word as it copies.
const COPY_THEN_SUM: usize = 128;

/// [`sum_words`] of fewer than 8 bytes, without a loop or a copy: headers end in such
/// tails on every packet.
#[inline]
fn sum_tail(rest: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut rest = rest;
    if let [a, b, c, d, more @ ..] = rest {
        acc += u64::from(u32::from_ne_bytes([*a, *b, *c, *d]));
        rest = more;
    }
    if let [a, b, more @ ..] = rest {
        acc += u64::from(u16::from_ne_bytes([*a, *b]));
        rest = more;
    }
    if let [a] = rest {
        // An odd last byte is the first byte of its word (RFC 1071 pads with zero).
        acc += u64::from(u16::from_ne_bytes([*a, 0]));
    }
    acc
}

/// [`sum_words`] of `src`, copying it into `dst` (of the same length) on the way.
#[inline(always)]
fn copy_words(dst: &mut [u8], src: &[u8]) -> u64 {
    if src.len() >= COPY_THEN_SUM {
        return copy_then_sum(dst, src);
    }
    // Short payloads (requests, replies, keystrokes): one pass on one carry chain, the
    // tail moved and summed in at most three fixed-size steps rather than byte by byte.
    let mut acc = 0u64;
    let mut words = src.chunks_exact(8);
    let mut out = dst.chunks_exact_mut(8);
    for (w, o) in (&mut words).zip(&mut out) {
        let w = [w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]];
        o.copy_from_slice(&w);
        acc = add_carry(acc, u64::from_ne_bytes(w));
    }
    let (mut rest, mut out) = (words.remainder(), out.into_remainder());
    if let Some((w, r)) = rest.split_first_chunk::<4>() {
        if let Some((o, more)) = std::mem::take(&mut out).split_first_chunk_mut::<4>() {
            *o = *w;
            acc = add_carry(acc, u64::from(u32::from_ne_bytes(*w)));
            (rest, out) = (r, more);
        }
    }
    if let Some((w, r)) = rest.split_first_chunk::<2>() {
        if let Some((o, more)) = std::mem::take(&mut out).split_first_chunk_mut::<2>() {
            *o = *w;
            acc = add_carry(acc, u64::from(u16::from_ne_bytes(*w)));
            (rest, out) = (r, more);
        }
    }
    if let (Some(&b), Some(o)) = (rest.first(), out.first_mut()) {
        // An odd last byte is the first byte of its word (RFC 1071 pads with zero).
        *o = b;
        acc = add_carry(acc, u64::from(u16::from_ne_bytes([b, 0])));
    }
    acc
}

/// [`copy_words`] of a payload: memcpy moves it faster than a word loop can, and the sum
/// then reads it back from L1: cheaper, measured, than fusing the two.
#[inline(never)]
fn copy_then_sum(dst: &mut [u8], src: &[u8]) -> u64 {
    dst.copy_from_slice(src);
    sum_words(dst)
}

/// One's-complement addition of 64-bit words: the carry out of bit 63 wraps around into bit
/// 0 (2^64 ≡ 1 modulo 0xffff), so the accumulator never overflows and a nonzero sum never
/// becomes 0.
#[inline]
pub(crate) fn add_carry(a: u64, b: u64) -> u64 {
    let (s, c) = a.overflowing_add(b);
    // When the addition carried, s <= 2^64 - 2, so adding the carry cannot overflow.
    s + c as u64
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
        self.add_piece(sum_words(data), data.len());
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
        self.acc = add_carry(self.acc, sum);
        self.odd ^= len % 2 == 1;
    }

    /// Adds a 16-bit field as it appears in a header (big-endian on the wire).
    #[inline]
    pub fn add_u16(&mut self, v: u16) {
        let v = u16::from_ne_bytes(v.to_be_bytes());
        let v = if self.odd { v.swap_bytes() } else { v };
        self.acc = add_carry(self.acc, u64::from(v));
    }

    /// Adds a 32-bit field as it appears in a header (big-endian on the wire).
    #[inline]
    pub fn add_u32(&mut self, v: u32) {
        let v = u64::from(u32::from_ne_bytes(v.to_be_bytes()));
        let v = if self.odd {
            u64::from(fold(v).swap_bytes())
        } else {
            v
        };
        self.acc = add_carry(self.acc, v);
    }

    /// Adds `sum`, the plain integer sum of the values of 16- or 32-bit header fields (as
    /// numbers, big-endian on the wire) that follow the bytes added so far, each at an even
    /// offset from that point. Plain addition is one's-complement addition before folding,
    /// since 2^16 ≡ 1 modulo 0xffff, so a header written from its fields is summed without
    /// reading its bytes back; the caller only keeps `sum` from overflowing, which a few
    /// dozen fields cannot.
    #[inline]
    pub fn add_be_sum(&mut self, sum: u64) {
        let v = u16::from_ne_bytes(fold(sum).to_be_bytes());
        let v = if self.odd { v.swap_bytes() } else { v };
        self.acc = add_carry(self.acc, u64::from(v));
    }

    /// Adds another sum whose bytes follow the ones added so far.
    #[inline]
    pub fn add(&mut self, other: Checksum) {
        let sum = u64::from(fold(other.acc));
        self.add_piece(sum, other.odd as usize);
    }

    /// Copies `src` into `dst` (same length) and adds the copied bytes: in one pass over
    /// short ones, a copy and a pass over the (cache-hot) copy for long ones. Returns
    /// false, copying nothing, when the lengths differ.
    #[inline]
    pub fn copy_and_add(&mut self, dst: &mut [u8], src: &[u8]) -> bool {
        if dst.len() != src.len() {
            return false;
        }
        self.add_piece(copy_words(dst, src), src.len());
        true
    }

    /// The folded one's-complement sum (not complemented). A correct checksum makes the sum
    /// over the covered bytes, checksum field included, 0xffff.
    #[inline]
    pub fn sum(self) -> u16 {
        u16::from_be_bytes(fold(self.acc).to_ne_bytes())
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
    c.add_bytes(&src.octets());
    c.add_bytes(&dst.octets());
    c.add_u32(len);
    c.add_u16(u16::from(proto));
    c
}

/// The unfolded sum of `data` as native-endian 16-bit words, for a caller that adds words
/// it loaded itself ([`add_carry`]) and checks the total with [`folds_to_ones`].
#[inline]
pub(crate) fn native_sum(data: &[u8]) -> u64 {
    sum_words(data)
}

/// Whether an unfolded native-endian sum folds to 0xffff, as the covered bytes of a correct
/// checksum do. 0xffff reads the same in both byte orders, so no swap is needed.
#[inline]
pub(crate) fn folds_to_ones(acc: u64) -> bool {
    // Folding keeps the value modulo 0xffff and maps only 0 to 0, so it gives 0xffff
    // exactly for the nonzero multiples of 0xffff. Multiplying by the inverse of 0xffff
    // modulo 2^64 maps those multiples onto 1..=u64::MAX / 0xffff and every other value
    // above that (0 to 0), so the test is a multiplication and a comparison, where folding
    // is a dozen instructions (and the compiler does not find the trick for `%` itself).
    acc.wrapping_mul(INV_ONES).wrapping_sub(1) < u64::MAX / 0xffff
}

/// The inverse of 0xffff modulo 2^64 (0xffff is odd), by Newton's iteration: each step
/// doubles the number of correct low bits, from the 3 that x = d gives.
const INV_ONES: u64 = {
    let d = 0xffffu64;
    let mut x = d;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(d.wrapping_mul(x)));
        i += 1;
    }
    assert!(d.wrapping_mul(x) == 1);
    x
};

/// An unfolded native-endian sum folded to 16 bits, still in native order: complemented,
/// it is a checksum field to store with `to_ne_bytes`.
#[inline]
pub(crate) fn fold_native(acc: u64) -> u16 {
    fold(acc)
}

/// [`native_sum`] of `src`, copying it into `dst` on the way; None, copying nothing, when
/// the lengths differ.
#[inline]
pub(crate) fn copy_native(dst: &mut [u8], src: &[u8]) -> Option<u64> {
    if dst.len() != src.len() {
        return None;
    }
    Some(copy_words(dst, src))
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
    fn folds_to_ones_agrees_with_fold() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..1_000_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Random sums, and multiples of 0xffff and their neighbours.
            let m = (x >> 20).wrapping_mul(0xffff);
            for v in [x, i, m, m.wrapping_add(1), m.wrapping_sub(1), u64::MAX - i] {
                assert_eq!(folds_to_ones(v), fold(v) == 0xffff, "{v:#x}");
            }
        }
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
    fn long_inputs_carry_around() {
        let data = vec![0xffu8; 3 << 20 | 5];
        assert_eq!(sum(&data), reference(&data));
        let mut out = vec![0u8; data.len()];
        let mut c = Checksum::new();
        assert!(c.copy_and_add(&mut out, &data));
        assert_eq!(c.sum(), reference(&data));
    }
}
