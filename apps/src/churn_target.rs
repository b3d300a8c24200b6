//! Connection churn against a real server (`fourtuple churn --target IP:PORT --tun NAME`):
//! fourtuple is the client, over a TUN, and the server is anything that speaks the churn
//! protocol (e.g. the Linux kernel through `fourtuple kernel-peer`).
//!
//! This module owns the client half of the churn lifecycle as an [`App`] on the event loop
//! (see [`crate::churn`] for the protocol: a 16-byte request naming the lifecycle, a
//! 16-byte reply, then the close that [`CloseMode`] names) and counting the server's
//! TIME_WAIT entries from `/proc/net/tcp` of the current network namespace. It must never
//! start a server, touch a device itself (the loop does), or read the wall clock except
//! through the loop's `now` (and to time the run and pace the progress callback).
//!
//! It also owns the kernel's side of `churn --vs-kernel`: the same client lifecycle on the
//! host kernel's TCP ([`run_kernel_client`]: non-blocking std sockets in one thread, polled
//! with poll(2)), against the same server, so the two runs can be compared.

use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use fourtuple_netdev::{App, Control, EventLoop, LoopOptions, StopReason, TunConfig, TunDevice};
use fourtuple_stack::{Config, ConnHandle, Error, Event, EventSet, Instant, Stack};
use hashbrown::HashMap;

use crate::churn::{
    close_finished, conn_error_kind, error_kind, reply, request, ChurnConfig, ChurnReport,
    CloseMode, Progress, StopAt, FAIL_DATA_MISMATCH, FAIL_LIFECYCLE_TIMEOUT, FAIL_UNEXPECTED_EOF,
    FAIL_UNFINISHED, GOODBYE, MESSAGE_LEN,
};

/// Where the churn client runs and whom it talks to.
#[derive(Clone, Debug)]
pub struct TargetConfig {
    /// The workload (stop, concurrency, close mode, policy, ports, msl, timeouts).
    pub churn: ChurnConfig,
    /// The server's address; with `churn.server_ports` K, ports `port..port+K` are used
    /// round-robin.
    pub target: SocketAddr,
    /// The TUN to create.
    pub tun: String,
    /// The stack's address and prefix.
    pub addr: (Ipv4Addr, u8),
    /// The kernel's address on the TUN, if the TUN should get one.
    pub host_addr: Option<Ipv4Addr>,
    /// How long the event loop polls without sleeping before it sleeps
    /// ([`LoopOptions::busy_poll`]); zero: never.
    pub busy_poll: Duration,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Sending,
    AwaitReply,
    AwaitGoodbye,
    AwaitEof,
    AwaitClosed,
}

#[derive(Debug)]
struct Lc {
    id: u64,
    phase: Phase,
    sent: usize,
    got: usize,
    rx: [u8; MESSAGE_LEN],
}

/// The churn client as an app on the loop.
struct Client<'p> {
    cfg: ChurnConfig,
    target: SocketAddr,
    lcs: HashMap<ConnHandle, Lc>,
    deadlines: VecDeque<(Instant, ConnHandle, u64)>,
    started: u64,
    completed: u64,
    failed: u64,
    failures: BTreeMap<&'static str, u64>,
    next_port: u16,
    start_wall: std::time::Instant,
    stop_starting: bool,
    /// The progress mark and when it last changed.
    last_progress: Option<(u64, Instant)>,
    progress_mark: u64,
    stalled: Option<String>,
    /// The progress callback, its period and when it last ran.
    progress: Box<dyn FnMut(&Progress) + 'p>,
    progress_every: Duration,
    progress_last: std::time::Instant,
}

