//! Per-thread heaps: the allocation and free fast paths, and everything a thread owns.
//!
//! Each thread that allocates gets a [`Heap`] through a const-initialised thread-local that
//! never allocates. A heap holds, per size class, a doubly linked list of its pools that have
//! room; the list head is the pool the fast path serves from. Full pools leave the list and come
//! back when a block of theirs is freed. Frees from the owning thread go straight onto the pool's
//! free list; frees from other threads are batched per pool in the freeing thread's heap
//! (`heap/remote_buffer.rs`) and go onto the pool's lock-free remote list a chain at a time (see
//! [`crate::pool`]), and the pool is pushed onto the heap's remote queue, which the owner drains
//! on its slow path.
//!
//! Heaps are never unmapped. When a thread exits, its heap gives its empty pools back and is put on
//! the abandoned list; the next thread that needs a heap adopts it, with every pool, every
//! pending remote free and every counter, so nothing is lost when threads come and go. After
//! `fork()`, the child abandons the heaps of the threads that did not survive the fork (or, with
//! the share fork policy, forgets every inherited heap: see [`crate::fork`]).
//!
//! This file holds the heap, its fast paths and its refill; three protocols have files of their
//! own: `heap/remote.rs` (remote frees and the owner's drain of its queue; the freeing thread's
//! batching of them in `heap/remote_buffer.rs`),
//! `heap/lifecycle.rs` (thread exit, acquiring and abandoning heaps, the fork handlers) and
//! `heap/reclaim.rs` (any thread's slow path takes back an idle live heap's wholly freed pools);
//! `heap/check.rs` is the invariant checker.

use crate::lock::Locked;
use crate::os;
use crate::pool::{fault, Block, Fault, Pool, SOLE};
use crate::size_class::{any_block_size, block_size, class_of, is_medium_class, CLASSES};
#[cfg(not(loom))]
use crate::tunables::EXIT_ROUNDS;
use crate::tunables::{EMPTY_CACHE, HEAP_SLAB, MEDIUM_EMPTY_CACHE, REMOTE_FREES_BEFORE_HEAP};
use crate::sync::{global, tls, tls_ptr, AtomicBool, LoadPtr, AtomicPtr, AtomicUsize, Ordering};
use core::cell::{Cell, UnsafeCell};
use core::ptr::null_mut;

/// Empty pools a heap keeps for reuse, per kind of pool (indexed by [`Pool::is_medium`]).
const EMPTY_CACHES: [usize; 2] = [EMPTY_CACHE, MEDIUM_EMPTY_CACHE];

pub(crate) mod check;
mod lifecycle;
mod reclaim;
mod remote;
mod remote_buffer;

// The crate reaches the heap through `heap::`: the protocol files' names are the heap's.
#[allow(unused_imports)] // which are used depends on loom and Miri
pub(crate) use lifecycle::*;
#[allow(unused_imports)] // which are used depends on loom and Miri
pub(crate) use reclaim::*;
#[allow(unused_imports)] // which are used depends on loom and Miri
pub(crate) use remote::*;

/// A thread's allocation state.
///
/// Invariants:
/// * A heap is used by at most one thread at a time: the thread whose `CURRENT` points to it, or
///   the thread that popped it off the abandoned list (both under [`crate::lock::LOCK`]). All
///   non-atomic fields are touched only by that thread.
/// * `classes[c]` is the head of the list of pools of class `c` (small or medium) owned by this
///   heap that are not full, or the shared sentinel pool (no free block, no bump space) when there
///   is none.
/// * Every pool whose `owner` is this heap is in exactly one of: a class list, the full state
///   (unlinked, `full == true`), the empty cache of its kind (`class == NO_CLASS`):
///   `empty[k]` lists `empty_count[k]` pools with `medium == (k == 1)`.
/// * `requested` is written only by the thread using the heap (load + store, no RMW); it is the
///   wrapping sum of bytes this heap's thread allocated minus bytes it freed.
/// * Heap-list links (`all_next`, `abandoned_next`) are guarded by the lock; `abandoned` is written
///   only under the lock, and read without it by remote freers (see [`RECLAIM`]).
/// * While abandoned, the heap and its pools are touched only under the lock.
/// * `slow_paths` is written only by the thread using the heap (load + store, no RMW): it counts
///   the refill and drain slow paths it ran (wrapping). `slow_paths_seen` is guarded by the lock:
///   the count the idle-owner reclaim last saw (see `heap/reclaim.rs`).
/// * `remote_buffer` holds blocks of other heaps' pools only, freed by this heap's thread (see
///   [`remote_buffer::RemoteBuffer`]); it is empty while the heap is abandoned.
#[repr(C)]
pub struct Heap {
    classes: [*mut Pool; CLASSES],
    requested: AtomicUsize,
    queue: AtomicPtr<Pool>,
    empty: [*mut Pool; 2],
    empty_count: [usize; 2],
    all_next: *mut Heap,
    abandoned_next: *mut Heap,
    abandoned: AtomicBool,
    slow_paths: AtomicUsize,
    slow_paths_seen: usize,
    /// Blocks this heap's thread freed into other heaps' pools, not yet sent to them.
    remote_buffer: remote_buffer::RemoteBuffer,
}

