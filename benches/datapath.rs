//! The established data path in memory: one bulk transfer between two fourtuple stacks
//! joined back to back, in Gbit/s of payload and ns per data segment.
//!
//! This bench owns a lean driver: the sender keeps its send buffer full, every transmit is
//! handed to the other stack's `receive` at once (no loss, no latency), the receiver drains
//! what arrives into a sink, and both stacks run on the wall clock. One connection lives
//! through the whole benchmark; each iteration moves [`CHUNK`] bytes. Default buffers
//! (256 KiB each way), MSS 1460 with timestamps (1448 bytes of payload per segment),
//! delayed ACKs as configured. At the end it prints the average Gbit/s and ns per data
//! segment over everything criterion timed.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant as WallInstant};

use criterion::{Criterion, SamplingMode, Throughput};
use fourtuple_stack::{Config, ConnHandle, Error, Instant, Stack, TcpState};

/// Bytes moved per iteration.
const CHUNK: u64 = 1 << 20;
/// The packet buffer (the MTU).
const MTU: usize = 1500;

struct Bulk {
    start: WallInstant,
    tx: Stack,
    rx: Stack,
    tx_h: ConnHandle,
    rx_h: ConnHandle,
    buf: Vec<u8>,
    payload: Vec<u8>,
    sink: Vec<u8>,
    /// Data segments the sender transmitted, and payload bytes the receiver read.
    segments: u64,
    bytes: u64,
}

impl Bulk {
    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as u64)
    }

    fn new() -> Bulk {
        let start = WallInstant::now();
        let a = Ipv4Addr::new(192, 0, 2, 1);
        let b = Ipv4Addr::new(192, 0, 2, 2);
        let mut tx = Stack::new(Config::default(), [3; 16]);
        tx.add_address(IpAddr::V4(a));
        let mut rx = Stack::new(Config::default(), [4; 16]);
        rx.add_address(IpAddr::V4(b));
        let srv = SocketAddr::new(IpAddr::V4(b), 9);
        let l = rx.listen(srv, 8).expect("listen");
        let now = Instant::ZERO;
        let tx_h = tx.connect(now, srv, None).expect("connect");
        let mut bulk = Bulk {
            start,
            tx,
            rx,
            tx_h,
            rx_h: tx_h,
            buf: vec![0; MTU],
            payload: (0..256 * 1024).map(|i| i as u8).collect(),
            sink: vec![0; 256 * 1024],
            segments: 0,
            bytes: 0,
        };
        let mut accepted = None;
        for _ in 0..100 {
            bulk.exchange();
            if let Ok(Some(h)) = bulk.rx.accept(l) {
                accepted = Some(h);
                break;
            }
        }
        bulk.rx_h = accepted.expect("the handshake completes in memory");
        assert_eq!(bulk.tx.state(tx_h), Ok(TcpState::Established));
        bulk
    }

    /// Moves every pending packet both ways; counts the sender's data segments.
    fn exchange(&mut self) {
        let now = self.now();
        while let Some(n) = self.tx.poll_transmit(now, &mut self.buf) {
            // IPv4 header 20 + TCP header with timestamps 32: anything longer carries data.
            if n > 52 {
                self.segments += 1;
            }
            self.rx.receive(now, &self.buf[..n]);
        }
        while let Some(n) = self.rx.poll_transmit(now, &mut self.buf) {
            self.tx.receive(now, &self.buf[..n]);
        }
        for s in [&mut self.tx, &mut self.rx] {
            while s.poll_event().is_some() {}
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
    }

    /// Transfers `n` more bytes.
    fn run(&mut self, n: u64) {
        let goal = self.bytes + n;
        let mut off = 0usize;
        while self.bytes < goal {
            let now = self.now();
            loop {
                match self.tx.send(now, self.tx_h, &self.payload[off..]) {
                    Ok(k) => off = (off + k) % self.payload.len(),
                    Err(Error::WouldBlock) => break,
                    Err(e) => panic!("send: {e}"),
                }
            }
            self.exchange();
            let now = self.now();
            loop {
                match self.rx.recv(now, self.rx_h, &mut self.sink) {
                    Ok(0) => panic!("unexpected end of stream"),
                    Ok(k) => self.bytes += k as u64,
                    Err(Error::WouldBlock) => break,
                    Err(e) => panic!("recv: {e}"),
                }
            }
            black_box(&self.sink);
        }
    }
}

fn datapath(c: &mut Criterion) {
    let mut g = c.benchmark_group("datapath");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(CHUNK));
    let mut bulk = Bulk::new();
    let (mut time, mut segs, mut bytes) = (Duration::ZERO, 0u64, 0u64);
    g.bench_function("bulk", |b| {
        b.iter_custom(|iters| {
            let (s0, b0) = (bulk.segments, bulk.bytes);
            let t = WallInstant::now();
            bulk.run(iters * CHUNK);
            let dt = t.elapsed();
            time += dt;
            segs += bulk.segments - s0;
            bytes += bulk.bytes - b0;
            dt
        })
    });
    g.finish();
    let secs = time.as_secs_f64();
    eprintln!(
        "datapath/bulk: {:.2} Gbit/s of payload, {:.0} ns per data segment \
         ({segs} segments, {bytes} bytes in {secs:.2} s timed)",
        bytes as f64 * 8.0 / secs / 1e9,
        secs * 1e9 / segs.max(1) as f64
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    datapath(&mut c);
    c.final_summary();
}
