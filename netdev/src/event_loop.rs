//! The event loop that drives one [`Stack`] over one real [`Device`].
//!
//! This module owns the wall clock (it turns `std::time::Instant` into the stack's
//! [`Instant`]: microseconds since the loop was created), waiting for readiness with mio on
//! the device's file descriptor, the order in which the stack is driven, SIGINT/SIGTERM
//! handling through a self-pipe, and the optional pcap tee. It must never interpret packets
//! or decide what to send (that is the stack's job) nor implement an application (those are
//! [`App`]s, run as handlers on top of it); it never panics on a device failure: a closed
//! device or a failed write ends [`EventLoop::run`] with a [`LoopError`].
//!
//! # One turn of the loop
//!
//! 1. read up to [`LoopOptions::batch`] packets from the device and hand each to
//!    [`Stack::receive`] (mio is edge-triggered: a full batch means "come back at once");
//! 2. fire the stack's due timers with [`Stack::handle_timeout`];
//! 3. hand every [`Stack::poll_event`] to [`App::on_event`], then call [`App::poll`];
//! 4. flush [`Stack::poll_transmit`] to the device, then [`Device::flush`] (a TUN with
//!    offloads holds segments to merge them); a device that would block keeps the packet
//!    and the loop waits until the device is writable;
//! 5. sleep until the device is readable, a signal arrives, or the earliest of the stack's
//!    and the app's deadlines.

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fourtuple_stack::{Event, Instant, Stack};
use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::pcap::PcapWriter;
use crate::Device;

const DEVICE: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);

/// Size of the receive buffer: any IP packet, or an Ethernet frame carrying one.
const RX_BUFFER: usize = 65_536;

/// The loop's clock: microseconds since it was created, as the stack's [`Instant`].
#[derive(Copy, Clone, Debug)]
pub struct LoopClock {
    start: std::time::Instant,
    /// Microseconds since the Unix epoch at `start`, for pcap timestamps.
    epoch_micros: u64,
}

impl LoopClock {
    /// A clock starting now.
    pub fn new() -> LoopClock {
        let epoch_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        LoopClock {
            start: std::time::Instant::now(),
            epoch_micros,
        }
    }

    /// Now, in the stack's time.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as u64)
    }

    /// The wall-clock time of `t`, in microseconds since the Unix epoch (for pcap).
    pub fn to_unix(&self, t: Instant) -> Instant {
        Instant::from_micros(self.epoch_micros.saturating_add(t.micros()))
    }
}

impl Default for LoopClock {
    fn default() -> LoopClock {
        LoopClock::new()
    }
}

/// What an [`App`] tells the loop after [`App::poll`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// Keep running.
    Continue,
    /// Stop after this turn's transmits are flushed.
    Stop,
}

/// An application run on top of the loop (servers, a churn client). Every method gets the
/// stack and the loop's `now`; none may block.
pub trait App {
    /// Once, before the first turn (open listeners, start connections).
    fn start(&mut self, stack: &mut Stack, now: Instant) -> io::Result<()> {
        let _ = (stack, now);
        Ok(())
    }

    /// One event from [`Stack::poll_event`].
    fn on_event(&mut self, stack: &mut Stack, now: Instant, event: Event);

    /// Once per turn, after the events: do timed work, start new work, decide to stop.
    fn poll(&mut self, stack: &mut Stack, now: Instant) -> Control {
        let _ = (stack, now);
        Control::Continue
    }

    /// The app's next deadline, if it has one; the loop wakes up for it.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// Why [`EventLoop::run`] returned normally.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT or SIGTERM arrived.
    Signal,
    /// A [`StopHandle`] asked.
    Requested,
    /// The app returned [`Control::Stop`].
    AppDone,
    /// [`LoopOptions::max_duration`] passed.
    Deadline,
}

impl StopReason {
    /// A short name for output.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Signal => "signal",
            StopReason::Requested => "requested",
            StopReason::AppDone => "done",
            StopReason::Deadline => "deadline",
        }
    }
}

/// Why [`EventLoop::run`] failed.
#[derive(Debug)]
pub enum LoopError {
    /// Reading from or writing to the device failed, or the device went away.
    Device(io::Error),
    /// Writing the pcap file failed.
    Pcap(io::Error),
    /// Waiting for readiness failed.
    Poll(io::Error),
    /// [`App::start`] failed.
    App(io::Error),
}