struct Sentinel(UnsafeCell<Pool>);
// SAFETY: the sentinel pool is never written: the fast path only reads it and falls through to
// the slow path, which never links, frees into or assigns the sentinel.
unsafe impl Sync for Sentinel {}
global! {
    static SENTINEL: Sentinel = Sentinel(UnsafeCell::new(Pool::sentinel()));
}

fn sentinel() -> *mut Pool {
    SENTINEL.0.get()
}

/// The heap list: every heap ever made, the abandoned ones, and the slab new heaps are carved
/// from; guarded by the lock.
struct HeapList {
    all: *mut Heap,
    abandoned: *mut Heap,
    slab: *mut u8,
    slab_left: usize,
    count: usize,
    /// Times a heap was abandoned (handed back at a thread's exit) since the process started.
    handoffs: usize,
}
struct HeapListCell(UnsafeCell<HeapList>);
// SAFETY: only touched while holding the arena lock (every access takes a `&mut Locked`).
unsafe impl Sync for HeapListCell {}
global! {
    static HEAP_LIST: HeapListCell = HeapListCell(UnsafeCell::new(HeapList {
    all: null_mut(),
    abandoned: null_mut(),
    slab: null_mut(),
    slab_left: 0,
    count: 0,
    handoffs: 0,
}));
}

fn heap_list(_proof: &mut Locked) -> &mut HeapList {
    // SAFETY: the `Locked` proves the lock is held; the &mut borrow of it makes this unique.
    unsafe { &mut *HEAP_LIST.0.get() }
}

global! {
    /// Bytes requested by threads that had no heap when they freed or allocated large blocks.
    static ORPHAN_REQUESTED: AtomicUsize = AtomicUsize::new(0);
}
global! {
    static FORK_HANDLERS: AtomicBool = AtomicBool::new(false);
}

global! {
    /// Set when a remote free queued a pool on an abandoned heap: the next thread that takes the lock
    /// on a slow path drains the abandoned heaps' queues, so memory freed into a dead thread's pools
    /// goes back to the arenas even if no thread ever adopts that heap.
    ///
    /// Protocol (a Dekker pair, hence `SeqCst` on both sides): a remote freer pushes onto the queue,
    /// then loads `abandoned`; [`abandon`] stores `abandoned`, then drains the queue again. Either the
    /// abandoning thread sees the push, or the freer sees the flag and sets `RECLAIM`.
    static RECLAIM: AtomicBool = AtomicBool::new(false);
}

/// No heap: the next allocation acquires one and arms the exit hook.
const FRESH: u8 = 0;
/// `CURRENT` is the thread's heap.
const ACTIVE: u8 = 1;
/// Past the thread's last exit hook: nothing would abandon a heap kept now, so each allocation
/// borrows one and gives it back.
const DEAD: u8 = 2;

tls_ptr! {
    static CURRENT: Cell<*mut Heap>;
}
tls! {
    static STATE: Cell<u8> = Cell::new(FRESH);
}

/// This thread's heap, or null.
#[inline(always)]
fn current() -> *mut Heap {
    CURRENT.load_ptr()
}

// ---------------------------------------------------------------------------------------------
// Fast paths
// ---------------------------------------------------------------------------------------------

/// Allocates a block for a small request (`is_small(size, align)`). When the arena cannot grow,
/// in arena mode, a block of the system allocator ([`out_of_arena`]); null if that fails too.
#[inline(always)]
pub(crate) fn alloc(size: usize) -> *mut u8 {
    alloc_sized::<false>(class_of(size), size)
}

/// Like [`alloc`], and the block reads as zeros.
#[inline(always)]
pub(crate) fn alloc_zeroed(size: usize) -> *mut u8 {
    alloc_sized::<true>(class_of(size), size)
}

/// A block of the small `class` (`< CLASS_COUNT`), zeroed if `ZERO`, counted as `size`
/// requested bytes (what the matching [`free`] will be told). Out of memory: as [`alloc`].
#[inline(always)]
pub(crate) fn alloc_sized<const ZERO: bool>(class: usize, size: usize) -> *mut u8 {
    let heap = current();
    if heap.is_null() {
        return alloc_without_heap::<ZERO>(class, size);
    }
    // SAFETY: `heap` is this thread's heap (type invariant: only we touch it).
    unsafe { alloc_in::<ZERO, false>(heap, class, block_size(class), size) }
}

