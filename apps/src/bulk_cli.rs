//! The `bulk` command line: flags, privileges, Ctrl-C, and printing a [`BulkReport`].
//!
//! This module owns the thin layer between the command line and [`crate::bulk`]: parsing
//! byte counts and setups, refusing to run without root, turning SIGINT/SIGTERM into the
//! stop flag the run polls (so its namespaces are removed), and the human and `--json`
//! outputs. It must never move bytes or time anything itself; with `--json` it prints
//! exactly one JSON object on stdout and nothing else there.

use core::time::Duration;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;
use serde_json::{json, Value};

use crate::args::parse_positive_duration;
use crate::bulk::{self, BulkOptions, BulkReport, Transfer, TunSetup};
use crate::{EXIT_FAILURES, EXIT_OK, EXIT_USAGE};

/// Flags of `fourtuple bulk`.
#[derive(Args, Debug)]
pub(crate) struct BulkArgs {
    /// Measure kernel -> kernel over veth (with its defaults, then set up like the TUN),
    /// then kernel -> fourtuple and fourtuple -> kernel over a TUN, in private network
    /// namespaces this command creates and removes (needs root). The only mode so far.
    #[arg(long)]
    pub vs_kernel: bool,

    /// Bytes each transfer carries, e.g. 1GiB, 64MiB, 1000000 (K, M, G are powers of
    /// 1000; KiB, MiB, GiB of 1024).
    #[arg(long, value_name = "N", default_value = "1GiB", value_parser = parse_bytes)]
    pub bytes: u64,

    /// TUN setups to measure, comma-separated: MTU or MTU+offload (IFF_VNET_HDR with TSO
    /// and checksum offloads), e.g. 1500,65535,1500+offload.
    #[arg(long, value_name = "LIST", default_value = "1500,65535,1500+offload",
          value_parser = parse_setup_list)]
    pub setups: SetupList,

    /// Repeat every transfer this many times (the machine may be noisy).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,

    /// Give up on a transfer after this long.
    #[arg(long, value_name = "DURATION", default_value = "60s",
          value_parser = parse_positive_duration)]
    pub timeout: Duration,

    /// fourtuple's per-connection send and receive buffers (its window), e.g. 4MiB.
    #[arg(long, value_name = "N", default_value = "4MiB", value_parser = parse_bytes)]
    pub stack_buffer: u64,

    /// Packets fourtuple's event loop reads from the TUN per turn.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,

    /// Skip the second kernel -> kernel transfer per setup over the veth set up like the
    /// TUN (the setup's MTU; without offloads unless the setup has them, via `ethtool`).
    #[arg(long)]
    pub no_veth_like: bool,

    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A parsed `--setups` list (a newtype, so clap takes the list as one value).
#[derive(Clone, Debug)]
pub(crate) struct SetupList(pub Vec<TunSetup>);

fn parse_setup_list(s: &str) -> Result<SetupList, String> {
    bulk::parse_setups(s).map(SetupList)
}

/// Parses a byte count: digits, then nothing, `K`/`M`/`G` (powers of 1000) or
/// `KiB`/`MiB`/`GiB` (powers of 1024); at least 1.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count: write e.g. 64MiB or 1000000"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KB" | "kB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (K, M, G, KiB, MiB or GiB)"
            ))
        }
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if v == 0 {
        return Err(format!("{s:?}: must be at least 1 byte"));
    }
    Ok(v)
}

/// Runs `bulk`; returns the exit code.
pub(crate) fn run(a: BulkArgs) -> i32 {
    if !a.vs_kernel {
        eprintln!("fourtuple bulk: only --vs-kernel is implemented; see --help");
        return EXIT_USAGE;
    }
    if !crate::compare::netns::have_privileges() {
        eprintln!(
            "fourtuple bulk --vs-kernel: needs root (it creates private network namespaces, \
             a veth pair and a TUN); run it with sudo"
        );
        return EXIT_USAGE;
    }
    let Ok(stack_buffer) = usize::try_from(a.stack_buffer) else {
        eprintln!("fourtuple bulk: --stack-buffer is too large");
        return EXIT_USAGE;
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("fourtuple bulk: cannot install a signal handler: {e}");
            return EXIT_FAILURES;
        }
    }
    let opts = BulkOptions {
        bytes: a.bytes,
        setups: a.setups.0.clone(),
        rounds: a.rounds,
        timeout: a.timeout,
        stack_buffer,
        batch: a.batch as usize,
        veth_like: !a.no_veth_like,
    };
    let date = bulk::utc_now();
    let report = match bulk::run(&opts, stop) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fourtuple bulk: {e}");
            return EXIT_FAILURES;
        }
    };
    if a.json {
        println!("{}", to_json(&report, &date));
    } else {
        print_text(&report, &date);
    }
    if report.all_ok() {
        EXIT_OK
    } else {
        EXIT_FAILURES
    }
}