impl std::fmt::Display for LoopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoopError::Device(e) => write!(f, "device: {e}"),
            LoopError::Pcap(e) => write!(f, "pcap file: {e}"),
            LoopError::Poll(e) => write!(f, "waiting for readiness: {e}"),
            LoopError::App(e) => write!(f, "application: {e}"),
        }
    }
}

impl std::error::Error for LoopError {}

/// Counters of what the loop moved.
#[derive(Clone, Debug, Default)]
pub struct LoopStats {
    /// Packets read from the device.
    pub rx_packets: u64,
    /// Bytes read from the device.
    pub rx_bytes: u64,
    /// Packets written to the device.
    pub tx_packets: u64,
    /// Bytes written to the device.
    pub tx_bytes: u64,
    /// Times the device would have blocked a write (the packet waited).
    pub tx_would_block: u64,
    /// Loop turns.
    pub turns: u64,
    /// Packets written to the pcap file.
    pub pcap_packets: u64,
}

impl LoopStats {
    /// Every counter as (name, value).
    pub fn entries(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("rx_packets", self.rx_packets),
            ("rx_bytes", self.rx_bytes),
            ("tx_packets", self.tx_packets),
            ("tx_bytes", self.tx_bytes),
            ("tx_would_block", self.tx_would_block),
            ("turns", self.turns),
            ("pcap_packets", self.pcap_packets),
        ]
    }
}

/// How the loop runs.
pub struct LoopOptions {
    /// Packets read per turn before the stack's transmits and the app get their turn.
    pub batch: usize,
    /// Stop after this long, whatever happens (a safety bound for tests and scripts).
    pub max_duration: Option<Duration>,
    /// Record every packet read or written here.
    pub pcap: Option<PcapWriter<BufWriter<File>>>,
    /// Stop on SIGINT/SIGTERM (installs handlers for the loop's lifetime).
    pub handle_signals: bool,
    /// Before the loop sleeps, poll the device without sleeping for up to this long
    /// (zero: never). A packet that arrives within it is taken at once instead of after a
    /// wake-up, which is most of a round trip's time over a TUN when little is in flight
    /// (with one churn lifecycle in flight, 50 µs doubled the rate); the price is up to
    /// this much CPU after every burst of activity. An idle loop still sleeps.
    pub busy_poll: Duration,
}

impl Default for LoopOptions {
    fn default() -> LoopOptions {
        LoopOptions {
            batch: 64,
            max_duration: None,
            pcap: None,
            handle_signals: true,
            busy_poll: Duration::ZERO,
        }
    }
}

/// Stops a running loop from another thread.
#[derive(Clone, Debug)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// Asks the loop to stop; it returns [`StopReason::Requested`] at its next turn.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// SIGINT and SIGTERM, written to a self-pipe the loop polls. Unregistered on drop, which
/// restores the default action for the rest of the process.
struct SignalPipe {
    read: UnixStream,
    ids: Vec<signal_hook::SigId>,
}

