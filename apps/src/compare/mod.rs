//! `fourtuple compare`: the port-reuse scenario matrix, measured side by side.
//!
//! This module owns the matrix (which scenario runs in which namespace with which
//! sysctls) and the report. Each scenario variant gets a fresh private namespace that is
//! deleted afterwards, so TIME_WAIT state never leaks from one measurement into the next.
//! Kernel outcomes come from calling the kernel on every run (see [`kernel`]); nothing
//! here writes an outcome down in advance.

pub mod fourtuple;
pub mod kernel;
pub mod netns;
pub mod report;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fourtuple_stack::ReusePolicy;
use kernel::{ClientClose, ServerMode};
use netns::Netns;

/// Scenario outcomes, in DESIGN.md's fixed vocabulary (plus `error` for the unexpected).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Worked.
    Ok,
    /// EADDRINUSE or fourtuple's AddrInUse.
    AddrInUse,
    /// EADDRNOTAVAIL or no ephemeral port.
    AddrNotAvailable,
    /// Connection refused (RST to SYN).
    Refused,
    /// Connection reset.
    Reset,
    /// No answer in time.
    Timeout,
    /// A SYN reopened a 4-tuple in TIME_WAIT.
    Reopened,
    /// A SYN was treated as an old duplicate and answered with the TIME_WAIT ACK.
    RejectedOldDuplicate,
    /// Anything else (the detail says what).
    Error,
}

impl Outcome {
    /// The vocabulary name.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::AddrInUse => "addr-in-use",
            Outcome::AddrNotAvailable => "addr-not-available",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::Reopened => "reopened",
            Outcome::RejectedOldDuplicate => "rejected-old-duplicate",
            Outcome::Error => "error",
        }
    }
}

/// One point of a churn time series.
#[derive(Copy, Clone, Debug, Default)]
pub struct Sample {
    /// Milliseconds since the churn started.
    pub t_ms: u64,
    /// Lifecycles completed so far.
    pub completed: u64,
    /// Failures so far.
    pub failures: u64,
    /// TIME_WAIT entries in the namespace (both sides).
    pub time_wait: usize,
}

/// One stack's result for one scenario variant.
#[derive(Clone, Debug)]
pub struct ScenarioResult {
    /// "kernel", or "fourtuple/POLICY".
    pub stack: String,
    /// Which variant ("plain", "reuseaddr", ...).
    pub variant: String,
    /// Outcome.
    pub outcome: Outcome,
    /// errno name when the kernel gave one.
    pub errno: Option<String>,
    /// Human detail.
    pub detail: String,
    /// Lifecycles completed.
    pub completed: u64,
    /// Failures counted (churn scenarios).
    pub failures: u64,
    /// Lifecycles per second (churn scenarios).
    pub conns_per_sec: Option<f64>,
    /// Milliseconds until the first failure (churn scenarios).
    pub time_to_first_failure_ms: Option<f64>,
    /// TIME_WAIT entries held by the client side at the end.
    pub time_wait_client: usize,
    /// TIME_WAIT entries held by the server side at the end.
    pub time_wait_server: usize,
    /// Time series (churn scenarios), every 100 ms.
    pub series: Vec<Sample>,
}

impl ScenarioResult {
    /// An empty result, outcome `error` until something is measured.
    pub fn new(stack: &str, variant: &str) -> ScenarioResult {
        ScenarioResult {
            stack: stack.to_string(),
            variant: variant.to_string(),
            outcome: Outcome::Error,
            errno: None,
            detail: String::new(),
            completed: 0,
            failures: 0,
            conns_per_sec: None,
            time_to_first_failure_ms: None,
            time_wait_client: 0,
            time_wait_server: 0,
            series: Vec::new(),
        }
    }
}

/// All results of one scenario.
#[derive(Clone, Debug)]
pub struct ScenarioReport {
    /// "S1" .. "S9".
    pub id: &'static str,
    /// Its name.
    pub name: &'static str,
    /// One per stack and variant.
    pub results: Vec<ScenarioResult>,
}

/// The whole comparison.
#[derive(Clone, Debug, Default)]
pub struct CompareReport {
    /// Sysctls in force in the namespaces (after `--sysctl`).
    pub sysctls: Vec<(String, String)>,
    /// Scenarios in order.
    pub scenarios: Vec<ScenarioReport>,
    /// Notes on what was not measured and why.
    pub notes: Vec<String>,
    /// Wall-clock seconds the comparison took.
    pub elapsed_sec: f64,
}

