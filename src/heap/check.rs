//! The invariant checker (mimalloc's `mi_page_is_valid`, rust-url's `check_invariants`): walks
//! the structures the allocator promises in its type docs and reports the first rule that does
//! not hold, without allocating (so it can run inside a program whose global allocator it is).
//!
//! What it checks, from the calling thread, under the lock:
//! * the calling thread's heap and every abandoned heap (the heaps whose lists the caller may
//!   read): each class list is linked both ways, holds only pools this heap owns that serve the
//!   list's class and are not marked full, each with sound bookkeeping ([`Pool::check`]: geometry,
//!   free list inside the pool on block boundaries with no cycle, counts within capacity); the
//!   empty caches hold `empty_count[k] <= EMPTY_CACHES[k]` pools (small, medium) of this heap serving nothing; every
//!   pool this heap owns is in exactly one of a class list, the full state, the empty cache;
//! * an abandoned heap's remote-free buffer is empty (flushed before it was abandoned);
//! * the shared sentinel pool is still empty (nothing ever wrote to it);
//! * the arenas ([`Locked::check_arenas`]): buckets, free counts, free pools, the arena map.
//!
//! Other live threads' heaps are not checked: only their owner may read their lists.
//!
//! [`check_current`] is used by the tests: `crate::tests` after every step (so under Miri too), and
//! the integration tests through `smallarena::check_invariants`.


use super::{current, heap_list, sentinel, Heap, EMPTY_CACHES};
use crate::lock::Locked;
use crate::pool::{ensure, Pool, NO_CLASS, SOLE};
use crate::size_class::{is_medium_class, CLASSES};
use crate::sync::Ordering;

pub use crate::pool::Violation;

/// Checks the calling thread's heap, the abandoned heaps and the arenas (see the module docs).
pub(crate) fn check_current() -> Result<(), Violation> {
    let _quiet = crate::mode::quiet();
    let sentinel = sentinel();
    // SAFETY: the sentinel is never written; reading it is always allowed.
    unsafe {
        ensure(
            (*sentinel).free.is_null() && (*sentinel).bump == (*sentinel).end,
            "the sentinel pool has room",
            sentinel.cast(),
        )?;
    }
    let heap = current();
    let mut locked = Locked::take();
    if !heap.is_null() {
        // SAFETY: the heap is the calling thread's; we hold the lock.
        unsafe { check_heap(heap, &mut locked)? };
    }
    let mut h = heap_list(&mut locked).abandoned;
    let mut seen = 0;
    while !h.is_null() {
        ensure(
            seen < heap_list(&mut locked).count,
            "abandoned list has a cycle",
            h.cast(),
        )?;
        // SAFETY: abandoned heaps are touched only under the lock, which we hold.
        unsafe {
            ensure(
                (*h).abandoned.load(Ordering::Relaxed),
                "heap on the abandoned list is not marked abandoned",
                h.cast(),
            )?;
            ensure(
                (*h).remote_buffer.is_empty(),
                "abandoned heap holds buffered remote frees",
                h.cast(),
            )?;
            check_heap(h, &mut locked)?;
            h = (*h).abandoned_next;
        }
        seen += 1;
    }
    locked.check_arenas()
}

/// Checks one heap's lists and pools.
///
/// # Safety
/// `heap` is the calling thread's heap, or abandoned; the lock is held either way.
unsafe fn check_heap(heap: *mut Heap, locked: &mut Locked) -> Result<(), Violation> {
    let at = heap.cast::<u8>();
    let owner = heap.cast::<u8>();
    // An upper bound on any list's length: every pool of every mapped arena.
    let mut pools = 0;
    locked.for_each_pool(|_| pools += 1);
    let mut listed = 0;
    // SAFETY: per the caller, the heap's lists and the owner-side fields of its pools are ours
    // to read.
    unsafe {
        for class in 0..CLASSES {
            let mut prev = core::ptr::null_mut::<Pool>();
            let mut pool = (*heap).classes[class];
            if pool == sentinel() {
                continue;
            }
            while !pool.is_null() {
                let p = pool.cast::<u8>();
                ensure(listed < pools, "class list has a cycle", at)?;
                ensure(pool != sentinel(), "the sentinel pool is linked in a list", p)?;
                ensure(
                    (*pool).owner.load(Ordering::Relaxed) == owner,
                    "pool in a heap's list owned by another heap",
                    p,
                )?;
                ensure((*pool).prev == prev, "class list links not symmetric", p)?;
                ensure(
                    !(*pool).full.load(Ordering::Relaxed),
                    "pool marked full in a class list",
                    p,
                )?;
                let sole = prev.is_null() && (*pool).next.is_null();
                ensure(
                    (*pool).slow_at == if sole { SOLE } else { 0 },
                    "linked pool's slow-path trigger",
                    p,
                )?;
                ensure(
                    Pool::is_medium(pool) == is_medium_class(class),
                    "pool of one kind in a class list of the other",
                    p,
                )?;
                Pool::check(pool, class)?;
                listed += 1;
                prev = pool;
                pool = (*pool).next;
            }
        }
        let mut cached = 0;
        for (k, &size) in EMPTY_CACHES.iter().enumerate() {
            let mut in_cache = 0;
            let mut pool = (*heap).empty[k];
            while !pool.is_null() {
                let p = pool.cast::<u8>();
                ensure(
                    in_cache < size,
                    "empty cache holds more than its size",
                    at,
                )?;
                ensure(
                    (*pool).owner.load(Ordering::Relaxed) == owner,
                    "pool in a heap's empty cache owned by another heap",
                    p,
                )?;
                ensure(
                    usize::from(Pool::is_medium(pool)) == k,
                    "pool in the empty cache of the other kind",
                    p,
                )?;
                Pool::check_unassigned(pool)?;
                in_cache += 1;
                pool = (*pool).next;
            }
            ensure(
                in_cache == (*heap).empty_count[k],
                "empty cache count differs from its list",
                at,
            )?;
            cached += in_cache;
        }
        // Every pool this heap owns, found from the arenas: in a list (not full, serving a
        // class), full (unlinked), or cached (serving no class); as many of each as found above.
        let (mut owned_listed, mut owned_cached) = (0, 0);
        let mut full_result = Ok(());
        locked.for_each_pool(|pool| {
            if (*pool).owner.load(Ordering::Relaxed) != owner {
                return;
            }
            let class = (*pool).class.load(Ordering::Relaxed);
            if class == NO_CLASS {
                owned_cached += 1;
            } else if (*pool).full.load(Ordering::Relaxed) {
                if full_result.is_ok() {
                    let p = pool.cast::<u8>();
                    let relink = Pool::relink_at(usize::from(class));
                    full_result = Pool::check(pool, usize::from(class))
                        .and_then(|()| {
                            ensure((*pool).slow_at == relink, "full pool's relink point", p)
                        })
                        .and_then(|()| {
                            ensure(
                                (*pool).used.load(Ordering::Relaxed) as i32 > i32::from(relink),
                                "full pool past its relink point",
                                p,
                            )
                        });
                }
            } else {
                owned_listed += 1;
            }
        });
        full_result?;
        ensure(
            owned_listed == listed,
            "a pool of the heap is neither full nor in its class list",
            at,
        )?;
        ensure(
            owned_cached == cached,
            "a pool of the heap serving no class is not in its empty cache",
            at,
        )
    }
}
