//! Bulk throughput side by side with the kernel (`fourtuple bulk --vs-kernel`).
//!
//! This module owns one measurement run: two private network namespaces it creates and
//! removes (a "main" one with a TUN and one end of a veth pair, a "peer" one with the
//! other end), and three one-way transfers of the same byte count in one process:
//!
//! - kernel -> kernel over the veth pair (sender in main, receiver in peer), twice: with
//!   the veth's defaults (MTU 1500, the kernel's offloads), and "like the TUN" (the setup's
//!   MTU; without the setup's offloads also without the veth's, via `ethtool -K`);
//! - kernel -> fourtuple over the TUN (a kernel socket sends, fourtuple's stack receives,
//!   in-process on the event loop, discarding what it checked);
//! - fourtuple -> kernel over the TUN (fourtuple sends, a kernel socket receives).
//!
//! Every receiver checks every byte against the same pattern, and every transfer is timed
//! from the sender's first byte (after the handshake) to the receiver's last. The veth
//! transfers and the TUN pair are repeated for each [`TunSetup`] (MTU, offloads), in that
//! order, so every ratio compares transfers a few seconds apart; the veth is put back to
//! its defaults (MTU 1500, the offloads it was created with) after each like-the-TUN
//! transfer, and the packets each veth transfer put on the wire are counted, so the report
//! shows that a setting took effect. It must never touch an
//! interface outside the namespaces it created, use addresses outside RFC 5737, or run a
//! loop that is not bounded by bytes and by [`BulkOptions::timeout`]; printing belongs to
//! the CLI.

use core::time::Duration;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant as WallInstant;

use fourtuple_netdev::{
    App, Control, EventLoop, LoopOptions, LoopStats, TunConfig, TunCounters, TunDevice,
};
use fourtuple_stack::{Config, ConnHandle, Error, Event, EventSet, Instant, Stack, TcpState};

use crate::compare::netns::Netns;

/// The kernel's address on the TUN.
pub const TUN_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// fourtuple's address behind the TUN.
pub const TUN_STACK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The veth end in the main namespace (the kernel sender's side).
pub const VETH_MAIN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The veth end in the peer namespace (the kernel receiver's side).
pub const VETH_PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// fourtuple's discard port (RFC 863).
pub const DISCARD_PORT: u16 = 9;
/// The kernel receiver's port, on the veth and on the TUN.
pub const SINK_PORT: u16 = 5001;

/// What `ethtool -K` turns off on both veth ends for a setup without offloads, so the veth
/// moves what a plain TUN moves: one packet of at most the MTU per transmit, checksums
/// computed by the sender's TCP and verified by the receiver's (no TSO, no GSO, no GRO, no
/// checksum offload).
pub const LIKE_OFF: [&str; 4] = ["tso", "gso", "gro", "tx"];
/// Bytes each veth frame carries beyond its IP packet (the kernel counts the Ethernet
/// header in the veth's byte counters).
const ETH_HEADER: u64 = 14;

const TUN_NAME: &str = "ftbulk0";
const VETH_MAIN_NAME: &str = "ftbv0";
const VETH_PEER_NAME: &str = "ftbv1";

/// The pattern repeats with this period (a prime, so it never lines up with segments).
const PERIOD: usize = 65_521;
/// The largest read or write any side makes.
const CHUNK: usize = 256 * 1024;
/// How often blocked sides look at the stop flag and the deadline.
const TICK: Duration = Duration::from_millis(100);

/// The bytes every transfer carries: byte `i` is `pattern[i % PERIOD]`. Any run of up to
/// [`CHUNK`] bytes from any offset is one contiguous slice, so checking is one `memcmp`.
#[derive(Debug)]
pub struct Pattern {
    buf: Vec<u8>,
}

impl Pattern {
    /// The pattern (xorshift bytes, fixed seed).
    pub fn new() -> Pattern {
        let mut x: u32 = 0x9e37_79b9;
        let mut buf = Vec::with_capacity(PERIOD + CHUNK);
        for _ in 0..PERIOD {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            buf.push((x >> 11) as u8);
        }
        for i in 0..CHUNK {
            buf.push(buf[i % PERIOD]);
        }
        Pattern { buf }
    }

    /// The `n` bytes (at most [`CHUNK`]) from stream offset `off`.
    pub fn slice(&self, off: u64, n: usize) -> &[u8] {
        let s = (off % PERIOD as u64) as usize;
        &self.buf[s..s + n.min(CHUNK)]
    }

    /// True when `data` (at most [`CHUNK`] bytes) is what the stream holds at `off`.
    pub fn check(&self, off: u64, data: &[u8]) -> bool {
        data.len() <= CHUNK && self.slice(off, data.len()) == data
    }
}

impl Default for Pattern {
    fn default() -> Pattern {
        Pattern::new()
    }
}

/// How fourtuple's side of the TUN is set up for one pair of TUN transfers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TunSetup {
    /// The TUN's MTU; fourtuple's MSS is this minus 40.
    pub mtu: u16,
    /// IFF_VNET_HDR with TSO/checksum offloads (see [`TunConfig::offload`]).
    pub offload: bool,
}

impl TunSetup {
    /// A short label, e.g. `mtu1500` or `mtu1500+offload`.
    pub fn label(&self) -> String {
        if self.offload {
            format!("mtu{}+offload", self.mtu)
        } else {
            format!("mtu{}", self.mtu)
        }
    }
}

/// Parses a comma-separated list of setups: `MTU` or `MTU+offload`, e.g.
/// `1500,65535,1500+offload`.
pub fn parse_setups(s: &str) -> Result<Vec<TunSetup>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (mtu, offload) = match item.split_once('+') {
            Some((m, "offload")) => (m, true),
            Some((_, other)) => {
                return Err(format!(
                    "setup {item:?}: unknown option {other:?} (only +offload)"
                ))
            }
            None => (item, false),
        };
        let mtu: u16 = mtu
            .parse()
            .map_err(|_| format!("setup {item:?}: {mtu:?} is not an MTU (576-65535)"))?;
        if mtu < 576 {
            return Err(format!("setup {item:?}: MTU must be at least 576"));
        }
        out.push(TunSetup { mtu, offload });
    }
    if out.is_empty() {
        return Err("no setup given: write e.g. 1500 or 1500,65535".into());
    }
    Ok(out)
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct BulkOptions {
    /// Bytes each transfer carries.
    pub bytes: u64,
    /// The TUN setups; each gets both TUN directions.
    pub setups: Vec<TunSetup>,
    /// Rounds: the whole set of transfers is repeated this many times.
    pub rounds: u32,
    /// Bound on each transfer (handshake to close).
    pub timeout: Duration,
    /// fourtuple's per-connection send and receive buffers.
    pub stack_buffer: usize,
    /// Packets the event loop reads per turn.
    pub batch: usize,
    /// Also measure kernel -> kernel over the veth set up like each TUN setup.
    pub veth_like: bool,
}

