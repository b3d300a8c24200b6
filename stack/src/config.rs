//! Configuration of one [`Stack`](crate::Stack): every limit is explicit here.

use core::time::Duration;

/// How TIME_WAIT entries restrict new outbound connections.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Default)]
pub enum ReusePolicy {
    /// Windows-style (default): a TIME_WAIT entry blocks only its exact 4-tuple.
    #[default]
    ExactTuple,
    /// Strict: a local (ip, port) is unusable for any new outbound connection while any
    /// TIME_WAIT entry holds it.
    LocalPort,
    /// Like Linux `tcp_tw_reuse`: an outbound connect may take over a TIME_WAIT 4-tuple when
    /// both sides used timestamps and more than [`Config::tw_reuse_delay`] has passed since
    /// the entry last saw a segment (RFC 6191 reasoning).
    TimestampReuse,
}

impl ReusePolicy {
    /// The CLI / JSON name of the policy.
    pub fn name(self) -> &'static str {
        match self {
            ReusePolicy::ExactTuple => "exact-tuple",
            ReusePolicy::LocalPort => "local-port",
            ReusePolicy::TimestampReuse => "timestamp-reuse",
        }
    }

    /// All policies, in a stable order.
    pub const ALL: [ReusePolicy; 3] = [
        ReusePolicy::ExactTuple,
        ReusePolicy::LocalPort,
        ReusePolicy::TimestampReuse,
    ];
}

impl core::str::FromStr for ReusePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exact-tuple" => Ok(ReusePolicy::ExactTuple),
            "local-port" => Ok(ReusePolicy::LocalPort),
            "timestamp-reuse" => Ok(ReusePolicy::TimestampReuse),
            other => Err(format!(
                "unknown policy {other:?}: expected exact-tuple, local-port or timestamp-reuse"
            )),
        }
    }
}

impl core::fmt::Display for ReusePolicy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens when a connection enters TIME_WAIT and the table is already at its cap.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Default)]
pub enum TwOverflow {
    /// Evict the oldest entry (the one closest to expiry) to make room. Default: the newest
    /// close is the one most likely to see stray segments.
    #[default]
    EvictOldest,
    /// Linux's behaviour when `tcp_max_tw_buckets` is hit: the closing connection is freed
    /// without a TIME_WAIT entry.
    DropNew,
}

/// What the device under the stack carries.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub enum Medium {
    /// Raw IP packets (TUN).
    #[default]
    Ip,
    /// Ethernet frames (AF_PACKET); the stack runs ARP and neighbour discovery.
    Ethernet {
        /// This interface's MAC address.
        mac: [u8; 6],
    },
}

