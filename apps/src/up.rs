//! The `up` command: run the stack on a TUN interface or on AF_PACKET until SIGINT/SIGTERM.
//!
//! This module owns the flags of `fourtuple up`, setting up the device they name, the
//! `ready` line, and the final report (human text, or one JSON object per line with
//! `--json`: `{"event":"ready",...}` then `{"event":"exit",...}`). It must never implement
//! protocol logic or move packets itself: the device and the event loop are
//! `fourtuple-netdev`'s, the servers are [`crate::servers`]'. Exit codes: 0 after a signal
//! or `--exit-after`, 1 when the device could not be set up or failed while running, 2 for
//! usage errors.

use core::time::Duration;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use clap::{ArgGroup, Args};
use fourtuple_netdev::pcap::{LinkType, PcapWriter};
use fourtuple_netdev::{
    AfPacketDevice, Device, EventLoop, LoopOptions, StopReason, TunConfig, TunDevice,
};
use fourtuple_stack::{Config, Medium, ReusePolicy, Stack};
use serde_json::{json, Map, Value};

use crate::args::{parse_policy, parse_positive_duration};
use crate::servers::{parse_service_list, stats_json, Servers, ServiceList};
use crate::{EXIT_FAILURES, EXIT_OK, EXIT_USAGE};

/// Flags of `fourtuple up`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("device").required(true).args(["tun", "af_packet"])))]
pub(crate) struct UpArgs {
    /// Create (or attach to) the TUN interface NAME and run the stack behind it: the kernel
    /// is the host side of the TUN, the stack owns --addr. Needs CAP_NET_ADMIN.
    #[arg(long, value_name = "NAME")]
    pub tun: Option<String>,

    /// Attach to the existing interface IFACE with an AF_PACKET socket instead (a veth end,
    /// a NIC): the stack sends Ethernet frames with the interface's MAC and answers ARP.
    /// Give the kernel no address on IFACE. Needs CAP_NET_RAW.
    #[arg(long, value_name = "IFACE")]
    pub af_packet: Option<String>,

    /// The stack's own IPv4 address and prefix length, e.g. 192.0.2.2/24.
    #[arg(long, value_name = "IP/PREFIX", value_parser = parse_cidr)]
    pub addr: (Ipv4Addr, u8),

    /// With --tun: the kernel's address on the TUN (same prefix as --addr), e.g. 192.0.2.1.
    /// Without it the TUN comes up with no address and the caller routes to it.
    #[arg(long, value_name = "IP")]
    pub host_addr: Option<Ipv4Addr>,

    /// With --tun: the TUN's MTU (576-65535). Above 1500 the stack's MSS follows it
    /// (MTU - 40), so the kernel and the stack exchange segments of up to 64 KiB.
    #[arg(long, value_name = "BYTES", default_value_t = fourtuple_netdev::tun::DEFAULT_MTU,
          value_parser = clap::value_parser!(u16).range(576..))]
    pub mtu: u16,

    /// With --tun: open it with IFF_VNET_HDR and TSO/checksum offloads, so the kernel hands
    /// over TCP super-packets of up to 64 KiB and the stack's segments go out merged into
    /// them (GSO), at any MTU. Kernel 4.x or later.
    #[arg(long)]
    pub offload: bool,

    /// With --tun: the kernel's transmit queue toward the stack, in packets (its default
    /// for a TUN is 500). A burst longer than the queue while the stack reads is dropped;
    /// the exit report counts those drops (device.kernel_dropped_in).
    #[arg(long, value_name = "PACKETS", value_parser = clap::value_parser!(u32).range(1..))]
    pub txqueuelen: Option<u32>,

    /// Before sleeping, poll the device for up to this long without sleeping, e.g. 50us
    /// (0: never). Lower latency when traffic is sparse, for up to that much CPU after
    /// each burst; an idle stack still sleeps.
    #[arg(long, value_name = "DURATION", value_parser = crate::args::parse_duration,
          default_value = "0")]
    pub busy_poll: Duration,

    /// Services to run, comma-separated KIND:PORT; KIND is echo, discard, chargen or http,
    /// e.g. echo:7,discard:9,http:80. Without it the stack only answers ping (and resets
    /// connection attempts).
    #[arg(long, value_name = "LIST", value_parser = parse_service_list)]
    pub serve: Option<ServiceList>,

    /// Record every packet read or written to FILE (pcap; raw IP for --tun, Ethernet for
    /// --af-packet).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<std::path::PathBuf>,

    /// Maximum segment lifetime; TIME_WAIT lasts 2*MSL.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration,
          default_value = "30s")]
    pub msl: Duration,

    /// Port-reuse policy: exact-tuple, local-port or timestamp-reuse.
    #[arg(long, value_name = "P", value_parser = parse_policy,
          default_value_t = ReusePolicy::ExactTuple)]
    pub policy: ReusePolicy,

    /// Stop by itself after this long, as if signalled (a safety bound for scripts).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub exit_after: Option<Duration>,

    /// Print JSON objects on stdout, one per line: {"event":"ready",...} once serving and
    /// {"event":"exit",...} with the final counters.
    #[arg(long)]
    pub json: bool,
}

