//! Connection churn between two in-memory stacks, on a simulated clock.
//!
//! This module owns the churn driver: two [`Stack`]s (a client host and a server host)
//! joined back to back, with no device in between, a simulated clock that both stacks see,
//! the request/reply/close workload, and the bookkeeping that turns it into a
//! [`ChurnReport`]. It is a library for the CLI and for benches: it must never print, read
//! the environment, sleep, or spawn threads. It reads the wall clock only to measure how
//! long the run took (and to honour [`StopAt::WallClock`]); the stacks only ever see the
//! simulated clock.
//!
//! # The simulation
//!
//! A packet transmitted at simulated time `t` is delivered at `t + latency` (one-way), in
//! the order it was sent. When nothing is due, the clock jumps to the next delivery, the
//! next stack timer or the next lifecycle deadline, whichever comes first. One step of the
//! loop, at time `now`: deliver what is due, fire due stack timers, fail lifecycles past
//! their deadline, react to every stack event, start new lifecycles up to the concurrency,
//! then drain both stacks' transmits onto the wire.
//!
//! # One lifecycle
//!
//! The client connects to one of the server's ports (round-robin), sends a 16-byte request
//! naming the lifecycle, the server checks it and answers with a 16-byte reply, the client
//! checks that, and then the connection closes as [`CloseMode`] says. A side "closes" with
//! [`Stack::shutdown_write`] (the same FIN on the wire as `close`), waits until the stack
//! reports the connection closed or in TIME_WAIT, and only then releases the handle with
//! [`Stack::close`]: that way the driver sees the end of every close and no error can go
//! unnoticed. A lifecycle counts as completed only when both sides verified the other's 16
//! bytes and both sides' closes finished as expected; anything else is a failure, counted
//! by kind (see [`ChurnReport::failures`]).

use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use fourtuple_stack::{
    Config, ConnHandle, Error, Event, EventSet, FourTuple, Instant, ListenerHandle, ReusePolicy,
    Stack, TcpState,
};
use hashbrown::HashMap;

/// The client host's address (RFC 5737 documentation range).
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The server host's address (RFC 5737 documentation range).
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// Size of the request and of the reply, in bytes.
pub const MESSAGE_LEN: usize = 16;

/// The application "goodbye" a server sends after its reply in [`CloseMode::Goodbye`].
pub const GOODBYE: &[u8; 8] = b"GOODBYE\n";

/// Size of each packet buffer handed to `poll_transmit` (the MTU).
const MTU: usize = 1500;

/// Failure kind: the lifecycle did not finish within [`ChurnConfig::lifecycle_timeout`].
pub const FAIL_LIFECYCLE_TIMEOUT: &str = "lifecycle-timeout";
/// Failure kind: a side read bytes other than the ones the peer should have sent.
pub const FAIL_DATA_MISMATCH: &str = "data-mismatch";
/// Failure kind: a side read end-of-stream before it should have.
pub const FAIL_UNEXPECTED_EOF: &str = "unexpected-eof";
/// Failure kind: the run stopped (stalled) with this lifecycle still in flight.
pub const FAIL_UNFINISHED: &str = "unfinished";

/// Who closes first, and how.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Default, clap::ValueEnum)]
pub enum CloseMode {
    /// The client closes first after reading the reply; the server closes when it reads
    /// end-of-stream. TIME_WAIT lands on the client.
    #[default]
    Client,
    /// The server closes right after sending the reply; the client closes when it reads
    /// end-of-stream. TIME_WAIT lands on the server.
    Server,
    /// The client resets the connection (RST) after reading the reply. No TIME_WAIT.
    Abort,
    /// Against a `--target` only: the server follows its reply with the application
    /// message [`GOODBYE`], the client closes first on reading it (TIME_WAIT on the
    /// client), and the server aborts (RST) if the client lingers.
    Goodbye,
}

impl CloseMode {
    /// The CLI / JSON name.
    pub fn name(self) -> &'static str {
        match self {
            CloseMode::Client => "client",
            CloseMode::Server => "server",
            CloseMode::Abort => "abort",
            CloseMode::Goodbye => "goodbye",
        }
    }
}

/// When the run stops starting new lifecycles.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum StopAt {
    /// After this many lifecycles have been started (completed + failed at the end).
    Count(u64),
    /// After this much wall-clock time; lifecycles in flight then finish.
    WallClock(Duration),
}

/// What to run. `ChurnConfig::default()` is the CLI's default.
#[derive(Clone, Debug)]
pub struct ChurnConfig {
    /// When to stop starting lifecycles.
    pub stop: StopAt,
    /// Lifecycles kept in flight at once.
    pub concurrency: usize,
    /// Who closes first.
    pub close: CloseMode,
    /// Port-reuse policy of both stacks.
    pub policy: ReusePolicy,
    /// The client's inclusive ephemeral port range.
    pub port_range: (u16, u16),
    /// How many ports the server listens on; the client spreads connections across them
    /// round-robin.
    pub server_ports: u16,
    /// The first server port; the server listens on `server_port_base..+server_ports`.
    pub server_port_base: u16,
    /// Maximum segment lifetime of both stacks (TIME_WAIT lasts 2*MSL).
    pub msl: Duration,
    /// One-way latency of the simulated wire (zero is allowed).
    pub latency: Duration,
    /// Simulated time a lifecycle may take before it fails with
    /// [`FAIL_LIFECYCLE_TIMEOUT`].
    pub lifecycle_timeout: Duration,
    /// Seed for both stacks (ISNs, timestamps, port allocator): runs are reproducible.
    pub seed: u64,
}

