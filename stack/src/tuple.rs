//! The 4-tuple that names a TCP connection.

use std::net::SocketAddr;

/// A connection's identity: (local ip, local port, remote ip, remote port).
///
/// Both ends are always of the same address family.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
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

impl core::fmt::Display for FourTuple {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} -> {}", self.local, self.remote)
    }
}
