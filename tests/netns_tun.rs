//! Tier 3 over TUN: the Linux kernel as a client of `fourtuple up`, each test in its own
//! network namespace (see `tests/support`). The kernel side of the TUN is 192.0.2.1, the
//! stack is 192.0.2.2.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{net_ready, random_bytes, Netns, TempPath, Up, KERNEL_IP, STACK_IP};

const ADDR: &str = "192.0.2.2/24";

fn up_tun(ns: &Netns, extra: &[&str]) -> Up {
    let mut args = vec![
        "--tun",
        "ft0",
        "--addr",
        ADDR,
        "--host-addr",
        KERNEL_IP,
        "--serve",
        "echo:7,discard:9,chargen:19,http:80",
    ];
    args.extend_from_slice(extra);
    Up::start(ns, &args)
}

fn stats(ns: &Netns) -> Value {
    let body = ns.ok(&[
        "curl",
        "-sS",
        "-m",
        "10",
        &format!("http://{STACK_IP}/stats"),
    ]);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/stats is not JSON ({e}): {body}"))
}

#[test]
fn tun_ping_curl_keepalive_and_stats() {
    if !net_ready("tun_ping_curl_keepalive_and_stats", &["ping", "curl"]) {
        return;
    }
    let ns = Netns::new("tun-basic");
    let mut up = up_tun(&ns, &[]);

    ns.ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", STACK_IP]);

    let page = ns.ok(&["curl", "-sS", "-m", "10", &format!("http://{STACK_IP}/")]);
    assert!(page.contains("fourtuple"), "GET / answered {page:?}");

    // Two requests on one connection (HTTP/1.1 keep-alive).
    let out = ns.run(&[
        "curl",
        "-sS",
        "-v",
        "-m",
        "10",
        &format!("http://{STACK_IP}/"),
        &format!("http://{STACK_IP}/"),
    ]);
    assert!(out.status.success());
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(
        verbose.contains("Re-using existing") || verbose.contains("Reusing existing"),
        "curl did not reuse the connection:\n{verbose}"
    );

    // Connection: close makes the server close first: TIME_WAIT on the stack.
    let before = stats(&ns)["time_wait"].as_u64().unwrap();
    let out = ns.run(&[
        "curl",
        "-sS",
        "-m",
        "10",
        "-H",
        "Connection: close",
        &format!("http://{STACK_IP}/"),
    ]);
    assert!(out.status.success());
    let s = stats(&ns);
    assert!(
        s["time_wait"].as_u64().unwrap() > before,
        "no TIME_WAIT entry after Connection: close: {s}"
    );
    assert!(s["counters"]["echo_replies"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(
        ns.run(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{STACK_IP}/nope")
        ])
        .stdout,
        b"404"
    );

    let exit = up.stop();
    assert!(
        exit.status.success(),
        "exit {}: {}",
        exit.status,
        exit.stderr
    );
    assert_eq!(exit.stdout[0], "ready");
    assert!(
        exit.stdout.iter().any(|l| l == "stopped: signal"),
        "{:?}",
        exit.stdout
    );
    assert!(exit.stdout.iter().any(|l| l.contains("echo_replies")));
}

/// Echoes 16 MiB through `fourtuple up` with `extra` flags and checks every byte.
fn echo_16_mib(test: &str, tag: &str, extra: &[&str]) {
    if !net_ready(test, &["nc"]) {
        return;
    }
    let ns = Netns::new(tag);
    let mut up = up_tun(&ns, extra);
    let data = random_bytes(16 << 20, 0x5eed_0001);
    let input = TempPath::new("echo-in");
    let output = TempPath::new("echo-out");
    std::fs::write(&input.0, &data).unwrap();
    let t = Instant::now();
    let out = ns.sh(
        &format!("nc -N {STACK_IP} 7 < {} > {}", input.s(), output.s()),
        Duration::from_secs(180),
    );
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "nc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = std::fs::read(&output.0).unwrap();
    assert_eq!(back.len(), data.len(), "echoed length");
    assert!(back == data, "echoed bytes differ");
    println!(
        "echo 16 MiB both ways over TUN {extra:?} in {took:?} ({:.1} Mbit/s each way)",
        (16 << 20) as f64 * 8.0 / took.as_secs_f64() / 1e6
    );
    let exit = up.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
}

#[test]
fn tun_echo_16_mib_is_byte_identical() {
    echo_16_mib("tun_echo_16_mib_is_byte_identical", "tun-echo", &[]);
}

#[test]
fn tun_echo_16_mib_with_offloads_is_byte_identical() {
    echo_16_mib(
        "tun_echo_16_mib_with_offloads_is_byte_identical",
        "tun-echo-gso",
        &["--offload"],
    );
}

#[test]
fn tun_echo_16_mib_at_mtu_65535_is_byte_identical() {
    echo_16_mib(
        "tun_echo_16_mib_at_mtu_65535_is_byte_identical",
        "tun-echo-big",
        &["--mtu", "65535"],
    );
}

#[test]
fn tun_echo_16_mib_busy_polling_is_byte_identical() {
    echo_16_mib(
        "tun_echo_16_mib_busy_polling_is_byte_identical",
        "tun-echo-spin",
        &["--busy-poll", "50us"],
    );
}

#[test]
fn tun_ab_2000_requests_no_failures() {
    if !net_ready("tun_ab_2000_requests_no_failures", &["ab"]) {
        return;
    }
    let ns = Netns::new("tun-ab");
    let mut up = up_tun(&ns, &[]);
    for keepalive in [false, true] {
        let mut args = vec!["ab", "-q", "-n", "2000", "-c", "20", "-s", "10"];
        if keepalive {
            args.push("-k");
        }
        let url = format!("http://{STACK_IP}/");
        args.push(&url);
        let report = ns.ok(&args);
        let field = |name: &str| -> u64 {
            report
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name:?} in ab output:\n{report}"))
        };
        assert_eq!(field("Complete requests:"), 2000, "{report}");
        assert_eq!(field("Failed requests:"), 0, "{report}");
        let rps = report
            .lines()
            .find(|l| l.starts_with("Requests per second:"))
            .unwrap_or("");
        println!(
            "ab -n 2000 -c 20{}: {rps}",
            if keepalive { " -k" } else { "" }
        );
    }
    let exit = up.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
}

