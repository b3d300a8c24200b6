//! Connection churn in memory: fourtuple against smoltcp 0.14, one criterion group, the same
//! workload for both.
//!
//! This bench owns two lean drivers, one per stack, that run the same lifecycle: the client
//! connects, sends a 16-byte request, the server answers with a 16-byte reply, the client
//! closes first, the server closes when it reads end-of-stream. A lifecycle counts once the
//! client is in TIME-WAIT (both FINs exchanged). `C` lifecycles are kept in flight (1, 64
//! and 1024); criterion's throughput is in lifecycles (`Throughput::Elements`).
//!
//! # TIME-WAIT is kept, for 10 s of wall-clock time, on both stacks
//!
//! Both stacks run on the wall clock (microseconds since the fixture was built), and one
//! fixture lives through criterion's warm-up and every sample of a benchmark, like a
//! long-running host. So each stack holds every TIME-WAIT it entered during the last 10 s:
//!
//! - smoltcp keeps TIME-WAIT inside the socket, for its fixed `CLOSE_DELAY` of 10 s. The
//!   client's socket (the whole `tcp::Socket` with its two 1 KiB buffers) stays in the
//!   client's `SocketSet` until its timer moves it to CLOSED; only then does the driver
//!   remove it. So the set holds `C` live sockets plus every socket closed in the last 10 s,
//!   and smoltcp scans the whole set for every arriving packet (`socket_ingress`), on every
//!   egress poll, and for a free slot on every `SocketSet::add`.
//! - fourtuple keeps each TIME-WAIT as a compact entry of its TIME_WAIT table (the TCB is
//!   freed); MSL is set to 5 s so that its 2*MSL is the same 10 s, and the table cap to
//!   64M so that no entry is evicted early.
//!
//! Neither stack reuses a 4-tuple that is still in TIME-WAIT: fourtuple's port allocator
//! avoids them (exact-tuple policy, ports 1024-65535, [`SERVER_PORTS`] server ports); the
//! smoltcp driver walks the same space in order and panics if it wraps within 10.5 s.
//!
//! The steady state arrives after 10 s, so the group's warm-up is 11 s. Each stack's
//! sockets see the 16 bytes each way checked, so a broken exchange panics instead of
//! counting.
//!
//! # Counting instructions (`--count`)
//!
//! `churn-HASH --count N --stack fourtuple|smoltcp [--in-flight C] [--rate R]` runs N
//! lifecycles after a warm-up, outside criterion, on a *virtual* clock that advances 1/R s
//! per completed lifecycle (default R = 1000), so the TIME-WAIT population is a fixed
//! 10 s * R whatever the speed of the machine (or of valgrind). The warm-up (10 * R + C
//! lifecycles) fills it; then [`measured_phase`] runs the N counted lifecycles, so
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_phase*'`
//! counts exactly those (see the README). `--wall` runs on the wall clock instead, as
//! criterion does (for `perf record`).

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant as WallInstant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use fourtuple_stack::{
    Config, ConnHandle, Error, Event, EventSet, Instant as FtInstant, ListenerHandle, Stack,
};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

/// The client host (RFC 5737 documentation range).
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The server host.
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The first server port; the server listens on `PORT_BASE..PORT_BASE + SERVER_PORTS`.
const PORT_BASE: u16 = 10_000;
/// Server ports the client spreads lifecycles over, round-robin: with client ports
/// 1024-65535 that is 66M 4-tuples, enough for 10 s of TIME-WAIT at 6.6M lifecycles/s.
const SERVER_PORTS: u16 = 1024;
/// First client port (smoltcp; fourtuple's ephemeral range is the same).
const CLIENT_PORT_LO: u16 = 1024;
/// The request, client to server.
const REQUEST: [u8; 16] = *b"churn request 16";
/// The reply, server to client.
const REPLY: [u8; 16] = *b"churn reply 16by";
/// TIME-WAIT on both stacks: smoltcp's fixed CLOSE_DELAY, fourtuple's 2*MSL.
const TIME_WAIT: Duration = Duration::from_secs(10);
/// Packet buffers on the in-memory link (the MTU).
const MTU: usize = 1500;
/// smoltcp's per-socket receive and send buffers, each.
const SMOL_BUFFER: usize = 1024;
/// Lifecycles in flight, per benchmark.
const IN_FLIGHT: [usize; 3] = [1, 64, 1024];

