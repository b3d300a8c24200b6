//! The TIME_WAIT table at scale: insert, lookup (hit and miss), SYN-reopen and expiry with
//! 10k, 1M and 10M entries, and the bytes one entry really costs.
//!
//! This bench owns a steady-state model of a busy host: entries are inserted at a fixed
//! rate (one per `60 s / N`) with a 60 s lifetime (Linux's fixed TIME_WAIT), so the table
//! holds about N entries and each insert is matched by one expiry. Operations run in chunks
//! of [`CHUNK`]; only the operation named by the benchmark is timed, the rest of the chunk
//! (refilling, expiring) keeps the table at N and is not. Keys are IPv4 4-tuples computed
//! from the insertion number, lookups and reopens pick live entries at random.
//!
//! Bytes per entry come from a counting global allocator: the heap bytes allocated
//! while a fresh table is filled to N, divided by N (capacities included: the ring grows
//! in fixed chunks, the index by 1.5x, so the figure depends a little on where N falls
//! between two index sizes). The bench prints them with the table's own `memory_bytes()`
//! estimate.
//!
//! The `-prefetch` variants run the same operations in groups of
//! [`PREFETCH_GROUP`](fourtuple_stack::time_wait::PREFETCH_GROUP), each group's lines
//! first loaded together by `TimeWaitTable::prefetch`: what a driver holding a batch of
//! packets gets. Their time includes the prefetching.
//!
//! At 1M and 10M entries every random operation is a cache and TLB miss on 4 KiB pages.
//! To see what 2 MiB pages change, run the same bench with glibc's malloc asked to use
//! transparent huge pages (the stack itself makes no system calls, so this stays out of
//! it): `GLIBC_TUNABLES=glibc.malloc.hugetlb=1 cargo bench --bench time_wait` (glibc 2.35
//! or later, THP `enabled` = `madvise` or `always`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant as WallInstant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use fourtuple_stack::time_wait::{TimeWaitState, TwAction, TwSegment, PREFETCH_GROUP};
use fourtuple_stack::{FourTuple, Instant, SeqNum, TimeWaitTable, TwOverflow};

/// The global allocator, counting the bytes currently allocated.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
            ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// TIME_WAIT lifetime (Linux's fixed 60 s).
const LIFETIME: Duration = Duration::from_secs(60);
/// Operations per chunk; only the benchmarked operation of a chunk is timed.
const CHUNK: u64 = 1024;
/// Table sizes.
const SIZES: [u64; 3] = [10_000, 1_000_000, 10_000_000];

/// The 4-tuple of the `i`-th entry ever inserted: local 192.0.2.1:1024-65535, remote
/// 198.51.100.1-250 port 80 and up. Distinct for every `i` below 2^32.
fn tuple(i: u64) -> FourTuple {
    let local_port = 1024 + (i % 64512) as u16;
    let j = i / 64512;
    let remote_ip = Ipv4Addr::new(198, 51, 100, 1 + (j % 250) as u8);
    let remote_port = 80 + (j / 250) as u16;
    FourTuple::new(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), local_port),
        SocketAddr::new(IpAddr::V4(remote_ip), remote_port),
    )
}

/// The state the `i`-th entry closed with (timestamps in use).
fn state(i: u64) -> TimeWaitState {
    TimeWaitState {
        snd_nxt: SeqNum((i as u32).wrapping_mul(2_654_435_761)),
        rcv_nxt: SeqNum((i as u32).wrapping_mul(40_503)),
        ts_recent: Some(1_000),
    }
}

/// A tuple that is never inserted (remote 203.0.113.0/24).
fn absent(i: u64) -> FourTuple {
    let mut t = tuple(i);
    t.remote = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), t.remote.port());
    t
}

/// xorshift64*: cheap random indices, reproducible.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) * n) >> 32
    }
}

/// A table of about `n` entries in steady state.
struct Model {
    table: TimeWaitTable,
    n: u64,
    /// Entries inserted so far; entry `i` went in at `i * tick_us`.
    next: u64,
    tick_us: u64,
    rng: Rng,
}

