//! Bulk transfers between two stacks under loss.

mod common;

use std::time::Duration;

use common::*;
use fourtuple_stack::TcpState;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(2654435761) >> 13) as u8
}

fn transfer(total: usize, loss: f64, seed: u64) {
    let mut p = Pair::default_pair();
    p.keep_log = false;
    p.latency = Duration::from_millis(5);
    let mut rng = Rng(seed);
    p.drop = Some(Box::new(move |_, _| rng.chance(loss)));
    let l = p.b.listen(sa(B_IP, 9), 16).unwrap();
    let c = p.a.connect(p.now, sa(B_IP, 9), None).unwrap();
    assert!(p.run_until(Duration::from_secs(30), |p| p
        .b
        .accept_queue_len(l)
        .unwrap()
        == 1));
    let s = p.b.accept(l).unwrap().unwrap();
    let mut sent = 0usize;
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    let mut chunk = vec![0u8; 65536];
    let deadline = p.now + Duration::from_secs(3600);
    while got < total {
        assert!(p.now < deadline, "transfer stalled at {got}/{total}");
        let now = p.now;
        if sent < total {
            let n = (total - sent).min(chunk.len());
            for (i, b) in chunk[..n].iter_mut().enumerate() {
                *b = pattern(sent + i);
            }
            if let Ok(k) = p.a.send(now, c, &chunk[..n]) {
                sent += k;
            }
        }
        while let Ok(n) = p.b.recv(now, s, &mut buf) {
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, pattern(got + i), "byte {} corrupted", got + i);
            }
            got += n;
        }
        if !p.step() {
            panic!("nothing pending at {got}/{total}");
        }
    }
    let now = p.now;
    p.a.close(now, c).unwrap();
    assert!(p.run_until(Duration::from_secs(600), |p| p.b.state(s)
        == Ok(TcpState::CloseWait)));
}

#[test]
fn bulk_1mib_lossless() {
    transfer(1 << 20, 0.0, 1);
}

#[test]
fn bulk_2mib_at_5_percent_loss() {
    transfer(2 << 20, 0.05, 7);
}