impl Default for ChurnConfig {
    fn default() -> ChurnConfig {
        let stack = Config::default();
        ChurnConfig {
            stop: StopAt::Count(10_000),
            concurrency: 64,
            close: CloseMode::Client,
            policy: ReusePolicy::ExactTuple,
            port_range: stack.ephemeral_ports,
            server_ports: 16,
            server_port_base: 10_000,
            msl: stack.msl,
            latency: Duration::from_micros(50),
            lifecycle_timeout: Duration::from_secs(30),
            seed: 0x666f_7572_7475_706c,
        }
    }
}

impl ChurnConfig {
    /// Checks the values that the types alone do not; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if let StopAt::Count(0) = self.stop {
            return Err("count must be at least 1".into());
        }
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        let (lo, hi) = self.port_range;
        if lo == 0 || lo > hi {
            return Err(format!(
                "port range {lo}-{hi} is empty or starts at 0: expected 1 <= LO <= HI"
            ));
        }
        if self.server_ports == 0 {
            return Err("server ports must be at least 1".into());
        }
        if self.server_port_base == 0
            || u32::from(self.server_port_base) + u32::from(self.server_ports) - 1 > 65535
        {
            return Err(format!(
                "server ports {}..{} do not fit in 1..=65535",
                self.server_port_base,
                u32::from(self.server_port_base) + u32::from(self.server_ports) - 1
            ));
        }
        if self.msl.is_zero() {
            return Err("msl must be greater than zero".into());
        }
        if self.lifecycle_timeout.is_zero() {
            return Err("lifecycle timeout must be greater than zero".into());
        }
        Ok(())
    }
}

/// A snapshot handed to the progress callback of [`run_in_memory_with_progress`].
#[derive(Copy, Clone, Debug)]
pub struct Progress {
    /// Lifecycles started so far.
    pub started: u64,
    /// Lifecycles completed so far.
    pub completed: u64,
    /// Lifecycles failed so far.
    pub failed: u64,
    /// Wall-clock time since the run began.
    pub elapsed: Duration,
    /// Simulated time since the run began.
    pub simulated: Duration,
    /// TIME_WAIT entries on the client now.
    pub time_wait_client: usize,
    /// TIME_WAIT entries on the server now.
    pub time_wait_server: usize,
}

/// The outcome of a run. `completed + failed == started` always holds.
#[derive(Clone, Debug)]
pub struct ChurnReport {
    /// The configuration that ran.
    pub config: ChurnConfig,
    /// Lifecycles started (including those whose connect failed at once).
    pub started: u64,
    /// Lifecycles whose whole exchange and close completed, bytes verified on both sides.
    pub completed: u64,
    /// Lifecycles that failed, for any reason.
    pub failed: u64,
    /// Failed lifecycles by kind: a connect error's or connection error's outcome name
    /// ([`Error::outcome`]: "addr-in-use", "addr-not-available", "refused", "reset",
    /// "timeout", "error"), or one of the driver's kinds: [`FAIL_LIFECYCLE_TIMEOUT`],
    /// [`FAIL_DATA_MISMATCH`], [`FAIL_UNEXPECTED_EOF`], [`FAIL_UNFINISHED`].
    pub failures: BTreeMap<&'static str, u64>,
    /// Set when the run ended early because nothing progressed: why.
    pub stalled: Option<String>,
    /// Wall-clock duration of the run.
    pub elapsed: Duration,
    /// Simulated duration of the run.
    pub simulated: Duration,
    /// TIME_WAIT entries on the client at the end.
    pub time_wait_client: usize,
    /// TIME_WAIT entries on the server at the end.
    pub time_wait_server: usize,
    /// Packets the client transmitted.
    pub packets_client_to_server: u64,
    /// Packets the server transmitted.
    pub packets_server_to_client: u64,
    /// Connections the server accepted that no lifecycle had opened (reset at once).
    pub unmatched_server_connections: u64,
    /// Over a TUN: packets the kernel dropped on it, from the interface's counters;
    /// `None` in memory or when they could not be read.
    pub tun_dropped: Option<fourtuple_netdev::KernelDrops>,
    /// The client stack's counters at the end.
    pub client_counters: Vec<(&'static str, u64)>,
    /// The server stack's counters at the end.
    pub server_counters: Vec<(&'static str, u64)>,
}

impl ChurnReport {
    /// Completed lifecycles per wall-clock second.
    pub fn lifecycles_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.completed as f64 / s
        } else {
            0.0
        }
    }

    /// True when every lifecycle completed and the run did not stall.
    pub fn is_success(&self) -> bool {
        self.failed == 0 && self.stalled.is_none()
    }
}

/// Runs the churn workload between two in-memory stacks and reports; prints nothing.
/// [`CloseMode::Goodbye`] needs a real server (`--target`); in memory it runs as
/// [`CloseMode::Client`].
pub fn run_in_memory(cfg: &ChurnConfig) -> ChurnReport {
    run_in_memory_with_progress(cfg, Duration::MAX, |_| {})
}

