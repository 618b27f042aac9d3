//! The idle-owner reclaim: any thread's slow path takes back, from a live heap whose owner has
//! gone quiet, the pools whose every block other threads have freed, and gives them to their
//! arenas (where the purge delay gives them back to the OS). Without it, a live thread that
//! blocks for good after handing its blocks to others keeps all their pools: their blocks sit
//! on the pools' remote lists until it next reaches a slow path ([`drain_queue`]). Abandoned
//! heaps have their own path (the [`RECLAIM`] protocol); this one is for live heaps.
//!
//! **When** (policy, not safety). A *tick* runs on the allocation slow path of any thread when
//! one is due and the lock is free (never waited for): every purge delay
//! (`SMALLARENA_PURGE_DELAY_MS`, at least 1 ms; no tick when purging is off), scheduled when a
//! slow path takes a pool from the arenas and again after each tick that saw a live heap with
//! pools queued ([`crate::purge::reclaim_wanted`]). The owner counts its refill and drain slow
//! paths in `Heap::slow_paths` (a load and a store, owner only); the tick records the count of
//! every live heap in `slow_paths_seen` (under the lock) and works on a heap only when the count
//! is the one it saw at the previous tick: a *quiescent* heap, whose owner ran no slow path
//! for one to two periods. An active owner drains its own queue soon enough, and stealing its
//! pools would only make it take new ones. Quiescence is not what makes the reclaim safe: the
//! owner may start a slow path at any moment of the tick.
//!
//! **How** (the protocol, under the arena lock). For each quiescent live heap:
//! 1. Take its whole remote queue with one `swap(null)`. The owner's drain also swaps, so each
//!    queued pool is popped by exactly one drainer; a popped pool keeps its `QUEUED` bit, so no
//!    remote free queues it again and its owner does not release it.
//! 2. For each popped pool, as filters: if it is not `full` (`Acquire`), or fewer than
//!    `Pool::capacity(class)` blocks are pending on its remote list (the pending count goes up
//!    before a remote free's CAS, so it may count a block not yet on the list, and down after the
//!    owner's take: a necessary condition only), push it back onto the owner's queue as it is
//!    (still `QUEUED`, list intact).
//! 3. Otherwise take its remote list with a `swap(null)` (`Acquire`: it pairs with every remote
//!    free's `Release` CAS; it also clears `QUEUED`) and count the blocks taken. The pool is
//!    reclaimed when the count is its capacity and `full` (read again, `Acquire`) is still set:
//!    * every block of the pool was on the list, so the owner holds none: it has no live block to
//!      free locally (a double free aside: see below), and none on its free list (empty, as a
//!      full pool's is, and bump space gone);
//!    * `full` is set by the owner, with `Release`, after it unlinked the pool from its class
//!      list (`alloc_slow`, the last write to the pool there), and cleared by the owner only when
//!      the pool relinks, which needs blocks on its free list (a `RELINK_SHARE`th of them). A
//!      pool whose blocks are all on the remote list got there through allocations made after the
//!      owner's last clear (the blocks on the free list at the relink were handed out again),
//!      each handed to a freer whose `Release` push the swap acquired; so a clear is always seen,
//!      and a set seen means the owner's last touch of the pool (the unlink) happened before. Not in a class list, not in the queue (popped, and no remote free
//!      can queue it again: all its blocks are ours), the owner cannot reach the pool any more;
//!    * the owner's own drain reads `full` before it unqueues a pool, and does not touch a pool
//!      that was full and gave it no block ([`drain_queue`]): otherwise a drain that popped the
//!      pool, took nothing (its blocks were collected earlier, leaving an empty `QUEUED` list)
//!      and was preempted could read the pool after a remote free queued it again and this
//!      reclaim took it.
//!
//!    The blocks go onto the pool's free list (its `used` back to 0) and the pool to its arena,
//!    as an abandoned heap's drain does; [`Stats::pools_reclaimed`](crate::Stats) counts it.
//!    Otherwise (some block is elsewhere, or the pool is the head of its class list, unlinked
//!    only lazily by the owner's next allocation of that class) the blocks are pushed back in
//!    front of anything pushed since ([`Pool::push_remote_list`]), setting `QUEUED`, and if that
//!    turned it on the pool goes back onto the owner's queue, as a remote free does.
//!
//! Not reclaimed: pools holding a live block; the last pool of each class (kept at the head of
//! its list until the owner's next allocation of the class); and a full pool some of whose
//! blocks came back to the owner itself before it went idle (freed by the owner, or drained
//! from the remote list: they wait on its free list until a `RELINK_SHARE`th has come back),
//! as only blocks on the remote list can be counted from outside. A program that frees one block
//! twice, the second time by the owner after every block of the pool was freed remotely, may
//! race with a reclaim instead of being told (the owner reads the pool to check the key).
//!
//! Model-checked in `tests/loom.rs` (an owner that drains or stays idle, a remote freer, a
//! reclaimer).

use super::*;

global! {
    /// Pools taken from idle heaps and given to their arenas since the process started. Written
    /// under the lock.
    static POOLS_RECLAIMED: AtomicUsize = AtomicUsize::new(0);
}

