//! [`Stack`]: one host, driven from outside.
//!
//! The stack owns the connection table (a hash from 4-tuple to slot, so demux is one
//! lookup), the listeners, the TIME_WAIT table, the port allocator, the timer heap and the
//! counters. It must never read a clock or touch I/O: every entry point takes `now`.
//!
//! Driver contract, in the style of quinn-proto:
//! 1. feed packets with [`Stack::receive`];
//! 2. call application methods (`listen`, `connect`, `send`, `recv`, `close`, ...);
//! 3. drain [`Stack::poll_transmit`] until it returns `None`, putting each packet on the wire;
//! 4. drain [`Stack::poll_event`];
//! 5. sleep until [`Stack::poll_timeout`], then call [`Stack::handle_timeout`].

use core::time::Duration;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use hashbrown::HashMap;

use crate::config::{Config, Medium, ReusePolicy};
use crate::conn_index::ConnIndex;
use crate::cookie::{self, CookieJar};
use crate::error::{Error, InUse};
use crate::ethernet::{EthernetLayer, FrameIn, NeighborConfig};
use crate::fifo::Fifo;
use crate::isn::IsnGenerator;
use crate::ports::EphemeralPorts;
use crate::seq::SeqNum;
use crate::tcp::{
    ConnError, Disposition, EventSet, Report, SegDrop, SocketOptions, Tcb, TcbInit, TcpState,
};
use crate::time::Instant;
use crate::time_wait::{
    reopen_isn_floor, TimeWaitState, TimeWaitTable, TwAction, TwInsert, TwSegment, PREFETCH_GROUP,
};
use crate::timers::TimerHeap;
use crate::tuple::{FourTuple, TupleKey};
use crate::wire::{self, DropReason, EchoRequest, Flags, Incoming, OutSegment, Segment};

/// A handle to one connection. Stale handles (to a freed slot) are rejected.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct ConnHandle {
    idx: u32,
    gen: u32,
}

impl ConnHandle {
    /// The connection's slot number: small, dense and unique among the connections alive
    /// at one time (a freed slot is reused under a new generation, which the stack checks),
    /// so an application can keep per-connection state in a `Vec` indexed by it instead of
    /// hashing handles.
    pub fn index(self) -> usize {
        self.idx as usize
    }
}

/// A handle to one listener.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct ListenerHandle {
    idx: u32,
    gen: u32,
}

/// Something the application should look at.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Event {
    /// Readiness or lifecycle change on a connection.
    Conn {
        /// The connection.
        handle: ConnHandle,
        /// What happened since the last event for it.
        events: EventSet,
    },
    /// A listener has connections to accept.
    Incoming {
        /// The listener.
        listener: ListenerHandle,
    },
}

/// Options for [`Stack::connect_with`].
#[derive(Copy, Clone, Debug, Default)]
pub struct ConnectOptions {
    /// Force the initial sequence number (experiments, e.g. an old-duplicate SYN).
    pub isn: Option<SeqNum>,
    /// Override whether this connection offers timestamps.
    pub timestamps: Option<bool>,
}

/// Counters for everything the stack did, dropped or refused.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// IP packets handed to `receive`.
    pub packets_in: u64,
    /// IP packets produced by `poll_transmit`.
    pub packets_out: u64,
    /// Packets dropped before reaching TCP, by reason (index: `DropReason::ALL`).
    pub dropped: [u64; DropReason::ALL.len()],
    /// TCP segments dropped by the state machine, by reason (index: `SegDrop::ALL`).
    pub segments_dropped: [u64; SegDrop::ALL.len()],
    /// TCP segments received that passed parsing.
    pub segments_in: u64,
    /// Connections opened with `connect`.
    pub active_opens: u64,
    /// Connections created from a listener's SYN.
    pub passive_opens: u64,
    /// Handshakes completed (both directions).
    pub established: u64,
    /// SYNs dropped because a listener's backlog was full.
    pub syn_backlog_drops: u64,
    /// Connections refused because `max_connections` was reached.
    pub connection_limit_drops: u64,
    /// RSTs sent.
    pub rst_sent: u64,
    /// RSTs that ended a connection.
    pub resets_received: u64,
    /// Connections refused by the peer (RST to our SYN).
    pub refused: u64,
    /// Connections that timed out.
    pub timeouts: u64,
    /// Connections that ended in an orderly way (LAST-ACK -> CLOSED).
    pub closed_orderly: u64,
    /// Connections aborted locally (abort, linger-0, close with unread data).
    pub aborted: u64,
    /// Segments to no connection and no listener, answered with RST.
    pub no_socket: u64,
    /// RFC 5961 challenge ACKs sent.
    pub challenge_acks: u64,
    /// Challenge ACKs suppressed by the rate limit.
    pub challenge_acks_limited: u64,
    /// Segments retransmitted (RTO and fast retransmit).
    pub retransmits: u64,
    /// Fast retransmits.
    pub fast_retransmits: u64,
    /// Retransmission timeouts.
    pub rto_timeouts: u64,
    /// Keepalive probes sent.
    pub keepalive_probes: u64,
    /// Zero-window probes sent.
    pub window_probes: u64,
    /// Out-of-order bytes dropped over the per-connection limit.
    pub ooo_dropped_bytes: u64,
    /// Connections that entered TIME_WAIT.
    pub time_wait_entered: u64,
    /// Connections that would have entered TIME_WAIT but the table was full (DropNew).
    pub time_wait_dropped_full: u64,
    /// TIME_WAIT entries evicted to make room (EvictOldest).
    pub time_wait_evicted: u64,
    /// SYNs that reopened a TIME_WAIT 4-tuple.
    pub time_wait_reopened: u64,
    /// Outbound connects that took over a TIME_WAIT 4-tuple (timestamp-reuse).
    pub time_wait_reused: u64,
    /// Echo replies sent.
    pub echo_replies: u64,
    /// Control packets dropped because the control queue was full.
    pub control_queue_drops: u64,
    /// Packets not emitted because the driver's buffer was too small.
    pub tx_buffer_too_small: u64,
    /// `connect` refused with address in use.
    pub connect_addr_in_use: u64,
    /// `connect` refused for lack of an ephemeral port.
    pub connect_no_port: u64,
    /// SYN cookies sent because a listener's SYN queue was full.
    pub syn_cookies_sent: u64,
    /// ACKs that carried a valid cookie and became connections.
    pub syn_cookies_valid: u64,
    /// ACKs to a listener that carried no valid cookie (answered with RST).
    pub syn_cookies_invalid: u64,
}

impl Counters {
    /// Every counter as (name, value), for printing and JSON.
    pub fn entries(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![
            ("packets_in", self.packets_in),
            ("packets_out", self.packets_out),
            ("segments_in", self.segments_in),
            ("active_opens", self.active_opens),
            ("passive_opens", self.passive_opens),
            ("established", self.established),
            ("syn_backlog_drops", self.syn_backlog_drops),
            ("connection_limit_drops", self.connection_limit_drops),
            ("rst_sent", self.rst_sent),
            ("resets_received", self.resets_received),
            ("refused", self.refused),
            ("timeouts", self.timeouts),
            ("closed_orderly", self.closed_orderly),
            ("aborted", self.aborted),
            ("no_socket", self.no_socket),
            ("challenge_acks", self.challenge_acks),
            ("challenge_acks_limited", self.challenge_acks_limited),
            ("retransmits", self.retransmits),
            ("fast_retransmits", self.fast_retransmits),
            ("rto_timeouts", self.rto_timeouts),
            ("keepalive_probes", self.keepalive_probes),
            ("window_probes", self.window_probes),
            ("ooo_dropped_bytes", self.ooo_dropped_bytes),
            ("time_wait_entered", self.time_wait_entered),
            ("time_wait_dropped_full", self.time_wait_dropped_full),
            ("time_wait_evicted", self.time_wait_evicted),
            ("time_wait_reopened", self.time_wait_reopened),
            ("time_wait_reused", self.time_wait_reused),
            ("echo_replies", self.echo_replies),
            ("control_queue_drops", self.control_queue_drops),
            ("tx_buffer_too_small", self.tx_buffer_too_small),
            ("connect_addr_in_use", self.connect_addr_in_use),
            ("connect_no_port", self.connect_no_port),
            ("syn_cookies_sent", self.syn_cookies_sent),
            ("syn_cookies_valid", self.syn_cookies_valid),
            ("syn_cookies_invalid", self.syn_cookies_invalid),
        ];
        for (r, n) in DropReason::ALL.iter().zip(self.dropped.iter()) {
            v.push((r.name(), *n));
        }
        for (r, n) in SegDrop::ALL.iter().zip(self.segments_dropped.iter()) {
            v.push((r.name(), *n));
        }
        v
    }