impl Client<'_> {
    fn may_start(&self) -> bool {
        match self.cfg.stop {
            StopAt::Count(n) => self.started < n,
            StopAt::WallClock(_) => !self.stop_starting,
        }
    }

    fn count_failure(&mut self, kind: &'static str) {
        self.failed += 1;
        self.progress_mark += 1;
        *self.failures.entry(kind).or_insert(0) += 1;
    }

    fn fail(&mut self, stack: &mut Stack, now: Instant, h: ConnHandle, kind: &'static str) {
        if self.lcs.remove(&h).is_some() {
            let _ = stack.abort(now, h);
            self.count_failure(kind);
        }
    }

    fn start_one(&mut self, stack: &mut Stack, now: Instant) {
        self.started += 1;
        self.progress_mark += 1;
        let id = self.started;
        let port = self.target.port().wrapping_add(self.next_port);
        self.next_port = (self.next_port + 1) % self.cfg.server_ports.max(1);
        let remote = SocketAddr::new(self.target.ip(), port);
        match stack.connect(now, remote, None) {
            Ok(h) => {
                let deadline = now + self.cfg.lifecycle_timeout;
                self.lcs.insert(
                    h,
                    Lc {
                        id,
                        phase: Phase::Connecting,
                        sent: 0,
                        got: 0,
                        rx: [0; MESSAGE_LEN],
                    },
                );
                self.deadlines.push_back((deadline, h, id));
            }
            Err(e) => self.count_failure(error_kind(e)),
        }
    }

    /// Moves one lifecycle on; returns the failure kind if it failed.
    fn pump(
        &mut self,
        stack: &mut Stack,
        now: Instant,
        h: ConnHandle,
        events: EventSet,
    ) -> Result<bool, &'static str> {
        let close = self.cfg.close;
        let Some(lc) = self.lcs.get_mut(&h) else {
            return Ok(false);
        };
        if events.contains(EventSet::ERROR) {
            return Err(conn_error_kind(stack, h));
        }
        let mut buf = [0u8; 4 * MESSAGE_LEN];
        loop {
            match lc.phase {
                Phase::Connecting => {
                    if !matches!(
                        stack.state(h),
                        Ok(fourtuple_stack::TcpState::Established
                            | fourtuple_stack::TcpState::CloseWait)
                    ) {
                        return Ok(false);
                    }
                    lc.phase = Phase::Sending;
                }
                Phase::Sending => {
                    let msg = request(lc.id);
                    match stack.send(now, h, &msg[lc.sent..]) {
                        Ok(n) => lc.sent += n,
                        Err(Error::WouldBlock) => return Ok(false),
                        Err(e) => return Err(error_kind(e)),
                    }
                    if lc.sent < MESSAGE_LEN {
                        return Ok(false);
                    }
                    lc.phase = Phase::AwaitReply;
                }
                Phase::AwaitReply | Phase::AwaitGoodbye => {
                    let (want, expected): (usize, Vec<u8>) = if lc.phase == Phase::AwaitReply {
                        (MESSAGE_LEN, reply(lc.id).to_vec())
                    } else {
                        (GOODBYE.len(), GOODBYE.to_vec())
                    };
                    let room = want - lc.got;
                    match stack.recv(now, h, &mut buf[..room]) {
                        Ok(0) => return Err(FAIL_UNEXPECTED_EOF),
                        Ok(n) => {
                            lc.rx[lc.got..lc.got + n].copy_from_slice(&buf[..n]);
                            lc.got += n;
                        }
                        Err(Error::WouldBlock) => return Ok(false),
                        Err(e) => return Err(error_kind(e)),
                    }
                    if lc.got < want {
                        continue;
                    }
                    if lc.rx[..want] != expected[..] {
                        return Err(FAIL_DATA_MISMATCH);
                    }
                    lc.got = 0;
                    if lc.phase == Phase::AwaitReply && close == CloseMode::Goodbye {
                        lc.phase = Phase::AwaitGoodbye;
                        continue;
                    }
                    match close {
                        CloseMode::Client | CloseMode::Goodbye => {
                            stack.shutdown_write(now, h).map_err(error_kind)?;
                            lc.phase = Phase::AwaitClosed;
                        }
                        CloseMode::Server => lc.phase = Phase::AwaitEof,
                        CloseMode::Abort => {
                            let _ = stack.abort(now, h);
                            return Ok(true);
                        }
                    }
                }
                Phase::AwaitEof => match stack.recv(now, h, &mut buf) {
                    Ok(0) => {
                        stack.shutdown_write(now, h).map_err(error_kind)?;
                        lc.phase = Phase::AwaitClosed;
                    }
                    Ok(_) => return Err(FAIL_DATA_MISMATCH),
                    Err(Error::WouldBlock) => return Ok(false),
                    Err(e) => return Err(error_kind(e)),
                },
                Phase::AwaitClosed => {
                    // Bytes after the close (none are expected) or the peer's FIN.
                    match stack.recv(now, h, &mut buf) {
                        Ok(0) | Err(Error::WouldBlock) => {}
                        Ok(_) => return Err(FAIL_DATA_MISMATCH),
                        Err(e) => return Err(error_kind(e)),
                    }
                    if !close_finished(stack, h) {
                        return Ok(false);
                    }
                    let _ = stack.close(now, h);
                    return Ok(true);
                }
            }
        }
    }

    fn on_conn(&mut self, stack: &mut Stack, now: Instant, h: ConnHandle, events: EventSet) {
        match self.pump(stack, now, h, events) {
            Ok(false) => {}
            Ok(true) => {
                self.lcs.remove(&h);
                self.completed += 1;
                self.progress_mark += 1;
            }
            Err(kind) => self.fail(stack, now, h, kind),
        }
    }
}

