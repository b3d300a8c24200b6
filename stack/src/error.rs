//! Errors returned by the stack's application API.

use crate::tcp::ConnError;

/// What holds a 4-tuple or local address that a call wanted.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum InUse {
    /// A live connection has this exact 4-tuple.
    Connection,
    /// A TIME_WAIT entry has this exact 4-tuple.
    TimeWait,
    /// Under the local-port policy: a TIME_WAIT entry holds this local ip:port.
    LocalPortTimeWait,
    /// A listener is bound to this address.
    Listener,
}

impl core::fmt::Display for InUse {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            InUse::Connection => "4-tuple held by a live connection",
            InUse::TimeWait => "4-tuple in TIME_WAIT",
            InUse::LocalPortTimeWait => "local port held by a TIME_WAIT entry (local-port policy)",
            InUse::Listener => "a listener is bound there",
        })
    }
}

/// Errors of the application API. They convert into `std::io::Error` at the edge.
#[derive(Copy, Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Error {
    /// The 4-tuple or address is taken (EADDRINUSE).
    #[error("address in use: {0}")]
    AddrInUse(InUse),
    /// The local address is not one of this host's (EADDRNOTAVAIL).
    #[error("address not available")]
    AddrNotAvailable,
    /// Every ephemeral port is taken for this destination (EADDRNOTAVAIL).
    #[error("no ephemeral port left for this destination")]
    NoEphemeralPort,
    /// `max_connections` reached.
    #[error("connection limit reached")]
    ConnectionLimit,
    /// The handle is stale or was released.
    #[error("invalid or released handle")]
    InvalidHandle,
    /// The call does not fit the connection's state.
    #[error("invalid state: {0}")]
    InvalidState(&'static str),
    /// A malformed address argument.
    #[error("invalid address: {0}")]
    InvalidAddress(&'static str),
    /// Nothing can be done right now; wait for an event.
    #[error("operation would block")]
    WouldBlock,
    /// The connection ended with an error.
    #[error("connection error: {0:?}")]
    Connection(ConnError),
}

impl Error {
    /// The outcome name in DESIGN.md's fixed vocabulary.
    pub fn outcome(&self) -> &'static str {
        match self {
            Error::AddrInUse(_) => "addr-in-use",
            Error::AddrNotAvailable | Error::NoEphemeralPort => "addr-not-available",
            Error::Connection(ConnError::Refused) => "refused",
            Error::Connection(ConnError::Reset) | Error::Connection(ConnError::Aborted) => "reset",
            Error::Connection(ConnError::TimedOut) => "timeout",
            _ => "error",
        }
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        use std::io::ErrorKind as K;
        let kind = match e {
            Error::AddrInUse(_) => K::AddrInUse,
            Error::AddrNotAvailable | Error::NoEphemeralPort => K::AddrNotAvailable,
            Error::WouldBlock => K::WouldBlock,
            Error::Connection(ConnError::Refused) => K::ConnectionRefused,
            Error::Connection(ConnError::Reset) => K::ConnectionReset,
            Error::Connection(ConnError::Aborted) => K::ConnectionAborted,
            Error::Connection(ConnError::TimedOut) => K::TimedOut,
            Error::InvalidAddress(_) => K::InvalidInput,
            _ => K::Other,
        };
        std::io::Error::new(kind, e)
    }
}