/// A block of the medium `class` (`CLASS_COUNT..CLASSES`), as [`alloc_sized`] for small ones;
/// freed with [`free_medium`].
#[inline]
pub(crate) fn alloc_medium_sized<const ZERO: bool>(class: usize, size: usize) -> *mut u8 {
    let heap = current();
    if heap.is_null() {
        return alloc_without_heap::<ZERO>(class, size);
    }
    // SAFETY: `heap` is this thread's heap (type invariant: only we touch it).
    unsafe { alloc_in::<ZERO, false>(heap, class, any_block_size(class), size) }
}

/// A block for a request served by a class (`is_served(size, align)`), small or medium; freed
/// with [`free_any`]. Out of memory: as [`alloc`].
#[inline]
pub(crate) fn alloc_any<const ZERO: bool>(size: usize) -> *mut u8 {
    if size <= crate::size_class::MAX_SMALL {
        alloc_sized::<ZERO>(class_of(size), size)
    } else {
        alloc_medium_sized::<ZERO>(crate::size_class::medium_class_of(size), size)
    }
}

/// The fast path of [`alloc_sized`] alone: null, having changed nothing, when the calling thread
/// has no heap or the head pool of `class` has no block ready (then [`alloc_sized`] serves it).
/// For a caller whose own fallback must not keep the request alive across a call.
#[inline(always)]
pub(crate) fn try_alloc_sized<const ZERO: bool>(class: usize, size: usize) -> *mut u8 {
    let heap = current();
    if heap.is_null() {
        return null_mut();
    }
    // SAFETY: `heap` is this thread's heap (type invariant: only we touch it).
    unsafe { alloc_in::<ZERO, true>(heap, class, block_size(class), size) }
}

/// [`try_alloc_sized`] with the thread's heap read as `CURRENT.load_ptr_at(index)` (`index <
/// 4`): null, having done nothing, when `index` is not 0 (the caller's fast-path gate is
/// closed), as when there is no heap. For the preload's `malloc`, whose gate and heap test are
/// then one.
#[inline(always)]
#[cfg_attr(not(feature = "initial-exec-tls"), allow(dead_code))]
pub(crate) fn try_alloc_sized_at<const ZERO: bool>(
    index: usize,
    class: usize,
    size: usize,
) -> *mut u8 {
    let heap = CURRENT.load_ptr_at(index);
    if heap.is_null() {
        return null_mut();
    }
    // SAFETY: `heap` is this thread's heap (type invariant: only we touch it).
    unsafe { alloc_in::<ZERO, true>(heap, class, block_size(class), size) }
}

/// Serves `class` (`< CLASSES`, blocks of `bs` bytes) from the head pool; when it has no block
/// ready, the slow path (or null, if `FAST_ONLY`).
///
/// # Safety
/// `heap` is used by the calling thread only.
#[inline(always)]
unsafe fn alloc_in<const ZERO: bool, const FAST_ONLY: bool>(
    heap: *mut Heap,
    class: usize,
    bs: usize,
    size: usize,
) -> *mut u8 {
    debug_assert_eq!(bs, any_block_size(class));
    // SAFETY: the heap is ours; class < CLASSES; the list head is a live pool of ours or the
    // read-only sentinel, whose free list is null and bump == end, so it is never written here.
    unsafe {
        let pool = (*heap).classes[class];
        let b = (*pool).free;
        let p = if !b.is_null() {
            (*pool).free = (*b).next;
            if ZERO {
                core::ptr::write_bytes(b.cast::<u8>(), 0, bs);
            }
            b.cast::<u8>()
        } else {
            let p = (*pool).bump;
            if p >= (*pool).end {
                if FAST_ONLY {
                    return null_mut();
                }
                return alloc_slow::<ZERO>(heap, class, size);
            }
            (*pool).bump = p.add(bs);
            if ZERO && !(*pool).fresh {
                core::ptr::write_bytes(p, 0, bs);
            }
            p
        };
        // A live block never carries the free key (it may have one from an earlier life).
        (*p.cast::<Block>()).key = 0;
        Pool::add_used(pool);
        add_requested(heap, size);
        p
    }
}

/// Frees a small block from the arena: [`free_of`] for small blocks.
///
/// # Safety
/// As for [`free_of`].
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8, size: usize) {
    // SAFETY: forwarding the caller's contract.
    unsafe { free_of::<false>(p, size) }
}

/// Frees a medium block (from [`alloc_medium_sized`]): [`free_of`] for medium blocks.
///
/// # Safety
/// As for [`free_of`].
#[inline]
pub(crate) unsafe fn free_medium(p: *mut u8, size: usize) {
    // SAFETY: forwarding the caller's contract.
    unsafe { free_of::<true>(p, size) }
}

