//! Pools: runs of equal-sized blocks of one size class, with a header in front: 16 KiB pools for
//! the small classes, 256 KiB pools for the medium ones ([`MEDIUM_POOL_SIZE`]). Both kinds share
//! this header and every protocol below; they differ only in size (and so in the address mask that
//! finds a block's pool, and the constants of the block-boundary test).
//!
//! A pool belongs to at most one heap at a time (its *owner*). The owner's thread alone touches
//! the owner-side fields (`free`, `bump`, `end`, the list links, the flags), without atomics.
//! Any other thread frees into the pool by pushing the block onto the lock-free *remote* list,
//! a single atomic word that holds the list head plus a `QUEUED` bit in its low bit:
//!
//! * A remote free pushes with a CAS and always sets `QUEUED`; a freer batches its frees of one
//!   pool (`heap::remote_buffer`) and pushes the whole chain with one CAS
//!   ([`Pool::push_remote_chain`]), blocks it holds staying counted in `used` meanwhile. The freer that turned `QUEUED`
//!   on (it saw it off) then pushes the pool onto its owner heap's remote queue, so the owner
//!   learns which pools have remote frees without scanning.
//! * The owner may take the blocks at any time while leaving `QUEUED` as it was
//!   ([`Pool::take_remote_keep_queued`]); only the drain of its heap queue, after it has popped
//!   the pool, clears `QUEUED` ([`Pool::take_remote_and_unqueue`]): the owner's, or the idle-owner
//!   reclaim's under the lock (`heap/reclaim.rs`, which takes a full pool whose every block is on
//!   the list, or puts the blocks back with [`Pool::push_remote_list`]). So a pool is in a heap
//!   queue at most once, and a pool whose `QUEUED` bit is on is never released.
//! * `used` counts blocks handed out and not yet back on the owner's free list, so blocks in
//!   flight on the remote list keep `used > 0`. A pool is released to its arena only when
//!   `used == 0` and the remote word is 0: then no block of it is live anywhere, so no remote free
//!   for it can be in flight, and it can safely be reused for another size class.

use crate::size_class::{any_block_size, block_size, is_medium_class, CLASS_COUNT, GRANULE, MAX_SMALL};
use crate::sync::{const_fn, AtomicBool, AtomicPtr, AtomicU32, AtomicU8, Ordering};
use crate::tunables::{MEDIUM_POOL_SIZE, POOL_HEADER, POOL_SIZE, RELINK_SHARE};
use core::ptr::null_mut;

/// Value of `class` for a pool that is not serving any class (free in its arena, or cached empty).
pub const NO_CLASS: u8 = u8::MAX;

const QUEUED: usize = 1;

/// A free block: its first word links to the next free block, its second holds the free key.
///
/// The *free key* (as glibc's tcache key) is the address of the pool's owner heap: every free
/// stores it in the block, every allocation clears it. A block being freed that already holds it
/// is most likely free already (a double free); a live block holds it only if the program wrote
/// that value there, an address of the allocator's own bookkeeping it never sees (except by reading
/// freed memory), and the owner confirms a match by walking the pool's free list before it aborts.
#[repr(C)]
pub struct Block {
    /// The next free block, or null.
    pub next: *mut Block,
    /// The free key while the block is free; 0 once it is handed out.
    pub key: usize,
}

