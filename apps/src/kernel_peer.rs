//! `fourtuple kernel-peer` (hidden): a churn server on the host kernel's TCP, for the
//! interop tests and for `churn --target` by hand.
//!
//! This module owns the server half of the churn protocol of [`crate::churn`] on kernel
//! sockets: read the 16-byte request, check it, answer with the 16-byte reply, then close
//! as `--close` says (`client`: wait for the client's FIN, then close; `server`: close at
//! once, so TIME_WAIT lands on the kernel; `abort`: wait for the client's RST; `goodbye`:
//! send [`GOODBYE`], wait up to `--linger` for the client's FIN, and reset the connection
//! (SO_LINGER 0) if it lingers). It must never listen on anything but the address it is
//! given, run longer than `--exit-after`, or keep more than [`MAX_CONNECTIONS`]
//! connections.
//!
//! All connections live on one thread, non-blocking, driven by epoll (mio). The server
//! is the reference both clients of `churn --vs-kernel` are measured against, so it must
//! not be what limits them: a thread per connection (what this was first) capped it at
//! ~12-14k lifecycles/s on a 2-core machine, where both clients then measured the
//! server's thread spawns rather than their own speed.

use core::time::Duration;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::args::parse_positive_duration;
use crate::churn::{decode_request, reply, CloseMode, GOODBYE, MESSAGE_LEN};
use crate::{EXIT_FAILURES, EXIT_OK};

/// Connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long a connection may wait for its request, or for the client's end of stream,
/// before the server gives up on it (the same bound a blocking read timeout gave).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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
    served: u64,
    bad: u64,
    lingered: u64,
    refused_busy: u64,
    accept_errors: u64,
}

/// Where one connection is in the server's half of a lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the request; `got` bytes of it so far.
    Request { got: usize },
    /// Writing `msg` (0: the reply, 1: the goodbye); `sent` bytes of it so far.
    Writing { msg: u8, sent: usize },
    /// Reading until the client's end of stream (or reset); the deadline is the idle
    /// timeout, or the linger time in goodbye mode.
    AwaitEnd,
}

/// How a step of one connection ended.
enum Outcome {
    /// Waiting for readiness.
    Wait,
    /// Finished: close the socket and count the connection served.
    Served,
    /// Finished after a goodbye the client did not answer in time: reset, count both.
    Lingered,
    /// Not a churn client (bad request, early end of stream, error before the reply).
    Bad,
}

struct Conn {
    sock: TcpStream,
    phase: Phase,
    req: [u8; MESSAGE_LEN],
    reply: [u8; MESSAGE_LEN],
    deadline: Instant,
}

/// Runs the kernel-side churn server until `--exit-after`.
pub(crate) fn run(a: KernelPeerArgs) -> i32 {
    // SIGINT and SIGTERM end it like --exit-after does: with its counts printed.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("fourtuple kernel-peer: cannot install a signal handler: {e}");
            return EXIT_FAILURES;
        }
    }
    match serve(&a, &stop) {
        Ok(stats) => {
            eprintln!(
                "fourtuple kernel-peer: served {}, bad requests {}, reset lingering clients {}, \
                 refused at the {MAX_CONNECTIONS}-connection limit {}, accept errors {}",
                stats.served, stats.bad, stats.lingered, stats.refused_busy, stats.accept_errors
            );
            EXIT_OK
        }
        Err(e) => {
            eprintln!("fourtuple kernel-peer: {e}");
            EXIT_FAILURES
        }
    }
}

fn serve(a: &KernelPeerArgs, stop: &AtomicBool) -> io::Result<Stats> {
    // A full house is MAX_CONNECTIONS sockets plus the listeners: more than the common
    // soft limit of 1024 descriptors, and accept failing with EMFILE would stall it.
    crate::raise_fd_limit((MAX_CONNECTIONS + usize::from(a.ports) + 64) as u64);
    let mut listeners = Vec::with_capacity(usize::from(a.ports));
    for i in 0..a.ports {
        let addr = SocketAddr::new(a.listen.ip(), a.listen.port().wrapping_add(i));
        let l = listen(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        listeners.push(l);
    }
    println!("ready");
    let _ = io::stdout().flush();
    serve_on(listeners, a, stop)
}

/// Accept queue length asked of the kernel (it caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// A non-blocking listener on `addr` with SO_REUSEADDR and a [`BACKLOG`]-long accept
/// queue. The default of 128 (std's and mio's) overflowed under churn at 256 in flight:
/// the kernel dropped handshakes and the client waited out a retransmission timeout.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    s.set_nonblocking(true)?;
    Ok(TcpListener::from_std(s.into()))
}

