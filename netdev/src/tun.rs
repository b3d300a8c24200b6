//! A Linux TUN device (`IFF_TUN | IFF_NO_PI`, non-blocking): raw IPv4/IPv6 packets.
//!
//! This module owns creating (or attaching to) a TUN interface with the `tun-rs` crate,
//! setting up the host side of it (the kernel's address on the interface, IPv6 off, link
//! up), and moving whole packets through its file descriptor; with offloads on, also the
//! virtio-net header and what a NIC's offloads would do (finish partial checksums on reads,
//! merge segments into GSO super-packets on writes, see [`crate::gso`]). It must never
//! otherwise look inside the packets, choose the stack's addresses, or touch any interface
//! other than the one it created: the host side gets exactly the address the caller passes.
//!
//! The kernel is the TUN's "host side": packets the kernel routes to the interface come out
//! of [`TunDevice::recv`], and packets written with [`TunDevice::send`] enter the kernel as
//! if they had arrived on it. The interface disappears when the device is dropped (unless it
//! was made persistent beforehand, e.g. with `ip tuntap add`).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};

use fourtuple_stack::checksum::Checksum;

use crate::gso::{Coalescer, GsoStats};
use crate::Device;

/// The MTU fourtuple gives a TUN it creates (the stack's default MSS assumes 1500).
pub const DEFAULT_MTU: u16 = 1500;

/// How to set up a TUN interface.
#[derive(Clone, Debug)]
pub struct TunConfig {
    /// The interface name, e.g. `ft0` (at most 15 bytes).
    pub name: String,
    /// The kernel's address and prefix length on the interface, if any. With it, the
    /// kernel routes the prefix through the TUN.
    pub host_addr: Option<(Ipv4Addr, u8)>,
    /// The interface MTU.
    pub mtu: u16,
    /// Turn IPv6 off on the interface before it comes up, so the kernel sends no router
    /// solicitations or other IPv6 noise into it.
    pub disable_ipv6: bool,
    /// Open the TUN with `IFF_VNET_HDR` and TSO/checksum offloads (`TUNSETOFFLOAD`): the
    /// kernel may then hand over TCP segments larger than the MTU (GSO "super-packets", as
    /// veth does with TSO/GRO) with their checksum left for the device to finish. See
    /// [`TunDevice`] for what reaches the stack.
    pub offload: bool,
    /// The kernel's transmit queue toward the TUN, in packets (`txqueuelen`; the kernel's
    /// default for a TUN is 500). When the stack reads slower than the kernel sends, what
    /// does not fit is dropped; a queue that holds a whole receive window avoids that.
    pub tx_queue_len: Option<u32>,
}

impl TunConfig {
    /// A TUN named `name` with no host address, MTU [`DEFAULT_MTU`] and IPv6 off.
    pub fn new(name: impl Into<String>) -> TunConfig {
        TunConfig {
            name: name.into(),
            host_addr: None,
            mtu: DEFAULT_MTU,
            disable_ipv6: true,
            offload: false,
            tx_queue_len: None,
        }
    }
}

/// A TUN interface opened non-blocking, without packet information: each read is one IP
/// packet, each write one IP packet.
///
/// With [`TunConfig::offload`], every read and write also carries a 10-byte virtio-net
/// header, moved with `readv`/`writev` so the packet itself is never copied. On reads the
/// device does what a NIC with checksum offload does for its driver: a packet whose header
/// says `NEEDS_CSUM` (the local kernel left the checksum for the device) or
/// `DATA_VALID` (already verified) is reported as trusted
/// ([`Device::rx_checksum_trusted`]), so neither the device nor the stack sums its bytes.
/// When a capture needs valid checksums ([`Device::complete_rx_checksums`]), the device
/// finishes partial ones first (sum from `csum_start` to the end, folded into the field
/// at `csum_start + csum_offset`, which already holds the pseudo-header sum). A GSO
/// super-packet (up to 64 KiB of one TCP flow, cut by the kernel's TSO at `gso_size`) is
/// handed up whole, like a segment that GRO merged: the stack sees one large in-order
/// segment. On writes, runs of full-sized
/// segments of one TCP flow are merged into GSO super-packets by a [`Coalescer`] (see
/// [`crate::gso`]) until [`Device::flush`]; every other packet goes out as the stack
/// built it, with an empty header.
pub struct TunDevice {
    dev: tun_rs::SyncDevice,
    name: String,
    mtu: usize,
    vnet_hdr: bool,
    counters: TunCounters,
    gso: Coalescer,
    /// Finish partial checksums on reads (for a capture) instead of leaving them.
    complete_checksums: bool,
    /// The last read's checksum needs no verification.
    last_trusted: bool,
}

