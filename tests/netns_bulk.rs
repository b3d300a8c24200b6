//! Tier 3: `fourtuple bulk --vs-kernel`, bulk transfers kernel -> kernel over veth and
//! kernel <-> fourtuple over a TUN, in namespaces the command creates and removes itself.
//! Checks the report's structure and that every direction moved every byte intact, for each
//! TUN setup (MTU 1500, MTU 65535, MTU 1500 with offloads); and that Ctrl-C in the middle
//! of a run still removes the namespaces. No timing is asserted: speeds belong to the
//! command's own output, never to a test.

mod support;

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{net_ready, run_limited, BIN};

const BYTES: u64 = 4 << 20;

/// The tests compare namespace lists before and after: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The namespaces `bulk` creates are named `ftbulk-PID-N` and `ftbulkp-PID-N`.
fn bulk_namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("ftbulk"))
        .map(str::to_string)
        .collect()
}

fn check_transfer(t: &Value, what: &str) {
    assert_eq!(t["ok"], Value::Bool(true), "{what}: {t}");
    assert_eq!(t["bytes"].as_u64(), Some(BYTES), "{what}: {t}");
    assert_eq!(t["received"].as_u64(), Some(BYTES), "{what}: {t}");
    assert_eq!(t["intact"], Value::Bool(true), "{what}: {t}");
    assert!(t["error"].is_null(), "{what}: {t}");
    assert!(
        t["seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{what}: {t}"
    );
    assert!(
        t["gbit_per_s"].as_f64().is_some_and(|g| g > 0.0),
        "{what}: {t}"
    );
}

#[test]
fn bulk_vs_kernel_moves_every_byte_in_each_direction() {
    if !net_ready("bulk_vs_kernel_moves_every_byte_in_each_direction", &[]) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = bulk_namespaces();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "bulk",
        "--vs-kernel",
        "--bytes",
        &BYTES.to_string(),
        "--setups",
        "1500,65535,1500+offload",
        "--timeout",
        "15s",
        "--json",
    ]);
    let out = run_limited(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bulk failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).expect("one JSON object on stdout");
    assert_eq!(v["ok"], Value::Bool(true), "{v}");
    assert_eq!(v["bytes"].as_u64(), Some(BYTES));
    assert!(v["date"].as_str().is_some_and(|d| d.ends_with('Z')), "{v}");
    assert_eq!(v["veth"]["mtu"].as_u64(), Some(1500));
    let rounds = v["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 1);
    let r = &rounds[0];
    let tun = r["tun"].as_array().expect("tun results");
    let labels: Vec<&str> = tun.iter().filter_map(|t| t["setup"].as_str()).collect();
    assert_eq!(labels, ["mtu1500", "mtu65535", "mtu1500+offload"]);
    for t in tun {
        let label = t["setup"].as_str().unwrap_or("?");
        let mtu = t["mtu"].as_u64().expect("mtu");
        check_transfer(
            &t["kernel_veth"],
            &format!("{label}: kernel -> kernel over veth"),
        );
        assert_eq!(t["kernel_drops_toward_fourtuple"].as_u64(), Some(0), "{t}");
        assert_eq!(t["fourtuple_mss"].as_u64(), Some(mtu - 40), "{t}");
        check_transfer(
            &t["kernel_to_fourtuple"],
            &format!("{label}: kernel -> fourtuple"),
        );
        check_transfer(
            &t["fourtuple_to_kernel"],
            &format!("{label}: fourtuple -> kernel"),
        );
        // fourtuple's loop saw the bytes go through the TUN.
        let rx = t["kernel_to_fourtuple"]["loop"]["rx_bytes"]
            .as_u64()
            .expect("loop counters");
        let tx = t["fourtuple_to_kernel"]["loop"]["tx_bytes"]
            .as_u64()
            .expect("loop counters");
        assert!(rx > BYTES && tx > BYTES, "{label}: rx {rx} tx {tx}");
        // With offloads, both halves of the offload path were used: the kernel handed
        // over GSO super-packets, and fourtuple's segments went out merged.
        let dev = &t["device"];
        if t["offload"] == Value::Bool(true) {
            assert!(dev["gso_packets_in"].as_u64() > Some(0), "{label}: {dev}");
            assert!(
                dev["super_packets_out"].as_u64() > Some(0),
                "{label}: {dev}"
            );
            assert_eq!(dev["bad_vnet_hdr"].as_u64(), Some(0), "{label}: {dev}");
            assert_eq!(
                dev["super_packets_refused"].as_u64(),
                Some(0),
                "{label}: {dev}"
            );
        } else {
            assert_eq!(dev["gso_packets_in"].as_u64(), Some(0), "{label}: {dev}");
            assert_eq!(dev["super_packets_out"].as_u64(), Some(0), "{label}: {dev}");
        }
        for k in ["ratio_kernel_to_fourtuple", "ratio_fourtuple_to_kernel"] {
            assert!(t[k].as_f64().is_some_and(|x| x > 0.0), "{label} {k}: {t}");
        }
    }
    assert_eq!(v["summary"]["tun"].as_array().map(Vec::len), Some(3), "{v}");
    let after = bulk_namespaces();
    let left: Vec<_> = after.iter().filter(|n| !before.contains(n)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn ctrl_c_in_the_middle_removes_the_namespaces() {
    if !net_ready("ctrl_c_in_the_middle_removes_the_namespaces", &[]) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = bulk_namespaces();
    // Far more bytes than can move before the signal; the timeout bounds it regardless.
    let mut child = Command::new(BIN)
        .args([
            "bulk",
            "--vs-kernel",
            "--bytes",
            "64GiB",
            "--setups",
            "1500",
            "--timeout",
            "20s",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bulk");
    let pid = child.id();
    // Wait until its namespaces exist, then interrupt it.
    let start = Instant::now();
    while bulk_namespaces()
        .iter()
        .filter(|n| n.contains(&format!("-{pid}-")))
        .count()
        < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "bulk never created its namespaces"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let signalled = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bulk did not stop after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    println!("bulk stopped {:?} after SIGINT: {err}", signalled.elapsed());
    assert_eq!(status.code(), Some(1), "interrupted runs exit 1: {err}");
    let after = bulk_namespaces();
    let left: Vec<_> = after.iter().filter(|n| !before.contains(n)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
