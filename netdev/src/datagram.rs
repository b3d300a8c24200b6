//! A device over a Unix datagram socket pair: whole packets through a real file descriptor,
//! with no privileges and no network.
//!
//! This module owns one end of a `socketpair(AF_UNIX, SOCK_DGRAM)`: each datagram is one
//! packet, so two [`EventLoop`](crate::event_loop::EventLoop)s joined by a pair behave like
//! two hosts on a wire. It exists to test the event loop (readiness, batching, signals,
//! timers) without root; it must never be used to reach anything outside the process.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

use crate::Device;

/// One end of a datagram socket pair, non-blocking.
#[derive(Debug)]
pub struct DatagramDevice {
    sock: UnixDatagram,
    mtu: usize,
}

impl DatagramDevice {
    /// Two connected ends, each taking packets up to `mtu` bytes.
    pub fn pair(mtu: usize) -> io::Result<(DatagramDevice, DatagramDevice)> {
        let (a, b) = UnixDatagram::pair()?;
        a.set_nonblocking(true)?;
        b.set_nonblocking(true)?;
        Ok((
            DatagramDevice { sock: a, mtu },
            DatagramDevice { sock: b, mtu },
        ))
    }
}

impl Device for DatagramDevice {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.sock.recv(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        self.sock.send(packet).map(|_| ())
    }

    fn mtu(&self) -> usize {
        self.mtu
    }
}

impl AsRawFd for DatagramDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}