/// Frees a block from [`alloc_any`] for a request of `size` bytes.
///
/// # Safety
/// As for [`free_of`].
#[inline]
pub(crate) unsafe fn free_any(p: *mut u8, size: usize) {
    // SAFETY: forwarding the caller's contract.
    unsafe {
        if size <= crate::size_class::MAX_SMALL {
            free(p, size)
        } else {
            free_medium(p, size)
        }
    }
}

/// Frees a block from the arena: a small block ([`alloc`]) unless `MEDIUM`, a medium block
/// ([`alloc_medium_sized`]) if `MEDIUM`.
///
/// Wrong frees are caught where that is cheap, and abort the process with one line on stderr
/// ([`fault`]): a pointer that is not the start of a block of its pool's class (an interior
/// pointer, the pool header, a pool serving no class), a block that already carries its pool's
/// free key and is found free (double free), a pool whose `used` count would wrap.
///
/// # Safety
/// `p` was returned by [`alloc`]/[`alloc_zeroed`] (by [`alloc_medium_sized`] if `MEDIUM`) for a
/// request of `size` bytes and not freed. Any other pointer into a mapped arena of that kind is
/// caught as above, or (a block handed out again since it was freed) freed as if it were live.
#[inline(always)]
unsafe fn free_of<const MEDIUM: bool>(p: *mut u8, size: usize) {
    let pool = if MEDIUM {
        Pool::of_medium(p)
    } else {
        Pool::of(p)
    };
    let heap = current();
    let block = p.cast::<Block>();
    // SAFETY: `p` is a live block, so its pool header is live and its owner stays put while the
    // block is live. If the owner is our heap, the owner-side fields are ours to touch. A pool
    // that serves no class fails `is_block` before the block is touched.
    unsafe {
        if (*pool).owner.load(Ordering::Relaxed) == heap.cast() {
            let ok = if MEDIUM {
                Pool::is_block_medium(pool, p)
            } else {
                Pool::is_block(pool, p)
            };
            if !ok {
                return invalid_free(p);
            }
            if (*block).key == heap.addr() {
                free_suspect(heap, pool, block, size);
                return;
            }
            free_local(heap, pool, block, size);
        } else {
            free_remote(heap, pool, block, size);
        }
    }
}

/// The owner's free reached its pool's trigger ([`Pool::slow_at`]): a count below 0 (more frees
/// than allocations) aborts with `block`'s address; anything else is [`free_local_slow`]'s.
/// Out of line, so the fast path reaches it by a tail jump (see [`invalid_free`]).
///
/// # Safety
/// As for [`free_local`]; `used` is the pool's count after this free.
#[cold]
#[inline(never)]
unsafe fn free_local_turn(heap: *mut Heap, pool: *mut Pool, block: *mut Block, used: u32) {
    if (used as i32) < 0 {
        fault(Fault::UsedUnderflow, block.cast());
    }
    // SAFETY: per the caller.
    unsafe { free_local_slow(heap, pool, None) }
}

/// [`fault`] for a pointer that is not the start of a block of its pool, declared as returning
/// so that the free fast path reaches it by a tail jump: a call there (to a function that never
/// returns) would make every free align the stack for it, two instructions on every free.
#[cold]
#[inline(never)]
fn invalid_free(p: *mut u8) {
    fault(Fault::InvalidPointer, p)
}

/// The owner's free of a block that passed the checks.
///
/// # Safety
/// `heap` is the calling thread's, `pool` is owned by it and `block` is a block of `pool`.
#[inline(always)]
unsafe fn free_local(heap: *mut Heap, pool: *mut Pool, block: *mut Block, size: usize) {
    // SAFETY: per the caller, the owner-side fields and the block are ours.
    unsafe {
        (*block).key = heap.addr();
        (*block).next = (*pool).free;
        (*pool).free = block;
        let used = (*pool).used.load(Ordering::Relaxed).wrapping_sub(1);
        (*pool).used.store(used, Ordering::Relaxed);
        add_requested(heap, size.wrapping_neg());
        // Slow path only to relink a full pool that got enough blocks back, or to retire an
        // empty one that is not its class's only pool (the only one is kept: an alloc/free
        // ping-pong on one block must not pay for the call): `slow_at` says when, per state. A
        // count that wrapped (a pool never holds 2^31 blocks) means more frees than allocations.
        if used as i32 <= i32::from((*pool).slow_at) {
            free_local_turn(heap, pool, block, used);
        }
    }
}

/// A free by the owner of a block that carries the free key: free already, unless the program
/// happened to store that value in it. Confirms by looking for it among the pool's free blocks.
///
/// # Safety
/// As for [`free_local`].
#[cold]
#[inline(never)]
unsafe fn free_suspect(heap: *mut Heap, pool: *mut Pool, block: *mut Block, size: usize) {
    // SAFETY: per the caller; the pool's free list (with its remote frees moved onto it, which
    // the owner may do at any time) holds blocks of the pool only.
    unsafe {
        collect_remote(pool);
        if on_free_list(pool, block) {
            fault(Fault::DoubleFree, block.cast());
        }
        // A stale key from the pool's life in another class, on a block never handed out since.
        if block.cast::<u8>() >= (*pool).bump {
            fault(Fault::InvalidPointer, block.cast());
        }
        free_local(heap, pool, block, size);
    }
}

