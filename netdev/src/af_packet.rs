//! An AF_PACKET socket bound to one interface (a veth end, a NIC): whole Ethernet frames.
//!
//! This module owns opening the socket (through `pnet_datalink`, on a socket this module
//! creates so that the event loop can poll its file descriptor), and moving frames through
//! it without blocking. It must never change the interface's configuration (addresses,
//! offloads, link state: the caller sets those up), look inside the frames, or answer ARP:
//! on this device the stack runs with `Medium::Ethernet` and does ARP and neighbour
//! discovery itself.
//!
//! The kernel keeps its own view of the interface: give it no address on that interface,
//! so that it neither answers ARP for the stack's address nor replies to its segments with
//! resets. Frames the kernel itself transmits on the interface are seen here too; the stack
//! counts the ones not addressed to it and drops them. Checksum offload on the *peer* of a
//! veth pair leaves checksums unfinished in the frames seen here (`ethtool -K PEER tx off`).

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::time::Duration;

use pnet_datalink::{Channel, DataLinkReceiver, DataLinkSender, NetworkInterface};
use socket2::{Domain, Socket, Type};

use crate::Device;

/// The largest frame read at once: an MTU-1500 frame is 1514 bytes, but a peer with
/// segmentation offload left on may hand over up to 64 KiB; those are cut and counted as
/// malformed by the stack, never overrun.
const READ_BUFFER: usize = 65_536;

/// An AF_PACKET (`SOCK_RAW`, `ETH_P_ALL`) socket bound to one interface, non-blocking.
pub struct AfPacketDevice {
    tx: Box<dyn DataLinkSender>,
    rx: Box<dyn DataLinkReceiver>,
    /// The socket's descriptor, owned by `tx`/`rx` (pnet closes it when both are dropped);
    /// kept only to register it with the event loop.
    fd: RawFd,
    name: String,
    mac: [u8; 6],
    mtu: usize,
}

impl std::fmt::Debug for AfPacketDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketDevice")
            .field("name", &self.name)
            .field("mac", &format_mac(self.mac))
            .field("mtu", &self.mtu)
            .finish()
    }
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl AfPacketDevice {
    /// Opens an AF_PACKET socket on interface `ifname`. Needs CAP_NET_RAW. The interface
    /// must exist, be up and have a MAC address.
    pub fn open(ifname: &str) -> io::Result<AfPacketDevice> {
        let iface: NetworkInterface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == ifname)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no interface named {ifname:?} in this network namespace"),
                )
            })?;
        let mac = iface
            .mac
            .map(|m| m.octets())
            .filter(|m| *m != [0; 6])
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("interface {ifname} has no Ethernet address"),
                )
            })?;
        if !iface.is_up() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface {ifname} is down (ip link set {ifname} up)"),
            ));
        }
        // Protocol 0 receives nothing until pnet binds the socket to the interface with
        // ETH_P_ALL, so no frame from another interface slips in between.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open an AF_PACKET socket (needs CAP_NET_RAW): {e}"),
            )
        })?;
        let fd = socket.into_raw_fd();
        let cfg = pnet_datalink::Config {
            read_buffer_size: READ_BUFFER,
            write_buffer_size: READ_BUFFER,
            // Zero timeouts make pnet's internal poll() return at once: the event loop
            // does the waiting.
            read_timeout: Some(Duration::ZERO),
            write_timeout: Some(Duration::ZERO),
            promiscuous: false,
            socket_fd: Some(fd),
            ..pnet_datalink::Config::default()
        };
        let (tx, rx) = match pnet_datalink::channel(&iface, cfg) {
            Ok(Channel::Ethernet(tx, rx)) => (tx, rx),
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "AF_PACKET on {ifname}: not an Ethernet channel"
                )))
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot bind AF_PACKET socket to {ifname}: {e}"),
                ))
            }
        };
        let mtu = std::fs::read_to_string(format!("/sys/class/net/{ifname}/mtu"))
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(1500);
        Ok(AfPacketDevice {
            tx,
            rx,
            fd,
            name: ifname.to_string(),
            mac,
            mtu,
        })
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface's MAC address: the stack's address on this medium.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The interface's IP MTU (the frame is 14 bytes longer).
    pub fn ip_mtu(&self) -> usize {
        self.mtu
    }
}

fn is_would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl Device for AfPacketDevice {
    /// Frames longer than `buf` are cut to it.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.rx.next() {
            Ok(frame) => {
                let n = frame.len().min(buf.len());
                buf[..n].copy_from_slice(&frame[..n]);
                Ok(Some(n))
            }
            Err(e) if is_would_block(&e) => Ok(None),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("AF_PACKET receive on {}: {e}", self.name),
            )),
        }
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        match self.tx.send_to(packet, None) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) if is_would_block(&e) || e.raw_os_error() == Some(105) => {
                // ENOBUFS (105) is the socket's send buffer, like EAGAIN.
                Err(io::Error::new(io::ErrorKind::WouldBlock, e))
            }
            Some(Err(e)) => Err(io::Error::new(
                e.kind(),
                format!("AF_PACKET send on {}: {e}", self.name),
            )),
            None => Err(io::Error::other("AF_PACKET send: frame too large")),
        }
    }

    /// The largest frame: the IP MTU plus the 14-byte Ethernet header.
    fn mtu(&self) -> usize {
        self.mtu + 14
    }
}

impl AsRawFd for AfPacketDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}
