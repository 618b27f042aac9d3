//! The idle-owner reclaim (`src/heap/reclaim.rs`): a live thread that handed all its blocks to
//! another thread, which freed them, and then blocks for good does not keep their pools: a third
//! thread's slow paths take them back (`Stats::pools_reclaimed`) and the purge delay gives them
//! to the OS. Checked with the allocator's counters, not with timing: the third thread works
//! until the counters move, for at most a number of rounds far beyond what the delay needs.
//!
//! The purge delay is read once per process, so each case runs this test binary again as a child
//! with `RECLAIM_CHILD=<case>` and `SMALLARENA_PURGE_DELAY_MS` set.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

mod common;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

/// The purge delay the children run with, in ms: short, so the rounds below are quick.
const DELAY_MS: u64 = 10;
/// Most rounds the third thread works (each sleeps two delays): about 30 s, far past the two or
/// three delays the reclaim and the purge need.
const MAX_ROUNDS: usize = 1500;

fn child_case() -> Option<String> {
    std::env::var("RECLAIM_CHILD").ok()
}

/// Runs the test `case` of this binary in a child with the purge delay set.
fn run_child(case: &str) -> String {
    run_child_with(case, &DELAY_MS.to_string())
}

/// Runs the test `case` of this binary in a child with `SMALLARENA_PURGE_DELAY_MS=delay`.
fn run_child_with(case: &str, delay: &str) -> String {
    common::run_case_in_child(
        case,
        "RECLAIM_CHILD",
        &[("SMALLARENA_PURGE_DELAY_MS", delay)],
    )
}

/// Pools of the burst's class that A may keep: the head of its class list (unlinked only by A's
/// next allocation of the class), and one that may hold a block A's thread allocated for itself
/// (thread start-up, its channel ends: sizes that vary by target; on i686 one falls in the 64-byte
/// class), which no reclaim may take.
const KEPT: usize = 2;

/// A block address that can cross threads.
struct Block(*mut u8);
// SAFETY: a block is plain memory handed from one thread to another, used by one at a time.
unsafe impl Send for Block {}