/// Options of a comparison run.
#[derive(Clone, Debug, Default)]
pub struct CompareOptions {
    /// Short churn phases (2 s instead of 10 s).
    pub quick: bool,
    /// Sysctls to set in every namespace, as (key, value).
    pub sysctls: Vec<(String, String)>,
}

/// The sysctls reported with every comparison.
pub const REPORTED_SYSCTLS: [&str; 7] = [
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_tw_reuse_delay",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_rfc1337",
    "net.ipv4.tcp_fin_timeout",
];

/// The narrowed ephemeral range for the churn scenarios, so exhaustion is reached within
/// the time bound.
pub const CHURN_PORT_RANGE: (u16, u16) = (40000, 40999);

/// A fresh namespace with the sysctls applied; for kernel-only scenarios also the
/// client and server addresses on `lo` (fourtuple scenarios get theirs on the TUN).
fn scenario_ns(
    opts: &CompareOptions,
    extra: &[(&str, String)],
    kernel_addrs: bool,
) -> io::Result<Netns> {
    let ns = Netns::create("ftcmp")?;
    if kernel_addrs {
        for cidr in ["192.0.2.1/32", "192.0.2.2/32", "198.51.100.2/32"] {
            ns.add_loopback_address(cidr)?;
        }
    }
    let mut all: Vec<(String, String)> = opts.sysctls.clone();
    all.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    ns.run(move || -> io::Result<()> {
        for (k, v) in &all {
            kernel::write_sysctl(k, v)?;
        }
        Ok(())
    })??;
    Ok(ns)
}

fn run_in_ns(
    opts: &CompareOptions,
    extra: &[(&str, String)],
    kernel_addrs: bool,
    f: impl FnOnce() -> ScenarioResult + Send + 'static,
) -> io::Result<ScenarioResult> {
    let ns = scenario_ns(opts, extra, kernel_addrs)?;
    ns.run(f)
}

