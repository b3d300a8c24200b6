//! fourtuple-netdev: the devices that carry a fourtuple stack's packets.
//!
//! It owns moving whole packets between a [`fourtuple_stack`] stack and the world: the
//! [`Device`] trait, the real devices ([`tun::TunDevice`] for raw IP, [`af_packet::AfPacketDevice`]
//! for Ethernet frames, [`datagram::DatagramDevice`] for root-free tests), the mio
//! [`event_loop::EventLoop`] that drives a stack over one of them with applications on
//! top, the in-memory simulated-time [`pipe::Pipe`] that joins two stacks in tests and
//! benches, the [`pcap::PcapWriter`] tee that records what passes, and the [`gso`] merging
//! of outgoing segments that a TUN with offloads uses. It must never parse or build
//! protocol headers beyond what emulating a NIC's offloads needs (checksum completion,
//! GSO merging of segments the stack already built), run TCP logic, or decide what to
//! send: that is the stack's job. Only real devices and the event loop may touch the OS; the pipe and pcap modules
//! read no clock.

#![forbid(unsafe_code)]

pub mod af_packet;
pub mod datagram;
pub mod event_loop;
pub mod gso;
pub mod pcap;
pub mod pipe;
pub mod tun;

pub use af_packet::AfPacketDevice;
pub use datagram::DatagramDevice;
pub use event_loop::{
    App, Control, EventLoop, LoopClock, LoopError, LoopOptions, LoopStats, StopHandle, StopReason,
};
pub use tun::{TunConfig, TunCounters, TunDevice};

pub use pcap::{LinkType, PcapWriter};
pub use pipe::{End, Impairment, Pipe, PipeStats};

/// A packet device: moves whole packets (raw IP for TUN, Ethernet frames for AF_PACKET)
/// without blocking.
///
/// The event loop waits for readiness itself (with mio on the device's fd), then drains
/// [`Device::recv`] until it returns `Ok(None)` and hands the stack's transmits to
/// [`Device::send`].
pub trait Device {
    /// Reads up to one packet into `buf` without blocking; `Ok(None)` when nothing is
    /// pending. A packet longer than `buf` is the device's to drop or truncate, as it
    /// documents.
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>>;

    /// Sends one whole packet; `Err(WouldBlock)` when the device cannot take it now. A
    /// device may hold packets it took (to merge them) until [`Device::flush`].
    fn send(&mut self, packet: &[u8]) -> std::io::Result<()>;

    /// Writes out whatever [`Device::send`] took and still holds. The event loop calls it
    /// after every burst of sends, before it waits.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    /// The device's MTU: the largest packet [`Device::send`] takes, and the buffer size
    /// [`Device::recv`] needs.
    fn mtu(&self) -> usize;

    /// Whether the transport checksum of the packet the last [`Device::recv`] returned
    /// needs no verification: the device checked it, or the packet came from the local
    /// host with its checksum left for the device (Linux's `CHECKSUM_PARTIAL`), which
    /// never crossed a wire. The event loop then hands it to
    /// [`Stack::receive_trusted`](fourtuple_stack::Stack::receive_trusted).
    fn rx_checksum_trusted(&self) -> bool {
        false
    }

    /// Asks the device to complete checksums it would otherwise leave partial on trusted
    /// packets, so that a capture of what it hands up shows valid checksums. The event
    /// loop calls it when a pcap file is written.
    fn complete_rx_checksums(&mut self) {}

    /// Packets the kernel dropped on this device so far, when it keeps such counts for
    /// it (a TUN does: a full transmit queue toward the stack is where bursts are lost).
    fn kernel_drops(&self) -> Option<KernelDrops> {
        None
    }
}

/// Packets the kernel dropped at a device's interface, by direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelDrops {
    /// On their way to the stack: the interface's transmit drops (its queue was full).
    pub toward_stack: u64,
    /// Written by the stack and dropped on entry: the interface's receive drops.
    pub from_stack: u64,
}

/// The kernel's drop counters for interface `ifname` in the calling thread's network
/// namespace, from `/proc/thread-self/net/dev` (sysfs would show the namespace it was
/// mounted in, which need not be this thread's).
pub fn interface_drops(ifname: &str) -> std::io::Result<KernelDrops> {
    let table = std::fs::read_to_string("/proc/thread-self/net/dev")?;
    parse_net_dev_drops(&table, ifname).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no interface {ifname:?} in /proc/thread-self/net/dev"),
        )
    })
}

/// The drop columns of `ifname`'s row of a `/proc/net/dev` table: receive drops are the
/// 4th number, transmit drops the 12th.
fn parse_net_dev_drops(table: &str, ifname: &str) -> Option<KernelDrops> {
    table.lines().skip(2).find_map(|line| {
        let (name, counts) = line.split_once(':')?;
        if name.trim() != ifname {
            return None;
        }
        let n: Vec<u64> = counts
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        Some(KernelDrops {
            toward_stack: *n.get(11)?,
            from_stack: *n.get(3)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_columns_of_proc_net_dev() {
        let table = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:   91526    1463    0    0    0     0          0         0    91526    1463    0    0    0     0       0          0
   ft0:12345678901 99 1 7 0 0 0 0 555 66 2 1405 0 0 0 0
  ft01:       0       0    0    3    0     0          0         0        0       0    0    9    0     0       0          0
";
        assert_eq!(
            parse_net_dev_drops(table, "ft0"),
            Some(KernelDrops {
                toward_stack: 1405,
                from_stack: 7
            })
        );
        assert_eq!(
            parse_net_dev_drops(table, "ft01"),
            Some(KernelDrops {
                toward_stack: 9,
                from_stack: 3
            })
        );
        assert_eq!(parse_net_dev_drops(table, "ft"), None);
        assert_eq!(parse_net_dev_drops("garbage\n\n ft0: 1 2\n", "ft0"), None);
    }

    #[test]
    fn loopback_has_drop_counters() {
        // Every network namespace has `lo`; reading it needs no privilege.
        assert!(interface_drops("lo").is_ok());
        assert!(interface_drops("no-such-if").is_err());
    }
}