impl Default for BulkOptions {
    fn default() -> BulkOptions {
        BulkOptions {
            bytes: 1 << 30,
            setups: vec![TunSetup {
                mtu: 1500,
                offload: false,
            }],
            rounds: 1,
            timeout: Duration::from_secs(60),
            stack_buffer: 4 << 20,
            batch: 64,
            veth_like: true,
        }
    }
}

/// One one-way transfer.
#[derive(Clone, Debug, Default)]
pub struct Transfer {
    /// Bytes the sender was to send.
    pub bytes: u64,
    /// Bytes the receiver got before end of stream.
    pub received: u64,
    /// True when every byte received matched the pattern.
    pub intact: bool,
    /// Seconds from the sender's first byte to the receiver's last.
    pub seconds: f64,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// fourtuple's event-loop counters (TUN transfers only).
    pub loop_stats: Option<LoopStats>,
    /// CPU seconds (user + system) of fourtuple's thread during the transfer (TUN
    /// transfers only): the cost of fourtuple's side, steadier than the wall clock on a
    /// shared machine.
    pub fourtuple_cpu_seconds: Option<f64>,
    /// What the sender's veth end transmitted during the transfer (veth transfers only,
    /// when `ip` could read the counters).
    pub wire: Option<WireCount>,
}

/// Packets and bytes one veth end transmitted, from the kernel's interface counters.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct WireCount {
    /// Packets (a GSO super-packet that crosses whole counts once).
    pub packets: u64,
    /// Bytes, Ethernet headers included.
    pub bytes: u64,
}

impl WireCount {
    /// The average IP packet: bytes without the 14-byte Ethernet header, per packet.
    pub fn avg_ip_packet(&self) -> Option<f64> {
        (self.packets > 0).then(|| {
            self.bytes.saturating_sub(self.packets * ETH_HEADER) as f64 / self.packets as f64
        })
    }
}

impl Transfer {
    /// True when all bytes arrived intact and nothing failed.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.intact && self.received == self.bytes
    }

    /// Payload throughput, in Gbit/s (0 when the transfer failed).
    pub fn gbit_per_s(&self) -> f64 {
        if !self.ok() || self.seconds <= 0.0 {
            return 0.0;
        }
        self.bytes as f64 * 8.0 / self.seconds / 1e9
    }
}

/// Both TUN directions under one setup, and the veth transfer measured just before them
/// (so that each ratio compares transfers seconds apart on a noisy machine).
#[derive(Clone, Debug)]
pub struct TunResult {
    /// The setup.
    pub setup: TunSetup,
    /// kernel -> kernel over veth, right before this setup's transfers.
    pub veth: Transfer,
    /// kernel -> kernel over the veth set up like this TUN, right after `veth` (None when
    /// not measured: see [`BulkReport::veth_like_skipped`]).
    pub veth_like: Option<VethLike>,
    /// The MSS fourtuple offered and the one it sent with.
    pub mss: u16,
    /// kernel -> fourtuple.
    pub to_fourtuple: Transfer,
    /// fourtuple -> kernel.
    pub from_fourtuple: Transfer,
    /// The TUN's offload counters over both transfers (all zero without offloads).
    pub device: TunCounters,
    /// Packets the kernel dropped at the TUN over both transfers: (toward fourtuple,
    /// from fourtuple), if `ip` could tell.
    pub kernel_drops: Option<(u64, u64)>,
    /// The TUN's transmit queue length, in packets.
    pub tx_queue_len: u32,
}

/// kernel -> kernel over the veth pair set up like one TUN setup.
#[derive(Clone, Debug)]
pub struct VethLike {
    /// The veth's MTU for this transfer (the setup's).
    pub mtu: u16,
    /// True when the veth kept its default offloads (a setup with offloads); false when
    /// [`LIKE_OFF`] were turned off on both ends.
    pub offloads: bool,
    /// The transfer.
    pub transfer: Transfer,
}

/// One round: for every TUN setup, the veth baselines then both TUN directions.
#[derive(Clone, Debug)]
pub struct Round {
    /// One entry per setup, in order.
    pub tun: Vec<TunResult>,
}

/// The whole run.
#[derive(Clone, Debug)]
pub struct BulkReport {
    /// The options it ran with.
    pub options: BulkOptions,
    /// The kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// CPUs available to the process.
    pub cpus: usize,
    /// The veth MTU (1500; its offloads are the kernel's defaults).
    pub veth_mtu: u16,
    /// Why the like-the-TUN veth transfers were not measured, if they were not.
    pub veth_like_skipped: Option<String>,
    /// One per round.
    pub rounds: Vec<Round>,
}

