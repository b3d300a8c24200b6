//! The `churn` command: flags, and printing a [`ChurnReport`].
//!
//! This module owns the thin layer between the command line and [`crate::churn`]: turning
//! flags into a [`ChurnConfig`], the live progress line (stderr, only on a terminal), the
//! human summary and the `--json` object. It must never run the workload itself or compute
//! results; with `--json` it must print exactly one JSON object on stdout and nothing else
//! there.

use core::time::Duration;
use std::io::{IsTerminal, Write};

use clap::Args;
use fourtuple_stack::ReusePolicy;
use serde_json::{json, Map, Value};

use crate::args::{
    parse_duration, parse_nonzero_u64, parse_policy, parse_port_range, parse_positive_duration,
};
use crate::churn::{self, ChurnConfig, ChurnReport, CloseMode, StopAt};
use crate::{EXIT_FAILURES, EXIT_OK, EXIT_USAGE};

const DEFAULT_COUNT: u64 = 10_000;
/// How often the live progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Flags of `fourtuple churn`.
#[derive(Args, Debug)]
pub(crate) struct ChurnArgs {
    /// Run client and server as two stacks in this process, joined back to back on a
    /// simulated clock (no device, no privileges).
    #[arg(long, conflicts_with = "target")]
    pub in_memory: bool,

    /// Churn against a real server at IP:PORT (e.g. the kernel, through the TUN): fourtuple
    /// is the client; needs --tun and --addr. The server must speak the churn protocol
    /// (`fourtuple kernel-peer` does).
    #[arg(long, value_name = "IP:PORT", requires_all = ["tun", "addr"])]
    pub target: Option<std::net::SocketAddr>,

    /// With --target: create this TUN and run the client stack behind it (CAP_NET_ADMIN).
    #[arg(long, value_name = "NAME", requires = "target")]
    pub tun: Option<String>,

    /// With --target: the client stack's IPv4 address and prefix, e.g. 192.0.2.2/24.
    #[arg(long, value_name = "IP/PREFIX", value_parser = crate::up::parse_cidr,
          requires = "target")]
    pub addr: Option<(std::net::Ipv4Addr, u8)>,

    /// With --target: the kernel's address on the TUN, e.g. 192.0.2.1.
    #[arg(long, value_name = "IP", requires = "target")]
    pub host_addr: Option<std::net::Ipv4Addr>,

    /// With --target: after fourtuple's run, run the same churn with the host kernel's own
    /// TCP client (non-blocking sockets in this process and namespace) against the same
    /// server, then print both and the ratio of lifecycles/s (fourtuple / kernel).
    #[arg(long, requires = "target")]
    pub vs_kernel: bool,

    /// With --target: before sleeping, poll for up to this long without sleeping, e.g.
    /// 50us (0: never). With --vs-kernel the kernel's client polls its sockets the same
    /// way, so both runs get the same treatment. Cuts wake-up latency when few lifecycles
    /// are in flight, at the cost of that much CPU after each burst of activity.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0",
          requires = "target")]
    pub busy_poll: Duration,

    /// Number of connection lifecycles to run [default: 10000].
    #[arg(long, value_name = "N", value_parser = parse_nonzero_u64, conflicts_with = "duration")]
    pub count: Option<u64>,

    /// Start lifecycles for this long (wall clock), e.g. 5s or 500ms; those in flight then
    /// finish.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,

    /// Lifecycles kept in flight at once.
    #[arg(long, value_name = "C", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Who closes first: `client` (TIME_WAIT on the client), `server` (TIME_WAIT on the
    /// server), `abort` (the client sends RST after the reply: no TIME_WAIT) or, with
    /// --target, `goodbye` (the server sends an application goodbye, the client closes
    /// first, the server resets a client that lingers).
    #[arg(long, value_enum, default_value_t = CloseMode::Client)]
    pub close: CloseMode,

    /// Port-reuse policy of both stacks: exact-tuple, local-port or timestamp-reuse.
    #[arg(long, value_name = "P", value_parser = parse_policy,
          default_value_t = ReusePolicy::ExactTuple)]
    pub policy: ReusePolicy,

    /// The client's ephemeral port range, inclusive, like ip_local_port_range
    /// [default: 32768-60999].
    #[arg(long, value_name = "LO-HI", value_parser = parse_port_range)]
    pub port_range: Option<(u16, u16)>,

    /// Number of server ports the client spreads connections over, round-robin; each
    /// multiplies the 4-tuples available. In memory: 10000, 10001, ... [default: 16];
    /// with --target: the target's port and the next ones [default: 1].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u16).range(1..))]
    pub server_ports: Option<u16>,

    /// Maximum segment lifetime of both stacks; TIME_WAIT lasts 2*MSL.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration,
          default_value = "30s")]
    pub msl: Duration,

    /// One-way latency of the simulated wire (in-memory only), e.g. 100us; 0 is allowed.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "50us")]
    pub latency: Duration,

    /// Time a lifecycle may take before it counts as failed (lifecycle-timeout): simulated
    /// in memory, wall clock against a target.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration,
          default_value = "30s")]
    pub lifecycle_timeout: Duration,

    /// Print exactly one JSON object on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,
}

