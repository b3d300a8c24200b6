//! Ephemeral port selection, RFC 6056 §3.3.4 (Algorithm 4, "Double-Hash Port Selection").
//!
//! It owns the search order over the configured ephemeral range: where the search for a
//! destination starts and how successive searches for it move on. It does not know which
//! ports are taken: the caller's `is_free` predicate decides that (4-tuple aware, under the
//! TIME_WAIT reuse policy), so this module never looks at connections or the TIME_WAIT
//! table itself.
//!
//! Algorithm 4: `offset = F(local ip, remote ip, remote port, secret)` spreads destinations
//! over the range, so the port used towards one destination reveals nothing about those
//! used towards others (RFC 6056 §3.3.3); `table[G(local ip, remote ip, remote port,
//! secret2) % TABLE_LENGTH]` is a per-bucket counter added to the offset and bumped on every
//! probe, so successive connections to one destination walk the range sequentially instead
//! of colliding on the port just released (which would sit in TIME_WAIT), maximising the
//! time before a 4-tuple is reused (§3.3.4). F and G are disjoint bits of one SipHash-2-4
//! output keyed by the secret, which makes them independent at the cost of one hash.

use core::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::isn::{siphash24, wide, SipKey};

/// Number of perturbation counters (RFC 6056's TABLE_LENGTH). More buckets means fewer
/// unrelated destinations sharing a counter, hence fewer unnecessary jumps; 256 `u16`s is
/// 512 bytes.
const TABLE_LENGTH: usize = 256;

/// RFC 6056 Algorithm 4 ephemeral port allocator over an inclusive port range.
#[derive(Clone)]
pub struct EphemeralPorts {
    lo: u16,
    hi: u16,
    key: SipKey,
    /// Per-bucket counters, each kept below the range size so a search of n probes
    /// covers n consecutive values modulo n: every port exactly once.
    table: [u16; TABLE_LENGTH],
}

impl fmt::Debug for EphemeralPorts {
    // The secret stays out of logs: it is what makes the offsets unpredictable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EphemeralPorts")
            .field("range", &(self.lo, self.hi))
            .finish_non_exhaustive()
    }
}

impl EphemeralPorts {
    /// An allocator over the inclusive `range` (like `ip_local_port_range`), keyed by
    /// `secret` (draw it from a CSPRNG once per boot).
    ///
    /// A reversed range is swapped; port 0 is never handed out (it means "any" in
    /// `bind`), so a low end of 0 is treated as 1, and `(0, 0)` becomes `(1, 1)`.
    pub fn new(range: (u16, u16), secret: [u8; 16]) -> Self {
        let (a, b) = range;
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let lo = lo.max(1);
        let hi = hi.max(lo);
        EphemeralPorts {
            lo,
            hi,
            key: SipKey::new(secret),
            table: [0; TABLE_LENGTH],
        }
    }

    /// The inclusive range actually used (after the adjustments of [`new`](Self::new)).
    pub fn range(&self) -> (u16, u16) {
        (self.lo, self.hi)
    }

    /// Keyed hash of the destination as seen from `local_ip`: SipHash-2-4 of local ip,
    /// remote ip, remote port packed into 64-bit words (10 bytes for IPv4, 34 for IPv6).
    /// One call serves both of RFC 6056's functions: F (the offset) takes the low 32 bits
    /// and G (the table index) the top 8; disjoint bits of a PRF's output are independent,
    /// as the RFC requires of F and G.
    fn hash(&self, local_ip: IpAddr, remote: SocketAddr) -> u64 {
        let port = u64::from(remote.port());
        match (local_ip, remote.ip()) {
            (IpAddr::V4(l), IpAddr::V4(r)) => siphash24(
                self.key,
                [u64::from(l.to_bits()) << 32 | u64::from(r.to_bits())],
                port,
                2,
            ),
            (l, r) => {
                let (l, r) = (wide(l), wide(r));
                siphash24(
                    self.key,
                    [(l >> 64) as u64, l as u64, (r >> 64) as u64, r as u64],
                    port,
                    2,
                )
            }
        }
    }

