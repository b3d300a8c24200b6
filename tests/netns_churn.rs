//! Tier 3, fourtuple as the client: `fourtuple churn --target` over a TUN against the Linux
//! kernel's TCP (`fourtuple kernel-peer`), in every close order. TIME_WAIT must land on the
//! side that closed first: fourtuple's table (from churn's JSON), or the kernel's (checked
//! with `ss -tan state time-wait`). Each test runs in its own network namespace.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{churn_target, net_ready, run_limited, KernelPeer, Netns, BIN};

const COUNT: u64 = 1000;

/// Runs `churn --target` and returns its JSON report.
fn churn(ns: &Netns, port: u16, close: &str) -> Value {
    churn_with(ns, port, close, COUNT, 16)
}

/// `churn --target` with `count` lifecycles, `concurrency` in flight.
fn churn_with(ns: &Netns, port: u16, close: &str, count: u64, concurrency: usize) -> Value {
    let (count, concurrency) = (count.to_string(), concurrency.to_string());
    churn_target(
        ns,
        port,
        &[
            "--count",
            &count,
            "--concurrency",
            &concurrency,
            "--close",
            close,
        ],
    )
}

/// TIME_WAIT sockets of the kernel in `ns` on local port `port`.
fn kernel_time_wait(ns: &Netns, port: u16) -> usize {
    let out = ns.ok(&[
        "ss",
        "-Htan",
        "state",
        "time-wait",
        &format!("( sport = :{port} )"),
    ]);
    out.lines().filter(|l| !l.trim().is_empty()).count()
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

fn check(close: &str, port: u16, tw_fourtuple: u64, tw_kernel: usize) {
    let test = format!("churn_target_close_{close}");
    if !net_ready(&test, &["ss"]) {
        return;
    }
    let ns = Netns::new(&format!("churn-{close}"));
    let _peer = KernelPeer::start(&ns, port, &["--close", close, "--linger", "1s"]);
    let r = churn(&ns, port, close);
    assert_eq!(u(&r, "completed"), COUNT, "{r}");
    assert_eq!(u(&r, "failed"), 0, "{r}");
    assert_eq!(r["mode"], "target");
    assert_eq!(
        u(&r, "time_wait_client"),
        tw_fourtuple,
        "fourtuple's TIME_WAIT: {r}"
    );
    assert_eq!(
        u(&r, "time_wait_server") as usize,
        tw_kernel,
        "the kernel's TIME_WAIT as churn counted it: {r}"
    );
    assert_eq!(
        kernel_time_wait(&ns, port),
        tw_kernel,
        "the kernel's TIME_WAIT per ss"
    );
    println!(
        "churn --target --close {close}: {:.0} lifecycles/s",
        r["lifecycles_per_sec"].as_f64().unwrap_or(0.0)
    );
}

#[test]
fn churn_target_close_client_puts_time_wait_on_fourtuple() {
    check("client", 10_000, COUNT, 0);
}

#[test]
fn churn_target_close_server_puts_time_wait_on_the_kernel() {
    check("server", 10_100, 0, COUNT as usize);
}

#[test]
fn churn_target_close_abort_leaves_no_time_wait() {
    check("abort", 10_200, 0, 0);
}

#[test]
fn churn_target_close_goodbye_puts_time_wait_on_fourtuple() {
    check("goodbye", 10_300, COUNT, 0);
}

/// 1024 lifecycles start at once: the kernel answers with a burst of 1024 SYN-ACKs toward
/// the TUN, and the server's accept queue takes a burst of handshakes. Both once dropped
/// packets (a TUN queue of 500, an accept queue of 128), each loss a one-second
/// retransmission timeout; neither may drop any now.
#[test]
fn churn_target_at_1024_in_flight_drops_nothing_on_the_way() {
    let test = "churn_target_at_1024_in_flight_drops_nothing_on_the_way";
    if !net_ready(test, &["ss"]) {
        return;
    }
    let port = 10_500;
    let ns = Netns::new("churn-1024");
    let _peer = KernelPeer::start(&ns, port, &["--close", "client"]);
    // `ss -l` shows a listener's accept queue limit as its Send-Q.
    let listening = ns.ok(&["ss", "-Hltn", &format!("( sport = :{port} )")]);
    let backlog: u64 = listening
        .split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no listener line: {listening:?}"));
    assert!(backlog >= 1024, "kernel-peer's accept queue: {listening}");
    let count = 2048;
    let r = churn_with(&ns, port, "client", count, 1024);
    assert_eq!(u(&r, "completed"), count, "{r}");
    assert_eq!(u(&r, "failed"), 0, "{r}");
    assert_eq!(
        r["tun_dropped"]["toward_fourtuple"].as_u64(),
        Some(0),
        "packets the kernel dropped toward fourtuple: {r}"
    );
    assert_eq!(r["tun_dropped"]["from_fourtuple"].as_u64(), Some(0), "{r}");
}

#[test]
fn churn_target_needs_tun_and_addr() {
    let out = run_limited(
        {
            let mut c = Command::new(BIN);
            c.args(["churn", "--target", "192.0.2.1:7", "--count", "1"]);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    let out = run_limited(
        {
            let mut c = Command::new(BIN);
            c.args(["churn", "--in-memory", "--close", "goodbye", "--count", "1"]);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--target"));
}
