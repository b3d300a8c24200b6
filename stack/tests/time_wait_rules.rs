//! Every TIME_WAIT rule of DESIGN.md and every port-reuse policy, at the level of a whole
//! stack. Each test is named after the rule it checks.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::peer::{Harness, HOST_IP, PEER_IP};
use common::*;
use fourtuple_stack::{
    Config, ConnHandle, ConnectOptions, Error, FourTuple, InUse, ReusePolicy, SeqNum, TcpState,
    TwOverflow,
};

fn cfg(policy: ReusePolicy) -> Config {
    Config {
        reuse_policy: policy,
        ..Config::default()
    }
}

/// Runs one request/response lifecycle from `local` (port 0: ephemeral) to `remote`; the
/// client closes first when `client_first`. Returns the client's 4-tuple.
fn lifecycle(p: &mut Pair, local: u16, remote: SocketAddr, client_first: bool) -> FourTuple {
    let now = p.now;
    let local = (local != 0).then(|| sa(A_IP, local));
    let c = p.a.connect(now, remote, local).expect("connect");
    finish(p, c, client_first)
}

fn finish(p: &mut Pair, c: ConnHandle, client_first: bool) -> FourTuple {
    let tuple = p.a.tuple(c).unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| p.a.state(c)
        == Ok(TcpState::Established)));
    let now = p.now;
    p.a.send(now, c, b"0123456789abcdef").unwrap();
    // The server side: accept whatever is queued on any listener, echo, close as told.
    let server_tuple = tuple.reversed();
    assert!(p.run_until(Duration::from_secs(5), |p| {
        p.b.connection_count() > 0 && find_server(p, server_tuple).is_some()
    }));
    let s = find_server(p, server_tuple).unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| p.b.recv_available(s) == Ok(16)));
    let mut buf = [0u8; 16];
    let now = p.now;
    p.b.recv(now, s, &mut buf).unwrap();
    p.b.send(now, s, &buf).unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| p.a.recv_available(c) == Ok(16)));
    let now = p.now;
    p.a.recv(now, c, &mut buf).unwrap();
    if client_first {
        p.a.close(now, c).unwrap();
        assert!(p.run_until(Duration::from_secs(5), |p| p.b.state(s)
            == Ok(TcpState::CloseWait)));
        let now = p.now;
        p.b.close(now, s).unwrap();
    } else {
        p.b.close(now, s).unwrap();
        assert!(p.run_until(Duration::from_secs(5), |p| p.a.state(c)
            == Ok(TcpState::CloseWait)));
        let now = p.now;
        p.a.close(now, c).unwrap();
    }
    assert!(p.run_until(Duration::from_secs(5), |p| {
        p.a.connection_count() == 0 && p.b.connection_count() == 0
    }));
    tuple
}

