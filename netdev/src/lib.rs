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
}
