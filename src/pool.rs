//! Pools: 16 KiB runs of equal-sized blocks of one size class, with a header in front.
//!
//! A pool belongs to at most one heap at a time (its *owner*). The owner's thread alone touches
//! the owner-side fields (`free`, `bump`, `end`, the list links, the flags), without atomics.
//! Any other thread frees into the pool by pushing the block onto the lock-free *remote* list,
//! a single atomic word that holds the list head plus a `QUEUED` bit in its low bit:
//!
//! * A remote free pushes with a CAS and always sets `QUEUED`. The freer that turned `QUEUED`
//!   on (it saw it off) then pushes the pool onto its owner heap's remote queue, so the owner
//!   learns which pools have remote frees without scanning.
//! * The owner may take the blocks at any time while leaving `QUEUED` as it was
//!   ([`Pool::take_remote_keep_queued`]); only the owner's drain of its heap queue, after it has
//!   popped the pool, clears `QUEUED` ([`Pool::take_remote_and_unqueue`]). So a pool is in a heap
//!   queue at most once, and a pool whose `QUEUED` bit is on is never released.
//! * `used` counts blocks handed out and not yet back on the owner's free list, so blocks in
//!   flight on the remote list keep `used > 0`. A pool is released to its arena only when
//!   `used == 0` and the remote word is 0: then no block of it is live anywhere, so no remote free
//!   for it can be in flight, and it can safely be reused for another size class.

use crate::size_class::block_size;
use crate::sync::{const_fn, AtomicPtr, AtomicU32, Ordering};
use core::ptr::null_mut;

/// Size and alignment of a pool.
pub const POOL_SIZE: usize = 16 * 1024;
/// Bytes at the start of each pool taken by its header (a multiple of 16, so blocks are 16-aligned).
///
/// Under loom its atomics are bigger (they carry model-checker state), so the header is too.
pub const POOL_HEADER: usize = if cfg!(loom) { 512 } else { 128 };
/// Value of `class` for a pool that is not serving any class (free in its arena, or cached empty).
pub const NO_CLASS: u32 = u32::MAX;

const QUEUED: usize = 1;

/// A free block: its first word links to the next free block.
#[repr(C)]
pub struct Block {
    /// The next free block, or null.
    pub next: *mut Block,
}

/// The header at the start of every pool.
///
/// Invariants:
/// * The header is at a `POOL_SIZE`-aligned address; the pool's blocks of `block_size` bytes start
///   at `POOL_HEADER` and end at `end`. Every block address inside is 16-byte aligned.
/// * `free` is a singly linked list of free blocks of this pool; blocks between `bump` and `end`
///   have never been handed out since the pool was set up for its class.
/// * Owner-side fields are read and written only by the thread currently using the owner heap.
///   `used`, `class`, `owner`, `remote`, `remote_count` are atomics because other threads read
///   them (remote freers and `stats()`); only the owner writes `used`, `class` and `owner`.
/// * `full` is true exactly when the pool had no free block and no bump space when last looked
///   at, and has therefore been unlinked from its heap's class list.
#[repr(C, align(64))]
pub struct Pool {
    // --- owner side (first cache line) ---
    /// Local free list.
    pub free: *mut Block,
    /// Next never-used block.
    pub bump: *mut u8,
    /// End of the last whole block.
    pub end: *mut u8,
    /// Blocks handed out and not yet returned to the owner's free list.
    pub used: AtomicU32,
    /// Size class served, or [`NO_CLASS`].
    pub class: AtomicU32,
    /// Owning heap (opaque to this module), null when the pool is free in its arena.
    pub owner: AtomicPtr<u8>,
    /// Next pool in the owner's class list, or in its arena's free list / heap's empty cache.
    pub next: *mut Pool,
    /// Previous pool in the owner's class list.
    pub prev: *mut Pool,
    /// Unlinked because it was full (see type invariants).
    pub full: bool,
    /// The bump region is known to be zeroed (fresh from the OS).
    pub fresh: bool,
    // --- remote side (second cache line) ---
    remote: RemoteSide,
}