/// The header at the start of every pool.
///
/// Invariants:
/// * The header is at an address aligned to the pool's size (`POOL_SIZE` for a small pool,
///   `MEDIUM_POOL_SIZE` for a medium one, as `medium` says; fixed for the life of the mapping);
///   the pool's blocks of `bytes` bytes start at `POOL_HEADER` and end at `end`. Every block
///   address inside is 16-byte aligned.
/// * `free` is a singly linked list of free blocks of this pool; blocks between `bump` and `end`
///   have never been handed out since the pool was set up for its class.
/// * Owner-side fields are read and written only by the thread currently using the owner heap.
///   `used`, `class`, `owner`, `remote`, `remote_count` are atomics because other threads read
///   them (remote freers and `stats()`); only the owner writes `used`, `class` and `owner`.
/// * `full` is true exactly when the pool had no free block and no bump space when last looked
///   at, and has therefore been unlinked from its heap's class list; it stays unlinked (its
///   freed blocks gathering on its free list) until `used <= relink_at(class)`, i.e. a
///   `RELINK_SHARE`th of its blocks came back. `slow_at` is `relink_at(class)` while `full`,
///   0 otherwise. Only the owner writes `full` (set with `Release` after the unlink, cleared
///   before a relink); it is atomic because the idle-owner reclaim (`heap/reclaim.rs`) reads it
///   (`Acquire`) from another thread.
#[repr(C, align(64))]
pub struct Pool {
    // --- owner side (first cache line) ---
    /// Local free list.
    pub free: *mut Block,
    /// Next never-used block.
    pub bump: *mut u8,
    /// End of the last whole block.
    pub end: *mut u8,
    /// Owning heap (opaque to this module), null when the pool is free in its arena.
    pub owner: AtomicPtr<u8>,
    /// Next pool in the owner's class list, or in its arena's free list / heap's empty cache.
    pub next: *mut Pool,
    /// Previous pool in the owner's class list.
    pub prev: *mut Pool,
    /// Blocks handed out and not yet returned to the owner's free list.
    pub used: AtomicU32,
    /// Multiplier of the block-boundary test ([`Pool::is_block`]) for the class served.
    /// `check_mul` and `check_cap` are written only while no block of the pool is live (when it is
    /// set up for a class or leaves it), so any thread freeing a live block may read them.
    check_mul: u32,
    /// Blocks in the pool for the class served; 0 when it serves none, so no pointer passes.
    check_cap: u16,
    /// The owner's free takes its slow path once `used` (as an `i32`) has dropped to this:
    /// [`Pool::relink_at`] while the pool is full (enough blocks came back to relink it); 0 while
    /// it is in a class list with other pools (it became empty: retire it); [`SOLE`] while it is
    /// its class list's only pool (kept when empty, so only a count that wrapped below 0 takes the
    /// slow path, to report it). One compare on the free path covers every case.
    pub slow_at: i16,
    /// Size class served, or [`NO_CLASS`].
    pub class: AtomicU8,
    /// The block size of the class served in granules (16 bytes), 0 when it serves none; written
    /// like `check_mul` ([`Pool::block_size`]).
    granules: u8,
    /// Unlinked because it was full (see type invariants).
    pub full: AtomicBool,
    /// The bump region is known to be zeroed (fresh from the OS).
    pub fresh: bool,
    // --- remote side (second cache line), and the fields of the slow paths ---
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
    /// Not remote-side, in the line's spare room (the first line is full): the block size of the
    /// class served, in bytes (any kind of pool), 0 when it serves none; written like `check_mul`.
    bytes: u32,
    /// Not remote-side either: a medium pool (`MEDIUM_POOL_SIZE`, in a medium arena); set when
    /// the header is first written and never changed while the mapping lives.
    medium: bool,
}

const _: () = assert!(core::mem::size_of::<Pool>() <= POOL_HEADER);
// `granules` holds the largest block size in granules in a byte.
const _: () = assert!(MAX_SMALL / GRANULE <= u8::MAX as usize);
// The owner's fast-path fields share one cache line.
#[cfg(not(loom))]
const _: () = assert!(core::mem::offset_of!(Pool, remote) == 64);

/// [`Pool::slow_at`] of a class list's only pool: below any count but a wrapped one.
pub const SOLE: i16 = -1;

/// Rotation of the block-boundary test: the block size's power of two is at most `2^ROT` (512).
const ROT: u32 = 9;
/// The same for medium pools: block sizes' powers of two are at most 2^15 (32 KiB).
const MEDIUM_ROT: u32 = 15;
const _: () = {
    let mut class = 0;
    while class < crate::size_class::CLASS_COUNT {
        assert!(block_size(class).trailing_zeros() <= ROT);
        class += 1;
    }
};

