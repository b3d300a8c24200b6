//! TCP sequence numbers with modular (RFC 9293 §3.4) comparison.
//!
//! Raw `u32` sequence numbers must never be compared with `<`: the space wraps. Every
//! comparison in the stack goes through [`SeqNum`], whose ordering is "a is before b when
//! b - a, taken as a signed 32-bit number, is positive".

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A 32-bit TCP sequence number with wrapping arithmetic and modular ordering.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
pub struct SeqNum(pub u32);

impl SeqNum {
    /// The raw value as carried on the wire.
    #[inline]
    pub fn raw(self) -> u32 {
        self.0
    }

    /// Signed distance from `self` to `other` (positive when `other` is after `self`).
    #[inline]
    pub fn distance_to(self, other: SeqNum) -> i32 {
        other.0.wrapping_sub(self.0) as i32
    }

    /// True when `self` lies in the half-open range `[lo, hi)` of sequence space.
    #[inline]
    pub fn in_range(self, lo: SeqNum, hi: SeqNum) -> bool {
        self.0.wrapping_sub(lo.0) < hi.0.wrapping_sub(lo.0)
    }

    /// The later of two sequence numbers in modular order.
    #[inline]
    pub fn max(self, other: SeqNum) -> SeqNum {
        if self < other {
            other
        } else {
            self
        }
    }

    /// The earlier of two sequence numbers in modular order.
    #[inline]
    pub fn min(self, other: SeqNum) -> SeqNum {
        if self < other {
            self
        } else {
            other
        }
    }
}

impl PartialOrd for SeqNum {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SeqNum {
    /// Modular order. Not a total order over the whole space (it is not transitive across
    /// more than 2^31), which is exactly TCP's rule; within one window it is consistent.
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        (self.0.wrapping_sub(other.0) as i32).cmp(&0)
    }
}

impl Add<u32> for SeqNum {
    type Output = SeqNum;
    #[inline]
    fn add(self, rhs: u32) -> SeqNum {
        SeqNum(self.0.wrapping_add(rhs))
    }
}

impl Add<usize> for SeqNum {
    type Output = SeqNum;
    #[inline]
    fn add(self, rhs: usize) -> SeqNum {
        SeqNum(self.0.wrapping_add(rhs as u32))
    }
}

impl AddAssign<u32> for SeqNum {
    #[inline]
    fn add_assign(&mut self, rhs: u32) {
        self.0 = self.0.wrapping_add(rhs);
    }
}

impl AddAssign<usize> for SeqNum {
    #[inline]
    fn add_assign(&mut self, rhs: usize) {
        self.0 = self.0.wrapping_add(rhs as u32);
    }
}

impl Sub<SeqNum> for SeqNum {
    /// Number of sequence numbers from `rhs` up to `self`, assuming `rhs <= self`.
    type Output = u32;
    #[inline]
    fn sub(self, rhs: SeqNum) -> u32 {
        self.0.wrapping_sub(rhs.0)
    }
}

impl Sub<u32> for SeqNum {
    type Output = SeqNum;
    #[inline]
    fn sub(self, rhs: u32) -> SeqNum {
        SeqNum(self.0.wrapping_sub(rhs))
    }
}

impl fmt::Debug for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_wraps() {
        assert!(SeqNum(u32::MAX) < SeqNum(0));
        assert!(SeqNum(0) > SeqNum(u32::MAX - 10));
        assert!(SeqNum(5) < SeqNum(6));
        assert_eq!(SeqNum(3) - SeqNum(u32::MAX), 4);
        assert_eq!(SeqNum(u32::MAX) + 2u32, SeqNum(1));
    }

    #[test]
    fn in_range_wraps() {
        assert!(SeqNum(1).in_range(SeqNum(u32::MAX), SeqNum(5)));
        assert!(!SeqNum(5).in_range(SeqNum(u32::MAX), SeqNum(5)));
        assert!(!SeqNum(7).in_range(SeqNum(7), SeqNum(7)));
    }
}