/// Parses `A.B.C.D/N` with `N <= 32`.
pub(crate) fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, prefix) = s
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not IP/PREFIX, e.g. 192.0.2.2/24"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("{prefix:?} is not a prefix length (0-32)"))?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        return Err(format!("{ip} cannot be a host address"));
    }
    Ok((ip, prefix))
}

fn same_prefix(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(a) & mask == u32::from(b) & mask
}

/// 16 bytes from the OS for ISNs, timestamps and ports; a time-based fallback.
pub(crate) fn random_seed() -> [u8; 16] {
    use std::io::Read;
    let mut seed = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        seed = (t ^ u128::from(std::process::id()) << 64).to_le_bytes();
    }
    seed
}

/// Where `up` runs, for the report.
struct Where {
    device: &'static str,
    interface: String,
    mac: Option<String>,
}

/// Runs `fourtuple up` and returns the exit code.
pub(crate) fn run(a: UpArgs) -> i32 {
    let (addr, prefix) = a.addr;
    if let Some(host) = a.host_addr {
        if a.tun.is_none() {
            eprintln!(
                "fourtuple up: --host-addr goes with --tun; with --af-packet, give the \
                 kernel's address to the peer interface yourself"
            );
            return EXIT_USAGE;
        }
        if host == addr {
            eprintln!("fourtuple up: --host-addr {host} is the stack's own --addr");
            return EXIT_USAGE;
        }
        if !same_prefix(host, addr, prefix) {
            eprintln!("fourtuple up: --host-addr {host} is not in {addr}/{prefix}");
            return EXIT_USAGE;
        }
    }
    if a.tun.is_none()
        && (a.offload || a.mtu != fourtuple_netdev::tun::DEFAULT_MTU || a.txqueuelen.is_some())
    {
        eprintln!("fourtuple up: --mtu, --offload and --txqueuelen go with --tun");
        return EXIT_USAGE;
    }
    let cfg = Config {
        msl: a.msl,
        reuse_policy: a.policy,
        ..Config::default()
    };
    if let Some(name) = a.tun.clone() {
        let tun_cfg = TunConfig {
            host_addr: a.host_addr.map(|h| (h, prefix)),
            mtu: a.mtu,
            offload: a.offload,
            tx_queue_len: a.txqueuelen,
            ..TunConfig::new(name)
        };
        let dev = match TunDevice::create(&tun_cfg) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("fourtuple up: {e}");
                return EXIT_FAILURES;
            }
        };
        let cfg = tun_mss(cfg, dev.mtu());
        let at = Where {
            device: "tun",
            interface: dev.name().to_string(),
            mac: None,
        };
        serve(dev, cfg, LinkType::Raw, at, &a)
    } else if let Some(ifname) = a.af_packet.clone() {
        let dev = match AfPacketDevice::open(&ifname) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("fourtuple up: {e}");
                return EXIT_FAILURES;
            }
        };
        let cfg = Config {
            medium: Medium::Ethernet { mac: dev.mac() },
            ..with_mtu(cfg, dev.ip_mtu())
        };
        let at = Where {
            device: "af-packet",
            interface: ifname,
            mac: Some(fourtuple_netdev::af_packet::format_mac(dev.mac())),
        };
        serve(dev, cfg, LinkType::Ethernet, at, &a)
    } else {
        eprintln!("fourtuple up: give --tun NAME or --af-packet IFACE");
        EXIT_USAGE
    }
}

