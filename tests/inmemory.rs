//! Tier 2: two stacks in memory through netdev's impaired pipe (seeded loss, reordering,
//! duplication, delay). Bulk transfers must arrive byte-identical; simultaneous open and
//! close must work.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use fourtuple::netdev::pipe::{End, Impairment, Pipe};
use fourtuple::stack::{Config, ConnHandle, Instant, Stack, TcpState};

const A_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const B_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));

struct Net {
    a: Stack,
    b: Stack,
    pipe: Pipe,
    now: Instant,
    buf: Vec<u8>,
}

impl Net {
    fn new(imp: Impairment) -> Net {
        let mut a = Stack::new(Config::default(), [3; 16]);
        a.add_address(A_IP);
        let mut b = Stack::new(Config::default(), [4; 16]);
        b.add_address(B_IP);
        let mut back = imp.clone();
        back.seed = imp.seed.wrapping_add(1);
        Net {
            a,
            b,
            pipe: Pipe::new(imp, back),
            now: Instant::from_millis(1),
            buf: vec![0; 65536],
        }
    }

    /// Flush, deliver what is due, else jump the clock. False when idle.
    fn step(&mut self) -> bool {
        while let Some(n) = self.a.poll_transmit(self.now, &mut self.buf) {
            self.pipe.send(End::A, self.now, &self.buf[..n]);
        }
        while let Some(n) = self.b.poll_transmit(self.now, &mut self.buf) {
            self.pipe.send(End::B, self.now, &self.buf[..n]);
        }
        let mut any = false;
        while let Some(n) = self.pipe.recv(End::B, self.now, &mut self.buf) {
            self.b.receive(self.now, &self.buf[..n]);
            any = true;
        }
        while let Some(n) = self.pipe.recv(End::A, self.now, &mut self.buf) {
            self.a.receive(self.now, &self.buf[..n]);
            any = true;
        }
        if any {
            return true;
        }
        let next = [
            self.pipe.next_delivery(),
            self.a.poll_timeout(),
            self.b.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            None => false,
            Some(t) => {
                if t > self.now {
                    self.now = t;
                }
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
                true
            }
        }
    }

    fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&mut Net) -> bool) -> bool {
        let end = self.now + limit;
        while !cond(self) {
            if self.now > end || !self.step() {
                return cond(self);
            }
        }
        true
    }
}

fn byte_at(stream: u64, i: usize) -> u8 {
    let x =
        (i as u64 ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0x2545_F491_4F6C_DD1D);
    (x >> 56) as u8
}

/// One direction of a bulk transfer.
struct Dir {
    stream: u64,
    total: usize,
    sent: usize,
    got: usize,
}

struct Bufs {
    chunk: Vec<u8>,
    rbuf: Vec<u8>,
}

/// Offers as much as fits on `from`, drains and checks everything readable on `to`.
fn pump(
    (from, fh): (&mut Stack, ConnHandle),
    (to, th): (&mut Stack, ConnHandle),
    now: Instant,
    d: &mut Dir,
    bufs: &mut Bufs,
) {
    if d.sent < d.total {
        let space = from
            .send_space(fh)
            .unwrap()
            .min(d.total - d.sent)
            .min(bufs.chunk.len());
        if space > 0 {
            for (i, b) in bufs.chunk[..space].iter_mut().enumerate() {
                *b = byte_at(d.stream, d.sent + i);
            }
            d.sent += from.send(now, fh, &bufs.chunk[..space]).unwrap();
        }
    }
    while let Ok(n) = to.recv(now, th, &mut bufs.rbuf) {
        if n == 0 {
            break;
        }
        for (i, b) in bufs.rbuf[..n].iter().enumerate() {
            assert_eq!(
                *b,
                byte_at(d.stream, d.got + i),
                "stream {} byte {}",
                d.stream,
                d.got + i
            );
        }
        d.got += n;
    }
}

