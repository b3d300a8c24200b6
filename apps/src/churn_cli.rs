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

/// Flags of `fourtuple churn`.
#[derive(Args, Debug)]
pub(crate) struct ChurnArgs {
    /// Run client and server as two stacks in this process, joined back to back on a
    /// simulated clock (no device, no privileges). Required for now: churn against a real
    /// target over TUN comes in a later issue.
    #[arg(long)]
    pub in_memory: bool,

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
    /// server) or `abort` (the client sends RST after the reply: no TIME_WAIT).
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

    /// Number of server ports (10000, 10001, ...) the client spreads connections over,
    /// round-robin; each multiplies the 4-tuples available.
    #[arg(long, value_name = "K", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub server_ports: u16,

    /// Maximum segment lifetime of both stacks; TIME_WAIT lasts 2*MSL.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration,
          default_value = "30s")]
    pub msl: Duration,

    /// One-way latency of the simulated wire (in-memory only), e.g. 100us; 0 is allowed.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "50us")]
    pub latency: Duration,

    /// Simulated time a lifecycle may take before it counts as failed
    /// (lifecycle-timeout).
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
            server_ports: self.server_ports,
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
    if !a.in_memory {
        eprintln!(
            "fourtuple churn: pass --in-memory; churn against a real target \
             (--target over TUN) is not implemented yet"
        );
        return EXIT_USAGE;
    }
    let cfg = match a.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fourtuple churn: {e}");
            return EXIT_USAGE;
        }
    };
    let live = std::io::stderr().is_terminal();
    let report = churn::run_in_memory_with_progress(&cfg, Duration::from_millis(250), |p| {
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
    if a.json {
        println!("{}", to_json(&report));
    } else {
        print!("{}", summary(&report));
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
fn to_json(r: &ChurnReport) -> Value {
    let c = &r.config;
    let failures: Map<String, Value> = r
        .failures
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    json!({
        "mode": "in-memory",
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
fn summary(r: &ChurnReport) -> String {
    use std::fmt::Write as _;
    let c = &r.config;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "churn in memory: close={} policy={} concurrency={} port-range={}-{} server-ports={} \
         msl={:?} latency={:?}",
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
