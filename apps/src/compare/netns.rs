//! Private network namespaces for the comparison harness.
//!
//! This module owns the life of every namespace `compare` creates: a [`Netns`] is created
//! with `ip netns add`, gets its loopback up and its test addresses, and is deleted when
//! dropped, on success, error or unwinding. Code runs inside a namespace on a dedicated
//! thread that has called `setns(2)`; the rest of the process never leaves the host
//! namespace. It must never touch an interface or address outside its namespace.

use std::fs::File;
use std::io;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace that is deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

fn run_ip(args: &[&str]) -> io::Result<Output> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        io::Error::new(e.kind(), format!("cannot run `ip` (install iproute2): {e}"))
    })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

impl Netns {
    /// Creates a fresh namespace named `PREFIX-PID-N`, with `lo` up.
    pub fn create(prefix: &str) -> io::Result<Netns> {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run_ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        run_ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds an address to `lo` inside the namespace (e.g. "192.0.2.1/32").
    pub fn add_loopback_address(&self, cidr: &str) -> io::Result<()> {
        run_ip(&["-n", &self.name, "addr", "add", cidr, "dev", "lo"]).map(|_| ())
    }

    /// Runs `ip ARGS...` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_ip(&all)
    }

    /// Runs `f` on a new thread that has entered the namespace, and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        let path = format!("/var/run/netns/{}", self.name);
        let handle = std::thread::Builder::new()
            .name(format!("netns-{}", self.name))
            .spawn(move || -> io::Result<T> {
                enter(&path)?;
                Ok(f())
            })?;
        handle
            .join()
            .map_err(|_| io::Error::other("a thread inside the namespace panicked"))?
    }

    /// Spawns a thread inside the namespace without waiting for it.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<std::thread::JoinHandle<io::Result<T>>> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::Builder::new()
            .name(format!("netns-{}", self.name))
            .spawn(move || -> io::Result<T> {
                enter(&path)?;
                Ok(f())
            })
    }
}

/// Moves the calling thread into the namespace bound at `path`.
pub fn enter(path: &str) -> io::Result<()> {
    let f = File::open(path)?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("setns({path}): {e}")))
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not delete namespace {}: {e}", self.name);
        }
    }
}

/// True when this process can create namespaces (root, or CAP_SYS_ADMIN).
pub fn have_privileges() -> bool {
    nix::unistd::geteuid().is_root()
}