/// Pumps `total` bytes each way over one connection and checks every byte.
fn bidirectional_bulk(imp: Impairment, total: usize) {
    let mut net = Net::new(imp);
    let l = net.b.listen(SocketAddr::new(B_IP, 5001), 8).unwrap();
    let c = net
        .a
        .connect(net.now, SocketAddr::new(B_IP, 5001), None)
        .unwrap();
    assert!(net.run_until(Duration::from_secs(120), |n| n
        .b
        .accept_queue_len(l)
        .unwrap()
        == 1));
    let s = net.b.accept(l).unwrap().unwrap();

    let mut ab = Dir {
        stream: 1,
        total,
        sent: 0,
        got: 0,
    };
    let mut ba = Dir {
        stream: 2,
        total,
        sent: 0,
        got: 0,
    };
    let mut bufs = Bufs {
        chunk: vec![0u8; 256 * 1024],
        rbuf: vec![0u8; 256 * 1024],
    };
    let deadline = net.now + Duration::from_secs(24 * 3600);

    while ab.got < total || ba.got < total {
        assert!(
            net.now < deadline,
            "stalled: a->b {}/{total}, b->a {}/{total}",
            ab.got,
            ba.got
        );
        let now = net.now;
        pump((&mut net.a, c), (&mut net.b, s), now, &mut ab, &mut bufs);
        pump((&mut net.b, s), (&mut net.a, c), now, &mut ba, &mut bufs);
        if !net.step() {
            panic!(
                "idle before the transfer finished: a->b {}/{} b->a {}/{}; a {:?} q{} b {:?} q{}; a {:?}; b {:?}",
                ab.got, ab.sent, ba.got, ba.sent,
                net.a.state(c), net.a.send_queued(c).unwrap(),
                net.b.state(s), net.b.send_queued(s).unwrap(),
                net.a.debug_conn(c), net.b.debug_conn(s)
            );
        }
    }
    // Orderly close both ways; TIME_WAIT on the side that closed first.
    let now = net.now;
    net.a.close(now, c).unwrap();
    assert!(net.run_until(Duration::from_secs(600), |n| n.b.state(s)
        == Ok(TcpState::CloseWait)));
    let now = net.now;
    net.b.close(now, s).unwrap();
    assert!(
        net.run_until(Duration::from_secs(600), |n| n.a.connection_count() == 0
            && n.b.connection_count() == 0)
    );
    assert_eq!(net.a.time_wait().len(), 1);
    assert_eq!(net.b.time_wait().len(), 0);
    let st = net.pipe.stats();
    eprintln!(
        "bulk {total} B each way: a->b lost {} dup {} reordered {}; retransmits a={} b={}; fast a={} rto a={}; simulated {:.1}s",
        st.a_to_b.lost,
        st.a_to_b.duplicated,
        st.a_to_b.reordered,
        net.a.counters().retransmits,
        net.b.counters().retransmits,
        net.a.counters().fast_retransmits,
        net.a.counters().rto_timeouts,
        net.now.micros() as f64 / 1e6
    );
}

#[test]
fn bulk_64mib_each_way_at_5_percent_loss_with_reordering_and_duplication() {
    bidirectional_bulk(
        Impairment {
            loss: 0.05,
            duplicate: 0.01,
            reorder: 0.02,
            delay: Duration::from_millis(2),
            jitter: Duration::from_micros(200),
            seed: 0x5eed,
        },
        64 << 20,
    );
}

#[test]
fn bulk_8mib_each_way_perfect_link() {
    bidirectional_bulk(
        Impairment {
            delay: Duration::from_millis(1),
            ..Impairment::default()
        },
        8 << 20,
    );
}

#[test]
fn simultaneous_open_establishes_both_sides() {
    let mut net = Net::new(Impairment {
        delay: Duration::from_millis(5),
        ..Impairment::default()
    });
    let a_addr = SocketAddr::new(A_IP, 6000);
    let b_addr = SocketAddr::new(B_IP, 7000);
    let now = net.now;
    let ca = net.a.connect(now, b_addr, Some(a_addr)).unwrap();
    let cb = net.b.connect(now, a_addr, Some(b_addr)).unwrap();
    assert!(net.run_until(Duration::from_secs(10), |n| {
        n.a.state(ca) == Ok(TcpState::Established) && n.b.state(cb) == Ok(TcpState::Established)
    }));
    let now = net.now;
    net.a.send(now, ca, b"ping").unwrap();
    assert!(net.run_until(Duration::from_secs(10), |n| n.b.recv_available(cb) == Ok(4)));
    // Simultaneous close: both FINs cross, both sides pass CLOSING into TIME_WAIT.
    let now = net.now;
    net.a.shutdown_write(now, ca).unwrap();
    net.b.shutdown_write(now, cb).unwrap();
    assert!(net.run_until(Duration::from_secs(10), |n| {
        n.a.time_wait().len() == 1 && n.b.time_wait().len() == 1
    }));
    assert_eq!(net.a.state(ca), Ok(TcpState::TimeWait));
    assert_eq!(net.b.state(cb), Ok(TcpState::TimeWait));
}