impl App for Client<'_> {
    fn on_event(&mut self, stack: &mut Stack, now: Instant, event: Event) {
        if let Event::Conn { handle, events } = event {
            self.on_conn(stack, now, handle, events);
        }
    }

    fn poll(&mut self, stack: &mut Stack, now: Instant) -> Control {
        // Deadlines, in order (all lifecycles share one timeout).
        while let Some(&(at, h, id)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            if self.lcs.get(&h).is_some_and(|lc| lc.id == id) {
                self.fail(stack, now, h, FAIL_LIFECYCLE_TIMEOUT);
            }
        }
        if let StopAt::WallClock(d) = self.cfg.stop {
            if self.start_wall.elapsed() >= d {
                self.stop_starting = true;
            }
        }
        if self.progress_last.elapsed() >= self.progress_every {
            self.progress_last = std::time::Instant::now();
            let elapsed = self.start_wall.elapsed();
            (self.progress)(&Progress {
                started: self.started,
                completed: self.completed,
                failed: self.failed,
                elapsed,
                simulated: elapsed,
                time_wait_client: stack.time_wait().len(),
                time_wait_server: 0,
            });
        }
        let mut attempts = 0;
        while self.lcs.len() < self.cfg.concurrency
            && attempts < self.cfg.concurrency
            && self.may_start()
        {
            attempts += 1;
            self.start_one(stack, now);
        }
        // Lifecycles whose progress needs no new event (e.g. data that came with the
        // handshake) are pumped by their events; nothing else to do here.
        if self.lcs.is_empty() && !self.may_start() {
            return Control::Stop;
        }
        // Stall guard: nothing started, completed or failed for twice the lifecycle
        // timeout (the deadlines should have failed lifecycles long before).
        match self.last_progress {
            Some((mark, _)) if mark != self.progress_mark => {
                self.last_progress = Some((self.progress_mark, now));
            }
            Some((_, at)) if now.saturating_since(at) > self.cfg.lifecycle_timeout * 2 => {
                self.stalled = Some(format!(
                    "no lifecycle progressed for {:?} with {} in flight",
                    self.cfg.lifecycle_timeout * 2,
                    self.lcs.len()
                ));
                return Control::Stop;
            }
            Some(_) => {}
            None => self.last_progress = Some((self.progress_mark, now)),
        }
        Control::Continue
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.front().map(|d| d.0)
    }
}

/// The TUN's `txqueuelen` for `concurrency` lifecycles in flight. Every one of them can
/// have packets queued toward fourtuple at once (a burst of SYN-ACKs when they start
/// together, an ACK and a FIN at the end), and the kernel drops what overflows the queue:
/// with its default of 500 and 1024 in flight it dropped ~1,400 packets in 10,000
/// lifecycles, and each loss cost a one-second retransmission timeout (4.9k instead of
/// 41k lifecycles/s). Four packets per lifecycle leaves room.
fn tun_queue_len(concurrency: usize) -> u32 {
    u32::try_from(concurrency.saturating_mul(4))
        .unwrap_or(u32::MAX)
        .max(500)
}