/// The stack's MSS for an IP MTU below 1500.
pub(crate) fn with_mtu(cfg: Config, ip_mtu: usize) -> Config {
    let mtu = ip_mtu.clamp(576, 1500) as u16;
    Config {
        mss_v4: cfg.mss_v4.min(mtu - 40),
        mss_v6: cfg.mss_v6.min(mtu - 60),
        ..cfg
    }
}

/// The stack's MSS behind a TUN of MTU `ip_mtu`: as [`with_mtu`] up to 1500, and
/// `ip_mtu - 40` (IPv4) above it, so a large MTU means large segments both ways.
pub(crate) fn tun_mss(cfg: Config, ip_mtu: usize) -> Config {
    if ip_mtu <= 1500 {
        return with_mtu(cfg, ip_mtu);
    }
    let mtu = ip_mtu.min(65_535) as u16;
    Config {
        mss_v4: mtu - 40,
        mss_v6: mtu - 60,
        ..cfg
    }
}

/// Opens the pcap file named by `path`.
pub(crate) fn open_pcap(
    path: &std::path::Path,
    link: LinkType,
) -> io::Result<PcapWriter<BufWriter<std::fs::File>>> {
    let f = std::fs::File::create(path)
        .map_err(|e| io::Error::new(e.kind(), format!("pcap file {}: {e}", path.display())))?;
    PcapWriter::new(BufWriter::new(f), link)
}

fn serve<D: Device + AsRawFd>(dev: D, cfg: Config, link: LinkType, at: Where, a: &UpArgs) -> i32 {
    let (addr, prefix) = a.addr;
    let mut stack = Stack::new(cfg, random_seed());
    stack.add_address(IpAddr::V4(addr));
    let pcap = match a.pcap.as_deref().map(|p| open_pcap(p, link)).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fourtuple up: {e}");
            return EXIT_FAILURES;
        }
    };
    let opts = LoopOptions {
        max_duration: a.exit_after,
        pcap,
        busy_poll: a.busy_poll,
        ..LoopOptions::default()
    };
    let mut lp = match EventLoop::new(dev, stack, opts) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fourtuple up: cannot start the event loop: {e}");
            return EXIT_FAILURES;
        }
    };
    let mut servers = Servers::new(a.serve.clone().unwrap_or_default().0);
    if let Err(e) = servers.open(lp.stack_mut(), IpAddr::V4(addr)) {
        eprintln!("fourtuple up: {e}");
        return EXIT_FAILURES;
    }
    let services: Vec<Value> = servers
        .services()
        .iter()
        .map(|s| json!({"service": s.kind.name(), "port": s.port}))
        .collect();
    if a.json {
        println!(
            "{}",
            json!({
                "event": "ready",
                "device": at.device,
                "interface": at.interface,
                "addr": format!("{addr}/{prefix}"),
                "host_addr": a.host_addr.map(|h| h.to_string()),
                "mac": at.mac,
                "serve": services,
                "policy": a.policy.name(),
                "msl_sec": a.msl.as_secs_f64(),
                "pcap": a.pcap.as_ref().map(|p| p.display().to_string()),
                "pid": std::process::id(),
            })
        );
    } else {
        let list: Vec<String> = servers
            .services()
            .iter()
            .map(|s| format!("{}:{}", s.kind.name(), s.port))
            .collect();
        eprintln!(
            "fourtuple up: {} {} as {addr}/{prefix}{}{}, serving [{}]; SIGINT or SIGTERM stops",
            at.device,
            at.interface,
            a.host_addr
                .map(|h| format!(", kernel side {h}"))
                .unwrap_or_default(),
            at.mac
                .as_deref()
                .map(|m| format!(", mac {m}"))
                .unwrap_or_default(),
            list.join(",")
        );
        println!("ready");
    }
    let _ = io::stdout().flush();

    let result = lp.run(&mut servers);
    let (reason, error) = match &result {
        Ok(r) => (r.name(), None),
        Err(e) => ("error", Some(e.to_string())),
    };
    if let Some(e) = &error {
        eprintln!("fourtuple up: stopped on an error: {e}");
    }
    report(&lp, &servers, reason, error.as_deref(), a.json);
    match result {
        Ok(StopReason::Signal | StopReason::Deadline | StopReason::Requested) => EXIT_OK,
        Ok(StopReason::AppDone) => EXIT_OK,
        Err(_) => EXIT_FAILURES,
    }
}

