//! Loom models of the allocator's lock-free protocols, run against the real allocator code
//! compiled with loom's atomics, thread-locals and globals (see `src/sync.rs`):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom
//! ```
//!
//! The allocator is called through its `GlobalAlloc` methods (the test binary itself keeps the
//! system allocator, which loom needs for its own bookkeeping). Every model runs in a fresh
//! execution: globals are per-execution lazy statics under loom. The model's main thread never
//! allocates: its heap could not be abandoned inside the model. Roles run in spawned threads, which
//! end by running the allocator's thread-exit path (see `spawn`).
#![cfg(loom)]

use loom::thread;
use smallarena::SmallArena;
use std::alloc::{GlobalAlloc, Layout};

const A: SmallArena = SmallArena::new();

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn alloc(size: usize) -> usize {
    // SAFETY: a valid, non-zero layout.
    let p = unsafe { A.alloc(layout(size)) };
    assert!(!p.is_null());
    p as usize
}

fn free(p: usize, size: usize) {
    // SAFETY: every model frees each block it allocated exactly once, with its layout.
    unsafe { A.dealloc(p as *mut u8, layout(size)) }
}

/// Spawns a model thread that runs the allocator's thread-exit path when it is done, as the
/// thread-local destructor does natively (loom 0.7 drops a model thread's thread-locals only
/// when the execution is torn down, outside the model).
/// Model threads get a bigger stack than loom's default: the allocator's slow paths, with every
/// atomic instrumented by loom, need it.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .stack_size(4 << 20)
        .spawn(move || {
            let r = f();
            smallarena::loom_hooks::thread_exit();
            r
        })
        .unwrap()
}

fn in_use(size: usize) -> usize {
    // The class serving `size`: the first whose blocks hold it.
    let st = smallarena::stats();
    let class = st
        .classes
        .iter()
        .position(|c| c.block_size >= size)
        .unwrap();
    st.classes[class].blocks_in_use
}

/// Runs a model with at most `bound` preemptions (unless `LOOM_MAX_PREEMPTIONS` says otherwise),
/// and reports how many executions it explored. The bounds keep each model under a minute on 2
/// cores; every protocol here needs at most two preemptions to put one thread's step between
/// another's load and its CAS/swap, which is where these protocols can go wrong.
fn model(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(bound);
    }
    // The allocator's slow paths are long (every atomic is a branch point under loom), and
    // waiting threads spin on the lock: allow more branches per execution than the default.
    b.max_branches = 100_000;
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = executions.clone();
    let start = std::time::Instant::now();
    b.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    eprintln!(
        "loom: {} executions in {:.1} s (preemption bound {:?})",
        executions.load(std::sync::atomic::Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
        b.preemption_bound
    );
}

/// 1. Remote frees: two threads push blocks onto a pool's remote list while the owner drains
///    it. Every block comes back exactly once: none is lost, none is handed out twice.
#[test]
fn remote_frees_come_back_exactly_once() {
    model(4, || spawn(|| remote_frees_owner(512)).join().unwrap());
}

/// 1b. The same for a medium class: medium pools share the pool protocols, and live in medium
///     arenas with their own address map.
#[test]
fn medium_remote_frees_come_back_exactly_once() {
    model(4, || spawn(|| remote_frees_owner(4000)).join().unwrap());
}

fn remote_frees_owner(size: usize) {
    {
        let blocks: Vec<usize> = (0..3).map(|_| alloc(size)).collect();
        let (b0, b1, b2) = (blocks[0], blocks[1], blocks[2]);
        let t1 = spawn(move || free(b0, size));
        let t2 = spawn(move || free(b1, size));
        // The owner drains while the pushes happen, and frees its own block locally.
        smallarena::loom_hooks::collect_remote_frees();
        free(b2, size);
        t1.join().unwrap();
        t2.join().unwrap();
        smallarena::loom_hooks::collect_remote_frees();
        assert_eq!(in_use(size), 0, "a remote free was lost");
        // All three are back on the owner's free list, each once.
        let again: Vec<usize> = (0..3).map(|_| alloc(size)).collect();
        let mut sorted = again.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 3, "a block was handed out twice");
        let mut expect = vec![b0, b1, b2];
        expect.sort_unstable();
        assert_eq!(sorted, expect, "blocks not reused: a free was lost");
        for p in again {
            free(p, size);
        }
    }
}

/// 1c. Batched remote frees: two freers batch frees of one owner's blocks in their heaps'
///     remote-free buffers (under loom a slot goes out at its second block) while the owner
///     allocates and drains. One freer allocates first, and its batch goes out when full; the
///     other only frees: its first free goes out alone, its second gets it a heap (under loom
///     at the second heapless remote free) and is buffered, and goes out at the thread's exit.
///     Every block comes back exactly once and the counts end at 0.
#[test]
fn batched_remote_frees_come_back_exactly_once() {
    model(3, || {
        spawn(|| batched_remote_frees_owner(64)).join().unwrap()
    });
}