impl Model {
    /// Builds and fills the table; returns it with the heap bytes the fill allocated.
    fn new(n: u64) -> (Model, usize) {
        let before = ALLOCATED.load(Ordering::Relaxed);
        let table = TimeWaitTable::with_seed(
            LIFETIME,
            (n * 2) as usize,
            TwOverflow::EvictOldest,
            true,
            [7; 16],
        );
        let mut m = Model {
            table,
            n,
            next: 0,
            tick_us: (LIFETIME.as_micros() as u64 / n).max(1),
            rng: Rng(0x9e37_79b9_7f4a_7c15),
        };
        for _ in 0..n {
            m.insert_next();
        }
        let bytes = ALLOCATED.load(Ordering::Relaxed) - before;
        (m, bytes)
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.next * self.tick_us)
    }

    fn insert_next(&mut self) {
        let i = self.next;
        let now = self.now();
        black_box(self.table.insert(now, tuple(i), state(i)));
        self.next += 1;
    }

    /// A random live entry: among the newest 99% (the oldest may be due).
    fn live(&mut self) -> u64 {
        let span = self.n - self.n / 100;
        self.next - 1 - self.rng.below(span)
    }

    /// Inserts a chunk of new entries and expires what is due; returns (insert time,
    /// expire time, entries expired).
    fn advance(&mut self) -> (Duration, Duration, usize) {
        let t = WallInstant::now();
        for _ in 0..CHUNK {
            self.insert_next();
        }
        let ins = t.elapsed();
        let now = self.now();
        let t = WallInstant::now();
        let expired = self.table.expire(now);
        (ins, t.elapsed(), expired)
    }

    /// Lookups of random live (`hit`) or absent keys, one after another or, with
    /// `prefetch`, in groups whose lines [`TimeWaitTable::prefetch`] loads first.
    fn lookups(&mut self, hit: bool, prefetch: bool) -> Duration {
        let keys: Vec<FourTuple> = (0..CHUNK)
            .map(|_| {
                let i = self.live();
                if hit {
                    tuple(i)
                } else {
                    absent(i)
                }
            })
            .collect();
        let group = if prefetch { PREFETCH_GROUP } else { keys.len() };
        let t = WallInstant::now();
        for g in keys.chunks(group) {
            if prefetch {
                self.table.prefetch(g);
            }
            for k in g {
                let found = self.table.get(k);
                debug_assert_eq!(found.is_some(), hit);
                black_box(found);
            }
        }
        t.elapsed()
    }

    /// SYNs that reopen live entries (SEG.SEQ above RCV.NXT, newer TSval); each reopened
    /// tuple then goes back into TIME_WAIT (its new incarnation closed), untimed.
    /// With `prefetch`, in groups whose lines [`TimeWaitTable::prefetch`] loads first.
    fn reopens(&mut self, prefetch: bool) -> Duration {
        let now = self.now();
        let picks: Vec<u64> = (0..CHUNK).map(|_| self.live()).collect();
        let segs: Vec<(FourTuple, TwSegment)> = picks
            .iter()
            .map(|&i| {
                let seg = TwSegment {
                    seq: state(i).rcv_nxt + 100_000u32,
                    syn: true,
                    tsval: Some(2_000),
                    ..TwSegment::default()
                };
                (tuple(i), seg)
            })
            .collect();
        let keys: Vec<FourTuple> = segs.iter().map(|(k, _)| *k).collect();
        let group = if prefetch { PREFETCH_GROUP } else { segs.len() };
        let t = WallInstant::now();
        let mut reopened = 0u64;
        for (g, ks) in segs.chunks(group).zip(keys.chunks(group)) {
            if prefetch {
                self.table.prefetch(ks);
            }
            for (k, seg) in g {
                if let Some(TwAction::Reopen { .. }) = self.table.handle_segment(now, k, seg) {
                    reopened += 1;
                }
            }
        }
        let dt = t.elapsed();
        black_box(reopened);
        for &i in &picks {
            black_box(self.table.insert(now, tuple(i), state(i)));
        }
        dt
    }
}

/// Runs chunks of `op` until `iters` operations were timed; returns their total time.
fn timed(m: &mut Model, iters: u64, op: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    while done < iters {
        match op {
            "insert" => {
                let (ins, _, _) = m.advance();
                total += ins;
                done += CHUNK;
            }
            "expire" => {
                let (_, exp, n) = m.advance();
                total += exp;
                done += n as u64;
            }
            "lookup-hit" | "lookup-miss" | "lookup-hit-prefetch" | "lookup-miss-prefetch" => {
                total += m.lookups(op.contains("hit"), op.ends_with("prefetch"));
                done += CHUNK;
                m.advance();
            }
            "syn-reopen" | "syn-reopen-prefetch" => {
                total += m.reopens(op.ends_with("prefetch"));
                done += CHUNK;
                m.advance();
            }
            other => unreachable!("{other}"),
        }
    }
    // Criterion divides by `iters`; scale to the operations actually timed.
    total.mul_f64(iters as f64 / done.max(1) as f64)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("time_wait");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    for n in SIZES {
        let (mut m, bytes) = Model::new(n);
        eprintln!(
            "time_wait/{n}: {:.1} bytes per entry allocated ({bytes} bytes for {n} IPv4 \
             entries; memory_bytes() says {:.1})",
            bytes as f64 / n as f64,
            m.table.memory_bytes() as f64 / n as f64
        );
        for op in [
            "insert",
            "lookup-hit",
            "lookup-miss",
            "lookup-hit-prefetch",
            "lookup-miss-prefetch",
            // Before the reopens: each reopened entry goes back in with a later expiry,
            // so they leave the table above N for a while.
            "expire",
            "syn-reopen",
            "syn-reopen-prefetch",
        ] {
            g.bench_function(BenchmarkId::new(op, n), |b| {
                b.iter_custom(|iters| timed(&mut m, iters, op))
            });
        }
        eprintln!(
            "time_wait/{n}: {} entries after the run, {:.1} bytes per entry (memory_bytes)",
            m.table.len(),
            m.table.memory_bytes() as f64 / m.table.len().max(1) as f64
        );
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
