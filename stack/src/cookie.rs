//! SYN cookies (RFC 4987 §3.6): stateless SYN-ACKs for a listener whose SYN queue is full.
//!
//! This module owns the cookie encoding and nothing else: it never allocates state per SYN.
//! The ISN of a cookie SYN-ACK carries a 5-bit time counter (64 s periods), a 3-bit MSS
//! index and a 24-bit keyed hash over the 4-tuple, the peer's ISN, the counter and the
//! index. Window scale and SACK-permitted ride in the low bits of our TSval, which the
//! peer echoes back in TSecr; without timestamps they are not offered (as Linux does).

use crate::isn::{siphash24, wide, SipKey};

use crate::seq::SeqNum;
use crate::time::Instant;
use crate::tuple::FourTuple;

/// MSS values a cookie can carry; the peer's MSS is rounded down to one of them.
pub const MSS_TABLE: [u16; 8] = [216, 536, 1024, 1220, 1360, 1400, 1440, 1460];

const PERIOD_MICROS: u64 = 64_000_000;

/// Low TSval bits that carry options: 4 bits of window scale (15 = none) and SACK.
pub const TS_OPTION_BITS: u32 = 0x1f;

/// Makes and checks cookies with a per-stack secret.
#[derive(Clone)]
pub struct CookieJar {
    key: SipKey,
}

impl core::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CookieJar { .. }")
    }
}

/// What a valid cookie gives back.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct CookieInfo {
    /// The MSS the peer announced, rounded down to the table.
    pub mss: u16,
}

impl CookieJar {
    /// A jar keyed by `key`.
    pub fn new(key: [u8; 16]) -> CookieJar {
        CookieJar {
            key: SipKey::new(key),
        }
    }

    fn counter(now: Instant) -> u32 {
        ((now.micros() / PERIOD_MICROS) & 0x1f) as u32
    }

    fn mac(&self, tuple: &FourTuple, peer_isn: SeqNum, t: u32, m: u32) -> u32 {
        // One SipHash-2-4 over fixed words (a flood makes this the hot path): both
        // addresses (IPv4 as v4-mapped), both ports with the peer's ISN, and the period
        // and MSS index as the 4-byte tail.
        let (l, r) = (wide(tuple.local.ip()), wide(tuple.remote.ip()));
        let ports = u64::from(tuple.local.port()) << 16 | u64::from(tuple.remote.port());
        let words = [
            (l >> 64) as u64,
            l as u64,
            (r >> 64) as u64,
            r as u64,
            ports << 32 | u64::from(peer_isn.raw()),
        ];
        let h = siphash24(self.key, words, u64::from(t << 8 | m), 4);
        (h as u32) & 0x00ff_ffff
    }

    /// The ISN for a cookie SYN-ACK answering a SYN with `peer_isn` and `peer_mss`.
    pub fn make(&self, now: Instant, tuple: &FourTuple, peer_isn: SeqNum, peer_mss: u16) -> SeqNum {
        let m = MSS_TABLE.iter().rposition(|&v| v <= peer_mss).unwrap_or(0) as u32;
        let t = Self::counter(now);
        SeqNum(t << 27 | m << 24 | self.mac(tuple, peer_isn, t, m))
    }

    /// Checks the cookie an ACK returns (`ack - 1`) for the SYN whose ISN was `seq - 1`.
    /// Cookies are valid for the current and the previous period (64 to 128 s).
    pub fn check(
        &self,
        now: Instant,
        tuple: &FourTuple,
        peer_isn: SeqNum,
        cookie: SeqNum,
    ) -> Option<CookieInfo> {
        let c = cookie.raw();
        let t = c >> 27;
        let m = (c >> 24) & 7;
        let age = Self::counter(now).wrapping_sub(t) & 0x1f;
        if age > 1 {
            return None;
        }
        (self.mac(tuple, peer_isn, t, m) == c & 0x00ff_ffff).then(|| CookieInfo {
            mss: MSS_TABLE[m as usize],
        })
    }
}

/// Packs window scale (None = not offered) and SACK-permitted into TSval's low bits.
pub fn encode_ts_options(tsval: u32, wscale: Option<u8>, sack: bool) -> u32 {
    let ws = wscale.map(|w| w.min(14) as u32).unwrap_or(15);
    (tsval & !TS_OPTION_BITS) | ws | (sack as u32) << 4
}

/// Unpacks what [`encode_ts_options`] stored, from the TSecr the peer echoed.
pub fn decode_ts_options(tsecr: u32) -> (Option<u8>, bool) {
    let ws = tsecr & 0xf;
    ((ws != 15).then_some(ws as u8), tsecr & 0x10 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn tuple() -> FourTuple {
        FourTuple::new(
            "192.0.2.2:80".parse::<SocketAddr>().unwrap(),
            "192.0.2.1:40000".parse::<SocketAddr>().unwrap(),
        )
    }

    #[test]
    fn cookie_round_trips_with_mss_rounded_down() {
        let jar = CookieJar::new([7; 16]);
        let now = Instant::from_millis(5_000);
        let c = jar.make(now, &tuple(), SeqNum(1234), 1450);
        assert_eq!(
            jar.check(now, &tuple(), SeqNum(1234), c),
            Some(CookieInfo { mss: 1440 })
        );
    }

    #[test]
    fn cookie_fails_for_another_tuple_isn_or_key() {
        let jar = CookieJar::new([7; 16]);
        let now = Instant::from_millis(5_000);
        let c = jar.make(now, &tuple(), SeqNum(1234), 1460);
        assert_eq!(jar.check(now, &tuple(), SeqNum(1235), c), None);
        assert_eq!(jar.check(now, &tuple().reversed(), SeqNum(1234), c), None);
        assert_eq!(
            CookieJar::new([8; 16]).check(now, &tuple(), SeqNum(1234), c),
            None
        );
        assert_eq!(jar.check(now, &tuple(), SeqNum(1234), c + 1u32), None);
    }

    #[test]
    fn cookie_expires_after_two_periods() {
        let jar = CookieJar::new([7; 16]);
        let t0 = Instant::from_millis(1_000);
        let c = jar.make(t0, &tuple(), SeqNum(1), 1460);
        assert!(jar
            .check(
                t0 + core::time::Duration::from_secs(70),
                &tuple(),
                SeqNum(1),
                c
            )
            .is_some());
        assert!(jar
            .check(
                t0 + core::time::Duration::from_secs(130),
                &tuple(),
                SeqNum(1),
                c
            )
            .is_none());
    }

    #[test]
    fn ts_option_bits_round_trip() {
        for ws in [None, Some(0), Some(7), Some(14)] {
            for sack in [false, true] {
                let v = encode_ts_options(0xdead_beef, ws, sack);
                assert_eq!(decode_ts_options(v), (ws, sack));
                assert_eq!(v & !TS_OPTION_BITS, 0xdead_beef & !TS_OPTION_BITS);
            }
        }
    }
}