fn batched_remote_frees_owner(size: usize) {
    let blocks: Vec<usize> = (0..5).map(|_| alloc(size)).collect();
    let (b0, b1, b2, b3, b4) = (blocks[0], blocks[1], blocks[2], blocks[3], blocks[4]);
    let t1 = spawn(move || {
        let own = alloc(16);
        free(b0, size);
        // The slot of the owner's pool is full now: one CAS sends both.
        free(b1, size);
        free(own, 16);
    });
    // The second is buffered until this thread exits (`spawn` runs the exit path).
    let t2 = spawn(move || {
        free(b2, size);
        free(b3, size);
    });
    // The owner drains while the batches go out, and allocates and frees on its own.
    smallarena::loom_hooks::collect_remote_frees();
    let extra = alloc(size);
    free(b4, size);
    t1.join().unwrap();
    t2.join().unwrap();
    smallarena::loom_hooks::collect_remote_frees();
    free(extra, size);
    assert_eq!(in_use(size), 0, "a batched remote free was lost");
    // The six are back on the owner's free list, each once.
    let again: Vec<usize> = (0..6).map(|_| alloc(size)).collect();
    let mut sorted = again.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 6, "a block was handed out twice");
    let mut expect = vec![b0, b1, b2, b3, b4, extra];
    expect.sort_unstable();
    assert_eq!(sorted, expect, "blocks not reused: a free was lost");
    for p in again {
        free(p, size);
    }
    assert_eq!(in_use(size), 0);
}

/// 2. Thread exit: a heap is abandoned by an exiting thread while another thread frees into one
///    of its pools, and a third thread adopts it. Nothing is lost or double-owned.
/// 5. The owner's pool empties while that remote free is in flight: the pool is released (and
///    may be reused for another class) only after the free has landed.
#[test]
fn abandon_adopt_and_remote_free_race() {
    model(2, || {
        let size = 512;
        // The owner: allocates two blocks, hands one to a freer thread it starts, frees the
        // other, and exits (abandoning its heap) while the freer may still be freeing.
        let owner = spawn(move || {
            let x = alloc(size);
            let y = alloc(size);
            let freer = spawn(move || free(x, size));
            free(y, size);
            freer
        });
        // The adopter: takes a heap (maybe the abandoned one) and uses another size class, so
        // an emptied pool may be reused for it.
        let adopter = spawn(move || {
            let p = alloc(48);
            assert_eq!((p % 16384 - 512) % 48, 0, "block misplaced in its pool");
            free(p, 48);
        });
        let freer = owner.join().unwrap();
        freer.join().unwrap();
        adopter.join().unwrap();
        let st = smallarena::stats();
        assert_eq!(
            st.classes[31].blocks_in_use, 0,
            "a block of the abandoned heap was lost"
        );
        assert_eq!(st.classes[2].blocks_in_use, 0);
        // Every thread has exited: every heap is on the abandoned list, each once.
        assert_eq!(st.heaps_abandoned, st.heaps);
        assert!(st.heaps <= 3);
    });
}

/// 3. First use: two threads make the first allocation at the same time; the mode is decided
///    once and both see the same one, as does every later call.
#[test]
fn first_use_decides_the_mode_once() {
    model(3, || {
        let t1 = spawn(|| {
            let p = alloc(16);
            free(p, 16);
            smallarena::mode()
        });
        let t2 = spawn(|| {
            let p = alloc(32);
            free(p, 32);
            smallarena::mode()
        });
        let (m1, m2) = (t1.join().unwrap(), t2.join().unwrap());
        assert_eq!(m1, m2);
        assert_eq!(smallarena::mode(), m1);
    });
}

/// 4. Shared registries: heaps are registered, abandoned and adopted by racing threads (the heap
///    registry and abandoned list), while arenas are mapped and published in the arena registry
///    that `raw::owns` reads without a lock. A block is always found in the registry by a thread
///    it was handed to, memory that is not an arena never is, and every heap ends on the
///    abandoned list exactly once.
#[test]
fn registries_publication_and_lookup_race() {
    model(3, || {
        let t1 = spawn(move || {
            let p = alloc(16);
            // Hand the block to a thread that looks it up while we go on (possibly mapping).
            let looker = spawn(move || {
                assert!(
                    smallarena::raw::owns(p as *const u8),
                    "published arena not found"
                );
                let local = 0u8;
                assert!(
                    !smallarena::raw::owns(&local),
                    "a stack address taken for an arena"
                );
                p
            });
            let q = alloc(32);
            free(q, 32);
            looker
        });
        let t2 = spawn(move || {
            let p = alloc(32);
            free(p, 32);
        });
        let looker = t1.join().unwrap();
        let p = looker.join().unwrap();
        t2.join().unwrap();
        spawn(move || free(p, 16)).join().unwrap();
        let st = smallarena::stats();
        assert!(st.heaps <= 4, "{} heaps for 4 threads", st.heaps);
        assert_eq!(st.heaps_abandoned, st.heaps);
        assert_eq!(st.classes[0].blocks_in_use + st.classes[1].blocks_in_use, 0);
    });
}

