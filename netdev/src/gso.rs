//! Merging outgoing TCP segments into GSO super-packets for a TUN with offloads.
//!
//! This module owns one thing: given the stack's IPv4 packets in the order it sends them,
//! write runs of consecutive full-sized segments of one TCP flow as one packet of up to
//! 64 KiB with a virtio-net header that asks the kernel to treat it as GSO
//! (`VIRTIO_NET_HDR_GSO_TCPV4`, `gso_size` = the segments' payload). The kernel then takes
//! one packet where it would have taken dozens, exactly as it takes a super-packet that GRO
//! merged on a NIC; what arrives at the receiving socket is the same byte stream with the
//! same headers. It reads the IPv4 and TCP headers only to decide what may be merged (the
//! rules of Linux's `tcp_gro_receive`: same flow, contiguous sequence numbers, same ACK,
//! window and options, flags ACK only, every segment but the last exactly `gso_size`, a
//! push or a short segment ends a run) and rewrites only what a merge changes: the IP
//! total length and header checksum, and the TCP checksum field, which gets the
//! pseudo-header sum as `VIRTIO_NET_HDR_F_NEEDS_CSUM` asks. It must never reorder, drop or
//! alter the bytes a segment carries, nor hold a packet past [`Coalescer::flush`].

use std::io;

use crate::tun::VNET_HDR_LEN;

const F_NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// The largest IPv4 packet.
const MAX_IP: usize = 65_535;

/// The virtio-net header of a packet that is not GSO and whose checksums are complete.
pub const PLAIN_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// Where a TCP/IPv4 packet's fields are, once it passed [`tcp4`].
#[derive(Copy, Clone, Debug)]
struct Tcp4 {
    /// IPv4 plus TCP header length.
    hdr_len: usize,
    payload: usize,
    seq: u32,
    flags: u8,
}

/// A TCP segment over IPv4 without IP options or fragmentation, with payload and only
/// ACK (and perhaps PSH) set: the only packets worth merging.
fn tcp4(p: &[u8]) -> Option<Tcp4> {
    if p.len() < 40 || p[0] != 0x45 || p[9] != 6 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    // More fragments, or an offset: leave it alone.
    if total != p.len() || u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
        return None;
    }
    let doff = usize::from(p[32] >> 4) * 4;
    if !(20..=60).contains(&doff) || 20 + doff > p.len() {
        return None;
    }
    let flags = p[33];
    if flags & !TCP_PSH != TCP_ACK {
        return None;
    }
    let hdr_len = 20 + doff;
    let payload = p.len() - hdr_len;
    if payload == 0 {
        return None;
    }
    Some(Tcp4 {
        hdr_len,
        payload,
        seq: u32::from_be_bytes([p[24], p[25], p[26], p[27]]),
        flags,
    })
}

/// What the coalescer merged, for counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GsoStats {
    /// Super-packets written (two segments or more).
    pub super_packets: u64,
    /// Segments that went out inside a super-packet.
    pub merged_segments: u64,
}

/// Holds at most one run of segments being merged.
#[derive(Debug)]
pub struct Coalescer {
    buf: Vec<u8>,
    /// Bytes of `buf` in use; 0 when nothing is held.
    len: usize,
    hdr_len: usize,
    gso_size: usize,
    segs: u32,
    next_seq: u32,
    /// Set when the last merged segment was short: the run is over.
    closed: bool,
    /// False once merging was switched off: every packet goes out as it came.
    enabled: bool,
    stats: GsoStats,
}

impl Default for Coalescer {
    fn default() -> Coalescer {
        Coalescer::new()
    }
}

impl Coalescer {
    /// An empty coalescer with room for one 64 KiB super-packet.
    pub fn new() -> Coalescer {
        Coalescer {
            buf: vec![0; MAX_IP],
            len: 0,
            hdr_len: 0,
            gso_size: 0,
            segs: 0,
            next_seq: 0,
            closed: false,
            enabled: true,
            stats: GsoStats::default(),
        }
    }

    /// Stops merging for good (e.g. when the kernel refused a super-packet); what is held
    /// still goes out at the next [`Coalescer::flush`].
    pub fn disable(&mut self) {
        self.enabled = false;
    }

    /// What was merged so far.
    pub fn stats(&self) -> &GsoStats {
        &self.stats
    }

