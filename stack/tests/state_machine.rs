//! Table tests of the state machine: segment in, segments out, state after, on a simulated
//! clock, against a scripted peer.

mod common;

use std::time::Duration;

use common::peer::*;
use fourtuple_stack::wire::OutSegment;
use fourtuple_stack::{Config, ConnError, SegDrop, TcpState};

/// Listener on :80, a handshake from the peer with ISN 1000, no options. Returns the
/// host's ISS.
fn established(h: &mut Harness) -> (u32, fourtuple_stack::ConnHandle) {
    let l = h.stack.listen(h.tuple.remote, 8).unwrap();
    let mut syn = h.seg("S", 1000, 0);
    syn.mss = Some(1460);
    h.send(syn, &[]);
    let synack = h.one();
    assert!(synack.flags.syn && synack.flags.ack);
    assert_eq!(synack.ack, 1001);
    h.send(h.seg("A", 1001, synack.seq.wrapping_add(1)), &[]);
    assert!(h.replies().is_empty());
    let c = h.stack.accept(l).unwrap().expect("accepted");
    assert_eq!(h.stack.state(c), Ok(TcpState::Established));
    (synack.seq, c)
}

#[test]
fn passive_open_answers_syn_with_syn_ack_and_options() {
    let mut h = Harness::new(Config::default());
    let l = h.stack.listen(h.tuple.remote, 8).unwrap();
    let mut syn = h.seg("S", 5000, 0);
    syn.mss = Some(1400);
    syn.wscale = Some(7);
    syn.sack_permitted = true;
    syn.timestamp = Some((777, 0));
    h.send(syn, &[]);
    let r = h.one();
    assert!(r.flags.syn && r.flags.ack && !r.flags.rst);
    assert_eq!(r.ack, 5001);
    assert_eq!(r.mss, Some(1460));
    assert!(r.wscale.is_some());
    assert!(r.sack_permitted);
    assert_eq!(
        r.timestamp.map(|t| t.1),
        Some(777),
        "TSecr echoes the SYN's TSval"
    );
    assert_eq!(
        h.stack.accept(l).unwrap(),
        None,
        "not accepted before the final ACK"
    );
    assert_eq!(h.stack.state_counts()[TcpState::SynReceived.index()].1, 1);
}

#[test]
fn syn_ack_is_retransmitted_with_the_same_iss_after_rto() {
    let mut h = Harness::new(Config::default());
    h.stack.listen(h.tuple.remote, 8).unwrap();
    h.send(h.seg("S", 1000, 0), &[]);
    let first = h.one();
    h.advance(Duration::from_millis(1100));
    let again = h.one();
    assert!(again.flags.syn && again.flags.ack);
    assert_eq!(again.seq, first.seq);
    assert_eq!(h.stack.counters().retransmits, 1);
}

#[test]
fn retransmitted_syn_in_syn_received_gets_the_syn_ack_again() {
    let mut h = Harness::new(Config::default());
    h.stack.listen(h.tuple.remote, 8).unwrap();
    h.send(h.seg("S", 1000, 0), &[]);
    let first = h.one();
    h.send(h.seg("S", 1000, 0), &[]);
    let again = h.one();
    assert_eq!((again.seq, again.ack), (first.seq, first.ack));
}

#[test]
fn segment_to_closed_port_with_ack_gets_rst_with_seq_of_ack() {
    let mut h = Harness::new(Config::default());
    h.send(h.seg("A", 1, 4242), &[]);
    let r = h.one();
    assert!(r.flags.rst && !r.flags.ack);
    assert_eq!(r.seq, 4242);
}

#[test]
fn syn_to_closed_port_gets_rst_ack_covering_the_syn() {
    let mut h = Harness::new(Config::default());
    h.send(h.seg("S", 99, 0), &[]);
    let r = h.one();
    assert!(r.flags.rst && r.flags.ack);
    assert_eq!((r.seq, r.ack), (0, 100));
    assert_eq!(h.stack.counters().no_socket, 1);
}

#[test]
fn rst_to_closed_port_is_not_answered() {
    let mut h = Harness::new(Config::default());
    h.send(h.seg("R", 99, 0), &[]);
    assert!(h.replies().is_empty());
}

#[test]
fn in_order_data_is_delivered_and_acked_after_the_delayed_ack_timer() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    h.send(h.seg("PA", 1001, iss + 1), b"abcd");
    assert!(
        h.replies().is_empty(),
        "one segment waits for the delayed ACK"
    );
    h.advance(Duration::from_millis(41));
    let r = h.one();
    assert_eq!(r.ack, 1005);
    let mut buf = [0u8; 8];
    let now = h.now;
    assert_eq!(h.stack.recv(now, c, &mut buf), Ok(4));
    assert_eq!(&buf[..4], b"abcd");
}

