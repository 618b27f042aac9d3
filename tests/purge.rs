//! The purge delay (`SMALLARENA_PURGE_DELAY_MS`): free pools go back to the OS without
//! `collect()` once they have been free for the delay and a slow path runs; a steady loop under a
//! long delay purges nothing. No timed assertion: the delays are 0, far shorter than a sleep the
//! test makes, or far longer than the test runs.
//!
//! The variable is read once per process, so each case runs this test binary again as a child
//! with `PURGE_CHILD=<case>` and the variable set.

use std::alloc::{GlobalAlloc, Layout};

mod common;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

fn child_case() -> Option<String> {
    std::env::var("PURGE_CHILD").ok()
}

/// Runs the test `case` of this binary in a child with `SMALLARENA_PURGE_DELAY_MS=delay`.
fn run_child(case: &str, delay: &str) -> String {
    common::run_case_in_child(case, "PURGE_CHILD", &[("SMALLARENA_PURGE_DELAY_MS", delay)])
}

/// Blocks of 400 bytes (class 24, 40 to a pool).
const SIZE: usize = 400;
/// 40 MiB of them, about 40 arenas.
const BURST: usize = 100_000;
/// One block in this many stays alive: at least one in every arena, so no arena is wholly empty
/// and the memory can only go back pool by pool.
const KEEP_EVERY: usize = 2000;

fn layout() -> Layout {
    Layout::from_size_align(SIZE, 8).unwrap()
}

/// Allocates a burst of `n` blocks of `l`, writes it (so its pages are resident), frees all but
/// one in `keep_every`. Returns the survivors and the statistics when the burst was whole.
fn burst_and_free(l: Layout, n: usize, keep_every: usize) -> (Vec<*mut u8>, smallarena::Stats) {
    let mut blocks = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: a valid non-zero layout; every block is freed once, here or by the caller.
        let p = unsafe { GLOBAL.alloc(l) };
        assert!(!p.is_null());
        // SAFETY: the block has `l.size()` writable bytes.
        unsafe { p.write_bytes(0xA5 ^ i as u8, l.size()) };
        blocks.push(p);
    }
    let full = smallarena::stats();
    let mut kept = Vec::new();
    for (i, p) in blocks.into_iter().enumerate() {
        if i % keep_every == 0 {
            kept.push(p);
        } else {
            // SAFETY: a live block of `l`, freed once.
            unsafe { GLOBAL.dealloc(p, l) };
        }
    }
    (kept, full)
}

fn free_all(l: Layout, kept: Vec<*mut u8>) {
    for p in kept {
        // SAFETY: a live block of `l`, freed once.
        unsafe { GLOBAL.dealloc(p, l) };
    }
}

/// The burst-then-quiet check, for small and medium blocks alike: a burst of `n` blocks of `l`
/// (all but one in `keep_every` freed, so every arena keeps a survivor and memory can only go
/// back pool by pool), a quiet phase longer than the delay, a slow path; the free pools
/// (`pool_size` bytes each) must have gone back without `collect()`, and come back zeroed.
/// Prints a line headed `what`. Returns the survivors and the statistics when the burst was
/// whole.
fn burst_then_quiet(
    what: &str,
    l: Layout,
    n: usize,
    keep_every: usize,
    pool_size: usize,
) -> (Vec<*mut u8>, smallarena::Stats) {
    let before = smallarena::stats();
    let (kept, full) = burst_and_free(l, n, keep_every);
    // Far past the delays the cases run with (0 and 20 ms), and the clock's few-ms tick.
    std::thread::sleep(std::time::Duration::from_millis(200));
    common::reach_a_slow_path();
    common::check_invariants();
    let after = smallarena::stats();
    println!(
        "{what}: resident {} -> {} -> {} KiB; pools purged {} -> {}; free pools {}",
        before.resident_bytes >> 10,
        full.resident_bytes >> 10,
        after.resident_bytes >> 10,
        full.pools_purged,
        after.pools_purged,
        after.free_pools,
    );
    let burst_bytes = n * l.size();
    assert!(full.resident_bytes >= before.resident_bytes + burst_bytes * 9 / 10);
    // All but the heap's few cached pools went to their arenas, and were purged.
    let pools = burst_bytes / pool_size;
    assert!(
        after.pools_purged - full.pools_purged >= pools * 3 / 4,
        "{} pools purged of about {pools}",
        after.pools_purged - full.pools_purged
    );
    // Whole pools go back (header page included): the survivors pin about one pool each.
    let dropped = full.resident_bytes.saturating_sub(after.resident_bytes);
    assert!(
        dropped >= burst_bytes * 3 / 4,
        "only {} KiB of {} KiB went back",
        dropped >> 10,
        burst_bytes >> 10
    );
    // Purged pools come back as fresh memory: zeroed blocks read as zeros.
    let again: Vec<*mut u8> = (0..n / 2)
        // SAFETY: a valid non-zero layout.
        .map(|_| unsafe { GLOBAL.alloc_zeroed(l) })
        .collect();
    for &p in &again {
        assert!(!p.is_null());
        // SAFETY: a live block of `l.size()` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p, l.size()) };
        assert!(bytes.iter().all(|&b| b == 0), "a zeroed block is dirty");
    }
    common::check_invariants();
    free_all(l, again);
    (kept, full)
}