#[repr(C, align(64))]
struct RemoteSide {
    /// Remote-free list head with the `QUEUED` bit.
    head: AtomicPtr<Block>,
    /// Blocks pushed remotely and not yet taken by the owner (for statistics only).
    count: AtomicU32,
    /// Link in the owner heap's remote queue.
    queue_next: AtomicPtr<Pool>,
}

const _: () = assert!(core::mem::size_of::<Pool>() <= POOL_HEADER);

impl Pool {
    const_fn! {
        /// A header for a pool serving nothing, with no free space: the sentinel a heap's empty class
        /// points to, so the allocation fast path needs no null check.
        pub fn sentinel() -> Pool {
            Pool {
                free: null_mut(),
                bump: null_mut(),
                end: null_mut(),
                used: AtomicU32::new(0),
                class: AtomicU32::new(NO_CLASS),
                owner: AtomicPtr::new(null_mut()),
                next: null_mut(),
                prev: null_mut(),
                full: false,
                fresh: false,
                remote: RemoteSide {
                    head: AtomicPtr::new(null_mut()),
                    count: AtomicU32::new(0),
                    queue_next: AtomicPtr::new(null_mut()),
                },
            }
        }
    }

    /// The pool holding `p`, found by masking its address.
    #[inline(always)]
    pub fn of(p: *mut u8) -> *mut Pool {
        p.map_addr(|a| a & !(POOL_SIZE - 1)).cast()
    }

    /// Writes a fresh header for a pool that serves nothing yet.
    ///
    /// # Safety
    /// `pool` must point to `POOL_SIZE` bytes we own exclusively, `POOL_SIZE`-aligned.
    pub unsafe fn init_free(pool: *mut Pool, fresh: bool) {
        // SAFETY: the caller gives exclusive ownership of the pool's memory.
        unsafe {
            pool.write(Pool::sentinel());
            (*pool).fresh = fresh;
        }
    }

    /// Sets the pool up to serve `class` for `owner`: all blocks become bump space.
    ///
    /// # Safety
    /// The caller owns the pool exclusively (it is not published to any heap or arena list), its
    /// `used` is 0 and its remote word is 0.
    pub unsafe fn assign(pool: *mut Pool, class: usize, owner: *mut u8) {
        let bs = block_size(class);
        let cap = (POOL_SIZE - POOL_HEADER) / bs;
        // SAFETY: exclusive access per the caller; all addresses stay inside the pool.
        unsafe {
            let base = pool.cast::<u8>();
            (*pool).free = null_mut();
            (*pool).bump = base.add(POOL_HEADER);
            (*pool).end = base.add(POOL_HEADER + cap * bs);
            (*pool).next = null_mut();
            (*pool).prev = null_mut();
            (*pool).full = false;
            (*pool).class.store(class as u32, Ordering::Relaxed);
            (*pool).owner.store(owner, Ordering::Release);
        }
    }

    /// How many blocks a pool of `class` holds.
    pub const fn capacity(class: usize) -> usize {
        (POOL_SIZE - POOL_HEADER) / block_size(class)
    }

    /// Pushes `block` onto the remote list from a thread that does not own the pool.
    /// Returns true when this call turned `QUEUED` on: the caller must then push the pool onto
    /// its owner's remote queue.
    ///
    /// # Safety
    /// `pool` is a live pool and `block` a block of it that the caller owns (allocated, not
    /// freed); after this call the block belongs to the owner.
    #[inline]
    pub unsafe fn push_remote(pool: *mut Pool, block: *mut Block) -> bool {
        // SAFETY: the pool header lives as long as any block of it is live (ours is).
        let side = unsafe { &(*pool).remote };
        side.count.fetch_add(1, Ordering::Relaxed);
        let mut old = side.head.load(Ordering::Relaxed);
        loop {
            let next = old.map_addr(|a| a & !QUEUED);
            // SAFETY: the block is ours until the CAS below publishes it.
            unsafe { (*block).next = next };
            let new = block.map_addr(|a| a | QUEUED);
            match side
                .head
                .compare_exchange_weak(old, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return old.addr() & QUEUED == 0,
                Err(cur) => old = cur,
            }
        }
    }

