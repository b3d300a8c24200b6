//! Two stacks in memory: handshake, data, both close orders, TIME_WAIT placement.

mod common;

use std::time::Duration;

use common::*;
use fourtuple_stack::{Error, TcpState};

#[test]
fn handshake_data_and_client_close_leaves_time_wait_on_client() {
    let mut p = Pair::default_pair();
    let l = p.b.listen(sa(B_IP, 80), 16).unwrap();
    let c = p.a.connect(p.now, sa(B_IP, 80), None).unwrap();
    assert!(p.run_until(Duration::from_secs(1), |p| p.a.state(c)
        == Ok(TcpState::Established)));
    assert!(
        p.run_until(Duration::from_secs(1), |p| p.b.accept_queue_len(l).unwrap()
            == 1)
    );
    let s = p.b.accept(l).unwrap().unwrap();
    assert_eq!(p.b.state(s), Ok(TcpState::Established));

    let now = p.now;
    assert_eq!(p.a.send(now, c, b"hello world, 16b").unwrap(), 16);
    assert!(
        p.run_until(Duration::from_secs(1), |p| p.b.recv_available(s).unwrap()
            == 16)
    );
    let mut buf = [0u8; 64];
    let now = p.now;
    assert_eq!(p.b.recv(now, s, &mut buf).unwrap(), 16);
    assert_eq!(&buf[..16], b"hello world, 16b");
    assert_eq!(p.b.send(now, s, b"response 16 byte").unwrap(), 16);
    assert!(
        p.run_until(Duration::from_secs(1), |p| p.a.recv_available(c).unwrap()
            == 16)
    );
    let now = p.now;
    assert_eq!(p.a.recv(now, c, &mut buf).unwrap(), 16);
    assert_eq!(&buf[..16], b"response 16 byte");

    p.a.close(now, c).unwrap();
    assert!(p.run_until(Duration::from_secs(1), |p| p.b.state(s)
        == Ok(TcpState::CloseWait)));
    let now = p.now;
    assert_eq!(p.b.recv(now, s, &mut buf), Ok(0));
    p.b.close(now, s).unwrap();
    assert!(
        p.run_until(Duration::from_secs(1), |p| p.b.connection_count() == 0
            && p.a.connection_count() == 0)
    );
    assert_eq!(
        p.a.time_wait().len(),
        1,
        "the side that closed first holds TIME_WAIT"
    );
    assert_eq!(p.b.time_wait().len(), 0);
    assert_eq!(p.b.counters().closed_orderly, 1);
    // After 2*MSL (60 s by default) the entry expires.
    assert!(p.run_until(Duration::from_secs(61), |p| p.a.time_wait().is_empty()));
}

#[test]
fn server_close_first_leaves_time_wait_on_server() {
    let mut p = Pair::default_pair();
    let l = p.b.listen(sa(B_IP, 80), 16).unwrap();
    let c = p.a.connect(p.now, sa(B_IP, 80), None).unwrap();
    assert!(
        p.run_until(Duration::from_secs(1), |p| p.b.accept_queue_len(l).unwrap()
            == 1)
    );
    let s = p.b.accept(l).unwrap().unwrap();
    let now = p.now;
    p.b.close(now, s).unwrap();
    assert!(p.run_until(Duration::from_secs(1), |p| p.a.state(c)
        == Ok(TcpState::CloseWait)));
    let now = p.now;
    p.a.close(now, c).unwrap();
    assert!(
        p.run_until(Duration::from_secs(1), |p| p.a.connection_count() == 0
            && p.b.connection_count() == 0)
    );
    assert_eq!(p.b.time_wait().len(), 1);
    assert_eq!(p.a.time_wait().len(), 0);
}

#[test]
fn connect_to_closed_port_is_refused() {
    let mut p = Pair::default_pair();
    let c = p.a.connect(p.now, sa(B_IP, 81), None).unwrap();
    assert!(p.run_until(Duration::from_secs(1), |p| p.a.state(c)
        == Ok(TcpState::Closed)));
    let now = p.now;
    let mut buf = [0u8; 4];
    assert_eq!(
        p.a.send(now, c, b"x"),
        Err(Error::Connection(fourtuple_stack::ConnError::Refused))
    );
    let _ = p.a.recv(now, c, &mut buf);
    assert_eq!(p.a.counters().refused, 1);
}

#[test]
fn releasing_a_reset_connection_counts_the_reset_once() {
    let mut p = Pair::default_pair();
    let l = p.b.listen(sa(B_IP, 80), 16).unwrap();
    let c = p.a.connect(p.now, sa(B_IP, 80), None).unwrap();
    assert!(
        p.run_until(Duration::from_secs(1), |p| p.b.accept_queue_len(l).unwrap()
            == 1)
    );
    let s = p.b.accept(l).unwrap().unwrap();
    let now = p.now;
    p.a.abort(now, c).unwrap();
    assert!(p.run_until(Duration::from_secs(1), |p| p.b.state(s)
        == Ok(TcpState::Closed)));
    assert_eq!(p.b.counters().resets_received, 1);
    let now = p.now;
    p.b.close(now, s).unwrap();
    assert_eq!(p.b.counters().resets_received, 1);
    assert_eq!(p.a.counters().aborted, 1);
    assert_eq!(p.b.state(s), Err(Error::InvalidHandle), "released");
}

#[test]
fn send_and_shutdown_before_the_handshake_completes_deliver_data_then_eof() {
    let mut p = Pair::default_pair();
    let l = p.b.listen(sa(B_IP, 80), 16).unwrap();
    let now = p.now;
    let c = p.a.connect(now, sa(B_IP, 80), None).unwrap();
    p.a.send(now, c, b"early").unwrap();
    p.a.shutdown_write(now, c).unwrap();
    assert_eq!(
        p.a.state(c),
        Ok(TcpState::SynSent),
        "the FIN waits for the handshake"
    );
    assert!(
        p.run_until(Duration::from_secs(1), |p| p.b.accept_queue_len(l).unwrap()
            == 1)
    );
    let s = p.b.accept(l).unwrap().unwrap();
    assert!(p.run_until(Duration::from_secs(1), |p| p.b.state(s)
        == Ok(TcpState::CloseWait)));
    let mut buf = [0u8; 16];
    let now = p.now;
    assert_eq!(p.b.recv(now, s, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"early");
    assert_eq!(p.b.recv(now, s, &mut buf), Ok(0));
}

#[test]
fn close_in_syn_sent_deletes_the_connection_and_counts_it() {
    let mut p = Pair::default_pair();
    let now = p.now;
    let c = p.a.connect(now, sa(B_IP, 80), None).unwrap();
    p.a.close(now, c).unwrap();
    assert_eq!(p.a.connection_count(), 0);
    assert_eq!(p.a.counters().aborted, 1);
    assert_eq!(p.a.state(c), Err(Error::InvalidHandle));
}