/// The multiplier of the block-boundary test for blocks of `bs` bytes in a pool whose test rotates
/// by `rot` (see [`Pool::is_block`]).
///
/// The block size is `2^s * m` with `m` odd and `s <= ROT`. With `inv` the inverse of `m` modulo
/// 2^32, `x * inv` is `q * 2^s` exactly when `x = q * bs`; otherwise either its low `s` bits are not
/// all zero or its bits above them are at least `(2^(32-s) - 1) / m`, far beyond any block index.
/// Scaled by `2^(ROT-s)` and rotated right by `ROT`, every valid offset gives its block index and
/// every other gives at least 2^18 (the header's offsets are taken modulo the pool size, past the
/// last block: see [`Pool::is_block`]). For medium pools (`rot` 15, offsets below 2^18, block
/// sizes `2^s * m` with `s >= 7`) the same argument holds: an offset `2^s * y` with `y` not a
/// multiple of `m` gives `y * inv mod 2^17`, which is a block index `q` only if `y = q * m`.
const fn check_mul(bs: usize, rot: u32) -> u32 {
    let bs = bs as u32;
    let s = bs.trailing_zeros();
    let m = bs >> s;
    // Newton's iteration doubles the correct low bits each step: 3 (m * m = 1 mod 8) -> 48.
    let mut inv = m;
    let mut i = 0;
    while i < 4 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(m.wrapping_mul(inv)));
        i += 1;
    }
    inv << (rot - s)
}

/// The fault a free was caught making; see [`fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The block is already free.
    DoubleFree,
    /// The pointer is not the start of a block of its pool (interior, or never handed out).
    InvalidPointer,
    /// The pool got back more blocks than it handed out.
    UsedUnderflow,
}

/// Reports a misuse of the allocator by the program on stderr in one line and aborts.
///
/// Writes with `write(2)` from a stack buffer: nothing is allocated, no lock is taken.
#[cold]
#[inline(never)]
pub fn fault(what: Fault, p: *const u8) -> ! {
    let (head, tail): (&[u8], &[u8]) = match what {
        Fault::DoubleFree => (b"double free of ", b" (free(): double free detected)\n"),
        Fault::InvalidPointer => (
            b"invalid free of ",
            b" (free(): invalid pointer, not the start of a block)\n",
        ),
        Fault::UsedUnderflow => (
            b"double free of ",
            b" (free(): more blocks freed than allocated in its pool)\n",
        ),
    };
    let mut buf = [0u8; 160];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if n < buf.len() {
                buf[n] = b;
                n += 1;
            }
        }
    };
    put(b"smallarena: ");
    put(head);
    put(b"0x");
    let addr = p.addr();
    let digits = (usize::BITS - addr.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        put(&[b"0123456789abcdef"[(addr >> (i * 4)) & 15]]);
    }
    put(tail);
    #[cfg(not(loom))]
    // SAFETY: `buf[..n]` is initialised memory we own; write(2) and abort(3) have no other
    // preconditions and allocate nothing.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n);
        libc::abort();
    }
    #[cfg(loom)]
    panic!(
        "{}",
        core::str::from_utf8(&buf[..n]).unwrap_or("smallarena: fault")
    );
}

impl Pool {
    const_fn! {
        /// A header for a pool serving nothing, with no free space: the sentinel a heap's empty class
        /// points to, so the allocation fast path needs no null check.
        pub fn sentinel() -> Pool {
            Pool {
                free: null_mut(),
                bump: null_mut(),
                end: null_mut(),
                owner: AtomicPtr::new(null_mut()),
                next: null_mut(),
                prev: null_mut(),
                used: AtomicU32::new(0),
                check_mul: 0,
                check_cap: 0,
                slow_at: 0,
                class: AtomicU8::new(NO_CLASS),
                granules: 0,
                full: AtomicBool::new(false),
                fresh: false,
                remote: RemoteSide {
                    head: AtomicPtr::new(null_mut()),
                    count: AtomicU32::new(0),
                    queue_next: AtomicPtr::new(null_mut()),
                    bytes: 0,
                    medium: false,
                },
            }
        }
    }

    /// The small pool holding `p` (a pointer into a small arena), found by masking its address.
    #[inline(always)]
    pub fn of(p: *mut u8) -> *mut Pool {
        p.map_addr(|a| a & !(POOL_SIZE - 1)).cast()
    }

    /// The medium pool holding `p` (a pointer into a medium arena).
    #[inline(always)]
    pub fn of_medium(p: *mut u8) -> *mut Pool {
        p.map_addr(|a| a & !(MEDIUM_POOL_SIZE - 1)).cast()
    }

    /// Writes a fresh header for a pool that serves nothing yet.
    ///
    /// # Safety
    /// `pool` must point to the pool's bytes (`MEDIUM_POOL_SIZE` if `medium`, else `POOL_SIZE`),
    /// aligned to that size, which we own exclusively.
    pub unsafe fn init_free(pool: *mut Pool, fresh: bool, medium: bool) {
        // SAFETY: the caller gives exclusive ownership of the pool's memory.
        unsafe {
            pool.write(Pool::sentinel());
            (*pool).fresh = fresh;
            (*pool).remote.medium = medium;
        }
    }