/// The clock both drivers read: the wall clock, or a virtual one for `--count` runs.
enum Clock {
    /// Microseconds since `start`.
    Wall(WallInstant),
    /// `now` microseconds, advanced `step` per completed lifecycle.
    Virtual { now: f64, step: f64 },
}

impl Clock {
    fn now_us(&self) -> u64 {
        match self {
            Clock::Wall(start) => start.elapsed().as_micros() as u64,
            Clock::Virtual { now, .. } => *now as u64,
        }
    }

    fn completed(&mut self) {
        if let Clock::Virtual { now, step } = self {
            *now += *step;
        }
    }
}

/// What both fixtures offer the bench: run `n` more lifecycles.
trait Churn {
    /// Runs until `n` more lifecycles completed; the fixture keeps its state (live
    /// connections, TIME-WAIT) for the next call.
    fn run(&mut self, n: u64);
    /// TIME-WAITs currently held (entries or sockets).
    fn time_wait(&self) -> usize;
}

// ---- fourtuple ------------------------------------------------------------------------

/// Per-connection driver state indexed by [`ConnHandle::index`], as an application would
/// keep it: the driver's own bookkeeping should cost next to nothing next to the stack's.
struct Slab<T> {
    items: Vec<Option<(ConnHandle, T)>>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            items: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    fn len(&self) -> usize {
        self.len
    }

    fn insert(&mut self, h: ConnHandle, v: T) {
        let i = h.index();
        if i >= self.items.len() {
            self.items.resize_with(i + 1, || None);
        }
        if self.items[i].replace((h, v)).is_none() {
            self.len += 1;
        }
    }

    fn get_mut(&mut self, h: ConnHandle) -> Option<&mut T> {
        match self.items.get_mut(h.index()) {
            // A stale handle (an older generation of the slot) is not this connection.
            Some(Some((k, v))) if *k == h => Some(v),
            _ => None,
        }
    }

    fn get_or_insert(&mut self, h: ConnHandle, v: T) -> &mut T {
        if self.get_mut(h).is_none() {
            self.insert(h, v);
        }
        self.get_mut(h).expect("just inserted")
    }

    fn remove(&mut self, h: ConnHandle) {
        if let Some(slot) = self.items.get_mut(h.index()) {
            if slot.as_ref().is_some_and(|(k, _)| *k == h) {
                *slot = None;
                self.len -= 1;
            }
        }
    }
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum ClientPhase {
    Connecting,
    AwaitReply,
    AwaitFin,
}

struct ClientConn {
    phase: ClientPhase,
    got: usize,
}

/// Two fourtuple stacks joined back to back: each transmit is handed to the other stack's
/// `receive` at once.
struct FourtupleChurn {
    clock: Clock,
    client: Stack,
    server: Stack,
    listeners: Vec<ListenerHandle>,
    in_flight: usize,
    conns: Slab<ClientConn>,
    /// Request bytes each server connection has read.
    served: Slab<usize>,
    next_port: u16,
    buf: Vec<u8>,
}

impl FourtupleChurn {
    fn new(in_flight: usize, clock: Clock) -> FourtupleChurn {
        let cfg = Config {
            msl: TIME_WAIT / 2,
            max_time_wait: 64 << 20,
            ephemeral_ports: (CLIENT_PORT_LO, 65535),
            ..Config::default()
        };
        let mut client = Stack::new(cfg.clone(), [1; 16]);
        client.add_address(IpAddr::V4(CLIENT));
        let mut server = Stack::new(cfg, [2; 16]);
        server.add_address(IpAddr::V4(SERVER));
        let listeners = (0..SERVER_PORTS)
            .map(|i| {
                let addr = SocketAddr::new(IpAddr::V4(SERVER), PORT_BASE + i);
                server.listen(addr, in_flight + 64).expect("listen")
            })
            .collect();
        FourtupleChurn {
            clock,
            client,
            server,
            listeners,
            in_flight,
            conns: Slab::default(),
            served: Slab::default(),
            next_port: 0,
            buf: vec![0; MTU],
        }
    }

    fn start(&mut self, now: FtInstant) {
        let port = PORT_BASE + self.next_port;
        self.next_port = (self.next_port + 1) % SERVER_PORTS;
        let remote = SocketAddr::new(IpAddr::V4(SERVER), port);
        let h = self
            .client
            .connect(now, remote, None)
            .expect("fourtuple connect");
        self.conns.insert(
            h,
            ClientConn {
                phase: ClientPhase::Connecting,
                got: 0,
            },
        );
    }