#[test]
fn every_second_segment_is_acked_at_once() {
    let mut h = Harness::new(Config::default());
    let (iss, _c) = established(&mut h);
    h.send(h.seg("A", 1001, iss + 1), &[1; 100]);
    assert!(h.replies().is_empty());
    h.send(h.seg("A", 1101, iss + 1), &[2; 100]);
    assert_eq!(h.one().ack, 1201);
}

#[test]
fn out_of_order_data_gets_immediate_dup_ack_and_is_reassembled() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    h.send(h.seg("A", 1011, iss + 1), b"0123456789");
    let r = h.one();
    assert_eq!(r.ack, 1001, "duplicate ACK for the hole");
    h.send(h.seg("A", 1001, iss + 1), b"abcdefghij");
    let r = h.one();
    assert_eq!(r.ack, 1021, "hole filled: ACK at once");
    let mut buf = [0u8; 32];
    let now = h.now;
    assert_eq!(h.stack.recv(now, c, &mut buf), Ok(20));
    assert_eq!(&buf[..20], b"abcdefghij0123456789");
}

#[test]
fn out_of_window_segment_is_answered_with_ack_and_dropped() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    h.send(h.seg("A", 1001u32.wrapping_add(3_000_000), iss + 1), b"zz");
    let r = h.one();
    assert_eq!(r.ack, 1001);
    assert_eq!(h.stack.recv_available(c), Ok(0));
    assert_eq!(h.stack.counters().segments_dropped(SegDrop::OutOfWindow), 1);
}

#[test]
fn rst_with_exact_sequence_resets_the_connection() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    h.send(h.seg("R", 1001, iss + 1), &[]);
    assert!(h.replies().is_empty());
    assert_eq!(h.stack.state(c), Ok(TcpState::Closed));
    assert_eq!(h.stack.error(c), Ok(Some(ConnError::Reset)));
}

#[test]
fn in_window_rst_not_at_rcv_nxt_gets_challenge_ack_rfc5961() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    h.send(h.seg("R", 1500, iss + 1), &[]);
    let r = h.one();
    assert!(r.flags.ack && !r.flags.rst);
    assert_eq!(r.ack, 1001);
    assert_eq!(h.stack.state(c), Ok(TcpState::Established));
    assert_eq!(h.stack.counters().challenge_acks, 1);
}

#[test]
fn out_of_window_rst_is_dropped_silently() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    h.send(h.seg("R", 1001u32.wrapping_sub(100_000), iss + 1), &[]);
    assert!(h.replies().is_empty());
    assert_eq!(h.stack.state(c), Ok(TcpState::Established));
}

#[test]
fn syn_in_established_gets_challenge_ack_rfc5961() {
    let mut h = Harness::new(Config::default());
    let (_iss, c) = established(&mut h);
    h.send(h.seg("S", 1001, 0), &[]);
    let r = h.one();
    assert!(r.flags.ack && !r.flags.syn && !r.flags.rst);
    assert_eq!(h.stack.state(c), Ok(TcpState::Established));
}

#[test]
fn ack_for_unsent_data_is_answered_and_dropped() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    h.send(h.seg("A", 1001, iss + 1 + 5000), b"data");
    let r = h.one();
    assert_eq!(r.ack, 1001, "the data of an unacceptable ACK is not taken");
    assert_eq!(h.stack.recv_available(c), Ok(0));
    assert_eq!(h.stack.counters().segments_dropped(SegDrop::BadAck), 1);
}

#[test]
fn paws_drops_segment_with_older_timestamp() {
    let mut h = Harness::new(Config::default());
    let l = h.stack.listen(h.tuple.remote, 8).unwrap();
    let mut syn = h.seg("S", 1000, 0);
    syn.timestamp = Some((5000, 0));
    h.send(syn, &[]);
    let sa = h.one();
    let mut ack = h.seg("A", 1001, sa.seq + 1);
    ack.timestamp = Some((5001, sa.timestamp.unwrap().0));
    h.send(ack, &[]);
    let c = h.stack.accept(l).unwrap().unwrap();
    let mut old = h.seg("A", 1001, sa.seq + 1);
    old.timestamp = Some((4000, 0));
    h.send(old, b"stale");
    let r = h.one();
    assert_eq!(r.ack, 1001);
    assert_eq!(h.stack.recv_available(c), Ok(0));
    assert_eq!(h.stack.counters().segments_dropped(SegDrop::Paws), 1);
}

