//! The kernel side of the comparison: every scenario run with real sockets, client and
//! server both in a private namespace, on addresses of `lo` there.
//!
//! This module owns the kernel scenarios and the kernel's TIME_WAIT counting. Outcomes
//! are what the kernel answered on this run (bind/connect errors by errno, connection
//! results), never values written down in advance. Everything here runs on a thread that
//! has entered the scenario's namespace; it must never open a socket elsewhere.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Outcome, Sample, ScenarioResult};

/// The client's address inside the namespace.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The server's address.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// A second server address, for "another server address" variants.
pub const SERVER_IP2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

// The churn protocol of `crate::churn`, so fourtuple and kernel clients meet the same
// server: a 16-byte request naming a lifecycle id, a 16-byte reply (or a goodbye).
use crate::churn::{decode_request, reply, request, GOODBYE, MESSAGE_LEN};
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// How the server ends each connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ServerMode {
    /// Reply, then wait for the client's FIN and close (TIME_WAIT on the client).
    CloseAfterClient,
    /// Reply and close at once (TIME_WAIT on the server).
    CloseFirst,
    /// Reply "goodbye"; close after the client's FIN, or abort (RST) if it lingers.
    Goodbye(Duration),
}

/// How the client ends each connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ClientClose {
    /// Close first with FIN.
    First,
    /// Wait for the server's FIN, then close.
    AfterServer,
    /// Close with RST (SO_LINGER 0).
    Abort,
}

/// A failure of one kernel call, in the fixed outcome vocabulary.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Outcome name.
    pub outcome: Outcome,
    /// errno name, when the kernel gave one.
    pub errno: Option<&'static str>,
    /// Human detail.
    pub detail: String,
}

/// Maps an I/O error to the fixed vocabulary, keeping the errno name.
pub fn classify(e: &io::Error, during: &str) -> Failure {
    let code = e.raw_os_error().unwrap_or(0);
    let (outcome, errno) = match code {
        libc::EADDRINUSE => (Outcome::AddrInUse, Some("EADDRINUSE")),
        libc::EADDRNOTAVAIL => (Outcome::AddrNotAvailable, Some("EADDRNOTAVAIL")),
        libc::ECONNREFUSED => (Outcome::Refused, Some("ECONNREFUSED")),
        libc::ECONNRESET => (Outcome::Reset, Some("ECONNRESET")),
        libc::EPIPE => (Outcome::Reset, Some("EPIPE")),
        libc::ETIMEDOUT => (Outcome::Timeout, Some("ETIMEDOUT")),
        libc::EAGAIN | libc::EINPROGRESS => (Outcome::Timeout, Some("EAGAIN")),
        _ if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {
            (Outcome::Timeout, None)
        }
        _ if e.kind() == io::ErrorKind::UnexpectedEof => (Outcome::Reset, None),
        _ => (Outcome::Error, None),
    };
    Failure {
        outcome,
        errno,
        detail: format!("{during}: {e}"),
    }
}

/// A kernel TCP server on a thread of the namespace.
pub struct Server {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    listener: Option<Arc<TcpListener>>,
}

impl Server {
    /// Listens on `addr` (SO_REUSEADDR when `reuseaddr`) and serves in `mode`.
    pub fn start(addr: SocketAddr, mode: ServerMode, reuseaddr: bool) -> Result<Server, Failure> {
        let listener = listen(addr, reuseaddr)?;
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let (l2, s2) = (listener.clone(), stop.clone());
        let handle = std::thread::spawn(move || serve(&l2, &s2, mode));
        Ok(Server {
            stop,
            handle: Some(handle),
            listener: Some(listener),
        })
    }

    /// Stops accepting and closes the listening socket.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.listener = None;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Creates a listening socket.
pub fn listen(addr: SocketAddr, reuseaddr: bool) -> Result<TcpListener, Failure> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| classify(&e, "socket"))?;
    s.set_reuse_address(reuseaddr)
        .map_err(|e| classify(&e, "SO_REUSEADDR"))?;
    s.bind(&SockAddr::from(addr))
        .map_err(|e| classify(&e, "bind"))?;
    s.listen(4096).map_err(|e| classify(&e, "listen"))?;
    Ok(s.into())
}