    /// Moves a server connection on: request in, reply out, close on end-of-stream.
    fn serve(&mut self, now: FtInstant, h: ConnHandle) {
        let mut rx = [0u8; 64];
        loop {
            match self.server.recv(now, h, &mut rx) {
                Ok(0) => {
                    self.server.close(now, h).expect("server close");
                    self.served.remove(h);
                    return;
                }
                Ok(n) => {
                    let got = self.served.get_or_insert(h, 0);
                    assert_eq!(rx[..n], REQUEST[*got..*got + n], "request bytes");
                    *got += n;
                    if *got == REQUEST.len() {
                        let sent = self.server.send(now, h, &REPLY).expect("server send");
                        assert_eq!(sent, REPLY.len());
                    }
                }
                Err(Error::WouldBlock) => return,
                Err(e) => panic!("server recv: {e}"),
            }
        }
    }

    /// Moves a client lifecycle on; returns true when it completed (client in TIME-WAIT).
    fn pump_client(&mut self, now: FtInstant, h: ConnHandle, events: EventSet) -> bool {
        assert!(!events.contains(EventSet::ERROR), "client connection error");
        let Some(c) = self.conns.get_mut(h) else {
            return false;
        };
        let mut rx = [0u8; 64];
        loop {
            match c.phase {
                ClientPhase::Connecting => {
                    if !events.contains(EventSet::CONNECTED) {
                        return false;
                    }
                    let n = self.client.send(now, h, &REQUEST).expect("client send");
                    assert_eq!(n, REQUEST.len());
                    c.phase = ClientPhase::AwaitReply;
                }
                ClientPhase::AwaitReply => match self.client.recv(now, h, &mut rx) {
                    Ok(0) => panic!("client: end of stream before the reply"),
                    Ok(n) => {
                        assert_eq!(rx[..n], REPLY[c.got..c.got + n], "reply bytes");
                        c.got += n;
                        if c.got == REPLY.len() {
                            self.client.shutdown_write(now, h).expect("client shutdown");
                            c.phase = ClientPhase::AwaitFin;
                        }
                    }
                    Err(Error::WouldBlock) => return false,
                    Err(e) => panic!("client recv: {e}"),
                },
                ClientPhase::AwaitFin => match self.client.recv(now, h, &mut rx) {
                    Ok(0) => {
                        // The server's FIN: the client is in TIME-WAIT. Releasing the
                        // handle frees the TCB; the TIME_WAIT entry stays.
                        self.client.close(now, h).expect("client close");
                        self.conns.remove(h);
                        return true;
                    }
                    Ok(_) => panic!("client: bytes after the reply"),
                    Err(Error::WouldBlock) => return false,
                    Err(e) => panic!("client recv: {e}"),
                },
            }
        }
    }

    /// One round: start lifecycles, move packets both ways, react to events, fire timers.
    /// Returns the lifecycles completed.
    fn round(&mut self, may_start: u64) -> u64 {
        let now = FtInstant::from_micros(self.clock.now_us());
        let mut started = 0;
        while self.conns.len() < self.in_flight && started < may_start {
            self.start(now);
            started += 1;
        }
        while let Some(n) = self.client.poll_transmit(now, &mut self.buf) {
            self.server.receive(now, &self.buf[..n]);
        }
        while let Some(ev) = self.server.poll_event() {
            match ev {
                Event::Incoming { listener } => {
                    while let Ok(Some(h)) = self.server.accept(listener) {
                        self.serve(now, h);
                    }
                }
                Event::Conn { handle, .. } => self.serve(now, handle),
            }
        }
        while let Some(n) = self.server.poll_transmit(now, &mut self.buf) {
            self.client.receive(now, &self.buf[..n]);
        }
        let mut done = 0;
        while let Some(ev) = self.client.poll_event() {
            if let Event::Conn { handle, events } = ev {
                if self.pump_client(now, handle, events) {
                    done += 1;
                    self.clock.completed();
                }
            }
        }
        for stack in [&mut self.client, &mut self.server] {
            if stack.poll_timeout().is_some_and(|t| t <= now) {
                stack.handle_timeout(now);
            }
        }
        done
    }
}

impl Churn for FourtupleChurn {
    fn run(&mut self, n: u64) {
        let mut done = 0;
        while done < n {
            // Start no more than are still to complete, counting those in flight.
            let may_start = (n - done).saturating_sub(self.conns.len() as u64);
            done += self.round(may_start.max(1));
        }
        black_box(&self.listeners);
    }

