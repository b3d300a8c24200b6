//! The TCP control block and its per-segment state machine (RFC 9293).
//!
//! This module owns one connection's state from SYN-SENT / SYN-RECEIVED to CLOSED. It never
//! looks at other connections, the TIME_WAIT table or listeners: when a connection must
//! enter TIME_WAIT or be freed, it says so through a [`Disposition`] and the stack acts.
//! LISTEN lives in the stack's listener table and TIME_WAIT in the compact table; a TCB is
//! never in either state.

use core::time::Duration;
use std::collections::VecDeque;

use crate::config::Config;
use crate::seq::SeqNum;
use crate::time::Instant;
use crate::tuple::{FourTuple, TupleKey};
use crate::wire::{self, Flags, OutSegment, Segment};

/// The RFC 9293 connection states.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum TcpState {
    /// No connection.
    Closed,
    /// Waiting for a connection request (listeners only).
    Listen,
    /// SYN sent, waiting for a matching SYN.
    SynSent,
    /// SYN received and SYN sent, waiting for the ACK of our SYN.
    SynReceived,
    /// Open; data flows both ways.
    Established,
    /// We closed; our FIN is not yet acknowledged.
    FinWait1,
    /// Our FIN is acknowledged; waiting for the peer's FIN.
    FinWait2,
    /// The peer closed; waiting for our application to close.
    CloseWait,
    /// Both closed at once; waiting for the ACK of our FIN.
    Closing,
    /// The peer closed first and so did we; waiting for the ACK of our FIN.
    LastAck,
    /// Waiting out 2*MSL after an active close (kept in the TIME_WAIT table).
    TimeWait,
}

impl TcpState {
    /// All states, in RFC order.
    pub const ALL: [TcpState; 11] = [
        TcpState::Closed,
        TcpState::Listen,
        TcpState::SynSent,
        TcpState::SynReceived,
        TcpState::Established,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::CloseWait,
        TcpState::Closing,
        TcpState::LastAck,
        TcpState::TimeWait,
    ];

    /// Index into [`TcpState::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The RFC name, e.g. "SYN-SENT".
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Closed => "CLOSED",
            TcpState::Listen => "LISTEN",
            TcpState::SynSent => "SYN-SENT",
            TcpState::SynReceived => "SYN-RECEIVED",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait1 => "FIN-WAIT-1",
            TcpState::FinWait2 => "FIN-WAIT-2",
            TcpState::CloseWait => "CLOSE-WAIT",
            TcpState::Closing => "CLOSING",
            TcpState::LastAck => "LAST-ACK",
            TcpState::TimeWait => "TIME-WAIT",
        }
    }

    /// True in the states where sequence numbers on both sides are known.
    pub fn synchronized(self) -> bool {
        !matches!(
            self,
            TcpState::Closed | TcpState::Listen | TcpState::SynSent | TcpState::SynReceived
        )
    }
}

/// Why a connection ended abnormally.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum ConnError {
    /// The peer answered our SYN with RST.
    Refused,
    /// The peer reset an open connection.
    Reset,
    /// Retransmissions or keepalives went unanswered.
    TimedOut,
    /// The local application aborted it.
    Aborted,
}

/// Readiness and lifecycle events, as a bit set.
#[derive(Copy, Clone, PartialEq, Eq, Default, Debug)]
pub struct EventSet(pub u8);

impl EventSet {
    /// The handshake completed.
    pub const CONNECTED: EventSet = EventSet(1);
    /// Data (or EOF) can be read.
    pub const READABLE: EventSet = EventSet(2);
    /// Send buffer space opened up.
    pub const WRITABLE: EventSet = EventSet(4);
    /// The peer's FIN arrived: no more data will come.
    pub const PEER_CLOSED: EventSet = EventSet(8);
    /// The connection is fully closed (orderly), or entered TIME_WAIT.
    pub const CLOSED: EventSet = EventSet(16);
    /// The connection ended with an error; see [`crate::Stack::error`].
    pub const ERROR: EventSet = EventSet(32);

    /// True when every bit of `other` is set.
    pub fn contains(self, other: EventSet) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when no bit is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl core::ops::BitOr for EventSet {
    type Output = EventSet;
    fn bitor(self, rhs: EventSet) -> EventSet {
        EventSet(self.0 | rhs.0)
    }
}

impl core::ops::BitOrAssign for EventSet {
    fn bitor_assign(&mut self, rhs: EventSet) {
        self.0 |= rhs.0;
    }
}

/// What the stack must do after the TCB processed an input or a timer.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Disposition {
    /// Nothing beyond queued output.
    Keep,
    /// The handshake of a passive open completed: move to the listener's accept queue.
    Established,
    /// Enter TIME_WAIT: send the final ACK, record the entry, free the TCB.
    TimeWait,
    /// The connection is over (orderly close, reset, timeout): free the TCB once released.
    Closed,
    /// Answer with a RST (seq, optional ack) and keep the connection.
    SendRst { seq: SeqNum, ack: Option<SeqNum> },
    /// Answer with an RFC 5961 challenge ACK (rate-limited by the stack).
    ChallengeAck,
}

/// Why a segment was dropped inside the state machine.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum SegDrop {
    /// PAWS: timestamp older than TS.Recent (RFC 7323 §5).
    Paws,
    /// Sequence number outside the receive window.
    OutOfWindow,
    /// ACK for data never sent, or too old (RFC 5961 §5).
    BadAck,
    /// Segment without ACK in a synchronized state.
    NoAck,
    /// RST whose sequence number did not match exactly.
    RstNotExact,
    /// Out-of-order data beyond the per-connection limit.
    OooLimit,
    /// Data after our receive side was closed, or in a state that takes none.
    DataNotAccepted,
}

impl SegDrop {
    /// All reasons.
    pub const ALL: [SegDrop; 7] = [
        SegDrop::Paws,
        SegDrop::OutOfWindow,
        SegDrop::BadAck,
        SegDrop::NoAck,
        SegDrop::RstNotExact,
        SegDrop::OooLimit,
        SegDrop::DataNotAccepted,
    ];

    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            SegDrop::Paws => "paws",
            SegDrop::OutOfWindow => "out_of_window",
            SegDrop::BadAck => "bad_ack",
            SegDrop::NoAck => "no_ack",
            SegDrop::RstNotExact => "rst_not_exact",
            SegDrop::OooLimit => "ooo_limit",
            SegDrop::DataNotAccepted => "data_not_accepted",
        }
    }
}

/// Side effects a TCB reports to the stack's counters.
#[derive(Default, Debug)]
pub(crate) struct Report {
    /// Input: out-of-order bytes this connection may still add stack-wide.
    pub ooo_budget: usize,
    pub drop: Option<SegDrop>,
    pub retransmits: u64,
    pub fast_retransmits: u64,
    pub rto_timeouts: u64,
    pub keepalive_probes: u64,
    pub window_probes: u64,
    pub ooo_dropped_bytes: u64,
}

impl Report {
    /// Nothing to count: the common case, checked before touching the counters.
    pub fn is_quiet(&self) -> bool {
        self.drop.is_none()
            && (self.retransmits
                | self.fast_retransmits
                | self.rto_timeouts
                | self.keepalive_probes
                | self.window_probes
                | self.ooo_dropped_bytes)
                == 0
    }
}

/// Per-connection options set by the application.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// Disable Nagle's algorithm.
    pub nodelay: bool,
    /// Send keepalive probes when idle.
    pub keepalive: bool,
    /// Close with RST instead of FIN (SO_LINGER with zero timeout).
    pub linger_zero: bool,
}

const MIN_MSS_V4: u16 = 536;
const MIN_MSS_V6: u16 = 1220;

/// One connection's transmission control block.
#[derive(Debug)]
pub(crate) struct Tcb {
    pub tuple: FourTuple,
    /// `tuple` as the connection table's key, kept so that confirming a table hit
    /// compares integers instead of converting the tuple again.
    pub key: TupleKey,
    pub state: TcpState,
    /// Listener slot for passive opens until accepted.
    pub listener: Option<u32>,
    /// The application holds a handle (false once it called close or abort, or for a
    /// passive-open child not yet accepted).
    pub held: bool,
    pub opts: SocketOptions,
    pub error: Option<ConnError>,
    pub events: EventSet,
    pub queued_event: bool,

    // Send sequence space (RFC 9293 §3.3.1).
    pub iss: SeqNum,
    pub snd_una: SeqNum,
    pub snd_nxt: SeqNum,
    /// Highest sequence number sent (snd_nxt goes back on RTO; this does not).
    pub snd_max: SeqNum,
    pub snd_wnd: u32,
    pub max_snd_wnd: u32,
    pub snd_wl1: SeqNum,
    pub snd_wl2: SeqNum,
    snd_wscale: u8,
    send_buf: VecDeque<u8>,
    send_cap: usize,
    /// Sequence number of `send_buf[0]`.
    buf_seq: SeqNum,
    /// The application closed its sending side: a FIN follows the data.
    pub fin_queued: bool,