impl BulkReport {
    /// True when every transfer moved all its bytes intact.
    pub fn all_ok(&self) -> bool {
        self.rounds.iter().all(|r| {
            r.tun.iter().all(|t| {
                t.veth.ok()
                    && t.veth_like.as_ref().is_none_or(|l| l.transfer.ok())
                    && t.to_fourtuple.ok()
                    && t.from_fourtuple.ok()
            })
        })
    }
}

/// Why a run could not start.
#[derive(Debug)]
pub enum BulkError {
    /// Setting up the namespaces, veth or TUN failed.
    Setup(io::Error),
    /// Ctrl-C (or SIGTERM) arrived.
    Interrupted,
}

impl std::fmt::Display for BulkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BulkError::Setup(e) => write!(f, "setup: {e}"),
            BulkError::Interrupted => write!(f, "interrupted"),
        }
    }
}

impl std::error::Error for BulkError {}

/// The namespaces and the veth pair between them; removed on drop (peer first).
struct Lab {
    main: Netns,
    peer: Netns,
    /// Each veth end's features as created (`ethtool -k`), main's end first; None without
    /// `ethtool` or when the like-the-TUN transfers are off.
    defaults: Option<[Features; 2]>,
}

/// A device's changeable features as `ethtool -k` lists them: (name, on).
type Features = Vec<(String, bool)>;

