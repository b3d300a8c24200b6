//! fourtuple: a userspace TCP/IP stack with an exact-4-tuple TIME_WAIT table.
//!
//! This facade re-exports the sans-IO core ([`stack`]) and the devices ([`netdev`]).

pub use fourtuple_netdev as netdev;
pub use fourtuple_stack as stack;