/// Whether `block` is on the pool's free list (at most as many steps as the pool has blocks, so
/// a list a wrong free made cyclic still ends).
///
/// # Safety
/// The caller owns the pool.
unsafe fn on_free_list(pool: *mut Pool, block: *mut Block) -> bool {
    // SAFETY: the free list links blocks of the pool, which the owner may read.
    unsafe {
        let class = usize::from((*pool).class.load(Ordering::Relaxed));
        if class >= CLASSES {
            return false;
        }
        let limit = Pool::capacity(class);
        let mut cur = (*pool).free;
        let mut steps = 0;
        while !cur.is_null() && steps <= limit {
            if cur == block {
                return true;
            }
            cur = (*cur).next;
            steps += 1;
        }
        false
    }
}

/// Whether `p` is a block that may be freed or resized: the start of a block of its pool's class
/// and, as far as can be told, not free. Aborts with a [`fault`] otherwise.
///
/// # Safety
/// `p` points into a mapped arena, medium if `medium` (else small).
#[inline]
pub(crate) unsafe fn check_live(p: *mut u8, medium: bool) {
    let pool = if medium {
        Pool::of_medium(p)
    } else {
        Pool::of(p)
    };
    // SAFETY: arena memory is mapped, so the pool header and (once `is_block` holds) the block's
    // first two words are readable.
    unsafe {
        let owner = (*pool).owner.load(Ordering::Acquire);
        if owner.is_null() || !Pool::is_block_any(pool, p) {
            fault(Fault::InvalidPointer, p);
        }
        if (*p.cast::<Block>()).key == owner.addr() {
            check_suspect(owner.cast(), pool, p.cast());
        }
    }
}

/// A block whose liveness is asked about carries its pool's free key.
///
/// # Safety
/// As for [`check_live`], and `pool` is owned by `owner`.
#[cold]
#[inline(never)]
unsafe fn check_suspect(owner: *mut Heap, pool: *mut Pool, block: *mut Block) {
    // SAFETY: only the owner walks its pool's free list; any other thread trusts the key.
    unsafe {
        if owner != current() {
            fault(Fault::DoubleFree, block.cast());
        }
        collect_remote(pool);
        if on_free_list(pool, block) {
            fault(Fault::DoubleFree, block.cast());
        }
    }
}

/// Adjusts the requested-bytes count of the calling thread (for system-served blocks).
pub(crate) fn account(delta: usize) {
    // Annotate mode hides heap structures from the program; this touch is the allocator's own.
    let _quiet = crate::mode::quiet();
    let heap = current();
    if heap.is_null() {
        ORPHAN_REQUESTED.fetch_add(delta, Ordering::Relaxed);
    } else {
        // SAFETY: the heap is this thread's.
        unsafe { add_requested(heap, delta) }
    }
}

/// # Safety
/// `heap` is used by the calling thread only.
#[inline(always)]
unsafe fn add_requested(heap: *mut Heap, delta: usize) {
    // SAFETY: only the thread using the heap writes `requested` (type invariant).
    let r = unsafe { &(*heap).requested };
    r.store(
        r.load(Ordering::Relaxed).wrapping_add(delta),
        Ordering::Relaxed,
    );
}

// ---------------------------------------------------------------------------------------------
// Slow paths
// ---------------------------------------------------------------------------------------------

#[cold]
#[inline(never)]
fn alloc_without_heap<const ZERO: bool>(class: usize, size: usize) -> *mut u8 {
    let state = STATE.try_with(|s| s.get()).unwrap_or(DEAD);
    if state != DEAD {
        return match install_heap() {
            // SAFETY: the heap is now this thread's.
            Installed::Current(heap) => unsafe {
                alloc_in::<ZERO, false>(heap, class, any_block_size(class), size)
            },
            // The exit hook could not be armed: serve this one request and abandon the heap at
            // once, as for a dead thread.
            // SAFETY: the heap is ours and we are done with it after this request.
            Installed::Unarmed(heap) => unsafe {
                let p = alloc_in::<ZERO, false>(heap, class, any_block_size(class), size);
                abandon(heap);
                p
            },
            Installed::None => null_mut(),
        };
    }
    // The thread is past its last exit hook: borrow a heap for this one allocation and abandon it
    // again, so the block still comes from the arena and any thread can free it.
    let heap = acquire_heap();
    if heap.is_null() {
        return null_mut();
    }
    // SAFETY: we popped the heap under the lock, so it is ours until we abandon it.
    unsafe {
        let p = alloc_in::<ZERO, false>(heap, class, any_block_size(class), size);
        abandon(heap);
        p
    }
}