    /// True when `p` (already checked by [`tcp4`]) continues the held run.
    fn continues(&self, p: &[u8], t: &Tcp4) -> bool {
        let h = &self.buf[..self.hdr_len];
        !self.closed
            && t.hdr_len == self.hdr_len
            && t.seq == self.next_seq
            && t.payload <= self.gso_size
            && self.len + t.payload <= MAX_IP
            // TOS, TTL, protocol, addresses.
            && p[1] == h[1]
            && p[8..10] == h[8..10]
            && p[12..20] == h[12..20]
            // Ports, then ACK number, then (after flags) the window, then the options.
            && p[20..24] == h[20..24]
            && p[28..32] == h[28..32]
            && p[34..36] == h[34..36]
            && p[40..t.hdr_len] == h[40..t.hdr_len]
    }

    /// Takes the stack's next packet: merges it into the held run, or writes the run and
    /// holds this one, or writes both. `write` gets a virtio-net header and a packet.
    pub fn push(
        &mut self,
        p: &[u8],
        write: &mut impl FnMut(&[u8; VNET_HDR_LEN], &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let Some(t) = tcp4(p).filter(|_| self.enabled) else {
            self.flush(write)?;
            return write(&PLAIN_HDR, p);
        };
        if self.len > 0 && self.continues(p, &t) {
            self.buf[self.len..self.len + t.payload].copy_from_slice(&p[t.hdr_len..]);
            self.len += t.payload;
            self.segs += 1;
            self.next_seq = t.seq.wrapping_add(t.payload as u32);
            if t.payload < self.gso_size {
                self.closed = true;
            }
            if t.flags & TCP_PSH != 0 {
                // The pushed segment ends the run, as GRO flushes on PSH.
                self.buf[33] |= TCP_PSH;
                self.closed = true;
            }
            if self.closed || self.len + self.gso_size > MAX_IP {
                self.flush(write)?;
            }
            return Ok(());
        }
        self.flush(write)?;
        if t.flags & TCP_PSH != 0 || p.len() + t.payload > MAX_IP {
            return write(&PLAIN_HDR, p);
        }
        self.buf[..p.len()].copy_from_slice(p);
        self.len = p.len();
        self.hdr_len = t.hdr_len;
        self.gso_size = t.payload;
        self.segs = 1;
        self.next_seq = t.seq.wrapping_add(t.payload as u32);
        self.closed = false;
        Ok(())
    }

    /// Writes the held run, if any: as it came when it is one segment, else as a GSO
    /// super-packet.
    pub fn flush(
        &mut self,
        write: &mut impl FnMut(&[u8; VNET_HDR_LEN], &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let len = std::mem::take(&mut self.len);
        if self.segs == 1 {
            return write(&PLAIN_HDR, &self.buf[..len]);
        }
        let p = &mut self.buf[..len];
        // IPv4: total length, then the header checksum over the new header.
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let ip_sum = !fold(sum16(&p[..20]));
        p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        // TCP: the field holds the pseudo-header sum; the kernel finishes each segment's.
        let tcp_len = (len - 20) as u32;
        let pseudo = sum16(&p[12..20]) + 6 + tcp_len;
        p[36..38].copy_from_slice(&fold(pseudo).to_be_bytes());
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[0] = F_NEEDS_CSUM;
        hdr[1] = GSO_TCPV4;
        hdr[2..4].copy_from_slice(&(self.hdr_len as u16).to_ne_bytes());
        hdr[4..6].copy_from_slice(&(self.gso_size as u16).to_ne_bytes());
        hdr[6..8].copy_from_slice(&20u16.to_ne_bytes());
        hdr[8..10].copy_from_slice(&16u16.to_ne_bytes());
        self.stats.super_packets += 1;
        self.stats.merged_segments += u64::from(self.segs);
        write(&hdr, p)
    }
}

fn sum16(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 segment with timestamps, ACK (plus `psh`), `payload` bytes from `seq`.
    fn seg(seq: u32, payload: &[u8], psh: bool, tsval: u32) -> Vec<u8> {
        let doff = 32;
        let len = 20 + doff + payload.len();
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[192, 0, 2, 2]);
        p[16..20].copy_from_slice(&[192, 0, 2, 1]);
        let ip_sum = !fold(sum16(&p[..20]));
        p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&5001u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&77u32.to_be_bytes());
        p[32] = ((doff / 4) as u8) << 4;
        p[33] = TCP_ACK | if psh { TCP_PSH } else { 0 };
        p[34..36].copy_from_slice(&1000u16.to_be_bytes());
        p[40..44].copy_from_slice(&[1, 1, 8, 10]);
        p[44..48].copy_from_slice(&tsval.to_be_bytes());
        p[52..].copy_from_slice(payload);
        p
    }