impl SignalPipe {
    fn install(poll: &Poll) -> io::Result<SignalPipe> {
        let (read, write) = StdUnixStream::pair()?;
        read.set_nonblocking(true)?;
        let mut read = UnixStream::from_std(read);
        poll.registry()
            .register(&mut read, SIGNALS, Interest::READABLE)?;
        let mut ids = Vec::new();
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let w = write.try_clone()?;
            ids.push(signal_hook::low_level::pipe::register(sig, w)?);
        }
        Ok(SignalPipe { read, ids })
    }

    /// Empties the pipe; true when anything was in it.
    fn drain(&mut self) -> bool {
        let mut any = false;
        let mut buf = [0u8; 64];
        loop {
            match self.read.read(&mut buf) {
                Ok(0) => return any,
                Ok(_) => any = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return any,
            }
        }
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// One stack on one device, driven by mio. See the module docs for a turn's order.
pub struct EventLoop<D: Device + AsRawFd> {
    device: D,
    stack: Stack,
    poll: Poll,
    events: Events,
    signals: Option<SignalPipe>,
    stop_flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
    clock: LoopClock,
    opts: LoopOptions,
    stats: LoopStats,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// Length of a packet in `tx` that the device would not take yet.
    pending_tx: Option<usize>,
}

impl<D: Device + AsRawFd> EventLoop<D> {
    /// A loop driving `stack` over `device`. The device must already be non-blocking.
    pub fn new(mut device: D, stack: Stack, opts: LoopOptions) -> io::Result<EventLoop<D>> {
        if opts.pcap.is_some() {
            // A capture should show the checksums a wire would carry, not partial ones.
            device.complete_rx_checksums();
        }
        let poll = Poll::new()?;
        let fd: RawFd = device.as_raw_fd();
        poll.registry().register(
            &mut SourceFd(&fd),
            DEVICE,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let signals = if opts.handle_signals {
            Some(SignalPipe::install(&poll)?)
        } else {
            None
        };
        let tx_len = device.mtu().max(64);
        Ok(EventLoop {
            device,
            stack,
            poll,
            events: Events::with_capacity(64),
            signals,
            stop_flag: Arc::new(AtomicBool::new(false)),
            waker,
            clock: LoopClock::new(),
            opts,
            stats: LoopStats::default(),
            rx: vec![0; RX_BUFFER],
            tx: vec![0; tx_len],
            pending_tx: None,
        })
    }

    /// A handle that stops the loop from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            flag: self.stop_flag.clone(),
            waker: self.waker.clone(),
        }
    }

    /// The stack.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// The stack, mutably (e.g. to open listeners before [`EventLoop::run`]).
    pub fn stack_mut(&mut self) -> &mut Stack {
        &mut self.stack
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// What the loop moved so far.
    pub fn stats(&self) -> &LoopStats {
        &self.stats
    }

    /// The loop's clock.
    pub fn clock(&self) -> &LoopClock {
        &self.clock
    }

    /// Now, in the stack's time.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Flushes the pcap file, if any.
    pub fn flush_pcap(&mut self) -> io::Result<()> {
        match self.opts.pcap.as_mut() {
            Some(p) => p.flush(),
            None => Ok(()),
        }
    }

    /// Runs `app` until a signal, a [`StopHandle`], the app itself or the deadline stops
    /// it. The pcap file is flushed on every way out.
    pub fn run(&mut self, app: &mut dyn App) -> Result<StopReason, LoopError> {
        let r = self.run_inner(app);
        let flushed = self.flush_pcap();
        match (r, flushed) {
            (Ok(_), Err(e)) => Err(LoopError::Pcap(e)),
            (r, _) => r,
        }
    }

    fn run_inner(&mut self, app: &mut dyn App) -> Result<StopReason, LoopError> {
        let start = self.clock.now();
        let deadline = self.opts.max_duration.map(|d| start + d);
        app.start(&mut self.stack, start).map_err(LoopError::App)?;
        let mut device_ready = true;
        loop {
            self.stats.turns += 1;
            let now = self.clock.now();
            if self.stop_flag.load(Ordering::SeqCst) {
                self.flush_tx(now)?;
                return Ok(StopReason::Requested);
            }
            if deadline.is_some_and(|d| now >= d) {
                self.flush_tx(now)?;
                return Ok(StopReason::Deadline);
            }

            // 1. Input, one batch.
            if device_ready {
                device_ready = self.receive_batch(now)?;
            }
            // 2. Timers.
            if self.stack.poll_timeout().is_some_and(|t| t <= now) {
                self.stack.handle_timeout(now);
            }
            // 3. The app: events (its calls may raise more), then its own turn.
            let mut control = Control::Continue;
            for _ in 0..64 {
                let mut any = false;
                while let Some(ev) = self.stack.poll_event() {
                    any = true;
                    app.on_event(&mut self.stack, now, ev);
                }
                if !any {
                    break;
                }
            }
            if app.poll(&mut self.stack, now) == Control::Stop {
                control = Control::Stop;
            }
            // 4. Output.
            let tx_blocked = !self.flush_tx(now)?;
            if control == Control::Stop {
                return Ok(StopReason::AppDone);
            }

            // 5. Wait.
            let timeout = if device_ready {
                Some(Duration::ZERO)
            } else {
                let next = [self.stack.poll_timeout(), app.poll_timeout(), deadline]
                    .into_iter()
                    .flatten()
                    .min();
                let mut t = next.map(|n| n.saturating_since(self.clock.now()));
                if tx_blocked {
                    // A writable edge should wake us; try again soon regardless.
                    t = Some(t.map_or(Duration::from_millis(1), |t| {
                        t.min(Duration::from_millis(1))
                    }));
                }
                t
            };
            match self.wait(timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LoopError::Poll(e)),
            }
            let mut signalled = false;
            for ev in self.events.iter() {
                match ev.token() {
                    // Readable, closed or failed: the next read tells which.
                    DEVICE => device_ready = true,
                    SIGNALS => signalled = true,
                    _ => {}
                }
            }
            if signalled {
                if let Some(s) = self.signals.as_mut() {
                    if s.drain() {
                        let now = self.clock.now();
                        self.flush_tx(now)?;
                        return Ok(StopReason::Signal);
                    }
                }
            }
        }
    }

    /// Waits for readiness for up to `timeout`, busy polling first ([`poll_busy`]).
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        poll_busy(
            &mut self.poll,
            &mut self.events,
            self.opts.busy_poll,
            timeout,
        )
    }

    /// Reads up to one batch; true when the batch filled (more may be waiting).
    fn receive_batch(&mut self, now: Instant) -> Result<bool, LoopError> {
        for _ in 0..self.opts.batch.max(1) {
            match self.device.recv(&mut self.rx) {
                Ok(Some(n)) => {
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += n as u64;
                    if let Some(p) = self.opts.pcap.as_mut() {
                        p.write_packet(self.clock.to_unix(now), &self.rx[..n])
                            .map_err(LoopError::Pcap)?;
                        self.stats.pcap_packets += 1;
                    }
                    if self.device.rx_checksum_trusted() {
                        self.stack.receive_trusted(now, &self.rx[..n]);
                    } else {
                        self.stack.receive(now, &self.rx[..n]);
                    }
                }
                Ok(None) => return Ok(false),
                Err(e) => return Err(LoopError::Device(e)),
            }
        }
        Ok(true)
    }

    /// Writes the stack's transmits to the device; false when the device would block
    /// (the packet waits in `pending_tx`).
    fn flush_tx(&mut self, now: Instant) -> Result<bool, LoopError> {
        let r = self.send_tx(now);
        // Whatever the device held back to merge goes out before the loop waits.
        self.device.flush().map_err(LoopError::Device)?;
        r
    }

    fn send_tx(&mut self, now: Instant) -> Result<bool, LoopError> {
        if let Some(len) = self.pending_tx {
            match self.device.send(&self.tx[..len]) {
                Ok(()) => {
                    self.pending_tx = None;
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += len as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(LoopError::Device(e)),
            }
        }
        while let Some(len) = self.stack.poll_transmit(now, &mut self.tx) {
            if let Some(p) = self.opts.pcap.as_mut() {
                p.write_packet(self.clock.to_unix(now), &self.tx[..len])
                    .map_err(LoopError::Pcap)?;
                self.stats.pcap_packets += 1;
            }
            match self.device.send(&self.tx[..len]) {
                Ok(()) => {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += len as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stats.tx_would_block += 1;
                    self.pending_tx = Some(len);
                    return Ok(false);
                }
                Err(e) => return Err(LoopError::Device(e)),
            }
        }
        Ok(true)
    }
}

