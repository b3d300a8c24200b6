//! Tier 4: `fourtuple compare --quick --json` runs the whole matrix; every scenario has a
//! result for every stack; fourtuple's outcomes follow DESIGN.md's rules; and the kernel's
//! outcomes for S1, S2 and S6 agree with what this test observes by calling the kernel
//! itself, in a namespace of its own.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use socket2::{Domain, SockAddr, Socket, Type};
use support::{net_ready, run_limited, Netns, BIN};

const STACKS: [&str; 4] = [
    "kernel",
    "fourtuple/exact-tuple",
    "fourtuple/local-port",
    "fourtuple/timestamp-reuse",
];

fn result<'a>(doc: &'a Value, id: &str, stack: &str, variant: &str) -> &'a Value {
    doc["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no scenario {id}"))["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["stack"] == stack && r["variant"].as_str().unwrap().starts_with(variant))
        .unwrap_or_else(|| panic!("no result {id} {stack} {variant}"))
}

fn outcome<'a>(doc: &'a Value, id: &str, stack: &str, variant: &str) -> &'a str {
    result(doc, id, stack, variant)["outcome"].as_str().unwrap()
}

/// Runs `f` on a thread inside `ns`.
fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("netns path");
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in namespace")
}

fn errno_outcome(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(98) => "addr-in-use".into(),
        Some(99) => "addr-not-available".into(),
        _ => format!("other: {e}"),
    }
}

/// A client socket from `local` with or without SO_REUSEADDR; bind errors reported.
fn bound(local: SocketAddr, reuse: bool) -> Result<Socket, String> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_reuse_address(reuse).unwrap();
    s.bind(&SockAddr::from(local))
        .map_err(|e| errno_outcome(&e))?;
    Ok(s)
}

/// The kernel's own answer, observed here: after a client-closes-first exchange from
/// `local` to `first`, can a new socket from `local` reach `second`?
fn kernel_reconnect(second_port: u16, second_ip: &str, reuse: bool) -> String {
    let server = |addr: &str| {
        let l = TcpListener::bind(addr).unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().take(2) {
                let Ok(mut c) = c else { continue };
                let mut b = [0u8; 64];
                while matches!(c.read(&mut b), Ok(n) if n > 0) {}
            }
        });
    };
    server("192.0.2.2:8080");
    if second_port != 8080 || second_ip != "192.0.2.2" {
        server(&format!("{second_ip}:{second_port}"));
    }
    let local: SocketAddr = "192.0.2.1:40001".parse().unwrap();
    let s = bound(local, reuse).unwrap();
    s.connect(&SockAddr::from(
        "192.0.2.2:8080".parse::<SocketAddr>().unwrap(),
    ))
    .unwrap();
    let mut c: TcpStream = s.into();
    c.write_all(b"x").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut b = [0u8; 8];
    let _ = c.read(&mut b);
    drop(c);
    std::thread::sleep(Duration::from_millis(50));
    let s = match bound(local, reuse) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let to: SocketAddr = format!("{second_ip}:{second_port}").parse().unwrap();
    match s.connect(&SockAddr::from(to)) {
        Ok(()) => "ok".into(),
        Err(e) => errno_outcome(&e),
    }
}

fn kernel_listener_restart(reuse: bool) -> String {
    let l = TcpListener::bind("192.0.2.2:8080").unwrap();
    let h = std::thread::spawn(move || {
        for c in l.incoming().take(3) {
            drop(c); // the server closes first: TIME_WAIT on the server
        }
    });
    for _ in 0..3 {
        let mut c = TcpStream::connect("192.0.2.2:8080").unwrap();
        let mut b = [0u8; 8];
        let _ = c.read(&mut b);
    }
    h.join().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_reuse_address(reuse).unwrap();
    match s.bind(&SockAddr::from(
        "192.0.2.2:8080".parse::<SocketAddr>().unwrap(),
    )) {
        Ok(()) => "ok".into(),
        Err(e) => errno_outcome(&e),
    }
}

fn fresh_ns(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    for a in ["192.0.2.1/32", "192.0.2.2/32", "198.51.100.2/32"] {
        ns.ok(&["ip", "addr", "add", a, "dev", "lo"]);
    }
    ns
}