    /// Owner: takes every remotely freed block, leaving the `QUEUED` bit as it is.
    /// Returns the list (null if none), its last block and its length.
    ///
    /// # Safety
    /// Only the pool's owner may call this.
    pub unsafe fn take_remote_keep_queued(pool: *mut Pool) -> Taken {
        // SAFETY: the owner's pool header is live.
        let side = unsafe { &(*pool).remote };
        let mut old = side.head.load(Ordering::Relaxed);
        loop {
            if old.addr() & !QUEUED == 0 {
                return Taken::NONE;
            }
            let keep = old.map_addr(|a| a & QUEUED);
            match side
                .head
                .compare_exchange_weak(old, keep, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => {
                    let list = old.map_addr(|a| a & !QUEUED);
                    // SAFETY: the blocks are ours now (Acquire pairs with the pushers' Release).
                    let taken = unsafe { Taken::walk(list) };
                    side.count.fetch_sub(taken.len, Ordering::Relaxed);
                    return taken;
                }
                Err(cur) => old = cur,
            }
        }
    }

    /// Owner, draining its heap queue after popping this pool: takes every remotely freed block
    /// and clears `QUEUED`, so the next remote free queues the pool again.
    ///
    /// # Safety
    /// Only the pool's owner may call this, and only for a pool it has just popped from its queue.
    pub unsafe fn take_remote_and_unqueue(pool: *mut Pool) -> Taken {
        // SAFETY: the owner's pool header is live.
        let side = unsafe { &(*pool).remote };
        let old = side.head.swap(null_mut(), Ordering::Acquire);
        let list = old.map_addr(|a| a & !QUEUED);
        // SAFETY: the blocks are ours now.
        let taken = unsafe { Taken::walk(list) };
        if taken.len > 0 {
            side.count.fetch_sub(taken.len, Ordering::Relaxed);
        }
        taken
    }

    /// Whether the remote word is entirely clear (no blocks, not queued).
    pub fn remote_idle(pool: *const Pool) -> bool {
        // SAFETY: callers pass a live pool header.
        unsafe { (*pool).remote.head.load(Ordering::Acquire).is_null() }
    }

    /// Blocks pushed remotely and not yet taken (approximate while threads run).
    pub fn remote_pending(pool: *const Pool) -> u32 {
        // SAFETY: callers pass a live pool header.
        unsafe { (*pool).remote.count.load(Ordering::Relaxed) }
    }

    /// The link used by a heap's remote queue.
    pub fn queue_link(pool: *const Pool) -> &'static AtomicPtr<Pool> {
        // SAFETY: pool headers live as long as the arena that holds them; callers only use the
        // reference while the pool is queued, during which it cannot be released.
        unsafe { &(*pool).remote.queue_next }
    }
}

/// A list of blocks taken off a remote list.
pub struct Taken {
    /// First block, or null.
    pub head: *mut Block,
    /// Last block, or null.
    pub tail: *mut Block,
    /// Number of blocks.
    pub len: u32,
}

impl Taken {
    const NONE: Taken = Taken {
        head: null_mut(),
        tail: null_mut(),
        len: 0,
    };

    /// Walks a list to find its tail and length.
    ///
    /// # Safety
    /// `list` is a well-formed null-terminated list of blocks owned by the caller.
    unsafe fn walk(list: *mut Block) -> Taken {
        let mut t = Taken {
            head: list,
            tail: null_mut(),
            len: 0,
        };
        let mut cur = list;
        while !cur.is_null() {
            t.len += 1;
            t.tail = cur;
            // SAFETY: per the caller, each node is a block we own.
            cur = unsafe { (*cur).next };
        }
        t
    }
}
