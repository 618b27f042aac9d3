//! Unit tests of the pool, heap and arena logic, driven through the crate-internal entry points
//! (no `#[global_allocator]`), small enough to run under Miri:
//! `cargo +nightly miri test --lib`. Each test uses its own size classes, so tests running in
//! parallel do not disturb each other's per-class counters. Every allocation and free goes
//! through [`alloc`], [`alloc_zeroed`] and [`free`] here, which run the invariant checker
//! (`heap::check`) after each step.

use crate::heap;
use crate::heap::check::check_current;
use crate::pool::Pool;
use crate::size_class::{any_block_size, block_size, class_of, medium_class_of};
use crate::tunables::{MEDIUM_POOL_SIZE, POOL_HEADER, POOL_SIZE};
use std::collections::HashSet;

/// A block pointer that may cross threads (the tests hand blocks to other threads to free).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Ptr(*mut u8);
// SAFETY: the allocator's blocks may be freed from any thread; the tests never share one block
// between two threads at once.
unsafe impl Send for Ptr {}

/// Runs the invariant checker; a violation fails the test with the rule and the address.
#[track_caller]
fn check() {
    if let Err(v) = check_current() {
        panic!("invariant broken: {v}");
    }
}

/// `heap::alloc`, then the checker.
#[track_caller]
fn alloc(size: usize) -> *mut u8 {
    let p = heap::alloc(size);
    check();
    p
}

/// `heap::alloc_zeroed`, then the checker.
#[track_caller]
fn alloc_zeroed(size: usize) -> *mut u8 {
    let p = heap::alloc_zeroed(size);
    check();
    p
}

/// `heap::free`, then the checker.
///
/// # Safety
/// As for `heap::free`.
#[track_caller]
unsafe fn free(p: *mut u8, size: usize) {
    // SAFETY: per the caller.
    unsafe { heap::free(p, size) };
    check();
}

fn in_use(class: usize) -> usize {
    crate::stats().classes[class].blocks_in_use
}

/// Enough blocks of `class` (small or medium) to fill a few pools under native runs, one pool
/// and some under Miri.
fn count(class: usize) -> usize {
    let per_pool = Pool::capacity(class);
    if cfg!(miri) {
        per_pool + 3
    } else {
        3 * per_pool + 7
    }
}

#[test]
fn blocks_are_distinct_aligned_and_inside_their_pool() {
    let size = 200; // class 12
    let class = class_of(size);
    let base = in_use(class);
    let n = count(class);
    let mut seen = HashSet::new();
    let mut blocks = Vec::with_capacity(n);
    for i in 0..n {
        let p = alloc(size);
        assert!(!p.is_null());
        assert_eq!(p as usize % 16, 0);
        let pool = Pool::of(p) as usize;
        let off = p as usize - pool;
        assert!(off >= POOL_HEADER && off + block_size(class) <= POOL_SIZE);
        assert_eq!((off - POOL_HEADER) % block_size(class), 0);
        assert!(seen.insert(p as usize), "block {p:p} handed out twice");
        // SAFETY: the block is ours and `size` bytes long.
        unsafe { p.write_bytes(i as u8, size) };
        blocks.push(p);
    }
    assert_eq!(in_use(class), base + n);
    for (i, &p) in blocks.iter().enumerate() {
        // SAFETY: still ours.
        let s = unsafe { core::slice::from_raw_parts(p, size) };
        assert!(s.iter().all(|&b| b == i as u8), "block {i} was overwritten");
        // SAFETY: allocated above with this size, freed once.
        unsafe { free(p, size) };
    }
    assert_eq!(in_use(class), base);
}

#[test]
fn freed_blocks_are_reused_lifo_on_the_owning_thread() {
    let size = 40; // class 2
    let a = alloc(size);
    let b = alloc(size);
    // SAFETY: live blocks of this size.
    unsafe {
        free(a, size);
        free(b, size);
    }
    let c = alloc(size);
    let d = alloc(size);
    assert_eq!((c, d), (b, a));
    // SAFETY: live blocks of this size.
    unsafe {
        free(c, size);
        free(d, size);
    }
}