fn transfer_json(t: &Transfer) -> Value {
    let mut v = json!({
        "bytes": t.bytes,
        "received": t.received,
        "intact": t.intact,
        "ok": t.ok(),
        "seconds": t.seconds,
        "gbit_per_s": t.gbit_per_s(),
        "error": t.error,
        "fourtuple_cpu_seconds": t.fourtuple_cpu_seconds,
    });
    if let Some(w) = &t.wire {
        v["veth_tx_packets"] = json!(w.packets);
        v["veth_tx_bytes"] = json!(w.bytes);
        v["avg_ip_packet_bytes"] = json!(w.avg_ip_packet());
    }
    if let Some(s) = &t.loop_stats {
        v["loop"] = json!({
            "rx_packets": s.rx_packets,
            "rx_bytes": s.rx_bytes,
            "tx_packets": s.tx_packets,
            "tx_bytes": s.tx_bytes,
            "tx_would_block": s.tx_would_block,
            "turns": s.turns,
        });
    }
    v
}

/// The like-the-TUN veth transfer's speed (0 when it was not measured or failed).
fn like_gbit(t: &bulk::TunResult) -> f64 {
    t.veth_like
        .as_ref()
        .map_or(0.0, |l| l.transfer.gbit_per_s())
}

/// a / b, or 0 (left out of spreads) when either did not run.
fn div(a: f64, b: f64) -> f64 {
    if a > 0.0 && b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn ratio(a: f64, b: f64) -> Value {
    if a > 0.0 && b > 0.0 {
        json!(a / b)
    } else {
        Value::Null
    }
}

/// (min, median, max) of the values that are above zero.
fn spread(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    v.retain(|x| *x > 0.0);
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some((v[0], v[v.len() / 2], v[v.len() - 1]))
}

fn spread_json(v: Vec<f64>) -> Value {
    match spread(v) {
        Some((lo, med, hi)) => json!({"min": lo, "median": med, "max": hi}),
        None => Value::Null,
    }
}

fn to_json(r: &BulkReport, date: &str) -> Value {
    let rounds: Vec<Value> = r
        .rounds
        .iter()
        .map(|round| {
            json!({
                "tun": round.tun.iter().map(|t| { let veth = t.veth.gbit_per_s(); let like = like_gbit(t); json!({
                    "setup": t.setup.label(),
                    "kernel_veth": transfer_json(&t.veth),
                    "kernel_veth_like": t.veth_like.as_ref().map(|l| {
                        let mut v = transfer_json(&l.transfer);
                        v["veth_mtu"] = json!(l.mtu);
                        v["veth_offloads"] = json!(l.offloads);
                        v
                    }),
                    "mtu": t.setup.mtu,
                    "offload": t.setup.offload,
                    "fourtuple_mss": t.mss,
                    "kernel_to_fourtuple": transfer_json(&t.to_fourtuple),
                    "fourtuple_to_kernel": transfer_json(&t.from_fourtuple),
                    "ratio_kernel_to_fourtuple": ratio(t.to_fourtuple.gbit_per_s(), veth),
                    "ratio_fourtuple_to_kernel": ratio(t.from_fourtuple.gbit_per_s(), veth),
                    "ratio_kernel_to_fourtuple_vs_veth_like": ratio(t.to_fourtuple.gbit_per_s(), like),
                    "ratio_fourtuple_to_kernel_vs_veth_like": ratio(t.from_fourtuple.gbit_per_s(), like),
                    "tun_tx_queue_len": t.tx_queue_len,
                    "kernel_drops_toward_fourtuple": t.kernel_drops.map(|d| d.0),
                    "kernel_drops_from_fourtuple": t.kernel_drops.map(|d| d.1),
                    "device": {
                        "gso_packets_in": t.device.gso_packets,
                        "checksums_completed": t.device.csum_completed,
                        "checksums_trusted": t.device.csum_trusted,
                        "bad_vnet_hdr": t.device.bad_vnet_hdr,
                        "super_packets_out": t.device.gso_out.super_packets,
                        "segments_merged_out": t.device.gso_out.merged_segments,
                        "super_packets_refused": t.device.gso_rejected,
                    },
                })}).collect::<Vec<_>>(),
            })
        })
        .collect();
    let summary: Vec<Value> = r
        .options
        .setups
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let col = |f: &dyn Fn(&bulk::Round) -> f64| -> Vec<f64> {
                r.rounds.iter().map(f).collect()
            };
            json!({
                "setup": s.label(),
                "kernel_to_fourtuple_gbit_per_s": spread_json(col(&|x| x.tun[i].to_fourtuple.gbit_per_s())),
                "fourtuple_to_kernel_gbit_per_s": spread_json(col(&|x| x.tun[i].from_fourtuple.gbit_per_s())),
                "ratio_kernel_to_fourtuple": spread_json(col(&|x| {
                    div(x.tun[i].to_fourtuple.gbit_per_s(), x.tun[i].veth.gbit_per_s())
                })),
                "ratio_fourtuple_to_kernel": spread_json(col(&|x| {
                    div(x.tun[i].from_fourtuple.gbit_per_s(), x.tun[i].veth.gbit_per_s())
                })),
                "kernel_veth_like_gbit_per_s": spread_json(col(&|x| like_gbit(&x.tun[i]))),
                "ratio_kernel_to_fourtuple_vs_veth_like": spread_json(col(&|x| {
                    div(x.tun[i].to_fourtuple.gbit_per_s(), like_gbit(&x.tun[i]))
                })),
                "ratio_fourtuple_to_kernel_vs_veth_like": spread_json(col(&|x| {
                    div(x.tun[i].from_fourtuple.gbit_per_s(), like_gbit(&x.tun[i]))
                })),
            })
        })
        .collect();
    json!({
        "date": date,
        "kernel": r.kernel,
        "cpus": r.cpus,
        "bytes": r.options.bytes,
        "rounds_requested": r.options.rounds,
        "stack_buffer": r.options.stack_buffer,
        "batch": r.options.batch,
        "veth": {"mtu": r.veth_mtu, "offloads": "kernel defaults (TSO/GSO/checksum on, GRO off)"},
        "veth_like": {
            "measured": r.veth_like_skipped.is_none(),
            "skipped": r.veth_like_skipped,
            "mtu": "the setup's",
            "ethtool_off_without_offloads": bulk::LIKE_OFF,
            "with_offloads": "kernel defaults",
        },
        "ok": r.all_ok(),
        "rounds": rounds,
        "summary": {
            "kernel_veth_gbit_per_s": spread_json(r.rounds.iter().flat_map(|x| x.tun.iter().map(|t| t.veth.gbit_per_s())).collect()),
            "tun": summary,
        },
    })
}