/// [`run_in_memory`], calling `progress` about every `every` of wall-clock time.
pub fn run_in_memory_with_progress(
    cfg: &ChurnConfig,
    every: Duration,
    progress: impl FnMut(&Progress),
) -> ChurnReport {
    Driver::new(cfg.clone()).run(every, progress)
}

// ---- the wire -------------------------------------------------------------------------

/// One direction of the simulated wire: a FIFO of packets with their delivery times.
/// Buffers are recycled, so a steady run allocates nothing per packet.
struct Wire {
    in_flight: VecDeque<(Instant, usize, Vec<u8>)>,
    pool: Vec<Vec<u8>>,
    sent: u64,
}

impl Wire {
    fn new() -> Wire {
        Wire {
            in_flight: VecDeque::new(),
            pool: Vec::new(),
            sent: 0,
        }
    }

    /// Drains `from`'s transmits; each is delivered at `at`.
    fn collect(&mut self, from: &mut Stack, now: Instant, at: Instant) {
        loop {
            let mut buf = self.pool.pop().unwrap_or_else(|| vec![0; MTU]);
            match from.poll_transmit(now, &mut buf) {
                Some(len) => {
                    self.sent += 1;
                    self.in_flight.push_back((at, len, buf));
                }
                None => {
                    self.pool.push(buf);
                    return;
                }
            }
        }
    }

    /// Delivers every packet due at `now` to `to`, as one batch (the stack prefetches the
    /// TIME_WAIT lines the batch's SYNs will read).
    fn deliver(&mut self, to: &mut Stack, now: Instant) {
        let due = self
            .in_flight
            .iter()
            .take_while(|(at, _, _)| *at <= now)
            .count();
        if due == 0 {
            return;
        }
        to.receive_batch(
            now,
            self.in_flight
                .iter()
                .take(due)
                .map(|(_, len, buf)| &buf[..*len]),
        );
        for (_, _, buf) in self.in_flight.drain(..due) {
            self.pool.push(buf);
        }
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.front().map(|(at, _, _)| *at)
    }
}

// ---- lifecycles -----------------------------------------------------------------------

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum ClientPhase {
    /// SYN sent; waiting for CONNECTED.
    Connecting,
    /// Sending the request.
    Sending,
    /// Reading the reply.
    AwaitReply,
    /// Server-close mode: reply read, waiting for end-of-stream.
    AwaitEof,
    /// FIN sent; waiting for the stack to report the close finished.
    AwaitClosed,
    /// Handle released; this side is finished.
    Done,
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum ServerPhase {
    /// Not accepted yet.
    NotAccepted,
    /// Reading the request.
    AwaitRequest,
    /// Sending the reply.
    Sending,
    /// Client-close mode: reply sent, waiting for end-of-stream.
    AwaitEof,
    /// FIN sent; waiting for the stack to report the close finished.
    AwaitClosed,
    /// Abort mode: reply sent, waiting for the client's RST.
    AwaitReset,
    /// Handle released; this side is finished.
    Done,
}

/// One side's view of the exchange: the handle, progress through the 16 bytes each way.
#[derive(Clone, Debug)]
struct Side<P> {
    handle: Option<ConnHandle>,
    phase: P,
    sent: usize,
    got: usize,
    rx: [u8; MESSAGE_LEN],
}

impl<P> Side<P> {
    fn new(phase: P) -> Side<P> {
        Side {
            handle: None,
            phase,
            sent: 0,
            got: 0,
            rx: [0; MESSAGE_LEN],
        }
    }
}

#[derive(Clone, Debug)]
struct Lifecycle {
    /// Serial number (1-based); carried in the request, so the server checks it.
    id: u64,
    live: bool,
    /// The client's view of the 4-tuple, while the server has not accepted it yet.
    tuple: Option<FourTuple>,
    client: Side<ClientPhase>,
    server: Side<ServerPhase>,
}

const REQUEST_SALT: u64 = 0x5245_5155_4553_5421;

/// The request for lifecycle `id`: the id, then a mix of it, so a stray or shifted byte
/// shows.
pub fn request(id: u64) -> [u8; MESSAGE_LEN] {
    message(id, REQUEST_SALT)
}

/// The reply for lifecycle `id`.
pub fn reply(id: u64) -> [u8; MESSAGE_LEN] {
    message(id, 0x5245_504c_5921_2121)
}

/// The lifecycle id a request names, if it is a well-formed request (what a server that
/// is not part of this process checks before it answers with [`reply`]).
pub fn decode_request(m: &[u8; MESSAGE_LEN]) -> Option<u64> {
    let mut id = [0u8; 8];
    id.copy_from_slice(&m[..8]);
    let id = u64::from_le_bytes(id) ^ REQUEST_SALT;
    (request(id) == *m).then_some(id)
}

fn message(id: u64, salt: u64) -> [u8; MESSAGE_LEN] {
    let mut m = [0; MESSAGE_LEN];
    m[..8].copy_from_slice(&(id ^ salt).to_le_bytes());
    let mix = id
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(29)
        .wrapping_add(salt);
    m[8..].copy_from_slice(&mix.to_le_bytes());
    m
}

/// What a side's pump concluded.
enum Pump {
    /// Waiting for the stack.
    Wait,
    /// This side finished.
    Done,
    /// The lifecycle failed with this kind.
    Fail(&'static str),
}

pub(crate) fn error_kind(e: Error) -> &'static str {
    e.outcome()
}

pub(crate) fn seed_bytes(seed: u64, salt: u8) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..].copy_from_slice(&seed.rotate_left(17).to_be_bytes());
    s[15] ^= salt;
    s
}

