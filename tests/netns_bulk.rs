//! Tier 3: `fourtuple bulk --vs-kernel`, bulk transfers kernel -> kernel over veth and
//! kernel <-> fourtuple over a TUN, in namespaces the command creates and removes itself.
//! Checks the report's structure and that every direction moved every byte intact, for each
//! TUN setup (MTU 1500, MTU 65535, MTU 1500 with offloads), including the second veth
//! transfer set up like the TUN, whose packets must really be MTU-sized without offloads
//! (from the veth's counters); that without `ethtool` only that transfer is skipped, with
//! the reason printed; and that Ctrl-C in the middle of a run still removes the namespaces.
//! No timing is asserted: speeds belong to the command's own output, never to a test.

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

/// The average IP packet the sender's veth end transmitted during a veth transfer.
fn avg_packet(t: &Value, what: &str) -> f64 {
    assert!(t["veth_tx_packets"].as_u64() > Some(0), "{what}: {t}");
    t["avg_ip_packet_bytes"]
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: no average packet size: {t}"))
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
    if !net_ready(
        "bulk_vs_kernel_moves_every_byte_in_each_direction",
        &["ethtool"],
    ) {
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
    let stdout = run_bulk(cmd);
    let v: Value = serde_json::from_str(stdout.trim()).expect("one JSON object on stdout");
    assert_eq!(v["ok"], Value::Bool(true), "{v}");
    assert_eq!(v["bytes"].as_u64(), Some(BYTES));
    assert!(v["date"].as_str().is_some_and(|d| d.ends_with('Z')), "{v}");
    assert_eq!(v["veth"]["mtu"].as_u64(), Some(1500));
    assert_eq!(v["veth_like"]["measured"], Value::Bool(true), "{v}");
    assert!(v["veth_like"]["skipped"].is_null(), "{v}");
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
        // The default veth (TSO on, MTU 1500) carries super-packets, also after the
        // previous setup's like-the-TUN transfer changed and restored its settings.
        let what = format!("{label}: kernel -> kernel over the default veth");
        let avg = avg_packet(&t["kernel_veth"], &what);
        assert!(avg > 1500.0, "{what}: average packet {avg}");
        let like = &t["kernel_veth_like"];
        let what = format!("{label}: kernel -> kernel over veth like the TUN");
        check_transfer(like, &what);
        assert_eq!(like["veth_mtu"].as_u64(), Some(mtu), "{what}: {like}");
        assert_eq!(like["veth_offloads"], t["offload"], "{what}: {like}");
        let avg = avg_packet(like, &what);
        if t["offload"] == Value::Bool(true) {
            // The veth's defaults, as for the TUN with offloads.
            assert!(avg > 1500.0, "{what}: average packet {avg}");
        } else {
            // No TSO or GSO: nothing larger than the MTU crossed; at MTU 65535 packets
            // larger than 1500 bytes crossed, so the MTU took effect.
            assert!(avg <= mtu as f64, "{what}: average packet {avg}");
            if mtu > 1500 {
                assert!(avg > 1500.0, "{what}: average packet {avg}");
            }
        }
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
            // The kernel's packets came with partial checksums, handed to the stack as
            // trusted (every byte was still checked against the pattern above); with no
            // capture, none was summed on the way.
            assert!(
                dev["checksums_trusted"].as_u64() > Some(0),
                "{label}: {dev}"
            );
            assert_eq!(
                dev["checksums_completed"].as_u64(),
                Some(0),
                "{label}: {dev}"
            );
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
        for k in [
            "ratio_kernel_to_fourtuple",
            "ratio_fourtuple_to_kernel",
            "ratio_kernel_to_fourtuple_vs_veth_like",
            "ratio_fourtuple_to_kernel_vs_veth_like",
        ] {
            assert!(t[k].as_f64().is_some_and(|x| x > 0.0), "{label} {k}: {t}");
        }
    }
    assert_eq!(v["summary"]["tun"].as_array().map(Vec::len), Some(3), "{v}");
    let after = bulk_namespaces();
    let left: Vec<_> = after.iter().filter(|n| !before.contains(n)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn without_ethtool_only_the_like_for_like_transfer_is_skipped() {
    if !net_ready(
        "without_ethtool_only_the_like_for_like_transfer_is_skipped",
        &[],
    ) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = bulk_namespaces();
    // A PATH with `ip` and nothing else, removed however the test ends.
    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = std::env::temp_dir().join(format!("ftbulk-noethtool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let dir = TempDir(dir);
    let dir = &dir.0;
    let which = Command::new("sh")
        .args(["-c", "command -v ip"])
        .output()
        .expect("sh");
    let ip = String::from_utf8_lossy(&which.stdout).trim().to_string();
    std::os::unix::fs::symlink(&ip, dir.join("ip")).expect("symlink ip");
    let mut cmd = Command::new(BIN);
    cmd.env("PATH", dir).args([
        "bulk",
        "--vs-kernel",
        "--bytes",
        "1MiB",
        "--setups",
        "1500",
        "--timeout",
        "15s",
    ]);
    let stdout = run_bulk(cmd);
    assert!(
        stdout.contains("veth like the TUN: not measured: `ethtool` is not installed"),
        "{stdout}"
    );
    assert!(!stdout.contains("veth like TUN, MTU"), "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
    for row in [
        "kernel -> kernel, veth MTU 1500",
        "kernel -> fourtuple:",
        "fourtuple -> kernel:",
    ] {
        assert!(stdout.contains(row), "no {row:?} in {stdout}");
    }
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

/// Runs a `bulk` command to its end (bounded), asserts it succeeded, returns its stdout.
fn run_bulk(cmd: Command) -> String {
    let out = run_limited(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bulk failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
