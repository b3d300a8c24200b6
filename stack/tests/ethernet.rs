//! The Ethernet medium: ARP and IPv6 neighbour discovery between two stacks, then TCP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use fourtuple_stack::{Config, Instant, Medium, Stack, TcpState};

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];

fn eth_stack(mac: [u8; 6], ips: &[IpAddr], seed: u8) -> Stack {
    let mut s = Stack::new(
        Config {
            medium: Medium::Ethernet { mac },
            ..Config::default()
        },
        [seed; 16],
    );
    for ip in ips {
        s.add_address(*ip);
    }
    s
}

/// Shuttles frames between the two stacks on a shared segment (both see every frame)
/// until quiet, advancing the clock through timers.
fn run(a: &mut Stack, b: &mut Stack, now: &mut Instant, rounds: usize) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 2000];
    for _ in 0..rounds {
        let mut any = false;
        while let Some(n) = a.poll_transmit(*now, &mut buf) {
            seen.push(buf[..n].to_vec());
            b.receive(*now, &buf[..n]);
            any = true;
        }
        while let Some(n) = b.poll_transmit(*now, &mut buf) {
            seen.push(buf[..n].to_vec());
            a.receive(*now, &buf[..n]);
            any = true;
        }
        if !any {
            *now = *now + Duration::from_millis(10);
            a.handle_timeout(*now);
            b.handle_timeout(*now);
        }
    }
    seen
}

fn handshake_and_data(a_ip: IpAddr, b_ip: IpAddr) -> (Stack, Stack) {
    let mut a = eth_stack(MAC_A, &[a_ip], 1);
    let mut b = eth_stack(MAC_B, &[b_ip], 2);
    let mut now = Instant::from_millis(1);
    let l = b.listen(SocketAddr::new(b_ip, 80), 8).unwrap();
    let c = a.connect(now, SocketAddr::new(b_ip, 80), None).unwrap();
    let frames = run(&mut a, &mut b, &mut now, 20);
    assert_eq!(a.state(c), Ok(TcpState::Established));
    let s = b.accept(l).unwrap().expect("accepted");
    a.send(now, c, b"over ethernet").unwrap();
    run(&mut a, &mut b, &mut now, 20);
    let mut r = [0u8; 32];
    assert_eq!(b.recv(now, s, &mut r), Ok(13));
    assert_eq!(&r[..13], b"over ethernet");
    // Every frame was addressed properly: resolution traffic is broadcast/multicast, the
    // rest unicast between the two MACs.
    for f in &frames {
        let dst = &f[0..6];
        assert!(dst == MAC_A || dst == MAC_B || dst[0] & 1 == 1, "{f:?}");
    }
    (a, b)
}

#[test]
fn arp_resolves_and_tcp_runs_over_ethernet() {
    let (a, b) = handshake_and_data(
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
    );
    let ea = a.ethernet().unwrap().stats();
    let eb = b.ethernet().unwrap().stats();
    assert_eq!(ea.arp_requests_sent, 1);
    assert_eq!(eb.arp_replies_sent, 1);
    assert_eq!(eb.arp_requests_sent, 0, "b learned a from a's request");
}

#[test]
fn neighbour_discovery_resolves_and_tcp_runs_over_ethernet_ipv6() {
    let (a, b) = handshake_and_data(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
    );
    assert_eq!(a.ethernet().unwrap().stats().nd_solicitations_sent, 1);
    assert_eq!(b.ethernet().unwrap().stats().nd_advertisements_sent, 1);
}

#[test]
fn unresolvable_destination_gives_up_and_counts_drops() {
    let mut a = eth_stack(MAC_A, &[IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))], 1);
    let mut now = Instant::from_millis(1);
    let _c = a
        .connect(
            now,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)), 80),
            None,
        )
        .unwrap();
    let mut buf = vec![0u8; 2000];
    let mut arp = 0;
    for _ in 0..1000 {
        while let Some(n) = a.poll_transmit(now, &mut buf) {
            assert_eq!(&buf[12..14], &[0x08, 0x06], "only ARP goes out");
            arp += 1;
            let _ = n;
        }
        now = now + Duration::from_millis(50);
        a.handle_timeout(now);
    }
    assert!((3..=20).contains(&arp), "bounded ARP retries, got {arp}");
    assert!(a.ethernet().unwrap().stats().unresolved_drops > 0);
}

#[test]
fn frames_for_other_macs_and_garbage_are_counted() {
    let mut a = eth_stack(MAC_A, &[IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))], 1);
    let now = Instant::from_millis(1);
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&MAC_B);
    a.receive(now, &f);
    a.receive(now, &f[..5]);
    let mut g = vec![0u8; 60];
    g[0..6].copy_from_slice(&MAC_A);
    g[12] = 0x12;
    a.receive(now, &g);
    let st = a.ethernet().unwrap().stats();
    assert_eq!(st.frames_not_for_us, 1);
    assert_eq!(st.frames_malformed, 2);
}