/// True when a connection is waiting, after at most 50 ms: the accept loop must notice
/// `stop` even when no connection can reach it (ports exhausted, churn over).
fn wait_readable(listener: &TcpListener) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::from(50u8)), Ok(n) if n > 0)
}

fn serve(listener: &TcpListener, stop: &AtomicBool, mode: ServerMode) {
    while !stop.load(Ordering::SeqCst) {
        if !wait_readable(listener) {
            continue;
        }
        let Ok((mut c, _)) = listener.accept() else {
            continue;
        };
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let _ = c.set_read_timeout(Some(IO_TIMEOUT));
        let _ = c.set_write_timeout(Some(IO_TIMEOUT));
        let mut req = [0u8; MESSAGE_LEN];
        if c.read_exact(&mut req).is_err() {
            continue;
        }
        let Some(id) = decode_request(&req) else {
            continue;
        };
        let rsp = reply(id);
        match mode {
            ServerMode::CloseAfterClient => {
                let _ = c.write_all(&rsp);
                let mut rest = [0u8; 64];
                while matches!(c.read(&mut rest), Ok(n) if n > 0) {}
            }
            ServerMode::CloseFirst => {
                let _ = c.write_all(&rsp);
            }
            ServerMode::Goodbye(linger) => {
                let _ = c.write_all(GOODBYE);
                let _ = c.set_read_timeout(Some(linger));
                let mut rest = [0u8; 64];
                match c.read(&mut rest) {
                    Ok(0) => {}
                    _ => {
                        // The client lingers: abort, so no TIME_WAIT stays here.
                        let s = Socket::from(c);
                        let _ = s.set_linger(Some(Duration::ZERO));
                        continue;
                    }
                }
            }
        }
    }
}

fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One client lifecycle: connect (from `local` if given), request, response, close.
pub fn lifecycle(
    local: Option<SocketAddr>,
    remote: SocketAddr,
    reuseaddr: bool,
    close: ClientClose,
    goodbye: bool,
) -> Result<(), Failure> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| classify(&e, "socket"))?;
    s.set_reuse_address(reuseaddr)
        .map_err(|e| classify(&e, "SO_REUSEADDR"))?;
    match local {
        Some(l) => s
            .bind(&SockAddr::from(l))
            .map_err(|e| classify(&e, "bind"))?,
        None => {
            // Ephemeral: fix the source address to the client's, but let connect()
            // choose the port 4-tuple-aware, exactly as an unbound connect() does
            // (IP_BIND_ADDRESS_NO_PORT); without it every address of lo could be the source.
            nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)
                .map_err(|e| classify(&io::Error::from(e), "IP_BIND_ADDRESS_NO_PORT"))?;
            s.bind(&SockAddr::from(sa(CLIENT_IP, 0)))
                .map_err(|e| classify(&e, "bind"))?;
        }
    }
    s.connect_timeout(&SockAddr::from(remote), IO_TIMEOUT)
        .map_err(|e| classify(&e, "connect"))?;
    let mut c: std::net::TcpStream = s.into();
    let _ = c.set_read_timeout(Some(IO_TIMEOUT));
    let _ = c.set_write_timeout(Some(IO_TIMEOUT));
    let id = next_id();
    c.write_all(&request(id))
        .map_err(|e| classify(&e, "write"))?;
    let expected: Vec<u8> = if goodbye {
        GOODBYE.to_vec()
    } else {
        reply(id).to_vec()
    };
    let mut rsp = vec![0u8; expected.len()];
    c.read_exact(&mut rsp).map_err(|e| classify(&e, "read"))?;
    if rsp != expected {
        return Err(Failure {
            outcome: Outcome::Error,
            errno: None,
            detail: "unexpected response bytes".into(),
        });
    }
    match close {
        ClientClose::First => {
            let _ = c.shutdown(Shutdown::Write);
            // Wait for the server's FIN so the close completes before the next step.
            let mut rest = [0u8; 16];
            let _ = c.read(&mut rest);
        }
        ClientClose::AfterServer => {
            let mut rest = [0u8; 16];
            let _ = c.read(&mut rest);
        }
        ClientClose::Abort => {
            let s = Socket::from(c);
            let _ = s.set_linger(Some(Duration::ZERO));
        }
    }
    Ok(())
}