/// Speed, the ratios to the veth transfers (default, then like the TUN) when given, and
/// fourtuple's CPU per GiB or the veth's average packet when known.
fn fmt_transfer(t: &Transfer, veth: f64, like: Option<f64>) -> String {
    if !t.ok() {
        return format!("FAILED ({})", t.error.as_deref().unwrap_or("bytes differ"));
    }
    let g = t.gbit_per_s();
    let mut s = format!("{g:7.2} Gbit/s");
    if veth > 0.0 {
        s.push_str(&format!("  ({:.2}x veth", g / veth));
        match like {
            Some(l) if l > 0.0 => s.push_str(&format!(", {:.2}x veth like TUN)", g / l)),
            Some(_) => s.push_str(", veth like TUN failed)"),
            None => s.push(')'),
        }
    }
    if let Some(cpu) = t.fourtuple_cpu_seconds {
        let gib = t.bytes as f64 / f64::from(1u32 << 30);
        s.push_str(&format!("  fourtuple thread {:.2} CPU s/GiB", cpu / gib));
    }
    if let Some(w) = &t.wire {
        if let Some(avg) = w.avg_ip_packet() {
            s.push_str(&format!(
                "  {} packets, average IP packet {avg:.0} bytes",
                w.packets
            ));
        }
    }
    s
}

