//! A pair of stacks joined by a perfect link with fixed latency and a simulated clock.
#![allow(dead_code)]

pub mod peer;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use fourtuple_stack::{Config, Instant, Stack};

pub const A_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
pub const B_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

pub fn sa(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Decides whether to drop a packet: (to_b, bytes) -> drop.
pub type DropFilter = Box<dyn FnMut(bool, &[u8]) -> bool>;

/// Two stacks, `a` and `b`, with packets in flight between them.
pub struct Pair {
    pub a: Stack,
    pub b: Stack,
    pub now: Instant,
    pub latency: Duration,
    /// (deliver_at, to_b, bytes)
    pub wire: VecDeque<(Instant, bool, Vec<u8>)>,
    /// Every packet that crossed, for inspection: (to_b, bytes).
    pub log: Vec<(bool, Vec<u8>)>,
    pub keep_log: bool,
    /// Drop filter: return true to drop a packet (to_b, bytes).
    pub drop: Option<DropFilter>,
}

impl Pair {
    pub fn new(ca: Config, cb: Config) -> Pair {
        let mut a = Stack::new(ca, [1; 16]);
        a.add_address(A_IP);
        let mut b = Stack::new(cb, [2; 16]);
        b.add_address(B_IP);
        Pair {
            a,
            b,
            now: Instant::from_millis(1_000),
            latency: Duration::from_millis(1),
            wire: VecDeque::new(),
            log: Vec::new(),
            keep_log: true,
            drop: None,
        }
    }

    pub fn default_pair() -> Pair {
        Pair::new(Config::default(), Config::default())
    }

    /// Moves all pending transmissions onto the wire.
    pub fn flush(&mut self) {
        let mut buf = vec![0u8; 65536];
        loop {
            let mut any = false;
            while let Some(n) = self.a.poll_transmit(self.now, &mut buf) {
                self.put(true, &buf[..n]);
                any = true;
            }
            while let Some(n) = self.b.poll_transmit(self.now, &mut buf) {
                self.put(false, &buf[..n]);
                any = true;
            }
            if !any {
                break;
            }
        }
    }

    fn put(&mut self, to_b: bool, p: &[u8]) {
        if let Some(f) = self.drop.as_mut() {
            if f(to_b, p) {
                return;
            }
        }
        if self.keep_log {
            self.log.push((to_b, p.to_vec()));
        }
        self.wire
            .push_back((self.now + self.latency, to_b, p.to_vec()));
    }

    /// Delivers everything due now.
    pub fn deliver(&mut self) -> bool {
        let mut any = false;
        while let Some((at, _, _)) = self.wire.front() {
            if *at > self.now {
                break;
            }
            let (_, to_b, p) = self.wire.pop_front().unwrap();
            if to_b {
                self.b.receive(self.now, &p);
            } else {
                self.a.receive(self.now, &p);
            }
            any = true;
        }
        any
    }

    /// One step: flush, deliver what is due, else advance the clock to the next event.
    /// Returns false when nothing is pending at all.
    pub fn step(&mut self) -> bool {
        self.flush();
        if self.deliver() {
            return true;
        }
        let next_wire = self.wire.front().map(|w| w.0);
        let next_timer = [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let next = match (next_wire, next_timer) {
            (Some(w), Some(t)) => w.min(t),
            (w, t) => match w.or(t) {
                Some(x) => x,
                None => return false,
            },
        };
        if next > self.now {
            self.now = next;
        }
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        true
    }

    /// Steps until `cond` holds or `limit` of simulated time passes.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&mut Pair) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            if cond(self) {
                return true;
            }
            if self.now > end || !self.step() {
                return cond(self);
            }
        }
    }
}
