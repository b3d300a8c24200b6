//! `fourtuple kernel-peer` (hidden): a churn server on the host kernel's TCP, for the
//! interop tests and for `churn --target` by hand.
//!
//! This module owns the server half of the churn protocol of [`crate::churn`] on kernel
//! sockets: read the 16-byte request, check it, answer with the 16-byte reply, then close
//! as `--close` says (`client`: wait for the client's FIN, then close; `server`: close at
//! once, so TIME_WAIT lands on the kernel; `abort`: wait for the client's RST; `goodbye`:
//! send [`GOODBYE`], wait up to `--linger` for the client's FIN, and reset the connection
//! (SO_LINGER 0) if it lingers). It must never listen on anything but the address it is
//! given, run longer than `--exit-after`, or keep more than [`MAX_THREADS`] connections.

use core::time::Duration;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use clap::Args;

use crate::args::parse_positive_duration;
use crate::churn::{decode_request, reply, CloseMode, GOODBYE, MESSAGE_LEN};
use crate::{EXIT_FAILURES, EXIT_OK};

/// Connections served at once; more are closed at accept.
pub const MAX_THREADS: usize = 1024;

/// Flags of `fourtuple kernel-peer`.
#[derive(Args, Debug)]
pub(crate) struct KernelPeerArgs {
    /// Listen on this address (and the next --ports - 1 ports).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: SocketAddr,

    /// Number of consecutive ports to listen on.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: u16,

    /// How each connection ends: client, server, abort or goodbye.
    #[arg(long, value_enum, default_value_t = CloseMode::Client)]
    pub close: CloseMode,

    /// With --close goodbye: how long the client may linger before the server resets.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration,
          default_value = "2s")]
    pub linger: Duration,

    /// Exit after this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration,
          default_value = "120s")]
    pub exit_after: Duration,
}

#[derive(Default)]
struct Stats {
    served: AtomicU64,
    bad: AtomicU64,
    lingered: AtomicU64,
    active: AtomicUsize,
}

/// Runs the kernel-side churn server until `--exit-after`.
pub(crate) fn run(a: KernelPeerArgs) -> i32 {
    let stats = Arc::new(Stats::default());
    for i in 0..a.ports {
        let addr = SocketAddr::new(a.listen.ip(), a.listen.port().wrapping_add(i));
        let l = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("fourtuple kernel-peer: cannot listen on {addr}: {e}");
                return EXIT_FAILURES;
            }
        };
        let (stats, close, linger) = (stats.clone(), a.close, a.linger);
        std::thread::spawn(move || accept_loop(l, close, linger, stats));
    }
    println!("ready");
    let _ = io::stdout().flush();
    std::thread::sleep(a.exit_after);
    eprintln!(
        "fourtuple kernel-peer: served {}, bad requests {}, reset lingering clients {}",
        stats.served.load(Ordering::SeqCst),
        stats.bad.load(Ordering::SeqCst),
        stats.lingered.load(Ordering::SeqCst)
    );
    EXIT_OK
}

fn accept_loop(l: TcpListener, close: CloseMode, linger: Duration, stats: Arc<Stats>) {
    for conn in l.incoming() {
        let Ok(conn) = conn else { continue };
        if stats.active.load(Ordering::SeqCst) >= MAX_THREADS {
            continue;
        }
        stats.active.fetch_add(1, Ordering::SeqCst);
        let stats = stats.clone();
        std::thread::spawn(move || {
            match serve_one(conn, close, linger, &stats) {
                Ok(()) => stats.served.fetch_add(1, Ordering::SeqCst),
                Err(_) => stats.bad.fetch_add(1, Ordering::SeqCst),
            };
            stats.active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn serve_one(
    mut s: TcpStream,
    close: CloseMode,
    linger: Duration,
    stats: &Stats,
) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_nodelay(true)?;
    let mut req = [0u8; MESSAGE_LEN];
    s.read_exact(&mut req)?;
    let id = decode_request(&req)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a churn request"))?;
    s.write_all(&reply(id))?;
    let mut rest = [0u8; 64];
    match close {
        // Wait for the client's FIN (or RST), then close: our FIN comes second.
        CloseMode::Client | CloseMode::Abort => while s.read(&mut rest).unwrap_or(0) > 0 {},
        // Close first: TIME_WAIT lands here.
        CloseMode::Server => {}
        CloseMode::Goodbye => {
            s.write_all(GOODBYE)?;
            s.set_read_timeout(Some(linger))?;
            loop {
                match s.read(&mut rest) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        stats.lingered.fetch_add(1, Ordering::SeqCst);
                        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }
    drop(s);
    Ok(())
}