/// The simulation: both stacks, the wire, and the lifecycle table.
struct Driver {
    cfg: ChurnConfig,
    client: Stack,
    server: Stack,
    c2s: Wire,
    s2c: Wire,
    now: Instant,
    lifecycles: Vec<Lifecycle>,
    free: Vec<u32>,
    by_client: HashMap<ConnHandle, u32>,
    by_server: HashMap<ConnHandle, u32>,
    /// Client-view 4-tuple -> lifecycle, until the server accepts the connection.
    by_tuple: HashMap<FourTuple, u32>,
    /// (deadline, slot, id), in deadline order (all lifecycles share one timeout).
    deadlines: VecDeque<(Instant, u32, u64)>,
    next_port: u16,
    in_flight: usize,
    started: u64,
    completed: u64,
    failed: u64,
    failures: BTreeMap<&'static str, u64>,
    unmatched: u64,
    /// Lifecycles started, completed or failed: changes whenever anything progresses.
    progress_mark: u64,
    stop_starting: bool,
}

impl Driver {
    fn new(cfg: ChurnConfig) -> Driver {
        let stack_cfg = Config {
            msl: cfg.msl,
            reuse_policy: cfg.policy,
            ephemeral_ports: cfg.port_range,
            ..Config::default()
        };
        let mut client = Stack::new(stack_cfg.clone(), seed_bytes(cfg.seed, b'c'));
        client.add_address(IpAddr::V4(CLIENT_ADDR));
        let mut server = Stack::new(stack_cfg, seed_bytes(cfg.seed, b's'));
        server.add_address(IpAddr::V4(SERVER_ADDR));
        let backlog = cfg.concurrency.max(128);
        for i in 0..cfg.server_ports {
            let addr = SocketAddr::new(IpAddr::V4(SERVER_ADDR), cfg.server_port_base + i);
            // Cannot fail on a fresh stack with its own address and distinct non-zero
            // ports; if it did, every SYN to that port would be refused and counted.
            let _ = server.listen(addr, backlog);
        }
        let c = cfg.concurrency;
        Driver {
            cfg,
            client,
            server,
            c2s: Wire::new(),
            s2c: Wire::new(),
            now: Instant::ZERO,
            lifecycles: Vec::with_capacity(c),
            free: Vec::with_capacity(c),
            by_client: HashMap::with_capacity(c),
            by_server: HashMap::with_capacity(c),
            by_tuple: HashMap::with_capacity(c),
            deadlines: VecDeque::with_capacity(c),
            next_port: 0,
            in_flight: 0,
            started: 0,
            completed: 0,
            failed: 0,
            failures: BTreeMap::new(),
            unmatched: 0,
            progress_mark: 0,
            stop_starting: false,
        }
    }

    fn run(mut self, every: Duration, mut progress: impl FnMut(&Progress)) -> ChurnReport {
        let wall_start = std::time::Instant::now();
        let mut last_report = wall_start;
        let latency = self.cfg.latency;
        // Bounds on "no progress": in simulated time, and in steps at one instant (a
        // zero-latency livelock never advances the clock).
        let stall_after = self.cfg.lifecycle_timeout * 2 + Duration::from_secs(1);
        const MAX_IDLE_STEPS_AT_ONE_INSTANT: u32 = 100_000;
        let mut last_progress_at = self.now;
        let mut idle_steps = 0u32;
        let mut client_timer: Option<Instant> = None;
        let mut server_timer: Option<Instant> = None;
        let mut stalled = None;
        let mut steps = 0u64;

        loop {
            let now = self.now;
            let mark = self.progress_mark;
            self.c2s.deliver(&mut self.server, now);
            self.s2c.deliver(&mut self.client, now);
            if client_timer.is_some_and(|t| t <= now) {
                self.client.handle_timeout(now);
            }
            if server_timer.is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
            }
            self.expire_deadlines();
            self.process_events();
            if let StopAt::WallClock(d) = self.cfg.stop {
                if wall_start.elapsed() >= d {
                    self.stop_starting = true;
                }
            }
            self.start_lifecycles();
            self.c2s.collect(&mut self.client, now, now + latency);
            self.s2c.collect(&mut self.server, now, now + latency);

            steps += 1;
            if steps & 1023 == 0 {
                let t = std::time::Instant::now();
                if t.duration_since(last_report) >= every {
                    last_report = t;
                    progress(&self.progress(t.duration_since(wall_start)));
                }
            }

            if self.in_flight == 0 && !self.may_start() {
                break;
            }
            client_timer = self.client.poll_timeout();
            server_timer = self.server.poll_timeout();
            let next = [
                self.c2s.next_delivery(),
                self.s2c.next_delivery(),
                client_timer,
                server_timer,
                self.deadlines.front().map(|d| d.0),
            ]
            .into_iter()
            .flatten()
            .min();
            let next = match next {
                Some(t) => t.max(now),
                // Nothing scheduled: only starting more lifecycles can move things on.
                None if self.in_flight == 0 => now,
                None => {
                    stalled = Some(format!(
                        "nothing scheduled at simulated {:.6} s with {} lifecycles in flight",
                        Duration::from_micros(now.micros()).as_secs_f64(),
                        self.in_flight
                    ));
                    break;
                }
            };
            if self.progress_mark != mark {
                last_progress_at = now;
                idle_steps = 0;
            } else if next == now {
                idle_steps += 1;
                if idle_steps > MAX_IDLE_STEPS_AT_ONE_INSTANT {
                    stalled = Some(format!(
                        "no progress in {MAX_IDLE_STEPS_AT_ONE_INSTANT} steps at simulated \
                         {:.6} s (the simulated clock stopped advancing)",
                        Duration::from_micros(now.micros()).as_secs_f64()
                    ));
                    break;
                }
            } else {
                idle_steps = 0;
            }
            if next.saturating_since(last_progress_at) > stall_after {
                stalled = Some(format!(
                    "no lifecycle started, completed or failed for {:?} of simulated time \
                     (at simulated {:.6} s, {} in flight)",
                    stall_after,
                    Duration::from_micros(now.micros()).as_secs_f64(),
                    self.in_flight
                ));
                break;
            }
            self.now = next;
        }