    /// Sets the pool up to serve `class` for `owner`: all blocks become bump space.
    ///
    /// # Safety
    /// The caller owns the pool exclusively (it is not published to any heap or arena list), its
    /// `used` is 0 and its remote word is 0; `class` is medium exactly when the pool is.
    pub unsafe fn assign(pool: *mut Pool, class: usize, owner: *mut u8) {
        let bs = any_block_size(class);
        let cap = Pool::capacity(class);
        let rot = if is_medium_class(class) { MEDIUM_ROT } else { ROT };
        // SAFETY: per the caller, the header is ours.
        debug_assert_eq!(unsafe { Pool::is_medium(pool) }, is_medium_class(class));
        // SAFETY: exclusive access per the caller; all addresses stay inside the pool.
        unsafe {
            let base = pool.cast::<u8>();
            (*pool).free = null_mut();
            (*pool).bump = base.add(POOL_HEADER);
            (*pool).end = base.add(POOL_HEADER + cap * bs);
            (*pool).next = null_mut();
            (*pool).prev = null_mut();
            (*pool).full.store(false, Ordering::Relaxed);
            (*pool).slow_at = 0;
            // Counters start afresh with every assignment: whatever a wrong free left there
            // before (caught or not) does not follow the pool into its next use.
            (*pool).used.store(0, Ordering::Relaxed);
            (*pool).remote.count.store(0, Ordering::Relaxed);
            (*pool).check_mul = check_mul(bs, rot);
            (*pool).check_cap = cap as u16;
            // Small pools only: the size-less free of a small block reads it; medium pools keep
            // 0 (their sizes do not fit a byte) and are asked through `bytes`.
            (*pool).granules = if is_medium_class(class) { 0 } else { (bs / GRANULE) as u8 };
            (*pool).remote.bytes = bs as u32;
            (*pool).class.store(class as u8, Ordering::Relaxed);
            (*pool).owner.store(owner, Ordering::Release);
        }
    }

    /// Whether `p`, a pointer into `pool`, is the start of one of its blocks for the class it
    /// serves. Always false when it serves no class. Constant time: a multiply and a rotate.
    ///
    /// # Safety
    /// `pool` is `Pool::of(p)`, a mapped pool header (see `check_mul` for when it may be read).
    #[inline(always)]
    pub unsafe fn is_block(pool: *const Pool, p: *const u8) -> bool {
        // Offset from the first block, modulo the pool size: the header's offsets wrap to the
        // pool's last `POOL_HEADER` bytes, past the end of its last block (`check_cap` blocks of
        // the class end at most at `POOL_SIZE - POOL_HEADER`), so they fail like any offset there.
        let x = (p.addr().wrapping_sub(POOL_HEADER) & (POOL_SIZE - 1)) as u32;
        // SAFETY: per the caller.
        let (mul, cap) = unsafe { ((*pool).check_mul, (*pool).check_cap) };
        x.wrapping_mul(mul).rotate_right(ROT) < u32::from(cap)
    }

    /// Whether `p`, a pointer into the medium pool `pool`, is the start of one of its blocks:
    /// [`Pool::is_block`] for medium pools.
    ///
    /// # Safety
    /// `pool` is `Pool::of_medium(p)`, a mapped medium pool header.
    #[inline(always)]
    pub unsafe fn is_block_medium(pool: *const Pool, p: *const u8) -> bool {
        let x = (p.addr().wrapping_sub(POOL_HEADER) & (MEDIUM_POOL_SIZE - 1)) as u32;
        // SAFETY: per the caller.
        let (mul, cap) = unsafe { ((*pool).check_mul, (*pool).check_cap) };
        x.wrapping_mul(mul).rotate_right(MEDIUM_ROT) < u32::from(cap)
    }

    /// [`Pool::is_block`] or [`Pool::is_block_medium`], as the pool's kind says.
    ///
    /// # Safety
    /// `pool` is the pool holding `p` (found with the mask of its kind), a mapped pool header.
    #[inline]
    pub unsafe fn is_block_any(pool: *const Pool, p: *const u8) -> bool {
        // SAFETY: per the caller; `medium` never changes while the mapping lives.
        unsafe {
            if Pool::is_medium(pool) {
                Pool::is_block_medium(pool, p)
            } else {
                Pool::is_block(pool, p)
            }
        }
    }

