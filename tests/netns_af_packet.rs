//! Tier 3 over a veth pair with AF_PACKET: the kernel owns one end (`vk`, 192.0.2.1), and
//! `fourtuple up --af-packet vf` owns the other end's frames (192.0.2.2, the MAC of `vf`,
//! answering ARP itself). Each test runs in its own network namespace (see
//! `tests/support`).

mod support;

use std::time::{Duration, Instant};

use support::{net_ready, random_bytes, Netns, TempPath, Up, KERNEL_IP, STACK_IP};

/// The veth pair inside `ns`: `vk` for the kernel, `vf` for fourtuple. The kernel gets no
/// address and no IPv6 on `vf`, so it neither answers ARP for the stack nor sends noise
/// into it; offloads are off on `vk`, so frames reach `vf` whole and with checksums done.
fn veth(ns: &Netns) {
    ns.ok(&[
        "ip", "link", "add", "vk", "type", "veth", "peer", "name", "vf",
    ]);
    ns.ok(&["sysctl", "-q", "-w", "net.ipv6.conf.vf.disable_ipv6=1"]);
    ns.ok(&["sysctl", "-q", "-w", "net.ipv6.conf.vk.disable_ipv6=1"]);
    ns.ok(&[
        "ethtool", "-K", "vk", "tx", "off", "tso", "off", "gso", "off",
    ]);
    ns.ok(&["ip", "addr", "add", &format!("{KERNEL_IP}/24"), "dev", "vk"]);
    ns.ok(&["ip", "link", "set", "dev", "vf", "up"]);
    ns.ok(&["ip", "link", "set", "dev", "vk", "up"]);
}

fn up_af_packet(ns: &Netns, extra: &[&str]) -> Up {
    let mut args = vec![
        "--af-packet",
        "vf",
        "--addr",
        "192.0.2.2/24",
        "--serve",
        "echo:7,discard:9,chargen:19,http:80",
    ];
    args.extend_from_slice(extra);
    Up::start(ns, &args)
}

const TOOLS: &[&str] = &["ethtool", "sysctl", "ping", "curl", "nc", "ab", "tshark"];

#[test]
fn af_packet_ping_curl_echo_ab_and_pcap() {
    if !net_ready("af_packet_ping_curl_echo_ab_and_pcap", TOOLS) {
        return;
    }
    let ns = Netns::new("afp");
    veth(&ns);
    let pcap = TempPath::new("afp.pcap");
    let mut up = up_af_packet(&ns, &["--pcap", &pcap.s()]);

    // ARP first (the kernel resolves the stack's MAC), then ICMP.
    ns.ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", STACK_IP]);
    let neigh = ns.ok(&["ip", "neigh", "show", STACK_IP, "dev", "vk"]);
    assert!(
        neigh.contains("lladdr"),
        "the kernel did not learn the stack's MAC: {neigh:?}"
    );

    let page = ns.ok(&["curl", "-sS", "-m", "10", &format!("http://{STACK_IP}/")]);
    assert!(page.contains("fourtuple"), "{page:?}");

    let data = random_bytes(16 << 20, 0x5eed_0002);
    let input = TempPath::new("afp-echo-in");
    let output = TempPath::new("afp-echo-out");
    std::fs::write(&input.0, &data).unwrap();
    let t = Instant::now();
    let out = ns.sh(
        &format!("nc -N {STACK_IP} 7 < {} > {}", input.s(), output.s()),
        Duration::from_secs(180),
    );
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = std::fs::read(&output.0).unwrap();
    assert_eq!(back.len(), data.len(), "echoed length");
    assert!(back == data, "echoed bytes differ");
    println!(
        "AF_PACKET echo 16 MiB in {took:?} ({:.0} Mbit/s each way)",
        (16 << 20) as f64 * 8.0 / took.as_secs_f64() / 1e6
    );

    let report = ns.ok(&[
        "ab",
        "-q",
        "-n",
        "2000",
        "-c",
        "20",
        "-s",
        "10",
        &format!("http://{STACK_IP}/"),
    ]);
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

    let exit = up.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    assert!(exit.stdout.iter().any(|l| l == "stopped: signal"));
    // The capture is Ethernet: tshark must see ARP too, and nothing malformed.
    support::check_pcap(&pcap, 100);
    let arp = support::run_limited(
        {
            let mut c = std::process::Command::new("tshark");
            c.args(["-n", "-r", &pcap.s(), "-Y", "arp"]);
            c
        },
        Duration::from_secs(60),
    );
    assert!(
        !String::from_utf8_lossy(&arp.stdout).trim().is_empty(),
        "no ARP in the Ethernet capture"
    );
}

#[test]
fn af_packet_on_a_missing_interface_fails_with_a_message() {
    if !net_ready("af_packet_on_a_missing_interface_fails_with_a_message", &[]) {
        return;
    }
    let ns = Netns::new("afp-missing");
    let out = ns.run(&[
        support::BIN,
        "up",
        "--af-packet",
        "nosuch0",
        "--addr",
        "192.0.2.2/24",
        "--exit-after",
        "5s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nosuch0"), "{err}");
}