/// Owner: one more refill or drain slow path (the quiescence count, see the module docs).
///
/// # Safety
/// `heap` is used by the calling thread only.
#[inline]
pub(super) unsafe fn note_slow_path(heap: *mut Heap) {
    // SAFETY: per the caller; only the heap's user writes the count (readers load it).
    let n = unsafe { &(*heap).slow_paths };
    n.store(n.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// A slow path holding the lock took a pool from the arenas: a reclaim tick is scheduled if none
/// is pending.
pub(super) fn schedule_reclaim(locked: &mut Locked) {
    crate::purge::reclaim_wanted(locked);
}

/// Runs a due reclaim tick if the lock is free (never waits for it): from the allocation slow
/// path. One load when no tick is pending.
#[inline]
pub(super) fn reclaim_tick() {
    if !crate::purge::reclaim_maybe_due() {
        return;
    }
    if let Some(mut locked) = Locked::try_take() {
        if let Some(now) = crate::purge::reclaim_due(&mut locked) {
            let again = reclaim_live_heaps(&mut locked, false);
            crate::purge::reclaim_ticked(&mut locked, now, again);
        }
    }
}

/// The tick: reclaims the whole pools of every live heap that is quiescent (every live heap if
/// `all`), and records each one's slow-path count. Whether some live heap still has pools queued
/// afterwards (a later tick may take them).
pub(crate) fn reclaim_live_heaps(locked: &mut Locked, all: bool) -> bool {
    let mut queued = false;
    let mut h = heap_list(locked).all;
    while !h.is_null() {
        // SAFETY: listed heaps are never unmapped; their links, `abandoned` and
        // `slow_paths_seen` are guarded by the lock we hold; `slow_paths` and `queue` are atomics.
        unsafe {
            if !(*h).abandoned.load(Ordering::Relaxed) {
                let count = (*h).slow_paths.load(Ordering::Relaxed);
                if all || count == (*h).slow_paths_seen {
                    reclaim_heap(h, locked);
                }
                (*h).slow_paths_seen = count;
                queued |= !(*h).queue.load(Ordering::Relaxed).is_null();
            }
            h = (*h).all_next;
        }
    }
    queued
}

/// Takes the whole pools off `heap`'s remote queue and pushes the others back (steps 1-3 of the
/// module docs).
///
/// # Safety
/// `heap` is a live heap (not abandoned) and the lock is held.
unsafe fn reclaim_heap(heap: *mut Heap, locked: &mut Locked) {
    // SAFETY: per the caller; the pools popped are held by us alone as their queue's drainer
    // (their `QUEUED` bit keeps them from being queued again or released by the owner).
    unsafe {
        if (*heap).queue.load(Ordering::Relaxed).is_null() {
            return;
        }
        let mut pool = (*heap).queue.swap(null_mut(), Ordering::SeqCst);
        while !pool.is_null() {
            let next = Pool::queue_link(pool).load(Ordering::Relaxed);
            if !reclaim_pool(pool, locked) {
                enqueue(heap, pool);
            }
            pool = next;
        }
    }
}

/// Reclaims `pool` if every block of it is on its remote list and it is full (given to its
/// arena); otherwise leaves it with its blocks on the list. False when it must go back onto its
/// owner's queue (its `QUEUED` bit on, kept or set by us); true when it is reclaimed, or no
/// longer ours to queue (a remote free queued it again, or its list was empty).
///
/// # Safety
/// The lock is held and we have just popped `pool` from its live owner's queue.
unsafe fn reclaim_pool(pool: *mut Pool, locked: &mut Locked) -> bool {
    // SAFETY: per the caller; the class is stable while a block of the pool is live (its
    // blocks are in flight on the remote list, or ours once taken).
    unsafe {
        let class = usize::from((*pool).class.load(Ordering::Relaxed));
        if class >= CLASSES || !(*pool).full.load(Ordering::Acquire) {
            return false;
        }
        let cap = Pool::capacity(class);
        if Pool::remote_pending(pool) as usize != cap {
            return false;
        }
        let taken = Pool::take_remote_and_unqueue(pool);
        if taken.len as usize == cap && (*pool).full.load(Ordering::Acquire) {
            // Every block is ours and the owner cannot reach the pool: it is ours.
            Pool::splice(pool, taken);
            (*pool).full.store(false, Ordering::Relaxed);
            (*pool).slow_at = 0;
            locked.give_pool(pool);
            POOLS_RECLAIMED.store(POOLS_RECLAIMED.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            return true;
        }
        // Not whole: the blocks go back; the pool back onto the queue only if no remote free
        // queued it since our swap cleared `QUEUED`.
        taken.len == 0 || !Pool::push_remote_list(pool, taken)
    }
}

/// Pools reclaimed from idle heaps since the process started (for [`crate::stats()`]).
pub(crate) fn pools_reclaimed(_proof: &mut Locked) -> usize {
    POOLS_RECLAIMED.load(Ordering::Relaxed)
}

/// Runs the reclaim on every live heap now, quiescent or not (for the loom models: the protocol
/// is safe against an owner running any path; quiescence only chooses when to try).
#[cfg(loom)]
pub(crate) fn reclaim_now() {
    let _quiet = crate::mode::quiet();
    reclaim_live_heaps(&mut Locked::take(), true);
}
