//! `Stack::receive_batch` is `Stack::receive` on each packet in order: the same client and
//! server run twice, the server fed one packet at a time in one run and whole batches in
//! the other, and everything the server sends, counts and leaves behind is compared. The
//! run covers batches larger than a prefetch group, SYNs that reopen TIME-WAIT tuples on
//! the server, data, and both closes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use fourtuple_stack::{Config, ConnHandle, ConnectOptions, Instant, Stack, TcpState};

const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
/// More connections at once than one prefetch group (32), and not a multiple of it.
const CONNS: u16 = 100;

/// What the server did, in order: every packet it sent (as bytes) and, at the end, its
/// counters and TIME_WAIT entries.
fn run(batched: bool) -> Vec<String> {
    let mut s = Stack::new(Config::default(), [1; 16]);
    s.add_address(SERVER);
    let mut c = Stack::new(Config::default(), [2; 16]);
    c.add_address(CLIENT);
    let l = s.listen(SocketAddr::new(SERVER, 80), 1024).unwrap();
    let mut now = Instant::from_millis(1_000);
    let mut log = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut rx = [0u8; 64];
    // Two rounds over the same client ports: the server closes first, so in the second
    // round every SYN finds its 4-tuple in the server's TIME-WAIT (and reopens it: the
    // client's ISN has moved on with the clock).
    for round in 0..2 {
        let mut clients: Vec<ConnHandle> = (0..CONNS)
            .map(|i| {
                let local = SocketAddr::new(CLIENT, 20_000 + i);
                c.connect_with(
                    now,
                    SocketAddr::new(SERVER, 80),
                    Some(local),
                    ConnectOptions::default(),
                )
                .unwrap()
            })
            .collect();
        let mut served = 0;
        for _ in 0..10_000 {
            let mut batch = Vec::new();
            while let Some(n) = c.poll_transmit(now, &mut buf) {
                batch.push(buf[..n].to_vec());
            }
            if batched {
                s.receive_batch(now, batch.iter().map(|p| p.as_slice()));
            } else {
                for p in &batch {
                    s.receive(now, p);
                }
            }
            while let Some(h) = s.accept(l).unwrap() {
                s.send(now, h, format!("reply {round}").as_bytes()).unwrap();
                s.close(now, h).unwrap();
                served += 1;
            }
            let mut out = 0;
            while let Some(n) = s.poll_transmit(now, &mut buf) {
                log.push(format!("{round} {now:?} {:02x?}", &buf[..n]));
                c.receive(now, &buf[..n]);
                out += 1;
            }
            clients.retain(|&h| match c.state(h) {
                Ok(TcpState::CloseWait) => {
                    while c.recv(now, h, &mut rx).is_ok_and(|n| n > 0) {}
                    c.close(now, h).unwrap();
                    false
                }
                _ => true,
            });
            if batch.is_empty() && out == 0 {
                if clients.is_empty() && served == CONNS && s.connection_count() == 0 {
                    break;
                }
                let next = [c.poll_timeout(), s.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min()
                    .expect("a stalled run has a timer");
                now = now.max(next);
                c.handle_timeout(now);
                s.handle_timeout(now);
            }
        }
        assert!(clients.is_empty(), "round {round}: clients left");
        assert_eq!(served, CONNS, "round {round}");
        // Well inside the server's TIME-WAIT (2 * MSL).
        now = now + Duration::from_millis(500);
    }
    log.push(format!("{:?}", s.counters().entries()));
    let mut tw: Vec<String> = s.time_wait().iter().map(|e| format!("{e:?}")).collect();
    tw.sort();
    log.extend(tw);
    log
}

#[test]
fn batches_are_received_exactly_as_one_packet_at_a_time() {
    let one = run(false);
    let batched = run(true);
    assert_eq!(one.len(), batched.len());
    for (i, (a, b)) in one.iter().zip(&batched).enumerate() {
        assert_eq!(a, b, "line {i}");
    }
    // The run did what it is for: the second round's SYNs reopened TIME-WAIT tuples.
    let counters = &one[one.len() - 1 - CONNS as usize];
    assert!(
        counters.contains(&format!("(\"time_wait_reopened\", {CONNS})")),
        "{counters}"
    );
}
