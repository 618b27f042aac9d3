//! Remote frees: a thread that does not own a block's pool links it into its heap's remote-free
//! buffer ([`super::remote_buffer`]); a batch of one pool's blocks goes out with one CAS onto the
//! pool's lock-free remote list, and the freer that marks the pool queued pushes it onto its owner
//! heap's queue (one more CAS); the owner takes them back on its slow path ([`drain_queue`]).
//! A thread with no heap frees each block straight onto the remote list. A free into an abandoned heap's pool sets [`RECLAIM`] (a Dekker
//! pair with [`super::lifecycle::abandon`]), and a share-mode child's free of an inherited block
//! writes nothing ([`free_inherited`]).

use super::*;
use super::remote_buffer::Chain;

/// Owner: moves the pool's remote frees onto its free list (keeping it queued if it is).
///
/// # Safety
/// `pool` is owned by the calling thread's heap.
pub(super) unsafe fn collect_remote(pool: *mut Pool) -> u32 {
    // SAFETY: we own the pool; the taken blocks are ours.
    unsafe {
        let t = Pool::take_remote_keep_queued(pool);
        let n = t.len;
        Pool::splice(pool, t);
        n
    }
}

/// The calling thread's heap drains its remote queue (for the loom models).
#[cfg(loom)]
pub(crate) fn collect_current() {
    let heap = current();
    if !heap.is_null() {
        // SAFETY: the heap is this thread's.
        unsafe { drain_queue(heap, None) };
    }
}

/// Owner: takes every pool off the heap's remote queue and reclaims its remote frees.
///
/// `locked` is `Some` when the heap is abandoned (we hold the lock): pools that become empty go
/// straight back to their arena.
///
/// # Safety
/// `heap` is used by the calling thread only (or abandoned, and `locked` is `Some`).
pub(super) unsafe fn drain_queue(heap: *mut Heap, mut locked: Option<&mut Locked>) {
    // SAFETY: the heap is ours; queued pools are owned by it and cannot be released while queued.
    unsafe {
        if (*heap).queue.load(Ordering::SeqCst).is_null() {
            return;
        }
        let mut pool = (*heap).queue.swap(null_mut(), Ordering::SeqCst);
        while !pool.is_null() {
            let next = Pool::queue_link(pool).load(Ordering::Relaxed);
            // Read while the pool is still queued: once `QUEUED` is clear, a remote free may
            // queue it again and the idle-owner reclaim may take it (a full pool whose blocks
            // are all on its remote list, `heap/reclaim.rs`). A full pool we take nothing from
            // stays full, so we must not touch it after the unqueue.
            let was_full = (*pool).full.load(Ordering::Relaxed);
            let taken = Pool::take_remote_and_unqueue(pool);
            if taken.len != 0 || !was_full {
                Pool::splice(pool, taken);
                free_local_slow(heap, pool, locked.as_deref_mut());
            }
            pool = next;
        }
    }
}

/// A free from a thread that does not own the block's pool.
///
/// The checks and the free key come first, so a block in a remote-free buffer is caught if freed
/// again; then the block is buffered in the calling thread's heap ([`super::remote_buffer`]) and
/// goes out with its batch, or, for a thread with no heap (past its last exit hook, or its heap
/// could not be had) and for blocks too big to batch, goes out alone. A thread that has no heap
/// yet gets one here after a few such frees ([`acquire_heap_for_free`]), so a thread that only
/// frees batches too.
///
/// # Safety
/// `block` is a live block of `pool`; `heap` is the caller's heap or null.
#[cold]
#[inline(never)]
pub(super) unsafe fn free_remote(heap: *mut Heap, pool: *mut Pool, block: *mut Block, size: usize) {
    // SAFETY: arena memory is mapped: the header is readable, and once `is_block` holds so are
    // the block's first two words (ours, if the block is live as the caller promises). A pool in
    // no heap, or serving no class, fails the checks before the block is touched.
    unsafe {
        let owner = (*pool).owner.load(Ordering::Acquire);
        if owner.is_null() || !Pool::is_block_any(pool, block.cast()) {
            fault(Fault::InvalidPointer, block.cast());
        }
        // Only the owner may walk the pool's free list, so the key alone decides here: a live
        // block holds the owner heap's address only if the program wrote it there.
        if (*block).key == owner.addr() {
            fault(Fault::DoubleFree, block.cast());
        }
        // Before anything is written: a share-mode child leaves inherited pages alone.
        if crate::arena::inherited(block.cast()) {
            return free_inherited(pool, size);
        }
        (*block).key = owner.addr();
    }
    let heap = if heap.is_null() {
        acquire_heap_for_free()
    } else {
        heap
    };
    // SAFETY: the pool's owner is stable while the block is live. A heap acquired just now may
    // be the one that owns the pool (adopted): its block goes out alone, so the buffer keeps to
    // other heaps' pools.
    if heap.is_null() || unsafe { (*pool).owner.load(Ordering::Relaxed) } == heap.cast() {
        if heap.is_null() {
            ORPHAN_REQUESTED.fetch_sub(size, Ordering::Relaxed);
        } else {
            // SAFETY: the heap is ours.
            unsafe { add_requested(heap, size.wrapping_neg()) };
        }
        let single = Chain {
            pool,
            head: block,
            tail: block,
            len: 1,
        };
        // SAFETY: the block is ours and carries the key.
        unsafe { publish_chain(single) };
        return;
    }
    // SAFETY: the heap is ours; the block's class fields may be read while it is live.
    unsafe {
        add_requested(heap, size.wrapping_neg());
        // The buffer is the heap's, used by this thread only; publishing touches other heaps.
        if let Some(chain) = (*heap).remote_buffer.push(pool, block, Pool::bytes(pool)) {
            publish_chain(chain);
        }
    }
}

