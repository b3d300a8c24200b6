//! The Ethernet medium: frame (de)encapsulation, ARP (RFC 826) and a minimal IPv6
//! neighbour discovery (RFC 4861: solicitations and advertisements only).
//!
//! This module owns the neighbour cache and the packets waiting for resolution. It never
//! interprets IP payloads beyond what ARP and NDP need, and everything it keeps is bounded:
//! the cache, the number of destinations being resolved and the packets queued for each.
//! All neighbours are assumed on-link (fourtuple runs inside private test networks).

use core::time::Duration;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::HashMap;

use crate::time::Instant;

/// A MAC address.
pub type Mac = [u8; 6];

/// The broadcast MAC.
pub const BROADCAST: Mac = [0xff; 6];

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Limits of the neighbour layer.
#[derive(Clone, Debug)]
pub struct NeighborConfig {
    /// Cache entries kept (oldest evicted beyond).
    pub cache_size: usize,
    /// How long a learned neighbour stays valid.
    pub entry_lifetime: Duration,
    /// Destinations resolved at once; packets to more are dropped and counted.
    pub max_pending_destinations: usize,
    /// Packets queued per destination while resolving.
    pub max_pending_per_destination: usize,
    /// Interval between resolution requests.
    pub retry_interval: Duration,
    /// Requests before giving up on a destination (its queued packets are dropped).
    pub max_requests: u32,
}

impl Default for NeighborConfig {
    fn default() -> Self {
        NeighborConfig {
            cache_size: 4096,
            entry_lifetime: Duration::from_secs(300),
            max_pending_destinations: 1024,
            max_pending_per_destination: 64,
            retry_interval: Duration::from_secs(1),
            max_requests: 3,
        }
    }
}

/// Counters of the Ethernet layer.
#[derive(Clone, Debug, Default)]
pub struct EthernetStats {
    /// Frames not addressed to us (unicast to another MAC).
    pub frames_not_for_us: u64,
    /// Frames too short or of an unknown EtherType.
    pub frames_malformed: u64,
    /// ARP requests answered.
    pub arp_replies_sent: u64,
    /// ARP requests sent to resolve a destination.
    pub arp_requests_sent: u64,
    /// Neighbour solicitations answered.
    pub nd_advertisements_sent: u64,
    /// Neighbour solicitations sent.
    pub nd_solicitations_sent: u64,
    /// Neighbours learned or refreshed.
    pub neighbors_learned: u64,
    /// Packets dropped because resolution failed or its queues were full.
    pub unresolved_drops: u64,
}

struct Neighbor {
    mac: Mac,
    expires: Instant,
}

struct Pending {
    packets: VecDeque<Vec<u8>>,
    next_request: Instant,
    requests: u32,
}

/// Neighbour cache and Ethernet framing for one interface.
pub struct EthernetLayer {
    mac: Mac,
    cfg: NeighborConfig,
    cache: HashMap<IpAddr, Neighbor>,
    pending: HashMap<IpAddr, Pending>,
    /// Frames ready to go out: ARP/NDP messages and released packets.
    out: VecDeque<Vec<u8>>,
    stats: EthernetStats,
}

/// What an incoming frame carried.
pub enum FrameIn<'a> {
    /// An IP packet for the stack.
    Ip(&'a [u8]),
    /// Consumed here (ARP, NDP) or dropped and counted.
    Handled,
}

impl EthernetLayer {
    /// A layer for an interface with address `mac`.
    pub fn new(mac: Mac, cfg: NeighborConfig) -> EthernetLayer {
        EthernetLayer {
            mac,
            cfg,
            cache: HashMap::new(),
            pending: HashMap::new(),
            out: VecDeque::new(),
            stats: EthernetStats::default(),
        }
    }

    /// Our MAC.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// Counters.
    pub fn stats(&self) -> &EthernetStats {
        &self.stats
    }