/// TIME_WAIT sockets of this thread's namespace, split by local address.
#[derive(Copy, Clone, Debug, Default)]
pub struct TimeWaitCount {
    /// Local address is the client's.
    pub client: usize,
    /// Local address is one of the servers'.
    pub server: usize,
}

/// Counts TIME_WAIT sockets from `/proc/thread-self/net/tcp` (this namespace's table).
pub fn count_time_wait() -> TimeWaitCount {
    let mut n = TimeWaitCount::default();
    let Ok(text) = std::fs::read_to_string("/proc/thread-self/net/tcp") else {
        return n;
    };
    for line in text.lines().skip(1) {
        let mut cols = line.split_whitespace();
        let (Some(_), Some(local), Some(_), Some(state)) =
            (cols.next(), cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        if state != "06" {
            continue;
        }
        let ip_hex = local.split(':').next().unwrap_or("");
        let ip = u32::from_str_radix(ip_hex, 16).map(|v| Ipv4Addr::from(v.swap_bytes()));
        match ip {
            Ok(ip) if ip == CLIENT_IP => n.client += 1,
            Ok(_) => n.server += 1,
            Err(_) => {}
        }
    }
    n
}

/// Fast total of TIME_WAIT sockets (from `sockstat`), for time series.
pub fn count_time_wait_total() -> usize {
    std::fs::read_to_string("/proc/thread-self/net/sockstat")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("TCP:"))?;
            let mut it = line.split_whitespace();
            while let Some(w) = it.next() {
                if w == "tw" {
                    return it.next()?.parse().ok();
                }
            }
            None
        })
        .unwrap_or(0)
}

/// Reads a sysctl of this thread's namespace (e.g. "net.ipv4.tcp_tw_reuse").
pub fn read_sysctl(key: &str) -> Option<String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Writes a sysctl of this thread's namespace.
pub fn write_sysctl(key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| io::Error::new(e.kind(), format!("{key}: {e}")))
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

fn result(variant: &str) -> ScenarioResult {
    ScenarioResult::new("kernel", variant)
}

fn from_failure(mut r: ScenarioResult, f: Failure) -> ScenarioResult {
    r.outcome = f.outcome;
    r.errno = f.errno.map(str::to_string);
    r.detail = f.detail;
    r
}

/// Waits (bounded) until the namespace shows at least `want` TIME_WAIT sockets.
fn settle_time_wait(want_client: usize, want_server: usize) -> TimeWaitCount {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let n = count_time_wait();
        if (n.client >= want_client && n.server >= want_server) || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Which sockets of a reconnect set SO_REUSEADDR.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// Neither the old nor the new socket.
    Neither,
    /// Both.
    Both,
    /// Only the new one.
    NewOnly,
}

impl Reuse {
    /// The variant name.
    pub fn name(self) -> &'static str {
        match self {
            Reuse::Neither => "plain",
            Reuse::Both => "reuseaddr",
            Reuse::NewOnly => "reuseaddr-new-only",
        }
    }

    fn on_old(self) -> bool {
        self == Reuse::Both
    }

    fn on_new(self) -> bool {
        self != Reuse::Neither
    }
}

/// S1: the client closes first, then connects again from the same local port to the same
/// server ip:port.
pub fn s1(reuse: Reuse) -> ScenarioResult {
    let variant = reuse.name();
    let server = match Server::start(sa(SERVER_IP, 8080), ServerMode::CloseAfterClient, true) {
        Ok(s) => s,
        Err(f) => return from_failure(result(variant), f),
    };
    let remote = sa(SERVER_IP, 8080);
    let r = reconnect_from_time_wait(variant, sa(CLIENT_IP, 40001), remote, remote, reuse);
    drop(server);
    r
}

/// S2: as S1, then the same local port to another server port or address.
pub fn s2(reuse: Reuse, other_addr: bool) -> ScenarioResult {
    let variant = format!(
        "{}/{}",
        if other_addr {
            "other-addr"
        } else {
            "other-port"
        },
        reuse.name()
    );
    let variant = variant.as_str();
    let mut servers = Vec::new();
    for addr in [
        sa(SERVER_IP, 8080),
        sa(SERVER_IP, 8081),
        sa(SERVER_IP2, 8080),
    ] {
        match Server::start(addr, ServerMode::CloseAfterClient, true) {
            Ok(s) => servers.push(s),
            Err(f) => return from_failure(result(variant), f),
        }
    }
    let second = if other_addr {
        sa(SERVER_IP2, 8080)
    } else {
        sa(SERVER_IP, 8081)
    };
    let first = sa(SERVER_IP, 8080);
    reconnect_from_time_wait(variant, sa(CLIENT_IP, 40002), first, second, reuse)
}

