//! The `fourtuple churn` command line, end to end: runs the built binary and checks its
//! `--json` object and exit codes. TIME_WAIT must land exactly on the side that closed
//! first, once per lifecycle.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fourtuple");

/// Runs the binary with `args`, failing the test if it takes longer than `limit`.
fn run(args: &[&str], limit: Duration) -> Output {
    let start = Instant::now();
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("the fourtuple binary runs");
    assert!(
        start.elapsed() < limit,
        "fourtuple {args:?} took {:?} (limit {limit:?})",
        start.elapsed()
    );
    out
}

/// The single JSON object on stdout.
fn json_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one JSON line on stdout, got {stdout:?}"
    );
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("bad JSON {:?}: {e}", lines[0]))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {v}"))
}

fn churn_2000(close: &str) -> Value {
    let out = run(
        &[
            "churn",
            "--in-memory",
            "--count",
            "2000",
            "--close",
            close,
            "--json",
        ],
        Duration::from_secs(120),
    );
    let v = json_of(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(u(&v, "completed"), 2000, "{v}");
    assert_eq!(u(&v, "failed"), 0, "{v}");
    assert_eq!(v["failures"], serde_json::json!({}), "{v}");
    assert_eq!(v["close"], close, "{v}");
    assert_eq!(v["policy"], "exact-tuple", "{v}");
    for key in [
        "lifecycles_per_sec",
        "elapsed_sec",
        "simulated_sec",
        "concurrency",
    ] {
        assert!(v[key].is_number(), "{key} missing in {v}");
    }
    v
}

#[test]
fn client_close_puts_time_wait_on_the_client() {
    let v = churn_2000("client");
    assert_eq!(u(&v, "time_wait_client"), 2000, "{v}");
    assert_eq!(u(&v, "time_wait_server"), 0, "{v}");
}

#[test]
fn server_close_puts_time_wait_on_the_server() {
    let v = churn_2000("server");
    assert_eq!(u(&v, "time_wait_client"), 0, "{v}");
    assert_eq!(u(&v, "time_wait_server"), 2000, "{v}");
}

#[test]
fn abort_leaves_no_time_wait() {
    let v = churn_2000("abort");
    assert_eq!(u(&v, "time_wait_client"), 0, "{v}");
    assert_eq!(u(&v, "time_wait_server"), 0, "{v}");
}

#[test]
fn local_port_policy_with_a_tiny_range_reports_failures_instead_of_hanging() {
    let out = run(
        &[
            "churn",
            "--in-memory",
            "--policy",
            "local-port",
            "--port-range",
            "40000-40009",
            "--server-ports",
            "1",
            "--count",
            "50",
            "--json",
        ],
        Duration::from_secs(60),
    );
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(u(&v, "completed") + u(&v, "failed"), 50, "{v}");
    assert!(u(&v, "failed") > 0, "{v}");
    let failures = v["failures"].as_object().expect("failures is an object");
    let port_kinds: u64 = ["addr-not-available", "addr-in-use"]
        .iter()
        .filter_map(|k| failures.get(*k).and_then(Value::as_u64))
        .sum();
    assert_eq!(port_kinds, u(&v, "failed"), "{v}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["churn", "--in-memory", "--port-range", "9-1"][..],
        &["churn", "--in-memory", "--latency", "5"],
        &["churn", "--in-memory", "--count", "0"],
        &["churn"],
    ] {
        let out = run(args, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} printed no error");
    }
}

#[test]
fn compare_rejects_sysctls_outside_net() {
    let out = run(
        &["compare", "--sysctl", "kernel.panic=1"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only net.* sysctls"), "{err}");
}

#[test]
fn help_documents_every_churn_flag() {
    let out = run(&["churn", "--help"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--in-memory",
        "--count",
        "--duration",
        "--concurrency",
        "--close",
        "--policy",
        "--port-range",
        "--server-ports",
        "--msl",
        "--latency",
        "--json",
    ] {
        assert!(help.contains(flag), "{flag} missing from help:\n{help}");
    }
}
