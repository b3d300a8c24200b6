//! A Linux TUN device (`IFF_TUN | IFF_NO_PI`, non-blocking): raw IPv4/IPv6 packets.
//!
//! This module owns creating (or attaching to) a TUN interface with the `tun-rs` crate,
//! setting up the host side of it (the kernel's address on the interface, IPv6 off, link
//! up), and moving whole packets through its file descriptor. It must never look inside the
//! packets, choose the stack's addresses, or touch any interface other than the one it
//! created: the host side gets exactly the address the caller passes.
//!
//! The kernel is the TUN's "host side": packets the kernel routes to the interface come out
//! of [`TunDevice::recv`], and packets written with [`TunDevice::send`] enter the kernel as
//! if they had arrived on it. The interface disappears when the device is dropped (unless it
//! was made persistent beforehand, e.g. with `ip tuntap add`).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};

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
}

impl TunConfig {
    /// A TUN named `name` with no host address, MTU [`DEFAULT_MTU`] and IPv6 off.
    pub fn new(name: impl Into<String>) -> TunConfig {
        TunConfig {
            name: name.into(),
            host_addr: None,
            mtu: DEFAULT_MTU,
            disable_ipv6: true,
        }
    }
}

/// A TUN interface opened non-blocking, without packet information: each read is one IP
/// packet, each write one IP packet.
pub struct TunDevice {
    dev: tun_rs::SyncDevice,
    name: String,
    mtu: usize,
}

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
            .enable(false);
        if let Some((addr, prefix)) = cfg.host_addr {
            builder = builder.ipv4(addr, prefix, None);
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
        Ok(TunDevice { dev, name, mtu })
    }

    /// The interface name the kernel gave.
    pub fn name(&self) -> &str {
        &self.name
    }
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
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
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

    fn mtu(&self) -> usize {
        self.mtu
    }
}

impl AsRawFd for TunDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }
}