/// Child: the burst is freed, a quiet phase longer than the delay passes, a slow path runs; the
/// free pools must have gone back without `collect()`, and come back zeroed.
#[test]
fn child_burst_then_quiet() {
    if child_case().as_deref() != Some("child_burst_then_quiet") {
        return;
    }
    // About 2,400 pools; the survivors pin about one pool each, 50 of them.
    let (kept, _) = burst_then_quiet("small", layout(), BURST, KEEP_EVERY, 16 << 10);
    free_all(layout(), kept);
    common::check_invariants();
}

#[test]
fn a_freed_burst_goes_back_at_once_with_delay_zero() {
    if child_case().is_none() {
        run_child("child_burst_then_quiet", "0");
    }
}

#[test]
fn a_freed_burst_goes_back_after_the_delay() {
    if child_case().is_none() {
        run_child("child_burst_then_quiet", "20");
    }
}

/// Rounds of the steady loop.
const ROUNDS: usize = 10;
/// Blocks per round of the steady loop (8 MiB, about 490 pools).
const STEADY_BURST: usize = 20_000;

/// Child: a steady loop that frees most of what it allocated and allocates it again, for many
/// rounds; prints the pools purged.
#[test]
fn child_steady() {
    if child_case().as_deref() != Some("child_steady") {
        return;
    }
    let before = smallarena::stats();
    for _ in 0..ROUNDS {
        let (kept, _) = burst_and_free(layout(), STEADY_BURST, KEEP_EVERY);
        free_all(layout(), kept);
    }
    common::check_invariants();
    let after = smallarena::stats();
    println!(
        "purged {} pools, unmapped {} arenas",
        after.pools_purged - before.pools_purged,
        after.arenas_unmapped - before.arenas_unmapped
    );
}

fn purged_in(out: &str) -> usize {
    out.lines()
        .find_map(|l| l.split("purged ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {out}"))
}

#[test]
fn a_steady_loop_under_a_long_delay_purges_nothing() {
    if child_case().is_some() {
        return;
    }
    // A delay no test run reaches (100 s): every pool is taken again long before.
    assert_eq!(purged_in(&run_child("child_steady", "100000")), 0);
    // Off: nothing either.
    assert_eq!(purged_in(&run_child("child_steady", "never")), 0);
    // The same loop with a delay of 0 gives every pool back as it empties (the counter counts).
    assert!(purged_in(&run_child("child_steady", "0")) > ROUNDS * 300);
}

/// Medium blocks of 8000 bytes (class of 8192 bytes, 31 to a 256 KiB pool).
const MEDIUM_SIZE: usize = 8000;
/// 32 MiB of them: about 130 medium pools in 9 medium arenas (15 pools each).
const MEDIUM_BURST: usize = 4000;
/// One in this many stays alive: at least one in every medium arena (465 blocks each), so the
/// memory can only go back pool by pool.
const MEDIUM_KEEP_EVERY: usize = 400;

/// Child: as [`child_burst_then_quiet`] with medium blocks: their 256 KiB pools are purged whole
/// after the delay, come back zeroed, and `collect()` then unmaps the emptied medium arenas.
#[test]
fn child_medium_burst_then_quiet() {
    if child_case().as_deref() != Some("child_medium_burst_then_quiet") {
        return;
    }
    let l = Layout::from_size_align(MEDIUM_SIZE, 8).unwrap();
    let (kept, full) = burst_then_quiet("medium", l, MEDIUM_BURST, MEDIUM_KEEP_EVERY, 256 << 10);
    assert!(kept.iter().all(|&p| smallarena::raw::owns_medium(p)));
    assert!(full.medium_arenas_mapped >= 8);
    free_all(l, kept);
    smallarena::collect();
    common::check_invariants();
    let last = smallarena::stats();
    // At most the arena of the pool this thread keeps at the head of the class's list.
    assert!(
        last.medium_arenas_mapped <= 1,
        "{} medium arenas left after collect()",
        last.medium_arenas_mapped
    );
    assert!(last.arenas_unmapped + 1 >= full.arenas_unmapped + full.medium_arenas_mapped);
}

#[test]
fn freed_medium_pools_go_back_at_once_with_delay_zero() {
    if child_case().is_none() {
        run_child("child_medium_burst_then_quiet", "0");
    }
}

#[test]
fn freed_medium_pools_go_back_after_the_delay() {
    if child_case().is_none() {
        run_child("child_medium_burst_then_quiet", "20");
    }
}