/// S1 and S2's body: a lifecycle from `local` to `first` that the client closes first
/// (leaving `local` in TIME_WAIT), then one from `local` to `second`; the outcome is the
/// second's, with the TIME_WAIT counts after it.
fn reconnect_from_time_wait(
    variant: &str,
    local: SocketAddr,
    first: SocketAddr,
    second: SocketAddr,
    reuse: Reuse,
) -> ScenarioResult {
    let mut r = result(variant);
    if let Err(f) = lifecycle(
        Some(local),
        first,
        reuse.on_old(),
        ClientClose::First,
        false,
    ) {
        r.detail = format!("first connection failed: {}", f.detail);
        return from_failure(r, f);
    }
    settle_time_wait(1, 0);
    let mut r = match lifecycle(
        Some(local),
        second,
        reuse.on_new(),
        ClientClose::First,
        false,
    ) {
        Ok(()) => {
            r.outcome = Outcome::Ok;
            r.completed = 1;
            r
        }
        Err(f) => from_failure(r, f),
    };
    let tw = count_time_wait();
    r.time_wait_client = tw.client;
    r.time_wait_server = tw.server;
    r
}

/// Parameters of a churn run.
#[derive(Clone, Debug)]
pub struct Churn {
    /// Server ports (round-robin).
    pub ports: Vec<u16>,
    /// How the server closes.
    pub server: ServerMode,
    /// How the client closes.
    pub client: ClientClose,
    /// Wall-clock bound.
    pub duration: Duration,
    /// Whether the server sends "goodbye".
    pub goodbye: bool,
    /// Set on Ctrl-C: the run ends early with what it has.
    pub stop: Arc<AtomicBool>,
}