/// Runs the matrix. Stops early (with what it has) when `stop` is set.
pub fn run(opts: &CompareOptions, stop: &Arc<AtomicBool>) -> io::Result<CompareReport> {
    let started = std::time::Instant::now();
    let mut report = CompareReport::default();
    {
        let ns = scenario_ns(opts, &[], true)?;
        report.sysctls = ns.run(|| {
            REPORTED_SYSCTLS
                .iter()
                .filter_map(|k| kernel::read_sysctl(k).map(|v| (k.to_string(), v)))
                .collect()
        })?;
    }
    let churn_time = if opts.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    };
    let narrow = (
        "net.ipv4.ip_local_port_range",
        format!("{} {}", CHURN_PORT_RANGE.0, CHURN_PORT_RANGE.1),
    );

    type Job = (
        &'static str,
        &'static str,
        Vec<(&'static str, String)>,
        Box<dyn FnOnce() -> ScenarioResult + Send>,
    );
    let mut jobs: Vec<Job> = Vec::new();
    let sc = |id, name| (id, name);
    let reuses = [
        kernel::Reuse::Neither,
        kernel::Reuse::Both,
        kernel::Reuse::NewOnly,
    ];
    for reuse in reuses {
        let (id, name) = sc("S1", "reconnect-same-tuple");
        jobs.push((id, name, vec![], Box::new(move || kernel::s1(reuse))));
    }
    for other_addr in [false, true] {
        for reuse in reuses {
            let (id, name) = sc("S2", "same-port-other-remote");
            jobs.push((
                id,
                name,
                vec![],
                Box::new(move || kernel::s2(reuse, other_addr)),
            ));
        }
    }
    let churn = |ports: Vec<u16>, server, client, goodbye| kernel::Churn {
        ports,
        server,
        client,
        duration: churn_time,
        goodbye,
        stop: stop.clone(),
    };
    let c3 = churn(
        vec![8080],
        ServerMode::CloseAfterClient,
        ClientClose::First,
        false,
    );
    jobs.push((
        "S3",
        "ephemeral-churn-one-destination",
        vec![narrow.clone()],
        Box::new(move || kernel::churn("client-closes", &c3)),
    ));
    let c4 = churn(
        (8080..8084).collect(),
        ServerMode::CloseAfterClient,
        ClientClose::First,
        false,
    );
    jobs.push((
        "S4",
        "ephemeral-churn-many-destinations",
        vec![narrow.clone()],
        Box::new(move || kernel::churn("4-server-ports", &c4)),
    ));
    jobs.push((
        "S5",
        "inbound-reopen",
        vec![],
        Box::new(kernel::s5_greater_isn),
    ));
    for reuse in [false, true] {
        jobs.push((
            "S6",
            "listener-restart",
            vec![],
            Box::new(move || kernel::s6(reuse)),
        ));
    }
    for server_aborts in [false, true] {
        jobs.push((
            "S7",
            "abortive-close",
            vec![],
            Box::new(move || kernel::s7(server_aborts)),
        ));
    }
    let c8 = churn(
        vec![8080],
        ServerMode::Goodbye(Duration::from_millis(200)),
        ClientClose::First,
        true,
    );
    jobs.push((
        "S8",
        "goodbye-protocol",
        vec![narrow.clone()],
        Box::new(move || kernel::churn("client-closes-on-goodbye", &c8)),
    ));
    let c9 = churn(
        vec![8080],
        ServerMode::CloseFirst,
        ClientClose::AfterServer,
        false,
    );
    jobs.push((
        "S9",
        "server-active-close-churn",
        vec![narrow],
        Box::new(move || kernel::churn("server-closes", &c9)),
    ));

    let mut n_kernel_jobs = jobs.len();
    // fourtuple under each policy, over TUN, with the kernel of the namespace as its peer.
    for policy in ReusePolicy::ALL {
        let p = policy;
        jobs.push((
            "S1",
            "reconnect-same-tuple",
            vec![],
            Box::new(move || fourtuple::s1(p)),
        ));
        for other_addr in [false, true] {
            jobs.push((
                "S2",
                "same-port-other-remote",
                vec![],
                Box::new(move || fourtuple::s2(p, other_addr)),
            ));
        }
        let churn_jobs: [(&'static str, &'static str, &'static str, kernel::Churn); 4] = [
            (
                "S3",
                "ephemeral-churn-one-destination",
                "client-closes",
                churn(
                    vec![8080],
                    ServerMode::CloseAfterClient,
                    ClientClose::First,
                    false,
                ),
            ),
            (
                "S4",
                "ephemeral-churn-many-destinations",
                "4-server-ports",
                churn(
                    (8080..8084).collect(),
                    ServerMode::CloseAfterClient,
                    ClientClose::First,
                    false,
                ),
            ),
            (
                "S8",
                "goodbye-protocol",
                "client-closes-on-goodbye",
                churn(
                    vec![8080],
                    ServerMode::Goodbye(Duration::from_millis(200)),
                    ClientClose::First,
                    true,
                ),
            ),
            (
                "S9",
                "server-active-close-churn",
                "server-closes",
                churn(
                    vec![8080],
                    ServerMode::CloseFirst,
                    ClientClose::AfterServer,
                    false,
                ),
            ),
        ];
        for (id, name, variant, c) in churn_jobs {
            jobs.push((
                id,
                name,
                vec![],
                Box::new(move || fourtuple::churn(p, variant, &c, CHURN_PORT_RANGE)),
            ));
        }
        jobs.push((
            "S5",
            "inbound-reopen",
            vec![],
            Box::new(move || fourtuple::s5_server(p)),
        ));
        jobs.push((
            "S6",
            "listener-restart",
            vec![],
            Box::new(move || fourtuple::s6(p)),
        ));
        jobs.push((
            "S7",
            "abortive-close",
            vec![],
            Box::new(move || fourtuple::s7(p)),
        ));
    }
    for lower in [true, false] {
        jobs.push((
            "S5",
            "inbound-reopen",
            vec![],
            Box::new(move || fourtuple::s5_kernel_answer(lower)),
        ));
    }

    for (id, name, extra, f) in jobs {
        if stop.load(Ordering::SeqCst) {
            report
                .notes
                .push("interrupted: the matrix is incomplete".to_string());
            break;
        }
        // Kernel-only jobs are pushed first; the rest run fourtuple on a TUN.
        let kernel_only = n_kernel_jobs > 0;
        n_kernel_jobs = n_kernel_jobs.saturating_sub(1);
        let r = run_in_ns(opts, &extra, kernel_only, f)?;
        match report.scenarios.iter_mut().find(|s| s.id == id) {
            Some(s) => s.results.push(r),
            None => report.scenarios.push(ScenarioReport {
                id,
                name,
                results: vec![r],
            }),
        }
    }
    report.notes.push(
        "fourtuple rows: the stack under each policy over a TUN, the namespace's kernel as \
         its peer (192.0.2.1 and 198.51.100.1). In S5 and S6 fourtuple is the server, so its \
         TIME_WAIT count is under 'TW server'. The S5 rows marked 'fourtuple client' measure \
         the kernel's answer to a SYN whose ISN fourtuple chose."
            .to_string(),
    );
    report.elapsed_sec = started.elapsed().as_secs_f64();
    Ok(report)
}
