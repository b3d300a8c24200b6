//! fourtuple-stack: the sans-IO core of fourtuple.
//!
//! It owns the TCP state machine, the exact-4-tuple TIME_WAIT table, the ephemeral port
//! allocator, ISN generation, ICMP echo and the counters. It must never touch a socket,
//! a thread or a clock: the driver passes every packet and every `now` in, and takes every
//! packet out with [`Stack::poll_transmit`].

#![forbid(unsafe_code)]

pub mod checksum;
pub mod config;
mod conn_index;
pub mod cookie;
pub mod error;
pub mod ethernet;
mod fifo;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod isn;
pub mod ports;
pub mod seq;
mod stack;
pub mod tcp;
pub mod time;
pub mod time_wait;
mod timers;
pub mod tuple;
pub mod wire;

pub use config::{Config, Medium, ReusePolicy, TwOverflow};
pub use error::{Error, InUse};
pub use seq::SeqNum;
pub use stack::{ConnHandle, ConnectOptions, Counters, Event, ListenerHandle, Stack};
pub use tcp::{ConnError, EventSet, SegDrop, SocketOptions, TcpState};
pub use time::Instant;
pub use time_wait::{TimeWaitEntry, TimeWaitTable};
pub use tuple::FourTuple;
pub use wire::DropReason;