#[test]
fn fin_moves_established_to_close_wait_and_is_acked() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    h.send(h.seg("FA", 1001, iss + 1), &[]);
    let r = h.one();
    assert_eq!(r.ack, 1002);
    assert_eq!(h.stack.state(c), Ok(TcpState::CloseWait));
    let now = h.now;
    let mut b = [0u8; 1];
    assert_eq!(h.stack.recv(now, c, &mut b), Ok(0), "EOF");
    h.stack.close(now, c).unwrap();
    let fin = h.one();
    assert!(fin.flags.fin);
    assert_eq!(fin.seq, iss + 1);
    h.send(h.seg("A", 1002, iss + 2), &[]);
    assert_eq!(h.stack.connection_count(), 0);
    assert_eq!(
        h.stack.time_wait().len(),
        0,
        "passive closer holds no TIME_WAIT"
    );
}

#[test]
fn active_close_goes_fin_wait_1_fin_wait_2_time_wait() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    let now = h.now;
    h.stack.shutdown_write(now, c).unwrap();
    assert_eq!(h.stack.state(c), Ok(TcpState::FinWait1));
    let fin = h.one();
    assert!(fin.flags.fin);
    h.send(h.seg("A", 1001, iss + 2), &[]);
    assert_eq!(h.stack.state(c), Ok(TcpState::FinWait2));
    h.send(h.seg("FA", 1001, iss + 2), &[]);
    let r = h.one();
    assert_eq!(r.ack, 1002);
    assert_eq!(h.stack.state(c), Ok(TcpState::TimeWait));
    assert_eq!(h.stack.time_wait().len(), 1);
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    let now = h.now;
    h.stack.shutdown_write(now, c).unwrap();
    let _fin = h.one();
    // The peer's FIN crosses ours: it does not ACK our FIN.
    h.send(h.seg("FA", 1001, iss + 1), &[]);
    let r = h.one();
    assert_eq!(r.ack, 1002);
    assert_eq!(h.stack.state(c), Ok(TcpState::Closing));
    h.send(h.seg("A", 1002, iss + 2), &[]);
    assert_eq!(h.stack.state(c), Ok(TcpState::TimeWait));
    assert_eq!(h.stack.time_wait().len(), 1);
}

#[test]
fn data_is_retransmitted_after_rto_with_backoff() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    let now = h.now;
    h.stack.send(now, c, b"hello").unwrap();
    let d = h.one();
    assert_eq!(d.payload, b"hello");
    assert_eq!(d.seq, iss + 1);
    h.advance(Duration::from_millis(1001));
    let r1 = h.one();
    assert_eq!((r1.seq, r1.payload.as_slice()), (iss + 1, &b"hello"[..]));
    // Backoff: nothing after another 1 s, the second retransmission after 2 s.
    h.advance(Duration::from_millis(1000));
    assert!(h.replies().is_empty());
    h.advance(Duration::from_millis(1001));
    assert_eq!(h.one().payload, b"hello");
    assert_eq!(h.stack.counters().rto_timeouts, 2);
}

#[test]
fn three_dup_acks_trigger_fast_retransmit() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    let now = h.now;
    h.stack.set_nodelay(c, true).unwrap();
    h.stack.send(now, c, &vec![7u8; 1460 * 5]).unwrap();
    let segs = h.replies();
    assert_eq!(segs.len(), 5);
    for _ in 0..3 {
        h.send(h.seg("A", 1001, iss + 1), &[]);
    }
    let r = h.replies();
    assert!(
        r.iter().any(|s| s.seq == iss + 1 && !s.payload.is_empty()),
        "{r:?}"
    );
    assert_eq!(h.stack.counters().fast_retransmits, 1);
}

#[test]
fn zero_window_is_probed() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    // Peer closes its window.
    let mut z = h.seg("A", 1001, iss + 1);
    z.window = 0;
    h.send(z, &[]);
    let now = h.now;
    h.stack.send(now, c, b"blocked").unwrap();
    assert!(h.replies().is_empty(), "nothing fits a zero window");
    h.advance(Duration::from_millis(1100));
    let p = h.one();
    assert_eq!(p.payload.len(), 1, "a one-byte window probe");
    assert_eq!(h.stack.counters().window_probes, 1);
}

#[test]
fn keepalive_probes_then_times_out() {
    let cfg = Config {
        keepalive_idle: Duration::from_secs(10),
        keepalive_interval: Duration::from_secs(1),
        keepalive_probes: 3,
        ..Config::default()
    };
    let mut h = Harness::new(cfg);
    let (iss, c) = established(&mut h);
    let now = h.now;
    h.stack.set_keepalive(now, c, true).unwrap();
    h.advance(Duration::from_secs(10));
    let k = h.one();
    assert_eq!(k.seq, iss, "keepalive carries SND.NXT - 1");
    for _ in 0..2 {
        h.advance(Duration::from_secs(1));
        assert_eq!(h.replies().len(), 1);
    }
    h.advance(Duration::from_secs(1));
    let r = h.replies();
    assert!(r.iter().any(|s| s.flags.rst), "gives up with RST: {r:?}");
    assert_eq!(h.stack.error(c), Ok(Some(ConnError::TimedOut)));
}