/// # Safety
/// `heap` is used by the calling thread only; the head pool of `class` has no free block.
#[cold]
#[inline(never)]
unsafe fn alloc_slow<const ZERO: bool>(heap: *mut Heap, class: usize, size: usize) -> *mut u8 {
    // A pool ran out: a due purge pass runs here (free arena pools only), and a due reclaim of
    // idle heaps' pools (`heap/reclaim.rs`).
    crate::arena::purge_tick();
    // SAFETY: everything below touches only pools owned by `heap`, which is ours (the buffer's
    // blocks go to other heaps' pools).
    unsafe {
        flush_remote_buffer(heap);
        note_slow_path(heap);
        reclaim_tick();
        drain_queue(heap, None);
        loop {
            let pool = (*heap).classes[class];
            if pool == sentinel() {
                break;
            }
            collect_remote(pool);
            if !(*pool).free.is_null() || (*pool).bump < (*pool).end {
                return alloc_in::<ZERO, false>(heap, class, any_block_size(class), size);
            }
            unlink(heap, class, pool);
            (*pool).slow_at = Pool::relink_at(class);
            // Last, with Release: the idle-owner reclaim reads it (Acquire) before it takes the
            // pool, after our last touch of it (see `heap/reclaim.rs`).
            (*pool).full.store(true, Ordering::Release);
        }
        let medium = is_medium_class(class);
        let k = usize::from(medium);
        let mut pool = (*heap).empty[k];
        if !pool.is_null() {
            (*heap).empty[k] = (*pool).next;
            (*heap).empty_count[k] -= 1;
        } else {
            let mut locked = Locked::take();
            reclaim_abandoned(&mut locked);
            schedule_reclaim(&mut locked);
            let kind = if medium {
                crate::arena_map::Kind::Medium
            } else {
                crate::arena_map::Kind::Small
            };
            pool = locked.take_pool(kind);
            if locked.pools_out_new_high() {
                sample_peak(&mut locked);
            }
            drop(locked);
            if pool.is_null() {
                return out_of_arena::<ZERO>(size);
            }
        }
        Pool::assign(pool, class, heap.cast());
        link_front(heap, class, pool);
        alloc_in::<ZERO, false>(heap, class, any_block_size(class), size)
    }
}

/// The arena could not grow (the OS refused a new arena): in arena mode the request is served by
/// the system allocator instead, before giving up with null, and the mode becomes
/// [`crate::mode::State::ArenaFallback`] so that frees of small blocks ask whose block it is. In
/// annotate mode (whose blocks must be arena blocks) it is null.
#[cold]
#[inline(never)]
fn out_of_arena<const ZERO: bool>(size: usize) -> *mut u8 {
    if !crate::mode::enter_fallback() {
        return null_mut();
    }
    // The arena's alignment for every class; `system::alloc` honours it.
    let Ok(layout) = core::alloc::Layout::from_size_align(size.max(1), crate::size_class::MAX_ALIGN)
    else {
        return null_mut();
    };
    let p = if ZERO {
        crate::system::alloc_zeroed(layout)
    } else {
        crate::system::alloc(layout)
    };
    if !p.is_null() {
        account(size);
    }
    p
}

/// Owner, after a pool gained free blocks: relink it if it was full, retire it if empty.
///
/// With `locked` (an abandoned heap, lock held), an empty pool goes straight to its arena.
///
/// # Safety
/// `pool` is owned by `heap`, which the calling thread uses (or which is abandoned, and `locked`
/// is `Some`).
#[cold]
#[inline(never)]
unsafe fn free_local_slow(heap: *mut Heap, pool: *mut Pool, locked: Option<&mut Locked>) {
    // SAFETY: owner-only fields of our own pool and heap.
    unsafe {
        let class = (*pool).class.load(Ordering::Relaxed) as usize;
        if (*pool).full.load(Ordering::Relaxed)
            && !(*pool).free.is_null()
            && (*pool).used.load(Ordering::Relaxed) as i32 <= i32::from((*pool).slow_at)
        {
            (*pool).full.store(false, Ordering::Relaxed);
            link_second(heap, class, pool);
        }
        if (*pool).used.load(Ordering::Relaxed) != 0
            || (*pool).full.load(Ordering::Relaxed)
            || !Pool::remote_idle(pool)
        {
            return;
        }
        // Empty. Keep it if it is the class's only pool with room (no thrash on alloc/free of
        // a single block); otherwise cache it or give it back.
        unlink_or_keep(heap, class, pool, locked);
    }
}

