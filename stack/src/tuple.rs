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

impl core::fmt::Display for FourTuple {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} -> {}", self.local, self.remote)
    }
}