    /// What the coalescer wrote: each packet with its virtio-net header.
    type Written = Vec<([u8; VNET_HDR_LEN], Vec<u8>)>;

    fn run(packets: &[Vec<u8>]) -> (Written, GsoStats) {
        let mut c = Coalescer::new();
        let mut out = Vec::new();
        let mut w = |h: &[u8; VNET_HDR_LEN], p: &[u8]| {
            out.push((*h, p.to_vec()));
            Ok(())
        };
        for p in packets {
            c.push(p, &mut w).unwrap();
        }
        c.flush(&mut w).unwrap();
        let stats = c.stats().clone();
        (out, stats)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn a_run_becomes_one_super_packet_with_the_same_bytes() {
        let d = data(1448 * 5 + 100);
        let mut pkts = Vec::new();
        for (i, c) in d.chunks(1448).enumerate() {
            pkts.push(seg(1000 + (i * 1448) as u32, c, false, 9));
        }
        let (out, stats) = run(&pkts);
        assert_eq!(out.len(), 1);
        let (h, p) = &out[0];
        assert_eq!(h[0], F_NEEDS_CSUM);
        assert_eq!(h[1], GSO_TCPV4);
        assert_eq!(u16::from_ne_bytes([h[2], h[3]]), 52);
        assert_eq!(u16::from_ne_bytes([h[4], h[5]]), 1448);
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        assert_eq!(fold(sum16(&p[..20])), 0xffff, "IP header checksum");
        assert_eq!(&p[52..], &d[..]);
        assert_eq!(&p[..2], &pkts[0][..2]);
        assert_eq!(stats.super_packets, 1);
        assert_eq!(stats.merged_segments, 6);
    }

    #[test]
    fn gaps_options_and_other_packets_end_a_run() {
        let d = data(1448);
        let pkts = vec![
            seg(0, &d, false, 1),
            seg(1448, &d, false, 1),
            // A gap in sequence numbers.
            seg(5000, &d, false, 1),
            // Another timestamp.
            seg(6448, &d, false, 2),
            // A pure ACK is never merged.
            seg(7896, &[], false, 2),
            seg(7896, &d, true, 2),
        ];
        let (out, stats) = run(&pkts);
        let sizes: Vec<usize> = out.iter().map(|(_, p)| p.len()).collect();
        assert_eq!(sizes, [52 + 2 * 1448, 52 + 1448, 52 + 1448, 52, 52 + 1448]);
        assert_eq!(out[0].0[1], GSO_TCPV4);
        for (h, p) in &out[1..] {
            assert_eq!(h, &PLAIN_HDR);
            assert!(pkts.contains(p), "a plain packet went out unchanged");
        }
        assert_eq!(stats.super_packets, 1);
    }

    #[test]
    fn push_ends_a_run_and_the_flag_survives() {
        let d = data(1000);
        let pkts = vec![
            seg(0, &d, false, 1),
            seg(1000, &d, false, 1),
            seg(2000, &d, true, 1),
            seg(3000, &d, false, 1),
        ];
        let (out, _) = run(&pkts);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].1.len(), 52 + 3000);
        assert_eq!(out[0].1[33], TCP_ACK | TCP_PSH);
        assert_eq!(out[1].1, pkts[3]);
    }

    #[test]
    fn a_disabled_coalescer_passes_packets_through() {
        let d = data(1448);
        let pkts: Vec<_> = (0..4).map(|i| seg(i * 1448, &d, false, 1)).collect();
        let mut c = Coalescer::new();
        c.disable();
        let mut out = Vec::new();
        let mut w = |h: &[u8; VNET_HDR_LEN], p: &[u8]| {
            out.push((*h, p.to_vec()));
            Ok(())
        };
        for p in &pkts {
            c.push(p, &mut w).unwrap();
        }
        c.flush(&mut w).unwrap();
        assert_eq!(out.len(), 4);
        for ((h, p), q) in out.iter().zip(&pkts) {
            assert_eq!(h, &PLAIN_HDR);
            assert_eq!(p, q);
        }
    }

    #[test]
    fn runs_stop_short_of_64_kib() {
        let d = data(1448);
        let pkts: Vec<_> = (0..100).map(|i| seg(i * 1448, &d, false, 1)).collect();
        let (out, stats) = run(&pkts);
        let mut total = 0;
        for (_, p) in &out {
            assert!(p.len() <= MAX_IP);
            total += p.len() - 52;
        }
        assert_eq!(total, 100 * 1448);
        assert_eq!(stats.merged_segments, 100);
    }
}