/// Serves on `listeners` (bound already) until `a.exit_after` has passed or `stop` is set
/// (checked at least every [`SWEEP`]).
fn serve_on(
    mut listeners: Vec<TcpListener>,
    a: &KernelPeerArgs,
    stop: &AtomicBool,
) -> io::Result<Stats> {
    let poll = Poll::new()?;
    for (i, l) in listeners.iter_mut().enumerate() {
        poll.registry().register(l, Token(i), Interest::READABLE)?;
    }
    let mut srv = Server {
        poll,
        first_conn: listeners.len(),
        listeners,
        conns: Vec::new(),
        free: Vec::new(),
        active: 0,
        stats: Stats::default(),
        close: a.close,
        linger: a.linger,
        accept_stalled: false,
    };
    let mut events = Events::with_capacity(1024);
    let end = Instant::now() + a.exit_after;
    let mut next_sweep = Instant::now() + SWEEP;
    loop {
        let now = Instant::now();
        if now >= end || stop.load(Ordering::Relaxed) {
            return Ok(srv.stats);
        }
        let mut wait = end.min(next_sweep).saturating_duration_since(now);
        if srv.accept_stalled {
            wait = wait.min(Duration::from_millis(10));
        }
        match srv.poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let t = ev.token().0;
            if t < srv.first_conn {
                srv.accept_from(t)?;
            } else if let Some(c) = srv
                .conns
                .get_mut(t - srv.first_conn)
                .and_then(Option::as_mut)
            {
                let out = step(c, srv.close, srv.linger);
                srv.finish(t - srv.first_conn, out);
            }
        }
        if srv.accept_stalled {
            // Edge-triggered listeners do not signal the connections already queued.
            srv.accept_stalled = false;
            for t in 0..srv.first_conn {
                srv.accept_from(t)?;
            }
        }
        let now = Instant::now();
        if now >= next_sweep {
            next_sweep = now + SWEEP;
            for idx in 0..srv.conns.len() {
                let Some(c) = srv.conns[idx].as_mut() else {
                    continue;
                };
                if c.deadline <= now {
                    let out = expire(c, srv.close);
                    srv.finish(idx, out);
                }
            }
        }
    }
}

/// How often deadlines (idle timeouts, the goodbye linger) are checked.
const SWEEP: Duration = Duration::from_millis(100);

/// The server's state: listeners first in the token space, then connections.
struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    first_conn: usize,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    active: usize,
    stats: Stats,
    close: CloseMode,
    linger: Duration,
    /// An accept failed for want of a resource: connections may be left queued.
    accept_stalled: bool,
}

impl Server {
    /// Accepts from listener `t` until its queue is empty (mio is edge-triggered).
    fn accept_from(&mut self, t: usize) -> io::Result<()> {
        loop {
            let (sock, _) = match self.listeners[t].accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // Reset by its client while queued: the next one may be fine.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                // Out of descriptors or memory: counted, and tried again shortly.
                Err(_) => {
                    self.stats.accept_errors += 1;
                    self.accept_stalled = true;
                    return Ok(());
                }
            };
            if self.active >= MAX_CONNECTIONS {
                // Dropped at once: the client sees its connection closed.
                self.stats.refused_busy += 1;
                continue;
            }
            let _ = sock.set_nodelay(true);
            let idx = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            let mut c = Conn {
                sock,
                phase: Phase::Request { got: 0 },
                req: [0; MESSAGE_LEN],
                reply: [0; MESSAGE_LEN],
                deadline: Instant::now() + IDLE_TIMEOUT,
            };
            self.poll.registry().register(
                &mut c.sock,
                Token(self.first_conn + idx),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            self.active += 1;
            // The request may be there already: its edge came before the registration.
            let out = step(&mut c, self.close, self.linger);
            self.conns[idx] = Some(c);
            self.finish(idx, out);
        }
    }