    fn time_wait(&self) -> usize {
        self.client.time_wait().len()
    }
}

// ---- smoltcp --------------------------------------------------------------------------

/// Both directions of the in-memory link between the two smoltcp interfaces: queues of
/// `(len, buffer)`, and per direction a pool of spare buffers so a steady run allocates
/// nothing per packet.
#[derive(Default)]
struct Link {
    to_server: VecDeque<(usize, Vec<u8>)>,
    to_client: VecDeque<(usize, Vec<u8>)>,
    pool_to_server: Vec<Vec<u8>>,
    pool_to_client: Vec<Vec<u8>>,
}

impl Link {
    /// The client's end of the link as a smoltcp device.
    fn client_end(&mut self) -> End<'_> {
        End {
            rx: &mut self.to_client,
            rx_pool: &mut self.pool_to_client,
            tx: &mut self.to_server,
            tx_pool: &mut self.pool_to_server,
        }
    }

    /// The server's end of the link as a smoltcp device.
    fn server_end(&mut self) -> End<'_> {
        End {
            rx: &mut self.to_server,
            rx_pool: &mut self.pool_to_server,
            tx: &mut self.to_client,
            tx_pool: &mut self.pool_to_client,
        }
    }
}

/// One end of the [`Link`]: a `Medium::Ip` device.
struct End<'a> {
    rx: &'a mut VecDeque<(usize, Vec<u8>)>,
    rx_pool: &'a mut Vec<Vec<u8>>,
    tx: &'a mut VecDeque<(usize, Vec<u8>)>,
    tx_pool: &'a mut Vec<Vec<u8>>,
}

struct RxTok<'a> {
    len: usize,
    buf: Vec<u8>,
    pool: &'a mut Vec<Vec<u8>>,
}

struct TxTok<'a> {
    tx: &'a mut VecDeque<(usize, Vec<u8>)>,
    pool: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for RxTok<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.buf[..self.len]);
        self.pool.push(self.buf);
        r
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.pool.pop().unwrap_or_else(|| vec![0; MTU]);
        let r = f(&mut buf[..len]);
        self.tx.push_back((len, buf));
        r
    }
}

impl phy::Device for End<'_> {
    type RxToken<'b>
        = RxTok<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxTok<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: SmolInstant) -> Option<(RxTok<'_>, TxTok<'_>)> {
        let (len, buf) = self.rx.pop_front()?;
        Some((
            RxTok {
                len,
                buf,
                pool: self.rx_pool,
            },
            TxTok {
                tx: self.tx,
                pool: self.tx_pool,
            },
        ))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<TxTok<'_>> {
        Some(TxTok {
            tx: self.tx,
            pool: self.tx_pool,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps
    }
}

/// A client lifecycle on smoltcp.
struct SmolClient {
    handle: SocketHandle,
    phase: ClientPhase,
    got: usize,
}

/// A server socket on smoltcp: pre-posted in LISTEN, then the connection it accepted.
struct SmolServer {
    handle: SocketHandle,
    got: usize,
    closed: bool,
}

/// Two smoltcp interfaces joined by [`Link`], each with its own `SocketSet`.
struct SmolChurn {
    clock: Clock,
    link: Link,
    client_iface: Interface,
    server_iface: Interface,
    client_set: SocketSet<'static>,
    server_set: SocketSet<'static>,
    in_flight: usize,
    clients: Vec<SmolClient>,
    servers: Vec<SmolServer>,
    /// Client sockets in TIME-WAIT, oldest first (they expire in this order).
    time_wait: VecDeque<SocketHandle>,
    /// Position in the 4-tuple space (server port fastest).
    next_tuple: u64,
    /// Clock when the walk through the 4-tuple space last wrapped.
    last_wrap_us: Option<u64>,
}

fn smol_now(us: u64) -> SmolInstant {
    SmolInstant::from_micros(us as i64)
}

fn smol_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; SMOL_BUFFER]),
        tcp::SocketBuffer::new(vec![0; SMOL_BUFFER]),
    )
}