    /// Packets dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0)]
    }

    /// Segments dropped by the state machine for `reason`.
    pub fn segments_dropped(&self, reason: SegDrop) -> u64 {
        self.segments_dropped[SegDrop::ALL.iter().position(|r| *r == reason).unwrap_or(0)]
    }
}

const MAX_CONTROL_QUEUE: usize = 65536;
/// Echo payload bytes waiting in the control queue at most.
/// Freed TCBs kept for reuse (their allocation and small buffers), so churn does not
/// allocate; beyond this many, freed TCBs are dropped.
const MAX_SPARE_TCBS: usize = 4096;

const MAX_ECHO_BYTES_QUEUED: usize = 4 << 20;

/// A packet the stack sends on no connection's behalf (RST, TIME_WAIT ACK, echo reply).
#[derive(Debug)]
enum Control {
    Tcp {
        tuple: FourTuple,
        seg: OutSegment,
    },
    Echo {
        src: IpAddr,
        dst: IpAddr,
        ident: u16,
        seq_no: u16,
        data: Vec<u8>,
    },
}

#[derive(Debug)]
struct Listener {
    addr: SocketAddr,
    backlog: usize,
    /// Children in SYN-RECEIVED.
    pending: usize,
    accept_q: VecDeque<ConnHandle>,
    queued_event: bool,
}

#[derive(Debug)]
struct Slot<T> {
    gen: u32,
    item: Option<T>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot { gen: 0, item: None }
    }
}

#[derive(Copy, Clone, Debug)]
enum EventRef {
    Conn(u32),
    Listener(u32),
}

/// One TCP/IP host: addresses, connections, listeners, TIME_WAIT table and timers.
pub struct Stack {
    cfg: Config,
    addrs: Vec<IpAddr>,
    conns: ConnIndex,
    // Boxed so that opening and freeing a connection moves a pointer, not the TCB, and
    // the boxes (with their buffers) are recycled through `spare_tcbs`.
    slots: Vec<Slot<Box<Tcb>>>,
    // Boxes, not TCBs: moving one in or out of the pool must stay a pointer move.
    #[allow(clippy::vec_box)]
    spare_tcbs: Vec<Box<Tcb>>,
    /// `receive_batch`'s look-ahead: the SYN tuples of the packets about to be received.
    batch_syns: Vec<FourTuple>,
    free: Vec<u32>,
    listeners: Vec<Slot<Listener>>,
    listener_by_addr: HashMap<SocketAddr, u32>,
    /// How many listeners use each port: connect's port search and demux skip the
    /// listener map for ports nobody listens on (nearly all of them).
    listen_ports: Vec<u32>,
    tw: TimeWaitTable,
    ports: EphemeralPorts,
    isn: IsnGenerator,
    timers: TimerHeap,
    tx: Fifo<u32>,
    ctrl: VecDeque<Control>,
    events: Fifo<EventRef>,
    counters: Counters,
    state_counts: [usize; 11],
    challenge_window: (u64, u32),
    eth: Option<EthernetLayer>,
    cookies: CookieJar,
    last_cookie: Option<Instant>,
    ooo_total: usize,
    echo_bytes_queued: usize,
}

fn derive_secret(seed: [u8; 16], salt: u8) -> [u8; 16] {
    let mut s = seed;
    for (i, b) in s.iter_mut().enumerate() {
        *b = b
            .wrapping_mul(31)
            .wrapping_add(salt)
            .wrapping_add(i as u8)
            .rotate_left(3);
    }
    s
}

