//! Malformed input never panics: it is counted and dropped, and the stack keeps working.

mod common;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use common::peer::{flags, Harness, HOST_IP, PEER_IP};
use fourtuple_stack::wire::{self, Incoming, OutSegment};
use fourtuple_stack::{Config, DropReason, FourTuple, Instant, SeqNum, Stack};

fn valid_syn(h: &Harness) -> Vec<u8> {
    let mut buf = vec![0u8; 200];
    let seg = OutSegment {
        seq: SeqNum(1),
        flags: flags("S"),
        window: 1000,
        mss: Some(1460),
        timestamp: Some((1, 0)),
        ..OutSegment::default()
    };
    let n = wire::emit_tcp(&mut buf, &h.tuple, &seg, (b"", b"")).unwrap();
    buf.truncate(n);
    buf
}

fn fix_tcp_checksum(p: &mut [u8]) {
    // Recompute the TCP checksum over the (possibly edited) segment.
    p[36] = 0;
    p[37] = 0;
    let mut sum: u32 = 0;
    let tcp_len = p.len() - 20;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += w as u32;
        }
    };
    add(&p[12..20]);
    add(&[0, 6]);
    add(&(tcp_len as u16).to_be_bytes());
    add(&p[20..]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    p[36..38].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn truncated_packets_are_counted_never_panic() {
    let mut h = Harness::new(Config::default());
    h.stack.listen(h.tuple.remote, 8).unwrap();
    let p = valid_syn(&h);
    for len in 0..p.len() {
        h.stack.receive(h.now, &p[..len]);
    }
    let c = h.stack.counters();
    let dropped: u64 = c.dropped.iter().sum();
    assert_eq!(
        dropped,
        p.len() as u64,
        "every truncation is a counted drop"
    );
    assert_eq!(h.replies().len(), 0);
    // The whole packet still works afterwards.
    h.stack.receive(h.now, &p);
    assert_eq!(h.replies().len(), 1);
}

#[test]
fn bad_checksums_are_counted() {
    let mut h = Harness::new(Config::default());
    h.stack.listen(h.tuple.remote, 8).unwrap();
    let mut p = valid_syn(&h);
    p[30] ^= 0xff; // inside the TCP header: TCP checksum fails
    h.stack.receive(h.now, &p);
    let mut q = valid_syn(&h);
    q[8] ^= 0x01; // TTL: IPv4 header checksum fails
    h.stack.receive(h.now, &q);
    assert_eq!(h.stack.counters().dropped(DropReason::BadTcpChecksum), 1);
    assert_eq!(h.stack.counters().dropped(DropReason::BadIpChecksum), 1);
    assert!(h.replies().is_empty());
}

#[test]
fn trusted_packets_skip_only_the_tcp_checksum() {
    let mut h = Harness::new(Config::default());
    h.stack.listen(h.tuple.remote, 8).unwrap();
    // A checksum a local kernel left partial for the device: wrong as a full sum.
    let mut p = valid_syn(&h);
    p[36] ^= 0x5a;
    h.stack.receive(h.now, &p);
    assert_eq!(h.stack.counters().dropped(DropReason::BadTcpChecksum), 1);
    assert!(h.replies().is_empty());
    h.stack.receive_trusted(h.now, &p);
    assert_eq!(h.stack.counters().dropped(DropReason::BadTcpChecksum), 1);
    assert_eq!(h.replies().len(), 1, "the trusted SYN is answered");
    // The IPv4 header checksum is still verified.
    let mut q = valid_syn(&h);
    q[8] ^= 0x01;
    h.stack.receive_trusted(h.now, &q);
    assert_eq!(h.stack.counters().dropped(DropReason::BadIpChecksum), 1);
    assert!(h.replies().is_empty());
}

#[test]
fn bad_data_offsets_are_counted() {
    let mut h = Harness::new(Config::default());
    h.stack.listen(h.tuple.remote, 8).unwrap();
    for off in [0u8, 1, 4, 15] {
        let mut p = valid_syn(&h);
        p[32] = off << 4;
        fix_tcp_checksum(&mut p);
        h.stack.receive(h.now, &p);
    }
    assert_eq!(h.stack.counters().dropped(DropReason::MalformedTcp), 4);
    assert!(h.replies().is_empty());
}

#[test]
fn odd_option_lengths_are_tolerated() {
    // Option lists with length 0, 1 and overlong; each SYN must still get exactly one
    // SYN-ACK (options after a bad one are ignored, as Linux does).
    let bad_lists: [&[u8]; 5] = [
        &[2, 0, 0, 0],             // MSS with length 0
        &[2, 1, 0, 0],             // length 1
        &[8, 40, 0, 0],            // overlong timestamp
        &[3, 3, 200, 0],           // window scale > 14
        &[5, 6, 0, 0, 0, 0, 0, 0], // SACK block of bad length
    ];
    for (i, opts) in bad_lists.iter().enumerate() {
        let mut h = Harness::new(Config::default());
        h.stack.listen(h.tuple.remote, 8).unwrap();
        let mut p = valid_syn(&h);
        // Replace the option area (20 bytes after the base TCP header: MSS 4 + TS 12 + pad)
        let base = 40;
        let area = p.len() - base;
        for b in &mut p[base..] {
            *b = 0;
        }
        p[base..base + opts.len().min(area)].copy_from_slice(&opts[..opts.len().min(area)]);
        fix_tcp_checksum(&mut p);
        h.stack.receive(h.now, &p);
        let r = h.replies();
        assert_eq!(r.len(), 1, "list {i}: {r:?}");
        assert!(r[0].flags.syn && r[0].flags.ack);
        assert!(r[0].wscale.unwrap_or(0) <= 14);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut h = Harness::new(Config::default());
    h.stack.listen(h.tuple.remote, 8).unwrap();
    let base = valid_syn(&h);
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..200_000 {
        let mut p = if i % 2 == 0 {
            base.clone()
        } else {
            vec![0u8; (next() % 120) as usize]
        };
        let flips = 1 + next() % 6;
        for _ in 0..flips {
            if p.is_empty() {
                break;
            }
            let at = (next() as usize) % p.len();
            p[at] = next() as u8;
        }
        if i % 3 == 0 && p.len() > 40 {
            fix_tcp_checksum(&mut p);
        }
        h.stack.receive(h.now, &p);
        let _ = h.replies();
        if i % 1000 == 0 {
            h.advance(std::time::Duration::from_millis(100));
        }
    }
    assert_eq!(h.stack.counters().packets_in, 200_000);
}

#[test]
fn packets_for_other_addresses_are_dropped() {
    let mut h = Harness::new(Config::default());
    h.stack.listen(h.tuple.remote, 8).unwrap();
    let mut other = h.tuple;
    other.remote = SocketAddr::new("192.0.2.99".parse().unwrap(), 80);
    let mut buf = vec![0u8; 100];
    let n = wire::emit_tcp(&mut buf, &other, &h.seg("S", 1, 0), (b"", b"")).unwrap();
    h.stack.receive(h.now, &buf[..n]);
    assert_eq!(h.stack.counters().dropped(DropReason::NotOurAddress), 1);
    assert!(h.replies().is_empty());
}

fn icmp_echo(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Vec<u8> {
    // Build an echo request by reusing the reply builder with swapped roles, then flip
    // the type and fix the checksum by re-emitting.
    let req = wire::EchoRequest {
        src: dst,
        dst: src,
        ident: 7,
        seq_no: 3,
        data: payload,
    };
    let mut buf = vec![0u8; 200];
    let n = wire::emit_echo_reply(&mut buf, &req).unwrap();
    buf.truncate(n);
    let ip_len = if src.is_ipv4() { 20 } else { 40 };
    buf[ip_len] = if src.is_ipv4() { 8 } else { 128 };
    buf[ip_len + 2] = 0;
    buf[ip_len + 3] = 0;
    let sum = checksum_icmp(&buf, ip_len, src, dst);
    buf[ip_len + 2..ip_len + 4].copy_from_slice(&sum.to_be_bytes());
    buf
}

fn checksum_icmp(p: &[u8], ip_len: usize, src: IpAddr, dst: IpAddr) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += w as u32;
        }
    };
    if let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) {
        add(&s.octets());
        add(&d.octets());
        add(&((p.len() - ip_len) as u32).to_be_bytes());
        add(&[0, 0, 0, 58]);
    }
    add(&p[ip_len..]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn icmp_echo_is_answered_v4_and_v6() {
    let v6_host = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
    let v6_peer = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let mut s = Stack::new(Config::default(), [0; 16]);
    s.add_address(HOST_IP);
    s.add_address(v6_host);
    let now = Instant::from_millis(1);
    for (src, dst) in [(PEER_IP, HOST_IP), (v6_peer, v6_host)] {
        s.receive(now, &icmp_echo(src, dst, b"ping payload"));
        let mut buf = [0u8; 300];
        let n = s.poll_transmit(now, &mut buf).expect("echo reply");
        match wire::parse(&buf[..n], |ip| ip == src) {
            Err(e) => {
                // Replies are not requests: the parser reports them as ignored ICMP,
                // which proves the checksum verified.
                assert_eq!(e, DropReason::IcmpIgnored);
            }
            Ok(Incoming::Echo(_)) | Ok(Incoming::Tcp(_)) => panic!("a reply is not a request"),
        }
        assert_eq!(&buf[n - 12..n], b"ping payload");
    }
    assert_eq!(s.counters().echo_replies, 2);
}

#[test]
fn ipv6_tcp_handshake_and_data() {
    let v6_host = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
    let v6_peer = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let mut a = Stack::new(Config::default(), [1; 16]);
    a.add_address(v6_peer);
    let mut b = Stack::new(Config::default(), [2; 16]);
    b.add_address(v6_host);
    let now = Instant::from_millis(1);
    let l = b.listen(SocketAddr::new(v6_host, 443), 4).unwrap();
    let c = a.connect(now, SocketAddr::new(v6_host, 443), None).unwrap();
    let mut buf = vec![0u8; 2000];
    let mut shuttle = |a: &mut Stack, b: &mut Stack| {
        for _ in 0..10 {
            while let Some(n) = a.poll_transmit(now, &mut buf) {
                b.receive(now, &buf[..n]);
            }
            while let Some(n) = b.poll_transmit(now, &mut buf) {
                a.receive(now, &buf[..n]);
            }
        }
    };
    shuttle(&mut a, &mut b);
    let s = b.accept(l).unwrap().expect("accepted over IPv6");
    a.send(now, c, b"over v6").unwrap();
    shuttle(&mut a, &mut b);
    let mut r = [0u8; 16];
    assert_eq!(b.recv(now, s, &mut r), Ok(7));
    assert_eq!(&r[..7], b"over v6");
    let t: FourTuple = b.tuple(s).unwrap();
    assert!(t.local.is_ipv6());
}