#[test]
fn tun_bulk_throughput_each_direction() {
    if !net_ready("tun_bulk_throughput_each_direction", &["nc", "head"]) {
        return;
    }
    let ns = Netns::new("tun-bulk");
    let mut up = up_tun(&ns, &[]);
    let bytes: u64 = 64 << 20;
    // kernel -> fourtuple: into discard; nc ends when the stack closes after our FIN.
    let t = Instant::now();
    let out = ns.sh(
        &format!("head -c {bytes} /dev/zero | nc -N {STACK_IP} 9"),
        Duration::from_secs(180),
    );
    let up_rate = bytes as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e6;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // fourtuple -> kernel: from chargen.
    let t = Instant::now();
    let out = ns.sh(
        &format!("nc {STACK_IP} 19 | head -c {bytes} | wc -c"),
        Duration::from_secs(180),
    );
    let down_rate = bytes as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e6;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        bytes.to_string()
    );
    println!(
        "TUN bulk, 64 MiB: kernel -> fourtuple {up_rate:.0} Mbit/s, fourtuple -> kernel \
         {down_rate:.0} Mbit/s"
    );
    let exit = up.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
}

#[test]
fn tun_pcap_reads_clean_in_tshark() {
    pcap_reads_clean("tun_pcap_reads_clean_in_tshark", "tun-pcap", &[]);
}

/// With offloads the kernel leaves its checksums partial; the stack trusts them, but a
/// capture must still show them complete and valid.
#[test]
fn tun_pcap_with_offloads_reads_clean_in_tshark() {
    pcap_reads_clean(
        "tun_pcap_with_offloads_reads_clean_in_tshark",
        "tun-pcap-gso",
        &["--offload"],
    );
}