impl ChurnArgs {
    /// The library configuration these flags describe.
    pub(crate) fn to_config(&self) -> Result<ChurnConfig, String> {
        let d = ChurnConfig::default();
        let cfg = ChurnConfig {
            stop: match (self.count, self.duration) {
                (_, Some(dur)) => StopAt::WallClock(dur),
                (Some(n), None) => StopAt::Count(n),
                (None, None) => StopAt::Count(DEFAULT_COUNT),
            },
            concurrency: self.concurrency as usize,
            close: self.close,
            policy: self.policy,
            port_range: self.port_range.unwrap_or(d.port_range),
            server_ports: self
                .server_ports
                .unwrap_or(if self.target.is_some() { 1 } else { 16 }),
            msl: self.msl,
            latency: self.latency,
            lifecycle_timeout: self.lifecycle_timeout,
            ..d
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Runs `fourtuple churn` and returns the exit code.
pub(crate) fn run(a: ChurnArgs) -> i32 {
    if !a.in_memory && a.target.is_none() {
        eprintln!("fourtuple churn: pass --in-memory, or --target IP:PORT --tun NAME --addr IP/N");
        return EXIT_USAGE;
    }
    let cfg = match a.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fourtuple churn: {e}");
            return EXIT_USAGE;
        }
    };
    if let Some(target) = a.target {
        return run_target(&a, cfg, target);
    }
    if cfg.close == CloseMode::Goodbye {
        eprintln!("fourtuple churn: --close goodbye needs a real server: use --target");
        return EXIT_USAGE;
    }
    let live = std::io::stderr().is_terminal();
    let report = churn::run_in_memory_with_progress(&cfg, PROGRESS_EVERY, |p| {
        if live {
            let rate = p.completed as f64 / p.elapsed.as_secs_f64().max(1e-9);
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[Kchurn: {} started, {} completed, {} failed, {:.0}/s, \
                 simulated {:.3} s, TIME_WAIT client {} server {}",
                p.started,
                p.completed,
                p.failed,
                rate,
                p.simulated.as_secs_f64(),
                p.time_wait_client,
                p.time_wait_server
            );
            let _ = err.flush();
        }
    });
    if live {
        eprint!("\r\x1b[K");
    }
    finish(&report, a.json, "in-memory")
}

/// Runs `churn --target` over a TUN.
fn run_target(a: &ChurnArgs, cfg: ChurnConfig, target: std::net::SocketAddr) -> i32 {
    let (Some(tun), Some(addr)) = (a.tun.clone(), a.addr) else {
        eprintln!("fourtuple churn: --target needs --tun NAME and --addr IP/PREFIX");
        return EXIT_USAGE;
    };
    let tc = crate::churn_target::TargetConfig {
        churn: cfg,
        target,
        tun,
        addr,
        host_addr: a.host_addr,
        busy_poll: a.busy_poll,
    };
    if a.vs_kernel {
        return run_vs_kernel(&tc, a.json);
    }
    match crate::churn_target::run_target(&tc) {
        Ok(report) => finish(&report, a.json, "target"),
        Err(e) => {
            eprintln!("fourtuple churn: {e}");
            EXIT_FAILURES
        }
    }
}

/// A progress callback that redraws one line on stderr when it is a terminal.
fn progress_line(who: &'static str) -> impl FnMut(&churn::Progress) {
    let live = std::io::stderr().is_terminal();
    move |p| {
        if live {
            let rate = p.completed as f64 / p.elapsed.as_secs_f64().max(1e-9);
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[Kchurn {who}: {} started, {} completed, {} failed, {:.0}/s, {:.1} s",
                p.started,
                p.completed,
                p.failed,
                rate,
                p.elapsed.as_secs_f64()
            );
            let _ = err.flush();
        }
    }
}

/// `churn --target ... --vs-kernel`: fourtuple's client over the TUN, then the kernel's
/// client, against the same server, one after the other; prints both and the ratio.
fn run_vs_kernel(tc: &crate::churn_target::TargetConfig, json_out: bool) -> i32 {
    let live = std::io::stderr().is_terminal();
    // The kernel's run happens while the TUN (and so the kernel's address on it) exists.
    let run = crate::churn_target::run_target_then(
        tc,
        PROGRESS_EVERY,
        progress_line("fourtuple"),
        || {
            if live {
                eprint!("\r\x1b[K");
            }
            crate::churn_target::run_kernel_client(
                &tc.churn,
                tc.target,
                tc.busy_poll,
                PROGRESS_EVERY,
                progress_line("kernel"),
            )
        },
    );
    if live {
        eprint!("\r\x1b[K");
    }
    let (ours, kernel) = match run {
        Ok((ours, Ok(kernel))) => (ours, kernel),
        Ok((_, Err(e))) | Err(e) => {
            eprintln!("fourtuple churn: {e}");
            return EXIT_FAILURES;
        }
    };
    let (f, k) = (ours.lifecycles_per_sec(), kernel.lifecycles_per_sec());
    let ratio = if k > 0.0 { f / k } else { 0.0 };
    if json_out {
        let v = json!({
            "mode": "vs-kernel",
            "fourtuple": to_json(&ours, "target"),
            "kernel": to_json(&kernel, "kernel-client"),
            "fourtuple_lifecycles_per_sec": f,
            "kernel_lifecycles_per_sec": k,
            "ratio": ratio,
            "busy_poll_us": tc.busy_poll.as_micros() as u64,
        });
        println!("{v}");
    } else {
        print!(
            "{}",
            summary(&ours, "target, fourtuple client over the TUN")
        );
        print!("{}", summary(&kernel, "target, the kernel's client"));
        let spin = if tc.busy_poll.is_zero() {
            String::new()
        } else {
            format!(", both busy-polling {:?}", tc.busy_poll)
        };
        println!(
            "ratio fourtuple/kernel: {ratio:.2} ({f:.0} vs {k:.0} lifecycles/s, same server{spin})"
        );
    }
    for (who, r) in [("fourtuple", &ours), ("kernel", &kernel)] {
        if let Some(why) = &r.stalled {
            eprintln!("fourtuple churn: the {who} run stopped early: {why}");
        }
    }
    if ours.is_success() && kernel.is_success() {
        EXIT_OK
    } else {
        EXIT_FAILURES
    }
}

/// Prints the report and returns the exit code.
fn finish(report: &ChurnReport, json_out: bool, mode: &str) -> i32 {
    if json_out {
        println!("{}", to_json(report, mode));
    } else {
        print!("{}", summary(report, mode));
    }
    if let Some(why) = &report.stalled {
        eprintln!("fourtuple churn: stopped early: {why}");
    }
    if report.is_success() {
        EXIT_OK
    } else {
        EXIT_FAILURES
    }
}

fn nonzero(counters: &[(&'static str, u64)]) -> Map<String, Value> {
    counters
        .iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect()
}

/// The `--json` object.
fn to_json(r: &ChurnReport, mode: &str) -> Value {
    let c = &r.config;
    let failures: Map<String, Value> = r
        .failures
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    json!({
        "mode": mode,
        "started": r.started,
        "completed": r.completed,
        "failed": r.failed,
        "failures": failures,
        "stalled": r.stalled,
        "lifecycles_per_sec": r.lifecycles_per_sec(),
        "elapsed_sec": r.elapsed.as_secs_f64(),
        "simulated_sec": r.simulated.as_secs_f64(),
        "time_wait_client": r.time_wait_client,
        "time_wait_server": r.time_wait_server,
        "packets": {
            "client_to_server": r.packets_client_to_server,
            "server_to_client": r.packets_server_to_client,
        },
        "unmatched_server_connections": r.unmatched_server_connections,
        "tun_dropped": r.tun_dropped.map(|d| json!({
            "toward_fourtuple": d.toward_stack,
            "from_fourtuple": d.from_stack,
        })),
        "concurrency": c.concurrency,
        "policy": c.policy.name(),
        "close": c.close.name(),
        "port_range": [c.port_range.0, c.port_range.1],
        "server_ports": c.server_ports,
        "msl_sec": c.msl.as_secs_f64(),
        "latency_us": c.latency.as_micros() as u64,
        "counters": {
            "client": nonzero(&r.client_counters),
            "server": nonzero(&r.server_counters),
        },
    })
}

/// The human-readable summary.
fn summary(r: &ChurnReport, mode: &str) -> String {
    use std::fmt::Write as _;
    let c = &r.config;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "churn {}: close={} policy={} concurrency={} port-range={}-{} server-ports={} \
         msl={:?} latency={:?}",
        mode,
        c.close.name(),
        c.policy.name(),
        c.concurrency,
        c.port_range.0,
        c.port_range.1,
        c.server_ports,
        c.msl,
        c.latency
    );
    let _ = writeln!(s, "  completed        {}", r.completed);
    let _ = writeln!(s, "  failed           {}", r.failed);
    for (kind, n) in &r.failures {
        let _ = writeln!(s, "    {kind:<22} {n}");
    }
    if let Some(why) = &r.stalled {
        let _ = writeln!(s, "  STOPPED EARLY    {why}");
    }
    let _ = writeln!(
        s,
        "  wall clock       {:.3} s ({:.0} lifecycles/s)",
        r.elapsed.as_secs_f64(),
        r.lifecycles_per_sec()
    );
    let _ = writeln!(s, "  simulated time   {:.6} s", r.simulated.as_secs_f64());
    let _ = writeln!(
        s,
        "  TIME_WAIT        client {}, server {}",
        r.time_wait_client, r.time_wait_server
    );
    let _ = writeln!(
        s,
        "  packets          client->server {}, server->client {}",
        r.packets_client_to_server, r.packets_server_to_client
    );
    if let Some(d) = r.tun_dropped {
        let _ = writeln!(
            s,
            "  TUN drops        {} toward fourtuple, {} from it (the kernel's counts)",
            d.toward_stack, d.from_stack
        );
    }
    if r.unmatched_server_connections > 0 {
        let _ = writeln!(
            s,
            "  unmatched        {} server connections no lifecycle opened",
            r.unmatched_server_connections
        );
    }
    for (side, counters) in [
        ("client", &r.client_counters),
        ("server", &r.server_counters),
    ] {
        let shown: Vec<String> = counters
            .iter()
            .filter(|(k, v)| *v != 0 && !matches!(*k, "packets_in" | "packets_out"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(s, "  {side} counters  {}", shown.join(" "));
    }
    s
}