    /// The cached MAC of `ip`, if fresh.
    pub fn lookup(&self, now: Instant, ip: IpAddr) -> Option<Mac> {
        self.cache
            .get(&ip)
            .filter(|n| n.expires > now)
            .map(|n| n.mac)
    }

    /// Number of cached neighbours.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    fn learn(&mut self, now: Instant, ip: IpAddr, mac: Mac) {
        if mac == BROADCAST || mac[0] & 1 == 1 || ip.is_unspecified() {
            return;
        }
        if self.cache.len() >= self.cfg.cache_size && !self.cache.contains_key(&ip) {
            // Bounded: evict one stale or arbitrary entry (the cache is small).
            if let Some(k) = self.cache.keys().next().copied() {
                self.cache.remove(&k);
            }
        }
        self.cache.insert(
            ip,
            Neighbor {
                mac,
                expires: now + self.cfg.entry_lifetime,
            },
        );
        self.stats.neighbors_learned += 1;
        if let Some(p) = self.pending.remove(&ip) {
            for mut pkt in p.packets {
                pkt[0..6].copy_from_slice(&mac);
                self.out.push_back(pkt);
            }
        }
    }

    /// Demultiplexes one received frame. `is_local` says whether an IP address is ours.
    pub fn receive<'a>(
        &mut self,
        now: Instant,
        frame: &'a [u8],
        is_local: impl Fn(IpAddr) -> bool,
    ) -> FrameIn<'a> {
        if frame.len() < 14 {
            self.stats.frames_malformed += 1;
            return FrameIn::Handled;
        }
        let dst: Mac = frame[0..6].try_into().unwrap_or([0; 6]);
        let src: Mac = frame[6..12].try_into().unwrap_or([0; 6]);
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let multicast = dst[0] & 1 == 1;
        if dst != self.mac && !multicast {
            self.stats.frames_not_for_us += 1;
            return FrameIn::Handled;
        }
        let payload = &frame[14..];
        match ethertype {
            ETHERTYPE_ARP => {
                self.on_arp(now, src, payload, is_local);
                FrameIn::Handled
            }
            ETHERTYPE_IPV4 => FrameIn::Ip(payload),
            ETHERTYPE_IPV6 => {
                if self.on_ndp(now, src, payload, &is_local) {
                    FrameIn::Handled
                } else {
                    FrameIn::Ip(payload)
                }
            }
            _ => {
                self.stats.frames_malformed += 1;
                FrameIn::Handled
            }
        }
    }

    fn on_arp(&mut self, now: Instant, src: Mac, p: &[u8], is_local: impl Fn(IpAddr) -> bool) {
        // Ethernet/IPv4 ARP only: htype 1, ptype 0x0800, hlen 6, plen 4.
        if p.len() < 28 || p[0..2] != [0, 1] || p[2..4] != [8, 0] || p[4] != 6 || p[5] != 4 {
            self.stats.frames_malformed += 1;
            return;
        }
        let op = u16::from_be_bytes([p[6], p[7]]);
        let sha: Mac = p[8..14].try_into().unwrap_or(src);
        let spa = IpAddr::V4(Ipv4Addr::new(p[14], p[15], p[16], p[17]));
        let tpa = IpAddr::V4(Ipv4Addr::new(p[24], p[25], p[26], p[27]));
        let for_us = is_local(tpa);
        // RFC 826: update an existing entry from any ARP; add one when we are the target.
        if for_us || self.cache.contains_key(&spa) || self.pending.contains_key(&spa) {
            self.learn(now, spa, sha);
        }
        if op == 1 && for_us {
            self.out
                .push_back(arp_frame(self.mac, sha, 2, tpa, sha, spa));
            self.stats.arp_replies_sent += 1;
        }
    }

    /// Handles NDP; returns true when the packet was neighbour discovery.
    fn on_ndp(
        &mut self,
        now: Instant,
        src_mac: Mac,
        ip: &[u8],
        is_local: &impl Fn(IpAddr) -> bool,
    ) -> bool {
        if ip.len() < 40 + 24 || ip[6] != 58 {
            return false;
        }
        let icmp = &ip[40..];
        let kind = icmp[0];
        if kind != 135 && kind != 136 {
            return false;
        }
        // RFC 4861 §7.1: hop limit must be 255.
        if ip[7] != 255 {
            return true;
        }
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap_or([0; 16]));
        let target = Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).unwrap_or([0; 16]));
        let lladdr = nd_lladdr(&icmp[24..], if kind == 135 { 1 } else { 2 });
        if kind == 135 {
            if !is_local(IpAddr::V6(target)) {
                return true;
            }
            let peer_mac = lladdr.unwrap_or(src_mac);
            if !src.is_unspecified() {
                self.learn(now, IpAddr::V6(src), peer_mac);
                self.out
                    .push_back(na_frame(self.mac, peer_mac, target, src));
                self.stats.nd_advertisements_sent += 1;
            }
        } else if let Some(mac) = lladdr {
            self.learn(now, IpAddr::V6(target), mac);
        }
        true
    }

    /// Takes a frame that is ready to send (ARP/NDP, or a packet whose neighbour was just
    /// resolved), copying it into `buf`.
    pub fn poll_ready(&mut self, buf: &mut [u8]) -> Option<usize> {
        while let Some(f) = self.out.pop_front() {
            if f.len() <= buf.len() {
                buf[..f.len()].copy_from_slice(&f);
                return Some(f.len());
            }
            self.stats.unresolved_drops += 1;
        }
        None
    }

    /// Frames an IP packet that sits at `buf[14..14 + ip_len]`. Returns the frame length
    /// when the neighbour is known; otherwise queues a copy, starts resolution, and
    /// returns None (the caller moves on to the next packet).
    pub fn frame(&mut self, now: Instant, buf: &mut [u8], ip_len: usize) -> Option<usize> {
        let packet = &buf[14..14 + ip_len];
        let (dst, ethertype) = match packet.first().map(|b| b >> 4) {
            Some(4) if ip_len >= 20 => (
                IpAddr::V4(Ipv4Addr::new(
                    packet[16], packet[17], packet[18], packet[19],
                )),
                ETHERTYPE_IPV4,
            ),
            Some(6) if ip_len >= 40 => (
                IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(&packet[24..40]).unwrap_or([0; 16]),
                )),
                ETHERTYPE_IPV6,
            ),
            _ => return None,
        };
        buf[6..12].copy_from_slice(&self.mac);
        buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
        if let Some(mac) = self.lookup(now, dst) {
            buf[0..6].copy_from_slice(&mac);
            return Some(14 + ip_len);
        }
        let frame = buf[..14 + ip_len].to_vec();
        let cfg_dests = self.cfg.max_pending_destinations;
        let cfg_per = self.cfg.max_pending_per_destination;
        if !self.pending.contains_key(&dst) && self.pending.len() >= cfg_dests {
            self.stats.unresolved_drops += 1;
            return None;
        }
        let p = self.pending.entry(dst).or_insert_with(|| Pending {
            packets: VecDeque::new(),
            next_request: now,
            requests: 0,
        });
        if p.packets.len() >= cfg_per {
            self.stats.unresolved_drops += 1;
        } else {
            p.packets.push_back(frame);
        }
        if p.next_request <= now {
            self.solicit(now, dst);
        }
        None
    }

    fn solicit(&mut self, now: Instant, dst: IpAddr) {
        let Some(p) = self.pending.get_mut(&dst) else {
            return;
        };
        p.requests += 1;
        p.next_request = now + self.cfg.retry_interval;
        // The source address of our request: any of ours of that family will do for the
        // peer to learn us; the caller's addresses are not known here, so ARP uses the
        // packet's own source, taken from the queued frame.
        let src_ip = p.packets.back().and_then(|f| ip_src(&f[14..]));
        match (dst, src_ip) {
            (IpAddr::V4(_), Some(src)) => {
                self.out
                    .push_back(arp_frame(self.mac, BROADCAST, 1, src, [0; 6], dst));
                self.stats.arp_requests_sent += 1;
            }
            (IpAddr::V6(d), Some(IpAddr::V6(s))) => {
                self.out.push_back(ns_frame(self.mac, s, d));
                self.stats.nd_solicitations_sent += 1;
            }
            _ => {}
        }
    }

    /// The next resolution retry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next_request).min()
    }

    /// Retries or gives up on resolutions that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<IpAddr> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_request <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            let give_up = self
                .pending
                .get(&ip)
                .is_some_and(|p| p.requests >= self.cfg.max_requests);
            if give_up {
                if let Some(p) = self.pending.remove(&ip) {
                    self.stats.unresolved_drops += p.packets.len() as u64;
                }
            } else {
                self.solicit(now, ip);
            }
        }
    }
}