/// S3/S4/S8/S9: connect/close as fast as possible with ephemeral ports, bounded in time,
/// sampling every 100 ms.
pub fn churn(variant: &str, c: &Churn) -> ScenarioResult {
    let mut r = result(variant);
    let mut servers = Vec::new();
    for p in &c.ports {
        match Server::start(sa(SERVER_IP, *p), c.server, true) {
            Ok(s) => servers.push(s),
            Err(f) => return from_failure(r, f),
        }
    }
    let start = Instant::now();
    let mut next_sample = start;
    let mut first_failure: Option<(Duration, Failure)> = None;
    let mut last_success = Duration::ZERO;
    let mut failures = 0u64;
    let mut i = 0usize;
    loop {
        let now = Instant::now();
        if now >= next_sample {
            r.series.push(Sample {
                t_ms: (now - start).as_millis() as u64,
                completed: r.completed,
                failures,
                time_wait: count_time_wait_total(),
            });
            next_sample += Duration::from_millis(100);
        }
        if now - start >= c.duration || c.stop.load(Ordering::SeqCst) {
            break;
        }
        let port = c.ports[i % c.ports.len()];
        i += 1;
        match lifecycle(None, sa(SERVER_IP, port), false, c.client, c.goodbye) {
            Ok(()) => {
                r.completed += 1;
                last_success = start.elapsed();
            }
            Err(f) => {
                failures += 1;
                if first_failure.is_none() {
                    first_failure = Some((now - start, f));
                }
                // Failures come fast once ports run out; do not spin the CPU on them.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    r.failures = failures;
    // The rate while connections were going through: after exhaustion only failures
    // come, and averaging them in would measure the time bound, not the stack.
    let active = if first_failure.is_some() {
        last_success.as_secs_f64().max(1e-3)
    } else {
        elapsed
    };
    r.conns_per_sec = Some(r.completed as f64 / active);
    match first_failure {
        Some((at, f)) => {
            r.time_to_first_failure_ms = Some(at.as_secs_f64() * 1000.0);
            r = from_failure(r, f);
        }
        None => r.outcome = Outcome::Ok,
    }
    drop(servers);
    let tw = count_time_wait();
    r.time_wait_client = tw.client;
    r.time_wait_server = tw.server;
    r
}

/// S5: the server closes first; the client comes back from the same port (the kernel
/// picks its ISN, normally greater). Reopened when the new connection works and the
/// server's TIME_WAIT entry for the tuple is gone.
pub fn s5_greater_isn() -> ScenarioResult {
    let mut r = result("greater-isn");
    let server = match Server::start(sa(SERVER_IP, 8080), ServerMode::CloseFirst, true) {
        Ok(s) => s,
        Err(f) => return from_failure(r, f),
    };
    let local = sa(CLIENT_IP, 40005);
    let remote = sa(SERVER_IP, 8080);
    if let Err(f) = lifecycle(Some(local), remote, true, ClientClose::AfterServer, false) {
        r.detail = format!("first connection failed: {}", f.detail);
        return from_failure(r, f);
    }
    let before = settle_time_wait(0, 1);
    r = match lifecycle(Some(local), remote, true, ClientClose::AfterServer, false) {
        Ok(()) => {
            r.outcome = if before.server >= 1 {
                Outcome::Reopened
            } else {
                Outcome::Ok
            };
            r.completed = 1;
            r.detail = format!("server TIME_WAIT before: {}", before.server);
            r
        }
        Err(f) => from_failure(r, f),
    };
    drop(server);
    let tw = count_time_wait();
    r.time_wait_client = tw.client;
    r.time_wait_server = tw.server;
    r
}

/// S6: a listener is re-created on a port that holds TIME_WAIT entries.
pub fn s6(reuseaddr: bool) -> ScenarioResult {
    let variant = if reuseaddr { "reuseaddr" } else { "plain" };
    let mut r = result(variant);
    {
        let _server = match Server::start(sa(SERVER_IP, 8080), ServerMode::CloseFirst, true) {
            Ok(s) => s,
            Err(f) => return from_failure(r, f),
        };
        for _ in 0..3 {
            if let Err(f) = lifecycle(
                None,
                sa(SERVER_IP, 8080),
                false,
                ClientClose::AfterServer,
                false,
            ) {
                r.detail = format!("setup failed: {}", f.detail);
                return from_failure(r, f);
            }
        }
    }
    let tw = settle_time_wait(0, 3);
    r.time_wait_server = tw.server;
    r.time_wait_client = tw.client;
    match listen(sa(SERVER_IP, 8080), reuseaddr) {
        Ok(_) => {
            r.outcome = Outcome::Ok;
            r.detail = format!("{} TIME_WAIT entries on the port", tw.server);
        }
        Err(f) => r = from_failure(r, f),
    }
    r
}

/// S7: closes with RST (linger 0), by the client or by the server.
pub fn s7(server_aborts: bool) -> ScenarioResult {
    let variant = if server_aborts {
        "server-linger0"
    } else {
        "client-linger0"
    };
    let mut r = result(variant);
    if server_aborts {
        // The server replies, then aborts once the client's request is answered.
        let l = match listen(sa(SERVER_IP, 8080), true) {
            Ok(l) => l,
            Err(f) => return from_failure(r, f),
        };
        let h = std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                let mut req = [0u8; MESSAGE_LEN];
                let _ = c.read_exact(&mut req);
                let _ = c.write_all(&reply(decode_request(&req).unwrap_or(0)));
                std::thread::sleep(Duration::from_millis(20));
                let s = Socket::from(c);
                let _ = s.set_linger(Some(Duration::ZERO));
            }
        });
        match lifecycle(
            None,
            sa(SERVER_IP, 8080),
            false,
            ClientClose::AfterServer,
            false,
        ) {
            Ok(()) => {
                r.outcome = Outcome::Ok;
                r.completed = 1;
            }
            Err(f) => r = from_failure(r, f),
        }
        let _ = h.join();
    } else {
        let _server = match Server::start(sa(SERVER_IP, 8080), ServerMode::CloseAfterClient, true) {
            Ok(s) => s,
            Err(f) => return from_failure(r, f),
        };
        match lifecycle(None, sa(SERVER_IP, 8080), false, ClientClose::Abort, false) {
            Ok(()) => {
                r.outcome = Outcome::Ok;
                r.completed = 1;
            }
            Err(f) => r = from_failure(r, f),
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    let tw = count_time_wait();
    r.time_wait_client = tw.client;
    r.time_wait_server = tw.server;
    r
}