impl SmolChurn {
    fn new(in_flight: usize, clock: Clock) -> SmolChurn {
        let mut link = Link::default();
        let now = smol_now(clock.now_us());
        let iface = |addr: Ipv4Addr, seed: u64, dev: &mut End<'_>| {
            let mut cfg = IfaceConfig::new(HardwareAddress::Ip);
            cfg.random_seed = seed;
            let mut iface = Interface::new(cfg, dev, now);
            iface.update_ip_addrs(|a| {
                a.push(IpCidr::new(IpAddress::Ipv4(addr), 24))
                    .expect("address slot");
            });
            iface
        };
        let client_iface = iface(CLIENT, 1, &mut link.client_end());
        let server_iface = iface(SERVER, 2, &mut link.server_end());
        SmolChurn {
            clock,
            link,
            client_iface,
            server_iface,
            client_set: SocketSet::new(vec![]),
            server_set: SocketSet::new(vec![]),
            in_flight,
            clients: Vec::new(),
            servers: Vec::new(),
            time_wait: VecDeque::new(),
            next_tuple: 0,
            last_wrap_us: None,
        }
    }

    fn start(&mut self, now_us: u64) {
        let space = u64::from(SERVER_PORTS) * u64::from(65535 - CLIENT_PORT_LO + 1);
        let i = self.next_tuple;
        self.next_tuple = (i + 1) % space;
        if self.next_tuple == 0 {
            if let Some(at) = self.last_wrap_us {
                assert!(
                    now_us - at > (TIME_WAIT + Duration::from_millis(500)).as_micros() as u64,
                    "smoltcp: 4-tuple space wrapped while its TIME-WAITs may live"
                );
            }
            self.last_wrap_us = Some(now_us);
        }
        let server_port = PORT_BASE + (i % u64::from(SERVER_PORTS)) as u16;
        let client_port = CLIENT_PORT_LO + (i / u64::from(SERVER_PORTS)) as u16;
        // smoltcp has no listen backlog: one socket in LISTEN per expected connection.
        let mut listener = smol_socket();
        listener.listen(server_port).expect("smoltcp listen");
        let handle = self.server_set.add(listener);
        self.servers.push(SmolServer {
            handle,
            got: 0,
            closed: false,
        });
        let mut sock = smol_socket();
        let remote = IpEndpoint::new(IpAddress::Ipv4(SERVER), server_port);
        sock.connect(self.client_iface.context(), remote, client_port)
            .expect("smoltcp connect");
        let handle = self.client_set.add(sock);
        self.clients.push(SmolClient {
            handle,
            phase: ClientPhase::Connecting,
            got: 0,
        });
    }

    /// One round: start lifecycles, poll both interfaces, move every socket on.
    /// Returns the lifecycles completed.
    fn round(&mut self, may_start: u64) -> u64 {
        let now_us = self.clock.now_us();
        let now = smol_now(now_us);
        let mut started = 0;
        while self.clients.len() < self.in_flight && started < may_start {
            self.start(now_us);
            started += 1;
        }
        self.client_iface
            .poll(now, &mut self.link.client_end(), &mut self.client_set);
        self.server_iface
            .poll(now, &mut self.link.server_end(), &mut self.server_set);

        // Server sockets: request in, reply out, close on end-of-stream, free when CLOSED.
        let mut i = 0;
        while i < self.servers.len() {
            let s = &mut self.servers[i];
            let sock = self.server_set.get_mut::<tcp::Socket>(s.handle);
            if s.closed {
                if sock.state() == tcp::State::Closed {
                    self.server_set.remove(s.handle);
                    self.servers.swap_remove(i);
                    continue;
                }
            } else if s.got < REQUEST.len() {
                if sock.can_recv() {
                    let mut rx = [0u8; 64];
                    let n = sock.recv_slice(&mut rx).expect("server recv");
                    assert_eq!(rx[..n], REQUEST[s.got..s.got + n], "request bytes");
                    s.got += n;
                    if s.got == REQUEST.len() {
                        let sent = sock.send_slice(&REPLY).expect("server send");
                        assert_eq!(sent, REPLY.len());
                    }
                }
            } else if !sock.may_recv() && !sock.can_recv() {
                sock.close();
                s.closed = true;
            }
            i += 1;
        }

        // Client lifecycles.
        let mut done = 0;
        let mut i = 0;
        while i < self.clients.len() {
            let c = &mut self.clients[i];
            let sock = self.client_set.get_mut::<tcp::Socket>(c.handle);
            assert!(
                sock.state() != tcp::State::Closed,
                "smoltcp client closed early"
            );
            match c.phase {
                ClientPhase::Connecting => {
                    if sock.may_send() {
                        let n = sock.send_slice(&REQUEST).expect("client send");
                        assert_eq!(n, REQUEST.len());
                        c.phase = ClientPhase::AwaitReply;
                    }
                }
                ClientPhase::AwaitReply => {
                    if sock.can_recv() {
                        let mut rx = [0u8; 64];
                        let n = sock.recv_slice(&mut rx).expect("client recv");
                        assert_eq!(rx[..n], REPLY[c.got..c.got + n], "reply bytes");
                        c.got += n;
                        if c.got == REPLY.len() {
                            sock.close();
                            c.phase = ClientPhase::AwaitFin;
                        }
                    }
                }
                ClientPhase::AwaitFin => {
                    if sock.state() == tcp::State::TimeWait {
                        self.time_wait.push_back(c.handle);
                        self.clients.swap_remove(i);
                        done += 1;
                        self.clock.completed();
                        continue;
                    }
                }
            }
            i += 1;
        }

        // TIME-WAIT sockets leave the set once smoltcp's 10 s timer closed them.
        while let Some(&h) = self.time_wait.front() {
            if self.client_set.get::<tcp::Socket>(h).state() != tcp::State::Closed {
                break;
            }
            self.client_set.remove(h);
            self.time_wait.pop_front();
        }
        done
    }
}

