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
use std::net::{IpAddr, SocketAddr};

use crate::seq::SeqNum;
use crate::time::Instant;
use crate::tuple::FourTuple;

/// A SipHash key as the two little-endian words the algorithm works on.
#[derive(Clone, Copy)]
pub(crate) struct SipKey(u64, u64);

impl SipKey {
    /// The key from its 16 bytes, as the SipHash paper reads them.
    pub(crate) fn new(key: [u8; 16]) -> Self {
        let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p] = key;
        SipKey(
            u64::from_le_bytes([a, b, c, d, e, f, g, h]),
            u64::from_le_bytes([i, j, k, l, m, n, o, p]),
        )
    }
}

/// SipHash-2-4 (Aumasson and Bernstein, 2012) of the message made of the 8 * N bytes of
/// `words` (each little-endian) followed by the low `tail_len` bytes of `tail` (also
/// little-endian; `tail_len` is taken modulo 8). Inputs here are a handful of fixed-size
/// fields, so taking them as whole words skips the byte buffering of a streaming hasher,
/// and N is a constant, so the compression loop unrolls. Packing the last bytes into the
/// final block, which carries the length anyway, saves a whole block for 12-byte inputs.
#[inline]
pub(crate) fn siphash24<const N: usize>(
    key: SipKey,
    words: [u64; N],
    tail: u64,
    tail_len: usize,
) -> u64 {
    #[inline(always)]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut v = [
        key.0 ^ 0x736f_6d65_7073_6575,
        key.1 ^ 0x646f_7261_6e64_6f6d,
        key.0 ^ 0x6c79_6765_6e65_7261,
        key.1 ^ 0x7465_6462_7974_6573,
    ];
    // The final block: the bytes left over, and the message length (mod 256) in the top byte.
    let tail_len = tail_len % 8;
    let tail = tail & ((1u64 << (8 * tail_len)) - 1);
    let last = tail | ((8 * N + tail_len) as u64) << 56;
    #[inline(always)]
    fn compress(v: &mut [u64; 4], m: u64) {
        v[3] ^= m;
        round(v);
        round(v);
        v[0] ^= m;
    }
    for m in words {
        compress(&mut v, m);
    }
    compress(&mut v, last);
    v[2] ^= 0xff;
    round(&mut v);
    round(&mut v);
    round(&mut v);
    round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// RFC 6528 ISN generator: keyed hash of the 4-tuple plus a 4 µs clock.
#[derive(Clone)]
pub struct IsnGenerator {
    key: SipKey,
}

impl fmt::Debug for IsnGenerator {
    // The secret must never reach a log (RFC 6528 §3: F's security rests on it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsnGenerator").finish_non_exhaustive()
    }
}

impl IsnGenerator {
    /// A generator keyed by `secret`, which the driver should draw from a CSPRNG once per
    /// boot (RFC 6528 §3 recommends a secret that is not guessable; changing it changes
    /// every tuple's ISN sequence, which is safe only across reboots).
    pub fn new(secret: [u8; 16]) -> Self {
        IsnGenerator {
            key: SipKey::new(secret),
        }
    }

    /// The ISN for a connection on `tuple` opened at `now`:
    /// SipHash-2-4(secret; local ip, remote ip, local port, remote port) + now/4 µs,
    /// wrapping (RFC 6528 §3; the 4 µs tick is RFC 9293 §3.4.1's ISN clock).
    pub fn isn(&self, now: Instant, tuple: &FourTuple) -> SeqNum {
        let f = f_tuple(self.key, &tuple.local, &tuple.remote) as u32;
        let m = (now.micros() / 4) as u32;
        SeqNum(f.wrapping_add(m))
    }

    /// [`IsnGenerator::isn`] and the connection's timestamp offset (RFC 7323 §5.4) from
    /// one hash: the ISN takes the low 32 bits of F, the offset the high 32. A peer sees
    /// both halves for its own 4-tuple only, which tells it nothing about another tuple's
    /// (F is a PRF); one hash per connection instead of two.
    pub fn isn_and_ts_offset(&self, now: Instant, tuple: &FourTuple) -> (SeqNum, u32) {
        let f = f_tuple(self.key, &tuple.local, &tuple.remote);
        let m = (now.micros() / 4) as u32;
        (SeqNum((f as u32).wrapping_add(m)), (f >> 32) as u32)
    }

    /// The timestamp offset [`IsnGenerator::isn_and_ts_offset`] gives `tuple`.
    pub fn ts_offset(&self, tuple: &FourTuple) -> u32 {
        (f_tuple(self.key, &tuple.local, &tuple.remote) >> 32) as u32
    }
}

/// RFC 6528's F over a 4-tuple: SipHash-2-4 of local ip, remote ip, local port, remote
/// port, packed into 64-bit words (12 bytes for IPv4, 36 for IPv6: the lengths keep the
/// families apart).
fn f_tuple(key: SipKey, local: &SocketAddr, remote: &SocketAddr) -> u64 {
    let ports = u64::from(local.port()) << 16 | u64::from(remote.port());
    match (local.ip(), remote.ip()) {
        (IpAddr::V4(l), IpAddr::V4(r)) => siphash24(
            key,
            [u64::from(l.to_bits()) << 32 | u64::from(r.to_bits())],
            ports,
            4,
        ),
        (l, r) => {
            let (l, r) = (wide(l), wide(r));
            siphash24(
                key,
                [(l >> 64) as u64, l as u64, (r >> 64) as u64, r as u64],
                ports,
                4,
            )
        }
    }
}

/// An address as 128 bits: IPv6 as is, IPv4 as its mapped IPv6 address (only for a tuple
/// that mixes families, which connect and listen never create).
pub(crate) fn wide(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().to_bits(),
        IpAddr::V6(a) => a.to_bits(),
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
    fn siphash_matches_the_reference() {
        use core::hash::Hasher;
        use siphasher::sip::SipHasher24;

        // The SipHash paper's key 00 01 .. 0f: the empty message, and 00 01 .. 07.
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        assert_eq!(siphash24(SipKey::new(key), [], 0, 0), 0x726f_db47_dd0e_0e31);
        assert_eq!(
            siphash24(SipKey::new(key), [0x0706_0504_0302_0100], 0, 0),
            0x93f5_f579_9a93_2462
        );
        // Against the siphasher crate on many keys and messages of 0 to 47 bytes.
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&next().to_le_bytes());
            key[8..].copy_from_slice(&next().to_le_bytes());
            let w: [u64; 5] = core::array::from_fn(|_| next());
            let tail = next();
            let bytes: Vec<u8> = w
                .iter()
                .chain([&tail])
                .flat_map(|w| w.to_le_bytes())
                .collect();
            let k = SipKey::new(key);
            for t in 0..8 {
                let reference = |n: usize| {
                    let mut h = SipHasher24::new_with_key(&key);
                    h.write(&bytes[..8 * n]);
                    h.write(&tail.to_le_bytes()[..t]);
                    h.finish()
                };
                assert_eq!(siphash24(k, [], tail, t), reference(0));
                assert_eq!(siphash24(k, [w[0]], tail, t), reference(1));
                assert_eq!(siphash24(k, [w[0], w[1]], tail, t), reference(2));
                assert_eq!(
                    siphash24(k, [w[0], w[1], w[2], w[3]], tail, t),
                    reference(4)
                );
                assert_eq!(siphash24(k, w, tail, t), reference(5));
            }
        }
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
