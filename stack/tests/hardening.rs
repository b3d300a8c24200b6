//! Hostile input: SYN floods (SYN cookies), blind injection, bounded memory.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::peer::{flags, Harness};
use common::*;
use fourtuple_stack::wire::{self, OutSegment};
use fourtuple_stack::{Config, FourTuple, SeqNum, TcpState};

fn syn(h: &Harness, seq: u32) -> OutSegment {
    OutSegment {
        mss: Some(1460),
        wscale: Some(7),
        sack_permitted: true,
        timestamp: Some((100, 0)),
        ..h.seg("S", seq, 0)
    }
}

#[test]
fn full_syn_queue_answers_with_cookies_and_a_cookie_ack_connects() {
    let mut h = Harness::new(Config::default());
    let l = h.stack.listen(h.tuple.remote, 2).unwrap();
    let mut last = None;
    for port in 0..5u16 {
        h.tuple.local.set_port(41000 + port);
        let s = syn(&h, 7000 + port as u32);
        h.send(s, &[]);
        last = Some(h.one());
    }
    assert_eq!(h.stack.counters().syn_cookies_sent, 3);
    assert_eq!(h.stack.connection_count(), 2, "cookies keep no state");
    let sa = last.unwrap();
    assert!(sa.flags.syn && sa.flags.ack);
    assert_eq!(sa.ack, 7005);
    assert!(
        sa.wscale.is_some() && sa.sack_permitted,
        "options ride in the timestamp"
    );
    // The peer completes the handshake of the last (cookie) SYN-ACK, with data.
    let mut ack = h.seg("A", 7005, sa.seq.wrapping_add(1));
    ack.timestamp = Some((101, sa.timestamp.unwrap().0));
    h.send(ack, b"hello");
    assert_eq!(h.stack.counters().syn_cookies_valid, 1);
    let mut accepted = Vec::new();
    while let Ok(Some(c)) = h.stack.accept(l) {
        accepted.push(c);
    }
    assert_eq!(accepted.len(), 1);
    let c = accepted[0];
    assert_eq!(h.stack.state(c), Ok(TcpState::Established));
    let now = h.now;
    let mut buf = [0u8; 8];
    assert_eq!(h.stack.recv(now, c, &mut buf), Ok(5));
    // Window scale came back from the cookie: a big send is not capped at 64 KiB.
    h.stack.set_nodelay(c, true).unwrap();
    h.stack.send(now, c, &[1u8; 4000]).unwrap();
    let out = h.replies();
    assert!(out.iter().any(|r| r.payload.len() > 1000), "{out:?}");
}

#[test]
fn ack_with_a_forged_cookie_is_reset() {
    let mut h = Harness::new(Config::default());
    h.stack.listen(h.tuple.remote, 1).unwrap();
    h.tuple.local.set_port(41000);
    h.send(syn(&h, 1), &[]);
    h.tuple.local.set_port(41001);
    h.send(syn(&h, 1), &[]);
    let _ = h.replies();
    assert_eq!(h.stack.counters().syn_cookies_sent, 1);
    h.tuple.local.set_port(41002);
    h.send(h.seg("A", 2, 0xdead_beef), &[]);
    let r = h.one();
    assert!(r.flags.rst);
    assert_eq!(h.stack.counters().syn_cookies_invalid, 1);
    assert_eq!(h.stack.connection_count(), 1);
}

