//! Shared helpers for the tier-3 interop tests (`tests/netns_*.rs`): private network
//! namespaces, `fourtuple up` as a child process inside one, and commands with time limits.
//!
//! This module owns the safety rules of DESIGN.md for those tests: every packet stays inside
//! a namespace the test created ([`Netns`], named with the pid), only RFC 5737 addresses are
//! used, every command runs under a time limit, and everything is removed on drop, also
//! when the test fails or panics. It must never touch the host's own network namespace
//! beyond creating and deleting the test's namespaces.
//!
//! Without root (or without `ip`, `/dev/net/tun`, or a tool a test needs), [`net_ready`]
//! prints why and the test returns early, unless `FOURTUPLE_REQUIRE_NET=1` is set (CI),
//! in which case it panics instead.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// The `fourtuple` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_fourtuple");

/// The stack's address in every test network.
pub const STACK_IP: &str = "192.0.2.2";
/// The kernel's address in every test network.
pub const KERNEL_IP: &str = "192.0.2.1";

/// A safety bound given to every `fourtuple up`: it stops by itself after this long even
/// if the test that started it was killed.
pub const UP_EXIT_AFTER: &str = "300s";

fn require() -> bool {
    std::env::var("FOURTUPLE_REQUIRE_NET").as_deref() == Ok("1")
}

fn skip_or_fail(test: &str, why: &str) -> bool {
    if require() {
        panic!("{test}: FOURTUPLE_REQUIRE_NET=1 but {why}");
    }
    println!("skipped {test}: {why}");
    false
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when this test can run: root, `ip`, `/dev/net/tun` and every tool in `tools`.
/// Otherwise prints why and returns false, or panics under `FOURTUPLE_REQUIRE_NET=1`.
pub fn net_ready(test: &str, tools: &[&str]) -> bool {
    if !is_root() {
        return skip_or_fail(test, "needs root (network namespaces, TUN, AF_PACKET)");
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return skip_or_fail(test, "/dev/net/tun does not exist");
    }
    for t in std::iter::once(&"ip").chain(tools) {
        if !have(t) {
            return skip_or_fail(test, &format!("the tool {t:?} is not installed"));
        }
    }
    true
}

/// Runs `cmd` to completion, killing it and panicking if it takes longer than `limit`.
pub fn run_limited(mut cmd: Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} took longer than {limit:?}; stderr: {}",
                String::from_utf8_lossy(&err.join().unwrap_or_default())
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut v);
        }
        v
    })
}

/// A network namespace created for one test, deleted (with every process still in it) on
/// drop.
pub struct Netns {
    /// Its name: `ft-TAG-PID`.
    pub name: String,
}

impl Netns {
    /// Creates `ft-TAG-PID` with loopback up.
    pub fn new(tag: &str) -> Netns {
        let name = format!("ft-{tag}-{}", std::process::id());
        // A namespace of that name can only be left over from a crashed run of this pid.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let out = run_limited(
            {
                let mut c = Command::new("ip");
                c.args(["netns", "add", &name]);
                c
            },
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns { name };
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A command that runs `args` inside the namespace.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Runs `args` inside the namespace with a 60 s limit.
    pub fn run(&self, args: &[&str]) -> Output {
        run_limited(self.cmd(args), Duration::from_secs(60))
    }

    /// Runs `args` inside the namespace and panics unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} in {} failed ({}): {}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a shell script inside the namespace under `limit`.
    pub fn sh(&self, script: &str, limit: Duration) -> Output {
        run_limited(self.cmd(&["bash", "-c", script]), limit)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Every process in the namespace was started by this test: end them by pid.
        for _ in 0..50 {
            let pids = Command::new("ip")
                .args(["netns", "pids", &self.name])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let pids: Vec<&str> = pids.split_whitespace().collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            thread::sleep(Duration::from_millis(20));
        }
        let ok = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("warning: could not delete network namespace {}", self.name);
        }
    }
}

/// `fourtuple up` running inside a namespace. Dropping it kills the process.
pub struct Up {
    child: Option<Child>,
    lines: Receiver<String>,
    stderr: Option<thread::JoinHandle<Vec<u8>>>,
    /// The stdout lines seen so far (the `ready` line included).
    pub seen: Vec<String>,
}

/// What `fourtuple up` printed and how it ended.
pub struct UpExit {
    /// Its exit status.
    pub status: ExitStatus,
    /// Every stdout line.
    pub stdout: Vec<String>,
    /// All of stderr.
    pub stderr: String,
}