fn ip_src(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some(IpAddr::V4(Ipv4Addr::new(
            packet[12], packet[13], packet[14], packet[15],
        ))),
        6 if packet.len() >= 40 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(&packet[8..24]).ok()?,
        ))),
        _ => None,
    }
}

fn nd_lladdr(mut opts: &[u8], want: u8) -> Option<Mac> {
    while opts.len() >= 8 {
        let len = opts[1] as usize * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if opts[0] == want && len >= 8 {
            return opts[2..8].try_into().ok();
        }
        opts = &opts[len..];
    }
    None
}

fn arp_frame(src_mac: Mac, dst_mac: Mac, op: u16, spa: IpAddr, tha: Mac, tpa: IpAddr) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 28];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let a = &mut f[14..];
    a[0..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, op as u8]);
    a[8..14].copy_from_slice(&src_mac);
    if let IpAddr::V4(s) = spa {
        a[14..18].copy_from_slice(&s.octets());
    }
    a[18..24].copy_from_slice(&tha);
    if let IpAddr::V4(t) = tpa {
        a[24..28].copy_from_slice(&t.octets());
    }
    f
}

fn icmpv6_frame(src_mac: Mac, dst_mac: Mac, src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 40 + body.len()];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let ip = &mut f[14..];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
    ip[6] = 58;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    ip[40..].copy_from_slice(body);
    let mut sum = crate::checksum::pseudo_header_v6(src, dst, 58, body.len() as u32);
    sum.add_bytes(&ip[40..]);
    ip[42..44].copy_from_slice(&sum.finish().to_be_bytes());
    f
}