#[test]
fn syn_flood_of_100k_spoofed_sources_does_not_stop_a_real_transfer() {
    let mut p = Pair::default_pair();
    p.keep_log = false;
    p.latency = Duration::from_micros(100);
    // Replies to spoofed sources go nowhere: drop everything b sends to 203.0.113.0/24.
    p.drop = Some(Box::new(|to_b, bytes| {
        !to_b && bytes.len() > 19 && bytes[16] == 203
    }));
    let l = p.b.listen(sa(B_IP, 80), 64).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut buf = vec![0u8; 200];
    let flood = |p: &mut Pair, rnd: &mut dyn FnMut() -> u64, buf: &mut [u8], n: usize| {
        for _ in 0..n {
            let r = rnd();
            let src = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, (r & 0xff) as u8)),
                1024 + ((r >> 8) % 60000) as u16,
            );
            let t = FourTuple::new(src, sa(B_IP, 80));
            let seg = OutSegment {
                seq: SeqNum((r >> 24) as u32),
                flags: flags("S"),
                window: 65535,
                mss: Some(1460),
                ..OutSegment::default()
            };
            let n = wire::emit_tcp(buf, &t, &seg, (b"", b"")).unwrap();
            p.b.receive(p.now, &buf[..n]);
        }
    };
    flood(&mut p, &mut rnd, &mut buf, 50_000);
    let mut injected = 50_000;
    let c = p.a.connect(p.now, sa(B_IP, 80), None).unwrap();
    let mut server = None;
    let total = 1 << 20;
    let (mut sent, mut got) = (0usize, 0usize);
    let mut rbuf = vec![0u8; 65536];
    let mut rounds = 0;
    while got < total {
        rounds += 1;
        assert!(rounds < 2_000_000, "stalled at {got}");
        if rounds % 10 == 0 && injected < 100_000 {
            flood(&mut p, &mut rnd, &mut buf, 5000);
            injected += 5000;
        }
        let now = p.now;
        if server.is_none() {
            server = p.b.accept(l).unwrap();
        }
        if p.a.state(c) == Ok(TcpState::Established) && sent < total {
            let chunk: Vec<u8> = (sent..(sent + 65536).min(total)).map(|i| i as u8).collect();
            if let Ok(n) = p.a.send(now, c, &chunk) {
                sent += n;
            }
        }
        if let Some(s) = server {
            while let Ok(n) = p.b.recv(now, s, &mut rbuf) {
                if n == 0 {
                    break;
                }
                for (i, b) in rbuf[..n].iter().enumerate() {
                    assert_eq!(*b, (got + i) as u8);
                }
                got += n;
            }
        }
        assert!(p.step());
        // Memory stays bounded by the backlog: embryonic state never exceeds it.
        assert!(p.b.connection_count() <= 64 + 1);
    }
    assert_eq!(injected, 100_000, "the flood went on during the transfer");
    // Every spoofed SYN beyond the 64 embryonic slots got a cookie, none was dropped.
    assert!(p.b.counters().syn_cookies_sent >= injected as u64 - 64 - 100);
    eprintln!(
        "flood: {injected} spoofed SYNs during a 1 MiB transfer; cookies sent {}",
        p.b.counters().syn_cookies_sent
    );
    assert!(p.b.counters().syn_backlog_drops == 0);
}

#[test]
fn blind_rst_syn_and_data_injection_off_window_changes_nothing() {
    let mut p = Pair::default_pair();
    p.keep_log = false;
    let l = p.b.listen(sa(B_IP, 80), 8).unwrap();
    let c = p.a.connect(p.now, sa(B_IP, 80), None).unwrap();
    assert!(p.run_until(Duration::from_secs(1), |p| p.b.accept_queue_len(l) == Ok(1)));
    let s = p.b.accept(l).unwrap().unwrap();
    let client = p.a.tuple(c).unwrap();
    let mut buf = vec![0u8; 200];
    let mut sent = 0usize;
    let mut got = Vec::new();
    let mut rbuf = vec![0u8; 4096];
    for round in 0..400u32 {
        let now = p.now;
        // Forged segments "from the client" with sequence numbers far from the window.
        let off = SeqNum(round.wrapping_mul(2_654_435_761));
        for (f, payload) in [
            ("R", &b""[..]),
            ("S", &b""[..]),
            ("A", &b"EVIL"[..]),
            ("RA", &b""[..]),
        ] {
            let seg = OutSegment {
                seq: off,
                ack: off + 7u32,
                flags: flags(f),
                window: 1000,
                ..OutSegment::default()
            };
            let n = wire::emit_tcp(&mut buf, &client, &seg, (payload, b"")).unwrap();
            p.b.receive(now, &buf[..n]);
        }
        if sent < 100_000 {
            let data: Vec<u8> = (sent..sent + 500).map(|i| (i % 251) as u8).collect();
            sent += p.a.send(now, c, &data).unwrap_or(0);
        }
        p.step();
        p.step();
        while let Ok(n) = p.b.recv(p.now, s, &mut rbuf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&rbuf[..n]);
        }
    }
    assert!(p.run_until(Duration::from_secs(10), |p| {
        while let Ok(n) = p.b.recv(p.now, s, &mut rbuf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&rbuf[..n]);
        }
        got.len() == sent
    }));
    assert!(
        got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
        "stream intact"
    );
    assert_eq!(p.b.state(s), Ok(TcpState::Established));
    assert_eq!(p.a.state(c), Ok(TcpState::Established));
}