    // Receive sequence space.
    pub irs: SeqNum,
    pub rcv_nxt: SeqNum,
    rcv_wscale: u8,
    /// Right edge of the window we last advertised; never moves left (RFC 9293 §3.8.6).
    rcv_adv: SeqNum,
    recv_buf: VecDeque<u8>,
    recv_cap: usize,
    ooo: Vec<(SeqNum, Vec<u8>)>,
    ooo_bytes: usize,
    ooo_limit: usize,
    /// Sequence number of a FIN that arrived ahead of missing data.
    fin_seq: Option<SeqNum>,
    pub fin_received: bool,
    last_ooo: Option<SeqNum>,

    // Negotiated options.
    our_mss: u16,
    pub snd_mss: u16,
    wscale_ok: bool,
    offer_wscale: bool,
    pub ts_ok: bool,
    offer_ts: bool,
    pub ts_recent: u32,
    ts_recent_at: Instant,
    ts_offset: u32,
    last_ack_sent: SeqNum,
    pub sack_ok: bool,
    offer_sack: bool,

    // RTT and RTO (RFC 6298).
    // Microseconds, not `Duration`: these run on every ACK, and u64 arithmetic is a
    // fraction of Duration's (seconds + nanoseconds, u128 conversions).
    srtt: Option<u64>,
    rttvar: u64,
    rto: u64,
    rto_min: u64,
    rto_max: u64,
    retries: u32,
    rtt_probe: Option<(SeqNum, Instant)>,

    // Congestion control (RFC 5681, NewReno RFC 6582).
    cwnd: u32,
    ssthresh: u32,
    dupacks: u32,
    recover: SeqNum,
    in_recovery: bool,
    rtx_one: bool,
    /// SACK scoreboard (RFC 6675): sorted, disjoint ranges above SND.UNA the peer holds.
    sacked: Vec<(SeqNum, SeqNum)>,
    /// In SACK recovery: holes below this were already retransmitted in this episode.
    rtx_high: SeqNum,

    // Timers.
    pub rtx_at: Option<Instant>,
    delack_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    keepalive_sent: u32,
    fin2_at: Option<Instant>,
    /// Deadline currently registered in the stack's timer heap.
    pub scheduled: Option<Instant>,

    // Pending output.
    syn_pending: bool,
    pub ack_now: bool,
    segs_unacked: u32,
    probe_pending: bool,
    keepalive_pending: bool,
    pub in_tx_queue: bool,
    /// Listed in the stack's connection table (live states only).
    pub in_conns: bool,
    /// When we last answered an unacceptable bare ACK.
    last_invalid_ack: Option<Instant>,
    /// Duplicate ACKs still to send, one per out-of-order or old data segment.
    acks_owed: u8,
}

/// Parameters to build a TCB.
pub(crate) struct TcbInit {
    pub tuple: FourTuple,
    pub iss: SeqNum,
    pub ts_offset: u32,
}

impl Tcb {
    /// A TCB for `init`'s connection, in CLOSED.
    pub fn new(cfg: &Config, init: TcbInit, now: Instant) -> Tcb {
        // Only storage: `reinit` sets every field, so what a connection starts with is
        // written in one place.
        let mut t = Tcb {
            tuple: init.tuple,
            key: TupleKey::from(&init.tuple),
            state: TcpState::Closed,
            listener: None,
            held: false,
            opts: SocketOptions::default(),
            error: None,
            events: EventSet::default(),
            queued_event: false,
            iss: SeqNum(0),
            snd_una: SeqNum(0),
            snd_nxt: SeqNum(0),
            snd_max: SeqNum(0),
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: SeqNum(0),
            snd_wl2: SeqNum(0),
            snd_wscale: 0,
            send_buf: VecDeque::new(),
            send_cap: 0,
            buf_seq: SeqNum(0),
            fin_queued: false,
            irs: SeqNum(0),
            rcv_nxt: SeqNum(0),
            rcv_wscale: 0,
            rcv_adv: SeqNum(0),
            recv_buf: VecDeque::new(),
            recv_cap: 0,
            ooo: Vec::new(),
            ooo_bytes: 0,
            ooo_limit: 0,
            fin_seq: None,
            fin_received: false,
            last_ooo: None,
            our_mss: 0,
            snd_mss: 0,
            wscale_ok: false,
            offer_wscale: false,
            ts_ok: false,
            offer_ts: false,
            ts_recent: 0,
            ts_recent_at: now,
            ts_offset: 0,
            last_ack_sent: SeqNum(0),
            sack_ok: false,
            offer_sack: false,
            srtt: None,
            rttvar: 0,
            rto: 0,
            rto_min: 0,
            rto_max: 0,
            retries: 0,
            rtt_probe: None,
            cwnd: 0,
            ssthresh: 0,
            dupacks: 0,
            recover: SeqNum(0),
            in_recovery: false,
            rtx_one: false,
            sacked: Vec::new(),
            rtx_high: SeqNum(0),
            rtx_at: None,
            delack_at: None,
            keepalive_at: None,
            keepalive_sent: 0,
            fin2_at: None,
            scheduled: None,
            syn_pending: false,
            ack_now: false,
            segs_unacked: 0,
            probe_pending: false,
            keepalive_pending: false,
            in_tx_queue: false,
            in_conns: false,
            last_invalid_ack: None,
            acks_owed: 0,
        };
        t.reinit(cfg, init, now);
        t
    }

    /// Makes a freed TCB new again for another connection, keeping its buffers'
    /// allocations when they are small (a pool must not pin bulk-transfer buffers).
    ///
    /// This is where a connection's starting values are written, field by field: a
    /// freed TCB is recycled for every new connection, and assigning in place spares
    /// building a whole TCB aside and copying it over (-300 instructions per churn
    /// lifecycle). The pattern below names every field, so a field added to `Tcb`
    /// does not compile until it gets its starting value here.
    pub fn reinit(&mut self, cfg: &Config, init: TcbInit, now: Instant) {
        const KEEP: usize = 16 * 1024;
        if self.send_buf.capacity() > KEEP {
            self.send_buf = VecDeque::new();
        }
        if self.recv_buf.capacity() > KEEP {
            self.recv_buf = VecDeque::new();
        }
        if self.sacked.capacity() > 64 {
            self.sacked = Vec::new();
        }
        if self.ooo.capacity() > 64 {
            self.ooo = Vec::new();
        }
        let mss = if init.tuple.local.is_ipv4() {
            cfg.mss_v4
        } else {
            cfg.mss_v6
        };
        let wscale = cfg.recv_window_shift();
        let Tcb {
            tuple,
            key,
            state,
            listener,
            held,
            opts,
            error,
            events,
            queued_event,
            iss,
            snd_una,
            snd_nxt,
            snd_max,
            snd_wnd,
            max_snd_wnd,
            snd_wl1,
            snd_wl2,
            snd_wscale,
            send_buf,
            send_cap,
            buf_seq,
            fin_queued,
            irs,
            rcv_nxt,
            rcv_wscale,
            rcv_adv,
            recv_buf,
            recv_cap,
            ooo,
            ooo_bytes,
            ooo_limit,
            fin_seq,
            fin_received,
            last_ooo,
            our_mss,
            snd_mss,
            wscale_ok,
            offer_wscale,
            ts_ok,
            offer_ts,
            ts_recent,
            ts_recent_at,
            ts_offset,
            last_ack_sent,
            sack_ok,
            offer_sack,
            srtt,
            rttvar,
            rto,
            rto_min,
            rto_max,
            retries,
            rtt_probe,
            cwnd,
            ssthresh,
            dupacks,
            recover,
            in_recovery,
            rtx_one,
            sacked,
            rtx_high,
            rtx_at,
            delack_at,
            keepalive_at,
            keepalive_sent,
            fin2_at,
            scheduled,
            syn_pending,
            ack_now,
            segs_unacked,
            probe_pending,
            keepalive_pending,
            in_tx_queue,
            in_conns,
            last_invalid_ack,
            acks_owed,
        } = self;
        *tuple = init.tuple;
        *key = TupleKey::from(&init.tuple);
        *state = TcpState::Closed;
        *listener = None;
        *held = false;
        *opts = SocketOptions::default();
        *error = None;
        *events = EventSet::default();
        *queued_event = false;
        *iss = init.iss;
        *snd_una = init.iss;
        *snd_nxt = init.iss;
        *snd_max = init.iss;
        *snd_wnd = 0;
        *max_snd_wnd = 0;
        *snd_wl1 = SeqNum(0);
        *snd_wl2 = SeqNum(0);
        *snd_wscale = 0;
        send_buf.clear();
        *send_cap = cfg.send_buffer.max(1);
        *buf_seq = init.iss + 1u32;
        *fin_queued = false;
        *irs = SeqNum(0);
        *rcv_nxt = SeqNum(0);
        *rcv_wscale = if cfg.window_scaling { wscale } else { 0 };
        *rcv_adv = SeqNum(0);
        recv_buf.clear();
        *recv_cap = if cfg.window_scaling {
            cfg.recv_buffer.max(1)
        } else {
            cfg.recv_buffer.clamp(1, 65535)
        };
        ooo.clear();
        *ooo_bytes = 0;
        *ooo_limit = cfg.max_ooo_bytes_per_conn;
        *fin_seq = None;
        *fin_received = false;
        *last_ooo = None;
        *our_mss = mss;
        *snd_mss = if init.tuple.local.is_ipv4() {
            MIN_MSS_V4
        } else {
            MIN_MSS_V6
        };
        *wscale_ok = false;
        *offer_wscale = cfg.window_scaling;
        *ts_ok = false;
        *offer_ts = cfg.timestamps;
        *ts_recent = 0;
        *ts_recent_at = now;
        *ts_offset = init.ts_offset;
        *last_ack_sent = SeqNum(0);
        *sack_ok = false;
        *offer_sack = cfg.sack;
        *srtt = None;
        *rttvar = 0;
        *rto = micros(cfg.rto_initial);
        *rto_min = micros(cfg.rto_min);
        *rto_max = micros(cfg.rto_max);
        *retries = 0;
        *rtt_probe = None;
        *cwnd = 0;
        *ssthresh = u32::MAX;
        *dupacks = 0;
        *recover = init.iss;
        *in_recovery = false;
        *rtx_one = false;
        sacked.clear();
        *rtx_high = init.iss;
        *rtx_at = None;
        *delack_at = None;
        *keepalive_at = None;
        *keepalive_sent = 0;
        *fin2_at = None;
        *scheduled = None;
        *syn_pending = false;
        *ack_now = false;
        *segs_unacked = 0;
        *probe_pending = false;
        *keepalive_pending = false;
        *in_tx_queue = false;
        *in_conns = false;
        *last_invalid_ack = None;
        *acks_owed = 0;
    }