impl Stack {
    /// A host with no addresses yet. `seed` keys ISNs, timestamps offsets and the port
    /// allocator; pass real randomness outside of tests.
    pub fn new(cfg: Config, seed: [u8; 16]) -> Stack {
        let mut tw = TimeWaitTable::with_seed(
            cfg.time_wait_lifetime(),
            cfg.max_time_wait,
            cfg.tw_overflow,
            cfg.rfc1337,
            derive_secret(seed, 3),
        );
        // Only the local-port policy asks `local_in_use`; the counts behind it cost every
        // TIME_WAIT insert and removal a hash map update.
        tw.set_local_counts(cfg.reuse_policy == ReusePolicy::LocalPort);
        let cfg_medium = cfg.medium;
        Stack {
            ports: EphemeralPorts::new(cfg.ephemeral_ports, derive_secret(seed, 1)),
            isn: IsnGenerator::new(seed),
            cfg,
            addrs: Vec::new(),
            conns: ConnIndex::new({
                let k = derive_secret(seed, 5);
                u64::from_le_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]])
            }),
            slots: Vec::new(),
            spare_tcbs: Vec::new(),
            batch_syns: Vec::new(),
            free: Vec::new(),
            listeners: Vec::new(),
            listener_by_addr: HashMap::new(),
            listen_ports: vec![0; 65536],
            tw,
            timers: TimerHeap::default(),
            tx: Fifo::default(),
            ctrl: VecDeque::new(),
            events: Fifo::default(),
            counters: Counters::default(),
            state_counts: [0; 11],
            challenge_window: (0, 0),
            cookies: CookieJar::new(derive_secret(seed, 4)),
            last_cookie: None,
            ooo_total: 0,
            echo_bytes_queued: 0,
            eth: match cfg_medium {
                Medium::Ip => None,
                Medium::Ethernet { mac } => {
                    Some(EthernetLayer::new(mac, NeighborConfig::default()))
                }
            },
        }
    }

    /// Adds a local address.
    pub fn add_address(&mut self, addr: IpAddr) {
        if !self.addrs.contains(&addr) {
            self.addrs.push(addr);
        }
    }

    /// This host's addresses.
    pub fn addresses(&self) -> &[IpAddr] {
        &self.addrs
    }

    // ---- getters -------------------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The TIME_WAIT table (len, iterate, lookup, stats).
    pub fn time_wait(&self) -> &TimeWaitTable {
        &self.tw
    }

    /// All counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Live connections per state (LISTEN counts listeners, TIME-WAIT counts table
    /// entries).
    pub fn state_counts(&self) -> Vec<(TcpState, usize)> {
        TcpState::ALL
            .iter()
            .map(|s| {
                let n = match s {
                    TcpState::Listen => self.listener_by_addr.len(),
                    TcpState::TimeWait => self.tw.len(),
                    _ => self.state_counts[s.index()],
                };
                (*s, n)
            })
            .collect()
    }

    /// Live connections (every state but LISTEN and TIME-WAIT).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The state of a connection.
    pub fn state(&self, h: ConnHandle) -> Result<TcpState, Error> {
        Ok(self.tcb(h)?.state)
    }

    /// The error that ended a connection, if any.
    pub fn error(&self, h: ConnHandle) -> Result<Option<ConnError>, Error> {
        Ok(self.tcb(h)?.error)
    }

    /// The connection's 4-tuple.
    pub fn tuple(&self, h: ConnHandle) -> Result<FourTuple, Error> {
        Ok(self.tcb(h)?.tuple)
    }

    /// Bytes ready to read.
    pub fn recv_available(&self, h: ConnHandle) -> Result<usize, Error> {
        Ok(self.tcb(h)?.recv_available())
    }

    /// Free space in the send buffer.
    pub fn send_space(&self, h: ConnHandle) -> Result<usize, Error> {
        Ok(self.tcb(h)?.send_space())
    }

    /// Bytes sent but not yet acknowledged, plus bytes not yet sent.
    pub fn send_queued(&self, h: ConnHandle) -> Result<usize, Error> {
        Ok(self.tcb(h)?.send_queued())
    }

    /// A one-line dump of a connection's sequence space and timers, for debugging.
    pub fn debug_conn(&self, h: ConnHandle) -> Result<String, Error> {
        Ok(self.tcb(h)?.debug_line())
    }

    /// The slot of the live connection with this tuple.
    #[inline]
    fn conn_slot(&self, key: &TupleKey) -> Option<u32> {
        let slots = &self.slots;
        self.conns.get(key, |i, k| slot_is(slots, i, k))
    }

    fn tcb(&self, h: ConnHandle) -> Result<&Tcb, Error> {
        match self.slots.get(h.idx as usize) {
            Some(s) if s.gen == h.gen => match &s.item {
                Some(t) if t.held => Ok(t),
                _ => Err(Error::InvalidHandle),
            },
            _ => Err(Error::InvalidHandle),
        }
    }

    fn tcb_mut(&mut self, h: ConnHandle) -> Result<&mut Tcb, Error> {
        Self::tcb_in(&mut self.slots, h)
    }

    /// [`Stack::tcb_mut`] borrowing only the slots, so the config, the queues and the
    /// timers can be borrowed beside it (instead of cloned or looked up again).
    fn tcb_in(slots: &mut [Slot<Box<Tcb>>], h: ConnHandle) -> Result<&mut Tcb, Error> {
        match slots.get_mut(h.idx as usize) {
            Some(s) if s.gen == h.gen => match &mut s.item {
                Some(t) if t.held => Ok(t),
                _ => Err(Error::InvalidHandle),
            },
            _ => Err(Error::InvalidHandle),
        }
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        self.addrs.contains(&ip)
    }

    // ---- listeners -----------------------------------------------------------------

    /// Listens on `addr` (its ip may be unspecified: any local address of that family).
    /// `backlog` caps SYN-RECEIVED plus not-yet-accepted connections (0: the default).
    pub fn listen(&mut self, addr: SocketAddr, backlog: usize) -> Result<ListenerHandle, Error> {
        if addr.port() == 0 {
            return Err(Error::InvalidAddress("listen port 0"));
        }
        if !addr.ip().is_unspecified() && !self.is_local(addr.ip()) {
            return Err(Error::AddrNotAvailable);
        }
        // TIME_WAIT entries never block a listener: only an existing listener does.
        if self.listener_by_addr.contains_key(&addr) {
            return Err(Error::AddrInUse(InUse::Listener));
        }
        let backlog = if backlog == 0 {
            self.cfg.default_backlog
        } else {
            backlog
        };
        let l = Listener {
            addr,
            backlog,
            pending: 0,
            accept_q: VecDeque::new(),
            queued_event: false,
        };
        let idx = match self.listeners.iter().position(|s| s.item.is_none()) {
            Some(i) => i,
            None => {
                self.listeners.push(Slot::default());
                self.listeners.len() - 1
            }
        };
        let slot = &mut self.listeners[idx];
        slot.gen = slot.gen.wrapping_add(1);
        slot.item = Some(l);
        self.listener_by_addr.insert(addr, idx as u32);
        self.listen_ports[addr.port() as usize] += 1;
        Ok(ListenerHandle {
            idx: idx as u32,
            gen: slot.gen,
        })
    }

    fn listener_mut(&mut self, h: ListenerHandle) -> Result<&mut Listener, Error> {
        match self.listeners.get_mut(h.idx as usize) {
            Some(s) if s.gen == h.gen => s.item.as_mut().ok_or(Error::InvalidHandle),
            _ => Err(Error::InvalidHandle),
        }
    }

    /// Takes one established connection from the listener's accept queue.
    pub fn accept(&mut self, h: ListenerHandle) -> Result<Option<ConnHandle>, Error> {
        let l = self.listener_mut(h)?;
        Ok(l.accept_q.pop_front())
    }

    /// Connections waiting in a listener's accept queue.
    pub fn accept_queue_len(&mut self, h: ListenerHandle) -> Result<usize, Error> {
        Ok(self.listener_mut(h)?.accept_q.len())
    }

    /// Closes a listener; connections not yet accepted are reset.
    pub fn close_listener(&mut self, now: Instant, h: ListenerHandle) -> Result<(), Error> {
        let l = self.listener_mut(h)?;
        let addr = l.addr;
        let queued: Vec<ConnHandle> = l.accept_q.drain(..).collect();
        self.listeners[h.idx as usize].item = None;
        if self.listener_by_addr.remove(&addr).is_some() {
            let n = &mut self.listen_ports[addr.port() as usize];
            *n = n.saturating_sub(1);
        }
        for c in queued {
            let _ = self.abort(now, c);
        }
        // Embryonic children lose their listener and are reset when they complete.
        Ok(())
    }

    fn find_listener(&self, local: SocketAddr) -> Option<u32> {
        if self.listen_ports[local.port() as usize] == 0 {
            return None;
        }
        if let Some(&i) = self.listener_by_addr.get(&local) {
            return Some(i);
        }
        let any = SocketAddr::new(wire::unspecified_like(local.ip()), local.port());
        self.listener_by_addr.get(&any).copied()
    }

    // ---- connections ---------------------------------------------------------------

    /// Opens a connection to `remote`, from `local` when given (an unspecified ip or port
    /// 0 picks one).
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Result<ConnHandle, Error> {
        self.connect_with(now, remote, local, ConnectOptions::default())
    }

    /// [`Stack::connect`] with experiment options (ISN override, timestamps).
    pub fn connect_with(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        opts: ConnectOptions,
    ) -> Result<ConnHandle, Error> {
        if remote.port() == 0 || remote.ip().is_unspecified() || remote.ip().is_multicast() {
            return Err(Error::InvalidAddress("remote address"));
        }
        let local_ip = match local.map(|l| l.ip()) {
            Some(ip) if !ip.is_unspecified() => {
                if ip.is_ipv4() != remote.is_ipv4() {
                    return Err(Error::InvalidAddress("address families differ"));
                }
                if !self.is_local(ip) {
                    return Err(Error::AddrNotAvailable);
                }
                ip
            }
            _ => *self
                .addrs
                .iter()
                .find(|a| a.is_ipv4() == remote.is_ipv4())
                .ok_or(Error::AddrNotAvailable)?,
        };
        if self.conns.len() >= self.cfg.max_connections {
            self.counters.connection_limit_drops += 1;
            return Err(Error::ConnectionLimit);
        }
        let port = local.map(|l| l.port()).unwrap_or(0);
        let mut floor = None;
        let tuple = if port != 0 {
            let tuple = FourTuple::new(SocketAddr::new(local_ip, port), remote);
            if self.conn_slot(&TupleKey::from(&tuple)).is_some() {
                self.counters.connect_addr_in_use += 1;
                return Err(Error::AddrInUse(InUse::Connection));
            }
            match tw_verdict(&self.cfg, &self.tw, &tuple, now) {
                TwVerdict::Free => {}
                TwVerdict::Blocked(why) => {
                    self.counters.connect_addr_in_use += 1;
                    return Err(Error::AddrInUse(why));
                }
                TwVerdict::TakeOver => {}
            }
            tuple
        } else {
            let (conns, slots, tw, cfg, listeners) = (
                &self.conns,
                &self.slots,
                &self.tw,
                &self.cfg,
                &self.listener_by_addr,
            );
            let listen_ports = &self.listen_ports;
            let unspec = wire::unspecified_like(local_ip);
            let found = self.ports.allocate(local_ip, remote, |p| {
                let t = FourTuple::new(SocketAddr::new(local_ip, p), remote);
                conns
                    .get(&TupleKey::from(&t), |i, k| slot_is(slots, i, k))
                    .is_none()
                    && (listen_ports[p as usize] == 0
                        || (!listeners.contains_key(&t.local)
                            && !listeners.contains_key(&SocketAddr::new(unspec, p))))
                    && !matches!(tw_verdict(cfg, tw, &t, now), TwVerdict::Blocked(_))
            });
            match found {
                Some(p) => FourTuple::new(SocketAddr::new(local_ip, p), remote),
                None => {
                    self.counters.connect_no_port += 1;
                    return Err(Error::NoEphemeralPort);
                }
            }
        };
        let takeover = match self.cfg.reuse_policy {
            // Only timestamp-reuse lets a connect take over a TIME_WAIT tuple; under the
            // other policies the checks above already refused one.
            ReusePolicy::TimestampReuse => self.tw.get(&tuple),
            _ => None,
        };
        if let Some(old) = takeover {
            // timestamp-reuse takeover: like Linux, start above everything the old
            // incarnation sent.
            self.tw.remove(&tuple);
            self.counters.time_wait_reused += 1;
            floor = Some(reopen_isn_floor(&old));
        }
        let mut tcb = self.new_tcb(now, tuple, opts.isn.or(floor));
        if let Some(ts) = opts.timestamps {
            tcb.set_offer_timestamps(ts);
        }
        tcb.held = true;
        tcb.open_active(now);
        self.counters.active_opens += 1;
        let idx = self.insert_tcb(tcb);
        self.after_open(idx);
        Ok(ConnHandle {
            idx,
            gen: self.slots[idx as usize].gen,
        })
    }

    /// A TCB for `tuple`, with the RFC 6528 ISN unless `iss` is given (an experiment's
    /// override, a TIME_WAIT reopen floor, a SYN cookie's).
    fn new_tcb(&mut self, now: Instant, tuple: FourTuple, iss: Option<SeqNum>) -> Box<Tcb> {
        let (hashed, ts_offset) = self.isn.isn_and_ts_offset(now, &tuple);
        let init = TcbInit {
            tuple,
            iss: iss.unwrap_or(hashed),
            ts_offset,
        };
        match self.spare_tcbs.pop() {
            Some(mut b) => {
                b.reinit(&self.cfg, init, now);
                b
            }
            None => Box::new(Tcb::new(&self.cfg, init, now)),
        }
    }

    fn insert_tcb(&mut self, mut tcb: Box<Tcb>) -> u32 {
        tcb.in_conns = true;
        let key = tcb.key;
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[idx as usize];
        slot.gen = slot.gen.wrapping_add(1);
        slot.item = Some(tcb);
        self.conns.insert(&key, idx);
        idx
    }

    /// Queues data; returns how many bytes were taken (possibly fewer than offered).
    #[inline]
    pub fn send(&mut self, now: Instant, h: ConnHandle, data: &[u8]) -> Result<usize, Error> {
        let t = Self::tcb_in(&mut self.slots, h)?;
        if let Some(e) = t.error {
            return Err(Error::Connection(e));
        }
        if t.fin_queued || matches!(t.state, TcpState::Closed | TcpState::TimeWait) {
            return Err(Error::InvalidState("sending side is closed"));
        }
        let n = t.send(now, data);
        if n == 0 && !data.is_empty() {
            return Err(Error::WouldBlock);
        }
        // Queuing data changes no state: the connection may now have something to send,
        // and against a zero window the persist timer may be armed. That is all of
        // `after` it needs.
        if t.in_conns {
            Self::queue_work(
                &mut self.timers,
                &mut self.tx,
                &mut self.events,
                h.idx,
                t,
                true,
            );
        }
        Ok(n)
    }

    /// Reads data. `Ok(0)` means end of stream (the peer closed); `Err(WouldBlock)` means
    /// nothing yet.
    // Inlined into application loops, like send above: -190 instructions per churn
    // lifecycle under LTO, measured.
    #[inline]
    pub fn recv(&mut self, _now: Instant, h: ConnHandle, buf: &mut [u8]) -> Result<usize, Error> {
        let t = self.tcb_mut(h)?;
        if t.recv_available() == 0 {
            if t.fin_received {
                return Ok(0);
            }
            if let Some(e) = t.error {
                return Err(Error::Connection(e));
            }
            if t.state == TcpState::Closed {
                return Ok(0);
            }
            return Err(Error::WouldBlock);
        }
        let n = t.recv(buf);
        // Reading changes no state, timer or event; all it can do is open the window
        // enough for an update to go out, so this is all of `after` it needs.
        if t.ack_now && t.in_conns && !t.in_tx_queue {
            t.in_tx_queue = true;
            self.tx.push_back(h.idx);
        }
        Ok(n)
    }

    /// Half-close: sends FIN after the queued data; reading goes on.
    pub fn shutdown_write(&mut self, now: Instant, h: ConnHandle) -> Result<(), Error> {
        let cfg = &self.cfg;
        let t = Self::tcb_in(&mut self.slots, h)?;
        let before = t.state;
        let d = t.shutdown_write(now, cfg);
        self.after(now, h.idx, before, d);
        Ok(())
    }

    /// Closes the connection and releases the handle: FIN (or RST with linger-0, or when
    /// unread data remains, as Linux does). The connection finishes in the background.
    pub fn close(&mut self, now: Instant, h: ConnHandle) -> Result<(), Error> {
        let t = self.tcb_mut(h)?;
        // RFC 9293 §3.10.4 and Linux: closing with unread data resets the connection.
        if t.opts.linger_zero || t.recv_available() > 0 {
            return self.abort(now, h);
        }
        let t = self.tcb_mut(h)?;
        if t.state == TcpState::SynSent {
            // RFC 9293 §3.10.4: CLOSE in SYN-SENT deletes the TCB (nothing to tell the
            // peer, which has not answered yet).
            return self.abort(now, h);
        }
        let cfg = &self.cfg;
        let t = Self::tcb_in(&mut self.slots, h)?;
        t.held = false;
        t.events = EventSet::default();
        let before = t.state;
        let d = match before {
            TcpState::Closed | TcpState::TimeWait => Disposition::Closed,
            _ => {
                let d = t.shutdown_write(now, cfg);
                if t.state == TcpState::FinWait2 {
                    // Already half-closed earlier: now orphaned, so bound FIN-WAIT-2.
                    t.arm_fin_wait_2(now, cfg);
                }
                d
            }
        };
        self.after(now, h.idx, before, d);
        Ok(())
    }

    /// Resets the connection (RST) and releases the handle.
    pub fn abort(&mut self, now: Instant, h: ConnHandle) -> Result<(), Error> {
        let t = self.tcb_mut(h)?;
        let before = t.state;
        let tuple = t.tuple;
        let rst = t.abort();
        t.held = false;
        t.events = EventSet::default();
        if let Some((seq, ack)) = rst {
            self.queue_rst(tuple, seq, Some(ack), false);
        }
        if !matches!(before, TcpState::Closed | TcpState::TimeWait) {
            self.counters.aborted += 1;
        }
        self.after(now, h.idx, before, Disposition::Closed);
        Ok(())
    }

    /// Socket options of a connection.
    pub fn options(&self, h: ConnHandle) -> Result<SocketOptions, Error> {
        Ok(self.tcb(h)?.opts)
    }

    /// Disables (true) or enables Nagle's algorithm.
    pub fn set_nodelay(&mut self, h: ConnHandle, on: bool) -> Result<(), Error> {
        self.tcb_mut(h)?.opts.nodelay = on;
        Ok(())
    }

    /// Makes `close` send RST instead of FIN (SO_LINGER with a zero timeout).
    pub fn set_linger_zero(&mut self, h: ConnHandle, on: bool) -> Result<(), Error> {
        self.tcb_mut(h)?.opts.linger_zero = on;
        Ok(())
    }

    /// Enables keepalive probes.
    pub fn set_keepalive(&mut self, now: Instant, h: ConnHandle, on: bool) -> Result<(), Error> {
        let cfg = &self.cfg;
        let t = Self::tcb_in(&mut self.slots, h)?;
        t.set_keepalive(on, now, cfg);
        let before = t.state;
        self.after(now, h.idx, before, Disposition::Keep);
        Ok(())
    }

    // ---- input ---------------------------------------------------------------------

    /// The Ethernet layer (neighbour cache, ARP/NDP counters) on the Ethernet medium.
    pub fn ethernet(&self) -> Option<&EthernetLayer> {
        self.eth.as_ref()
    }

    /// Processes one incoming packet: an IP packet, or an Ethernet frame on the Ethernet
    /// medium.
    pub fn receive(&mut self, now: Instant, packet: &[u8]) {
        self.receive_with::<false>(now, packet);
    }

    /// [`Stack::receive`] for each of `packets`, in order, for a driver that holds several
    /// at once (a batch read from a device, a simulated wire's due packets): the result is
    /// exactly that of calling `receive` on each.
    ///
    /// What a batch adds: before each group of
    /// [`PREFETCH_GROUP`](crate::time_wait::PREFETCH_GROUP) packets, the TIME_WAIT lines
    /// that their SYNs will look up are requested together
    /// ([`TimeWaitTable::prefetch`]), so with a table larger than the caches the lookups'
    /// misses overlap instead of coming one after another. It costs a header peek per
    /// packet; without SYNs, or with a small table, there is nothing to gain. On the
    /// Ethernet medium it is `receive` in a loop.
    pub fn receive_batch<'p, I>(&mut self, now: Instant, packets: I)
    where
        I: IntoIterator<Item = &'p [u8]>,
        I::IntoIter: Clone,
    {
        let mut packets = packets.into_iter();
        if self.eth.is_some() {
            for p in packets {
                self.receive(now, p);
            }
            return;
        }
        let mut ahead = packets.clone();
        loop {
            self.batch_syns.clear();
            let mut n = 0;
            for p in ahead.by_ref().take(PREFETCH_GROUP) {
                n += 1;
                self.batch_syns.extend(wire::peek_syn_tuple(p));
            }
            if n == 0 {
                return;
            }
            self.tw.prefetch(&self.batch_syns);
            for p in packets.by_ref().take(n) {
                self.receive(now, p);
            }
        }
    }

    /// [`Stack::receive`] for a packet whose TCP checksum needs no verification, as a NIC
    /// driver tells its kernel: the device verified it, or the local host built the packet
    /// and left the checksum to the device (a TUN with offloads hands such packets over
    /// with the checksum partial). The IPv4 header checksum is still verified. Giving this
    /// a packet from a wire that nobody checked turns corruption into accepted data.
    pub fn receive_trusted(&mut self, now: Instant, packet: &[u8]) {
        self.receive_with::<true>(now, packet);
    }

    #[inline(always)]
    fn receive_with<const TRUSTED: bool>(&mut self, now: Instant, packet: &[u8]) {
        let packet = match self.eth.as_mut() {
            None => packet,
            Some(eth) => {
                let addrs = &self.addrs;
                match eth.receive(now, packet, |ip| addrs.contains(&ip)) {
                    FrameIn::Ip(p) => p,
                    FrameIn::Handled => return,
                }
            }
        };
        self.counters.packets_in += 1;
        let parsed = {
            let addrs = &self.addrs;
            if TRUSTED {
                wire::parse_trusted(packet, |ip| addrs.contains(&ip))
            } else {
                wire::parse(packet, |ip| addrs.contains(&ip))
            }
        };
        // Matched by reference: moving the parsed segment out would copy it.
        match &parsed {
            Err(r) => self.count_drop(*r),
            Ok(Incoming::Echo(req)) => self.on_echo(req),
            Ok(Incoming::Tcp(seg)) => {
                self.counters.segments_in += 1;
                self.on_tcp(now, seg)
            }
        }
    }

    fn count_drop(&mut self, r: DropReason) {
        if let Some(i) = DropReason::ALL.iter().position(|x| *x == r) {
            self.counters.dropped[i] += 1;
        }
    }

    fn on_echo(&mut self, req: &EchoRequest<'_>) {
        if !self.cfg.answer_ping {
            self.count_drop(DropReason::IcmpIgnored);
            return;
        }
        // Echo payloads are copied: bound their bytes too, not just the queue length.
        if self.echo_bytes_queued + req.data.len() > MAX_ECHO_BYTES_QUEUED {
            self.counters.control_queue_drops += 1;
            return;
        }
        let queued = self.ctrl.len();
        self.push_ctrl(
            true,
            Control::Echo {
                src: req.src,
                dst: req.dst,
                ident: req.ident,
                seq_no: req.seq_no,
                data: req.data.to_vec(),
            },
        );
        if self.ctrl.len() > queued {
            self.echo_bytes_queued += req.data.len();
        }
    }

    fn on_tcp(&mut self, now: Instant, seg: &Segment<'_>) {
        if let Some(idx) = self.conn_slot(&TupleKey::from(&seg.tuple)) {
            let cfg = &self.cfg;
            let Some(t) = self.slots[idx as usize].item.as_mut() else {
                return;
            };
            let before = t.state;
            let ooo_before = t.ooo_bytes();
            let mut rep = Report {
                ooo_budget: cfg.max_ooo_bytes_total.saturating_sub(self.ooo_total),
                ..Report::default()
            };
            let d = t.on_segment(now, cfg, seg, &mut rep);
            self.ooo_total = self.ooo_total + t.ooo_bytes() - ooo_before;
            self.apply_report(&rep);
            self.after(now, idx, before, d);
            return;
        }
        if !self.tw.is_empty() && self.on_time_wait_segment(now, seg) {
            return;
        }
        if seg.flags.ack && !seg.flags.syn && !seg.flags.rst && self.cookies_recent(now) {
            if let Some(l) = self.find_listener(seg.tuple.local) {
                if self.accept_cookie(now, l, seg) {
                    return;
                }
            }
        }
        if seg.flags.syn && !seg.flags.ack && !seg.flags.rst {
            if let Some(l) = self.find_listener(seg.tuple.local) {
                self.passive_open(now, l, seg, None);
                return;
            }
        }
        self.reply_closed(seg);
    }

    /// RFC 9293 §3.10.7.1: a segment to no connection gets a RST, unless it is one.
    fn reply_closed(&mut self, seg: &Segment<'_>) {
        self.counters.no_socket += 1;
        if seg.flags.rst {
            return;
        }
        if seg.flags.ack {
            self.queue_rst(seg.tuple, seg.ack, None, true);
        } else {
            self.queue_rst(seg.tuple, SeqNum(0), Some(seg.seq + seg.seg_len()), true);
        }
    }

    fn passive_open(&mut self, now: Instant, l: u32, seg: &Segment<'_>, iss: Option<SeqNum>) {
        let Some(listener) = self.listeners[l as usize].item.as_ref() else {
            return;
        };
        if listener.pending + listener.accept_q.len() >= listener.backlog {
            // The SYN queue is full. Answer statelessly while the accept queue has room
            // (RFC 4987 §3.6); otherwise drop, as an application that does not accept
            // cannot take more connections anyway.
            if self.cfg.syn_cookies && listener.accept_q.len() < listener.backlog {
                self.send_cookie(now, seg);
            } else {
                self.counters.syn_backlog_drops += 1;
            }
            return;
        }
        if self.conns.len() >= self.cfg.max_connections {
            self.counters.connection_limit_drops += 1;
            return;
        }
        let mut tcb = self.new_tcb(now, seg.tuple, iss);
        tcb.listener = Some(l);
        tcb.open_passive(now, seg);
        if let Some(listener) = self.listeners[l as usize].item.as_mut() {
            listener.pending += 1;
        }
        self.counters.passive_opens += 1;
        let idx = self.insert_tcb(tcb);
        self.after_open(idx);
    }

    fn cookies_recent(&self, now: Instant) -> bool {
        self.last_cookie
            .is_some_and(|t| now.saturating_since(t) <= Duration::from_secs(128))
    }

    fn send_cookie(&mut self, now: Instant, syn: &Segment<'_>) {
        let our_mss = if syn.tuple.local.is_ipv4() {
            self.cfg.mss_v4
        } else {
            self.cfg.mss_v6
        };
        let peer_mss = syn
            .opts
            .mss
            .unwrap_or(if syn.tuple.local.is_ipv4() { 536 } else { 1220 });
        let iss = self.cookies.make(now, &syn.tuple, syn.seq, peer_mss);
        let ts = syn.opts.timestamp.filter(|_| self.cfg.timestamps);
        let rcv_wscale = self.cfg.recv_window_shift();
        // Without timestamps there is nowhere to keep window scale and SACK: not offered.
        let wscale = (ts.is_some() && self.cfg.window_scaling && syn.opts.wscale.is_some())
            .then_some(rcv_wscale);
        let sack = ts.is_some() && self.cfg.sack && syn.opts.sack_permitted;
        let timestamp = ts.map(|(tsval, _)| {
            let ours = cookie::encode_ts_options(
                self.ts_clock(now, &syn.tuple),
                syn.opts.wscale.filter(|_| wscale.is_some()),
                sack,
            );
            (ours, tsval)
        });
        self.last_cookie = Some(now);
        self.counters.syn_cookies_sent += 1;
        self.push_ctrl(
            true,
            Control::Tcp {
                tuple: syn.tuple,
                seg: OutSegment {
                    seq: iss,
                    ack: syn.seq + 1u32,
                    flags: Flags {
                        syn: true,
                        ack: true,
                        ..Flags::default()
                    },
                    window: self.cfg.recv_buffer.min(65535) as u16,
                    mss: Some(our_mss),
                    wscale,
                    sack_permitted: sack,
                    timestamp,
                    ..OutSegment::default()
                },
            },
        );
    }

    /// An ACK to a listener with no connection: is it the answer to a cookie?
    fn accept_cookie(&mut self, now: Instant, l: u32, seg: &Segment<'_>) -> bool {
        let Some(info) = self
            .cookies
            .check(now, &seg.tuple, seg.seq - 1u32, seg.ack - 1u32)
        else {
            self.counters.syn_cookies_invalid += 1;
            return false;
        };
        let Some(listener) = self.listeners[l as usize].item.as_mut() else {
            return false;
        };
        if listener.accept_q.len() >= listener.backlog
            || self.conns.len() >= self.cfg.max_connections
        {
            self.counters.syn_backlog_drops += 1;
            return true;
        }
        // Counted as embryonic for a moment so the Established hand-over balances.
        listener.pending += 1;
        self.counters.syn_cookies_valid += 1;
        self.counters.passive_opens += 1;
        let (wscale, sack) = match seg.opts.timestamp {
            Some((_, tsecr)) => cookie::decode_ts_options(tsecr),
            None => (None, false),
        };
        let mut tcb = self.new_tcb(now, seg.tuple, Some(seg.ack - 1u32));
        tcb.listener = Some(l);
        tcb.open_from_cookie(now, seg, info.mss, wscale, sack);
        let idx = self.insert_tcb(tcb);
        let cfg = &self.cfg;
        let mut rep = Report {
            ooo_budget: cfg.max_ooo_bytes_total.saturating_sub(self.ooo_total),
            ..Report::default()
        };
        if let Some(t) = self.slots[idx as usize].item.as_mut() {
            // The ACK may carry data (and even a FIN): process it as any segment.
            let _ = t.on_segment(now, cfg, seg, &mut rep);
            self.ooo_total += t.ooo_bytes();
        }
        self.state_counts[TcpState::SynReceived.index()] += 1;
        self.apply_report(&rep);
        self.after(now, idx, TcpState::SynReceived, Disposition::Established);
        true
    }

    /// Handles a segment for a 4-tuple in TIME_WAIT; false when there is no such entry.
    fn on_time_wait_segment(&mut self, now: Instant, seg: &Segment<'_>) -> bool {
        let tws = TwSegment {
            seq: seg.seq,
            ack: seg.flags.ack.then_some(seg.ack),
            syn: seg.flags.syn,
            fin: seg.flags.fin,
            rst: seg.flags.rst,
            payload_len: seg.payload.len(),
            tsval: seg.opts.timestamp.map(|t| t.0),
        };
        match self.tw.handle_segment(now, &seg.tuple, &tws) {
            Some(TwAction::Ack { seq, ack, tsecr }) => {
                let timestamp = tsecr.map(|e| (self.ts_clock(now, &seg.tuple), e));
                let window = self.cfg.recv_buffer.min(65535) as u16;
                self.push_ctrl(
                    true,
                    Control::Tcp {
                        tuple: seg.tuple,
                        seg: OutSegment {
                            seq,
                            ack,
                            flags: Flags {
                                ack: true,
                                ..Flags::default()
                            },
                            window,
                            timestamp,
                            ..OutSegment::default()
                        },
                    },
                );
            }
            Some(TwAction::Reopen { old }) => {
                self.counters.time_wait_reopened += 1;
                match self.find_listener(seg.tuple.local) {
                    Some(l) => self.passive_open(now, l, seg, Some(reopen_isn_floor(&old))),
                    None => self.reply_closed(seg),
                }
            }
            Some(TwAction::ResetAccepted) | Some(TwAction::Ignore) => {}
            None => return false,
        }
        true
    }

    fn ts_clock(&self, now: Instant, tuple: &FourTuple) -> u32 {
        (now.millis() as u32).wrapping_add(self.isn.ts_offset(tuple))
    }

    fn queue_rst(&mut self, tuple: FourTuple, seq: SeqNum, ack: Option<SeqNum>, bounded: bool) {
        self.counters.rst_sent += 1;
        self.push_ctrl(
            bounded,
            Control::Tcp {
                tuple,
                seg: OutSegment {
                    seq,
                    ack: ack.unwrap_or_default(),
                    flags: Flags {
                        rst: true,
                        ack: ack.is_some(),
                        ..Flags::default()
                    },
                    ..OutSegment::default()
                },
            },
        );
    }

    fn push_ctrl(&mut self, bounded: bool, c: Control) {
        // Answers to incoming packets are bounded (a flood must not grow memory); packets
        // that finish one of our own connections (abort RST, final ACK) are never dropped:
        // they are bounded by the connection count already.
        if bounded && self.ctrl.len() >= MAX_CONTROL_QUEUE {
            self.counters.control_queue_drops += 1;
            return;
        }
        self.ctrl.push_back(c);
    }

    /// Everything that follows a TCB call: counters, dispositions, queues, timers, frees.
    /// A segment's or timer's [`Report`] is applied by the caller first (application
    /// calls have none): passing it here would copy it on every call.
    fn after(&mut self, now: Instant, idx: u32, before: TcpState, d: Disposition) {
        let Some(t) = self.slots[idx as usize].item.as_mut() else {
            return;
        };
        let mut after_state = t.state;
        let in_table = t.in_conns;
        if matches!(d, Disposition::Keep) && after_state == before && in_table {
            // The common case (data and ACKs that change no state): a live connection
            // stays live in the same state; only output, timers and events can have
            // changed. (`recv` and `send` never get here: they do their part inline.)
            Self::queue_work(
                &mut self.timers,
                &mut self.tx,
                &mut self.events,
                idx,
                t,
                true,
            );
            return;
        }
        match d {
            Disposition::Keep => {}
            Disposition::SendRst { seq, ack } => {
                let tuple = t.tuple;
                self.queue_rst(tuple, seq, ack, true);
            }
            Disposition::ChallengeAck => {
                let sec = now.micros() / 1_000_000;
                if self.challenge_window.0 != sec {
                    self.challenge_window = (sec, 0);
                }
                if self.challenge_window.1 < self.cfg.challenge_ack_limit {
                    self.challenge_window.1 += 1;
                    self.counters.challenge_acks += 1;
                    t.ack_now = true;
                } else {
                    self.counters.challenge_acks_limited += 1;
                }
            }
            Disposition::Established => {
                self.counters.established += 1;
                let l = t.listener.take();
                let gen = self.slots[idx as usize].gen;
                let handle = ConnHandle { idx, gen };
                match l.and_then(|l| self.listeners[l as usize].item.as_mut().map(|x| (l, x))) {
                    Some((li, listener)) => {
                        listener.pending = listener.pending.saturating_sub(1);
                        listener.accept_q.push_back(handle);
                        if !listener.queued_event {
                            listener.queued_event = true;
                            self.events.push_back(EventRef::Listener(li));
                        }
                        if let Some(t) = self.slots[idx as usize].item.as_mut() {
                            // The listener holds it for the application until accepted;
                            // its events (data may have come with the final ACK) wait.
                            t.held = true;
                        }
                    }
                    None => {
                        // The listener went away during the handshake.
                        if let Some(t) = self.slots[idx as usize].item.as_mut() {
                            let tuple = t.tuple;
                            if let Some((seq, ack)) = t.abort() {
                                self.queue_rst(tuple, seq, Some(ack), false);
                            }
                            after_state = TcpState::Closed;
                        }
                    }
                }
            }
            Disposition::TimeWait => {
                let seg = t.final_ack(now);
                let tuple = t.tuple;
                let state = TimeWaitState {
                    snd_nxt: seg.seq,
                    rcv_nxt: t.rcv_nxt,
                    ts_recent: t.ts_ok.then_some(t.ts_recent),
                };
                t.state = TcpState::TimeWait;
                t.events |= EventSet::CLOSED;
                after_state = TcpState::TimeWait;
                self.ctrl_ack(tuple, seg);
                self.counters.time_wait_entered += 1;
                match self.tw.insert(now, tuple, state) {
                    TwInsert::Inserted | TwInsert::Replaced => {}
                    TwInsert::EvictedOldest(_) => self.counters.time_wait_evicted += 1,
                    TwInsert::Dropped => self.counters.time_wait_dropped_full += 1,
                }
            }
            Disposition::Closed if matches!(before, TcpState::Closed | TcpState::TimeWait) => {
                // Releasing a connection that had already ended: counted back then.
                after_state = before;
            }
            Disposition::Closed => {
                after_state = TcpState::Closed;
                match t.error {
                    Some(ConnError::Reset) => self.counters.resets_received += 1,
                    Some(ConnError::Refused) => self.counters.refused += 1,
                    Some(ConnError::TimedOut) => self.counters.timeouts += 1,
                    Some(ConnError::Aborted) => {}
                    None => {
                        if before == TcpState::LastAck {
                            self.counters.closed_orderly += 1;
                        }
                    }
                }
            }
        }
        let Some(t) = self.slots[idx as usize].item.as_mut() else {
            return;
        };
        if after_state == TcpState::FinWait1 {
            // An active close (`close` or `shutdown_write`): this connection will most
            // likely enter TIME-WAIT about a round trip from now.
            self.tw.prefetch_index(&t.tuple);
        }
        if before == TcpState::SynReceived && t.state != TcpState::SynReceived {
            if let Some(l) = t.listener.take() {
                if let Some(listener) = self.listeners[l as usize].item.as_mut() {
                    listener.pending = listener.pending.saturating_sub(1);
                }
            }
        }
        // Per-state counts of live connections.
        if in_table {
            self.state_counts[before.index()] = self.state_counts[before.index()].saturating_sub(1);
        }
        let live = !matches!(after_state, TcpState::Closed | TcpState::TimeWait);
        if live {
            self.state_counts[after_state.index()] += 1;
        } else if in_table {
            t.in_conns = false;
            self.conns.remove(&t.key, idx);
        }
        Self::queue_work(
            &mut self.timers,
            &mut self.tx,
            &mut self.events,
            idx,
            t,
            live,
        );
        if !live && !t.held {
            self.free_slot(idx);
        }
    }

    /// [`Stack::after`] for a connection just opened (SYN-SENT or SYN-RECEIVED, already
    /// in the connection table): all it needs is its state counted and its SYN queued.
    fn after_open(&mut self, idx: u32) {
        let Some(t) = self.slots[idx as usize].item.as_mut() else {
            return;
        };
        debug_assert!(
            t.in_conns && matches!(t.state, TcpState::SynSent | TcpState::SynReceived),
            "after_open on a {:?} connection",
            t.state
        );
        self.state_counts[t.state.index()] += 1;
        Self::queue_work(
            &mut self.timers,
            &mut self.tx,
            &mut self.events,
            idx,
            t,
            true,
        );
    }

    /// What follows any TCB call: a live connection's timer and place in the transmit
    /// queue, and an event for the application when it holds the handle.
    #[inline(always)]
    fn queue_work(
        timers: &mut TimerHeap,
        tx: &mut Fifo<u32>,
        events: &mut Fifo<EventRef>,
        idx: u32,
        t: &mut Tcb,
        live: bool,
    ) {
        if live {
            Self::schedule(timers, idx, t);
            if !t.in_tx_queue && t.wants_tx() {
                t.in_tx_queue = true;
                tx.push_back(idx);
            }
        }
        if t.held && !t.queued_event && !t.events.is_empty() {
            t.queued_event = true;
            events.push_back(EventRef::Conn(idx));
        }
    }

    /// Moves the connection's heap entry when its next deadline came earlier. A deadline
    /// that moved later or went away keeps the old entry: it fires early, finds nothing
    /// due and reschedules (one spurious wake-up instead of a heap update on every ACK).
    /// Freeing the slot removes the entry.
    fn schedule(timers: &mut TimerHeap, idx: u32, t: &mut Tcb) {
        if let Some(dl) = t.next_deadline() {
            if t.scheduled.is_none_or(|s| dl < s) {
                t.scheduled = Some(dl);
                timers.set(idx, Some(dl));
            }
        }
    }

    fn ctrl_ack(&mut self, tuple: FourTuple, seg: OutSegment) {
        self.push_ctrl(false, Control::Tcp { tuple, seg });
    }

    fn free_slot(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if let Some(t) = slot.item.take() {
            self.ooo_total -= t.ooo_bytes().min(self.ooo_total);
            slot.gen = slot.gen.wrapping_add(1);
            self.free.push(idx);
            if self.spare_tcbs.len() < MAX_SPARE_TCBS {
                self.spare_tcbs.push(t);
            }
        }
        self.timers.set(idx, None);
    }

    fn apply_report(&mut self, rep: &Report) {
        if rep.is_quiet() {
            return;
        }
        if let Some(d) = rep.drop {
            if let Some(i) = SegDrop::ALL.iter().position(|x| *x == d) {
                self.counters.segments_dropped[i] += 1;
            }
        }
        self.counters.retransmits += rep.retransmits;
        self.counters.fast_retransmits += rep.fast_retransmits;
        self.counters.rto_timeouts += rep.rto_timeouts;
        self.counters.keepalive_probes += rep.keepalive_probes;
        self.counters.window_probes += rep.window_probes;
        self.counters.ooo_dropped_bytes += rep.ooo_dropped_bytes;
    }

    // ---- output --------------------------------------------------------------------

    /// Writes the next packet to send into `buf` and returns its length; `None` when
    /// nothing is left. `buf` should hold at least the MTU (1500 bytes), plus 14 on the
    /// Ethernet medium, where what comes out is a frame.
    #[must_use]
    // Inlined into the driver's polling loop, the empty poll that ends each batch is a
    // couple of loads (measured: -300 instructions per churn lifecycle under LTO).
    #[inline]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.eth.is_none() {
            // Drivers poll until `None`, so every batch ends with an empty poll: answer
            // it here, before the call into the whole output path.
            if self.ctrl.is_empty() && self.tx.front().is_none() {
                return None;
            }
            return self.poll_ip(now, buf);
        }
        if let Some(n) = self.eth.as_mut().and_then(|e| e.poll_ready(buf)) {
            self.counters.packets_out += 1;
            return Some(n);
        }
        if buf.len() < 14 {
            return None;
        }
        loop {
            let n = self.poll_ip(now, &mut buf[14..])?;
            let eth = self.eth.as_mut()?;
            if let Some(f) = eth.frame(now, buf, n) {
                return Some(f);
            }
            // Queued for resolution, not handed out; a request may be ready instead.
            self.counters.packets_out -= 1;
            if let Some(n) = eth.poll_ready(buf) {
                self.counters.packets_out += 1;
                return Some(n);
            }
        }
    }

    fn poll_ip(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        while let Some(c) = self.ctrl.pop_front() {
            if let Control::Echo { data, .. } = &c {
                self.echo_bytes_queued = self.echo_bytes_queued.saturating_sub(data.len());
            }
            let n = match &c {
                Control::Tcp { tuple, seg } => wire::emit_tcp(buf, tuple, seg, (&[], &[])),
                Control::Echo {
                    src,
                    dst,
                    ident,
                    seq_no,
                    data,
                } => {
                    let r = wire::emit_echo_reply(
                        buf,
                        &EchoRequest {
                            src: *src,
                            dst: *dst,
                            ident: *ident,
                            seq_no: *seq_no,
                            data,
                        },
                    );
                    if r.is_some() {
                        self.counters.echo_replies += 1;
                    }
                    r
                }
            };
            match n {
                Some(n) => {
                    self.counters.packets_out += 1;
                    return Some(n);
                }
                None => self.counters.tx_buffer_too_small += 1,
            }
        }
        while let Some(idx) = self.tx.front() {
            let Some(t) = self.slots[idx as usize].item.as_mut() else {
                self.tx.pop_front();
                continue;
            };
            let n = t.poll_segment(now, buf);
            if n.is_none() || !t.wants_tx() {
                t.in_tx_queue = false;
                self.tx.pop_front();
            }
            if n.is_some() {
                // Sending may arm the retransmission timer.
                Self::schedule(&mut self.timers, idx, t);
                self.counters.packets_out += 1;
                return n;
            }
        }
        None
    }

    /// The next application event.
    pub fn poll_event(&mut self) -> Option<Event> {
        while let Some(e) = self.events.pop_front() {
            match e {
                EventRef::Conn(idx) => {
                    let slot = &mut self.slots[idx as usize];
                    let gen = slot.gen;
                    if let Some(t) = slot.item.as_mut() {
                        t.queued_event = false;
                        let ev = core::mem::take(&mut t.events);
                        if t.held && !ev.is_empty() {
                            return Some(Event::Conn {
                                handle: ConnHandle { idx, gen },
                                events: ev,
                            });
                        }
                    }
                }
                EventRef::Listener(idx) => {
                    let slot = &mut self.listeners[idx as usize];
                    let gen = slot.gen;
                    if let Some(l) = slot.item.as_mut() {
                        l.queued_event = false;
                        if !l.accept_q.is_empty() {
                            return Some(Event::Incoming {
                                listener: ListenerHandle { idx, gen },
                            });
                        }
                    }
                }
            }
        }
        None
    }

    // ---- timers --------------------------------------------------------------------

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Drivers call this after every batch: plain comparisons, no iterator chain.
        fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
            match (a, b) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, None) => x,
                (None, y) => y,
            }
        }
        let t = self.timers.peek().map(|(t, _)| t);
        let t = earlier(t, self.tw.next_expiry());
        match &self.eth {
            None => t,
            Some(e) => earlier(t, e.poll_timeout()),
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tw.expire(now);
        if let Some(eth) = self.eth.as_mut() {
            eth.handle_timeout(now);
        }
        while let Some((_, idx)) = self.timers.pop_due(now) {
            let cfg = &self.cfg;
            // Freed slots leave the heap, so the slot is live; stay defensive anyway.
            let Some(t) = self.slots[idx as usize].item.as_mut() else {
                continue;
            };
            t.scheduled = None;
            let before = t.state;
            let mut rep = Report::default();
            let d = t.on_timer(now, cfg, &mut rep);
            let d = if d == Disposition::Closed && t.error == Some(ConnError::TimedOut) {
                // RFC 9293 §3.8.3: give up; tell the peer with a RST when synchronized.
                if before.synchronized() {
                    let tuple = t.tuple;
                    let (seq, ack) = t.rst_fields();
                    self.queue_rst(tuple, seq, Some(ack), false);
                }
                d
            } else {
                d
            };
            self.apply_report(&rep);
            self.after(now, idx, before, d);
        }
    }

    /// How long until the next timer, from `now`.
    pub fn timeout_in(&self, now: Instant) -> Option<Duration> {
        self.poll_timeout().map(|t| t.saturating_since(now))
    }
}

