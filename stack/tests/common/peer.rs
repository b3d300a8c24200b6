//! A scripted peer: crafts segments to a stack under test and parses what it answers.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use fourtuple_stack::wire::{self, Flags, Incoming, OutSegment};
use fourtuple_stack::{Config, FourTuple, Instant, SeqNum, Stack};

pub const PEER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
pub const HOST_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

/// A reply the stack sent, in owned form.
#[derive(Clone, Debug)]
pub struct Reply {
    pub seq: u32,
    pub ack: u32,
    pub flags: Flags,
    pub window: u16,
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamp: Option<(u32, u32)>,
    pub sack: Vec<(u32, u32)>,
    pub payload: Vec<u8>,
}

pub struct Harness {
    pub stack: Stack,
    pub now: Instant,
    /// peer's side of the tuple: local = peer, remote = host
    pub tuple: FourTuple,
}

pub fn flags(s: &str) -> Flags {
    Flags {
        syn: s.contains('S'),
        ack: s.contains('A'),
        fin: s.contains('F'),
        rst: s.contains('R'),
        psh: s.contains('P'),
    }
}

impl Harness {
    pub fn new(cfg: Config) -> Harness {
        let mut stack = Stack::new(cfg, [9; 16]);
        stack.add_address(HOST_IP);
        Harness {
            stack,
            now: Instant::from_millis(10_000),
            tuple: FourTuple::new(
                SocketAddr::new(PEER_IP, 40000),
                SocketAddr::new(HOST_IP, 80),
            ),
        }
    }

    /// Sends a segment from the peer.
    pub fn send(&mut self, seg: OutSegment, payload: &[u8]) {
        let mut buf = vec![0u8; 2000];
        let n = wire::emit_tcp(&mut buf, &self.tuple, &seg, (payload, &[])).unwrap();
        self.stack.receive(self.now, &buf[..n]);
    }

    /// A segment with the given flags, seq and ack; window 65535, no options.
    pub fn seg(&self, f: &str, seq: u32, ack: u32) -> OutSegment {
        OutSegment {
            seq: SeqNum(seq),
            ack: SeqNum(ack),
            flags: flags(f),
            window: 65535,
            ..OutSegment::default()
        }
    }

    /// Everything the stack transmits now, parsed.
    pub fn replies(&mut self) -> Vec<Reply> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 2000];
        while let Some(n) = self.stack.poll_transmit(self.now, &mut buf) {
            match wire::parse(&buf[..n], |ip| ip == PEER_IP) {
                Ok(Incoming::Tcp(s)) => out.push(Reply {
                    seq: s.seq.raw(),
                    ack: s.ack.raw(),
                    flags: s.flags,
                    window: s.window,
                    mss: s.opts.mss,
                    wscale: s.opts.wscale,
                    sack_permitted: s.opts.sack_permitted,
                    timestamp: s.opts.timestamp,
                    sack: s
                        .opts
                        .sack
                        .iter()
                        .flatten()
                        .map(|(l, r)| (l.raw(), r.raw()))
                        .collect(),
                    payload: s.payload.to_vec(),
                }),
                other => panic!("stack emitted something unparsable: {other:?}"),
            }
        }
        out
    }

    /// Exactly one reply, or panic.
    pub fn one(&mut self) -> Reply {
        let r = self.replies();
        assert_eq!(r.len(), 1, "expected one reply, got {r:?}");
        r.into_iter().next().unwrap()
    }

    /// Advances the clock and fires timers.
    pub fn advance(&mut self, d: std::time::Duration) {
        self.now = self.now + d;
        self.stack.handle_timeout(self.now);
    }
}