    /// Searches the range starting at the RFC 6056 offset for this destination; returns the first port p for which is_free(p) is true. None when every port in the range is refused (exhaustion). Visits each port at most once.
    ///
    /// The bucket counter advances with every probe, including the successful one, so
    /// the next search towards the same destination starts just after the port returned
    /// (RFC 6056 §3.3.4).
    pub fn allocate(
        &mut self,
        local_ip: IpAddr,
        remote: SocketAddr,
        mut is_free: impl FnMut(u16) -> bool,
    ) -> Option<u16> {
        let n = u32::from(self.hi) - u32::from(self.lo) + 1;
        let h = self.hash(local_ip, remote);
        let offset = (h as u32) % n;
        let index = (h >> 56) as usize % TABLE_LENGTH;
        for _ in 0..n {
            let step = u32::from(self.table[index]) % n;
            // lo + (offset + step) % n <= hi <= 65535, so the cast is lossless.
            let port = self.lo + ((offset + step) % n) as u16;
            // Kept below n (<= 65535): n successive probes see n distinct steps.
            self.table[index] = ((step + 1) % n) as u16;
            if is_free(port) {
                return Some(port);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn dst(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn every_port_in_range_is_eventually_returned() {
        let mut p = EphemeralPorts::new((1000, 1031), [5; 16]);
        for want in 1000..=1031u16 {
            let got = p.allocate(LOCAL, dst(80), |q| q == want);
            assert_eq!(got, Some(want));
        }
    }

    #[test]
    fn exhaustion_returns_none_after_visiting_each_port_once() {
        let mut p = EphemeralPorts::new((40000, 40999), [5; 16]);
        // Move the counter somewhere arbitrary first.
        for _ in 0..7 {
            p.allocate(LOCAL, dst(80), |_| true);
        }
        let mut seen = vec![0u32; 1000];
        let got = p.allocate(LOCAL, dst(80), |q| {
            seen[(q - 40000) as usize] += 1;
            false
        });
        assert_eq!(got, None);
        assert!(seen.iter().all(|&c| c == 1), "each port exactly once");
    }

    #[test]
    fn different_destinations_start_at_different_offsets() {
        let mut firsts = Vec::new();
        for port in 1..=50u16 {
            let mut p = EphemeralPorts::new((32768, 60999), [5; 16]);
            firsts.push(p.allocate(LOCAL, dst(port), |_| true).unwrap());
        }
        firsts.sort_unstable();
        firsts.dedup();
        assert!(firsts.len() >= 45, "only {} distinct offsets", firsts.len());
        // And the local address matters too.
        let mut p = EphemeralPorts::new((32768, 60999), [5; 16]);
        let a = p.allocate(LOCAL, dst(80), |_| true);
        let mut p = EphemeralPorts::new((32768, 60999), [5; 16]);
        let b = p.allocate("192.0.2.3".parse().unwrap(), dst(80), |_| true);
        assert_ne!(a, b);
    }

    #[test]
    fn successive_allocations_to_a_destination_move_on() {
        let mut p = EphemeralPorts::new((32768, 60999), [5; 16]);
        let ports: Vec<u16> = (0..10)
            .map(|_| p.allocate(LOCAL, dst(80), |_| true).unwrap())
            .collect();
        for w in ports.windows(2) {
            let next = if w[0] == 60999 { 32768 } else { w[0] + 1 };
            assert_eq!(w[1], next, "sequential within one destination");
        }
    }

    #[test]
    fn range_of_size_one_works() {
        let mut p = EphemeralPorts::new((5000, 5000), [5; 16]);
        assert_eq!(p.allocate(LOCAL, dst(80), |_| true), Some(5000));
        assert_eq!(p.allocate(LOCAL, dst(81), |_| true), Some(5000));
        let mut calls = 0;
        assert_eq!(
            p.allocate(LOCAL, dst(80), |_| {
                calls += 1;
                false
            }),
            None
        );
        assert_eq!(calls, 1);
    }

    #[test]
    fn full_range_works() {
        let mut p = EphemeralPorts::new((0, 65535), [5; 16]);
        assert_eq!(p.range(), (1, 65535));
        assert!(p.allocate(LOCAL, dst(80), |_| true).is_some());
        let mut seen = vec![false; 65536];
        let got = p.allocate(LOCAL, dst(80), |q| {
            assert!(!seen[q as usize], "port {q} visited twice");
            seen[q as usize] = true;
            false
        });
        assert_eq!(got, None);
        assert!(!seen[0]);
        assert!(seen[1..].iter().all(|&s| s));
        // The top port is reachable.
        assert_eq!(p.allocate(LOCAL, dst(80), |q| q == 65535), Some(65535));
    }

    #[test]
    fn range_is_normalised() {
        assert_eq!(
            EphemeralPorts::new((60999, 32768), [0; 16]).range(),
            (32768, 60999)
        );
        assert_eq!(EphemeralPorts::new((0, 0), [0; 16]).range(), (1, 1));
        assert_eq!(EphemeralPorts::new((10, 0), [0; 16]).range(), (1, 10));
    }

    #[test]
    fn ipv6_destinations_work() {
        let mut p = EphemeralPorts::new((32768, 60999), [5; 16]);
        let got = p.allocate(
            "2001:db8::2".parse().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
            |_| true,
        );
        assert!(got.is_some_and(|q| (32768..=60999).contains(&q)));
    }
}