/// Waits on `poll` for up to `timeout` (`None`: without limit): first polling without
/// sleeping for up to `busy` (never past `timeout`), then sleeping for what is left. What
/// [`LoopOptions::busy_poll`] does, for other epoll loops that should get the same
/// treatment (the kernel's churn client in `churn --vs-kernel`).
pub fn poll_busy(
    poll: &mut Poll,
    events: &mut Events,
    busy: Duration,
    timeout: Option<Duration>,
) -> io::Result<()> {
    let spin = timeout.map_or(busy, |t| t.min(busy));
    if spin.is_zero() {
        return poll.poll(events, timeout);
    }
    let start = std::time::Instant::now();
    loop {
        poll.poll(events, Some(Duration::ZERO))?;
        if !events.is_empty() {
            return Ok(());
        }
        let spun = start.elapsed();
        if spun >= spin {
            let left = timeout.map(|t| t.saturating_sub(spun));
            return poll.poll(events, left);
        }
        std::hint::spin_loop();
    }
}

impl<D: Device + AsRawFd> Drop for EventLoop<D> {
    fn drop(&mut self) {
        let fd = self.device.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DatagramDevice;
    use fourtuple_stack::{Config, ConnHandle, Error, EventSet, ListenerHandle};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    fn stack(addr: Ipv4Addr, seed: u8) -> Stack {
        let mut s = Stack::new(Config::default(), [seed; 16]);
        s.add_address(IpAddr::V4(addr));
        s
    }

    fn opts() -> LoopOptions {
        LoopOptions {
            handle_signals: false,
            max_duration: Some(Duration::from_secs(30)),
            ..LoopOptions::default()
        }
    }

    /// Echoes every byte back on every connection; closes when the peer does.
    struct Echo {
        listener: Option<ListenerHandle>,
        pending: Vec<(ConnHandle, Vec<u8>)>,
    }

    impl Echo {
        fn pump(&mut self, stack: &mut Stack, now: Instant, h: ConnHandle) {
            let mut buf = [0u8; 16384];
            let idx = match self.pending.iter().position(|(c, _)| *c == h) {
                Some(i) => i,
                None => {
                    self.pending.push((h, Vec::new()));
                    self.pending.len() - 1
                }
            };
            loop {
                let out = &mut self.pending[idx].1;
                while !out.is_empty() {
                    match stack.send(now, h, out) {
                        Ok(n) => {
                            out.drain(..n);
                        }
                        Err(_) => break,
                    }
                }
                if !out.is_empty() {
                    return;
                }
                match stack.recv(now, h, &mut buf) {
                    Ok(0) => {
                        let _ = stack.close(now, h);
                        self.pending.swap_remove(idx);
                        return;
                    }
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(Error::WouldBlock) => return,
                    Err(_) => {
                        let _ = stack.abort(now, h);
                        self.pending.swap_remove(idx);
                        return;
                    }
                }
            }
        }
    }

    impl App for Echo {
        fn start(&mut self, stack: &mut Stack, _now: Instant) -> io::Result<()> {
            self.listener = Some(stack.listen(SocketAddr::new(IpAddr::V4(SERVER), 7), 0)?);
            Ok(())
        }
        fn on_event(&mut self, stack: &mut Stack, now: Instant, event: Event) {
            match event {
                Event::Incoming { listener } => {
                    while let Ok(Some(h)) = stack.accept(listener) {
                        self.pump(stack, now, h);
                    }
                }
                Event::Conn { handle, .. } => self.pump(stack, now, handle),
            }
        }
    }

    /// Sends `data`, reads it back, half-closes, and stops at end of stream.
    struct Client {
        data: Vec<u8>,
        sent: usize,
        got: Vec<u8>,
        conn: Option<ConnHandle>,
        done: bool,
    }

    impl App for Client {
        fn start(&mut self, stack: &mut Stack, now: Instant) -> io::Result<()> {
            let h = stack.connect(now, SocketAddr::new(IpAddr::V4(SERVER), 7), None)?;
            self.conn = Some(h);
            Ok(())
        }
        fn on_event(&mut self, stack: &mut Stack, now: Instant, event: Event) {
            let Event::Conn { handle, events } = event else {
                return;
            };
            assert!(
                !events.contains(EventSet::ERROR),
                "client connection failed"
            );
            while self.sent < self.data.len() {
                match stack.send(now, handle, &self.data[self.sent..]) {
                    Ok(n) => {
                        self.sent += n;
                        if self.sent == self.data.len() {
                            stack.shutdown_write(now, handle).unwrap();
                        }
                    }
                    Err(_) => break,
                }
            }
            let mut buf = [0u8; 16384];
            loop {
                match stack.recv(now, handle, &mut buf) {
                    Ok(0) => {
                        self.done = true;
                        let _ = stack.close(now, handle);
                        return;
                    }
                    Ok(n) => self.got.extend_from_slice(&buf[..n]),
                    Err(_) => return,
                }
            }
        }
        fn poll(&mut self, _stack: &mut Stack, _now: Instant) -> Control {
            if self.done {
                Control::Stop
            } else {
                Control::Continue
            }
        }
    }

    #[test]
    fn two_loops_echo_one_mebibyte_over_a_socketpair() {
        echo_one_mebibyte(Duration::ZERO);
    }

    #[test]
    fn two_loops_echo_one_mebibyte_busy_polling() {
        echo_one_mebibyte(Duration::from_micros(200));
    }

    fn echo_one_mebibyte(busy_poll: Duration) {
        let opts = || LoopOptions {
            busy_poll,
            ..opts()
        };
        let (a, b) = DatagramDevice::pair(1500).unwrap();
        let mut server = EventLoop::new(a, stack(SERVER, 1), opts()).unwrap();
        let stop = server.stop_handle();
        let srv = std::thread::spawn(move || {
            let mut app = Echo {
                listener: None,
                pending: Vec::new(),
            };
            let r = server.run(&mut app);
            (
                r.map_err(|e| e.to_string()),
                server.stack().counters().clone(),
            )
        });
        let mut client = EventLoop::new(b, stack(CLIENT, 2), opts()).unwrap();
        let data: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut app = Client {
            data: data.clone(),
            sent: 0,
            got: Vec::new(),
            conn: None,
            done: false,
        };
        let reason = client.run(&mut app).unwrap();
        // Let the last ACKs reach the server before stopping it.
        std::thread::sleep(Duration::from_millis(50));
        stop.stop();
        let (sr, _counters) = srv.join().unwrap();
        assert_eq!(reason, StopReason::AppDone);
        assert_eq!(sr.unwrap(), StopReason::Requested);
        assert_eq!(app.got.len(), data.len());
        assert!(app.got == data, "echoed bytes differ");
        assert!(client.stats().tx_packets > 700);
        assert_eq!(
            client.stack().time_wait().len(),
            1,
            "the client sent the first FIN"
        );
    }

    /// CPU time this thread has used, from /proc (clock ticks of 10 ms: coarse, enough
    /// to tell a sleeping loop from a spinning one over a few hundred milliseconds).
    fn thread_cpu() -> Duration {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
        Duration::from_millis((f[11] + f[12]) * 10)
    }

    #[test]
    fn busy_poll_spins_only_before_sleeping_and_never_past_the_deadline() {
        let idle = |busy_poll: Duration, max: Duration| {
            let (a, _b) = DatagramDevice::pair(1500).unwrap();
            let mut lp = EventLoop::new(
                a,
                stack(SERVER, 5),
                LoopOptions {
                    handle_signals: false,
                    max_duration: Some(max),
                    busy_poll,
                    ..LoopOptions::default()
                },
            )
            .unwrap();
            let mut app = Echo {
                listener: None,
                pending: Vec::new(),
            };
            let (t, cpu) = (std::time::Instant::now(), thread_cpu());
            assert_eq!(lp.run(&mut app).unwrap(), StopReason::Deadline);
            (t.elapsed(), thread_cpu() - cpu)
        };
        // Idle for 400 ms with a 2 ms spin: it spins once, then sleeps until the end.
        let (took, cpu) = idle(Duration::from_millis(2), Duration::from_millis(400));
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(
            cpu < Duration::from_millis(200),
            "an idle loop used {cpu:?} of CPU"
        );
        // A spin longer than the time left stops at the deadline, not after the spin.
        let (took, _) = idle(Duration::from_secs(2), Duration::from_millis(50));
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }

    #[test]
    fn deadline_stops_an_idle_loop() {
        let (a, _b) = DatagramDevice::pair(1500).unwrap();
        let mut lp = EventLoop::new(
            a,
            stack(SERVER, 3),
            LoopOptions {
                handle_signals: false,
                max_duration: Some(Duration::from_millis(30)),
                ..LoopOptions::default()
            },
        )
        .unwrap();
        let mut app = Echo {
            listener: None,
            pending: Vec::new(),
        };
        let t = std::time::Instant::now();
        assert_eq!(lp.run(&mut app).unwrap(), StopReason::Deadline);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn closed_peer_is_an_error_not_a_panic() {
        let (a, b) = DatagramDevice::pair(1500).unwrap();
        drop(b);
        let mut lp = EventLoop::new(a, stack(CLIENT, 4), opts()).unwrap();
        let mut app = Client {
            data: vec![1; 10],
            sent: 0,
            got: Vec::new(),
            conn: None,
            done: false,
        };
        // The SYN cannot be written: the device is gone.
        match lp.run(&mut app) {
            Err(LoopError::Device(_)) => {}
            other => panic!("expected a device error, got {other:?}"),
        }
    }
}