    // ---- getters -------------------------------------------------------------------

    /// Bytes the application can read now.
    pub fn recv_available(&self) -> usize {
        self.recv_buf.len()
    }

    /// Free space in the send buffer.
    pub fn send_space(&self) -> usize {
        self.send_cap.saturating_sub(self.send_buf.len())
    }

    /// Bytes queued but not yet acknowledged.
    pub fn send_queued(&self) -> usize {
        self.send_buf.len()
    }

    /// Our timestamp clock for this connection (RFC 7323 §5.4: ms ticks plus a
    /// per-connection offset so the clock leaks nothing across connections).
    pub fn tsval(&self, now: Instant) -> u32 {
        (now.millis() as u32).wrapping_add(self.ts_offset)
    }

    fn data_end(&self) -> SeqNum {
        self.buf_seq + self.send_buf.len()
    }

    fn fin_sent(&self) -> bool {
        self.fin_queued && self.snd_max == self.data_end() + 1u32
    }

    fn fin_acked(&self) -> bool {
        self.fin_queued && self.snd_una == self.data_end() + 1u32
    }

    /// Payload bytes per segment: MSS less the timestamp option (RFC 6691).
    fn seg_payload(&self) -> usize {
        let ts = if self.ts_ok { 12 } else { 0 };
        (self.snd_mss as usize).saturating_sub(ts).max(1)
    }

    fn flight(&self) -> u32 {
        self.snd_max - self.snd_una
    }

    /// The earliest of this connection's timers.
    pub fn next_deadline(&self) -> Option<Instant> {
        // Runs after every input: a branch-free min over the four timers, "unset" being
        // the largest value.
        let at = |t: Option<Instant>| t.map_or(u64::MAX, |i| i.micros());
        let m = at(self.rtx_at)
            .min(at(self.delack_at))
            .min(at(self.keepalive_at))
            .min(at(self.fin2_at));
        (m != u64::MAX).then_some(Instant::from_micros(m))
    }

    /// True when the TCB has something to transmit.
    pub fn wants_tx(&self) -> bool {
        if self.syn_pending
            || self.ack_now
            || self.acks_owed > 0
            || self.rtx_one
            || self.probe_pending
        {
            return true;
        }
        if self.in_recovery && self.next_hole().is_some() && self.pipe() < self.cwnd {
            return true;
        }
        if self.keepalive_pending {
            return true;
        }
        if !self.state.synchronized() {
            return false;
        }
        let unsent = self.data_end() - self.snd_nxt;
        let fin_unsent =
            self.fin_queued && self.snd_nxt != self.data_end() + 1u32 && self.can_send_fin();
        (self.data_end() > self.snd_nxt && unsent > 0 && self.usable_window() > 0) || fin_unsent
    }

    fn can_send_fin(&self) -> bool {
        matches!(
            self.state,
            TcpState::FinWait1 | TcpState::Closing | TcpState::LastAck
        )
    }

    fn usable_window(&self) -> u32 {
        let limit = self.snd_una + self.snd_wnd;
        let by_rwnd = if limit > self.snd_nxt {
            limit - self.snd_nxt
        } else {
            0
        };
        // RFC 6675 §5: in SACK recovery the congestion window is compared with the
        // estimated pipe, not with everything outstanding.
        let mut cwnd = self.cwnd.max(self.snd_mss as u32);
        if !self.in_recovery && self.dupacks > 0 && self.dupacks < 3 {
            // Limited Transmit (RFC 3042): each of the first two duplicate ACKs lets one
            // new segment out, to draw the ACKs that fast retransmit needs.
            cwnd = cwnd.saturating_add(self.dupacks * self.snd_mss as u32);
        }
        let pipe = if self.in_recovery && self.sack_ok {
            self.pipe()
        } else {
            self.snd_nxt - self.snd_una
        };
        by_rwnd.min(cwnd.saturating_sub(pipe))
    }

    /// Bytes the peer reported holding above SND.UNA.
    fn sacked_bytes(&self) -> u32 {
        self.sacked.iter().map(|(l, r)| *r - *l).sum()
    }

    /// RFC 6675 pipe, simplified: outstanding bytes not known to have arrived.
    fn pipe(&self) -> u32 {
        self.flight().saturating_sub(self.sacked_bytes())
    }

    /// The first not-yet-retransmitted hole below the highest SACKed byte: (start, len).
    fn next_hole(&self) -> Option<(SeqNum, u32)> {
        if !self.sack_ok {
            return None;
        }
        let mut at = self.rtx_high.max(self.snd_una);
        for (l, r) in &self.sacked {
            if at < *l {
                return Some((at, *l - at));
            }
            at = at.max(*r);
        }
        None
    }

    /// Merges the SACK blocks of an incoming ACK into the scoreboard.
    fn update_scoreboard(&mut self, seg: &Segment<'_>) {
        if !self.sack_ok {
            return;
        }
        let (una, max) = (self.snd_una, self.snd_max);
        self.sacked.retain_mut(|(l, r)| {
            if *r <= una {
                return false;
            }
            *l = (*l).max(una);
            true
        });
        for (l, r) in seg.opts.sack.iter().flatten() {
            // Ignore blocks outside what we sent (RFC 2018 §8: they may be forged or old).
            if !(*l < *r && *l >= una && *r <= max) {
                continue;
            }
            let (mut nl, mut nr) = (*l, *r);
            self.sacked.retain(|(bl, br)| {
                if *br >= nl && *bl <= nr {
                    nl = nl.min(*bl);
                    nr = nr.max(*br);
                    false
                } else {
                    true
                }
            });
            let pos = self
                .sacked
                .iter()
                .position(|(bl, _)| *bl > nl)
                .unwrap_or(self.sacked.len());
            self.sacked.insert(pos, (nl, nr));
        }
        // Bound the scoreboard: a peer cannot make it grow without limit.
        if self.sacked.len() > 64 {
            self.sacked.drain(..self.sacked.len() - 64);
        }
    }

    // ---- opening -------------------------------------------------------------------

    /// Active open: SYN-SENT with a SYN queued.
    pub fn open_active(&mut self, now: Instant) {
        self.state = TcpState::SynSent;
        self.syn_pending = true;
        self.rtx_at = Some(now.plus_micros(self.rto));
        self.cwnd = self.initial_cwnd();
    }

    fn initial_cwnd(&self) -> u32 {
        // RFC 6928: IW = min(10*MSS, max(2*MSS, 14600)).
        let mss = self.snd_mss as u32;
        (10 * mss).min((2 * mss).max(14600))
    }

    /// Passive open from a listener's SYN: SYN-RECEIVED with a SYN-ACK queued.
    pub fn open_passive(&mut self, now: Instant, seg: &Segment<'_>) {
        self.state = TcpState::SynReceived;
        self.irs = seg.seq;
        self.rcv_nxt = seg.seq + 1u32;
        self.negotiate(now, seg);
        self.snd_wnd = seg.window as u32; // a SYN's window is never scaled (RFC 7323 §2.2)
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = seg.seq;
        self.snd_wl2 = self.iss;
        self.syn_pending = true;
        self.rtx_at = Some(now.plus_micros(self.rto));
        self.cwnd = self.initial_cwnd();
        self.update_rcv_adv();
    }

    /// A connection established by a valid SYN cookie in `ack`: the handshake state is
    /// rebuilt from the cookie (RFC 4987 §3.6) instead of from a SYN-RECEIVED TCB.
    pub fn open_from_cookie(
        &mut self,
        now: Instant,
        ack: &Segment<'_>,
        mss: u16,
        wscale: Option<u8>,
        sack: bool,
    ) {
        self.state = TcpState::Established;
        self.irs = ack.seq - 1u32;
        self.rcv_nxt = ack.seq;
        self.snd_una = ack.ack;
        self.snd_nxt = ack.ack;
        self.snd_max = ack.ack;
        self.buf_seq = ack.ack;
        // Window scale and SACK come back only through the timestamp echo.
        let ts = ack.opts.timestamp;
        let wscale = wscale.filter(|_| ts.is_some());
        self.apply_peer_options(now, mss, wscale, ts, sack && ts.is_some());
        self.snd_wnd = (ack.window as u32) << self.snd_wscale;
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = ack.seq;
        self.snd_wl2 = ack.ack;
        self.cwnd = self.initial_cwnd();
        self.last_ack_sent = ack.seq;
        // The cookie SYN-ACK advertised this much (unscaled, at most 65535).
        self.rcv_adv = self.rcv_nxt + self.free_recv_space().min(65535) as u32;
        self.events |= EventSet::CONNECTED | EventSet::WRITABLE;
    }

