//! Tier 3: `fourtuple churn --target ... --vs-kernel`, fourtuple's client over a TUN and
//! then the kernel's own client, against one kernel server (`fourtuple kernel-peer`) in a
//! private network namespace, bounded in count and time. Checks that both runs complete,
//! that TIME_WAIT lands on each client, and that the ratio is the ratio of the two rates.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{churn_target, net_ready, run_limited, KernelPeer, Netns, BIN};

const COUNT: u64 = 1000;
const PORT: u16 = 10_400;

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn churn_vs_kernel_runs_both_clients_and_prints_the_ratio() {
    if !net_ready(
        "churn_vs_kernel_runs_both_clients_and_prints_the_ratio",
        &["ss"],
    ) {
        return;
    }
    let ns = Netns::new("vs-kernel");
    let _peer = KernelPeer::start(&ns, PORT, &["--close", "client"]);
    let count = COUNT.to_string();
    let r = churn_target(
        &ns,
        PORT,
        &["--count", &count, "--concurrency", "16", "--vs-kernel"],
    );
    assert_eq!(r["mode"], "vs-kernel", "{r}");
    assert_eq!(
        r["busy_poll_us"], 0,
        "busy polling is off unless asked for: {r}"
    );
    let (ours, kernel) = (&r["fourtuple"], &r["kernel"]);
    assert_eq!(ours["mode"], "target", "{r}");
    assert_eq!(kernel["mode"], "kernel-client", "{r}");
    for side in [ours, kernel] {
        assert_eq!(u(side, "completed"), COUNT, "{r}");
        assert_eq!(u(side, "failed"), 0, "{r}");
        // The client closes first: TIME_WAIT on the client, none on the server.
        assert_eq!(u(side, "time_wait_client"), COUNT, "{r}");
        assert_eq!(u(side, "time_wait_server"), 0, "{r}");
    }
    let f = r["fourtuple_lifecycles_per_sec"].as_f64().expect("rate");
    let k = r["kernel_lifecycles_per_sec"].as_f64().expect("rate");
    let ratio = r["ratio"].as_f64().expect("ratio");
    assert!(f > 0.0 && k > 0.0, "{r}");
    assert!((ratio - f / k).abs() < 1e-9 * ratio.max(1.0), "{r}");
    println!("churn --vs-kernel: fourtuple {f:.0}/s, kernel {k:.0}/s, ratio {ratio:.2}");
}

/// `--busy-poll` reaches both clients: both complete, and the JSON says it was on.
#[test]
fn churn_vs_kernel_with_busy_polling() {
    if !net_ready("churn_vs_kernel_with_busy_polling", &["ss"]) {
        return;
    }
    let ns = Netns::new("vs-kernel-spin");
    let port = PORT + 1;
    let _peer = KernelPeer::start(&ns, port, &["--close", "client"]);
    let r = churn_target(
        &ns,
        port,
        &[
            "--count",
            "300",
            "--concurrency",
            "1",
            "--busy-poll",
            "50us",
            "--vs-kernel",
        ],
    );
    assert_eq!(r["busy_poll_us"], 50, "{r}");
    for side in [&r["fourtuple"], &r["kernel"]] {
        assert_eq!(u(side, "completed"), 300, "{r}");
        assert_eq!(u(side, "failed"), 0, "{r}");
    }
}

#[test]
fn vs_kernel_needs_a_target() {
    let out = run_limited(
        {
            let mut c = Command::new(BIN);
            c.args(["churn", "--in-memory", "--vs-kernel", "--count", "1"]);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--target"));
}