fn na_frame(src_mac: Mac, dst_mac: Mac, target: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut body = vec![0u8; 32];
    body[0] = 136;
    body[4] = 0x60; // solicited + override
    body[8..24].copy_from_slice(&target.octets());
    body[24] = 2; // target link-layer address
    body[25] = 1;
    body[26..32].copy_from_slice(&src_mac);
    icmpv6_frame(src_mac, dst_mac, target, dst, &body)
}

fn ns_frame(src_mac: Mac, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    // Solicited-node multicast address and its MAC (RFC 4291 §2.7.1, RFC 2464 §7).
    let t = target.octets();
    let mut sn = [0u8; 16];
    sn[0] = 0xff;
    sn[1] = 0x02;
    sn[11] = 0x01;
    sn[12] = 0xff;
    sn[13..16].copy_from_slice(&t[13..16]);
    let sn = Ipv6Addr::from(sn);
    let mac = [0x33, 0x33, 0xff, t[13], t[14], t[15]];
    let mut body = vec![0u8; 32];
    body[0] = 135;
    body[8..24].copy_from_slice(&t);
    body[24] = 1; // source link-layer address
    body[25] = 1;
    body[26..32].copy_from_slice(&src_mac);
    icmpv6_frame(src_mac, mac, src, sn, &body)
}
