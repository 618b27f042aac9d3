//! Multi-threaded stress: random small sizes, a share of blocks freed on other threads, every
//! block pattern-checked on free, and afterwards every block accounted for in `stats()` and the
//! allocator's invariants checked (`smallarena::check_invariants`).

mod common;
use common::{check, fill, Rng};
use std::alloc::{alloc, dealloc, Layout};
use std::sync::mpsc;
use std::sync::Barrier;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

/// A live block crossing threads: its address and the layout it was allocated with.
struct Sent(usize, Layout);

const THREADS: usize = 4;
const OPS: usize = 60_000;

/// Runs without libtest's harness (`harness = false`): its main thread would allocate while the
/// counters are compared. A failed assertion panics, and the process exits non-zero.
fn main() {
    common::run_without_harness(
        "stress_cross_thread_frees_and_stats",
        stress_cross_thread_frees_and_stats,
    );
}

fn stress_cross_thread_frees_and_stats() {
    // A first round lets std set up its lazily created, never-freed state (thread bookkeeping,
    // channel machinery); the second round must then return every block it took.
    let _ = round(7);
    let before = smallarena::stats();
    let crossed = round(1);
    let after = smallarena::stats();
    // The main thread's heap, every heap the workers abandoned, the arenas.
    if let Err(v) = smallarena::check_invariants() {
        panic!("invariant broken: {v}");
    }
    println!("{after}");
    println!("stress: {THREADS} threads x {OPS} ops, {crossed} blocks freed on another thread");
    assert!(crossed > 10_000);
    for (b, a) in before.classes.iter().zip(after.classes.iter()) {
        assert_eq!(
            b.blocks_in_use, a.blocks_in_use,
            "class {} leaked or lost blocks: before {} after {}",
            b.block_size, b.blocks_in_use, a.blocks_in_use
        );
    }
    assert_eq!(before.bytes_requested, after.bytes_requested);
}

fn round(seed: u64) -> usize {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Vec<Sent>>()).unzip();
    let barrier = Barrier::new(THREADS);
    let crossed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (t, rx) in rxs.into_iter().enumerate() {
            let txs = txs.clone();
            let barrier = &barrier;
            let crossed = &crossed;
            handles.push(s.spawn(move || {
                let mut rng = Rng::with_seed(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1) ^ (seed << 32));
                let mut live: Vec<Sent> = Vec::with_capacity(4096);
                let mut outbox: Vec<Sent> = Vec::new();
                barrier.wait();
                for op in 0..OPS {
                    let r = rng.u64(..100);
                    if r < 55 || live.is_empty() {
                        let size = 1 + rng.u64(..512) as usize;
                        let l = Layout::from_size_align(size, 1 << rng.u64(..5)).unwrap();
                        // SAFETY: `l` has a non-zero size.
                        let p = unsafe { alloc(l) };
                        assert!(!p.is_null());
                        // SAFETY: `p` is a live, writable block of `size` bytes.
                        unsafe { fill(p, size) };
                        live.push(Sent(p as usize, l));
                    } else {
                        let i = rng.u64(..live.len() as u64) as usize;
                        let b = live.swap_remove(i);
                        if r < 75 {
                            outbox.push(b);
                        } else {
                            // SAFETY: `b` is a live block of ours, allocated with layout `b.1`
                            // and freed exactly once, here.
                            unsafe {
                                check(b.0 as *const u8, b.1.size());
                                dealloc(b.0 as *mut u8, b.1);
                            }
                        }
                    }
                    if outbox.len() >= 64 || op == OPS - 1 {
                        let to = (t + 1 + rng.u64(..THREADS as u64 - 1) as usize) % THREADS;
                        crossed.fetch_add(outbox.len(), std::sync::atomic::Ordering::Relaxed);
                        txs[to].send(std::mem::take(&mut outbox)).unwrap();
                    }
                    while let Ok(batch) = rx.try_recv() {
                        for b in batch {
                            // SAFETY: a live block sent by its allocating thread, allocated
                            // with layout `b.1`; ownership moved with the message.
                            unsafe {
                                check(b.0 as *const u8, b.1.size());
                                dealloc(b.0 as *mut u8, b.1);
                            }
                        }
                    }
                }
                for b in live.drain(..) {
                    // SAFETY: a live block of ours, allocated with layout `b.1`, freed once.
                    unsafe {
                        check(b.0 as *const u8, b.1.size());
                        dealloc(b.0 as *mut u8, b.1);
                    }
                }
                drop(txs);
                barrier.wait();
                for batch in rx.iter() {
                    for b in batch {
                        // SAFETY: a live block sent by its allocating thread, allocated with
                        // layout `b.1`; ownership moved with the message.
                        unsafe {
                            check(b.0 as *const u8, b.1.size());
                            dealloc(b.0 as *mut u8, b.1);
                        }
                    }
                }
            }));
        }
        drop(txs);
        // Join (pthread_join) so each thread's exit-time destructors have run before we count.
        for h in handles {
            h.join().unwrap();
        }
    });
    crossed.into_inner()
}