/// Runs the churn client over a TUN against `tc.target` and reports; prints nothing.
/// Fails only when the TUN or the loop cannot be set up or the device fails.
pub fn run_target(tc: &TargetConfig) -> io::Result<ChurnReport> {
    run_target_then(tc, Duration::MAX, |_| {}, || ()).map(|(r, ())| r)
}

/// [`run_target`], calling `progress` about every `every` (its `time_wait_server` is 0:
/// the kernel's side is counted once, at the end), then `then` while the TUN still
/// exists (so the kernel's address on it stays usable), before the TUN is removed.
pub fn run_target_then<T>(
    tc: &TargetConfig,
    every: Duration,
    progress: impl FnMut(&Progress),
    then: impl FnOnce() -> T,
) -> io::Result<(ChurnReport, T)> {
    let cfg = &tc.churn;
    let tun_cfg = TunConfig {
        host_addr: tc.host_addr.map(|h| (h, tc.addr.1)),
        tx_queue_len: Some(tun_queue_len(cfg.concurrency)),
        ..TunConfig::new(tc.tun.clone())
    };
    let dev = TunDevice::create(&tun_cfg)?;
    let stack_cfg = crate::up::with_mtu(
        Config {
            msl: cfg.msl,
            reuse_policy: cfg.policy,
            ephemeral_ports: cfg.port_range,
            ..Config::default()
        },
        fourtuple_netdev::Device::mtu(&dev),
    );
    let mut stack = Stack::new(stack_cfg, crate::up::random_seed());
    stack.add_address(IpAddr::V4(tc.addr.0));
    let max = match cfg.stop {
        StopAt::WallClock(d) => Some(d + cfg.lifecycle_timeout * 2 + Duration::from_secs(5)),
        StopAt::Count(_) => None,
    };
    let mut lp = EventLoop::new(
        dev,
        stack,
        LoopOptions {
            max_duration: max,
            busy_poll: tc.busy_poll,
            ..LoopOptions::default()
        },
    )?;
    let mut client = Client {
        cfg: cfg.clone(),
        target: tc.target,
        lcs: HashMap::new(),
        deadlines: VecDeque::new(),
        started: 0,
        completed: 0,
        failed: 0,
        failures: BTreeMap::new(),
        next_port: 0,
        start_wall: std::time::Instant::now(),
        stop_starting: false,
        last_progress: None,
        progress_mark: 0,
        stalled: None,
        progress: Box::new(progress),
        progress_every: every,
        progress_last: std::time::Instant::now(),
    };
    let reason = lp.run(&mut client).map_err(io::Error::other)?;
    let elapsed = client.start_wall.elapsed();
    if reason != StopReason::AppDone && client.stalled.is_none() {
        client.stalled = Some(format!("stopped early: {}", reason.name()));
    }
    // Whatever is still in flight failed: never drop a lifecycle silently.
    let now = lp.now();
    let left: Vec<ConnHandle> = client.lcs.keys().copied().collect();
    for h in left {
        client.fail(lp.stack_mut(), now, h, FAIL_UNFINISHED);
    }
    // Let the TIME_WAIT ACKs and last FINs reach the server before counting its side.
    std::thread::sleep(Duration::from_millis(200));
    let server_ports = (tc.target.port(), cfg.server_ports.max(1));
    let tw_server = kernel_time_wait(tc.target.ip(), server_ports).unwrap_or(0);
    let stats = lp.stats().clone();
    let stack = lp.stack();
    let report = ChurnReport {
        config: cfg.clone(),
        started: client.started,
        completed: client.completed,
        failed: client.failed,
        failures: client.failures,
        stalled: client.stalled,
        elapsed,
        simulated: elapsed,
        time_wait_client: stack.time_wait().len(),
        time_wait_server: tw_server,
        packets_client_to_server: stats.tx_packets,
        packets_server_to_client: stats.rx_packets,
        unmatched_server_connections: 0,
        tun_dropped: fourtuple_netdev::Device::kernel_drops(lp.device()),
        client_counters: stack.counters().entries(),
        server_counters: Vec::new(),
    };
    let after = then();
    drop(lp);
    Ok((report, after))
}

