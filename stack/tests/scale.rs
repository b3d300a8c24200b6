//! Scale: one stack holds 100k live connections, and 100k lifecycles leave exactly 100k
//! TIME_WAIT entries on the side that closed first.

mod common;

use std::time::Duration;

use common::*;
use fourtuple_stack::{Config, ConnHandle, Event, EventSet, TcpState};

fn pair() -> Pair {
    let mut p = Pair::new(
        Config {
            ephemeral_ports: (1024, 65535),
            ..Config::default()
        },
        Config::default(),
    );
    p.keep_log = false;
    p.latency = Duration::from_micros(50);
    p
}

#[test]
fn one_stack_holds_100k_live_connections() {
    let mut p = pair();
    for port in 0..4 {
        p.b.listen(sa(B_IP, 8000 + port), 200_000).unwrap();
    }
    let n = 100_000;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let now = p.now;
        clients.push(
            p.a.connect(now, sa(B_IP, 8000 + (i % 4) as u16), None)
                .unwrap(),
        );
        if i % 1000 == 999 {
            p.flush();
            p.deliver();
        }
    }
    assert!(
        p.run_until(Duration::from_secs(30), |p| p.b.connection_count() == n
            && p.b.state_counts()[TcpState::Established.index()].1 == n)
    );
    assert_eq!(p.a.connection_count(), n);
    assert_eq!(p.a.state_counts()[TcpState::Established.index()].1, n);
    for c in &clients {
        assert_eq!(p.a.state(*c), Ok(TcpState::Established));
    }
    // Tear down with RST: nothing left, no TIME_WAIT.
    let now = p.now;
    for c in clients {
        p.a.abort(now, c).unwrap();
    }
    assert!(p.run_until(Duration::from_secs(5), |p| p.b.connection_count() == 0));
    assert_eq!(p.a.connection_count(), 0);
    assert_eq!(p.a.time_wait().len() + p.b.time_wait().len(), 0);
}

/// 100k request/response lifecycles, `in_flight` at a time; the client closes first.
#[test]
fn lifecycles_100k_leave_time_wait_exactly_on_the_client() {
    let mut p = pair();
    let ports = 8u16;
    for port in 0..ports {
        p.b.listen(sa(B_IP, 9000 + port), 4096).unwrap();
    }
    let total = 100_000usize;
    let in_flight = 256usize;
    let mut started = 0usize;
    let mut done = 0usize;
    let mut open: std::collections::HashMap<ConnHandle, bool> = Default::default();
    let mut buf = [0u8; 64];
    let deadline = p.now + Duration::from_secs(3600);
    while done < total || p.a.connection_count() + p.b.connection_count() > 0 {
        assert!(p.now < deadline, "stalled at {done}");
        let now = p.now;
        while started < total && open.len() < in_flight {
            let c =
                p.a.connect(
                    now,
                    sa(B_IP, 9000 + (started % ports as usize) as u16),
                    None,
                )
                .unwrap();
            open.insert(c, false);
            started += 1;
        }
        while let Some(ev) = p.a.poll_event() {
            if let Event::Conn { handle, events } = ev {
                if events.contains(EventSet::ERROR) {
                    panic!("client connection failed: {:?}", p.a.error(handle));
                }
                if events.contains(EventSet::CONNECTED) {
                    p.a.send(now, handle, b"request-16-bytes").unwrap();
                }
                if events.contains(EventSet::READABLE) {
                    if let Ok(16) = p.a.recv(now, handle, &mut buf) {
                        assert_eq!(&buf[..16], b"respons-16-bytes");
                        p.a.close(now, handle).unwrap();
                        open.remove(&handle);
                        done += 1;
                    }
                }
            }
        }
        while let Some(ev) = p.b.poll_event() {
            match ev {
                Event::Incoming { listener } => while let Ok(Some(_)) = p.b.accept(listener) {},
                Event::Conn { handle, events } => {
                    if events.contains(EventSet::READABLE) {
                        match p.b.recv(now, handle, &mut buf) {
                            Ok(16) => {
                                assert_eq!(&buf[..16], b"request-16-bytes");
                                p.b.send(now, handle, b"respons-16-bytes").unwrap();
                            }
                            Ok(0) => p.b.close(now, handle).unwrap(),
                            _ => {}
                        }
                    }
                    if events.contains(EventSet::PEER_CLOSED) && p.b.recv_available(handle) == Ok(0)
                    {
                        let _ = p.b.close(now, handle);
                    }
                }
            }
        }
        if !p.step() && done < total {
            panic!(
                "idle at {done}: a {:?} b {:?} a_tw {} open {}",
                p.a.state_counts(),
                p.b.state_counts(),
                p.a.time_wait().len(),
                open.len()
            );
        }
    }
    assert!(
        p.run_until(Duration::from_secs(5), |p| p.a.connection_count() == 0
            && p.b.connection_count() == 0)
    );
    assert_eq!(
        p.a.time_wait().len(),
        total,
        "exactly one entry per lifecycle"
    );
    assert_eq!(p.b.time_wait().len(), 0);
    assert_eq!(p.b.counters().closed_orderly, total as u64);
}