fn print_text(r: &BulkReport, date: &str) {
    println!(
        "bulk --vs-kernel, {date}, kernel {}, {} CPUs, {} bytes per transfer, fourtuple \
         buffers {} bytes, batch {}",
        r.kernel, r.cpus, r.options.bytes, r.options.stack_buffer, r.options.batch
    );
    if let Some(why) = &r.veth_like_skipped {
        println!("veth like the TUN: not measured: {why}");
    }
    for (i, round) in r.rounds.iter().enumerate() {
        if r.rounds.len() > 1 {
            println!("round {}:", i + 1);
        }
        for t in &round.tun {
            let veth = t.veth.gbit_per_s();
            let like = t.veth_like.as_ref().map(|l| l.transfer.gbit_per_s());
            println!(
                "  kernel -> kernel, veth MTU {} (kernel offloads): {}",
                r.veth_mtu,
                fmt_transfer(&t.veth, 0.0, None)
            );
            if let Some(l) = &t.veth_like {
                let offloads = if l.offloads {
                    "kernel offloads".to_string()
                } else {
                    format!("{} off", bulk::LIKE_OFF.join("/"))
                };
                println!(
                    "  kernel -> kernel, veth like TUN, MTU {} ({offloads}): {}",
                    l.mtu,
                    fmt_transfer(&l.transfer, 0.0, None)
                );
            }
            let drops = match t.kernel_drops {
                Some((to, from)) => format!("kernel dropped {to} toward fourtuple, {from} from it"),
                None => "drops unknown".into(),
            };
            println!(
                "  TUN {} (fourtuple MSS {}, txqueuelen {}, {drops}):",
                t.setup.label(),
                t.mss,
                t.tx_queue_len
            );
            println!(
                "    kernel -> fourtuple: {}",
                fmt_transfer(&t.to_fourtuple, veth, like)
            );
            println!(
                "    fourtuple -> kernel: {}",
                fmt_transfer(&t.from_fourtuple, veth, like)
            );
            if t.setup.offload {
                println!(
                    "    offloads: {} GSO packets in, {} with a trusted checksum ({} finished), \
                     {} super-packets out ({} segments)",
                    t.device.gso_packets,
                    t.device.csum_trusted,
                    t.device.csum_completed,
                    t.device.gso_out.super_packets,
                    t.device.gso_out.merged_segments
                );
            }
        }
    }
    if r.rounds.len() > 1 {
        println!(
            "ranges over {} rounds (min / median / max):",
            r.rounds.len()
        );
        let line = |name: &str, v: Vec<f64>| {
            if let Some((lo, med, hi)) = spread(v) {
                println!("  {name}: {lo:.2} / {med:.2} / {hi:.2}");
            }
        };
        line(
            "kernel veth, Gbit/s",
            r.rounds
                .iter()
                .flat_map(|x| x.tun.iter().map(|t| t.veth.gbit_per_s()))
                .collect(),
        );
        for (i, s) in r.options.setups.iter().enumerate() {
            let col =
                |f: &dyn Fn(&bulk::Round) -> f64| -> Vec<f64> { r.rounds.iter().map(f).collect() };
            line(
                &format!("{} kernel veth like TUN, Gbit/s", s.label()),
                col(&|x| like_gbit(&x.tun[i])),
            );
            line(
                &format!("{} kernel -> fourtuple, x veth", s.label()),
                col(&|x| {
                    div(
                        x.tun[i].to_fourtuple.gbit_per_s(),
                        x.tun[i].veth.gbit_per_s(),
                    )
                }),
            );
            line(
                &format!("{} fourtuple -> kernel, x veth", s.label()),
                col(&|x| {
                    div(
                        x.tun[i].from_fourtuple.gbit_per_s(),
                        x.tun[i].veth.gbit_per_s(),
                    )
                }),
            );
            line(
                &format!("{} kernel -> fourtuple, x veth like TUN", s.label()),
                col(&|x| div(x.tun[i].to_fourtuple.gbit_per_s(), like_gbit(&x.tun[i]))),
            );
            line(
                &format!("{} fourtuple -> kernel, x veth like TUN", s.label()),
                col(&|x| div(x.tun[i].from_fourtuple.gbit_per_s(), like_gbit(&x.tun[i]))),
            );
        }
    }
    if !r.all_ok() {
        println!("some transfers failed (see above)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_parse() {
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("3M").unwrap(), 3_000_000);
        assert_eq!(parse_bytes("1234").unwrap(), 1234);
        for bad in ["", "0", "1TB", "x", "-1", "99999999999GiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spreads_ignore_failures() {
        assert_eq!(spread(vec![3.0, 0.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(spread(vec![0.0]), None);
    }
}