/// TIME_WAIT sockets of this network namespace's kernel whose local address is `ip` and
/// local port in `first..first+count`, from `/proc/net/tcp` (IPv4 only).
pub fn kernel_time_wait(ip: IpAddr, ports: (u16, u16)) -> io::Result<usize> {
    proc_time_wait(1, ip, ports)
}

/// TIME_WAIT sockets of this network namespace's kernel whose *remote* address is `ip` and
/// remote port in `first..first+count` (a kernel client's side), from `/proc/net/tcp`.
pub fn kernel_time_wait_to(ip: IpAddr, ports: (u16, u16)) -> io::Result<usize> {
    proc_time_wait(2, ip, ports)
}

/// Counts `/proc/net/tcp` TIME_WAIT lines whose address in column `col` (1 local, 2
/// remote) matches.
fn proc_time_wait(col: usize, ip: IpAddr, (first, count): (u16, u16)) -> io::Result<usize> {
    let IpAddr::V4(ip) = ip else {
        return Ok(0);
    };
    let text = std::fs::read_to_string("/proc/net/tcp")?;
    let want_ip = format!("{:08X}", u32::from_le_bytes(ip.octets()));
    let last = u32::from(first) + u32::from(count) - 1;
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 || f[3] != "06" {
                return false;
            }
            let Some((aip, aport)) = f[col].split_once(':') else {
                return false;
            };
            let port = u32::from_str_radix(aport, 16).unwrap_or(0);
            aip == want_ip && (u32::from(first)..=last).contains(&port)
        })
        .count())
}

// ---- the kernel's client (churn --vs-kernel) ----------------------------------------------

/// Where a kernel-client lifecycle is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum KPhase {
    Connecting,
    AwaitReply,
    AwaitGoodbye,
    AwaitEof,
}

/// One lifecycle on a kernel socket.
struct KConn {
    sock: socket2::Socket,
    id: u64,
    phase: KPhase,
    got: usize,
    rx: [u8; MESSAGE_LEN],
    deadline: std::time::Instant,
}

/// What one step of a kernel lifecycle came to.
enum KStep {
    Wait,
    Done,
    Fail(&'static str),
}

/// The outcome name of a kernel socket error (DESIGN.md's vocabulary).
fn io_kind(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => "reset",
        io::ErrorKind::AddrInUse => "addr-in-use",
        io::ErrorKind::AddrNotAvailable => "addr-not-available",
        io::ErrorKind::TimedOut => "timeout",
        _ => "error",
    }
}