/// Configuration of one stack. `Config::default()` is a sane Linux-interoperable host.
#[derive(Clone, Debug)]
pub struct Config {
    /// Raw IP (TUN) or Ethernet (AF_PACKET).
    pub medium: Medium,
    /// Maximum segment lifetime; TIME_WAIT lasts 2*MSL.
    pub msl: Duration,
    /// Port-reuse policy for outbound connects.
    pub reuse_policy: ReusePolicy,
    /// Maximum TIME_WAIT entries (like `tcp_max_tw_buckets`).
    pub max_time_wait: usize,
    /// What to do when the TIME_WAIT table is full.
    pub tw_overflow: TwOverflow,
    /// RFC 1337: ignore RSTs received in TIME_WAIT (default true). When false an RST
    /// ends the TIME_WAIT entry, as Linux does with `tcp_rfc1337=0`.
    pub rfc1337: bool,
    /// With [`ReusePolicy::TimestampReuse`], how long since an entry last saw a segment
    /// before its 4-tuple may be reused (Linux: 1 s).
    pub tw_reuse_delay: Duration,
    /// Maximum live connections (all states except LISTEN and TIME_WAIT).
    pub max_connections: usize,
    /// Inclusive ephemeral port range, like `ip_local_port_range`.
    pub ephemeral_ports: (u16, u16),
    /// Per-connection send buffer, in bytes.
    pub send_buffer: usize,
    /// Per-connection receive buffer, in bytes (the advertised window's upper bound).
    pub recv_buffer: usize,
    /// Maximum out-of-order bytes held for one connection.
    pub max_ooo_bytes_per_conn: usize,
    /// Our MSS for IPv4 (MTU 1500 - 40).
    pub mss_v4: u16,
    /// Our MSS for IPv6 (MTU 1500 - 60).
    pub mss_v6: u16,
    /// Offer window scaling (RFC 7323).
    pub window_scaling: bool,
    /// Offer timestamps (RFC 7323).
    pub timestamps: bool,
    /// Offer SACK (RFC 2018).
    pub sack: bool,
    /// Initial retransmission timeout (RFC 6298: 1 s).
    pub rto_initial: Duration,
    /// Lower bound on the RTO (Linux uses 200 ms; RFC 6298 says 1 s).
    pub rto_min: Duration,
    /// Upper bound on the RTO.
    pub rto_max: Duration,
    /// SYN retransmissions before a connect fails with a timeout.
    pub syn_retries: u32,
    /// Data retransmissions before a connection is reset with a timeout.
    pub data_retries: u32,
    /// Delayed-ACK timeout (RFC 9293 / RFC 1122: under 500 ms; Linux ~40 ms).
    pub delayed_ack: Duration,
    /// Keepalive idle time before the first probe, when a connection enables keepalive.
    pub keepalive_idle: Duration,
    /// Interval between keepalive probes.
    pub keepalive_interval: Duration,
    /// Unanswered keepalive probes before the connection is reset.
    pub keepalive_probes: u32,
    /// How long FIN-WAIT-2 may last after the application closed (Linux tcp_fin_timeout).
    pub fin_wait_2_timeout: Duration,
    /// Rate limit for RFC 5961 challenge ACKs, per second, stack-wide.
    pub challenge_ack_limit: u32,
    /// Whether the stack answers ICMP / ICMPv6 echo requests.
    pub answer_ping: bool,
    /// Default listen backlog cap (SYN queue plus accept queue) when `listen` asks for 0.
    pub default_backlog: usize,
    /// Answer SYNs with SYN cookies when a listener's backlog is full (RFC 4987).
    pub syn_cookies: bool,
    /// Out-of-order bytes held across all connections.
    pub max_ooo_bytes_total: usize,
    /// Per connection, at most one ACK answers unacceptable bare ACKs in this interval
    /// (Linux tcp_invalid_ratelimit: 500 ms); stops ACK wars.
    pub invalid_ack_interval: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            medium: Medium::Ip,
            msl: Duration::from_secs(30),
            reuse_policy: ReusePolicy::ExactTuple,
            max_time_wait: 2_000_000,
            tw_overflow: TwOverflow::EvictOldest,
            rfc1337: true,
            tw_reuse_delay: Duration::from_secs(1),
            max_connections: 1_000_000,
            ephemeral_ports: (32768, 60999),
            send_buffer: 256 * 1024,
            recv_buffer: 256 * 1024,
            max_ooo_bytes_per_conn: 256 * 1024,
            mss_v4: 1460,
            mss_v6: 1440,
            window_scaling: true,
            timestamps: true,
            sack: true,
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(120),
            syn_retries: 6,
            data_retries: 15,
            delayed_ack: Duration::from_millis(40),
            keepalive_idle: Duration::from_secs(7200),
            keepalive_interval: Duration::from_secs(75),
            keepalive_probes: 9,
            fin_wait_2_timeout: Duration::from_secs(60),
            challenge_ack_limit: 1000,
            answer_ping: true,
            default_backlog: 128,
            syn_cookies: true,
            max_ooo_bytes_total: 64 * 1024 * 1024,
            invalid_ack_interval: Duration::from_millis(500),
        }
    }
}

impl Config {
    /// The window scale shift we offer: the smallest that lets the receive buffer be
    /// advertised in 16 bits (RFC 7323 §2.3: at most 14).
    pub fn recv_window_shift(&self) -> u8 {
        let mut shift = 0u8;
        while shift < 14 && (self.recv_buffer >> shift) > 65535 {
            shift += 1;
        }
        shift
    }

    /// TIME_WAIT lifetime: 2*MSL.
    pub fn time_wait_lifetime(&self) -> Duration {
        self.msl * 2
    }
}