/// An empty pool in a class list: keep it if it is the class's only pool with room and the heap
/// is live (no thrash on alloc/free of a single block); otherwise cache it or give it back.
///
/// # Safety
/// As for [`free_local_slow`]; `pool` is empty and in `heap`'s list for `class`.
unsafe fn unlink_or_keep(
    heap: *mut Heap,
    class: usize,
    pool: *mut Pool,
    locked: Option<&mut Locked>,
) {
    // SAFETY: per the caller.
    unsafe {
        match locked {
            Some(locked) => {
                unlink(heap, class, pool);
                locked.give_pool(pool);
            }
            None => {
                if (*heap).classes[class] == pool && (*pool).next.is_null() {
                    return;
                }
                unlink(heap, class, pool);
                retire(heap, pool);
            }
        }
    }
}

/// Puts an empty, unlinked pool into the heap's empty cache, or gives it back to its arena.
///
/// # Safety
/// `pool` is owned by `heap`, unlinked, `used == 0`, remote word clear.
unsafe fn retire(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: per the caller.
    unsafe {
        let k = usize::from(Pool::is_medium(pool));
        if (*heap).empty_count[k] < EMPTY_CACHES[k] {
            Pool::unassign(pool);
            (*pool).next = (*heap).empty[k];
            (*heap).empty[k] = pool;
            (*heap).empty_count[k] += 1;
        } else {
            Locked::take().give_pool(pool);
        }
    }
}

/// # Safety
/// `pool` is owned by `heap`, which the caller uses, and is in no list.
unsafe fn link_front(heap: *mut Heap, class: usize, pool: *mut Pool) {
    // SAFETY: owner-only list links.
    unsafe {
        let head = (*heap).classes[class];
        (*pool).prev = null_mut();
        if head == sentinel() {
            (*pool).next = null_mut();
        } else {
            (*pool).next = head;
            (*head).prev = pool;
        }
        (*heap).classes[class] = pool;
        mark_sole(heap, class);
    }
}

/// Links a pool that was full and just got a free block right after the head, so the head (with
/// its run of free blocks) keeps serving and this pool gathers more frees before it is used: a
/// pool at the front with a single free block would send the very next allocation back to the
/// slow path.
///
/// # Safety
/// `pool` is owned by `heap`, which the caller uses, and is in no list.
unsafe fn link_second(heap: *mut Heap, class: usize, pool: *mut Pool) {
    // SAFETY: owner-only list links.
    unsafe {
        let head = (*heap).classes[class];
        if head == sentinel() {
            link_front(heap, class, pool);
            return;
        }
        let next = (*head).next;
        (*pool).prev = head;
        (*pool).next = next;
        if !next.is_null() {
            (*next).prev = pool;
        }
        (*head).next = pool;
        mark_sole(heap, class);
    }
}

/// # Safety
/// `pool` is in `heap`'s list for `class`.
unsafe fn unlink(heap: *mut Heap, class: usize, pool: *mut Pool) {
    // SAFETY: owner-only list links.
    unsafe {
        let (prev, next) = ((*pool).prev, (*pool).next);
        if prev.is_null() {
            (*heap).classes[class] = if next.is_null() { sentinel() } else { next };
        } else {
            (*prev).next = next;
        }
        if !next.is_null() {
            (*next).prev = prev;
        }
        (*pool).next = null_mut();
        (*pool).prev = null_mut();
        (*pool).slow_at = 0;
        mark_sole(heap, class);
    }
}