    /// Out-of-order bytes held.
    pub fn ooo_bytes(&self) -> usize {
        self.ooo_bytes
    }

    /// Applies the options of the peer's SYN.
    fn negotiate(&mut self, now: Instant, seg: &Segment<'_>) {
        let min = if self.tuple.local.is_ipv4() {
            MIN_MSS_V4
        } else {
            MIN_MSS_V6
        };
        // RFC 9293 §3.7.1: without the option, assume 536 (IPv4) / 1220 (IPv6).
        let peer = seg.opts.mss.unwrap_or(min).max(64);
        let o = seg.opts;
        self.apply_peer_options(now, peer, o.wscale, o.timestamp, o.sack_permitted);
    }

    /// Takes what the peer's SYN offered, against what we offer.
    fn apply_peer_options(
        &mut self,
        now: Instant,
        mss: u16,
        wscale: Option<u8>,
        timestamp: Option<(u32, u32)>,
        sack: bool,
    ) {
        self.snd_mss = mss.min(self.our_mss);
        self.wscale_ok = self.offer_wscale && wscale.is_some();
        if self.wscale_ok {
            // RFC 7323 §2.3: a shift above 14 is treated as 14.
            self.snd_wscale = wscale.unwrap_or(0).min(14);
        } else {
            self.snd_wscale = 0;
            self.rcv_wscale = 0;
            self.recv_cap = self.recv_cap.min(65535);
        }
        self.ts_ok = self.offer_ts && timestamp.is_some();
        if let (true, Some((tsval, _))) = (self.ts_ok, timestamp) {
            self.ts_recent = tsval;
            self.ts_recent_at = now;
        }
        self.sack_ok = self.offer_sack && sack;
    }

    // ---- application calls ---------------------------------------------------------

    /// Queues data; returns how much fit.
    pub fn send(&mut self, now: Instant, data: &[u8]) -> usize {
        let n = data.len().min(self.send_space());
        self.send_buf.extend(&data[..n]);
        // Data queued against a zero window arms the persist timer (RFC 9293 §3.8.6.1).
        if n > 0 && self.state.synchronized() && self.snd_wnd == 0 && self.rtx_at.is_none() {
            self.rtx_at = Some(now.plus_micros(self.rto));
        }
        n
    }

