//! Hundreds of short-lived threads: their heaps are handed over to later threads, the blocks they
//! leave behind are freed by other threads, and the arenas drain back to the OS.

mod common;
use common::{check, fill};
use std::alloc::{alloc, dealloc, Layout};
use std::sync::{Arc, Barrier};

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

const BATCH: usize = 4;
const ROUNDS: usize = 75; // 300 threads in all
const BLOCKS: usize = 12_000; // 12k x 80 bytes: about 1 MiB per thread

fn spawn_batch(work: impl Fn(usize) -> Vec<usize> + Send + Sync + Clone + 'static) -> Vec<usize> {
    let barrier = Arc::new(Barrier::new(BATCH));
    let handles: Vec<_> = (0..BATCH)
        .map(|i| {
            let barrier = barrier.clone();
            let work = work.clone();
            std::thread::spawn(move || {
                barrier.wait(); // all alive at once, so each holds its own heap
                work(i)
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

/// Runs without libtest's harness (`harness = false`): its main thread would allocate while the
/// counters are compared. A failed assertion panics, and the process exits non-zero.
fn main() {
    common::run_without_harness(
        "heaps_are_adopted_and_arenas_return_to_the_os",
        heaps_are_adopted_and_arenas_return_to_the_os,
    );
}

fn heaps_are_adopted_and_arenas_return_to_the_os() {
    let layout = Layout::from_size_align(80, 8).unwrap();
    let base = smallarena::stats();
    let mut peak_seen = 0;
    for round in 0..ROUNDS {
        // Each thread allocates ~1 MiB, frees half itself and leaves half behind; the main
        // thread frees what was left after the thread exited (remote frees into a heap that is
        // abandoned, to be reclaimed by whichever thread adopts it).
        let left = spawn_batch(move |_| {
            let mut kept = Vec::with_capacity(BLOCKS / 2);
            let mut mine = Vec::with_capacity(BLOCKS / 2);
            for i in 0..BLOCKS {
                // SAFETY: `layout` (80 bytes) has a non-zero size.
                let p = unsafe { alloc(layout) };
                assert!(!p.is_null());
                // SAFETY: `p` is a live, writable block of 80 bytes.
                unsafe { fill(p, 80) };
                if i % 2 == 0 {
                    kept.push(p as usize)
                } else {
                    mine.push(p as usize)
                }
            }
            for p in mine {
                // SAFETY: a live block allocated above with `layout`, freed once.
                unsafe {
                    check(p as *const u8, 80);
                    dealloc(p as *mut u8, layout);
                }
            }
            kept
        });
        for p in left {
            // SAFETY: a live block the exited thread allocated with `layout` and handed over.
            unsafe {
                check(p as *const u8, 80);
                dealloc(p as *mut u8, layout);
            }
        }
        if round % 25 == 0 {
            peak_seen = peak_seen.max(smallarena::stats().arenas_mapped);
        }
    }
    // One more batch that only allocates a little: it adopts the abandoned heaps, drains the
    // remote frees queued on them, and gives the empty pools back when it exits.
    let _ = spawn_batch(|_| {
        let v: Vec<u64> = (0..10).collect();
        vec![v.len()]
    });
    let end = smallarena::stats();
    println!("{end}");
    println!(
        "threads: {}, heaps created: {}, arenas peak: {}, arenas now: {}",
        ROUNDS * BATCH + BATCH,
        end.heaps,
        end.arenas_peak,
        end.arenas_mapped
    );
    // Heaps were handed over: far fewer heaps than threads.
    assert!(
        end.heaps <= base.heaps + 2 * BATCH,
        "heaps {} not reused",
        end.heaps
    );
    // Blocks left behind by dead threads were all reclaimed.
    assert_eq!(end.classes[4].blocks_in_use, base.classes[4].blocks_in_use);
    // The pools the dead threads filled were given back (each round owned ~240 pools of
    // 80-byte blocks; a leak would keep them), and wholly empty arenas went back to the OS.
    let pools = |s: &smallarena::Stats| s.classes.iter().map(|c| c.pools).sum::<usize>();
    assert!(
        pools(&end) <= pools(&base) + 40,
        "pools not returned: {} in use, {} before",
        pools(&end),
        pools(&base)
    );
    // The blocks each batch left behind (4 x 6,000 x 80 bytes, about 1.9 MB) are all live at
    // once until the main thread frees them: at least two more arenas at the peak.
    assert!(
        end.arenas_peak >= base.arenas_mapped + 2,
        "peak {}",
        end.arenas_peak
    );
    assert!(
        end.arenas_mapped < end.arenas_peak,
        "no arena returned: {} mapped now, peak {}",
        end.arenas_mapped,
        end.arenas_peak
    );
}
