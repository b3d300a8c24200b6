//! The `fourtuple` command-line tool, as a library.
//!
//! This crate owns the CLI contract of DESIGN.md ("CLI contract"): parsing the command line
//! ([`main_entry`]), the commands, and how their results are printed (human text, or one
//! JSON object on stdout with `--json`). The workloads themselves live in modules usable
//! without the CLI (e.g. [`churn::run_in_memory`] for benches). It must never implement
//! protocol logic (that is `fourtuple-stack`'s) or move packets to the OS by itself (that
//! is `fourtuple-netdev`'s).
//!
//! Exit codes: 0 success, 1 the run had failures, 2 usage errors and commands that are not
//! implemented yet.

#![forbid(unsafe_code)]

pub mod args;
pub mod bulk;
mod bulk_cli;
pub mod churn;
mod churn_cli;
pub mod churn_target;
pub mod compare;
mod compare_cli;
mod kernel_peer;
pub mod servers;
mod up;

use clap::{Parser, Subcommand};

/// Exit code: the run completed without failures.
pub const EXIT_OK: i32 = 0;
/// Exit code: the run finished, but some lifecycles or checks failed.
pub const EXIT_FAILURES: i32 = 1;
/// Exit code: bad usage, or a command that is not implemented yet.
pub const EXIT_USAGE: i32 = 2;

/// fourtuple: a userspace TCP/IP stack for studying connection lifecycles, TIME_WAIT and
/// port reuse.
#[derive(Parser, Debug)]
#[command(name = "fourtuple", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the stack on a TUN or AF_PACKET interface until SIGINT/SIGTERM: answers ping,
    /// runs the --serve services, prints `ready` once serving and the counters on exit.
    Up(up::UpArgs),
    /// Open and close connections as fast as possible and report lifecycles/s, failures by
    /// kind and TIME_WAIT entries on each side.
    Churn(churn_cli::ChurnArgs),
    /// A churn server on the host kernel's TCP (for tests and `churn --target`).
    #[command(hide = true)]
    KernelPeer(kernel_peer::KernelPeerArgs),
    /// Run the port-reuse scenario matrix in private network namespaces and print the
    /// results side by side (needs root).
    Compare(compare_cli::CompareArgs),
    /// Bulk throughput side by side: kernel -> kernel over veth, kernel -> fourtuple and
    /// fourtuple -> kernel over a TUN, in private network namespaces (needs root).
    Bulk(bulk_cli::BulkArgs),
}

/// Raises this process's soft limit on open descriptors to `want`, at most to the hard
/// limit; a no-op when it is already that high. Kernel-socket clients and servers that
/// hold ~1024 connections need more than the common default of 1024.
pub fn raise_fd_limit(want: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
        }
    }
}

/// Runs the CLI with the process's arguments and returns the process exit code.
pub fn main_entry() -> i32 {
    run_with_args(std::env::args_os())
}