/// Prints the final counters: non-zero stack counters, TIME_WAIT, device and servers.
fn report<D: Device + AsRawFd>(
    lp: &EventLoop<D>,
    servers: &Servers,
    reason: &str,
    error: Option<&str>,
    json_out: bool,
) {
    let stack = lp.stack();
    let mut dev_entries = lp.stats().entries();
    if let Some(d) = lp.device().kernel_drops() {
        dev_entries.push(("kernel_dropped_in", d.toward_stack));
        dev_entries.push(("kernel_dropped_out", d.from_stack));
    }
    let dev: Map<String, Value> = dev_entries
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    if json_out {
        let mut v = stats_json(stack, servers.stats());
        if let Value::Object(m) = &mut v {
            m.insert("event".into(), json!("exit"));
            m.insert("reason".into(), json!(reason));
            m.insert("error".into(), json!(error));
            m.insert("device".into(), Value::Object(dev));
            if let Some(Value::Object(c)) = m.get_mut("counters") {
                c.retain(|_, v| v.as_u64() != Some(0));
            }
        }
        println!("{v}");
    } else {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "stopped: {reason}");
        let _ = writeln!(out, "  time_wait             {}", stack.time_wait().len());
        let _ = writeln!(out, "  connections           {}", stack.connection_count());
        for (k, v) in stack.counters().entries() {
            if v != 0 {
                let _ = writeln!(out, "  {k:<21} {v}");
            }
        }
        for (k, v) in &dev_entries {
            let _ = writeln!(out, "  device.{k:<14} {v}");
        }
        for (k, v) in servers.stats().entries() {
            let _ = writeln!(out, "  servers.{k:<13} {v}");
        }
    }
    let _ = io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr() {
        assert_eq!(
            parse_cidr("192.0.2.2/24"),
            Ok((Ipv4Addr::new(192, 0, 2, 2), 24))
        );
        assert!(parse_cidr("192.0.2.2").unwrap_err().contains("IP/PREFIX"));
        assert!(parse_cidr("192.0.2.2/33").is_err());
        assert!(parse_cidr("0.0.0.0/24").is_err());
        assert!(parse_cidr("x/24").is_err());
    }

    #[test]
    fn prefixes() {
        let a = Ipv4Addr::new(192, 0, 2, 2);
        assert!(same_prefix(a, Ipv4Addr::new(192, 0, 2, 1), 24));
        assert!(!same_prefix(a, Ipv4Addr::new(192, 0, 3, 1), 24));
        assert!(same_prefix(a, Ipv4Addr::new(10, 0, 0, 1), 0));
    }

    #[test]
    fn mss_follows_mtu() {
        let c = with_mtu(Config::default(), 1400);
        assert_eq!(c.mss_v4, 1360);
        let c = with_mtu(Config::default(), 9000);
        assert_eq!(c.mss_v4, 1460);
    }
}