#[test]
fn a_full_pool_is_relinked_once_a_share_of_its_blocks_came_back() {
    let size = 256; // class 15, which no other unit test uses
    let class = class_of(size);
    let cap = Pool::capacity(class);
    let back = cap - Pool::relink_at(class) as usize;
    assert!(back > 1 && back < cap, "{back} of {cap}");
    let pool_of = |p: *mut u8| Pool::of(p) as usize;
    // Fill one pool A; the next allocation finds it full, unlinks it and starts a pool B.
    let a: Vec<*mut u8> = (0..cap).map(|_| alloc(size)).collect();
    let pool_a = pool_of(a[0]);
    assert!(a.iter().all(|&p| pool_of(p) == pool_a));
    let mut others = vec![alloc(size)];
    let pool_b = pool_of(others[0]);
    assert_ne!(pool_b, pool_a);
    // One block short of the share back in A: A stays out of the list, so once B is full the
    // next allocation comes from a third pool, not from A's free blocks.
    // SAFETY: live blocks of this size.
    unsafe { a[..back - 1].iter().for_each(|&p| free(p, size)) };
    others.extend((1..cap).map(|_| alloc(size)));
    assert!(others.iter().all(|&p| pool_of(p) == pool_b));
    let c = alloc(size);
    assert!(pool_of(c) != pool_a && pool_of(c) != pool_b);
    others.push(c);
    // The share-th block: A goes back into the list, after the head C, and serves once C is full.
    // SAFETY: a live block of this size.
    unsafe { free(a[back - 1], size) };
    others.extend((1..cap).map(|_| alloc(size)));
    assert!(others[cap..].iter().all(|&p| pool_of(p) == pool_of(c)));
    let from_a = alloc(size);
    assert_eq!(pool_of(from_a), pool_a);
    others.push(from_a);
    // SAFETY: live blocks of this size.
    unsafe {
        a[back..].iter().for_each(|&p| free(p, size));
        others.iter().for_each(|&p| free(p, size));
    }
    assert_eq!(in_use(class), 0);
}

#[test]
fn zeroed_allocation_after_dirty_reuse() {
    let size = 300; // class 18
    let n = count(class_of(size));
    let dirty: Vec<*mut u8> = (0..n)
        .map(|_| {
            let p = alloc(size);
            // SAFETY: ours, `size` bytes.
            unsafe { p.write_bytes(0xEE, size) };
            p
        })
        .collect();
    for &p in &dirty {
        // SAFETY: live, this size.
        unsafe { free(p, size) };
    }
    let clean: Vec<*mut u8> = (0..n).map(|_| alloc_zeroed(size)).collect();
    for &p in &clean {
        // SAFETY: ours.
        let s = unsafe { core::slice::from_raw_parts(p, size) };
        assert!(s.iter().all(|&b| b == 0));
    }
    for p in clean {
        // SAFETY: live, this size.
        unsafe { free(p, size) };
    }
}