/// Sets the free path's trigger ([`Pool::slow_at`]) of the pools whose state a list change can
/// alter: the head is [`SOLE`] when it is the list's only pool, else 0, and so is the pool after
/// it (every pool further down was the head or second when it last moved, so it is 0 already).
///
/// # Safety
/// `heap`'s list for `class` is ours to change.
unsafe fn mark_sole(heap: *mut Heap, class: usize) {
    // SAFETY: owner-only fields of pools in our own list.
    unsafe {
        let head = (*heap).classes[class];
        if head == sentinel() {
            return;
        }
        let next = (*head).next;
        if next.is_null() {
            (*head).slow_at = SOLE;
        } else {
            (*head).slow_at = 0;
            (*next).slow_at = 0;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

global! {
    /// The highest total of bytes requested seen at a sampling point (see [`sample_peak`]).
    static PEAK_REQUESTED: AtomicUsize = AtomicUsize::new(0);
}

/// Bytes requested and not yet freed, over every heap and the orphan count (a wrapping sum:
/// a block may be freed by another thread than the one that allocated it).
fn total_requested(locked: &mut Locked) -> usize {
    let reg = heap_list(locked);
    let mut requested = ORPHAN_REQUESTED.load(Ordering::Relaxed);
    let mut h = reg.all;
    while !h.is_null() {
        // SAFETY: registered heaps are never unmapped; `requested` and the links are readable
        // under the lock.
        unsafe {
            requested = requested.wrapping_add((*h).requested.load(Ordering::Relaxed));
            h = (*h).all_next;
        }
    }
    requested
}

/// Samples the peak of bytes requested: called under the lock when the heaps hold more pools
/// than ever before, for large system allocations, and by `stats()`. Returns the total now.
fn sample_peak(locked: &mut Locked) -> usize {
    let now = total_requested(locked);
    // A transiently negative total (a remote free counted before the allocation's heap wrote
    // its count) reads as a huge number: not a peak.
    if now <= isize::MAX as usize && now > PEAK_REQUESTED.load(Ordering::Relaxed) {
        PEAK_REQUESTED.store(now, Ordering::Relaxed);
    }
    now
}

/// Samples the peak of bytes requested after a large system allocation, if the lock is free
/// (never waits for it).
#[cold]
pub(crate) fn sample_peak_now() {
    let _quiet = crate::mode::quiet();
    if let Some(mut locked) = Locked::try_take() {
        sample_peak(&mut locked);
    }
}

/// What the heap list tells [`crate::stats()`], read under the lock.
pub(crate) struct ListCounts {
    /// Heaps ever made.
    pub(crate) heaps: usize,
    /// Heaps on the abandoned list.
    pub(crate) abandoned: usize,
    /// Times a heap was abandoned since the process started.
    pub(crate) handoffs: usize,
    /// Bytes requested and not yet freed, over every heap (sampled for the peak now).
    pub(crate) requested: usize,
    /// The highest such total seen at a sampling point.
    pub(crate) requested_peak: usize,
}

/// Reads the heap list's counters (and samples the peak of bytes requested). Allocates nothing.
pub(crate) fn list_counts(locked: &mut Locked) -> ListCounts {
    let requested = sample_peak(locked);
    let reg = heap_list(locked);
    let mut abandoned = 0;
    let mut h = reg.all;
    while !h.is_null() {
        // SAFETY: listed heaps are never unmapped; their links and flag are readable under the
        // lock.
        unsafe {
            if (*h).abandoned.load(Ordering::Relaxed) {
                abandoned += 1;
            }
            h = (*h).all_next;
        }
    }
    ListCounts {
        heaps: reg.count,
        abandoned,
        handoffs: reg.handoffs,
        requested,
        requested_peak: PEAK_REQUESTED.load(Ordering::Relaxed),
    }
}

// ---------------------------------------------------------------------------------------------
// Returning memory to the OS on demand
// ---------------------------------------------------------------------------------------------

/// `smallarena::collect()`: gives the calling thread's empty pools (cached, and kept at the head
/// of a class list), the abandoned heaps' empty pools, and the other live heaps' pools whose every
/// block other threads freed (the idle-owner reclaim, `heap/reclaim.rs`, without waiting for
/// them to be quiescent) back to their arenas, then returns free memory to the OS
/// ([`Locked::release_free_memory`]). Other live threads' lists are left alone: only their owner
/// may touch them.
pub(crate) fn release_memory() {
    let _quiet = crate::mode::quiet();
    let heap = current();
    if !heap.is_null() {
        // Remote frees first, ours to other heaps and theirs to us (this may retire pools,
        // taking the lock itself).
        // SAFETY: the heap is this thread's.
        unsafe {
            flush_remote_buffer(heap);
            note_slow_path(heap);
            drain_queue(heap, None);
        }
    }
    let mut locked = Locked::take();
    if !heap.is_null() {
        // SAFETY: the heap is this thread's, and its pools are given back under the lock.
        unsafe { give_back_empty_pools(heap, &mut locked) };
    }
    let mut h = heap_list(&mut locked).abandoned;
    while !h.is_null() {
        // SAFETY: heaps on the abandoned list are live and touched only under the lock, which we
        // hold.
        unsafe {
            drain_queue(h, Some(&mut locked));
            give_back_empty_pools(h, &mut locked);
            h = (*h).abandoned_next;
        }
    }
    reclaim_live_heaps(&mut locked, true);
    locked.release_free_memory();
}

/// Gives every empty pool of `heap` (in its class lists or its empty cache) back to its arena.
///
/// # Safety
/// `heap` is the calling thread's, or abandoned; the lock is held either way.
unsafe fn give_back_empty_pools(heap: *mut Heap, locked: &mut Locked) {
    // SAFETY: per the caller, the heap's lists and pools are ours to change.
    unsafe {
        for class in 0..CLASSES {
            let mut pool = (*heap).classes[class];
            while pool != sentinel() {
                let next = (*pool).next;
                if (*pool).used.load(Ordering::Relaxed) == 0 && Pool::remote_idle(pool) {
                    unlink(heap, class, pool);
                    locked.give_pool(pool);
                }
                pool = if next.is_null() { sentinel() } else { next };
            }
        }
        for k in 0..2 {
            while !(*heap).empty[k].is_null() {
                let pool = (*heap).empty[k];
                (*heap).empty[k] = (*pool).next;
                locked.give_pool(pool);
            }
            (*heap).empty_count[k] = 0;
        }
    }
}