    /// Reads received data.
    pub fn recv(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.recv_buf.len());
        let (a, b) = self.recv_buf.as_slices();
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.recv_buf.drain(..n);
        if n > 0 && self.state.synchronized() && !self.fin_received {
            // Window update when the window opened by a useful amount (receiver SWS
            // avoidance, RFC 9293 §3.8.6.2.2).
            let edge = self.rcv_nxt + self.free_recv_space() as u32;
            let threshold = (self.recv_cap / 2).min(2 * self.our_mss as usize) as u32;
            if edge > self.rcv_adv && edge - self.rcv_adv >= threshold {
                self.ack_now = true;
            }
        }
        n
    }

    /// Closes the sending side: FIN after the queued data.
    pub fn shutdown_write(&mut self, now: Instant, cfg: &Config) -> Disposition {
        match self.state {
            TcpState::Closed => Disposition::Closed,
            TcpState::SynSent | TcpState::SynReceived => {
                // RFC 9293 §3.10.4: queue the FIN until the handshake completes (then
                // FIN-WAIT-1); the SYN-ACK keeps being retransmitted meanwhile.
                self.fin_queued = true;
                let _ = (now, cfg);
                Disposition::Keep
            }
            TcpState::Established => {
                self.fin_queued = true;
                self.state = TcpState::FinWait1;
                let _ = (now, cfg);
                Disposition::Keep
            }
            TcpState::CloseWait => {
                self.fin_queued = true;
                self.state = TcpState::LastAck;
                Disposition::Keep
            }
            _ => Disposition::Keep,
        }
    }

    /// Marks the connection reset by us; the stack sends the RST.
    pub fn abort(&mut self) -> Option<(SeqNum, SeqNum)> {
        let rst = if matches!(self.state, TcpState::Closed | TcpState::SynSent) {
            None
        } else {
            Some((self.snd_nxt.max(self.snd_max), self.rcv_nxt))
        };
        self.state = TcpState::Closed;
        self.error.get_or_insert(ConnError::Aborted);
        self.clear_timers();
        self.syn_pending = false;
        self.ack_now = false;
        rst
    }

    fn clear_timers(&mut self) {
        self.rtx_at = None;
        self.delack_at = None;
        self.keepalive_at = None;
        self.fin2_at = None;
    }

    /// Whether our SYN offers timestamps (experiments).
    pub fn set_offer_timestamps(&mut self, on: bool) {
        self.offer_ts = on;
    }

    /// Bounds an orphaned FIN-WAIT-2 (Linux tcp_fin_timeout).
    pub fn arm_fin_wait_2(&mut self, now: Instant, cfg: &Config) {
        self.fin2_at = Some(now + cfg.fin_wait_2_timeout);
    }

    /// Enables or disables keepalive.
    pub fn set_keepalive(&mut self, on: bool, now: Instant, cfg: &Config) {
        self.opts.keepalive = on;
        self.keepalive_sent = 0;
        self.keepalive_at = if on && self.state.synchronized() {
            Some(now + cfg.keepalive_idle)
        } else {
            None
        };
    }

    // ---- input ---------------------------------------------------------------------

    /// Processes one segment for this connection.
    pub fn on_segment(
        &mut self,
        now: Instant,
        cfg: &Config,
        seg: &Segment<'_>,
        rep: &mut Report,
    ) -> Disposition {
        if self.opts.keepalive && self.state.synchronized() {
            self.keepalive_sent = 0;
            self.keepalive_at = Some(now + cfg.keepalive_idle);
        }
        match self.state {
            TcpState::SynSent => self.on_segment_syn_sent(now, cfg, seg, rep),
            TcpState::Closed | TcpState::Listen | TcpState::TimeWait => Disposition::Keep,
            _ => self.on_segment_sync(now, cfg, seg, rep),
        }
    }

    /// RFC 9293 §3.10.7.3: SYN-SENT.
    fn on_segment_syn_sent(
        &mut self,
        now: Instant,
        cfg: &Config,
        seg: &Segment<'_>,
        rep: &mut Report,
    ) -> Disposition {
        let f = seg.flags;
        if f.ack && (seg.ack <= self.iss || seg.ack > self.snd_max) {
            if f.rst {
                return Disposition::Keep;
            }
            return Disposition::SendRst {
                seq: seg.ack,
                ack: None,
            };
        }
        if f.rst {
            if f.ack {
                self.state = TcpState::Closed;
                self.error = Some(ConnError::Refused);
                self.events |= EventSet::ERROR;
                self.clear_timers();
                return Disposition::Closed;
            }
            return Disposition::Keep;
        }
        if !f.syn {
            return Disposition::Keep;
        }
        self.irs = seg.seq;
        self.rcv_nxt = seg.seq + 1u32;
        self.negotiate(now, seg);
        self.cwnd = self.initial_cwnd();
        if f.ack {
            self.ack_advance(now, seg);
            self.snd_wnd = (seg.window as u32) << self.snd_wscale;
            self.max_snd_wnd = self.snd_wnd;
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = seg.ack;
            self.state = TcpState::Established;
            self.events |= EventSet::CONNECTED | EventSet::WRITABLE;
            self.ack_now = true;
            self.retries = 0;
            self.rtx_at = None;
            if self.fin_queued {
                self.state = TcpState::FinWait1;
            }
            self.update_rcv_adv();
            self.accept_payload(now, cfg, seg, rep);
        } else {
            // Simultaneous open (RFC 9293 §3.5, figure 8): answer with SYN-ACK.
            self.state = TcpState::SynReceived;
            self.snd_wnd = seg.window as u32;
            self.max_snd_wnd = self.snd_wnd;
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = self.iss;
            self.snd_nxt = self.iss;
            self.syn_pending = true;
            self.update_rcv_adv();
        }
        Disposition::Keep
    }

    /// RFC 9293 §3.10.7.4: every state after SYN-SENT.
    fn on_segment_sync(
        &mut self,
        now: Instant,
        cfg: &Config,
        seg: &Segment<'_>,
        rep: &mut Report,
    ) -> Disposition {
        let f = seg.flags;
        // A retransmitted SYN in SYN-RECEIVED: our SYN-ACK was lost, send it again.
        if self.state == TcpState::SynReceived && f.syn && !f.ack && !f.rst && seg.seq == self.irs {
            self.syn_pending = true;
            return Disposition::Keep;
        }
        // Simultaneous open (RFC 9293 §3.5 figure 8): the peer's SYN-ACK repeats the SYN we
        // already took and ACKs ours; it completes the handshake (as Linux accepts it).
        if self.state == TcpState::SynReceived
            && f.syn
            && f.ack
            && !f.rst
            && seg.seq + 1u32 == self.rcv_nxt
            && seg.ack == self.snd_max
        {
            self.ack_advance(now, seg);
            return self.complete_handshake(seg);
        }

        // PAWS (RFC 7323 §5.3), not applied to RST.
        if self.ts_ok && !f.rst {
            if let Some((tsval, _)) = seg.opts.timestamp {
                let stale =
                    now.micros().saturating_sub(self.ts_recent_at.micros()) > 24 * 86_400_000_000;
                if (tsval.wrapping_sub(self.ts_recent) as i32) < 0 && !stale {
                    rep.drop = Some(SegDrop::Paws);
                    self.ack_unacceptable(now, seg, cfg);
                    return Disposition::Keep;
                }
            }
        }

        // Acceptability (RFC 9293 §3.10.7.4, first check).
        let rcv_wnd = self.rcv_window();
        let len = seg.seg_len();
        let acceptable = match (len, rcv_wnd) {
            (0, 0) => seg.seq == self.rcv_nxt,
            // Like Linux (tcp_sequence), a bare segment exactly at the right edge is
            // taken: it is how a window update to a just-filled window arrives.
            (0, w) => seg.seq.in_range(self.rcv_nxt, self.rcv_nxt + w + 1u32),
            (_, 0) => false,
            (l, w) => {
                let last = seg.seq + (l - 1);
                seg.seq.in_range(self.rcv_nxt, self.rcv_nxt + w)
                    || last.in_range(self.rcv_nxt, self.rcv_nxt + w)
            }
        };
        // A zero window still takes ACKs, RSTs and FIN-less probes' ACK information.
        let acceptable =
            acceptable || (rcv_wnd == 0 && seg.seq == self.rcv_nxt && (f.ack || f.rst));
        if !acceptable {
            if f.rst {
                rep.drop = Some(SegDrop::OutOfWindow);
                return Disposition::Keep;
            }
            rep.drop = Some(SegDrop::OutOfWindow);
            self.ack_unacceptable(now, seg, cfg);
            return Disposition::Keep;
        }

        // RST (RFC 5961 §3.2): reset only on an exact match, challenge ACK otherwise.
        if f.rst {
            if seg.seq == self.rcv_nxt {
                let passive_embryo = self.state == TcpState::SynReceived && self.listener.is_some();
                self.state = TcpState::Closed;
                self.clear_timers();
                // Counted as a reset either way; only a connection an application has
                // seen reports it as an event.
                self.error = Some(ConnError::Reset);
                if !passive_embryo {
                    self.events |= EventSet::ERROR;
                }
                return Disposition::Closed;
            }
            rep.drop = Some(SegDrop::RstNotExact);
            return Disposition::ChallengeAck;
        }

        // SYN in a synchronized state (RFC 5961 §4): challenge ACK.
        if f.syn {
            return Disposition::ChallengeAck;
        }

        if !f.ack {
            rep.drop = Some(SegDrop::NoAck);
            return Disposition::Keep;
        }

        // Timestamp bookkeeping (RFC 7323 §4.3).
        if let (true, Some((tsval, _))) = (self.ts_ok, seg.opts.timestamp) {
            if seg.seq <= self.last_ack_sent
                && self.last_ack_sent <= seg.seq + len.max(1)
                && (tsval.wrapping_sub(self.ts_recent) as i32) >= 0
            {
                self.ts_recent = tsval;
                self.ts_recent_at = now;
            }
        }

        let mut disp = Disposition::Keep;
        if self.state == TcpState::SynReceived {
            if seg.ack > self.snd_una && seg.ack <= self.snd_max {
                disp = self.complete_handshake(seg);
            } else {
                return Disposition::SendRst {
                    seq: seg.ack,
                    ack: None,
                };
            }
        }

        // ACK acceptability (RFC 5961 §5.2).
        if seg.ack > self.snd_max {
            rep.drop = Some(SegDrop::BadAck);
            self.ack_unacceptable(now, seg, cfg);
            return disp;
        }
        let oldest_ok = self.snd_una - self.max_snd_wnd.max(1);
        if seg.ack < oldest_ok {
            rep.drop = Some(SegDrop::BadAck);
            self.ack_unacceptable(now, seg, cfg);
            return disp;
        }
        self.process_ack(now, seg, rep);

        // State changes driven by the ACK of our FIN.
        match self.state {
            TcpState::FinWait1 if self.fin_acked() => {
                self.state = TcpState::FinWait2;
                self.rtx_at = None;
                if !self.held {
                    self.fin2_at = Some(now + cfg.fin_wait_2_timeout);
                }
            }
            TcpState::Closing if self.fin_acked() => {
                self.clear_timers();
                return Disposition::TimeWait;
            }
            TcpState::LastAck if self.fin_acked() => {
                self.state = TcpState::Closed;
                self.clear_timers();
                self.events |= EventSet::CLOSED;
                return Disposition::Closed;
            }
            _ => {}
        }

        // Segment text.
        self.accept_payload(now, cfg, seg, rep);

        // FIN processing (possibly a FIN that arrived earlier out of order).
        if f.fin {
            let fin_at = seg.seq + seg.payload.len();
            if fin_at == self.rcv_nxt {
                return self.take_fin(now, disp);
            } else if fin_at > self.rcv_nxt {
                self.fin_seq = Some(fin_at);
            }
        } else if self.fin_seq == Some(self.rcv_nxt) && !self.fin_received {
            return self.take_fin(now, disp);
        }
        disp
    }

    /// RFC 9293 answers an unacceptable segment with an ACK. When that segment carries
    /// nothing (a bare ACK), two stacks that disagree about the sequence space would trade
    /// such ACKs for ever (RFC 5961 §10's ACK war), so those answers are rate-limited per
    /// connection, as Linux does (tcp_invalid_ratelimit). Segments with data or FIN are
    /// always answered: the sender needs the duplicate ACK to recover.
    fn ack_unacceptable(&mut self, now: Instant, seg: &Segment<'_>, cfg: &Config) {
        if seg.seg_len() > 0 {
            self.owe_ack();
            return;
        }
        let due = self
            .last_invalid_ack
            .is_none_or(|t| now.saturating_since(t) >= cfg.invalid_ack_interval);
        if due {
            self.last_invalid_ack = Some(now);
            self.ack_now = true;
        }
    }

    /// SYN-RECEIVED -> ESTABLISHED (or FIN-WAIT-1 when the application already closed).
    fn complete_handshake(&mut self, seg: &Segment<'_>) -> Disposition {
        self.state = if self.fin_queued {
            TcpState::FinWait1
        } else {
            TcpState::Established
        };
        self.snd_wnd = (seg.window as u32) << self.snd_wscale;
        self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
        self.snd_wl1 = seg.seq;
        self.snd_wl2 = seg.ack;
        self.retries = 0;
        self.syn_pending = false;
        self.events |= EventSet::CONNECTED | EventSet::WRITABLE;
        if self.listener.is_some() {
            Disposition::Established
        } else {
            Disposition::Keep
        }
    }

    fn take_fin(&mut self, now: Instant, disp: Disposition) -> Disposition {
        if self.fin_received {
            self.ack_now = true;
            return disp;
        }
        self.fin_received = true;
        self.fin_seq = None;
        self.rcv_nxt += 1u32;
        self.ack_now = true;
        self.delack_at = None;
        self.events |= EventSet::PEER_CLOSED | EventSet::READABLE;
        match self.state {
            TcpState::SynReceived | TcpState::Established => {
                self.state = TcpState::CloseWait;
                disp
            }
            TcpState::FinWait1 => {
                if self.fin_acked() {
                    self.clear_timers();
                    Disposition::TimeWait
                } else {
                    self.state = TcpState::Closing;
                    disp
                }
            }
            TcpState::FinWait2 => {
                self.clear_timers();
                let _ = now;
                Disposition::TimeWait
            }
            _ => disp,
        }
    }

    fn rcv_window(&self) -> u32 {
        if self.rcv_adv > self.rcv_nxt {
            self.rcv_adv - self.rcv_nxt
        } else {
            0
        }
    }

    fn free_recv_space(&self) -> usize {
        self.recv_cap.saturating_sub(self.recv_buf.len())
    }

    fn update_rcv_adv(&mut self) {
        let free = self.free_recv_space();
        let scaled = (free >> self.rcv_wscale).min(65535) << self.rcv_wscale;
        let edge = self.rcv_nxt + scaled as u32;
        if edge > self.rcv_adv || self.rcv_adv == SeqNum(0) {
            self.rcv_adv = edge;
        }
    }

    /// The window field for an outgoing segment.
    fn window_field(&mut self, syn: bool) -> u16 {
        if syn {
            // RFC 7323 §2.2: the window in a SYN is never scaled.
            return self.free_recv_space().min(65535) as u16;
        }
        self.update_rcv_adv();
        let w = self.rcv_window() >> self.rcv_wscale;
        w.min(65535) as u16
    }

    fn process_ack(&mut self, now: Instant, seg: &Segment<'_>, rep: &mut Report) {
        let before = self.snd_una;
        if seg.ack > self.snd_una {
            self.ack_advance(now, seg);
        }
        self.update_scoreboard(seg);
        // Window update (RFC 9293 §3.10.7.4, SND.WL1/WL2 rule).
        let wnd = (seg.window as u32) << self.snd_wscale;
        let window_changed = wnd != self.snd_wnd;
        if self.snd_wl1 < seg.seq || (self.snd_wl1 == seg.seq && self.snd_wl2 <= seg.ack) {
            self.snd_wnd = wnd;
            self.max_snd_wnd = self.max_snd_wnd.max(wnd);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = seg.ack;
            if wnd > 0 {
                self.probe_pending = false;
            }
        }
        if seg.ack == before
            && seg.payload.is_empty()
            && !seg.flags.fin
            && !window_changed
            && self.flight() > 0
        {
            self.on_dupack(rep);
        } else if self.sack_ok
            && !self.in_recovery
            && self.snd_una >= self.recover
            && self.sacked_bytes() > (self.dup_thresh() - 1) * self.snd_mss as u32
        {
            // RFC 6675 §5 (IsLost): enough SACKed data above SND.UNA means loss, even
            // when window updates kept the duplicate-ACK count low.
            self.enter_recovery(rep);
        }
        if self.snd_wnd == 0 {
            // The peer answers our probes: it is alive, whatever its window says.
            self.retries = 0;
        }
        // A zero window with data waiting arms the persist timer (RFC 9293 §3.8.6.1).
        if self.snd_wnd == 0 && self.data_end() > self.snd_nxt && self.rtx_at.is_none() {
            self.rtx_at = Some(now.plus_micros(self.rto));
        }
    }

    /// SND.UNA moves forward: free acknowledged data, sample RTT, grow cwnd.
    fn ack_advance(&mut self, now: Instant, seg: &Segment<'_>) {
        let ack = seg.ack;
        let acked = ack - self.snd_una;
        // The first ACK of our SYN consumes one sequence number.
        let data_from = self.snd_una.max(self.buf_seq);
        let data_to = ack.min(self.data_end());
        if data_to > data_from {
            let n = (data_to - data_from) as usize;
            self.send_buf.drain(..n.min(self.send_buf.len()));
            self.buf_seq = data_to;
            self.events |= EventSet::WRITABLE;
        }
        self.snd_una = ack;
        if self.snd_nxt < ack {
            self.snd_nxt = ack;
        }
        // RTT sample: timestamps when in use (RFC 7323 §4), else one timed segment with
        // Karn's rule (RFC 6298 §3).
        let mut sample = None;
        if self.ts_ok {
            if let Some((_, tsecr)) = seg.opts.timestamp {
                if tsecr != 0 {
                    let ms = self.tsval(now).wrapping_sub(tsecr);
                    if ms < 60_000 {
                        sample = Some(ms as u64 * 1000);
                    }
                }
            }
        } else if let Some((probe_seq, sent)) = self.rtt_probe {
            if ack > probe_seq {
                sample = Some(now.micros().saturating_sub(sent.micros()));
            }
        }
        if let Some((probe_seq, _)) = self.rtt_probe {
            if ack > probe_seq {
                self.rtt_probe = None;
            }
        }
        if let Some(r) = sample {
            self.rtt_sample(r);
        }
        self.retries = 0;
        self.dupacks = 0;
        self.keepalive_sent = 0;
        // Congestion control.
        let mss = self.snd_mss as u32;
        if self.in_recovery {
            if ack >= self.recover {
                // Full ACK: leave fast recovery (RFC 6582 §3.2 step 3).
                self.in_recovery = false;
                self.cwnd = self.ssthresh.max(2 * mss);
            } else {
                // Partial ACK: retransmit the next hole, deflate (RFC 6582 §3.2 step 4).
                // With SACK the scoreboard finds the holes.
                if !self.sack_ok || self.sacked.is_empty() {
                    self.rtx_one = true;
                }
                self.cwnd = self.cwnd.saturating_sub(acked).saturating_add(mss).max(mss);
            }
        } else if self.cwnd < self.ssthresh {
            self.cwnd = self.cwnd.saturating_add(acked.min(mss));
        } else {
            let inc = ((mss as u64 * mss as u64) / self.cwnd.max(1) as u64).max(1) as u32;
            self.cwnd = self.cwnd.saturating_add(inc);
        }
        // RFC 6298 §5.2/5.3: stop the timer when everything is acknowledged, else restart.
        if self.snd_una == self.snd_max {
            self.rtx_at = None;
        } else {
            self.rtx_at = Some(now.plus_micros(self.rto));
        }
    }

    fn rtt_sample(&mut self, r: u64) {
        // An hour bounds any real RTT and keeps the weighted sums below from overflowing.
        let r = r.min(3_600_000_000);
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + r) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(r);
        let rto = srtt + (self.rttvar * 4).max(1000);
        self.rto = rto.clamp(self.rto_min, self.rto_max);
    }

    /// RFC 5681 §3.2 fast retransmit / RFC 6582 NewReno.
    fn on_dupack(&mut self, rep: &mut Report) {
        self.dupacks += 1;
        let mss = self.snd_mss as u32;
        if self.in_recovery {
            self.cwnd = self.cwnd.saturating_add(mss);
            return;
        }
        if self.dupacks >= self.dup_thresh() && self.snd_una >= self.recover {
            self.enter_recovery(rep);
        }
    }

    /// DupThresh: 3, lowered by Early Retransmit (RFC 5827 §3) when fewer than four
    /// segments are outstanding, since then three duplicate ACKs can never arrive.
    fn dup_thresh(&self) -> u32 {
        let mss = self.snd_mss as u32;
        let segs = self.flight().div_ceil(mss);
        if segs < 4 {
            segs.saturating_sub(1).max(1)
        } else {
            3
        }
    }

    /// Fast retransmit and recovery: NewReno (RFC 6582) without SACK, the RFC 6675
    /// scoreboard with it.
    fn enter_recovery(&mut self, rep: &mut Report) {
        let mss = self.snd_mss as u32;
        self.ssthresh = (self.flight() / 2).max(2 * mss);
        self.cwnd = if self.sack_ok {
            self.ssthresh
        } else {
            self.ssthresh + 3 * mss
        };
        self.recover = self.snd_max;
        self.in_recovery = true;
        self.rtx_high = self.snd_una;
        // RFC 6675 §5 step 4.3 / RFC 6582: the first presumed-lost segment goes out at
        // once, whatever the pipe says.
        self.rtx_one = true;
        self.rtt_probe = None;
        rep.fast_retransmits += 1;
    }

    /// Accepts in-window payload into the receive buffer or the out-of-order store.
    fn accept_payload(&mut self, now: Instant, cfg: &Config, seg: &Segment<'_>, rep: &mut Report) {
        if seg.payload.is_empty() {
            return;
        }
        if !matches!(
            self.state,
            TcpState::Established | TcpState::FinWait1 | TcpState::FinWait2
        ) || self.fin_received
        {
            rep.drop = Some(SegDrop::DataNotAccepted);
            self.ack_now = true;
            return;
        }
        let wnd_end = self.rcv_nxt + self.rcv_window();
        let mut start = seg.seq;
        let mut data = seg.payload;
        // Trim what we already have.
        if start < self.rcv_nxt {
            let skip = (self.rcv_nxt - start) as usize;
            if skip >= data.len() {
                self.ack_now = true;
                return;
            }
            data = &data[skip..];
            start = self.rcv_nxt;
        }
        // Trim what lies beyond the window.
        if start + data.len() > wnd_end {
            let keep = if wnd_end > start {
                (wnd_end - start) as usize
            } else {
                0
            };
            data = &data[..keep.min(data.len())];
        }
        if data.is_empty() {
            self.ack_now = true;
            return;
        }
        if start == self.rcv_nxt {
            self.recv_buf.extend(data);
            self.rcv_nxt += data.len();
            let had_ooo = !self.ooo.is_empty();
            self.pull_ooo();
            self.events |= EventSet::READABLE;
            // RFC 5681 §4.2: ACK at least every second full segment; ACK at once when a
            // hole was filled.
            self.segs_unacked += 1;
            if had_ooo || self.segs_unacked >= 2 {
                self.ack_now = true;
            } else if self.delack_at.is_none() {
                self.delack_at = Some(now + cfg.delayed_ack);
            }
        } else {
            if !self.store_ooo(start, data, rep.ooo_budget) {
                rep.drop = Some(SegDrop::OooLimit);
                rep.ooo_dropped_bytes += data.len() as u64;
            }
            // RFC 5681 §4.2: every out-of-order segment is answered at once with its
            // own duplicate ACK: the sender counts them to detect loss.
            self.owe_ack();
        }
    }

    /// One more pure ACK to send, even if several arrive in one batch.
    fn owe_ack(&mut self) {
        self.acks_owed = self.acks_owed.saturating_add(1).min(16);
    }

    fn store_ooo(&mut self, start: SeqNum, data: &[u8], budget: usize) -> bool {
        let end = start + data.len();
        // Merge with every overlapping or adjacent block.
        let mut new_start = start;
        let mut new_end = end;
        let mut i = 0;
        let mut merged: Vec<(SeqNum, Vec<u8>)> = Vec::new();
        while i < self.ooo.len() {
            let (s, ref d) = self.ooo[i];
            let e = s + d.len();
            if e >= new_start && s <= new_end {
                new_start = new_start.min(s);
                new_end = new_end.max(e);
                merged.push(self.ooo.remove(i));
            } else {
                i += 1;
            }
        }
        let added =
            (new_end - new_start) as usize - merged.iter().map(|(_, d)| d.len()).sum::<usize>();
        if self.ooo_bytes + added > self.ooo_limit || added > budget {
            // Over the limit: put back what we took and drop the new data.
            for b in merged {
                self.ooo.push(b);
            }
            self.ooo.sort_by_key(|a| a.0);
            return false;
        }
        let mut buf = vec![0u8; (new_end - new_start) as usize];
        for (s, d) in &merged {
            let off = (*s - new_start) as usize;
            buf[off..off + d.len()].copy_from_slice(d);
        }
        let off = (start - new_start) as usize;
        buf[off..off + data.len()].copy_from_slice(data);
        self.ooo_bytes += added;
        let pos = self
            .ooo
            .iter()
            .position(|(s, _)| *s > new_start)
            .unwrap_or(self.ooo.len());
        self.ooo.insert(pos, (new_start, buf));
        self.last_ooo = Some(new_start);
        true
    }

    fn pull_ooo(&mut self) {
        while let Some((s, _)) = self.ooo.first() {
            if *s > self.rcv_nxt {
                break;
            }
            let (s, d) = self.ooo.remove(0);
            self.ooo_bytes -= d.len();
            let skip = (self.rcv_nxt - s) as usize;
            if skip < d.len() {
                self.recv_buf.extend(&d[skip..]);
                self.rcv_nxt += d.len() - skip;
            }
        }
        if self.ooo.is_empty() {
            self.last_ooo = None;
        }
    }

    fn sack_blocks(&self) -> [Option<(SeqNum, SeqNum)>; 4] {
        let mut out = [None; 4];
        if !self.sack_ok || self.ooo.is_empty() {
            return out;
        }
        let mut n = 0;
        // RFC 2018 §4: the first block reports the most recently received data.
        if let Some(last) = self.last_ooo {
            if let Some((s, d)) = self.ooo.iter().find(|(s, _)| *s == last) {
                out[0] = Some((*s, *s + d.len()));
                n = 1;
            }
        }
        for (s, d) in self.ooo.iter().rev() {
            if n >= 4 {
                break;
            }
            if Some(*s) == self.last_ooo {
                continue;
            }
            out[n] = Some((*s, *s + d.len()));
            n += 1;
        }
        out
    }

    // ---- timers --------------------------------------------------------------------

    /// Fires every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant, cfg: &Config, rep: &mut Report) -> Disposition {
        if self.delack_at.is_some_and(|t| t <= now) {
            self.delack_at = None;
            self.ack_now = true;
        }
        if self.fin2_at.is_some_and(|t| t <= now) {
            // Linux tcp_fin_timeout: an orphaned FIN-WAIT-2 does not wait forever.
            self.fin2_at = None;
            if self.state == TcpState::FinWait2 && !self.held {
                self.state = TcpState::Closed;
                self.clear_timers();
                return Disposition::Closed;
            }
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            if self.keepalive_sent >= cfg.keepalive_probes {
                return self.time_out();
            }
            self.keepalive_sent += 1;
            self.keepalive_pending = true;
            rep.keepalive_probes += 1;
            self.keepalive_at = Some(now + cfg.keepalive_interval);
        }
        if self.rtx_at.is_some_and(|t| t <= now) {
            self.rtx_at = None;
            return self.on_rto(now, cfg, rep);
        }
        Disposition::Keep
    }

    fn time_out(&mut self) -> Disposition {
        self.state = TcpState::Closed;
        self.error = Some(ConnError::TimedOut);
        self.events |= EventSet::ERROR;
        self.clear_timers();
        Disposition::Closed
    }

    fn on_rto(&mut self, now: Instant, cfg: &Config, rep: &mut Report) -> Disposition {
        match self.state {
            TcpState::SynSent | TcpState::SynReceived => {
                self.retries += 1;
                if self.retries > cfg.syn_retries {
                    let passive = self.listener.is_some();
                    let d = self.time_out();
                    if passive {
                        // No application has seen this connection: counted as a timeout,
                        // reported to nobody.
                        self.events = EventSet::default();
                    }
                    return d;
                }
                rep.retransmits += 1;
                rep.rto_timeouts += 1;
                self.syn_pending = true;
                self.snd_nxt = self.iss;
                self.rto = self.rto.saturating_mul(2).min(self.rto_max);
                self.rtx_at = Some(now.plus_micros(self.rto));
                Disposition::Keep
            }
            _ if self.snd_wnd == 0
                && self.snd_una >= self.buf_seq
                && self.data_end() > self.snd_una =>
            {
                // Persist timer (RFC 9293 §3.8.6.1): probe the zero window with one byte,
                // and give up only when probes go unanswered as long as data would.
                self.retries += 1;
                if self.retries > cfg.data_retries {
                    return self.time_out();
                }
                self.probe_pending = true;
                rep.window_probes += 1;
                self.rto = self.rto.saturating_mul(2).min(self.rto_max);
                self.rtx_at = Some(now.plus_micros(self.rto));
                Disposition::Keep
            }
            _ if self.flight() > 0 => {
                self.retries += 1;
                if self.retries > cfg.data_retries {
                    return self.time_out();
                }
                rep.retransmits += 1;
                rep.rto_timeouts += 1;
                // RFC 5681 §3.1 eq. 4, RFC 6298 §5.5-5.7: back off and go back to SND.UNA.
                let mss = self.snd_mss as u32;
                self.ssthresh = (self.flight() / 2).max(2 * mss);
                self.cwnd = mss;
                self.in_recovery = false;
                self.recover = self.snd_max;
                self.dupacks = 0;
                self.rtt_probe = None;
                self.snd_nxt = self.snd_una;
                self.rtx_high = self.snd_una;
                self.rto = self.rto.saturating_mul(2).min(self.rto_max);
                self.rtx_at = Some(now.plus_micros(self.rto));
                Disposition::Keep
            }
            _ => Disposition::Keep,
        }
    }

    // ---- output --------------------------------------------------------------------

    fn base_segment(&mut self, now: Instant, syn: bool) -> OutSegment {
        let window = self.window_field(syn);
        let timestamp = if self.ts_ok {
            Some((self.tsval(now), self.ts_recent))
        } else {
            None
        };
        OutSegment {
            // A segment without data carries the highest sequence number sent: after an
            // RTO snd_nxt goes back to snd_una, and an ACK with that older number would
            // fall left of the peer's window and be discarded unread.
            seq: self.snd_max.max(self.snd_nxt),
            ack: self.rcv_nxt,
            flags: Flags {
                ack: true,
                ..Flags::default()
            },
            window,
            timestamp,
            ..OutSegment::default()
        }
    }

    fn emitted(&mut self, seg: &OutSegment) {
        if seg.flags.ack {
            self.last_ack_sent = seg.ack;
            self.ack_now = false;
            self.delack_at = None;
            self.segs_unacked = 0;
        }
    }

    /// Writes the next segment this connection wants to send into `buf`.
    pub fn poll_segment(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        match self.state {
            TcpState::SynSent if self.syn_pending => return self.emit_syn(now, buf, false),
            TcpState::SynReceived if self.syn_pending => return self.emit_syn(now, buf, true),
            TcpState::Closed | TcpState::Listen | TcpState::TimeWait => {
                self.clear_output();
                return None;
            }
            TcpState::SynSent => {
                self.clear_output();
                return None;
            }
            _ => {}
        }
        if self.state == TcpState::SynReceived {
            // Nothing but the SYN-ACK goes out before the handshake completes.
            self.ack_now = false;
            self.acks_owed = 0;
            return None;
        }
        if self.rtx_one {
            self.rtx_one = false;
            let len = match self.next_hole() {
                Some((seq, len)) if seq == self.snd_una => len,
                _ => u32::MAX,
            };
            let n = self.emit_data_at(now, buf, self.snd_una, true, len);
            if n.is_some() {
                let sent = len.min(self.seg_payload() as u32);
                self.rtx_high = self.rtx_high.max(self.snd_una + sent);
                return n;
            }
        }
        if self.in_recovery && self.pipe() < self.cwnd {
            if let Some((seq, len)) = self.next_hole() {
                self.rtx_high = seq + len.min(self.seg_payload() as u32);
                if let Some(n) = self.emit_data_at(now, buf, seq, true, len) {
                    return Some(n);
                }
            }
        }
        if let Some(n) = self.emit_data(now, buf) {
            return Some(n);
        }
        if self.probe_pending {
            self.probe_pending = false;
            if self.data_end() > self.snd_una {
                // The first byte not yet acknowledged: resent if a probe already carried
                // it, new otherwise.
                let seq = if self.snd_nxt > self.snd_una {
                    self.snd_una
                } else {
                    self.snd_nxt
                };
                return self.emit_probe(now, buf, seq);
            }
        }
        if self.keepalive_pending {
            self.keepalive_pending = false;
            // RFC 9293 §3.8.4: a keepalive carries SEG.SEQ = SND.NXT - 1 and no data.
            let mut seg = self.base_segment(now, false);
            seg.seq = self.snd_max - 1u32;
            let n = wire::emit_tcp(buf, &self.tuple, &seg, (&[], &[]));
            self.emitted(&seg);
            return n;
        }
        if self.ack_now || self.acks_owed > 0 {
            let mut seg = self.base_segment(now, false);
            seg.sack = self.sack_blocks();
            let n = wire::emit_tcp(buf, &self.tuple, &seg, (&[], &[]));
            if n.is_some() {
                self.emitted(&seg);
                self.acks_owed = self.acks_owed.saturating_sub(1);
            }
            return n;
        }
        None
    }

    fn clear_output(&mut self) {
        self.ack_now = false;
        self.acks_owed = 0;
        self.rtx_one = false;
        self.probe_pending = false;
        self.keepalive_pending = false;
    }

    fn emit_syn(&mut self, now: Instant, buf: &mut [u8], ack: bool) -> Option<usize> {
        let mut seg = self.base_segment(now, true);
        seg.seq = self.iss;
        seg.flags = Flags {
            syn: true,
            ack,
            ..Flags::default()
        };
        seg.mss = Some(self.our_mss);
        let (ws, ts, sack) = if ack {
            (self.wscale_ok, self.ts_ok, self.sack_ok)
        } else {
            (self.offer_wscale, self.offer_ts, self.offer_sack)
        };
        seg.wscale = ws.then_some(self.rcv_wscale);
        seg.timestamp = ts.then(|| (self.tsval(now), if ack { self.ts_recent } else { 0 }));
        seg.sack_permitted = sack;
        let n = wire::emit_tcp(buf, &self.tuple, &seg, (&[], &[]))?;
        self.syn_pending = false;
        self.snd_nxt = self.iss + 1u32;
        if self.snd_max < self.snd_nxt {
            self.snd_max = self.snd_nxt;
        }
        if self.rtx_at.is_none() {
            self.rtx_at = Some(now.plus_micros(self.rto));
        }
        if ack {
            self.emitted(&seg);
        }
        Some(n)
    }

    /// New data (or a retransmission after RTO) within the window, or a bare FIN.
    fn emit_data(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        // Going back after an RTO: what the peer SACKed is not sent again.
        let mut cap = u32::MAX;
        if self.snd_nxt < self.snd_max {
            for (l, r) in &self.sacked {
                if self.snd_nxt >= *l && self.snd_nxt < *r {
                    self.snd_nxt = *r;
                } else if self.snd_nxt < *l {
                    cap = *l - self.snd_nxt;
                    break;
                }
            }
        }
        let end = self.data_end();
        let unsent = if end > self.snd_nxt {
            (end - self.snd_nxt) as usize
        } else {
            0
        };
        if unsent > 0 {
            let win = self.usable_window() as usize;
            if win == 0 {
                return None;
            }
            let mss = self.seg_payload();
            let len = unsent.min(win).min(mss);
            // Nagle (RFC 9293 §3.7.4): hold a small segment while data is in flight,
            // unless it is the last before our FIN.
            let last_before_fin = self.fin_queued && len == unsent;
            if len < mss
                && !self.opts.nodelay
                && self.snd_una != self.snd_nxt
                && !last_before_fin
                && self.snd_nxt >= self.snd_max
            {
                return None;
            }
            return self.emit_data_at(now, buf, self.snd_nxt, false, cap);
        }
        if self.fin_queued && self.can_send_fin() && self.snd_nxt == end {
            let mut seg = self.base_segment(now, false);
            seg.seq = end;
            seg.flags.fin = true;
            let n = wire::emit_tcp(buf, &self.tuple, &seg, (&[], &[]))?;
            self.emitted(&seg);
            self.snd_nxt += 1u32;
            if self.snd_max < self.snd_nxt {
                self.snd_max = self.snd_nxt;
            }
            if self.rtx_at.is_none() {
                self.rtx_at = Some(now.plus_micros(self.rto));
            }
            return Some(n);
        }
        None
    }

    /// Sends up to one segment of data starting at `seq`.
    fn emit_data_at(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        seq: SeqNum,
        retransmit: bool,
        max_len: u32,
    ) -> Option<usize> {
        let end = self.data_end();
        if seq < self.buf_seq || seq >= end {
            // Only a FIN (or nothing) is outstanding there.
            if retransmit && self.fin_sent() && seq == end {
                let mut seg = self.base_segment(now, false);
                seg.seq = end;
                seg.flags.fin = true;
                let n = wire::emit_tcp(buf, &self.tuple, &seg, (&[], &[]))?;
                self.emitted(&seg);
                return Some(n);
            }
            return None;
        }
        let off = (seq - self.buf_seq) as usize;
        let avail = (end - seq) as usize;
        let mut len = avail.min(self.seg_payload()).min(max_len as usize);
        if !retransmit {
            len = len.min(self.usable_window() as usize);
        }
        if len == 0 {
            return None;
        }
        let mut seg = self.base_segment(now, false);
        seg.seq = seq;
        let with_fin = self.fin_queued && self.can_send_fin() && seq + len == end;
        seg.flags.fin = with_fin;
        seg.flags.psh = seq + len == end;
        let (a, b) = self.send_buf.as_slices();
        let (p0, p1) = slice_range(a, b, off, len);
        let n = wire::emit_tcp(buf, &self.tuple, &seg, (p0, p1))?;
        self.emitted(&seg);
        let seg_end = seq + len + with_fin as u32;
        if !retransmit {
            if self.snd_nxt >= self.snd_max && self.rtt_probe.is_none() && !self.ts_ok {
                self.rtt_probe = Some((seq, now));
            }
            self.snd_nxt = seg_end;
        } else {
            self.rtt_probe = None;
        }
        if self.snd_max < seg_end {
            self.snd_max = seg_end;
        }
        if self.rtx_at.is_none() {
            self.rtx_at = Some(now.plus_micros(self.rto));
        }
        Some(n)
    }

    /// A one-byte zero-window probe.
    fn emit_probe(&mut self, now: Instant, buf: &mut [u8], seq: SeqNum) -> Option<usize> {
        if seq < self.buf_seq || seq >= self.data_end() {
            return None;
        }
        let off = (seq - self.buf_seq) as usize;
        let mut seg = self.base_segment(now, false);
        seg.seq = seq;
        let (a, b) = self.send_buf.as_slices();
        let (p0, p1) = slice_range(a, b, off, 1);
        let n = wire::emit_tcp(buf, &self.tuple, &seg, (p0, p1))?;
        self.emitted(&seg);
        // The probe byte is sent data like any other: the peer may well take and ACK it.
        if self.snd_nxt == seq {
            self.snd_nxt = seq + 1u32;
        }
        if self.snd_max < self.snd_nxt {
            self.snd_max = self.snd_nxt;
        }
        if self.rtx_at.is_none() {
            self.rtx_at = Some(now.plus_micros(self.rto));
        }
        Some(n)
    }

    /// A one-line dump for debugging.
    pub fn debug_line(&self) -> String {
        format!(
            "{} una={} nxt={} max={} wnd={} cwnd={} ssthresh={} rcv_nxt={} rcv_adv={} ooo={} recv_buf={} send_buf={} rtx_at={:?} delack={:?} recovery={} rtx_one={} ack_now={} sched={:?}",
            self.state.name(), self.snd_una, self.snd_nxt, self.snd_max, self.snd_wnd, self.cwnd,
            self.ssthresh, self.rcv_nxt, self.rcv_adv, self.ooo_bytes, self.recv_buf.len(),
            self.send_buf.len(), self.rtx_at, self.delack_at, self.in_recovery, self.rtx_one,
            self.ack_now, self.scheduled
        )
    }

    /// Sequence number and ACK for a RST answering a segment on this connection.
    pub fn rst_fields(&self) -> (SeqNum, SeqNum) {
        (self.snd_nxt, self.rcv_nxt)
    }

    /// The ACK a challenge or TIME_WAIT transition sends: (seq, ack, window, timestamps).
    pub fn final_ack(&mut self, now: Instant) -> OutSegment {
        let mut seg = self.base_segment(now, false);
        seg.seq = self.snd_nxt.max(self.snd_max);
        seg
    }
}

/// Splits `len` bytes at `off` of a two-part ring buffer into two slices. Out-of-range
/// requests give empty slices rather than a panic (callers check ranges first; this is
/// the last line of defence for a process that holds many connections).
/// A duration in whole microseconds (saturating), the unit of the TCB's timers.
fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

fn slice_range<'a>(a: &'a [u8], b: &'a [u8], off: usize, len: usize) -> (&'a [u8], &'a [u8]) {
    let empty: &[u8] = &[];
    if off.saturating_add(len) > a.len() + b.len() {
        debug_assert!(
            false,
            "slice_range({off}, {len}) beyond {}",
            a.len() + b.len()
        );
        return (empty, empty);
    }
    if off >= a.len() {
        let s = off - a.len();
        (&b[s..s + len], empty)
    } else if off + len <= a.len() {
        (&a[off..off + len], empty)
    } else {
        (&a[off..], &b[..len - (a.len() - off)])
    }
}