#[test]
fn abort_sends_rst_and_frees() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    let now = h.now;
    h.stack.abort(now, c).unwrap();
    let r = h.one();
    assert!(r.flags.rst);
    assert_eq!(r.seq, iss + 1);
    assert_eq!(h.stack.connection_count(), 0);
    assert_eq!(h.stack.time_wait().len(), 0);
}

#[test]
fn close_with_unread_data_resets() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    h.send(h.seg("A", 1001, iss + 1), b"unread");
    let _ = h.replies();
    let now = h.now;
    h.stack.close(now, c).unwrap();
    assert!(h.replies().iter().any(|r| r.flags.rst));
}

#[test]
fn backlog_limits_embryonic_connections_without_cookies() {
    let mut h = Harness::new(Config {
        syn_cookies: false,
        ..Config::default()
    });
    h.stack.listen(h.tuple.remote, 2).unwrap();
    for port in 0..5u16 {
        h.tuple.local.set_port(41000 + port);
        h.send(h.seg("S", 1000, 0), &[]);
    }
    assert_eq!(h.replies().len(), 2);
    assert_eq!(h.stack.counters().syn_backlog_drops, 3);
}

#[test]
fn segment_len_of_options_is_honoured_in_out_segment() {
    // Sanity for the harness: an OutSegment with every option parses back.
    let mut h = Harness::new(Config::default());
    h.stack.listen(h.tuple.remote, 8).unwrap();
    let syn = OutSegment {
        mss: Some(536),
        wscale: Some(14),
        sack_permitted: true,
        timestamp: Some((1, 0)),
        ..h.seg("S", 1, 0)
    };
    h.send(syn, &[]);
    let r = h.one();
    assert!(r.flags.syn);
}

#[test]
fn unacceptable_bare_acks_are_answered_at_most_every_500ms() {
    let mut h = Harness::new(Config::default());
    let (iss, _c) = established(&mut h);
    // ACKs for data never sent: the first gets an ACK, the next ones within 500 ms do not
    // (an ACK war would otherwise follow, RFC 5961 §10).
    for _ in 0..5 {
        h.send(h.seg("A", 1001, iss + 9999), &[]);
    }
    assert_eq!(h.replies().len(), 1);
    h.advance(Duration::from_millis(501));
    h.send(h.seg("A", 1001, iss + 9999), &[]);
    assert_eq!(h.replies().len(), 1);
    // Unacceptable segments with data are always answered: the sender needs the ACK.
    for _ in 0..3 {
        h.send(h.seg("A", 900, iss + 1), b"old");
    }
    assert_eq!(h.replies().len(), 3);
}

#[test]
fn zero_window_probe_byte_counts_as_sent() {
    let mut h = Harness::new(Config::default());
    let (iss, c) = established(&mut h);
    let mut z = h.seg("A", 1001, iss + 1);
    z.window = 0;
    h.send(z, &[]);
    let now = h.now;
    h.stack.send(now, c, b"blocked").unwrap();
    h.advance(Duration::from_millis(1100));
    let p = h.one();
    assert_eq!((p.seq, p.payload.len()), (iss + 1, 1));
    // The peer took the byte and opened its window: the ACK is for data we sent, so it
    // is accepted and the rest follows.
    h.send(h.seg("A", 1001, iss + 2), &[]);
    let rest = h.replies();
    assert!(
        rest.iter()
            .any(|r| r.seq == iss + 2 && r.payload == b"locked"),
        "{rest:?}"
    );
    assert_eq!(h.stack.counters().segments_dropped(SegDrop::BadAck), 0);
}

#[test]
fn reading_a_full_window_sends_a_window_update_at_once() {
    let cfg = Config {
        recv_buffer: 4096,
        ..Config::default()
    };
    let mut h = Harness::new(cfg);
    let (iss, c) = established(&mut h);
    let data = [7u8; 4096];
    let mut seq = 1001u32;
    for chunk in data.chunks(1460) {
        h.send(h.seg("A", seq, iss + 1), chunk);
        seq += chunk.len() as u32;
    }
    // Delayed ACKs: let the last one out.
    h.advance(Duration::from_millis(500));
    let acks = h.replies();
    let last = acks.last().expect("the data was acknowledged");
    assert_eq!(last.ack, seq);
    assert_eq!(last.window, 0, "the buffer is full: {acks:?}");
    // The application reads everything: the window opens by the whole buffer, and the
    // update goes out now, not when the peer's persist timer would probe.
    let mut buf = [0u8; 8192];
    let now = h.now;
    assert_eq!(h.stack.recv(now, c, &mut buf), Ok(4096));
    let update = h.one();
    assert!(update.flags.ack && update.payload.is_empty());
    assert_eq!(update.ack, seq);
    assert_eq!(update.window, 4096);
}