/// Accepted server handles, kept across calls by accepting from every listener.
fn find_server(p: &mut Pair, tuple: FourTuple) -> Option<ConnHandle> {
    thread_local! {
        static LISTENERS: std::cell::RefCell<Vec<fourtuple_stack::ListenerHandle>> =
            const { std::cell::RefCell::new(Vec::new()) };
        static ACCEPTED: std::cell::RefCell<Vec<ConnHandle>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    while let Some(ev) = p.b.poll_event() {
        if let fourtuple_stack::Event::Incoming { listener } = ev {
            LISTENERS.with(|l| {
                if !l.borrow().contains(&listener) {
                    l.borrow_mut().push(listener)
                }
            });
        }
    }
    let ls: Vec<_> = LISTENERS.with(|l| l.borrow().clone());
    for l in ls {
        while let Ok(Some(h)) = p.b.accept(l) {
            ACCEPTED.with(|a| a.borrow_mut().push(h));
        }
    }
    ACCEPTED.with(|a| {
        a.borrow()
            .iter()
            .copied()
            .find(|h| p.b.tuple(*h) == Ok(tuple))
    })
}

fn server(policy: ReusePolicy, ports: &[u16]) -> Pair {
    let mut p = Pair::new(cfg(policy), Config::default());
    for port in ports {
        p.b.listen(sa(B_IP, *port), 64).unwrap();
    }
    p
}

#[test]
fn exact_tuple_policy_blocks_only_the_exact_tuple() {
    let mut p = server(ReusePolicy::ExactTuple, &[80, 81]);
    lifecycle(&mut p, 40000, sa(B_IP, 80), true);
    assert_eq!(p.a.time_wait().len(), 1);
    let now = p.now;
    assert_eq!(
        p.a.connect(now, sa(B_IP, 80), Some(sa(A_IP, 40000))),
        Err(Error::AddrInUse(InUse::TimeWait))
    );
    // The same local port to another remote port is allowed.
    lifecycle(&mut p, 40000, sa(B_IP, 81), true);
    assert_eq!(p.a.time_wait().len(), 2);
}

#[test]
fn local_port_policy_blocks_the_local_port_for_every_destination() {
    let mut p = server(ReusePolicy::LocalPort, &[80, 81]);
    lifecycle(&mut p, 40000, sa(B_IP, 80), true);
    let now = p.now;
    assert_eq!(
        p.a.connect(now, sa(B_IP, 80), Some(sa(A_IP, 40000))),
        Err(Error::AddrInUse(InUse::TimeWait))
    );
    assert_eq!(
        p.a.connect(now, sa(B_IP, 81), Some(sa(A_IP, 40000))),
        Err(Error::AddrInUse(InUse::LocalPortTimeWait))
    );
    // Another local port is fine.
    lifecycle(&mut p, 40001, sa(B_IP, 81), true);
}

#[test]
fn timestamp_reuse_takes_over_a_time_wait_tuple_after_one_second() {
    let mut p = server(ReusePolicy::TimestampReuse, &[80]);
    let t = lifecycle(&mut p, 40000, sa(B_IP, 80), true);
    let old = p.a.time_wait().get(&t).expect("TIME_WAIT entry");
    let now = p.now;
    assert_eq!(
        p.a.connect(now, sa(B_IP, 80), Some(sa(A_IP, 40000))),
        Err(Error::AddrInUse(InUse::TimeWait)),
        "not before tw_reuse_delay"
    );
    p.now = p.now + Duration::from_millis(1100);
    let now = p.now;
    let c =
        p.a.connect(now, sa(B_IP, 80), Some(sa(A_IP, 40000)))
            .unwrap();
    assert_eq!(p.a.counters().time_wait_reused, 1);
    assert!(p.a.time_wait().get(&t).is_none());
    finish(&mut p, c, true);
    // The new incarnation started above everything the old one sent.
    let new = p.a.time_wait().get(&t).expect("new TIME_WAIT entry");
    assert!(new.snd_nxt > old.snd_nxt + 65536u32);
}

#[test]
fn timestamp_reuse_needs_timestamps() {
    let mut p = Pair::new(
        Config {
            reuse_policy: ReusePolicy::TimestampReuse,
            timestamps: false,
            ..Config::default()
        },
        Config::default(),
    );
    p.b.listen(sa(B_IP, 80), 8).unwrap();
    lifecycle(&mut p, 40000, sa(B_IP, 80), true);
    p.now = p.now + Duration::from_secs(5);
    let now = p.now;
    assert_eq!(
        p.a.connect(now, sa(B_IP, 80), Some(sa(A_IP, 40000))),
        Err(Error::AddrInUse(InUse::TimeWait))
    );
}

#[test]
fn ephemeral_port_exhaustion_is_a_distinct_error_per_destination() {
    let mut p = Pair::new(
        Config {
            ephemeral_ports: (50000, 50003),
            ..Config::default()
        },
        Config::default(),
    );
    p.b.listen(sa(B_IP, 80), 64).unwrap();
    p.b.listen(sa(B_IP, 81), 64).unwrap();
    for _ in 0..4 {
        lifecycle(&mut p, 0, sa(B_IP, 80), true);
    }
    assert_eq!(p.a.time_wait().len(), 4);
    let now = p.now;
    assert_eq!(
        p.a.connect(now, sa(B_IP, 80), None),
        Err(Error::NoEphemeralPort)
    );
    assert_eq!(p.a.counters().connect_no_port, 1);
    // exact-tuple: the same four local ports still serve another destination.
    for _ in 0..4 {
        lifecycle(&mut p, 0, sa(B_IP, 81), true);
    }
    assert_eq!(p.a.time_wait().len(), 8);
}

#[test]
fn local_port_policy_exhausts_ephemeral_ports_for_every_destination() {
    let mut p = Pair::new(
        Config {
            ephemeral_ports: (50000, 50003),
            reuse_policy: ReusePolicy::LocalPort,
            ..Config::default()
        },
        Config::default(),
    );
    p.b.listen(sa(B_IP, 80), 64).unwrap();
    for _ in 0..4 {
        lifecycle(&mut p, 0, sa(B_IP, 80), true);
    }
    let now = p.now;
    assert_eq!(
        p.a.connect(now, sa(B_IP, 81), None),
        Err(Error::NoEphemeralPort)
    );
}

#[test]
fn ephemeral_ports_are_reusable_after_time_wait_expires() {
    let mut p = Pair::new(
        Config {
            ephemeral_ports: (50000, 50000),
            msl: Duration::from_secs(1),
            ..Config::default()
        },
        Config::default(),
    );
    p.b.listen(sa(B_IP, 80), 8).unwrap();
    lifecycle(&mut p, 0, sa(B_IP, 80), true);
    let now = p.now;
    assert_eq!(
        p.a.connect(now, sa(B_IP, 80), None),
        Err(Error::NoEphemeralPort)
    );
    assert!(p.run_until(Duration::from_secs(3), |p| p.a.time_wait().is_empty()));
    lifecycle(&mut p, 0, sa(B_IP, 80), true);
}

#[test]
fn listener_is_never_blocked_by_time_wait_entries_on_its_port() {
    let mut p = server(ReusePolicy::LocalPort, &[]);
    let l = p.b.listen(sa(B_IP, 80), 8).unwrap();
    lifecycle(&mut p, 40000, sa(B_IP, 80), false);
    assert_eq!(p.b.time_wait().len(), 1, "server closed first");
    let now = p.now;
    p.b.close_listener(now, l).unwrap();
    p.b.listen(sa(B_IP, 80), 8)
        .expect("listen again despite TIME_WAIT");
    lifecycle(&mut p, 40001, sa(B_IP, 80), false);
}

#[test]
fn syn_with_greater_seq_reopens_time_wait_on_the_server() {
    let mut p = server(ReusePolicy::ExactTuple, &[80]);
    let t = lifecycle(&mut p, 40000, sa(B_IP, 80), false);
    let entry =
        p.b.time_wait()
            .get(&t.reversed())
            .expect("server TIME_WAIT");
    let now = p.now;
    let c =
        p.a.connect_with(
            now,
            sa(B_IP, 80),
            Some(sa(A_IP, 40000)),
            ConnectOptions {
                isn: Some(entry.rcv_nxt + 100_000u32),
                timestamps: None,
            },
        )
        .unwrap();
    finish(&mut p, c, true);
    assert_eq!(p.b.counters().time_wait_reopened, 1);
    assert!(p.b.time_wait().get(&t.reversed()).is_none());
}

#[test]
fn syn_with_lower_seq_is_an_old_duplicate_answered_with_ack_and_entry_kept() {
    let mut p = server(ReusePolicy::ExactTuple, &[80]);
    let t = lifecycle(&mut p, 40000, sa(B_IP, 80), false);
    let entry =
        p.b.time_wait()
            .get(&t.reversed())
            .expect("server TIME_WAIT");
    let now = p.now;
    let c =
        p.a.connect_with(
            now,
            sa(B_IP, 80),
            Some(sa(A_IP, 40000)),
            ConnectOptions {
                isn: Some(entry.rcv_nxt - 1000u32),
                timestamps: Some(false),
            },
        )
        .unwrap();
    let log_start = p.log.len();
    p.run_until(Duration::from_millis(50), |_| false);
    assert_eq!(p.b.counters().time_wait_reopened, 0);
    assert!(p.b.time_wait().get(&t.reversed()).is_some(), "entry kept");
    // The server answered the SYN with the TIME_WAIT ACK (seq = its snd_nxt).
    let answered = p.log[log_start..].iter().any(|(to_b, bytes)| {
        !to_b && {
            let s = fourtuple_stack::wire::parse(bytes, |ip| ip == A_IP).unwrap();
            matches!(s, fourtuple_stack::wire::Incoming::Tcp(ref seg)
                if seg.flags.ack && !seg.flags.syn && seg.seq == entry.snd_nxt && seg.ack == entry.rcv_nxt)
        }
    });
    assert!(answered, "TIME_WAIT ACK sent");
    assert_ne!(p.a.state(c), Ok(TcpState::Established));
}

/// The host actively closes against the scripted peer and lands in TIME_WAIT.
fn host_in_time_wait(cfg: Config) -> (Harness, u32) {
    let mut h = Harness::new(cfg);
    let l = h.stack.listen(h.tuple.remote, 8).unwrap();
    h.send(h.seg("S", 1000, 0), &[]);
    let sa_ = h.one();
    let iss = sa_.seq;
    h.send(h.seg("A", 1001, iss + 1), &[]);
    let c = h.stack.accept(l).unwrap().unwrap();
    let now = h.now;
    h.stack.close(now, c).unwrap();
    assert!(h.one().flags.fin);
    h.send(h.seg("FA", 1001, iss + 2), &[]);
    assert_eq!(h.one().ack, 1002);
    assert_eq!(h.stack.time_wait().len(), 1);
    (h, iss)
}

fn host_tuple(h: &Harness) -> FourTuple {
    h.tuple.reversed()
}

#[test]
fn retransmitted_fin_in_time_wait_is_reacked_and_restarts_the_timer() {
    let (mut h, iss) = host_in_time_wait(Config::default());
    let first = h.stack.time_wait().get(&host_tuple(&h)).unwrap().expires;
    h.advance(Duration::from_secs(10));
    h.send(h.seg("FA", 1001, iss + 2), &[]);
    let r = h.one();
    assert!(r.flags.ack && !r.flags.fin);
    assert_eq!((r.seq, r.ack), (iss + 2, 1002));
    let again = h.stack.time_wait().get(&host_tuple(&h)).unwrap().expires;
    assert_eq!(again, h.now + Duration::from_secs(60));
    assert!(again > first);
}

#[test]
fn rst_in_time_wait_is_ignored_by_default_rfc1337() {
    let (mut h, iss) = host_in_time_wait(Config::default());
    h.send(h.seg("R", 1002, iss + 2), &[]);
    assert!(h.replies().is_empty());
    assert_eq!(h.stack.time_wait().len(), 1);
}

#[test]
fn rst_in_time_wait_ends_it_when_rfc1337_is_off() {
    let (mut h, iss) = host_in_time_wait(Config {
        rfc1337: false,
        ..Config::default()
    });
    h.send(h.seg("R", 1002, iss + 2), &[]);
    assert_eq!(h.stack.time_wait().len(), 0);
}

#[test]
fn time_wait_expires_after_two_msl() {
    let (mut h, _) = host_in_time_wait(Config {
        msl: Duration::from_secs(5),
        ..Config::default()
    });
    h.advance(Duration::from_millis(9_999));
    assert_eq!(h.stack.time_wait().len(), 1);
    h.advance(Duration::from_millis(2));
    assert_eq!(h.stack.time_wait().len(), 0);
}

#[test]
fn data_segment_in_time_wait_is_answered_with_ack() {
    let (mut h, iss) = host_in_time_wait(Config::default());
    h.send(h.seg("A", 1002, iss + 2), b"late");
    let r = h.one();
    assert_eq!((r.seq, r.ack), (iss + 2, 1002));
}

#[test]
fn time_wait_cap_evicts_the_oldest_entry_by_default() {
    let mut p = Pair::new(
        Config {
            max_time_wait: 2,
            ..Config::default()
        },
        Config::default(),
    );
    p.b.listen(sa(B_IP, 80), 8).unwrap();
    let first = lifecycle(&mut p, 40000, sa(B_IP, 80), true);
    lifecycle(&mut p, 40001, sa(B_IP, 80), true);
    lifecycle(&mut p, 40002, sa(B_IP, 80), true);
    assert_eq!(p.a.time_wait().len(), 2);
    assert_eq!(p.a.counters().time_wait_evicted, 1);
    assert!(p.a.time_wait().get(&first).is_none(), "the oldest went");
}

#[test]
fn time_wait_cap_drop_new_frees_the_closing_connection_without_entry() {
    let mut p = Pair::new(
        Config {
            max_time_wait: 2,
            tw_overflow: TwOverflow::DropNew,
            ..Config::default()
        },
        Config::default(),
    );
    p.b.listen(sa(B_IP, 80), 8).unwrap();
    let first = lifecycle(&mut p, 40000, sa(B_IP, 80), true);
    lifecycle(&mut p, 40001, sa(B_IP, 80), true);
    let third = lifecycle(&mut p, 40002, sa(B_IP, 80), true);
    assert_eq!(p.a.time_wait().len(), 2);
    assert_eq!(p.a.counters().time_wait_dropped_full, 1);
    assert!(p.a.time_wait().get(&first).is_some());
    assert!(p.a.time_wait().get(&third).is_none());
}

#[test]
fn time_wait_keeps_only_what_it_needs_and_frees_the_tcb() {
    let (h, iss) = host_in_time_wait(Config::default());
    assert_eq!(h.stack.connection_count(), 0);
    let e = h.stack.time_wait().get(&host_tuple(&h)).unwrap();
    assert_eq!(e.snd_nxt, SeqNum(iss + 2));
    assert_eq!(e.rcv_nxt, SeqNum(1002));
    assert_eq!(e.ts_recent, None, "the peer sent no timestamps");
    let _ = (HOST_IP, PEER_IP);
}