impl Up {
    /// Starts `fourtuple up ARGS --exit-after ...` in `ns` and waits (up to 20 s) for the
    /// `ready` line, or the `{"event":"ready"}` line with `--json`.
    pub fn start(ns: &Netns, args: &[&str]) -> Up {
        let mut full = vec![BIN, "up"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--exit-after", UP_EXIT_AFTER]);
        let mut child = ns
            .cmd(&full)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fourtuple up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Some(drain(child.stderr.take()));
        let mut up = Up {
            child: Some(child),
            lines,
            stderr,
            seen: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match up.lines.recv_timeout(left) {
                Ok(line) => {
                    let ready = line == "ready" || line.contains("\"event\":\"ready\"");
                    up.seen.push(line);
                    if ready {
                        return up;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    let exit = up.stop();
                    panic!(
                        "fourtuple up {args:?} never printed ready ({}); stdout {:?}, stderr {}",
                        exit.status, exit.stdout, exit.stderr
                    );
                }
            }
        }
    }

    /// The process id (the same inside and outside the namespace's view).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM, waits up to 10 s (then kills it), and returns what it printed.
    pub fn stop(&mut self) -> UpExit {
        let mut child = self.child.take().expect("fourtuple up already stopped");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            thread::sleep(Duration::from_millis(10));
        };
        let mut stdout = std::mem::take(&mut self.seen);
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            stdout.push(l);
        }
        let stderr = self
            .stderr
            .take()
            .map(|h| String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned())
            .unwrap_or_default();
        UpExit {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `len` pseudo-random bytes from `seed` (xorshift64*), reproducible.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A temporary file path unique to this process and `tag`, removed on drop.
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    /// `/tmp/fourtuple-TAG-PID`.
    pub fn new(tag: &str) -> TempPath {
        TempPath(std::env::temp_dir().join(format!("fourtuple-{tag}-{}", std::process::id())))
    }

    /// The path as a string.
    pub fn s(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A tshark filter: any bad IPv4, TCP or ICMP checksum.
const BAD: &str = "(ip.checksum.status == \"Bad\" || tcp.checksum.status == \"Bad\" || \
                   icmp.checksum.status == \"Bad\")";

/// tshark reads the file, sees at least `min_packets`, and finds nothing malformed and no
/// bad IP, TCP or ICMP checksum (checksum validation switched on).
///
/// One exception, for packets the kernel sent: a TCP checksum of 0xFFFF. Linux's software
/// checksum fallback (`skb_checksum_help`, used when offload is off, as on the veth here)
/// can emit 0xFFFF where 0x0000 is meant; RFC 1624 makes both the same one's-complement
/// zero and receivers (fourtuple included) accept it, but Wireshark flags it as an error.
/// Everything fourtuple (192.0.2.2) sends must pass with no exception.
pub fn check_pcap(pcap: &TempPath, min_packets: usize) {
    let all = run_limited(
        {
            let mut c = std::process::Command::new("tshark");
            c.args(["-n", "-r", &pcap.s()]);
            c
        },
        Duration::from_secs(60),
    );
    assert!(
        all.status.success(),
        "tshark -r: {}",
        String::from_utf8_lossy(&all.stderr)
    );
    let listing = String::from_utf8_lossy(&all.stdout).into_owned();
    assert!(
        listing.lines().count() >= min_packets,
        "only {} packets in the capture:\n{listing}",
        listing.lines().count()
    );
    assert!(
        listing.contains("ICMP") && listing.contains("HTTP"),
        "{listing}"
    );
    let bad = run_limited(
        {
            let mut c = std::process::Command::new("tshark");
            c.args([
                "-n",
                "-r",
                &pcap.s(),
                "-o",
                "ip.check_checksum:TRUE",
                "-o",
                "tcp.check_checksum:TRUE",
                "-Y",
                &format!(
                    "_ws.malformed || (ip.src == {STACK_IP} && ({BAD} || \
                     _ws.expert.severity == \"Error\")) || (ip.src != {STACK_IP} && \
                     {BAD} && !(tcp.checksum == 0xffff))"
                ),
            ]);
            c
        },
        Duration::from_secs(60),
    );
    assert!(
        bad.status.success(),
        "tshark filter: {}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let bad = String::from_utf8_lossy(&bad.stdout);
    assert!(
        bad.trim().is_empty(),
        "malformed packets or bad checksums:\n{bad}\nfull capture:\n{listing}"
    );
}

/// Runs `fourtuple churn --target KERNEL_IP:port` over a TUN `ft0` in `ns` (stack
/// 192.0.2.2/24, lifecycle timeout 10 s, `--json`) with `extra` flags, requires it to
/// succeed, and returns its JSON report.
pub fn churn_target(ns: &Netns, port: u16, extra: &[&str]) -> serde_json::Value {
    let target = format!("{KERNEL_IP}:{port}");
    let mut args = vec![
        BIN,
        "churn",
        "--target",
        &target,
        "--tun",
        "ft0",
        "--addr",
        "192.0.2.2/24",
        "--host-addr",
        KERNEL_IP,
        "--lifecycle-timeout",
        "10s",
        "--json",
    ];
    args.extend_from_slice(extra);
    let mut c = ns.cmd(&args);
    c.env("RUST_LOG", "warn");
    let out = run_limited(c, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "churn {extra:?} failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

/// `fourtuple kernel-peer` (the kernel-side churn server) in `ns`, listening on the
/// wildcard address (192.0.2.1 exists only while the test's TUN does), killed on drop.
pub struct KernelPeer(Child);

impl KernelPeer {
    /// Starts it on `port` with `extra` flags (`--close`, `--linger`, ...) and waits until it
    /// listens; it exits by itself after 120 s.
    pub fn start(ns: &Netns, port: u16, extra: &[&str]) -> KernelPeer {
        let listen = format!("0.0.0.0:{port}");
        let mut args = vec![BIN, "kernel-peer", "--listen", &listen];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--exit-after", "120s"]);
        let child = ns
            .cmd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kernel-peer");
        let peer = KernelPeer(child);
        for _ in 0..200 {
            let out = ns.run(&["ss", "-Htln", &format!("sport = :{port}")]);
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return peer;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("kernel-peer never listened on {listen}");
    }
}

impl Drop for KernelPeer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