/// What the offload path saw (all zero without [`TunConfig::offload`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunCounters {
    /// Reads that carried a GSO super-packet.
    pub gso_packets: u64,
    /// Reads whose checksum the device finished (only when asked to, for a capture).
    pub csum_completed: u64,
    /// Reads handed up as trusted: a partial checksum from the local kernel, or one the
    /// kernel marked verified.
    pub csum_trusted: u64,
    /// Reads dropped because their virtio-net header made no sense.
    pub bad_vnet_hdr: u64,
    /// What the write side merged.
    pub gso_out: GsoStats,
    /// Super-packets the kernel refused (`EINVAL`): dropped (TCP resends the bytes), and
    /// merging is off from the first one on.
    pub gso_rejected: u64,
}

/// Length of the virtio-net header (`struct virtio_net_hdr`, no `num_buffers`: the TUN's
/// default `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 10;
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_F_DATA_VALID: u8 = 2;
const VNET_GSO_NONE: u8 = 0;

impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunDevice")
            .field("name", &self.name)
            .field("mtu", &self.mtu)
            .finish()
    }
}

impl TunDevice {
    /// Creates (or attaches to) the TUN interface and brings it up as `cfg` says. Needs
    /// CAP_NET_ADMIN unless the interface already exists and belongs to this user.
    ///
    /// Order matters: the interface is created down, IPv6 is switched off, the host
    /// address is set, and only then does the link come up, so no router solicitation
    /// ever leaves the kernel into the TUN.
    pub fn create(cfg: &TunConfig) -> io::Result<TunDevice> {
        if cfg.name.is_empty() || cfg.name.len() > 15 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "TUN name {:?} must be 1 to 15 bytes long (IFNAMSIZ)",
                    cfg.name
                ),
            ));
        }
        let mut builder = tun_rs::DeviceBuilder::new()
            .name(cfg.name.clone())
            .mtu(cfg.mtu)
            .packet_information(false)
            .offload(cfg.offload)
            .enable(false);
        if let Some((addr, prefix)) = cfg.host_addr {
            builder = builder.ipv4(addr, prefix, None);
        }
        if let Some(n) = cfg.tx_queue_len {
            builder = builder.tx_queue_len(n);
        }
        let dev = builder.build_sync().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create TUN {:?} (needs CAP_NET_ADMIN): {e}",
                    cfg.name
                ),
            )
        })?;
        let name = dev.name().unwrap_or_else(|_| cfg.name.clone());
        if cfg.disable_ipv6 {
            disable_ipv6(&name)?;
        }
        dev.enabled(true)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bring {name} up: {e}")))?;
        dev.set_nonblocking(true)?;
        let mtu = dev.mtu().map(usize::from).unwrap_or(usize::from(cfg.mtu));
        let vnet_hdr = cfg.offload && dev.tcp_gso();
        if cfg.offload && !vnet_hdr {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("TUN {name}: the kernel refused IFF_VNET_HDR offloads"),
            ));
        }
        Ok(TunDevice {
            dev,
            name,
            mtu,
            vnet_hdr,
            counters: TunCounters::default(),
            gso: Coalescer::new(),
            complete_checksums: false,
            last_trusted: false,
        })
    }

    /// The interface name the kernel gave.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when reads and writes carry a virtio-net header (offloads on).
    pub fn offload(&self) -> bool {
        self.vnet_hdr
    }

    /// What the offload path saw so far.
    pub fn counters(&self) -> TunCounters {
        TunCounters {
            gso_out: self.gso.stats().clone(),
            ..self.counters.clone()
        }
    }

    /// One read with the virtio-net header split off into its own buffer.
    fn recv_vnet(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.last_trusted = false;
        let mut hdr = [0u8; VNET_HDR_LEN];
        loop {
            let n = {
                let mut iov = [IoSliceMut::new(&mut hdr), IoSliceMut::new(buf)];
                match self.dev.recv_vectored(&mut iov) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("TUN {} closed", self.name),
                ));
            }
            if n <= VNET_HDR_LEN {
                self.counters.bad_vnet_hdr += 1;
                continue;
            }
            let len = n - VNET_HDR_LEN;
            let flags = hdr[0];
            let gso_type = hdr[1];
            // Native byte order (the TUN's default, no TUNSETVNETBE).
            let csum_start = usize::from(u16::from_ne_bytes([hdr[6], hdr[7]]));
            let csum_offset = usize::from(u16::from_ne_bytes([hdr[8], hdr[9]]));
            if flags & VNET_F_NEEDS_CSUM != 0 {
                let at = csum_start + csum_offset;
                if csum_start >= len || at + 2 > len {
                    self.counters.bad_vnet_hdr += 1;
                    continue;
                }
                if self.complete_checksums {
                    finish_checksum(&mut buf[..len], csum_start, at);
                    self.counters.csum_completed += 1;
                }
            }
            if flags & (VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID) != 0 {
                self.last_trusted = true;
                self.counters.csum_trusted += 1;
            }
            if gso_type != VNET_GSO_NONE {
                self.counters.gso_packets += 1;
            }
            return Ok(Some(len));
        }
    }

    /// Hands a packet to the coalescer, which writes what it no longer holds.
    fn send_vnet(&mut self, packet: &[u8]) -> io::Result<()> {
        let (dev, name, rejected) = (&self.dev, &self.name, &mut self.counters.gso_rejected);
        let r = self.gso.push(packet, &mut |hdr, p| {
            write_merged(dev, name, hdr, p, rejected)
        });
        if self.counters.gso_rejected > 0 {
            self.gso.disable();
        }
        r
    }

    /// Writes what the coalescer still holds.
    fn flush_vnet(&mut self) -> io::Result<()> {
        let (dev, name, rejected) = (&self.dev, &self.name, &mut self.counters.gso_rejected);
        let r = self
            .gso
            .flush(&mut |hdr, p| write_merged(dev, name, hdr, p, rejected));
        if self.counters.gso_rejected > 0 {
            self.gso.disable();
        }
        r
    }
}