/// Runs the CLI with the given arguments (the first is the program name) and returns the
/// exit code. Output goes to the process's stdout and stderr.
pub fn run_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return e.exit_code();
        }
    };
    match cli.command {
        Command::Up(a) => up::run(a),
        Command::Compare(a) => compare_cli::run(a),
        Command::Churn(a) => churn_cli::run(a),
        Command::KernelPeer(a) => kernel_peer::run(a),
        Command::Bulk(a) => bulk_cli::run(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_limit_is_raised_up_to_the_hard_limit_never_lowered() {
        use nix::sys::resource::{getrlimit, Resource};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        raise_fd_limit(soft / 2);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (soft, hard));
        // Raising a soft limit (up to the hard one) needs no privilege.
        let want = soft.saturating_add(1).min(hard);
        raise_fd_limit(want);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (want, hard));
        // Capped at the hard limit (an infinite one the kernel would refuse as a soft one).
        if hard != nix::sys::resource::RLIM_INFINITY {
            raise_fd_limit(u64::MAX);
            assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
        }
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fourtuple").chain(args.iter().copied()))
    }

    #[test]
    fn churn_flags_parse() {
        let cli = parse(&[
            "churn",
            "--in-memory",
            "--count",
            "2000",
            "--concurrency",
            "8",
            "--close",
            "server",
            "--policy",
            "local-port",
            "--port-range",
            "40000-40009",
            "--server-ports",
            "1",
            "--msl",
            "5s",
            "--latency",
            "100us",
            "--json",
        ])
        .unwrap();
        let Command::Churn(a) = cli.command else {
            panic!("not churn")
        };
        let cfg = a.to_config().unwrap();
        assert_eq!(cfg.stop, churn::StopAt::Count(2000));
        assert_eq!(cfg.concurrency, 8);
        assert_eq!(cfg.close, churn::CloseMode::Server);
        assert_eq!(cfg.policy, fourtuple_stack::ReusePolicy::LocalPort);
        assert_eq!(cfg.port_range, (40000, 40009));
        assert_eq!(cfg.server_ports, 1);
        assert_eq!(cfg.msl, core::time::Duration::from_secs(5));
        assert_eq!(cfg.latency, core::time::Duration::from_micros(100));
        assert!(a.json);
    }

    #[test]
    fn churn_defaults() {
        let Command::Churn(a) = parse(&["churn", "--in-memory"]).unwrap().command else {
            panic!("not churn")
        };
        let cfg = a.to_config().unwrap();
        let d = churn::ChurnConfig::default();
        assert_eq!(cfg.stop, d.stop);
        assert_eq!(cfg.msl, core::time::Duration::from_secs(30));
        assert_eq!(cfg.server_ports, 16);
        assert_eq!(cfg.port_range, d.port_range);
    }

    #[test]
    fn duration_mode_is_wall_clock() {
        let Command::Churn(a) = parse(&["churn", "--in-memory", "--duration", "250ms"])
            .unwrap()
            .command
        else {
            panic!("not churn")
        };
        assert_eq!(
            a.to_config().unwrap().stop,
            churn::StopAt::WallClock(core::time::Duration::from_millis(250))
        );
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for bad in [
            &["churn", "--in-memory", "--count", "0"][..],
            &["churn", "--in-memory", "--count", "10", "--duration", "5s"],
            &["churn", "--in-memory", "--close", "sideways"],
            &["churn", "--in-memory", "--policy", "lax"],
            &["churn", "--in-memory", "--port-range", "9-1"],
            &["churn", "--in-memory", "--msl", "30"],
            &["churn", "--in-memory", "--msl", "0s"],
            &["churn", "--in-memory", "--latency", "fast"],
            &["churn", "--in-memory", "--concurrency", "0"],
            &["churn", "--in-memory", "--server-ports", "0"],
            &["churn", "--bogus"],
        ] {
            let e = parse(bad).expect_err(&format!("{bad:?} parsed"));
            assert_eq!(e.exit_code(), EXIT_USAGE, "{bad:?}");
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        let e = parse(&["churn", "--in-memory", "--port-range", "9-1"]).unwrap_err();
        assert!(e.to_string().contains("greater than HI"), "{e}");
        let e = parse(&["churn", "--in-memory", "--latency", "5"]).unwrap_err();
        assert!(e.to_string().contains("no unit"), "{e}");
    }

    #[test]
    fn server_ports_that_do_not_fit_are_rejected() {
        let Command::Churn(a) = parse(&["churn", "--in-memory", "--server-ports", "60000"])
            .unwrap()
            .command
        else {
            panic!("not churn")
        };
        assert!(a.to_config().is_err());
    }

    #[test]
    fn up_flags_parse() {
        let cli = parse(&[
            "up",
            "--tun",
            "ft0",
            "--addr",
            "192.0.2.2/24",
            "--host-addr",
            "192.0.2.1",
            "--serve",
            "echo:7,discard:9,http:80",
            "--pcap",
            "x.pcap",
            "--msl",
            "5s",
            "--policy",
            "local-port",
            "--json",
        ])
        .unwrap();
        let Command::Up(a) = cli.command else {
            panic!("not up")
        };
        assert_eq!(a.tun.as_deref(), Some("ft0"));
        assert_eq!(a.mtu, 1500);
        assert!(!a.offload);
        assert_eq!(a.serve.unwrap().0.len(), 3);
        assert_eq!(a.msl, core::time::Duration::from_secs(5));
        assert!(a.json);
    }

    #[test]
    fn up_usage_errors() {
        for bad in [
            &["up", "--addr", "192.0.2.2/24"][..],
            &[
                "up",
                "--tun",
                "a",
                "--af-packet",
                "b",
                "--addr",
                "192.0.2.2/24",
            ],
            &["up", "--tun", "a"],
            &["up", "--tun", "a", "--addr", "192.0.2.2"],
            &[
                "up",
                "--tun",
                "a",
                "--addr",
                "192.0.2.2/24",
                "--serve",
                "ftp:21",
            ],
        ] {
            let e = parse(bad).expect_err(&format!("{bad:?} parsed"));
            assert_eq!(e.exit_code(), EXIT_USAGE, "{bad:?}");
        }
        // Checked after parsing, before any device is touched.
        for bad in [
            &[
                "fourtuple",
                "up",
                "--tun",
                "a",
                "--addr",
                "192.0.2.2/24",
                "--host-addr",
                "192.0.2.2",
            ][..],
            &[
                "fourtuple",
                "up",
                "--tun",
                "a",
                "--addr",
                "192.0.2.2/24",
                "--host-addr",
                "198.51.100.1",
            ],
            &[
                "fourtuple",
                "up",
                "--af-packet",
                "a",
                "--addr",
                "192.0.2.2/24",
                "--host-addr",
                "192.0.2.1",
            ],
        ] {
            assert_eq!(run_with_args(bad.iter().copied()), EXIT_USAGE, "{bad:?}");
        }
    }

    #[test]
    fn up_mtu_and_offload_go_with_a_tun() {
        let Command::Up(a) = parse(&[
            "up",
            "--tun",
            "ft0",
            "--addr",
            "192.0.2.2/24",
            "--mtu",
            "65535",
            "--offload",
        ])
        .unwrap()
        .command
        else {
            panic!("not up")
        };
        assert_eq!(a.mtu, 65535);
        assert!(a.offload);
        let cfg = up::tun_mss(fourtuple_stack::Config::default(), 65535);
        assert_eq!(cfg.mss_v4, 65495);
        assert_eq!(
            up::tun_mss(fourtuple_stack::Config::default(), 1500).mss_v4,
            1460
        );
        assert!(parse(&["up", "--tun", "a", "--addr", "192.0.2.2/24", "--mtu", "100"]).is_err());
        for bad in [
            &[
                "fourtuple",
                "up",
                "--af-packet",
                "a",
                "--addr",
                "192.0.2.2/24",
                "--offload",
            ][..],
            &[
                "fourtuple",
                "up",
                "--af-packet",
                "a",
                "--addr",
                "192.0.2.2/24",
                "--mtu",
                "9000",
            ],
        ] {
            assert_eq!(run_with_args(bad.iter().copied()), EXIT_USAGE, "{bad:?}");
        }
    }

    #[test]
    fn bulk_parses_its_flags() {
        let Command::Bulk(a) = parse(&[
            "bulk",
            "--vs-kernel",
            "--bytes",
            "8MiB",
            "--setups",
            "1500,9000+offload",
            "--rounds",
            "3",
            "--json",
        ])
        .unwrap()
        .command
        else {
            panic!("not bulk")
        };
        assert!(a.vs_kernel && a.json);
        assert_eq!(a.bytes, 8 << 20);
        assert_eq!(a.setups.0.len(), 2);
        assert_eq!(a.rounds, 3);
        assert!(!a.no_veth_like);
        let Command::Bulk(a) = parse(&["bulk", "--vs-kernel", "--no-veth-like"])
            .unwrap()
            .command
        else {
            panic!("not bulk")
        };
        assert!(a.no_veth_like);
        assert!(parse(&["bulk", "--vs-kernel", "--setups", "1500+gro"]).is_err());
        assert!(parse(&["bulk", "--vs-kernel", "--rounds", "0"]).is_err());
        assert_eq!(run_with_args(["fourtuple", "bulk"]), EXIT_USAGE);
    }

    #[test]
    fn compare_parses_its_flags_and_rejects_foreign_sysctls() {
        let cli = Cli::try_parse_from([
            "fourtuple",
            "compare",
            "--quick",
            "--json",
            "--plot",
            "x.svg",
            "--sysctl",
            "net.ipv4.tcp_rfc1337=1",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Compare(ref a) if a.quick && a.json));
        assert_eq!(
            run_with_args(["fourtuple", "compare", "--sysctl", "kernel.panic=1"]),
            EXIT_USAGE
        );
    }

    #[test]
    fn every_flag_has_help() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            for arg in sub.get_arguments() {
                if arg.is_hide_set() {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "{} --{:?} has no help",
                    sub.get_name(),
                    arg.get_long()
                );
            }
        }
    }
}