        if stalled.is_some() {
            // Never drop a lifecycle silently: whatever is still in flight failed.
            for slot in 0..self.lifecycles.len() as u32 {
                if self.lifecycles[slot as usize].live {
                    self.fail(slot, FAIL_UNFINISHED);
                }
            }
        }
        let elapsed = wall_start.elapsed();
        ChurnReport {
            started: self.started,
            completed: self.completed,
            failed: self.failed,
            failures: self.failures,
            stalled,
            elapsed,
            simulated: Duration::from_micros(self.now.micros()),
            time_wait_client: self.client.time_wait().len(),
            time_wait_server: self.server.time_wait().len(),
            packets_client_to_server: self.c2s.sent,
            packets_server_to_client: self.s2c.sent,
            unmatched_server_connections: self.unmatched,
            tun_dropped: None,
            client_counters: self.client.counters().entries(),
            server_counters: self.server.counters().entries(),
            config: self.cfg,
        }
    }

    fn progress(&self, elapsed: Duration) -> Progress {
        Progress {
            started: self.started,
            completed: self.completed,
            failed: self.failed,
            elapsed,
            simulated: Duration::from_micros(self.now.micros()),
            time_wait_client: self.client.time_wait().len(),
            time_wait_server: self.server.time_wait().len(),
        }
    }

    fn may_start(&self) -> bool {
        match self.cfg.stop {
            StopAt::Count(n) => self.started < n,
            StopAt::WallClock(_) => !self.stop_starting,
        }
    }

    // ---- starting and ending lifecycles --------------------------------------------

    fn start_lifecycles(&mut self) {
        // At most `concurrency` attempts per step, so connects that fail at once cannot
        // spin here forever.
        let mut attempts = 0;
        while self.in_flight < self.cfg.concurrency
            && attempts < self.cfg.concurrency
            && self.may_start()
        {
            attempts += 1;
            self.start_one();
        }
    }

    fn start_one(&mut self) {
        self.started += 1;
        self.progress_mark += 1;
        let id = self.started;
        let port = self.cfg.server_port_base + self.next_port;
        self.next_port = (self.next_port + 1) % self.cfg.server_ports;
        let remote = SocketAddr::new(IpAddr::V4(SERVER_ADDR), port);
        let h = match self.client.connect(self.now, remote, None) {
            Ok(h) => h,
            Err(e) => {
                self.count_failure(error_kind(e));
                return;
            }
        };
        let tuple = self.client.tuple(h).ok();
        let lc = Lifecycle {
            id,
            live: true,
            tuple,
            client: Side {
                handle: Some(h),
                ..Side::new(ClientPhase::Connecting)
            },
            server: Side::new(ServerPhase::NotAccepted),
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.lifecycles[s as usize] = lc;
                s
            }
            None => {
                self.lifecycles.push(lc);
                (self.lifecycles.len() - 1) as u32
            }
        };
        self.by_client.insert(h, slot);
        if let Some(t) = tuple {
            self.by_tuple.insert(t, slot);
        }
        self.deadlines
            .push_back((self.now + self.cfg.lifecycle_timeout, slot, id));
        self.in_flight += 1;
    }

    fn count_failure(&mut self, kind: &'static str) {
        self.failed += 1;
        self.progress_mark += 1;
        *self.failures.entry(kind).or_insert(0) += 1;
    }

    /// Ends a live lifecycle as failed: resets whatever either side still holds.
    fn fail(&mut self, slot: u32, kind: &'static str) {
        let now = self.now;
        let lc = &mut self.lifecycles[slot as usize];
        if !lc.live {
            return;
        }
        if let Some(h) = lc.client.handle.take() {
            self.by_client.remove(&h);
            let _ = self.client.abort(now, h);
        }
        if let Some(h) = lc.server.handle.take() {
            self.by_server.remove(&h);
            let _ = self.server.abort(now, h);
        }
        if let Some(t) = lc.tuple.take() {
            self.by_tuple.remove(&t);
        }
        self.release(slot);
        self.count_failure(kind);
    }

    fn release(&mut self, slot: u32) {
        self.lifecycles[slot as usize].live = false;
        self.free.push(slot);
        self.in_flight -= 1;
    }

    fn maybe_complete(&mut self, slot: u32) {
        let lc = &self.lifecycles[slot as usize];
        if lc.live && lc.client.phase == ClientPhase::Done && lc.server.phase == ServerPhase::Done {
            self.release(slot);
            self.completed += 1;
            self.progress_mark += 1;
        }
    }

    fn expire_deadlines(&mut self) {
        while let Some(&(at, slot, id)) = self.deadlines.front() {
            if at > self.now {
                break;
            }
            self.deadlines.pop_front();
            let lc = &self.lifecycles[slot as usize];
            if lc.live && lc.id == id {
                self.fail(slot, FAIL_LIFECYCLE_TIMEOUT);
            }
        }
    }

    // ---- events --------------------------------------------------------------------

    fn process_events(&mut self) {
        loop {
            let mut any = false;
            while let Some(ev) = self.server.poll_event() {
                any = true;
                match ev {
                    Event::Incoming { listener } => self.accept_all(listener),
                    Event::Conn { handle, events } => {
                        if let Some(&slot) = self.by_server.get(&handle) {
                            self.on_server(slot, events);
                        }
                    }
                }
            }
            while let Some(ev) = self.client.poll_event() {
                any = true;
                if let Event::Conn { handle, events } = ev {
                    if let Some(&slot) = self.by_client.get(&handle) {
                        self.on_client(slot, events);
                    }
                }
            }
            if !any {
                return;
            }
        }
    }

    fn accept_all(&mut self, listener: ListenerHandle) {
        while let Ok(Some(h)) = self.server.accept(listener) {
            let slot = self
                .server
                .tuple(h)
                .ok()
                .and_then(|t| self.by_tuple.remove(&t.reversed()));
            let Some(slot) = slot else {
                self.unmatched += 1;
                let _ = self.server.abort(self.now, h);
                continue;
            };
            let lc = &mut self.lifecycles[slot as usize];
            lc.tuple = None;
            lc.server.handle = Some(h);
            lc.server.phase = ServerPhase::AwaitRequest;
            self.by_server.insert(h, slot);
            // The request may have arrived with the handshake's last ACK, before any
            // event could be reported for this connection: try it now.
            self.on_server(slot, EventSet::default());
        }
    }

    fn on_client(&mut self, slot: u32, events: EventSet) {
        match self.pump_client(slot, events) {
            Pump::Wait => {}
            Pump::Done => self.maybe_complete(slot),
            Pump::Fail(kind) => self.fail(slot, kind),
        }
    }

    fn on_server(&mut self, slot: u32, events: EventSet) {
        match self.pump_server(slot, events) {
            Pump::Wait => {}
            Pump::Done => self.maybe_complete(slot),
            Pump::Fail(kind) => self.fail(slot, kind),
        }
    }

    /// Moves the client side on as far as the stack allows.
    fn pump_client(&mut self, slot: u32, events: EventSet) -> Pump {
        let now = self.now;
        let close = self.cfg.close;
        let stack = &mut self.client;
        let lc = &mut self.lifecycles[slot as usize];
        let Some(h) = lc.client.handle else {
            return Pump::Wait;
        };
        if events.contains(EventSet::ERROR) {
            return Pump::Fail(conn_error_kind(stack, h));
        }
        let mut buf = [0u8; 4 * MESSAGE_LEN];
        loop {
            let side = &mut lc.client;
            match side.phase {
                ClientPhase::Connecting => {
                    if !events.contains(EventSet::CONNECTED) {
                        return Pump::Wait;
                    }
                    side.phase = ClientPhase::Sending;
                }
                ClientPhase::Sending => {
                    let msg = request(lc.id);
                    match stack.send(now, h, &msg[side.sent..]) {
                        Ok(n) => side.sent += n,
                        Err(Error::WouldBlock) => return Pump::Wait,
                        Err(e) => return Pump::Fail(error_kind(e)),
                    }
                    if side.sent < MESSAGE_LEN {
                        return Pump::Wait;
                    }
                    side.phase = ClientPhase::AwaitReply;
                }
                ClientPhase::AwaitReply => {
                    match read_message(stack, now, h, side, &mut buf, &reply(lc.id)) {
                        Read::Complete => {}
                        Read::Wait => return Pump::Wait,
                        Read::Fail(kind) => return Pump::Fail(kind),
                    }
                    match close {
                        CloseMode::Client | CloseMode::Goodbye => {
                            if let Err(e) = stack.shutdown_write(now, h) {
                                return Pump::Fail(error_kind(e));
                            }
                            side.phase = ClientPhase::AwaitClosed;
                        }
                        CloseMode::Server => side.phase = ClientPhase::AwaitEof,
                        CloseMode::Abort => {
                            let _ = stack.abort(now, h);
                            side.handle = None;
                            self.by_client.remove(&h);
                            side.phase = ClientPhase::Done;
                            return Pump::Done;
                        }
                    }
                }
                ClientPhase::AwaitEof => match stack.recv(now, h, &mut buf) {
                    Ok(0) => {
                        if let Err(e) = stack.shutdown_write(now, h) {
                            return Pump::Fail(error_kind(e));
                        }
                        side.phase = ClientPhase::AwaitClosed;
                    }
                    Ok(_) => return Pump::Fail(FAIL_DATA_MISMATCH),
                    Err(Error::WouldBlock) => return Pump::Wait,
                    Err(e) => return Pump::Fail(error_kind(e)),
                },
                ClientPhase::AwaitClosed => {
                    if !close_finished(stack, h) {
                        return Pump::Wait;
                    }
                    let _ = stack.close(now, h);
                    side.handle = None;
                    self.by_client.remove(&h);
                    side.phase = ClientPhase::Done;
                    return Pump::Done;
                }
                ClientPhase::Done => return Pump::Wait,
            }
        }
    }

    /// Moves the server side on as far as the stack allows.
    fn pump_server(&mut self, slot: u32, events: EventSet) -> Pump {
        let now = self.now;
        let close = self.cfg.close;
        let stack = &mut self.server;
        let lc = &mut self.lifecycles[slot as usize];
        let Some(h) = lc.server.handle else {
            return Pump::Wait;
        };
        if events.contains(EventSet::ERROR) && lc.server.phase != ServerPhase::AwaitReset {
            return Pump::Fail(conn_error_kind(stack, h));
        }
        let mut buf = [0u8; 4 * MESSAGE_LEN];
        loop {
            let side = &mut lc.server;
            match side.phase {
                ServerPhase::NotAccepted => return Pump::Wait,
                ServerPhase::AwaitRequest => {
                    match read_message(stack, now, h, side, &mut buf, &request(lc.id)) {
                        Read::Complete => side.phase = ServerPhase::Sending,
                        Read::Wait => return Pump::Wait,
                        Read::Fail(kind) => return Pump::Fail(kind),
                    }
                }
                ServerPhase::Sending => {
                    let msg = reply(lc.id);
                    match stack.send(now, h, &msg[side.sent..]) {
                        Ok(n) => side.sent += n,
                        Err(Error::WouldBlock) => return Pump::Wait,
                        Err(e) => return Pump::Fail(error_kind(e)),
                    }
                    if side.sent < MESSAGE_LEN {
                        return Pump::Wait;
                    }
                    side.phase = match close {
                        CloseMode::Client | CloseMode::Goodbye => ServerPhase::AwaitEof,
                        CloseMode::Server => {
                            if let Err(e) = stack.shutdown_write(now, h) {
                                return Pump::Fail(error_kind(e));
                            }
                            ServerPhase::AwaitClosed
                        }
                        CloseMode::Abort => ServerPhase::AwaitReset,
                    };
                }
                ServerPhase::AwaitEof => match stack.recv(now, h, &mut buf) {
                    Ok(0) => {
                        if let Err(e) = stack.shutdown_write(now, h) {
                            return Pump::Fail(error_kind(e));
                        }
                        side.phase = ServerPhase::AwaitClosed;
                    }
                    Ok(_) => return Pump::Fail(FAIL_DATA_MISMATCH),
                    Err(Error::WouldBlock) => return Pump::Wait,
                    Err(e) => return Pump::Fail(error_kind(e)),
                },
                ServerPhase::AwaitClosed => {
                    if !close_finished(stack, h) {
                        return Pump::Wait;
                    }
                    let _ = stack.close(now, h);
                    side.handle = None;
                    self.by_server.remove(&h);
                    side.phase = ServerPhase::Done;
                    return Pump::Done;
                }
                ServerPhase::AwaitReset => match stack.recv(now, h, &mut buf) {
                    Err(Error::Connection(fourtuple_stack::ConnError::Reset)) => {
                        let _ = stack.close(now, h);
                        side.handle = None;
                        self.by_server.remove(&h);
                        side.phase = ServerPhase::Done;
                        return Pump::Done;
                    }
                    Err(Error::WouldBlock) => return Pump::Wait,
                    Ok(0) => return Pump::Fail(FAIL_UNEXPECTED_EOF),
                    Ok(_) => return Pump::Fail(FAIL_DATA_MISMATCH),
                    Err(e) => return Pump::Fail(error_kind(e)),
                },
                ServerPhase::Done => return Pump::Wait,
            }
        }
    }
}