impl Lab {
    fn create() -> io::Result<Lab> {
        let main = Netns::create("ftbulk")?;
        let peer = Netns::create("ftbulkp")?;
        main.ip(&[
            "link",
            "add",
            VETH_MAIN_NAME,
            "type",
            "veth",
            "peer",
            "name",
            VETH_PEER_NAME,
            "netns",
            peer.name(),
        ])?;
        for (ns, dev, addr) in [
            (&main, VETH_MAIN_NAME, VETH_MAIN),
            (&peer, VETH_PEER_NAME, VETH_PEER),
        ] {
            // No IPv6 noise on the veth either.
            let dev_owned = dev.to_string();
            ns.run(move || fourtuple_netdev::tun::disable_ipv6(&dev_owned))??;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        Ok(Lab {
            main,
            peer,
            defaults: None,
        })
    }

    /// Both veth ends: (namespace, device).
    fn ends(&self) -> [(&Netns, &'static str); 2] {
        [(&self.main, VETH_MAIN_NAME), (&self.peer, VETH_PEER_NAME)]
    }

    /// Remembers both ends' features as they are now (the kernel's defaults).
    fn remember_defaults(&mut self) -> io::Result<()> {
        let [a, b] = self.ends();
        let d = [features(a.0, a.1)?, features(b.0, b.1)?];
        self.defaults = Some(d);
        Ok(())
    }

    /// Sets both veth ends up like `setup`: its MTU, and without offloads unless it has
    /// them.
    fn set_like(&self, setup: TunSetup) -> io::Result<()> {
        for (ns, dev) in self.ends() {
            ns.ip(&["link", "set", "dev", dev, "mtu", &setup.mtu.to_string()])?;
            if !setup.offload {
                let mut args = vec!["-K".to_string(), dev.to_string()];
                for f in LIKE_OFF {
                    args.extend([f.to_string(), "off".to_string()]);
                }
                ethtool(ns, args)?;
            }
        }
        Ok(())
    }

    /// Puts both veth ends back to MTU 1500 and the features they were created with, and
    /// checks that they are.
    fn restore_defaults(&self) -> io::Result<()> {
        let Some(defaults) = &self.defaults else {
            return Ok(());
        };
        for ((ns, dev), want) in self.ends().into_iter().zip(defaults) {
            ns.ip(&["link", "set", "dev", dev, "mtu", "1500"])?;
            let now = features(ns, dev)?;
            let mut args = vec!["-K".to_string(), dev.to_string()];
            for (name, on) in want {
                if now.iter().any(|(n, o)| n == name && o != on) {
                    args.extend([name.clone(), if *on { "on" } else { "off" }.to_string()]);
                }
            }
            if args.len() > 2 {
                // Some features follow others (e.g. UDP segmentation needs checksumming)
                // and make ethtool complain; what counts is the state read back below.
                let _ = ethtool(ns, args);
            }
            let now = features(ns, dev)?;
            let differ: Vec<&str> = want
                .iter()
                .filter(|(n, o)| !now.contains(&(n.clone(), *o)))
                .map(|(n, _)| n.as_str())
                .collect();
            if !differ.is_empty() {
                return Err(io::Error::other(format!(
                    "could not restore {dev}'s default features: {}",
                    differ.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// Why the like-the-TUN veth transfers cannot run here, if they cannot: `ethtool` is missing
/// or fails.
pub fn ethtool_missing() -> Option<String> {
    match std::process::Command::new("ethtool")
        .arg("--version")
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`ethtool --version` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Some("`ethtool` is not installed (it sets the veth's offloads)".into())
        }
        Err(e) => Some(format!("cannot run `ethtool`: {e}")),
    }
}

/// Runs `ethtool ARGS` inside `ns` (a child of a thread in the namespace is in it too).
fn ethtool(ns: &Netns, args: Vec<String>) -> io::Result<std::process::Output> {
    let shown = args.join(" ");
    let out = ns.run(move || std::process::Command::new("ethtool").args(&args).output())??;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`ethtool {shown}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// `dev`'s features that can change, from `ethtool -k`.
fn features(ns: &Netns, dev: &str) -> io::Result<Features> {
    let out = ethtool(ns, vec!["-k".into(), dev.into()])?;
    Ok(parse_features(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `ethtool -k` output: `name: on|off [fixed]` lines, without the fixed ones.
fn parse_features(text: &str) -> Features {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(": ")?;
            let mut words = rest.split_whitespace();
            let on = match words.next()? {
                "on" => true,
                "off" => false,
                _ => return None,
            };
            (!rest.contains("[fixed]")).then(|| (name.to_string(), on))
        })
        .collect()
}

/// What `dev` in `ns` has transmitted so far, from `ip -j -s link`.
fn wire_count(ns: &Netns, dev: &str) -> Option<WireCount> {
    let out = ns.ip(&["-j", "-s", "link", "show", "dev", dev]).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let tx = &v[0]["stats64"]["tx"];
    Some(WireCount {
        packets: tx["packets"].as_u64()?,
        bytes: tx["bytes"].as_u64()?,
    })
}

/// Runs every round; checks `stop` between and during transfers.
pub fn run(opts: &BulkOptions, stop: Arc<AtomicBool>) -> Result<BulkReport, BulkError> {
    let pattern = Arc::new(Pattern::new());
    let mut lab = Lab::create().map_err(BulkError::Setup)?;
    let mut veth_like_skipped = if opts.veth_like {
        ethtool_missing()
    } else {
        Some("turned off (--no-veth-like)".into())
    };
    if veth_like_skipped.is_none() {
        if let Err(e) = lab.remember_defaults() {
            veth_like_skipped = Some(format!("cannot read the veth's features: {e}"));
        }
    }
    let mut rounds = Vec::new();
    for _ in 0..opts.rounds.max(1) {
        if stop.load(Ordering::SeqCst) {
            return Err(BulkError::Interrupted);
        }
        let mut tun = Vec::new();
        for setup in &opts.setups {
            if stop.load(Ordering::SeqCst) {
                return Err(BulkError::Interrupted);
            }
            let veth = kernel_over_veth(&lab, opts, &pattern, &stop).map_err(BulkError::Setup)?;
            let veth_like = match lab.defaults {
                Some(_) => Some(veth_like(&lab, opts, *setup, &pattern, &stop)?),
                None => None,
            };
            if stop.load(Ordering::SeqCst) {
                return Err(BulkError::Interrupted);
            }
            let mut r = over_tun(&lab, opts, *setup, &pattern, &stop).map_err(BulkError::Setup)?;
            r.veth = veth;
            r.veth_like = veth_like;
            tun.push(r);
        }
        rounds.push(Round { tun });
    }
    if stop.load(Ordering::SeqCst) {
        return Err(BulkError::Interrupted);
    }
    drop(lab);
    Ok(BulkReport {
        options: opts.clone(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        veth_mtu: 1500,
        veth_like_skipped,
        rounds,
    })
}

/// kernel -> kernel over the veth set up like `setup`; the veth is back to its defaults
/// afterwards, also when the transfer failed.
fn veth_like(
    lab: &Lab,
    opts: &BulkOptions,
    setup: TunSetup,
    pattern: &Arc<Pattern>,
    stop: &Arc<AtomicBool>,
) -> Result<VethLike, BulkError> {
    let ran = lab
        .set_like(setup)
        .and_then(|()| kernel_over_veth(lab, opts, pattern, stop));
    let restored = lab.restore_defaults();
    let transfer = ran.map_err(BulkError::Setup)?;
    restored.map_err(BulkError::Setup)?;
    Ok(VethLike {
        mtu: setup.mtu,
        offloads: setup.offload,
        transfer,
    })
}

/// Runs `f` in `ns` (for creating sockets there: a socket stays in the namespace it was
/// created in, whatever thread uses it later).
fn in_ns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    ns.run(f)?
}

fn kernel_over_veth(
    lab: &Lab,
    opts: &BulkOptions,
    pattern: &Arc<Pattern>,
    stop: &Arc<AtomicBool>,
) -> io::Result<Transfer> {
    let listener = in_ns(&lab.peer, || {
        TcpListener::bind(SocketAddr::new(IpAddr::V4(VETH_PEER), SINK_PORT))
    })?;
    let deadline = WallInstant::now() + opts.timeout;
    let receiver = {
        let (pattern, stop, bytes) = (pattern.clone(), stop.clone(), opts.bytes);
        std::thread::spawn(move || kernel_receive(listener, bytes, &pattern, deadline, &stop))
    };
    let to = SocketAddr::new(IpAddr::V4(VETH_PEER), SINK_PORT);
    let before = wire_count(&lab.main, VETH_MAIN_NAME);
    let sent = match connect_bounded(&lab.main, to, deadline, stop) {
        Ok(s) => kernel_send(s, opts.bytes, pattern, deadline, stop),
        Err(e) => Err(format!("connect over veth: {e}")),
    };
    let received = receiver
        .join()
        .unwrap_or_else(|_| Err("the receiver thread panicked".into()));
    let mut t = combine(opts.bytes, sent, received, None);
    // The sender's end transmits the data (and a few handshake and ACK packets); the
    // receiver's ACKs leave from the other end.
    t.wire = match (before, wire_count(&lab.main, VETH_MAIN_NAME)) {
        (Some(b), Some(a)) => Some(WireCount {
            packets: a.packets.saturating_sub(b.packets),
            bytes: a.bytes.saturating_sub(b.bytes),
        }),
        _ => None,
    };
    Ok(t)
}

/// Connects from `ns` to `to`, in attempts of at most half a second, until `deadline` or
/// the stop flag (a peer that stopped answering must not hold a Ctrl-C up).
fn connect_bounded(
    ns: &Netns,
    to: SocketAddr,
    deadline: WallInstant,
    stop: &AtomicBool,
) -> Result<TcpStream, String> {
    loop {
        if let Some(why) = expired(deadline, stop) {
            return Err(why);
        }
        let left = deadline.saturating_duration_since(WallInstant::now());
        let attempt = left
            .min(Duration::from_millis(500))
            .max(Duration::from_millis(1));
        match in_ns(ns, move || TcpStream::connect_timeout(&to, attempt)) {
            Ok(s) => return Ok(s),
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Puts a sender's start and a receiver's outcome together.
fn combine(
    bytes: u64,
    sent: Result<WallInstant, String>,
    received: Result<Received, String>,
    loop_stats: Option<LoopStats>,
) -> Transfer {
    let mut t = Transfer {
        bytes,
        loop_stats,
        ..Transfer::default()
    };
    let mut errors = Vec::new();
    let start = match sent {
        Ok(s) => Some(s),
        Err(e) => {
            errors.push(format!("sender: {e}"));
            None
        }
    };
    match received {
        Ok(r) => {
            t.received = r.got;
            t.intact = r.intact;
            if let (Some(s), Some(end)) = (start, r.last_byte) {
                t.seconds = end.saturating_duration_since(s).as_secs_f64();
            }
            if let Some(e) = r.error {
                errors.push(format!("receiver: {e}"));
            }
        }
        Err(e) => errors.push(format!("receiver: {e}")),
    }
    if t.received != bytes && errors.is_empty() {
        errors.push(format!("received {} of {bytes} bytes", t.received));
    }
    if !t.intact && errors.is_empty() {
        errors.push("received bytes differ from those sent".into());
    }
    if !errors.is_empty() {
        t.error = Some(errors.join("; "));
    }
    t
}

/// What a receiver saw.
#[derive(Debug, Default)]
struct Received {
    got: u64,
    intact: bool,
    last_byte: Option<WallInstant>,
    error: Option<String>,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn expired(deadline: WallInstant, stop: &AtomicBool) -> Option<String> {
    if stop.load(Ordering::SeqCst) {
        Some("interrupted".into())
    } else if WallInstant::now() >= deadline {
        Some("timed out".into())
    } else {
        None
    }
}

/// Accepts one connection and reads it to the end, checking every byte.
fn kernel_receive(
    listener: TcpListener,
    bytes: u64,
    pattern: &Pattern,
    deadline: WallInstant,
    stop: &AtomicBool,
) -> Result<Received, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if is_timeout(&e) => {
                if let Some(why) = expired(deadline, stop) {
                    return Err(format!("accept: {why}"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    drop(listener);
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(TICK))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; CHUNK];
    let mut r = Received {
        intact: true,
        ..Received::default()
    };
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if r.intact && !pattern.check(r.got, &buf[..n]) {
                    r.intact = false;
                }
                r.got += n as u64;
                if r.got >= bytes && r.last_byte.is_none() {
                    r.last_byte = Some(WallInstant::now());
                }
                if let Some(why) = expired(deadline, stop) {
                    r.error = Some(format!("read: {why}"));
                    break;
                }
            }
            Err(e) if is_timeout(&e) => {
                if let Some(why) = expired(deadline, stop) {
                    r.error = Some(format!("read: {why}"));
                    break;
                }
            }
            Err(e) => {
                r.error = Some(format!("read: {e}"));
                break;
            }
        }
    }
    // Closing answers the sender's FIN.
    Ok(r)
}

/// Sends `bytes` of the pattern, half-closes, and waits for the peer to close. Returns when
/// the first byte was handed to the kernel.
fn kernel_send(
    mut stream: TcpStream,
    bytes: u64,
    pattern: &Pattern,
    deadline: WallInstant,
    stop: &AtomicBool,
) -> Result<WallInstant, String> {
    stream
        .set_write_timeout(Some(TICK))
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(TICK))
        .map_err(|e| e.to_string())?;
    let start = WallInstant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(CHUNK as u64) as usize;
        match stream.write(pattern.slice(sent, n)) {
            Ok(0) => return Err("write returned 0".into()),
            Ok(k) => {
                sent += k as u64;
                if let Some(why) = expired(deadline, stop) {
                    return Err(format!("write after {sent} bytes: {why}"));
                }
            }
            Err(e) if is_timeout(&e) => {
                if let Some(why) = expired(deadline, stop) {
                    return Err(format!("write after {sent} bytes: {why}"));
                }
            }
            Err(e) => return Err(format!("write after {sent} bytes: {e}")),
        }
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(start),
            Ok(_) => return Err("the receiver sent data".into()),
            Err(e) if is_timeout(&e) => {
                if let Some(why) = expired(deadline, stop) {
                    return Err(format!("waiting for the receiver's close: {why}"));
                }
            }
            Err(e) => return Err(format!("waiting for the receiver's close: {e}")),
        }
    }
}

/// The TUN's transmit queue: twice the packets of a full receive window of `buffer` bytes
/// (at least the kernel's usual 1000), so the kernel never drops toward fourtuple because
/// the queue is shorter than the window it may send.
/// With offloads the kernel's super-packets are usually far larger, but may be as small as
/// one segment, so the count assumes MTU-sized packets regardless.
pub fn tx_queue_len(setup: TunSetup, buffer: usize) -> u32 {
    let per_packet = usize::from(setup.mtu).saturating_sub(52).max(512);
    (2 * buffer / per_packet).clamp(1000, 1 << 20) as u32
}

/// Packets the kernel dropped on the TUN (toward fourtuple, from fourtuple), from
/// `ip -j -s link` inside the namespace. Not `Device::kernel_drops`: that reads the calling
/// thread's namespace, and the thread that runs the TUN's loop here never entered the
/// namespace (only the TUN's creation did).
fn tun_drops(ns: &str) -> Option<(u64, u64)> {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-j", "-s", "link", "show", "dev", TUN_NAME])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let st = &v[0]["stats64"];
    Some((st["tx"]["dropped"].as_u64()?, st["rx"]["dropped"].as_u64()?))
}

/// The stack fourtuple runs behind the TUN for `setup`.
/// (The MSS follows the MTU as `up --mtu` sets it.)
pub fn stack_config(setup: TunSetup, buffer: usize) -> Config {
    let cfg = Config {
        send_buffer: buffer,
        recv_buffer: buffer,
        max_ooo_bytes_per_conn: buffer,
        ..Config::default()
    };
    crate::up::tun_mss(cfg, usize::from(setup.mtu))
}

fn over_tun(
    lab: &Lab,
    opts: &BulkOptions,
    setup: TunSetup,
    pattern: &Arc<Pattern>,
    stop: &Arc<AtomicBool>,
) -> io::Result<TunResult> {
    let tun_cfg = TunConfig {
        host_addr: Some((TUN_HOST, 24)),
        mtu: setup.mtu,
        offload: setup.offload,
        tx_queue_len: Some(tx_queue_len(setup, opts.stack_buffer)),
        ..TunConfig::new(TUN_NAME)
    };
    let dev = in_ns(&lab.main, move || TunDevice::create(&tun_cfg))?;
    // The kernel's receiver for fourtuple -> kernel, listening before fourtuple connects.
    let listener = in_ns(&lab.main, || {
        TcpListener::bind(SocketAddr::new(IpAddr::V4(TUN_HOST), SINK_PORT))
    })?;
    let cfg = stack_config(setup, opts.stack_buffer);
    let mss = cfg.mss_v4;
    let (ready_tx, ready_rx) = mpsc::channel();
    let lp = {
        let (pattern, stop, opts) = (pattern.clone(), stop.clone(), opts.clone());
        let ns_name = lab.main.name().to_string();
        std::thread::Builder::new()
            .name("bulk-fourtuple".into())
            .spawn(move || fourtuple_side(dev, cfg, &opts, &pattern, &stop, ready_tx, &ns_name))?
    };
    // kernel -> fourtuple.
    let deadline = WallInstant::now() + opts.timeout;
    let sent = match ready_rx.recv_timeout(opts.timeout) {
        Ok(()) => {
            let to = SocketAddr::new(IpAddr::V4(TUN_STACK), DISCARD_PORT);
            match connect_bounded(&lab.main, to, deadline, stop) {
                Ok(s) => kernel_send(s, opts.bytes, pattern, deadline, stop),
                Err(e) => Err(format!("connect to fourtuple: {e}")),
            }
        }
        Err(_) => Err("fourtuple never started listening".into()),
    };
    // fourtuple -> kernel: the loop thread connects once its receive side is done.
    let deadline = WallInstant::now() + opts.timeout * 2;
    let received = kernel_receive(listener, opts.bytes, pattern, deadline, stop);
    let side = lp
        .join()
        .unwrap_or_else(|_| Err("the fourtuple thread panicked".into()));
    let (to, from, device) = match side {
        Ok(s) => {
            let mut to = combine(opts.bytes, sent, Ok(s.sink), Some(s.sink_stats));
            let mut from = combine(opts.bytes, s.source_start, received, Some(s.source_stats));
            to.fourtuple_cpu_seconds = Some(s.sink_cpu);
            from.fourtuple_cpu_seconds = Some(s.source_cpu);
            (to, from, (s.device, s.kernel_drops))
        }
        Err(e) => {
            let to = combine(opts.bytes, sent, Err(e.clone()), None);
            let from = combine(opts.bytes, Err(e), received, None);
            (to, from, (TunCounters::default(), None))
        }
    };
    let (device, kernel_drops) = device;
    Ok(TunResult {
        setup,
        veth: Transfer::default(),
        veth_like: None,
        mss,
        to_fourtuple: to,
        from_fourtuple: from,
        device,
        kernel_drops,
        tx_queue_len: tx_queue_len(setup, opts.stack_buffer),
    })
}

/// What the fourtuple thread brings back.
struct Side {
    sink: Received,
    sink_stats: LoopStats,
    sink_cpu: f64,
    source_cpu: f64,
    source_start: Result<WallInstant, String>,
    source_stats: LoopStats,
    device: TunCounters,
    kernel_drops: Option<(u64, u64)>,
}

fn diff_stats(after: &LoopStats, before: &LoopStats) -> LoopStats {
    LoopStats {
        rx_packets: after.rx_packets - before.rx_packets,
        rx_bytes: after.rx_bytes - before.rx_bytes,
        tx_packets: after.tx_packets - before.tx_packets,
        tx_bytes: after.tx_bytes - before.tx_bytes,
        tx_would_block: after.tx_would_block - before.tx_would_block,
        turns: after.turns - before.turns,
        pcap_packets: after.pcap_packets - before.pcap_packets,
    }
}

/// fourtuple's half: receive (discard, checked), then send; one loop, one TUN.
fn fourtuple_side(
    dev: TunDevice,
    cfg: Config,
    opts: &BulkOptions,
    pattern: &Arc<Pattern>,
    stop: &Arc<AtomicBool>,
    ready: mpsc::Sender<()>,
    ns: &str,
) -> Result<Side, String> {
    let mut stack = Stack::new(cfg, seed());
    stack.add_address(IpAddr::V4(TUN_STACK));
    let lopts = LoopOptions {
        batch: opts.batch,
        max_duration: Some(opts.timeout * 3),
        pcap: None,
        handle_signals: false,
        busy_poll: Duration::ZERO,
    };
    let mut lp = EventLoop::new(dev, stack, lopts).map_err(|e| format!("event loop: {e}"))?;
    let mut sink = Sink {
        base: Base::new(opts, stop),
        pattern: pattern.clone(),
        ready: Some(ready),
        listener: None,
        conn: None,
        r: Received {
            intact: true,
            ..Received::default()
        },
        eof: false,
        buf: vec![0u8; 64 * 1024],
    };
    let before = lp.stats().clone();
    let cpu0 = thread_cpu_seconds();
    lp.run(&mut sink).map_err(|e| format!("event loop: {e}"))?;
    let sink_cpu = thread_cpu_seconds() - cpu0;
    if sink.r.error.is_none() {
        if let Some(e) = sink.base.error.take() {
            sink.r.error = Some(e);
        }
    }
    let sink_stats = diff_stats(lp.stats(), &before);
    let mut source = Source {
        base: Base::new(opts, stop),
        pattern: pattern.clone(),
        remote: SocketAddr::new(IpAddr::V4(TUN_HOST), SINK_PORT),
        conn: None,
        start: None,
        sent: 0,
        shut: false,
        eof: false,
    };
    let before = lp.stats().clone();
    let cpu0 = thread_cpu_seconds();
    let ran = lp.run(&mut source);
    let source_cpu = thread_cpu_seconds() - cpu0;
    let source_start = match ran {
        Err(e) => Err(format!("event loop: {e}")),
        Ok(_) => match (source.base.error.take(), source.start) {
            (Some(e), _) => Err(e),
            (None, Some(s)) => Ok(s),
            (None, None) => Err("never connected".into()),
        },
    };
    let source_stats = diff_stats(lp.stats(), &before);
    Ok(Side {
        sink: sink.r,
        sink_stats,
        sink_cpu,
        source_cpu,
        source_start,
        source_stats,
        device: lp.device().counters(),
        // Read while the TUN still exists (it goes with the loop).
        kernel_drops: tun_drops(ns),
    })
}

/// CPU time (user + system) the calling thread used so far, in seconds.
fn thread_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_THREAD) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => 0.0,
    }
}

fn seed() -> [u8; 16] {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (t ^ u128::from(std::process::id()) << 64).to_le_bytes()
}

/// What both apps share: the bound on time, the stop flag, the first error.
struct Base {
    deadline: WallInstant,
    stop: Arc<AtomicBool>,
    bytes: u64,
    error: Option<String>,
    now: Instant,
    /// Set once the app's connection was closed; the app stops when the stack holds no
    /// live connection any more.
    closing: bool,
}

impl Base {
    fn new(opts: &BulkOptions, stop: &Arc<AtomicBool>) -> Base {
        Base {
            deadline: WallInstant::now() + opts.timeout,
            stop: stop.clone(),
            bytes: opts.bytes,
            error: None,
            now: Instant::from_micros(0),
            closing: false,
        }
    }

    fn fail(&mut self, stack: &mut Stack, now: Instant, h: Option<ConnHandle>, why: String) {
        if self.error.is_none() {
            self.error = Some(why);
        }
        if let Some(h) = h {
            let _ = stack.abort(now, h);
        }
        self.closing = true;
    }

    /// After an event on the app's connection `conn` (already pumped): an error ends the
    /// transfer as failed.
    fn fail_on_error(
        &mut self,
        stack: &mut Stack,
        now: Instant,
        conn: &mut Option<ConnHandle>,
        handle: ConnHandle,
        events: EventSet,
    ) {
        if events.contains(EventSet::ERROR) && conn.take().is_some() {
            let why = format!("connection failed: {:?}", stack.error(handle));
            self.fail(stack, now, Some(handle), why);
        }
    }

    fn poll(&mut self, stack: &Stack, now: Instant) -> Control {
        self.now = now;
        if let Some(why) = expired(self.deadline, &self.stop) {
            if self.error.is_none() {
                self.error = Some(why);
            }
            return Control::Stop;
        }
        if self.closing && stack.connection_count() == 0 {
            return Control::Stop;
        }
        Control::Continue
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.now + TICK)
    }
}

/// fourtuple's receiving side: discard on port 9, checking every byte.
struct Sink {
    base: Base,
    pattern: Arc<Pattern>,
    ready: Option<mpsc::Sender<()>>,
    listener: Option<fourtuple_stack::ListenerHandle>,
    conn: Option<ConnHandle>,
    r: Received,
    eof: bool,
    buf: Vec<u8>,
}

impl Sink {
    fn pump(&mut self, stack: &mut Stack, now: Instant, h: ConnHandle) {
        loop {
            match stack.recv(now, h, &mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    self.conn = None;
                    let _ = stack.close(now, h);
                    self.base.closing = true;
                    return;
                }
                Ok(n) => {
                    if self.r.intact && !self.pattern.check(self.r.got, &self.buf[..n]) {
                        self.r.intact = false;
                    }
                    self.r.got += n as u64;
                    if self.r.got >= self.base.bytes && self.r.last_byte.is_none() {
                        self.r.last_byte = Some(WallInstant::now());
                    }
                }
                Err(Error::WouldBlock) => return,
                Err(e) => {
                    self.conn = None;
                    self.base.fail(stack, now, Some(h), format!("recv: {e}"));
                    return;
                }
            }
        }
    }
}

impl App for Sink {
    fn start(&mut self, stack: &mut Stack, now: Instant) -> io::Result<()> {
        self.base.now = now;
        self.listener = Some(
            stack
                .listen(SocketAddr::new(IpAddr::V4(TUN_STACK), DISCARD_PORT), 0)
                .map_err(|e| io::Error::other(format!("listen: {e}")))?,
        );
        if let Some(r) = self.ready.take() {
            let _ = r.send(());
        }
        Ok(())
    }

    fn on_event(&mut self, stack: &mut Stack, now: Instant, event: Event) {
        match event {
            Event::Incoming { listener } => {
                while let Ok(Some(h)) = stack.accept(listener) {
                    if self.conn.is_some() || self.eof {
                        let _ = stack.abort(now, h);
                    } else {
                        self.conn = Some(h);
                        self.pump(stack, now, h);
                    }
                }
            }
            Event::Conn { handle, events } => {
                if self.conn != Some(handle) {
                    return;
                }
                self.pump(stack, now, handle);
                self.base
                    .fail_on_error(stack, now, &mut self.conn, handle, events);
            }
        }
    }

    fn poll(&mut self, stack: &mut Stack, now: Instant) -> Control {
        let c = self.base.poll(stack, now);
        if c == Control::Stop {
            if let Some(l) = self.listener.take() {
                let _ = stack.close_listener(now, l);
            }
        }
        c
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.base.poll_timeout()
    }
}

/// fourtuple's sending side: connects to the kernel, sends the pattern, half-closes and
/// waits for the kernel's close.
struct Source {
    base: Base,
    pattern: Arc<Pattern>,
    remote: SocketAddr,
    conn: Option<ConnHandle>,
    start: Option<WallInstant>,
    sent: u64,
    shut: bool,
    eof: bool,
}

impl Source {
    fn pump(&mut self, stack: &mut Stack, now: Instant, h: ConnHandle) {
        if self.start.is_none() {
            if !matches!(
                stack.state(h),
                Ok(TcpState::Established | TcpState::CloseWait)
            ) {
                return;
            }
            self.start = Some(WallInstant::now());
        }
        while self.sent < self.base.bytes {
            let n = (self.base.bytes - self.sent).min(CHUNK as u64) as usize;
            match stack.send(now, h, self.pattern.slice(self.sent, n)) {
                Ok(0) | Err(Error::WouldBlock) => break,
                Ok(k) => self.sent += k as u64,
                Err(e) => {
                    self.conn = None;
                    self.base.fail(stack, now, Some(h), format!("send: {e}"));
                    return;
                }
            }
        }
        if self.sent == self.base.bytes && !self.shut {
            self.shut = true;
            if let Err(e) = stack.shutdown_write(now, h) {
                self.conn = None;
                self.base
                    .fail(stack, now, Some(h), format!("shutdown: {e}"));
                return;
            }
        }
        let mut b = [0u8; 64];
        match stack.recv(now, h, &mut b) {
            Ok(0) => {
                self.eof = true;
                self.conn = None;
                let _ = stack.close(now, h);
                self.base.closing = true;
            }
            Ok(_) => {
                self.conn = None;
                self.base
                    .fail(stack, now, Some(h), "the kernel sent data".into());
            }
            Err(Error::WouldBlock) => {}
            Err(e) => {
                self.conn = None;
                self.base.fail(stack, now, Some(h), format!("recv: {e}"));
            }
        }
    }
}

impl App for Source {
    fn start(&mut self, stack: &mut Stack, now: Instant) -> io::Result<()> {
        self.base.now = now;
        let h = stack
            .connect(now, self.remote, None)
            .map_err(|e| io::Error::other(format!("connect: {e}")))?;
        self.conn = Some(h);
        Ok(())
    }

    fn on_event(&mut self, stack: &mut Stack, now: Instant, event: Event) {
        let Event::Conn { handle, events } = event else {
            return;
        };
        if self.conn != Some(handle) {
            return;
        }
        self.pump(stack, now, handle);
        self.base
            .fail_on_error(stack, now, &mut self.conn, handle, events);
    }

    fn poll(&mut self, stack: &mut Stack, now: Instant) -> Control {
        self.base.poll(stack, now)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.base.poll_timeout()
    }
}

/// Today's date and time in UTC, `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_slices_agree_with_the_period() {
        let p = Pattern::new();
        let a = p.slice(10, 100).to_vec();
        let b = p.slice(10 + PERIOD as u64, 100).to_vec();
        assert_eq!(a, b);
        assert!(p.check(PERIOD as u64 - 3, p.slice(PERIOD as u64 - 3, CHUNK)));
        assert!(!p.check(1, p.slice(2, 1000)));
    }

    #[test]
    fn setups_parse() {
        assert_eq!(
            parse_setups("1500, 65535,1500+offload").unwrap(),
            vec![
                TunSetup {
                    mtu: 1500,
                    offload: false
                },
                TunSetup {
                    mtu: 65535,
                    offload: false
                },
                TunSetup {
                    mtu: 1500,
                    offload: true
                },
            ]
        );
        for bad in ["", "15", "1500+gso", "big", "70000"] {
            assert!(parse_setups(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_failed_transfer_has_no_speed() {
        let t = combine(
            100,
            Ok(WallInstant::now()),
            Ok(Received {
                got: 50,
                intact: true,
                ..Received::default()
            }),
            None,
        );
        assert!(!t.ok());
        assert_eq!(t.gbit_per_s(), 0.0);
        assert!(t.error.unwrap().contains("50 of 100"));
    }

    #[test]
    fn ethtool_features_parse_without_the_fixed_ones() {
        let text = "Features for ftbv0:\n\
                    rx-checksumming: on\n\
                    tx-checksumming: off\n\
                    \ttx-checksum-ipv4: off [fixed]\n\
                    \ttx-checksum-ip-generic: off\n\
                    generic-receive-offload: off\n\
                    tx-udp-segmentation: off [requested on]\n";
        let f = parse_features(text);
        let names: Vec<(&str, bool)> = f.iter().map(|(n, o)| (n.as_str(), *o)).collect();
        assert_eq!(
            names,
            [
                ("rx-checksumming", true),
                ("tx-checksumming", false),
                ("tx-checksum-ip-generic", false),
                ("generic-receive-offload", false),
                ("tx-udp-segmentation", false),
            ]
        );
    }

    #[test]
    fn average_packets_leave_out_the_ethernet_header() {
        let w = WireCount {
            packets: 10,
            bytes: 10 * 1514,
        };
        assert_eq!(w.avg_ip_packet(), Some(1500.0));
        assert_eq!(WireCount::default().avg_ip_packet(), None);
    }

    #[test]
    fn utc_dates_look_right() {
        let s = utc_now();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.starts_with("20"), "{s}");
    }
}
