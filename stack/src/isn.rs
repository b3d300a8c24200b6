//! Initial sequence numbers, RFC 6528.
//!
//! It owns the ISN function `ISN = M + F(localip, localport, remoteip, remoteport, secretkey)`
//! (RFC 6528 §3), with F = SipHash-2-4 keyed by the stack's secret and M a 4 µs clock. It
//! never reads a clock (`now` comes from the driver) and never draws randomness: the
//! driver supplies the secret.
//!
//! Because M advances by one every 4 µs and F is fixed for a 4-tuple, successive
//! incarnations of the same 4-tuple get increasing ISNs (in modular order, for incarnations
//! less than 2^31 * 4 µs, about 2.4 hours, apart), which the TIME_WAIT reopen rule
//! (RFC 1122 §4.2.2.13) relies on. Different 4-tuples get unrelated ISNs, so an off-path
//! attacker cannot predict one connection's ISN from another's (RFC 6528 §1).

use core::fmt;
use core::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

use siphasher::sip::SipHasher24;

use crate::seq::SeqNum;
use crate::time::Instant;
use crate::tuple::FourTuple;

/// RFC 6528 ISN generator: keyed hash of the 4-tuple plus a 4 µs clock.
#[derive(Clone)]
pub struct IsnGenerator {
    secret: [u8; 16],
}

impl fmt::Debug for IsnGenerator {
    // The secret must never reach a log (RFC 6528 §3: F's security rests on it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsnGenerator").finish_non_exhaustive()
    }
}

/// Feeds one end of the tuple into the hash, in a fixed, platform-independent encoding.
fn write_addr(h: &mut SipHasher24, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => h.write(&ip.octets()),
        IpAddr::V6(ip) => h.write(&ip.octets()),
    }
    h.write(&a.port().to_be_bytes());
}

impl IsnGenerator {
    /// A generator keyed by `secret`, which the driver should draw from a CSPRNG once per
    /// boot (RFC 6528 §3 recommends a secret that is not guessable; changing it changes
    /// every tuple's ISN sequence, which is safe only across reboots).
    pub fn new(secret: [u8; 16]) -> Self {
        IsnGenerator { secret }
    }

    /// The ISN for a connection on `tuple` opened at `now`:
    /// SipHash-2-4(secret; local ip, local port, remote ip, remote port) + now/4 µs,
    /// wrapping (RFC 6528 §3; the 4 µs tick is RFC 9293 §3.4.1's ISN clock).
    pub fn isn(&self, now: Instant, tuple: &FourTuple) -> SeqNum {
        let mut h = SipHasher24::new_with_key(&self.secret);
        write_addr(&mut h, &tuple.local);
        write_addr(&mut h, &tuple.remote);
        let f = h.finish() as u32;
        let m = (now.micros() / 4) as u32;
        SeqNum(f.wrapping_add(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn t(lport: u16, rport: u16) -> FourTuple {
        FourTuple::new(
            SocketAddr::from(([192, 0, 2, 2], lport)),
            SocketAddr::from(([192, 0, 2, 1], rport)),
        )
    }

    #[test]
    fn deterministic_for_same_input() {
        let g = IsnGenerator::new([9; 16]);
        let now = Instant::from_micros(123_456_789);
        assert_eq!(g.isn(now, &t(40000, 80)), g.isn(now, &t(40000, 80)));
        assert_eq!(
            g.isn(now, &t(40000, 80)),
            IsnGenerator::new([9; 16]).isn(now, &t(40000, 80))
        );
    }

    #[test]
    fn different_tuples_and_secrets_differ() {
        let g = IsnGenerator::new([9; 16]);
        let now = Instant::from_micros(1_000);
        let a = g.isn(now, &t(40000, 80));
        assert_ne!(a, g.isn(now, &t(40001, 80)));
        assert_ne!(a, g.isn(now, &t(40000, 81)));
        assert_ne!(a, g.isn(now, &t(40000, 80).reversed()));
        let v6 = FourTuple::new(
            "[2001:db8::2]:40000".parse().unwrap(),
            "[2001:db8::1]:80".parse().unwrap(),
        );
        assert_ne!(a, g.isn(now, &v6));
        assert_ne!(a, IsnGenerator::new([8; 16]).isn(now, &t(40000, 80)));
        // Many tuples: practically all distinct.
        let mut seen: Vec<u32> = (0..1000).map(|p| g.isn(now, &t(p, 80)).raw()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() >= 999);
    }

    #[test]
    fn successive_incarnations_get_greater_isns() {
        let g = IsnGenerator::new([1; 16]);
        let tuple = t(40000, 80);
        let mut now = Instant::from_micros(5);
        let mut prev = g.isn(now, &tuple);
        // From one tick to over an hour apart.
        for step_us in [4u64, 1_000, 1_000_000, 60_000_000, 3_600_000_000] {
            now = now + Duration::from_micros(step_us);
            let next = g.isn(now, &tuple);
            assert!(next > prev, "{prev} !< {next} after {step_us} us");
            assert_eq!(next - prev, (step_us / 4) as u32);
            prev = next;
        }
        // Across the wrap of the 32-bit clock M (every 2^32 * 4 us, ~4.8 hours).
        let before = Instant::from_micros((1u64 << 34) - 8);
        let after = Instant::from_micros((1u64 << 34) + 8);
        assert!(g.isn(after, &tuple) > g.isn(before, &tuple));
    }
}