/// [`write_vnet`], except that a super-packet the kernel refuses as invalid is counted and
/// dropped instead of failing the device: the bytes are TCP's to resend, and the caller
/// stops merging.
fn write_merged(
    dev: &tun_rs::SyncDevice,
    name: &str,
    hdr: &[u8; VNET_HDR_LEN],
    p: &[u8],
    rejected: &mut u64,
) -> io::Result<()> {
    match write_vnet(dev, name, hdr, p) {
        Err(e) if hdr[1] != VNET_GSO_NONE && e.kind() == io::ErrorKind::InvalidInput => {
            if *rejected == 0 {
                log::warn!("TUN {name}: the kernel refused a GSO super-packet ({e}); merging off");
            }
            *rejected += 1;
            Ok(())
        }
        r => r,
    }
}

/// Writes one packet behind its virtio-net header, whole.
fn write_vnet(
    dev: &tun_rs::SyncDevice,
    name: &str,
    hdr: &[u8; VNET_HDR_LEN],
    p: &[u8],
) -> io::Result<()> {
    loop {
        match dev.send_vectored(&[IoSlice::new(hdr), IoSlice::new(p)]) {
            Ok(n) if n == VNET_HDR_LEN + p.len() => return Ok(()),
            Ok(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("TUN {name} took {n} of {} bytes", VNET_HDR_LEN + p.len()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Finishes a partial Internet checksum the way a NIC does for `CHECKSUM_PARTIAL`: the
/// field at `at` holds the pseudo-header sum; add every 16-bit word from `start` to the end
/// (the field included), fold, complement and store.
fn finish_checksum(packet: &mut [u8], start: usize, at: usize) {
    let mut c = Checksum::new();
    c.add_bytes(&packet[start..]);
    packet[at..at + 2].copy_from_slice(&c.finish().to_be_bytes());
}

/// Writes `1` to `/proc/sys/net/ipv6/conf/NAME/disable_ipv6`. A kernel without IPv6 has no
/// such file, which is as good.
pub fn disable_ipv6(ifname: &str) -> io::Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match std::fs::write(&path, b"1\n") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot disable IPv6 on {ifname} ({path}): {e}"),
        )),
    }
}

impl Device for TunDevice {
    fn kernel_drops(&self) -> Option<crate::KernelDrops> {
        crate::interface_drops(&self.name).ok()
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if self.vnet_hdr {
            return self.recv_vnet(buf);
        }
        self.last_trusted = false;
        loop {
            match self.dev.recv(buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("TUN {} closed", self.name),
                    ))
                }
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        if self.vnet_hdr {
            return self.send_vnet(packet);
        }
        loop {
            match self.dev.send(packet) {
                Ok(n) if n == packet.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!(
                            "TUN {} took {n} of {} bytes of a packet",
                            self.name,
                            packet.len()
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_vnet()
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn rx_checksum_trusted(&self) -> bool {
        self.last_trusted
    }

    fn complete_rx_checksums(&mut self) {
        self.complete_checksums = true;
    }
}

impl AsRawFd for TunDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook sum, one 16-bit word at a time.
    fn reference(packet: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for c in packet.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            sum += u32::from(w);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn finished_checksums_match_the_textbook_sum() {
        let mut x: u32 = 7;
        for len in [22usize, 23, 40, 63, 1500, 1501, 65_000] {
            let mut p: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (x >> 16) as u8
                })
                .collect();
            // A "pseudo-header sum" already in the field, as the kernel leaves it.
            let start = 4;
            let at = start + 16;
            p[at] = 0x12;
            p[at + 1] = 0x34;
            let expect = reference(&p[start..]);
            finish_checksum(&mut p, start, at);
            assert_eq!(u16::from_be_bytes([p[at], p[at + 1]]), expect, "len {len}");
            // Verified as a receiver does: the region (checksum included) plus the
            // pseudo-header sum is all ones.
            let mut sum = u32::from(!reference(&p[start..])) + 0x1234;
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            assert_eq!(sum, 0xffff, "len {len}");
        }
    }
}