/// Whether the connection in slot `i` has tuple `key`, for confirming a [`ConnIndex`] hit.
#[inline]
fn slot_is(slots: &[Slot<Box<Tcb>>], i: u32, key: &TupleKey) -> bool {
    slots
        .get(i as usize)
        .and_then(|s| s.item.as_ref())
        .is_some_and(|t| t.key == *key)
}

enum TwVerdict {
    Free,
    Blocked(InUse),
    TakeOver,
}

/// Whether the reuse policy lets a new outbound connection use `tuple`.
fn tw_verdict(cfg: &Config, tw: &TimeWaitTable, tuple: &FourTuple, now: Instant) -> TwVerdict {
    match cfg.reuse_policy {
        ReusePolicy::ExactTuple => {
            if tw.contains(tuple) {
                TwVerdict::Blocked(InUse::TimeWait)
            } else {
                TwVerdict::Free
            }
        }
        ReusePolicy::LocalPort => {
            if tw.contains(tuple) {
                TwVerdict::Blocked(InUse::TimeWait)
            } else if tw.local_in_use(tuple.local) {
                TwVerdict::Blocked(InUse::LocalPortTimeWait)
            } else {
                TwVerdict::Free
            }
        }
        ReusePolicy::TimestampReuse => match tw.get(tuple) {
            None => TwVerdict::Free,
            Some(e) => {
                if cfg.timestamps
                    && e.ts_recent.is_some()
                    && now.saturating_since(e.last_seen) > cfg.tw_reuse_delay
                {
                    TwVerdict::TakeOver
                } else {
                    TwVerdict::Blocked(InUse::TimeWait)
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::TcbInit;
    use std::net::Ipv4Addr;

    /// Moves packets both ways until neither stack has any left (bounded).
    fn exchange(now: Instant, a: &mut Stack, b: &mut Stack) {
        let mut buf = vec![0u8; 1500];
        for _ in 0..64 {
            let mut moved = false;
            while let Some(n) = a.poll_transmit(now, &mut buf) {
                b.receive(now, &buf[..n]);
                moved = true;
            }
            while let Some(n) = b.poll_transmit(now, &mut buf) {
                a.receive(now, &buf[..n]);
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("the exchange did not settle");
    }

    /// A TCB recycled after a whole connection (data both ways, buffers, timers, options,
    /// TIME-WAIT) is indistinguishable from a new one: nothing of the old connection
    /// leaks into the next.
    #[test]
    fn recycled_tcb_equals_a_new_one() {
        let ip = |d| IpAddr::V4(Ipv4Addr::new(192, 0, 2, d));
        let cfg = Config::default();
        let mut a = Stack::new(cfg.clone(), [1; 16]);
        a.add_address(ip(1));
        let mut b = Stack::new(cfg.clone(), [2; 16]);
        b.add_address(ip(2));
        let l = b.listen(SocketAddr::new(ip(2), 80), 8).unwrap();
        let mut now = Instant::from_millis(1_000);
        let c = a.connect(now, SocketAddr::new(ip(2), 80), None).unwrap();
        exchange(now, &mut a, &mut b);
        let s = b.accept(l).unwrap().expect("accepted");
        let mut rx = [0u8; 4096];
        for _ in 0..3 {
            now = now.plus_micros(10_000);
            a.send(now, c, &[7u8; 3000]).unwrap();
            b.send(now, s, &[9u8; 100]).unwrap();
            exchange(now, &mut a, &mut b);
            while b.recv(now, s, &mut rx).is_ok_and(|n| n > 0) {}
            while a.recv(now, c, &mut rx).is_ok_and(|n| n > 0) {}
        }
        a.close(now, c).unwrap();
        exchange(now, &mut a, &mut b);
        assert_eq!(b.recv(now, s, &mut rx), Ok(0));
        b.close(now, s).unwrap();
        exchange(now, &mut a, &mut b);
        assert_eq!(a.time_wait().len(), 1);
        assert_eq!(a.connection_count(), 0);

        let mut used = a.spare_tcbs.pop().expect("the closed TCB went to the pool");
        assert!(
            used.snd_nxt != used.iss,
            "the pooled TCB carried a connection"
        );
        let tuple = FourTuple {
            local: SocketAddr::new(ip(1), 40_000),
            remote: SocketAddr::new(ip(2), 443),
        };
        let init = || TcbInit {
            tuple,
            iss: SeqNum(12345),
            ts_offset: 77,
        };
        let later = now.plus_micros(5_000_000);
        used.reinit(&cfg, init(), later);
        let fresh = Tcb::new(&cfg, init(), later);
        assert_eq!(format!("{used:?}"), format!("{fresh:?}"));
    }
}