    /// The block size of the class any pool (small or medium) serves, 0 when it serves none.
    ///
    /// # Safety
    /// As for [`Pool::block_size`].
    #[inline(always)]
    pub unsafe fn bytes(pool: *const Pool) -> usize {
        // SAFETY: per the caller.
        unsafe { (*pool).remote.bytes as usize }
    }

    /// Whether the pool is a medium one (`MEDIUM_POOL_SIZE`, in a medium arena).
    ///
    /// # Safety
    /// `pool` is a mapped pool header (the flag never changes while the mapping lives).
    #[inline]
    pub unsafe fn is_medium(pool: *const Pool) -> bool {
        // SAFETY: per the caller.
        unsafe { (*pool).remote.medium }
    }

    /// The block size of the class the small pool serves, 0 when it serves none (or the pool is a
    /// medium one): one byte load, for a caller that has a block but not its size.
    ///
    /// # Safety
    /// `pool` is a mapped pool header, read while one of its blocks is live (the value is written
    /// only while none is, when the pool is set up for a class or leaves it).
    #[inline(always)]
    pub unsafe fn block_size(pool: *const Pool) -> usize {
        // SAFETY: per the caller.
        usize::from(unsafe { (*pool).granules }) * GRANULE
    }

    /// The pool stops serving its class (cached empty in a heap, or back in its arena): no pointer
    /// passes [`Pool::is_block`] until it is assigned again.
    ///
    /// # Safety
    /// The caller owns the pool exclusively and none of its blocks is live.
    pub unsafe fn unassign(pool: *mut Pool) {
        // SAFETY: per the caller.
        unsafe {
            (*pool).class.store(NO_CLASS, Ordering::Relaxed);
            (*pool).check_cap = 0;
            (*pool).check_mul = 0;
            (*pool).granules = 0;
            (*pool).remote.bytes = 0;
            // Its blocks were handed out: no longer known to be zero.
            (*pool).fresh = false;
        }
    }

    /// How many blocks a pool of `class` (small or medium) holds.
    pub const fn capacity(class: usize) -> usize {
        let size = if is_medium_class(class) {
            MEDIUM_POOL_SIZE
        } else {
            POOL_SIZE
        };
        (size - POOL_HEADER) / any_block_size(class)
    }

    /// `used` at or below which a full pool of `class` goes back into its class list: one
    /// `RELINK_SHARE`th of its blocks (at least one) must have come back first, so a pool that
    /// gets a block back now and then is not relinked and unlinked again for every block.
    pub const fn relink_at(class: usize) -> i16 {
        let cap = Pool::capacity(class);
        let back = if cap / RELINK_SHARE > 1 { cap / RELINK_SHARE } else { 1 };
        (cap - back) as i16
    }

    /// Splices a chain of `n` blocks, `head` to `tail` linked through [`Block::next`], onto the
    /// remote list from a thread that does not own the pool: one count add and one CAS for the
    /// whole chain (the remote-free buffer's flush, `heap::remote_buffer`).
    /// Returns true when this call turned `QUEUED` on: the caller must then push the pool onto
    /// its owner's remote queue.
    ///
    /// # Safety
    /// `pool` is a live pool; `head`..`tail` are `n >= 1` blocks of it, each freed by the program
    /// and owned by the caller (not published anywhere else), linked from `head` to `tail`
    /// (`tail.next` may hold anything: it is overwritten). After this call the blocks belong to
    /// the owner.
    #[inline]
    pub unsafe fn push_remote_chain(
        pool: *mut Pool,
        head: *mut Block,
        tail: *mut Block,
        n: u32,
    ) -> bool {
        debug_assert!(n >= 1 && !head.is_null() && !tail.is_null());
        // SAFETY: the pool header lives as long as any block of it is live (the chain's are: the
        // owner counts them in `used` until they reach its free list).
        let side = unsafe { &(*pool).remote };
        side.count.fetch_add(n, Ordering::Relaxed);
        let mut old = side.head.load(Ordering::Relaxed);
        loop {
            let next = old.map_addr(|a| a & !QUEUED);
            // SAFETY: the chain is ours until the CAS below publishes it.
            unsafe { (*tail).next = next };
            let new = head.map_addr(|a| a | QUEUED);
            match side
                .head
                .compare_exchange_weak(old, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return old.addr() & QUEUED == 0,
                Err(cur) => old = cur,
            }
        }
    }