/// 6. Idle-owner reclaim (`src/heap/reclaim.rs`): the owner fills a pool and hands every block to
///    a freer thread, which frees them all remotely while a third thread runs the reclaim on
///    every live heap; the owner stays idle. Every block comes back exactly once (to the owner,
///    or with the pool to its arena), and a reclaimed pool is in no list of the owner's.
#[test]
fn reclaim_of_an_idle_owners_pool() {
    model(4, || {
        spawn(|| reclaim_owner(true, false, false)).join().unwrap()
    });
}

/// 6d. As 6, but the pool is still the head of its class list (its last block was handed out,
///     and no allocation has unlinked it since): not full, so it must not be reclaimed.
#[test]
fn reclaim_skips_the_lazily_unlinked_head() {
    model(4, || {
        spawn(|| reclaim_owner(false, false, false)).join().unwrap()
    });
}

/// 6b. As 6, the pool wholly freed first: the reclaim races with the owner's own drain of its
///     queue (its slow path), both after the same pool.
#[test]
fn reclaim_races_with_the_owners_drain() {
    model(4, || {
        spawn(|| reclaim_owner(true, true, true)).join().unwrap()
    });
}

/// 6c. As 6, with the owner draining its queue while the frees and the reclaim happen.
#[test]
fn reclaim_races_with_remote_frees_and_the_owners_drain() {
    model(4, || {
        spawn(|| reclaim_owner(true, true, false)).join().unwrap()
    });
}

/// The largest medium class: 7 blocks to a 256 KiB pool (under loom, whose pool header is
/// 512 bytes), the fewest of any pool, so the model frees a whole pool in few steps.
const BIG: usize = 32768;
const BIG_CAP: usize = 7;

/// The owner of model 6: makes its pool full (unlinked) with one more allocation if `unlink`,
/// drains its queue concurrently if `drain`; the freer is done before the reclaim starts if
/// `freed_first`.
fn reclaim_owner(unlink: bool, drain: bool, freed_first: bool) {
    let blocks: Vec<usize> = (0..BIG_CAP).map(|_| alloc(BIG)).collect();
    // The pool is exhausted but still the head of its class list (unlinked lazily): this
    // allocation's slow path marks it full and takes another pool.
    let extra = unlink.then(|| alloc(BIG));
    let reclaimed_before = smallarena::stats().pools_reclaimed;
    let given = blocks.clone();
    let mut freer = Some(spawn(move || {
        for p in given {
            free(p, BIG);
        }
    }));
    if freed_first {
        freer.take().unwrap().join().unwrap();
    }
    let reclaimer = spawn(smallarena::loom_hooks::reclaim_idle_heaps);
    if drain {
        smallarena::loom_hooks::collect_remote_frees();
    }
    if let Some(freer) = freer {
        freer.join().unwrap();
    }
    reclaimer.join().unwrap();
    // Whatever was not reclaimed comes back to the owner now.
    smallarena::loom_hooks::collect_remote_frees();
    let st = smallarena::stats();
    let reclaimed = st.pools_reclaimed - reclaimed_before;
    assert!(
        reclaimed <= usize::from(unlink),
        "{reclaimed} pools reclaimed"
    );
    assert_eq!(
        in_use(BIG),
        usize::from(unlink),
        "a block was lost or counted twice"
    );
    if let Err(v) = smallarena::check_invariants() {
        panic!("invariant violated (reclaimed {reclaimed}): {v}");
    }
    // Every block comes back exactly once: the next allocations (the rest of the extra block's
    // pool, then the pool given back or reclaimed) are all distinct, and if the pool was not
    // reclaimed its blocks are among them.
    let again: Vec<usize> = (0..2 * BIG_CAP - 1).map(|_| alloc(BIG)).collect();
    let mut sorted = again.clone();
    sorted.extend(extra);
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        again.len() + usize::from(unlink),
        "a block was handed out twice"
    );
    if reclaimed == 0 {
        for p in &blocks {
            assert!(
                again.contains(p),
                "a block of the pool did not come back to the owner"
            );
        }
    }
    for p in again.into_iter().chain(extra) {
        free(p, BIG);
    }
    if let Err(v) = smallarena::check_invariants() {
        panic!("invariant violated after reuse: {v}");
    }
}