    /// Counts and closes a finished connection; nothing for one still waiting.
    fn finish(&mut self, idx: usize, out: Outcome) {
        match out {
            Outcome::Wait => return,
            Outcome::Served => self.stats.served += 1,
            Outcome::Lingered => {
                self.stats.served += 1;
                self.stats.lingered += 1;
            }
            Outcome::Bad => self.stats.bad += 1,
        }
        if let Some(mut c) = self.conns[idx].take() {
            let _ = self.poll.registry().deregister(&mut c.sock);
            // Dropping the socket closes it: a FIN, or a RST when SO_LINGER 0 was set
            // or unread data is left (as for any kernel socket).
        }
        self.free.push(idx);
        self.active -= 1;
    }
}

/// A connection whose deadline passed: a goodbye the client did not answer is reset;
/// anything else has idled out (before its reply: a bad client; after: as if the
/// client's end of stream had come).
fn expire(c: &mut Conn, close: CloseMode) -> Outcome {
    match (c.phase, close) {
        (Phase::AwaitEnd, CloseMode::Goodbye) => {
            let _ = socket2::SockRef::from(&c.sock).set_linger(Some(Duration::ZERO));
            Outcome::Lingered
        }
        (Phase::AwaitEnd, _) => Outcome::Served,
        _ => Outcome::Bad,
    }
}