/// Moves one kernel lifecycle on, after epoll said its socket is ready; as far as the
/// socket allows (the readiness is edge-triggered).
fn kernel_step(c: &mut KConn, close: CloseMode) -> KStep {
    use std::io::{Read, Write};
    let mut buf = [0u8; 4 * MESSAGE_LEN];
    loop {
        match c.phase {
            KPhase::Connecting => {
                match c.sock.take_error() {
                    Ok(None) => {}
                    Ok(Some(e)) | Err(e) => return KStep::Fail(io_kind(&e)),
                }
                // Writable and no error: connected. 16 bytes always fit the send buffer.
                match (&c.sock).write(&request(c.id)) {
                    Ok(MESSAGE_LEN) => c.phase = KPhase::AwaitReply,
                    Ok(_) => return KStep::Fail("error"),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return KStep::Wait,
                    Err(e) => return KStep::Fail(io_kind(&e)),
                }
            }
            KPhase::AwaitReply | KPhase::AwaitGoodbye => {
                let want = if c.phase == KPhase::AwaitReply {
                    MESSAGE_LEN
                } else {
                    GOODBYE.len()
                };
                match (&c.sock).read(&mut buf[..want - c.got]) {
                    Ok(0) => return KStep::Fail(FAIL_UNEXPECTED_EOF),
                    Ok(n) => {
                        c.rx[c.got..c.got + n].copy_from_slice(&buf[..n]);
                        c.got += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return KStep::Wait,
                    Err(e) => return KStep::Fail(io_kind(&e)),
                }
                if c.got < want {
                    continue;
                }
                let ok = if c.phase == KPhase::AwaitReply {
                    c.rx == reply(c.id)
                } else {
                    c.rx[..want] == GOODBYE[..]
                };
                if !ok {
                    return KStep::Fail(FAIL_DATA_MISMATCH);
                }
                c.got = 0;
                match (c.phase, close) {
                    (KPhase::AwaitReply, CloseMode::Goodbye) => c.phase = KPhase::AwaitGoodbye,
                    (_, CloseMode::Client | CloseMode::Goodbye) => {
                        if let Err(e) = c.sock.shutdown(std::net::Shutdown::Write) {
                            return KStep::Fail(io_kind(&e));
                        }
                        c.phase = KPhase::AwaitEof;
                    }
                    (_, CloseMode::Server) => c.phase = KPhase::AwaitEof,
                    (_, CloseMode::Abort) => {
                        // SO_LINGER 0: close() sends RST.
                        let _ = c.sock.set_linger(Some(Duration::ZERO));
                        return KStep::Done;
                    }
                }
            }
            KPhase::AwaitEof => match (&c.sock).read(&mut buf) {
                // The peer's FIN: closing the socket now finishes the close (our FIN
                // went first with --close client, goes now with --close server).
                Ok(0) => return KStep::Done,
                Ok(_) => return KStep::Fail(FAIL_DATA_MISMATCH),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return KStep::Wait,
                Err(e) => return KStep::Fail(io_kind(&e)),
            },
        }
    }
}

/// Runs the churn client on the host kernel's TCP against `target` (the same lifecycle,
/// close mode, count or duration, concurrency and lifecycle timeout as `cfg`), in this
/// thread, and reports; prints nothing. `progress` is called about every `every`.
///
/// The kernel picks the client's address and ports (its own `ip_local_port_range`;
/// `cfg.port_range` and `cfg.policy` describe fourtuple and are not applied). TIME_WAIT is
/// counted from `/proc/net/tcp` as the entries this run added: on the client side those
/// whose remote end is the target, on the server side those whose local end is.
pub fn run_kernel_client(
    cfg: &ChurnConfig,
    target: SocketAddr,
    busy_poll: Duration,
    every: Duration,
    mut progress: impl FnMut(&Progress),
) -> io::Result<ChurnReport> {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use std::os::fd::AsRawFd;

    // One descriptor per lifecycle in flight, plus a few.
    crate::raise_fd_limit(cfg.concurrency as u64 + 64);
    let ports = (target.port(), cfg.server_ports.max(1));
    let tw_client_before = kernel_time_wait_to(target.ip(), ports).unwrap_or(0);
    let tw_server_before = kernel_time_wait(target.ip(), ports).unwrap_or(0);
    let start = std::time::Instant::now();
    // epoll, edge-triggered: a turn costs what is ready, not what is in flight (poll(2)
    // over every socket made the kernel's client pay per turn for all of them).
    let mut poller = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut lcs: Vec<Option<KConn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut in_flight = 0usize;
    let mut next_scan = start;
    let (mut started, mut completed, mut failed) = (0u64, 0u64, 0u64);
    let mut failures: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut next_port = 0u16;
    let mut stalled = None;
    let mut last_report = start;
    let mut last_change = (0u64, start);
    let may_start = |started: u64| match cfg.stop {
        StopAt::Count(n) => started < n,
        StopAt::WallClock(d) => start.elapsed() < d,
    };
    loop {
        let now = std::time::Instant::now();
        // Deadlines (lifecycle timeouts are seconds: a scan every 50 ms is plenty).
        if now >= next_scan {
            next_scan = now + Duration::from_millis(50);
            for slot in lcs.iter_mut() {
                if slot.as_ref().is_some_and(|c| c.deadline <= now) {
                    // Dropping the socket closes it, which also takes it out of epoll.
                    *slot = None;
                    in_flight -= 1;
                    failed += 1;
                    *failures.entry(FAIL_LIFECYCLE_TIMEOUT).or_insert(0) += 1;
                }
            }
            free.clear();
            free.extend((0..lcs.len()).filter(|&i| lcs[i].is_none()));
        }
        // New lifecycles up to the concurrency.
        while in_flight < cfg.concurrency && may_start(started) {
            started += 1;
            let port = target.port().wrapping_add(next_port);
            next_port = (next_port + 1) % cfg.server_ports.max(1);
            let remote = SocketAddr::new(target.ip(), port);
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(remote),
                socket2::Type::STREAM.nonblocking(),
                Some(socket2::Protocol::TCP),
            )?;
            sock.set_tcp_nodelay(true)?;
            match sock.connect(&remote.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => {
                    failed += 1;
                    *failures.entry(io_kind(&e)).or_insert(0) += 1;
                    continue;
                }
            }
            let idx = free.pop().unwrap_or_else(|| {
                lcs.push(None);
                lcs.len() - 1
            });
            poller.registry().register(
                &mut SourceFd(&sock.as_raw_fd()),
                Token(idx),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            lcs[idx] = Some(KConn {
                sock,
                id: started,
                phase: KPhase::Connecting,
                got: 0,
                rx: [0; MESSAGE_LEN],
                deadline: now + cfg.lifecycle_timeout,
            });
            in_flight += 1;
        }
        if in_flight == 0 && !may_start(started) {
            break;
        }
        // Wait for readiness.
        // Busy polling first, as fourtuple's event loop does with the same setting.
        let waited = fourtuple_netdev::event_loop::poll_busy(
            &mut poller,
            &mut events,
            busy_poll,
            Some(Duration::from_millis(50)),
        );
        match waited {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let i = ev.token().0;
            // A socket closed earlier in this batch has no lifecycle left: skip it.
            let Some(c) = lcs.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            let end = match kernel_step(c, cfg.close) {
                KStep::Wait => continue,
                KStep::Done => {
                    completed += 1;
                    None
                }
                KStep::Fail(kind) => Some(kind),
            };
            if let Some(kind) = end {
                failed += 1;
                *failures.entry(kind).or_insert(0) += 1;
            }
            lcs[i] = None;
            free.push(i);
            in_flight -= 1;
        }
        if last_report.elapsed() >= every {
            last_report = std::time::Instant::now();
            let elapsed = start.elapsed();
            progress(&Progress {
                started,
                completed,
                failed,
                elapsed,
                simulated: elapsed,
                time_wait_client: 0,
                time_wait_server: 0,
            });
        }
        // Stall guard, as for fourtuple's client.
        let mark = started + completed + failed;
        if mark != last_change.0 {
            last_change = (mark, std::time::Instant::now());
        } else if last_change.1.elapsed() > cfg.lifecycle_timeout * 2 {
            stalled = Some(format!(
                "no lifecycle progressed for {:?} with {in_flight} in flight",
                cfg.lifecycle_timeout * 2,
            ));
            break;
        }
    }
    let elapsed = start.elapsed();
    failed += in_flight as u64;
    if in_flight > 0 {
        *failures.entry(FAIL_UNFINISHED).or_insert(0) += in_flight as u64;
    }
    drop(lcs);
    // Let the last FINs and ACKs land before counting TIME_WAIT, as for fourtuple's run.
    std::thread::sleep(Duration::from_millis(200));
    let tw_client = kernel_time_wait_to(target.ip(), ports).unwrap_or(0);
    let tw_server = kernel_time_wait(target.ip(), ports).unwrap_or(0);
    Ok(ChurnReport {
        config: cfg.clone(),
        started,
        completed,
        failed,
        failures,
        stalled,
        elapsed,
        simulated: elapsed,
        time_wait_client: tw_client.saturating_sub(tw_client_before),
        time_wait_server: tw_server.saturating_sub(tw_server_before),
        packets_client_to_server: 0,
        packets_server_to_client: 0,
        unmatched_server_connections: 0,
        tun_dropped: None,
        client_counters: Vec::new(),
        server_counters: Vec::new(),
    })
}