impl Churn for SmolChurn {
    fn run(&mut self, n: u64) {
        let mut done = 0;
        while done < n {
            let may_start = (n - done).saturating_sub(self.clients.len() as u64);
            done += self.round(may_start.max(1));
        }
    }

    fn time_wait(&self) -> usize {
        self.time_wait.len()
    }
}

// ---- criterion ------------------------------------------------------------------------

fn fixture(stack: &str, in_flight: usize, clock: Clock) -> Box<dyn Churn> {
    match stack {
        "fourtuple" => Box::new(FourtupleChurn::new(in_flight, clock)),
        "smoltcp" => Box::new(SmolChurn::new(in_flight, clock)),
        other => panic!("unknown stack {other:?}: fourtuple or smoltcp"),
    }
}

fn churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("churn");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(TIME_WAIT + Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));
    for in_flight in IN_FLIGHT {
        for stack in ["fourtuple", "smoltcp"] {
            let mut fx = fixture(stack, in_flight, Clock::Wall(WallInstant::now()));
            let mut ran = 0u64;
            g.bench_function(BenchmarkId::new(stack, in_flight), |b| {
                b.iter_custom(|n| {
                    let t = WallInstant::now();
                    fx.run(n);
                    ran += n;
                    t.elapsed()
                })
            });
            if ran > 0 {
                eprintln!(
                    "churn/{stack}/{in_flight}: {} TIME-WAITs held at the end",
                    fx.time_wait()
                );
            }
        }
    }
    g.finish();
}

// ---- --count ------------------------------------------------------------------------

/// The counted part of a `--count` run: callgrind's `--toggle-collect` names this function.
#[inline(never)]
fn measured_phase(fx: &mut dyn Churn, n: u64) {
    fx.run(n);
}

fn count_mode(args: &[String]) {
    let mut count = None;
    let mut stack = String::from("fourtuple");
    let mut in_flight = 1usize;
    let mut rate = 1000.0f64;
    let mut wall = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().expect("flag needs a value").clone();
        match a.as_str() {
            "--count" => count = Some(val().parse::<u64>().expect("--count N")),
            "--stack" => stack = val(),
            "--in-flight" => in_flight = val().parse().expect("--in-flight C"),
            "--rate" => rate = val().parse().expect("--rate R"),
            "--wall" => wall = true,
            "--bench" => {}
            other => panic!(
                "unknown argument {other:?}: --count N [--stack fourtuple|smoltcp] \
                 [--in-flight C] [--rate R | --wall]"
            ),
        }
    }
    let n = count.expect("--count N");
    let step = 1e6 / rate;
    let clock = if wall {
        Clock::Wall(WallInstant::now())
    } else {
        Clock::Virtual { now: 0.0, step }
    };
    let mut fx = fixture(&stack, in_flight, clock);
    let warmup = (TIME_WAIT.as_secs_f64() * rate) as u64 + in_flight as u64;
    fx.run(warmup);
    let tw = fx.time_wait();
    let t = WallInstant::now();
    measured_phase(&mut *fx, n);
    let dt = t.elapsed();
    println!(
        "{stack} in-flight {in_flight}: {n} lifecycles after {warmup} warm-up, \
         {tw} TIME-WAITs held (virtual rate {rate}/s), {:.0} lifecycles/s",
        n as f64 / dt.as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--count") {
        count_mode(&args);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    churn(&mut c);
    c.final_summary();
}