/// Moves one connection as far as its socket allows.
fn step(c: &mut Conn, close: CloseMode, linger: Duration) -> Outcome {
    loop {
        match c.phase {
            Phase::Request { got } => match c.sock.read(&mut c.req[got..]) {
                Ok(0) => return Outcome::Bad,
                Ok(n) if got + n < MESSAGE_LEN => {
                    c.phase = Phase::Request { got: got + n };
                    c.deadline = Instant::now() + IDLE_TIMEOUT;
                }
                Ok(_) => {
                    let Some(id) = decode_request(&c.req) else {
                        return Outcome::Bad;
                    };
                    c.reply = reply(id);
                    c.phase = Phase::Writing { msg: 0, sent: 0 };
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Outcome::Bad,
            },
            Phase::Writing { msg, sent } => {
                let bytes: &[u8] = if msg == 0 { &c.reply } else { GOODBYE };
                match c.sock.write(&bytes[sent..]) {
                    Ok(n) if sent + n < bytes.len() => {
                        c.phase = Phase::Writing {
                            msg,
                            sent: sent + n,
                        };
                    }
                    Ok(_) => match (msg, close) {
                        // Close first: TIME_WAIT lands here.
                        (0, CloseMode::Server) => return Outcome::Served,
                        (0, CloseMode::Goodbye) => c.phase = Phase::Writing { msg: 1, sent: 0 },
                        _ => {
                            c.phase = Phase::AwaitEnd;
                            c.deadline = Instant::now()
                                + if close == CloseMode::Goodbye {
                                    linger
                                } else {
                                    IDLE_TIMEOUT
                                };
                        }
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Wait,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Outcome::Bad,
                }
            }
            // Wait for the client's FIN (or RST), then close: our FIN comes second.
            Phase::AwaitEnd => {
                let mut rest = [0u8; 64];
                match c.sock.read(&mut rest) {
                    Ok(0) => return Outcome::Served,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Wait,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // A reset (abort mode) ends it as well.
                    Err(_) => return Outcome::Served,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The server on loopback (127.0.0.1, no namespace needed: nothing leaves the host's
    //! own loopback), driven by blocking std clients.
    use super::*;
    use crate::churn::request;
    use std::net::{Shutdown, TcpStream as StdStream};
    use std::thread::JoinHandle;

    /// A server on an ephemeral loopback port; `stop` ends it and returns its counts.
    struct Peer {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: JoinHandle<Stats>,
    }

    impl Peer {
        fn start(close: CloseMode, linger_ms: u64) -> Peer {
            let l = listen("127.0.0.1:0".parse().unwrap()).expect("listen on loopback");
            let addr = l.local_addr().unwrap();
            let a = KernelPeerArgs {
                listen: addr,
                ports: 1,
                close,
                linger: Duration::from_millis(linger_ms),
                // A bound on a test gone wrong, not a timing the test relies on.
                exit_after: Duration::from_secs(60),
            };
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let thread = std::thread::spawn(move || serve_on(vec![l], &a, &flag).expect("serve"));
            Peer { addr, stop, thread }
        }

        /// Stops the server and returns its counts. The server counts a connection
        /// before it closes the socket, so every close a test has seen is counted.
        fn stop(self) -> Stats {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.join().unwrap()
        }
    }

    fn connect(addr: SocketAddr) -> StdStream {
        let s = StdStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn read_all(s: &mut StdStream) -> io::Result<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(got),
                n => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn close_client_answers_then_waits_for_the_clients_fin() {
        let peer = Peer::start(CloseMode::Client, 2000);
        let addr = peer.addr;
        for id in [1u64, 2, 3] {
            let mut s = connect(addr);
            // The request in two writes: the server must put it together.
            let req = request(id);
            s.write_all(&req[..5]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(&req[5..]).unwrap();
            let mut rep = [0u8; MESSAGE_LEN];
            s.read_exact(&mut rep).unwrap();
            assert_eq!(rep, reply(id));
            // The server must not close before our FIN: nothing comes yet.
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let err = s.read(&mut [0u8; 8]).expect_err("the server closed first");
            assert!(matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ));
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            assert_eq!(
                read_all(&mut s).unwrap(),
                b"",
                "end of stream after our FIN"
            );
        }
        let st = peer.stop();
        assert_eq!((st.served, st.bad, st.lingered), (3, 0, 0));
    }

    #[test]
    fn close_server_closes_right_after_the_reply() {
        let peer = Peer::start(CloseMode::Server, 2000);
        let addr = peer.addr;
        let mut s = connect(addr);
        s.write_all(&request(7)).unwrap();
        assert_eq!(read_all(&mut s).unwrap(), reply(7));
        let st = peer.stop();
        assert_eq!((st.served, st.bad), (1, 0));
    }

    #[test]
    fn goodbye_resets_a_client_that_lingers_and_not_one_that_closes() {
        let peer = Peer::start(CloseMode::Goodbye, 150);
        let addr = peer.addr;
        // This one answers the goodbye with its FIN.
        let mut polite = connect(addr);
        polite.write_all(&request(1)).unwrap();
        let mut got = [0u8; MESSAGE_LEN + 8];
        polite.read_exact(&mut got).unwrap();
        assert_eq!(got[..MESSAGE_LEN], reply(1));
        assert_eq!(&got[MESSAGE_LEN..], GOODBYE);
        polite.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut polite).unwrap(), b"");
        // This one never closes: after the linger time the server resets it.
        let mut rude = connect(addr);
        rude.write_all(&request(2)).unwrap();
        let mut got = [0u8; MESSAGE_LEN + 8];
        rude.read_exact(&mut got).unwrap();
        assert_eq!(&got[MESSAGE_LEN..], GOODBYE);
        let t = Instant::now();
        let err = read_all(&mut rude).expect_err("a lingering client is reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "reset before the linger"
        );
        let st = peer.stop();
        assert_eq!((st.served, st.bad, st.lingered), (2, 0, 1));
    }

    #[test]
    fn a_bad_request_is_counted_and_closed() {
        let peer = Peer::start(CloseMode::Client, 2000);
        let addr = peer.addr;
        let mut s = connect(addr);
        s.write_all(&[0xAA; MESSAGE_LEN]).unwrap();
        // Closed without a reply (a FIN, or a RST if our bytes were still unread).
        assert!(read_all(&mut s).map_or(true, |b| b.is_empty()));
        // A client that ends its stream before a whole request is bad too.
        let mut short = connect(addr);
        short.write_all(&request(3)[..4]).unwrap();
        short.shutdown(Shutdown::Write).unwrap();
        assert!(read_all(&mut short).map_or(true, |b| b.is_empty()));
        let st = peer.stop();
        assert_eq!((st.served, st.bad), (0, 2));
    }
}