/// The failure kind of a connection that reported ERROR.
pub(crate) fn conn_error_kind(stack: &Stack, h: ConnHandle) -> &'static str {
    match stack.error(h) {
        Ok(Some(e)) => Error::Connection(e).outcome(),
        Ok(None) => "error",
        Err(e) => e.outcome(),
    }
}

/// True once a connection this side shut down has finished closing without an error:
/// CLOSED after LAST-ACK, or TIME-WAIT.
pub(crate) fn close_finished(stack: &Stack, h: ConnHandle) -> bool {
    matches!(stack.state(h), Ok(TcpState::TimeWait | TcpState::Closed))
        && matches!(stack.error(h), Ok(None))
}

enum Read {
    Complete,
    Wait,
    Fail(&'static str),
}

/// Reads until the side holds [`MESSAGE_LEN`] bytes, then checks them against `expected`.
fn read_message<P>(
    stack: &mut Stack,
    now: Instant,
    h: ConnHandle,
    side: &mut Side<P>,
    buf: &mut [u8],
    expected: &[u8; MESSAGE_LEN],
) -> Read {
    loop {
        match stack.recv(now, h, buf) {
            Ok(0) => return Read::Fail(FAIL_UNEXPECTED_EOF),
            Ok(n) => {
                if side.got + n > MESSAGE_LEN {
                    return Read::Fail(FAIL_DATA_MISMATCH);
                }
                side.rx[side.got..side.got + n].copy_from_slice(&buf[..n]);
                side.got += n;
                if side.got == MESSAGE_LEN {
                    return if &side.rx == expected {
                        Read::Complete
                    } else {
                        Read::Fail(FAIL_DATA_MISMATCH)
                    };
                }
            }
            Err(Error::WouldBlock) => return Read::Wait,
            Err(e) => return Read::Fail(error_kind(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(close: CloseMode) -> ChurnConfig {
        ChurnConfig {
            stop: StopAt::Count(300),
            concurrency: 8,
            close,
            ..ChurnConfig::default()
        }
    }

    #[test]
    fn messages_differ_per_lifecycle_and_direction() {
        assert_ne!(request(1), request(2));
        assert_ne!(request(1), reply(1));
    }

    #[test]
    fn client_close_leaves_time_wait_on_the_client() {
        let r = run_in_memory(&small(CloseMode::Client));
        assert!(r.is_success(), "{r:?}");
        assert_eq!(r.completed, 300);
        assert_eq!((r.time_wait_client, r.time_wait_server), (300, 0));
    }

    #[test]
    fn server_close_leaves_time_wait_on_the_server() {
        let r = run_in_memory(&small(CloseMode::Server));
        assert!(r.is_success(), "{r:?}");
        assert_eq!(r.completed, 300);
        assert_eq!((r.time_wait_client, r.time_wait_server), (0, 300));
    }

    #[test]
    fn abort_leaves_no_time_wait() {
        let r = run_in_memory(&small(CloseMode::Abort));
        assert!(r.is_success(), "{r:?}");
        assert_eq!(r.completed, 300);
        assert_eq!((r.time_wait_client, r.time_wait_server), (0, 0));
    }

    #[test]
    fn zero_latency_works() {
        let cfg = ChurnConfig {
            latency: Duration::ZERO,
            ..small(CloseMode::Client)
        };
        let r = run_in_memory(&cfg);
        assert!(r.is_success(), "{r:?}");
        assert_eq!(r.simulated, Duration::ZERO);
    }

    #[test]
    fn port_exhaustion_is_counted_not_hung() {
        let cfg = ChurnConfig {
            stop: StopAt::Count(50),
            policy: ReusePolicy::LocalPort,
            port_range: (40000, 40009),
            server_ports: 1,
            ..ChurnConfig::default()
        };
        let r = run_in_memory(&cfg);
        assert_eq!(r.completed + r.failed, 50, "{r:?}");
        assert_eq!(r.completed, 10, "{r:?}");
        assert_eq!(r.failures.get("addr-not-available"), Some(&40), "{r:?}");
    }

    #[test]
    fn lifecycles_past_their_deadline_fail_and_are_counted() {
        // A lifecycle needs six one-way trips; give it less than two.
        let cfg = ChurnConfig {
            stop: StopAt::Count(200),
            latency: Duration::from_micros(50),
            lifecycle_timeout: Duration::from_micros(90),
            ..ChurnConfig::default()
        };
        let r = run_in_memory(&cfg);
        assert_eq!(r.completed, 0, "{r:?}");
        assert_eq!(r.failed, 200, "{r:?}");
        assert_eq!(r.failures.get(FAIL_LIFECYCLE_TIMEOUT), Some(&200), "{r:?}");
        assert!(r.stalled.is_none(), "{r:?}");
        assert_eq!(r.unmatched_server_connections, 0, "{r:?}");
    }

    #[test]
    fn wall_clock_duration_stops_starting() {
        let cfg = ChurnConfig {
            stop: StopAt::WallClock(Duration::from_millis(50)),
            ..ChurnConfig::default()
        };
        let r = run_in_memory(&cfg);
        assert!(r.is_success(), "{r:?}");
        assert!(r.completed > 0);
        assert_eq!(r.completed, r.started);
    }

    #[test]
    fn requests_decode_to_their_id() {
        for id in [1u64, 2, 99, u64::MAX] {
            assert_eq!(decode_request(&request(id)), Some(id));
        }
        let mut bad = request(7);
        bad[12] ^= 1;
        assert_eq!(decode_request(&bad), None);
        assert_eq!(decode_request(&reply(7)), None);
    }

    #[test]
    fn validate_rejects_nonsense() {
        let bad = [
            ChurnConfig {
                stop: StopAt::Count(0),
                ..ChurnConfig::default()
            },
            ChurnConfig {
                concurrency: 0,
                ..ChurnConfig::default()
            },
            ChurnConfig {
                port_range: (5, 4),
                ..ChurnConfig::default()
            },
            ChurnConfig {
                server_ports: 60000,
                ..ChurnConfig::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
        assert!(ChurnConfig::default().validate().is_ok());
    }
}
