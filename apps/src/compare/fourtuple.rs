//! The fourtuple side of the comparison: the stack under one reuse policy, on a TUN in
//! the scenario's namespace, with the kernel of that namespace as its peer.
//!
//! This module owns the fourtuple scenarios: a small driver (`Rig`) that pumps packets
//! between the TUN and the stack with the wall clock, a fourtuple client lifecycle and a
//! fourtuple server. Kernel peers are [`super::kernel`]'s servers and clients, run on other
//! threads of the same namespace. Like the kernel side, it reports what happened on this
//! run; it must never put packets anywhere but its own TUN.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use fourtuple_netdev::tun::{TunConfig, TunDevice};
use fourtuple_netdev::Device;
use fourtuple_stack::{
    Config, ConnError, ConnHandle, ConnectOptions, Error, FourTuple, Instant, ListenerHandle,
    ReusePolicy, SeqNum, Stack, TcpState,
};

use super::kernel::{self, ClientClose, Failure, Server, ServerMode};
use super::{Outcome, Sample, ScenarioResult};
use crate::churn::{decode_request, reply, request, GOODBYE, MESSAGE_LEN};

/// fourtuple's address on the TUN.
pub const FT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The kernel's address on the TUN.
pub const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The kernel's second address, for "another server address".
pub const KERNEL_IP2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

const TUN_NAME: &str = "ftcmp0";
const STEP_TIMEOUT: Duration = Duration::from_secs(3);

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// The stack on a TUN, driven with the wall clock.
pub struct Rig {
    dev: TunDevice,
    /// The stack under test.
    pub stack: Stack,
    t0: std::time::Instant,
    buf: Vec<u8>,
}

impl Rig {
    /// Creates the TUN (kernel side 192.0.2.1/24 and 198.51.100.1/24) and a stack with
    /// `policy` and the ephemeral `ports`.
    pub fn new(policy: ReusePolicy, ports: (u16, u16)) -> io::Result<Rig> {
        let dev = TunDevice::create(&TunConfig {
            host_addr: Some((KERNEL_IP, 24)),
            ..TunConfig::new(TUN_NAME)
        })?;
        let out = std::process::Command::new("ip")
            .args(["addr", "add", "198.51.100.1/24", "dev", TUN_NAME])
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ip addr add on {TUN_NAME}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let cfg = crate::up::with_mtu(
            Config {
                reuse_policy: policy,
                ephemeral_ports: ports,
                ..Config::default()
            },
            dev.mtu(),
        );
        let mut stack = Stack::new(cfg, crate::up::random_seed());
        stack.add_address(IpAddr::V4(FT_IP));
        Ok(Rig {
            dev,
            stack,
            t0: std::time::Instant::now(),
            buf: vec![0; 65536],
        })
    }