#[test]
fn compare_quick_json_covers_the_matrix_and_follows_the_rules() {
    if !net_ready("compare_quick_json", &[]) {
        return;
    }
    let mut cmd = Command::new(BIN);
    cmd.args(["compare", "--quick", "--json"]);
    let out = run_limited(cmd, Duration::from_secs(240));
    assert!(
        out.status.success(),
        "compare failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert!(doc["sysctls"]["net.ipv4.tcp_tw_reuse"].is_string());

    // Every scenario has a result for every stack.
    let ids = ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9"];
    let scenarios = doc["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), ids.len());
    for (sc, id) in scenarios.iter().zip(ids) {
        assert_eq!(sc["id"], id);
        for stack in STACKS {
            assert!(
                sc["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["stack"] == stack),
                "{id} has no {stack} result"
            );
        }
    }
    let vocabulary = [
        "ok",
        "addr-in-use",
        "addr-not-available",
        "refused",
        "reset",
        "timeout",
        "reopened",
        "rejected-old-duplicate",
    ];
    for sc in scenarios {
        for r in sc["results"].as_array().unwrap() {
            let o = r["outcome"].as_str().unwrap();
            assert!(
                vocabulary.contains(&o),
                "{} {}: {o} {}",
                sc["id"],
                r["stack"],
                r["detail"]
            );
        }
    }

    // fourtuple against DESIGN.md's rules.
    let [_, exact, local, tsr] = STACKS;
    for p in [exact, local, tsr] {
        assert_eq!(
            outcome(&doc, "S1", p, "plain"),
            "addr-in-use",
            "{p}: exact tuple in TIME_WAIT"
        );
        assert_eq!(outcome(&doc, "S5", p, "greater-isn"), "reopened", "{p}");
        assert_eq!(
            outcome(&doc, "S6", p, "plain"),
            "ok",
            "{p}: listeners are never blocked"
        );
        let s7 = result(&doc, "S7", p, "client-linger0");
        assert_eq!(s7["outcome"], "ok");
        assert_eq!(s7["time_wait_client"], 0, "{p}: RST leaves no TIME_WAIT");
        let s9 = result(&doc, "S9", p, "server-closes");
        assert_eq!(s9["outcome"], "ok", "{p}: {}", s9["detail"]);
        assert_eq!(s9["time_wait_client"], 0, "{p}: the server closed first");
    }
    for v in ["other-port", "other-addr"] {
        assert_eq!(
            outcome(&doc, "S2", exact, v),
            "ok",
            "exact-tuple blocks only the tuple"
        );
        assert_eq!(outcome(&doc, "S2", tsr, v), "ok");
        assert_eq!(
            outcome(&doc, "S2", local, v),
            "addr-in-use",
            "local-port blocks the port"
        );
    }
    // Churn with a 1000-port range: exact-tuple gets 1000 per destination, local-port
    // 1000 in all, timestamp-reuse more once entries are a second old.
    let done = |id, p, v| result(&doc, id, p, v)["completed"].as_u64().unwrap();
    assert_eq!(done("S3", exact, "client-closes"), 1000);
    assert_eq!(
        outcome(&doc, "S3", exact, "client-closes"),
        "addr-not-available"
    );
    assert_eq!(done("S3", local, "client-closes"), 1000);
    assert_eq!(done("S4", exact, "4-server-ports"), 4000);
    assert_eq!(done("S4", local, "4-server-ports"), 1000);
    assert!(done("S3", tsr, "client-closes") > 1000);
    assert_eq!(
        result(&doc, "S3", exact, "client-closes")["time_wait_client"],
        1000
    );
    assert_eq!(
        result(&doc, "S8", exact, "client-closes")["time_wait_client"],
        1000
    );
    // The kernel's answer to fourtuple's chosen ISNs (measured, so only sanity here).
    let lower = outcome(&doc, "S5", "kernel", "lower-isn");
    assert!(
        ["rejected-old-duplicate", "reopened", "timeout"].contains(&lower),
        "{lower}"
    );

    // Kernel outcomes cross-checked by calling the kernel directly.
    for (variant, reuse) in [("plain", false), ("reuseaddr", true)] {
        let ns = fresh_ns(&format!("cmp-s1{reuse}"));
        let seen = in_ns(&ns, move || kernel_reconnect(8080, "192.0.2.2", reuse));
        assert_eq!(outcome(&doc, "S1", "kernel", variant), seen, "S1 {variant}");
        let ns = fresh_ns(&format!("cmp-s6{reuse}"));
        let seen = in_ns(&ns, move || kernel_listener_restart(reuse));
        assert_eq!(outcome(&doc, "S6", "kernel", variant), seen, "S6 {variant}");
    }
    for (variant, port, ip, reuse) in [
        ("other-port/plain", 8081, "192.0.2.2", false),
        ("other-port/reuseaddr", 8081, "192.0.2.2", true),
        ("other-addr/plain", 8080, "198.51.100.2", false),
        ("other-addr/reuseaddr", 8080, "198.51.100.2", true),
    ] {
        let ns = fresh_ns(&format!("cmp-s2{port}{reuse}"));
        let seen = in_ns(&ns, move || kernel_reconnect(port, ip, reuse));
        assert_eq!(outcome(&doc, "S2", "kernel", variant), seen, "S2 {variant}");
    }
}