/// The scenario: thread A allocates `mib` MiB of `size`-byte blocks (writing them, so they are
/// resident), hands them all to thread B, which frees them all (remote frees into A's pools),
/// and A stays parked on a channel. Then this thread works on slow paths until the reclaimed
/// pools have gone back to the OS. Prints the counters; checks that nearly all of A's pools were
/// reclaimed and their memory left the process.
fn idle_owner(size: usize, mib: usize, pool_size: usize) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    let n = (mib << 20) / size;
    let before = smallarena::stats();
    let (to_b, from_a) = mpsc::channel::<Vec<Block>>();
    let wake = Arc::new(AtomicBool::new(false));
    let woken = wake.clone();
    let (ready_tx, ready_rx) = mpsc::channel::<smallarena::Stats>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let a = std::thread::spawn(move || {
        let blocks: Vec<Block> = (0..n)
            .map(|i| {
                // SAFETY: a valid non-zero layout; B frees every block once.
                let p = unsafe { GLOBAL.alloc(layout) };
                assert!(!p.is_null());
                // SAFETY: the block has `size` writable bytes.
                unsafe { p.write_bytes(i as u8, size) };
                Block(p)
            })
            .collect();
        let full = smallarena::stats();
        to_b.send(blocks).unwrap();
        ready_tx.send(full).unwrap();
        // Parked: no allocation, no slow path, until the test is over (`park` allocates nothing,
        // where a blocking channel receive may allocate its waiting context on first use).
        while !woken.load(Ordering::Acquire) {
            std::thread::park();
        }
    });
    let b = std::thread::spawn(move || {
        // Only once A is done with its channels (their first sends allocate in A's heap, whose
        // slow path would drain B's first frees itself).
        go_rx.recv().unwrap();
        let blocks = from_a.recv().unwrap();
        for Block(p) in blocks {
            // SAFETY: a live block of `layout`, freed once, by a thread that does not own it.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
    });
    let full = ready_rx.recv().unwrap();
    go_tx.send(()).unwrap();
    b.join().unwrap();
    let freed = smallarena::stats();
    let class = full
        .classes
        .iter()
        .position(|c| c.block_size >= size)
        .unwrap();
    // A's pools (B's frees wait on their remote lists; a slow path may have taken some since).
    let pools = full.classes[class].pools - before.classes[class].pools;
    assert!(pools >= (mib << 20) / pool_size, "{pools} pools");
    let mut rounds = 0;
    let mut after = smallarena::stats();
    let burst = mib << 20;
    // Until A's pools were reclaimed (all but the last, kept at the head of A's class list) and
    // most of their memory left the process (pools purged, wholly empty arenas unmapped).
    while rounds < MAX_ROUNDS
        && (after.pools_reclaimed - full.pools_reclaimed + KEPT < pools
            || full.resident_bytes.saturating_sub(after.resident_bytes) < burst * 3 / 4)
    {
        std::thread::sleep(std::time::Duration::from_millis(2 * DELAY_MS));
        common::reach_a_slow_path();
        after = smallarena::stats();
        rounds += 1;
    }
    common::check_invariants();
    println!(
        "{size} B x {n} ({mib} MiB): resident {} -> {} -> {} -> {} KiB, mapped {} -> {} KiB; \
         pools reclaimed {} of {pools}, purged {}, arenas unmapped {}; {rounds} rounds",
        before.resident_bytes >> 10,
        full.resident_bytes >> 10,
        freed.resident_bytes >> 10,
        after.resident_bytes >> 10,
        full.bytes_mapped >> 10,
        after.bytes_mapped >> 10,
        after.pools_reclaimed - full.pools_reclaimed,
        after.pools_purged - full.pools_purged,
        after.arenas_unmapped - full.arenas_unmapped,
    );
    let reclaimed = after.pools_reclaimed - full.pools_reclaimed;
    // All but the pools A keeps (see `KEPT`).
    assert!(
        reclaimed + KEPT >= pools,
        "{reclaimed} pools reclaimed of about {pools}"
    );
    assert!(full.resident_bytes >= before.resident_bytes + burst * 9 / 10);
    let dropped = full.resident_bytes.saturating_sub(after.resident_bytes);
    assert!(
        dropped >= burst * 3 / 4,
        "only {} KiB of {} KiB went back",
        dropped >> 10,
        burst >> 10
    );
    // The reclaimed pools are reused: a new burst of the same class by this thread.
    let again: Vec<*mut u8> = (0..n / 2)
        // SAFETY: a valid non-zero layout.
        .map(|_| unsafe { GLOBAL.alloc(layout) })
        .collect();
    common::check_invariants();
    for p in again {
        assert!(!p.is_null());
        // SAFETY: a live block of `layout`, freed once.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
    // A wakes up: its heap still works (its last pool of the class, now all free).
    wake.store(true, Ordering::Release);
    a.thread().unpark();
    a.join().unwrap();
    common::check_invariants();
}

/// Child: 64 MiB of 64-byte blocks.
#[test]
fn child_small() {
    if child_case().as_deref() == Some("child_small") {
        idle_owner(64, 64, 16 << 10);
    }
}

/// Child: 64 MiB of 2000-byte (medium) blocks.
#[test]
fn child_medium() {
    if child_case().as_deref() == Some("child_medium") {
        idle_owner(2000, 64, 256 << 10);
    }
}

#[test]
fn an_idle_owner_gives_back_small_pools_freed_by_others() {
    if child_case().is_none() {
        run_child("child_small");
    }
}

#[test]
fn an_idle_owner_gives_back_medium_pools_freed_by_others() {
    if child_case().is_none() {
        run_child("child_medium");
    }
}

/// Child, purging off: `collect()` takes the idle owner's wholly freed pools at once (no tick
/// runs without a purge delay, and no waiting for the owner to be quiescent).
#[test]
fn child_collect() {
    if child_case().as_deref() != Some("child_collect") {
        return;
    }
    let size = 64;
    let layout = Layout::from_size_align(size, 8).unwrap();
    let n = (8 << 20) / size;
    let before = smallarena::stats();
    let (to_main, from_a) = mpsc::channel::<(Vec<Block>, smallarena::Stats)>();
    let wake = Arc::new(AtomicBool::new(false));
    let woken = wake.clone();
    let a = std::thread::spawn(move || {
        let blocks: Vec<Block> = (0..n)
            // SAFETY: a valid non-zero layout; the main thread frees every block once.
            .map(|_| Block(unsafe { GLOBAL.alloc(layout) }))
            .collect();
        to_main.send((blocks, smallarena::stats())).unwrap();
        while !woken.load(Ordering::Acquire) {
            std::thread::park();
        }
    });
    let (blocks, full) = from_a.recv().unwrap();
    for Block(p) in blocks {
        assert!(!p.is_null());
        // SAFETY: a live block of `layout`, freed once, by a thread that does not own it.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
    let freed = smallarena::stats();
    smallarena::collect();
    common::check_invariants();
    let after = smallarena::stats();
    let pools = full.classes[3].pools - before.classes[3].pools;
    println!(
        "collect: pools reclaimed {} of {pools}; mapped {} -> {} KiB",
        after.pools_reclaimed - freed.pools_reclaimed,
        freed.bytes_mapped >> 10,
        after.bytes_mapped >> 10,
    );
    assert_eq!(
        freed.pools_reclaimed, full.pools_reclaimed,
        "reclaimed with purging off"
    );
    assert!(after.pools_reclaimed - freed.pools_reclaimed + KEPT >= pools);
    assert!(freed.bytes_mapped - after.bytes_mapped >= (8 << 20) * 3 / 4);
    wake.store(true, Ordering::Release);
    a.thread().unpark();
    a.join().unwrap();
    common::check_invariants();
}

#[test]
fn collect_takes_an_idle_owners_pools_at_once() {
    if child_case().is_none() {
        run_child_with("child_collect", "never");
    }
}
