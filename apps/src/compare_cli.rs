//! The `compare` command line: options, privileges, Ctrl-C, and output selection.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;

use crate::compare::{self, report, CompareOptions};
use crate::{EXIT_FAILURES, EXIT_OK, EXIT_USAGE};

/// Arguments of `fourtuple compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Short churn phases (2 s each instead of 10 s): the whole matrix in under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON document on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Print a Markdown table (for the README's results section) instead of the table.
    #[arg(long, conflicts_with = "json")]
    pub markdown: bool,
    /// Also write an SVG plot of the churn scenarios (connections/s and TIME_WAIT entries
    /// over time) to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Set a sysctl in every namespace before measuring, e.g.
    /// `--sysctl net.ipv4.tcp_rfc1337=1`; repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_sysctl)]
    pub sysctl: Vec<(String, String)>,
}

fn parse_sysctl(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    let k = k.trim();
    if !k.starts_with("net.") || k.contains("..") || k.contains('/') {
        return Err(format!(
            "only net.* sysctls can be set inside the namespaces, got {k:?}"
        ));
    }
    Ok((k.to_string(), v.trim().to_string()))
}

/// Runs `compare`; returns the exit code.
pub fn run(a: CompareArgs) -> i32 {
    if !compare::netns::have_privileges() {
        eprintln!(
            "fourtuple compare: needs root (it creates private network namespaces); \
             run it with sudo"
        );
        return EXIT_USAGE;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("fourtuple compare: cannot install a signal handler: {e}");
            return EXIT_FAILURES;
        }
    }
    let opts = CompareOptions {
        quick: a.quick,
        sysctls: a.sysctl,
    };
    let report = match compare::run(&opts, &stop) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fourtuple compare: {e}");
            return EXIT_FAILURES;
        }
    };
    if let Some(path) = &a.plot {
        if let Err(e) = std::fs::write(path, report::svg(&report)) {
            eprintln!("fourtuple compare: cannot write {}: {e}", path.display());
            return EXIT_FAILURES;
        }
    }
    if a.json {
        println!("{}", report::json(&report));
    } else if a.markdown {
        print!("{}", report::markdown(&report));
    } else {
        print!("{}", report::table(&report));
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::parse_sysctl;

    #[test]
    fn sysctl_arguments_are_checked() {
        assert_eq!(
            parse_sysctl("net.ipv4.tcp_rfc1337=1"),
            Ok(("net.ipv4.tcp_rfc1337".into(), "1".into()))
        );
        assert!(parse_sysctl("kernel.panic=1").is_err());
        assert!(parse_sysctl("net.ipv4.tcp_rfc1337").is_err());
        assert!(parse_sysctl("net/../../x=1").is_err());
    }
}