    /// Puts back a list taken off this pool's remote list ([`Pool::take_remote_and_unqueue`]) by
    /// a thread that is not the owner (the idle-owner reclaim, `heap/reclaim.rs`, when the pool
    /// cannot be reclaimed): the blocks go back in front of whatever was pushed since, and
    /// `QUEUED` is set. Returns true when this call turned `QUEUED` on: the caller must then push
    /// the pool onto its owner's remote queue, as a remote freer does. Counts the blocks back
    /// into the pending count.
    ///
    /// # Safety
    /// `taken` came off this pool's remote list and is not empty; the caller owns its blocks.
    pub unsafe fn push_remote_list(pool: *mut Pool, taken: Taken) -> bool {
        // SAFETY: per the caller, `taken` is `len > 0` blocks of this pool, ours, linked from
        // `head` to `tail`: what `push_remote_chain` asks.
        unsafe { Pool::push_remote_chain(pool, taken.head, taken.tail, taken.len) }
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
    /// and clears `QUEUED`, so the next remote free queues the pool again. Also the idle-owner
    /// reclaim (`heap/reclaim.rs`), which pops pools off a heap's queue under the lock.
    ///
    /// # Safety
    /// Only the thread that has just popped this pool from its owner heap's queue may call this
    /// (its owner, or the reclaim holding the lock).
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

    /// Owner: one more block handed out (the allocation fast path).
    ///
    /// # Safety
    /// The pool is owned by the calling thread's heap: only the owner writes `used`.
    #[inline(always)]
    pub(crate) unsafe fn add_used(pool: *mut Pool) {
        // SAFETY: per the caller, no other thread writes `used` (readers only load it).
        let u = unsafe { &(*pool).used };
        u.store(u.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Owner: puts blocks taken off the remote list ([`Pool::take_remote_keep_queued`],
    /// [`Pool::take_remote_and_unqueue`]) at the front of the free list, and counts them out of
    /// `used`. Aborts with [`Fault::UsedUnderflow`] when that would wrap (more blocks came back than
    /// were handed out: a double free that reached the remote list twice).
    ///
    /// # Safety
    /// The pool is owned by the calling thread's heap, or by an abandoned heap and the caller
    /// holds the lock, or the idle-owner reclaim holds it (every block of it taken, so its owner
    /// can no longer reach it); `taken` came off this pool's remote list, so its blocks are the
    /// caller's.
    pub(crate) unsafe fn splice(pool: *mut Pool, taken: Taken) {
        if taken.len == 0 {
            return;
        }
        // SAFETY: per the caller, the owner-side fields and the taken blocks are ours; `tail` is
        // the last of `len > 0` blocks, so not null.
        unsafe {
            (*taken.tail).next = (*pool).free;
            (*pool).free = taken.head;
            let u = &(*pool).used;
            let used = u.load(Ordering::Relaxed);
            if used < taken.len {
                fault(Fault::UsedUnderflow, taken.head.cast());
            }
            u.store(used - taken.len, Ordering::Relaxed);
        }
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

/// The most blocks any pool holds (small class 0, or the smallest medium class if that has more).
const MAX_CAPACITY: usize = if Pool::capacity(0) > Pool::capacity(CLASS_COUNT) {
    Pool::capacity(0)
} else {
    Pool::capacity(CLASS_COUNT)
};
/// A broken invariant, found by the invariant checker (`heap::check`): which rule, and the
/// address of the pool, arena or block where it fails. Made without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule that does not hold.
    pub rule: &'static str,
    /// Where: the address of the pool, arena, heap or block concerned.
    pub at: usize,
}

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (at {:#x})", self.rule, self.at)
    }
}

/// `Err` with `rule` at `at` unless `ok`.
#[inline]
pub(crate) fn ensure(ok: bool, rule: &'static str, at: *const u8) -> Result<(), Violation> {
    if ok {
        Ok(())
    } else {
        Err(Violation {
            rule,
            at: at.addr(),
        })
    }
}

impl Pool {
    /// Checks the bookkeeping of a pool serving `class`: its geometry, its free list (every
    /// block inside the pool's handed-out range, on a block boundary, carrying the owner's free
    /// key, no cycle) and its count (`used` plus the free blocks is every block handed out, at
    /// most the pool's capacity). The remote list is not walked (other threads push onto it).
    ///
    /// # Safety
    /// `pool` is a live pool header whose owner-side fields the caller may read: owned by the
    /// calling thread's heap, or by an abandoned heap while the lock is held.
    pub(crate) unsafe fn check(pool: *const Pool, class: usize) -> Result<(), Violation> {
        let at = pool.cast::<u8>();
        let bs = any_block_size(class);
        let cap = Pool::capacity(class);
        // SAFETY: per the caller, the owner-side fields are ours to read; free blocks are blocks
        // of the pool (checked before each is read), which the owner may read.
        unsafe {
            ensure(
                usize::from((*pool).class.load(Ordering::Relaxed)) == class,
                "pool serves another class than its list",
                at,
            )?;
            let start = at.addr() + POOL_HEADER;
            ensure(
                (*pool).end.addr() == start + cap * bs,
                "pool end is not after its last whole block",
                at,
            )?;
            let bump = (*pool).bump.addr();
            ensure(
                start <= bump && bump <= (*pool).end.addr() && (bump - start) % bs == 0,
                "pool bump pointer is off its blocks",
                at,
            )?;
            ensure(
                (*pool).check_cap as usize == cap
                    && Pool::bytes(pool) == bs
                    && (is_medium_class(class) || usize::from((*pool).granules) * GRANULE == bs),
                "pool boundary test is not set up for its class",
                at,
            )?;
            let key = (*pool).owner.load(Ordering::Relaxed).addr();
            let mut free = 0;
            let mut b = (*pool).free;
            while !b.is_null() {
                ensure(free < cap, "pool free list has a cycle", at)?;
                let a = b.cast::<u8>();
                ensure(
                    a.addr() >= start && a.addr() < bump,
                    "free block outside its pool's handed-out blocks",
                    a,
                )?;
                ensure(
                    Pool::is_block_any(pool, a),
                    "free block off a block boundary",
                    a,
                )?;
                ensure((*b).key == key, "free block without its pool's free key", a)?;
                free += 1;
                b = (*b).next;
            }
            let used = (*pool).used.load(Ordering::Relaxed) as usize;
            ensure(used <= cap, "pool counts more blocks in use than it holds", at)?;
            ensure(
                used + free == (bump - start) / bs,
                "pool blocks in use plus free blocks differ from blocks handed out",
                at,
            )
        }
    }

    /// Checks a pool that serves no class (cached empty in a heap, or free in its arena): no
    /// block in use, no block passes the boundary test.
    ///
    /// # Safety
    /// As for [`Pool::check`], or the pool is free in its arena and the lock is held.
    pub(crate) unsafe fn check_unassigned(pool: *const Pool) -> Result<(), Violation> {
        let at = pool.cast::<u8>();
        // SAFETY: per the caller.
        unsafe {
            ensure(
                (*pool).class.load(Ordering::Relaxed) == NO_CLASS,
                "pool serving no class has a class",
                at,
            )?;
            ensure(
                (*pool).check_cap == 0 && (*pool).granules == 0,
                "pool serving no class accepts blocks",
                at,
            )?;
            ensure(
                (*pool).used.load(Ordering::Relaxed) == 0,
                "pool serving no class has blocks in use",
                at,
            )
        }
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
            // A list longer than any pool's capacity has a cycle: a block pushed twice (a double
            // free whose key was overwritten in between).
            if t.len as usize >= MAX_CAPACITY {
                fault(Fault::DoubleFree, cur.cast());
            }
            t.len += 1;
            t.tail = cur;
            // SAFETY: per the caller, each node is a block we own.
            cur = unsafe { (*cur).next };
        }
        t
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::size_class::block_size;

    /// A pool header (and room behind it) to try every offset against.
    #[repr(C, align(16384))]
    struct Space([u8; POOL_SIZE]);

    /// The boundary test is exact: for every class and every byte offset of a pool, a pointer
    /// passes exactly when it starts one of the pool's blocks; a pool serving nothing rejects all.
    #[test]
    fn is_block_accepts_exactly_the_block_starts() {
        let mut space = Box::new(Space([0; POOL_SIZE]));
        let pool = space.0.as_mut_ptr().cast::<Pool>();
        // SAFETY: the box is POOL_SIZE bytes, POOL_SIZE-aligned, ours alone.
        unsafe { Pool::init_free(pool, false, false) };
        let base = pool.cast::<u8>();
        let step = if cfg!(miri) { 16 } else { 1 };
        for off in (0..POOL_SIZE).step_by(step) {
            // SAFETY: a header of a pool serving nothing, inside the box.
            assert!(!unsafe { Pool::is_block(pool, base.wrapping_add(off)) });
        }
        for class in 0..CLASS_COUNT {
            let bs = block_size(class);
            // SAFETY: as above; nothing of it is live.
            unsafe { Pool::assign(pool, class, null_mut()) };
            for off in (0..POOL_SIZE).step_by(step) {
                let want = off >= POOL_HEADER
                    && (off - POOL_HEADER) % bs == 0
                    && (off - POOL_HEADER) / bs < Pool::capacity(class);
                // SAFETY: as above.
                let got = unsafe { Pool::is_block(pool, base.wrapping_add(off)) };
                assert_eq!(got, want, "class {class} offset {off}");
            }
            // SAFETY: as above.
            unsafe { Pool::unassign(pool) };
            // SAFETY: as above.
            assert!(!unsafe { Pool::is_block(pool, base.wrapping_add(POOL_HEADER)) });
        }
    }

    /// A medium pool's header and room behind it.
    #[repr(C, align(262144))]
    struct MediumSpace([u8; MEDIUM_POOL_SIZE]);

    /// The medium pools' boundary test is exact too, for every medium class.
    #[test]
    fn medium_is_block_accepts_exactly_the_block_starts() {
        // SAFETY: an all-zero byte array is a valid value; boxed straight on the heap (too big for
        // Miri's and the test threads' stacks).
        let mut space: Box<MediumSpace> = unsafe { Box::new_zeroed().assume_init() };
        let pool = space.0.as_mut_ptr().cast::<Pool>();
        // SAFETY: the box is MEDIUM_POOL_SIZE bytes, aligned to that, ours alone.
        unsafe { Pool::init_free(pool, false, true) };
        let base = pool.cast::<u8>();
        let step = if cfg!(miri) { 1024 + 16 } else { 16 };
        for class in CLASS_COUNT..crate::size_class::CLASSES {
            let bs = any_block_size(class);
            // SAFETY: as above; nothing of it is live.
            unsafe { Pool::assign(pool, class, null_mut()) };
            // SAFETY: as above.
            assert_eq!(unsafe { Pool::bytes(pool) }, bs);
            let mut hits = 0;
            // Every 16th byte (blocks are 16-aligned; an offset not a multiple of 16 also fails
            // the low-bits test), plus every block start and the bytes around it.
            let starts = (0..Pool::capacity(class)).map(|i| POOL_HEADER + i * bs);
            let around = starts.flat_map(|o| [o - 1, o, o + 1, o + 8]);
            for off in (0..MEDIUM_POOL_SIZE).step_by(step).chain(around) {
                let want = off >= POOL_HEADER
                    && (off - POOL_HEADER) % bs == 0
                    && (off - POOL_HEADER) / bs < Pool::capacity(class);
                // SAFETY: as above.
                let got = unsafe { Pool::is_block_medium(pool, base.wrapping_add(off)) };
                assert_eq!(got, want, "class {class} offset {off}");
                // SAFETY: as above.
                assert_eq!(got, unsafe { Pool::is_block_any(pool, base.wrapping_add(off)) });
                hits += usize::from(got);
            }
            assert!(hits >= Pool::capacity(class));
            assert!(Pool::capacity(class) >= 7, "class {class}");
            // SAFETY: as above.
            unsafe { Pool::unassign(pool) };
        }
    }

    /// Reassigning a pool resets its counters, whatever a wrong free left in them.
    #[test]
    fn assign_resets_the_counters() {
        let mut space = Box::new(Space([0; POOL_SIZE]));
        let pool = space.0.as_mut_ptr().cast::<Pool>();
        // SAFETY: the box is POOL_SIZE bytes, POOL_SIZE-aligned, ours alone.
        unsafe {
            Pool::init_free(pool, false, false);
            Pool::assign(pool, 3, null_mut());
            (*pool).used.store(u32::MAX, Ordering::Relaxed);
            (*pool).remote.count.store(7, Ordering::Relaxed);
            Pool::unassign(pool);
            Pool::assign(pool, 5, null_mut());
            assert_eq!((*pool).used.load(Ordering::Relaxed), 0);
            assert_eq!(Pool::remote_pending(pool), 0);
        }
    }
}