    /// The stack's clock.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.t0.elapsed().as_micros() as u64)
    }

    /// Moves every pending packet both ways and fires due timers; true when anything moved.
    pub fn pump(&mut self) -> io::Result<bool> {
        let now = self.now();
        let mut moved = false;
        while let Some(n) = self.dev.recv(&mut self.buf)? {
            self.stack.receive(now, &self.buf[..n]);
            moved = true;
        }
        if self.stack.poll_timeout().is_some_and(|t| t <= now) {
            self.stack.handle_timeout(now);
        }
        while let Some(n) = self.stack.poll_transmit(now, &mut self.buf) {
            let mut tries = 0;
            loop {
                match self.dev.send(&self.buf[..n]) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < 1000 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    Err(e) => return Err(e),
                }
            }
            moved = true;
        }
        // Nothing here waits on events: states are polled directly.
        while self.stack.poll_event().is_some() {}
        Ok(moved)
    }

    /// Pumps until `done` holds or `timeout` passes; returns whether `done` held.
    pub fn wait(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&mut Stack, Instant) -> bool,
    ) -> io::Result<bool> {
        let end = std::time::Instant::now() + timeout;
        loop {
            let moved = self.pump()?;
            let now = self.now();
            if done(&mut self.stack, now) {
                return Ok(true);
            }
            if std::time::Instant::now() > end {
                return Ok(false);
            }
            if !moved {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }

    /// Pumps while `other` runs on its own thread, and returns its result.
    pub fn pump_while<T: Send + 'static>(
        &mut self,
        mut side: impl FnMut(&mut Stack, Instant),
        other: std::thread::JoinHandle<T>,
    ) -> io::Result<T> {
        while !other.is_finished() {
            let moved = self.pump()?;
            let now = self.now();
            side(&mut self.stack, now);
            if !moved {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
        other
            .join()
            .map_err(|_| io::Error::other("kernel peer thread panicked"))
    }
}

fn stack_failure(e: Error, during: &str) -> Failure {
    let outcome = match e.outcome() {
        "addr-in-use" => Outcome::AddrInUse,
        "addr-not-available" => Outcome::AddrNotAvailable,
        "refused" => Outcome::Refused,
        "reset" => Outcome::Reset,
        "timeout" => Outcome::Timeout,
        _ => Outcome::Error,
    };
    Failure {
        outcome,
        errno: None,
        detail: format!("{during}: {e}"),
    }
}

fn conn_failure(e: Option<ConnError>, during: &str) -> Failure {
    let outcome = match e {
        Some(ConnError::Refused) => Outcome::Refused,
        Some(ConnError::Reset) | Some(ConnError::Aborted) => Outcome::Reset,
        Some(ConnError::TimedOut) | None => Outcome::Timeout,
    };
    Failure {
        outcome,
        errno: None,
        detail: format!("{during}: {e:?}"),
    }
}

fn io_failure(e: io::Error) -> Failure {
    Failure {
        outcome: Outcome::Error,
        errno: None,
        detail: format!("TUN: {e}"),
    }
}

/// One fourtuple client lifecycle against a kernel server; returns the 4-tuple used.
pub fn lifecycle(
    rig: &mut Rig,
    local: Option<SocketAddr>,
    remote: SocketAddr,
    close: ClientClose,
    goodbye: bool,
    opts: ConnectOptions,
) -> Result<FourTuple, Failure> {
    let now = rig.now();
    let h = rig
        .stack
        .connect_with(now, remote, local, opts)
        .map_err(|e| stack_failure(e, "connect"))?;
    let tuple = rig.stack.tuple(h).map_err(|e| stack_failure(e, "tuple"))?;
    let result = drive(rig, h, close, goodbye);
    if result.is_err() {
        let now = rig.now();
        let _ = rig.stack.abort(now, h);
        let _ = rig.pump();
    }
    result.map(|()| tuple)
}

fn drive(rig: &mut Rig, h: ConnHandle, close: ClientClose, goodbye: bool) -> Result<(), Failure> {
    let up = rig
        .wait(STEP_TIMEOUT, |s, _| {
            !matches!(
                s.state(h),
                Ok(TcpState::SynSent) | Ok(TcpState::SynReceived)
            )
        })
        .map_err(io_failure)?;
    match rig.stack.state(h) {
        Ok(TcpState::Established) => {}
        _ if !up => return Err(conn_failure(None, "connect")),
        _ => return Err(conn_failure(rig.stack.error(h).ok().flatten(), "connect")),
    }
    let id = next_id();
    let now = rig.now();
    rig.stack
        .send(now, h, &request(id))
        .map_err(|e| stack_failure(e, "send"))?;
    let want: Vec<u8> = if goodbye {
        GOODBYE.to_vec()
    } else {
        reply(id).to_vec()
    };
    let got = rig
        .wait(STEP_TIMEOUT, |s, _| {
            s.recv_available(h).unwrap_or(0) >= want.len() || s.error(h).ok().flatten().is_some()
        })
        .map_err(io_failure)?;
    if !got {
        return Err(conn_failure(rig.stack.error(h).ok().flatten(), "reply"));
    }
    let mut buf = vec![0u8; want.len()];
    let now = rig.now();
    match rig.stack.recv(now, h, &mut buf) {
        Ok(n) if n == want.len() && buf == want => {}
        Ok(_) => {
            return Err(Failure {
                outcome: Outcome::Error,
                errno: None,
                detail: "unexpected reply bytes".into(),
            })
        }
        Err(e) => return Err(stack_failure(e, "recv")),
    }
    let now = rig.now();
    match close {
        ClientClose::Abort => {
            let _ = rig.stack.set_linger_zero(h, true);
            rig.stack
                .close(now, h)
                .map_err(|e| stack_failure(e, "close"))?;
            rig.pump().map_err(io_failure)?;
            return Ok(());
        }
        ClientClose::First => {
            rig.stack
                .shutdown_write(now, h)
                .map_err(|e| stack_failure(e, "shutdown"))?;
        }
        ClientClose::AfterServer => {
            rig.wait(STEP_TIMEOUT, |s, _| {
                matches!(s.state(h), Ok(TcpState::CloseWait) | Ok(TcpState::Closed))
            })
            .map_err(io_failure)?;
            let now = rig.now();
            rig.stack
                .shutdown_write(now, h)
                .map_err(|e| stack_failure(e, "shutdown"))?;
        }
    }
    let done = rig
        .wait(STEP_TIMEOUT, |s, _| {
            matches!(s.state(h), Ok(TcpState::TimeWait) | Ok(TcpState::Closed))
        })
        .map_err(io_failure)?;
    let err = rig.stack.error(h).ok().flatten();
    let now = rig.now();
    let _ = rig.stack.close(now, h);
    if !done || err.is_some() {
        return Err(conn_failure(err, "close"));
    }
    Ok(())
}

fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 40);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A fourtuple server answering the churn protocol; closes first or after the client.
pub struct FtServer {
    listener: ListenerHandle,
    conns: Vec<(ConnHandle, bool)>,
    close_first: bool,
}

impl FtServer {
    /// Listens on `addr`.
    pub fn start(stack: &mut Stack, addr: SocketAddr, close_first: bool) -> Result<Self, Failure> {
        let listener = stack
            .listen(addr, 1024)
            .map_err(|e| stack_failure(e, "listen"))?;
        Ok(FtServer {
            listener,
            conns: Vec::new(),
            close_first,
        })
    }

    /// The listener.
    pub fn listener(&self) -> ListenerHandle {
        self.listener
    }

    /// Accepts, answers and closes; call between pumps.
    pub fn step(&mut self, stack: &mut Stack, now: Instant) {
        while let Ok(Some(h)) = stack.accept(self.listener) {
            self.conns.push((h, false));
        }
        let close_first = self.close_first;
        self.conns.retain_mut(|(h, answered)| {
            if !*answered && stack.recv_available(*h).unwrap_or(0) >= MESSAGE_LEN {
                let mut req = [0u8; MESSAGE_LEN];
                let _ = stack.recv(now, *h, &mut req);
                if let Some(id) = decode_request(&req) {
                    let _ = stack.send(now, *h, &reply(id));
                }
                *answered = true;
                if close_first {
                    let _ = stack.close(now, *h);
                    return false;
                }
            }
            let mut b = [0u8; 64];
            if matches!(stack.recv(now, *h, &mut b), Ok(0)) || stack.state(*h).is_err() {
                let _ = stack.close(now, *h);
                return false;
            }
            true
        });
    }
}

fn result(policy: ReusePolicy, variant: &str) -> ScenarioResult {
    ScenarioResult::new(&format!("fourtuple/{}", policy.name()), variant)
}

fn fail(mut r: ScenarioResult, f: Failure) -> ScenarioResult {
    r.outcome = f.outcome;
    r.errno = f.errno.map(str::to_string);
    r.detail = f.detail;
    r
}

fn finish(mut r: ScenarioResult, rig: &Rig) -> ScenarioResult {
    // Let the last ACKs land before counting the kernel's side.
    std::thread::sleep(Duration::from_millis(30));
    let k = kernel::count_time_wait_total();
    r.time_wait_server = k;
    r.time_wait_client = rig.stack.time_wait().len();
    r
}

fn rig_or_fail(
    r: &ScenarioResult,
    policy: ReusePolicy,
    ports: (u16, u16),
) -> Result<Rig, Box<ScenarioResult>> {
    Rig::new(policy, ports).map_err(|e| {
        let mut r = r.clone();
        r.detail = format!("TUN setup: {e}");
        Box::new(r)
    })
}

/// S1 on fourtuple: reconnect from the same local port to the same kernel server.
pub fn s1(policy: ReusePolicy) -> ScenarioResult {
    let r = result(policy, "plain");
    let mut rig = match rig_or_fail(&r, policy, (32768, 60999)) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let _server = match Server::start(sa(KERNEL_IP, 8080), ServerMode::CloseAfterClient, true) {
        Ok(s) => s,
        Err(f) => return fail(r, f),
    };
    reconnect(&mut rig, r, sa(KERNEL_IP, 8080), sa(KERNEL_IP, 8080))
}

/// S2 on fourtuple: the same local port to another kernel port or address.
pub fn s2(policy: ReusePolicy, other_addr: bool) -> ScenarioResult {
    let variant = if other_addr {
        "other-addr"
    } else {
        "other-port"
    };
    let r = result(policy, variant);
    let mut rig = match rig_or_fail(&r, policy, (32768, 60999)) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut servers = Vec::new();
    for a in [
        sa(KERNEL_IP, 8080),
        sa(KERNEL_IP, 8081),
        sa(KERNEL_IP2, 8080),
    ] {
        match Server::start(a, ServerMode::CloseAfterClient, true) {
            Ok(s) => servers.push(s),
            Err(f) => return fail(r, f),
        }
    }
    let second = if other_addr {
        sa(KERNEL_IP2, 8080)
    } else {
        sa(KERNEL_IP, 8081)
    };
    reconnect(&mut rig, r, sa(KERNEL_IP, 8080), second)
}

fn reconnect(
    rig: &mut Rig,
    mut r: ScenarioResult,
    first: SocketAddr,
    second: SocketAddr,
) -> ScenarioResult {
    let local = Some(sa(FT_IP, 40001));
    let opts = ConnectOptions::default();
    if let Err(f) = lifecycle(rig, local, first, ClientClose::First, false, opts) {
        r.detail = format!("first connection failed: {}", f.detail);
        return fail(r, f);
    }
    r = match lifecycle(rig, local, second, ClientClose::First, false, opts) {
        Ok(_) => {
            r.outcome = Outcome::Ok;
            r.completed = 1;
            r
        }
        Err(f) => fail(r, f),
    };
    finish(r, rig)
}

/// S3/S4/S8/S9 on fourtuple: sequential lifecycles with ephemeral ports as fast as the
/// TUN allows, bounded in time, sampled every 100 ms.
pub fn churn(
    policy: ReusePolicy,
    variant: &str,
    c: &kernel::Churn,
    ports: (u16, u16),
) -> ScenarioResult {
    let mut r = result(policy, variant);
    let mut rig = match rig_or_fail(&r, policy, ports) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut servers = Vec::new();
    for p in &c.ports {
        match Server::start(sa(KERNEL_IP, *p), c.server, true) {
            Ok(s) => servers.push(s),
            Err(f) => return fail(r, f),
        }
    }
    let start = std::time::Instant::now();
    let mut next_sample = start;
    let mut first: Option<(Duration, Failure)> = None;
    let mut last_success = Duration::ZERO;
    let mut i = 0usize;
    loop {
        let now = std::time::Instant::now();
        if now >= next_sample {
            r.series.push(Sample {
                t_ms: (now - start).as_millis() as u64,
                completed: r.completed,
                failures: r.failures,
                time_wait: rig.stack.time_wait().len() + kernel::count_time_wait_total(),
            });
            next_sample += Duration::from_millis(100);
        }
        if now - start >= c.duration || c.stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let port = c.ports[i % c.ports.len()];
        i += 1;
        match lifecycle(
            &mut rig,
            None,
            sa(KERNEL_IP, port),
            c.client,
            c.goodbye,
            ConnectOptions::default(),
        ) {
            Ok(_) => {
                r.completed += 1;
                last_success = start.elapsed();
            }
            Err(f) => {
                r.failures += 1;
                if first.is_none() {
                    first = Some((now - start, f));
                }
                let _ = rig.wait(Duration::from_millis(1), |_, _| false);
            }
        }
    }
    let active = if first.is_some() {
        last_success.as_secs_f64().max(1e-3)
    } else {
        start.elapsed().as_secs_f64()
    };
    r.conns_per_sec = Some(r.completed as f64 / active);
    r = match first {
        Some((at, f)) => {
            r.time_to_first_failure_ms = Some(at.as_secs_f64() * 1000.0);
            fail(r, f)
        }
        None => {
            r.outcome = Outcome::Ok;
            r
        }
    };
    drop(servers);
    finish(r, &rig)
}

/// S5 on fourtuple: fourtuple serves and closes first; a kernel client comes back from
/// the same port (the kernel picks a greater ISN).
pub fn s5_server(policy: ReusePolicy) -> ScenarioResult {
    let mut r = result(policy, "greater-isn (kernel client)");
    let mut rig = match rig_or_fail(&r, policy, (32768, 60999)) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut srv = match FtServer::start(&mut rig.stack, sa(FT_IP, 8080), true) {
        Ok(s) => s,
        Err(f) => return fail(r, f),
    };
    let client = move || -> Result<(), Failure> {
        let local = Some(sa(KERNEL_IP, 40005));
        let remote = sa(FT_IP, 8080);
        kernel::lifecycle(local, remote, true, ClientClose::AfterServer, false)?;
        std::thread::sleep(Duration::from_millis(20));
        kernel::lifecycle(local, remote, true, ClientClose::AfterServer, false)
    };
    let h = std::thread::spawn(client);
    let res = rig.pump_while(|s, now| srv.step(s, now), h);
    let reopened = rig.stack.counters().time_wait_reopened;
    r = match res {
        Ok(Ok(())) => {
            r.outcome = if reopened >= 1 {
                Outcome::Reopened
            } else {
                Outcome::Ok
            };
            r.completed = 2;
            r.detail = format!("time_wait_reopened = {reopened}");
            r
        }
        Ok(Err(f)) => fail(r, f),
        Err(e) => fail(r, io_failure(e)),
    };
    let mut r = finish(r, &rig);
    // Here fourtuple is the server: swap the sides.
    core::mem::swap(&mut r.time_wait_client, &mut r.time_wait_server);
    r
}

/// S5, the kernel's answer: a fourtuple client with an ISN override comes back to a
/// kernel server that holds TIME_WAIT for the tuple, with a lower or a greater ISN than the
/// old incarnation (timestamps off, so only the sequence number decides).
pub fn s5_kernel_answer(lower: bool) -> ScenarioResult {
    let variant = if lower {
        "lower-isn (fourtuple client)"
    } else {
        "greater-isn (fourtuple client)"
    };
    let mut r = ScenarioResult::new("kernel", variant);
    let mut rig = match rig_or_fail(&r, ReusePolicy::ExactTuple, (32768, 60999)) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let _server = match Server::start(sa(KERNEL_IP, 8080), ServerMode::CloseFirst, true) {
        Ok(s) => s,
        Err(f) => return fail(r, f),
    };
    let base = SeqNum(0x4000_0000);
    let local = Some(sa(FT_IP, 40005));
    let remote = sa(KERNEL_IP, 8080);
    let opts = ConnectOptions {
        isn: Some(base),
        timestamps: Some(false),
    };
    if let Err(f) = lifecycle(
        &mut rig,
        local,
        remote,
        ClientClose::AfterServer,
        false,
        opts,
    ) {
        r.detail = format!("first connection failed: {}", f.detail);
        return fail(r, f);
    }
    std::thread::sleep(Duration::from_millis(20));
    let tw_before = kernel::count_time_wait();
    let isn = if lower {
        base - 100_000u32
    } else {
        base + 100_000u32
    };
    let rst_before = rig.stack.counters().rst_sent;
    let now = rig.now();
    let h = match rig.stack.connect_with(
        now,
        remote,
        local,
        ConnectOptions {
            isn: Some(isn),
            timestamps: Some(false),
        },
    ) {
        Ok(h) => h,
        Err(e) => return fail(r, stack_failure(e, "connect")),
    };
    // Shorter than our SYN retransmission (1 s): only the answer to the first SYN counts.
    let _ = rig.wait(Duration::from_millis(500), |s, _| {
        s.state(h) != Ok(TcpState::SynSent)
    });
    let state = rig.stack.state(h);
    let rst_after = rig.stack.counters().rst_sent;
    r.outcome = match state {
        Ok(TcpState::Established) => Outcome::Reopened,
        Ok(TcpState::SynSent) if rst_after > rst_before => Outcome::RejectedOldDuplicate,
        Ok(TcpState::SynSent) => Outcome::Timeout,
        Ok(TcpState::Closed) => match rig.stack.error(h).ok().flatten() {
            Some(ConnError::Refused) => Outcome::Refused,
            _ => Outcome::Reset,
        },
        _ => Outcome::Error,
    };
    r.detail = format!(
        "kernel TIME_WAIT before: {}; the SYN was {} the old incarnation's; answered {}",
        tw_before.server + tw_before.client,
        if lower { "below" } else { "above" },
        if rst_after > rst_before {
            "with an ACK (fourtuple replied RST, RFC 9293 SYN-SENT)"
        } else {
            "with a SYN-ACK or not at all"
        }
    );
    if r.outcome == Outcome::Reopened {
        r.completed = 1;
    }
    let now = rig.now();
    let _ = rig.stack.abort(now, h);
    let _ = rig.pump();
    let k = kernel::count_time_wait();
    r.time_wait_server = k.client + k.server;
    r.time_wait_client = rig.stack.time_wait().len();
    r
}

/// S6 on fourtuple: the listener is re-created on a port holding TIME_WAIT entries.
pub fn s6(policy: ReusePolicy) -> ScenarioResult {
    let mut r = result(policy, "plain");
    let mut rig = match rig_or_fail(&r, policy, (32768, 60999)) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut srv = match FtServer::start(&mut rig.stack, sa(FT_IP, 8080), true) {
        Ok(s) => s,
        Err(f) => return fail(r, f),
    };
    let h = std::thread::spawn(|| -> Result<(), Failure> {
        for _ in 0..3 {
            kernel::lifecycle(
                None,
                sa(FT_IP, 8080),
                false,
                ClientClose::AfterServer,
                false,
            )?;
        }
        Ok(())
    });
    match rig.pump_while(|s, now| srv.step(s, now), h) {
        Ok(Ok(())) => {}
        Ok(Err(f)) => {
            r.detail = format!("setup failed: {}", f.detail);
            return fail(r, f);
        }
        Err(e) => return fail(r, io_failure(e)),
    }
    let _ = rig.wait(Duration::from_millis(50), |_, _| false);
    let tw = rig.stack.time_wait().len();
    let now = rig.now();
    let _ = rig.stack.close_listener(now, srv.listener());
    match rig.stack.listen(sa(FT_IP, 8080), 16) {
        Ok(_) => {
            r.outcome = Outcome::Ok;
            r.detail = format!("{tw} TIME_WAIT entries on the port");
        }
        Err(e) => r = fail(r, stack_failure(e, "listen")),
    }
    r.time_wait_server = tw;
    r.time_wait_client = kernel::count_time_wait_total();
    r
}

/// S7 on fourtuple: the fourtuple client closes with RST (linger 0).
pub fn s7(policy: ReusePolicy) -> ScenarioResult {
    let mut r = result(policy, "client-linger0");
    let mut rig = match rig_or_fail(&r, policy, (32768, 60999)) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let _server = match Server::start(sa(KERNEL_IP, 8080), ServerMode::CloseAfterClient, true) {
        Ok(s) => s,
        Err(f) => return fail(r, f),
    };
    r = match lifecycle(
        &mut rig,
        None,
        sa(KERNEL_IP, 8080),
        ClientClose::Abort,
        false,
        ConnectOptions::default(),
    ) {
        Ok(_) => {
            r.outcome = Outcome::Ok;
            r.completed = 1;
            r
        }
        Err(f) => fail(r, f),
    };
    let _ = rig.wait(Duration::from_millis(50), |_, _| false);
    finish(r, &rig)
}