fn pcap_reads_clean(test: &str, ns_name: &str, extra: &[&str]) {
    if !net_ready(test, &["tshark", "curl", "ping"]) {
        return;
    }
    let ns = Netns::new(ns_name);
    let pcap = TempPath::new(&format!("{ns_name}.pcap"));
    let pcap_path = pcap.s();
    let mut args = vec!["--pcap", pcap_path.as_str()];
    args.extend_from_slice(extra);
    let mut up = up_tun(&ns, &args);
    ns.ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", STACK_IP]);
    ns.ok(&["curl", "-sS", "-m", "10", &format!("http://{STACK_IP}/")]);
    ns.ok(&[
        "curl",
        "-sS",
        "-m",
        "10",
        "-H",
        "Connection: close",
        &format!("http://{STACK_IP}/stats"),
    ]);
    let exit = up.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    support::check_pcap(&pcap, 20);
}

#[test]
fn tun_json_ready_and_exit_objects() {
    if !net_ready("tun_json_ready_and_exit_objects", &["ping"]) {
        return;
    }
    let ns = Netns::new("tun-json");
    let mut up = up_tun(
        &ns,
        &[
            "--json",
            "--msl",
            "5s",
            "--policy",
            "local-port",
            "--txqueuelen",
            "3000",
        ],
    );
    let ready: Value = serde_json::from_str(&up.seen[0]).expect("ready line is JSON");
    let link = ns.ok(&["ip", "-o", "link", "show", "dev", "ft0"]);
    assert!(link.contains("qlen 3000"), "--txqueuelen: {link}");
    assert_eq!(ready["event"], "ready");
    assert_eq!(ready["interface"], "ft0");
    assert_eq!(ready["addr"], ADDR);
    assert_eq!(ready["policy"], "local-port");
    assert_eq!(ready["serve"].as_array().unwrap().len(), 4);
    ns.ok(&["ping", "-c", "1", "-W", "2", STACK_IP]);
    let exit = up.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    assert_eq!(exit.stdout.len(), 2, "{:?}", exit.stdout);
    let end: Value = serde_json::from_str(&exit.stdout[1]).expect("exit line is JSON");
    assert_eq!(end["event"], "exit");
    assert_eq!(end["reason"], "signal");
    assert!(
        end["counters"]["echo_replies"].as_u64().unwrap() >= 1,
        "{end}"
    );
    assert!(end["device"]["rx_packets"].as_u64().unwrap() >= 1, "{end}");
    // The kernel's own drop counts for the TUN are in the report (none at this load).
    assert_eq!(
        end["device"]["kernel_dropped_in"].as_u64(),
        Some(0),
        "{end}"
    );
    assert_eq!(
        end["device"]["kernel_dropped_out"].as_u64(),
        Some(0),
        "{end}"
    );
}

#[test]
fn tun_deleted_under_the_loop_is_an_error_exit_not_a_panic() {
    if !net_ready(
        "tun_deleted_under_the_loop_is_an_error_exit_not_a_panic",
        &[],
    ) {
        return;
    }
    let ns = Netns::new("tun-gone");
    let mut up = up_tun(&ns, &[]);
    ns.ok(&["ip", "link", "del", "ft0"]);
    // The loop notices on its next read; give it a moment, then make sure it ended.
    let t = Instant::now();
    let exit = loop {
        let _ = ns.run(&["ping", "-c", "1", "-W", "1", STACK_IP]);
        if t.elapsed() > Duration::from_secs(3) {
            break up.stop();
        }
    };
    assert!(
        !exit.stderr.contains("panicked"),
        "fourtuple panicked: {}",
        exit.stderr
    );
    // Either the loop saw the device go (exit 1, a message) or it was still waiting and
    // SIGTERM ended it cleanly.
    match exit.status.code() {
        Some(1) => assert!(exit.stderr.contains("device"), "{}", exit.stderr),
        Some(0) => {}
        other => panic!("unexpected exit {other:?}: {}", exit.stderr),
    }
}

#[test]
fn up_without_privileges_or_with_a_bad_name_fails_with_a_message() {
    // Needs no root: the name is checked before any device is touched.
    let out = support::run_limited(
        {
            let mut c = std::process::Command::new(support::BIN);
            c.args([
                "up",
                "--tun",
                "a-name-that-is-far-too-long",
                "--addr",
                ADDR,
                "--exit-after",
                "5s",
            ]);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("15 bytes"), "{err}");
    assert!(out.stdout.is_empty(), "printed ready without a device");
}