/// Sends every block of `heap`'s remote-free buffer to its pool ([`publish_chain`]).
///
/// # Safety
/// `heap` is the calling thread's, or abandoned and the caller holds the lock.
pub(super) unsafe fn flush_remote_buffer(heap: *mut Heap) {
    // SAFETY: per the caller, the buffer is ours; its chains are blocks the program freed, owned
    // by the buffer, each of its slot's pool, and never of `heap`'s own pools (a pool's owner
    // does not change while a block of it is out of its free list).
    unsafe {
        if (*heap).remote_buffer.is_empty() {
            return;
        }
        (*heap).remote_buffer.drain(|chain| publish_chain(chain));
    }
}

/// The calling thread's heap sends out its remote-free buffer (for `stats()` and the models).
pub(crate) fn flush_current() {
    let heap = current();
    if !heap.is_null() {
        // SAFETY: the heap is this thread's.
        unsafe { flush_remote_buffer(heap) };
    }
}

/// Splices a chain of freed blocks onto their pool's remote list in one CAS and, when that marked
/// the pool queued, pushes the pool onto its owner heap's remote queue; a free into an abandoned
/// heap's pool then sets [`RECLAIM`] and drains that heap's queue if the lock is free.
///
/// # Safety
/// The chain's blocks are blocks of `chain.pool` freed by the program, carrying the free key,
/// owned by the caller and on no list, linked from `head` to `tail`.
pub(super) unsafe fn publish_chain(chain: Chain) {
    let pool = chain.pool;
    // SAFETY: the blocks are live to their owner (counted in `used`), so the pool's owner is
    // stable until we publish them; the owner heap is never unmapped. Once `push_remote_chain`
    // reports that we set QUEUED, the pool cannot be released until its owner pops it from the
    // queue, which we push it onto here.
    unsafe {
        let owner = (*pool).owner.load(Ordering::Acquire).cast::<Heap>();
        if Pool::push_remote_chain(pool, chain.head, chain.tail, chain.len) {
            enqueue(owner, pool);
            if (*owner).abandoned.load(Ordering::SeqCst) {
                RECLAIM.store(true, Ordering::SeqCst);
                // Nobody runs the owner's slow paths any more: reclaim its queue now if the
                // lock is free (never wait for it here), so memory freed into a dead thread's
                // pools goes back to the arenas promptly. Adoption clears `abandoned` under the
                // lock, so if it is still set while we hold the lock, the heap is ours to drain.
                if let Some(mut locked) = Locked::try_take() {
                    if (*owner).abandoned.load(Ordering::Relaxed) {
                        drain_queue(owner, Some(&mut locked));
                    }
                }
            }
        }
    }
}

/// Pushes `pool` onto `heap`'s remote queue: the freer whose push turned the pool's `QUEUED` on
/// does it, and so does the reclaim tick for a pool it took off the queue and gives back.
///
/// # Safety
/// `pool` is owned by `heap` and its `QUEUED` bit is on, set by us (or kept, popped by us).
pub(super) unsafe fn enqueue(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: heaps are never unmapped; the pool is held by us until the CAS publishes it.
    unsafe {
        let q = &(*heap).queue;
        let link = Pool::queue_link(pool);
        let mut head = q.load(Ordering::Relaxed);
        loop {
            link.store(head, Ordering::Relaxed);
            match q.compare_exchange_weak(head, pool, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
    }
}

/// A share-mode child's free of a block inherited from its parent ([`crate::fork`]): nothing is
/// written to the block or its pool; the block is dropped, its bytes counted as retained, and the
/// request's bytes taken off the calling thread's count as for any free.
///
/// # Safety
/// `pool` is the inherited pool of a live block.
#[cold]
#[inline(never)]
pub(super) unsafe fn free_inherited(pool: *mut Pool, size: usize) {
    account(size.wrapping_neg());
    // SAFETY: the block is live, so its pool's class fields may be read.
    crate::fork::retain(unsafe { Pool::block_size(pool) });
}
