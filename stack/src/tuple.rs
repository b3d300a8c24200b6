//! The 4-tuple that names a TCP connection.

use std::net::SocketAddr;

/// A connection's identity: (local ip, local port, remote ip, remote port).
///
/// Both ends are always of the same address family.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct FourTuple {
    /// This host's address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
}

impl FourTuple {
    /// Builds a tuple from its two ends.
    pub fn new(local: SocketAddr, remote: SocketAddr) -> FourTuple {
        FourTuple { local, remote }
    }

    /// The same connection seen from the peer.
    pub fn reversed(self) -> FourTuple {
        FourTuple {
            local: self.remote,
            remote: self.local,
        }
    }
}

impl core::hash::Hash for FourTuple {
    /// Hashes the addresses and ports only (not IPv6 flow info or scope, which never
    /// differ within a connection), as two or five word-sized writes: this hash runs for
    /// every packet.
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        use std::net::SocketAddr::{V4, V6};
        let ports = (self.local.port() as u32) << 16 | self.remote.port() as u32;
        match (self.local, self.remote) {
            (V4(l), V4(r)) => {
                state.write_u64((u32::from(*l.ip()) as u64) << 32 | u32::from(*r.ip()) as u64);
                state.write_u32(ports);
            }
            (l, r) => {
                let bits = |a: std::net::SocketAddr| match a {
                    V4(a) => u32::from(*a.ip()) as u128,
                    V6(a) => u128::from(*a.ip()),
                };
                state.write_u128(bits(l));
                state.write_u128(bits(r));
                state.write_u32(ports);
            }
        }
    }
}

/// A 4-tuple as plain integers: the connection table's key. Hashing and comparing it is
/// a few integer operations, where two `SocketAddr`s compare variant by variant (and
/// IPv6 flow info and scope, which never tell connections apart).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct TupleKey {
    local: u128,
    remote: u128,
    /// Local port << 16 | remote port, plus bit 32 for IPv6 (so an IPv4 tuple never
    /// equals an IPv6 one written with v4-mapped addresses).
    ports: u64,
}

impl From<&FourTuple> for TupleKey {
    fn from(t: &FourTuple) -> TupleKey {
        use std::net::SocketAddr::{V4, V6};
        let bits = |a: &std::net::SocketAddr| match a {
            V4(a) => u32::from(*a.ip()) as u128,
            V6(a) => u128::from(*a.ip()),
        };
        let v6 = matches!(t.local, V6(_)) as u64;
        TupleKey {
            local: bits(&t.local),
            remote: bits(&t.remote),
            ports: v6 << 32 | (t.local.port() as u64) << 16 | t.remote.port() as u64,
        }
    }
}

impl core::fmt::Display for FourTuple {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} -> {}", self.local, self.remote)
    }
}