/// Blocks freed by other threads go onto the remote lists and come back to the owner exactly
/// once: none is lost (the counters return to the baseline) and, when the owner allocates again,
/// no block is handed out twice and the emptied pools are reused rather than new ones taken.
#[test]
fn remote_frees_come_back_exactly_once() {
    let size = 100; // class 6
    let class = class_of(size);
    let base = in_use(class);
    let n = count(class);
    let blocks: Vec<Ptr> = (0..n).map(|_| Ptr(alloc(size))).collect();
    let pools_at_peak = crate::stats().classes[class].pools;
    let halves: Vec<Vec<Ptr>> = blocks.chunks(n.div_ceil(2)).map(|c| c.to_vec()).collect();
    let handles: Vec<_> = halves
        .into_iter()
        .map(|half| {
            std::thread::spawn(move || {
                for p in half {
                    // SAFETY: each block is freed by exactly one thread, once.
                    unsafe { free(p.0, size) };
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(in_use(class), base, "remote frees not counted");
    let again: Vec<Ptr> = (0..n).map(|_| Ptr(alloc(size))).collect();
    let set: HashSet<Ptr> = again.iter().copied().collect();
    assert_eq!(set.len(), n, "a block was handed out twice");
    let s = crate::stats();
    assert_eq!(s.classes[class].blocks_in_use, base + n);
    assert!(
        s.classes[class].pools <= pools_at_peak,
        "remotely freed pools were not reused: {} pools, {} at the first peak",
        s.classes[class].pools,
        pools_at_peak
    );
    for p in again {
        // SAFETY: live, this size.
        unsafe { free(p.0, size) };
    }
    assert_eq!(in_use(class), base);
}

/// A thread exits holding blocks; another thread frees them into its abandoned heap; the
/// pools go back to the arena (via the reclaim protocol or adoption) and nothing is lost.
#[test]
fn blocks_of_exited_threads_are_freed_and_reclaimed() {
    let size = 480; // class 29
    let class = class_of(size);
    let base = in_use(class);
    let n = count(class);
    let left: Vec<Ptr> = std::thread::spawn(move || {
        let v: Vec<Ptr> = (0..n).map(|_| Ptr(alloc(size))).collect();
        for &p in &v {
            // SAFETY: ours, `size` bytes.
            unsafe { p.0.write_bytes(0x5A, size) };
        }
        v
    })
    .join()
    .unwrap();
    assert_eq!(in_use(class), base + n);
    for &p in &left {
        // SAFETY: the blocks are live; the heap that owns them is abandoned.
        let s = unsafe { core::slice::from_raw_parts(p.0, size) };
        assert!(s.iter().all(|&b| b == 0x5A));
        // SAFETY: freed once, by us.
        unsafe { free(p.0, size) };
    }
    assert_eq!(in_use(class), base);
    // A later thread's exit (or its pool refill) drains the abandoned heap's queue. Another
    // test's short-lived thread may have adopted that heap meanwhile (tests run in parallel), in
    // which case its exit drains it: retry a few times rather than assume no one else is running.
    let mut pools = usize::MAX;
    for _ in 0..200 {
        std::thread::spawn(move || {
            let p = alloc(size);
            // SAFETY: live, this size.
            unsafe { free(p, size) };
        })
        .join()
        .unwrap();
        let s = crate::stats();
        assert_eq!(s.classes[class].blocks_in_use, base);
        pools = s.classes[class].pools;
        if pools <= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(pools <= 2, "{pools} pools of class {class} still owned");
}

#[test]
fn stats_display_is_a_readable_table() {
    let p = alloc(500);
    let text = crate::stats().to_string();
    assert!(text.contains("class"), "{text}");
    assert!(text.contains("arenas mapped"), "{text}");
    // SAFETY: live, this size.
    unsafe { free(p, 500) };
}

/// The arena map finds arena blocks (and answers "not ours" for other memory).
#[test]
fn arena_blocks_are_found_and_foreign_memory_is_not() {
    let p = alloc(56); // class 3, which no other unit test uses
    assert!(!p.is_null());
    assert!(crate::arena_map::contains(p.addr()));
    assert!(crate::raw::owns(p));
    // SAFETY: `p` is a live block of class 3 (64 bytes).
    assert_eq!(unsafe { crate::raw::usable_size(p) }, 64);
    let on_heap = Box::new([0u8; 64]);
    let on_stack = 0u64;
    assert!(!crate::arena_map::contains(on_heap.as_ptr().addr()));
    assert!(!crate::arena_map::contains(core::ptr::addr_of!(on_stack).addr()));
    assert!(!crate::arena_map::contains(0));
    // SAFETY: `p` came from alloc(56) and is freed once.
    unsafe { free(p, 56) };
}

/// The checker finds a broken pool: a free-list pointer off a block boundary, then a free
/// list that loops, each reported with its rule and nothing else disturbed once repaired.
#[test]
fn the_checker_reports_a_corrupted_free_list() {
    let size = 360; // class 22, which no other unit test uses
    let a = alloc(size);
    let b = alloc(size);
    // SAFETY: a live block of this size, freed once: it heads its pool's free list now.
    unsafe { free(a, size) };
    let pool = Pool::of(a);
    // SAFETY: the pool is owned by this thread's heap, whose owner-side fields only this thread
    // touches; every change is undone before the next allocation or free.
    unsafe {
        assert_eq!((*pool).free, a.cast());
        (*pool).free = a.add(8).cast();
        let v = check_current().expect_err("a free block off its boundary passed");
        assert_eq!(v.rule, "free block off a block boundary");
        assert_eq!(v.at, a.addr() + 8);
        (*pool).free = a.cast();
        check();
        let next = (*a.cast::<crate::pool::Block>()).next;
        (*a.cast::<crate::pool::Block>()).next = a.cast();
        let v = check_current().expect_err("a looping free list passed");
        assert_eq!(v.rule, "pool free list has a cycle");
        (*a.cast::<crate::pool::Block>()).next = next;
        check();
        // A count that disagrees with the free list.
        (*pool).used.store(7, crate::sync::Ordering::Relaxed);
        let v = check_current().expect_err("a wrong count passed");
        assert_eq!(
            v.rule,
            "pool blocks in use plus free blocks differ from blocks handed out"
        );
        (*pool).used.store(1, crate::sync::Ordering::Relaxed);
        free(b, size);
    }
}

/// smallarena's fork handlers are the outermost ones: handlers registered from a constructor of
/// default priority (so after smallarena's early registration) run before its prepare handler
/// and after its parent and child handlers, never while the forking thread holds the arena lock.
#[cfg(all(target_os = "linux", not(miri)))]
mod fork_order {
    use std::sync::atomic::{AtomicU8, Ordering};

    /// A bit per handler that ran, and per handler that found the arena lock held for the fork.
    static RAN: AtomicU8 = AtomicU8::new(0);
    static INSIDE: AtomicU8 = AtomicU8::new(0);
    const PREPARE: u8 = 1;
    const PARENT: u8 = 2;
    const CHILD: u8 = 4;

    fn record(bit: u8) {
        RAN.fetch_or(bit, Ordering::Relaxed);
        if crate::lock::fork_lock_is_mine() {
            INSIDE.fetch_or(bit, Ordering::Relaxed);
        }
    }
    extern "C" fn prepare() {
        record(PREPARE);
    }
    extern "C" fn parent() {
        record(PARENT);
    }
    extern "C" fn child() {
        record(CHILD);
    }
    extern "C" fn register() {
        // SAFETY: plain functions that live as long as the process.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    }

    #[used]
    #[link_section = ".init_array"]
    static CTOR: extern "C" fn() = register;

    #[test]
    fn smallarenas_fork_handlers_are_the_outermost() {
        // SAFETY: the child only reads atomics and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = RAN.load(Ordering::Relaxed) & (PREPARE | CHILD) == PREPARE | CHILD
                && INSIDE.load(Ordering::Relaxed) == 0;
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child: {status:#x}"
        );
        assert_eq!(
            RAN.load(Ordering::Relaxed) & (PREPARE | PARENT),
            PREPARE | PARENT
        );
        assert_eq!(
            INSIDE.load(Ordering::Relaxed),
            0,
            "a handler ran inside smallarena's"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Medium classes: the same steps through the medium pools (each test its own medium class).
// ---------------------------------------------------------------------------------------------

/// Bytes of a medium block the tests write and check: all of them natively, the first 64 under
/// Miri (which interprets every byte access).
fn touched(size: usize) -> usize {
    if cfg!(miri) {
        size.min(64)
    } else {
        size
    }
}

#[test]
fn medium_blocks_are_distinct_aligned_inside_their_pool_and_reused() {
    let size = 5000; // medium class 44 (5120 bytes)
    let class = medium_class_of(size);
    assert_eq!(any_block_size(class), 5120);
    let base = in_use(class);
    let n = count(class);
    let mut seen = HashSet::new();
    let mut blocks = Vec::with_capacity(n);
    for i in 0..n {
        let p = heap::alloc_any::<false>(size);
        assert!(!p.is_null());
        assert!(crate::raw::owns_medium(p) && !crate::raw::owns_small(p));
        let pool = Pool::of_medium(p) as usize;
        let off = p as usize - pool;
        assert_eq!(off % 16, 0);
        assert!(off >= POOL_HEADER && off + any_block_size(class) <= MEDIUM_POOL_SIZE);
        assert_eq!((off - POOL_HEADER) % any_block_size(class), 0);
        assert!(seen.insert(p as usize), "block {p:p} handed out twice");
        // SAFETY: the block is ours and `size` bytes long.
        unsafe { p.write_bytes(i as u8, touched(size)) };
        blocks.push(p);
    }
    assert_eq!(in_use(class), base + n);
    let pools = crate::stats().classes[class].pools;
    assert!(pools >= n.div_ceil(Pool::capacity(class)));
    for (i, &p) in blocks.iter().enumerate() {
        // SAFETY: still ours.
        let s = unsafe { core::slice::from_raw_parts(p, touched(size)) };
        assert!(s.iter().all(|&b| b == i as u8), "block {i} was overwritten");
        // SAFETY: allocated above with this size, freed once.
        unsafe { heap::free_any(p, size) };
    }
    assert_eq!(in_use(class), base);
    // Zeroed blocks after dirty reuse: the same pools serve again, and read as zeros.
    let clean: Vec<*mut u8> = (0..n).map(|_| heap::alloc_any::<true>(size)).collect();
    assert!(crate::stats().classes[class].pools <= pools);
    for &p in &clean {
        // SAFETY: ours.
        let s = unsafe { core::slice::from_raw_parts(p, touched(size)) };
        assert!(s.iter().all(|&b| b == 0));
    }
    for p in clean {
        // SAFETY: live, this size.
        unsafe { heap::free_any(p, size) };
    }
    assert_eq!(in_use(class), base);
}

/// Medium blocks freed by other threads come back exactly once, as small ones do.
#[test]
fn medium_remote_frees_come_back_exactly_once() {
    let size = 20000; // medium class 52 (20480 bytes)
    let class = medium_class_of(size);
    let base = in_use(class);
    let n = count(class);
    let blocks: Vec<Ptr> = (0..n).map(|_| Ptr(heap::alloc_any::<false>(size))).collect();
    let pools_at_peak = crate::stats().classes[class].pools;
    let halves: Vec<Vec<Ptr>> = blocks.chunks(n.div_ceil(2)).map(|c| c.to_vec()).collect();
    let handles: Vec<_> = halves
        .into_iter()
        .map(|half| {
            std::thread::spawn(move || {
                for p in half {
                    // SAFETY: each block is freed by exactly one thread, once; through the
                    // size-less path (as the preload's `free`) for variety.
                    unsafe { crate::raw::free(p.0) };
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // `raw::free` counts the block size, not the request, as freed: correct the count.
    crate::heap::account((any_block_size(class) - size).wrapping_mul(n));
    assert_eq!(in_use(class), base, "remote frees not counted");
    let again: Vec<Ptr> = (0..n).map(|_| Ptr(heap::alloc_any::<false>(size))).collect();
    let set: HashSet<Ptr> = again.iter().copied().collect();
    assert_eq!(set.len(), n, "a block was handed out twice");
    let s = crate::stats();
    assert_eq!(s.classes[class].blocks_in_use, base + n);
    assert!(s.classes[class].pools <= pools_at_peak);
    for p in again {
        // SAFETY: live, this size.
        unsafe { heap::free_any(p.0, size) };
    }
    assert_eq!(in_use(class), base);
}

/// A thread exits holding medium blocks; we free them into its abandoned heap; `collect()` then
/// gives every empty medium pool of the class back to its arena.
#[test]
fn medium_blocks_of_exited_threads_are_freed_and_collected() {
    let size = 1500; // medium class 37 (1536 bytes)
    let class = medium_class_of(size);
    let n = count(class);
    let left: Vec<Ptr> = std::thread::spawn(move || {
        let v: Vec<Ptr> = (0..n)
            .map(|_| Ptr(heap::alloc_any::<false>(size)))
            .collect();
        for &p in &v {
            // SAFETY: ours, `size` bytes.
            unsafe { p.0.write_bytes(0x5A, touched(size)) };
        }
        v
    })
    .join()
    .unwrap();
    for &p in &left {
        // SAFETY: the blocks are live; the heap that owns them is abandoned.
        let s = unsafe { core::slice::from_raw_parts(p.0, touched(size)) };
        assert!(s.iter().all(|&b| b == 0x5A));
        // SAFETY: freed once, by us.
        unsafe { heap::free_any(p.0, size) };
    }
    // Another test's thread may adopt the abandoned heap meanwhile: then its exit gives the
    // pools back. Retry rather than assume no one else is running.
    let mut pools = usize::MAX;
    for _ in 0..200 {
        crate::collect();
        pools = crate::stats().classes[class].pools;
        if pools == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(pools, 0, "{pools} empty pools of class {class} still owned");
    let s = crate::stats();
    assert!(s.medium_arenas_peak >= 1 && s.bytes_mapped_peak >= crate::tunables::MEDIUM_ARENA_SIZE);
}

/// The profiler's hooks in `GlobalAlloc` (feature `profile`).
#[cfg(feature = "profile")]
mod profile {
    use crate::profile::{sampler, start, stop, table};
    use core::alloc::{GlobalAlloc, Layout};

    /// A block sampled through the `GlobalAlloc` hooks has a record until it is freed, and its
    /// record follows it through `realloc`; the guard's system blocks are freed to the system
    /// allocator, and an arena block freed inside the guard goes to the arena.
    #[test]
    fn samples_follow_blocks_and_foreign_blocks_go_home() {
        let a = crate::SmallArena::new();
        start(1).unwrap(); // every allocation of more than 0 bytes is a sample
        let layout = Layout::from_size_align(48, 8).unwrap();
        // SAFETY: valid layouts; each block freed once with its layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(table::contains(p));
            let q = a.realloc(p, layout, 4000);
            assert!(!table::contains(p) || p == q);
            assert!(table::contains(q), "the sample follows the block");
            a.dealloc(q, Layout::from_size_align(4000, 8).unwrap());
            assert!(!table::contains(q));
            stop();
            // Inside the guard a small request comes from libc; freed outside it, it goes back.
            let g = sampler::Guard::enter();
            let f = a.alloc(layout);
            drop(g);
            assert!(!f.is_null());
            assert!(!crate::raw::owns(f));
            let f = a.realloc(f, layout, 64);
            assert!(!crate::raw::owns(f));
            a.dealloc(f, Layout::from_size_align(64, 8).unwrap());
            // An arena block freed inside the guard goes to the arena.
            let b = a.alloc(layout);
            let g = sampler::Guard::enter();
            a.dealloc(b, layout);
            drop(g);
            assert!(crate::raw::owns(b));
        }
    }
}
