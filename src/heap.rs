//! Per-thread heaps: the allocation and free fast paths, and everything a thread owns.
//!
//! Each thread that allocates gets a [`Heap`] through a const-initialised thread-local that
//! never allocates. A heap holds, per size class, a doubly linked list of its pools that have
//! room; the list head is the pool the fast path serves from. Full pools leave the list and come
//! back when a block of theirs is freed. Frees from the owning thread go straight onto the pool's
//! free list; frees from other threads go onto the pool's lock-free remote list (see
//! [`crate::pool`]), and the pool is pushed onto the heap's remote queue, which the owner drains
//! on its slow path.
//!
//! Heaps are never unmapped. When a thread exits, its heap gives its empty pools back and is put on
//! the abandoned list; the next thread that needs a heap adopts it, with every pool, every
//! pending remote free and every counter, so nothing is lost when threads come and go. After
//! `fork()`, the child abandons the heaps of the threads that did not survive the fork (or, with
//! the share fork policy, forgets every inherited heap: see [`crate::fork`]).

use crate::lock::Locked;
use crate::os;
use crate::pool::{fault, Block, Fault, Pool};
use crate::size_class::{any_block_size, block_size, class_of, is_medium_class, CLASSES};
#[cfg(not(loom))]
use crate::tunables::EXIT_ROUNDS;
use crate::tunables::{EMPTY_CACHE, HEAP_SLAB, MEDIUM_EMPTY_CACHE};
use crate::sync::{global, tls, tls_ptr, AtomicBool, LoadPtr, AtomicPtr, AtomicUsize, Ordering};
use core::cell::{Cell, UnsafeCell};
use core::ptr::null_mut;

/// Empty pools a heap keeps for reuse, per kind of pool (indexed by [`Pool::is_medium`]).
const EMPTY_CACHES: [usize; 2] = [EMPTY_CACHE, MEDIUM_EMPTY_CACHE];

pub(crate) mod check;

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

// Thread exit, natively: a pthread key whose destructor abandons the heap.
//
// Not a thread-local destructor: glibc runs those (`__call_tls_dtors`) before the pthread key
// destructors, so a thread that allocates for the first time in a key destructor would register a
// thread-local destructor that never runs, and keep its heap for ever. Key destructors run in
// rounds instead: a destructor that sets a key's value gets that key's destructor called in the
// next round (up to `PTHREAD_DESTRUCTOR_ITERATIONS` rounds). Ours re-arms itself in every round
// but the last, so a heap acquired in any round (by a later key's destructor) is abandoned in the
// next; a heap acquired after the last round cannot be, and the thread is then `DEAD`.
//
// `exit()` runs no key destructor for the calling thread, so the main thread keeps its heap for
// `atexit` handlers and static destructors (the process is ending: nothing to give back).

#[cfg(not(loom))]
global! {
    /// The exit hook's pthread key plus one; 0 until created (under the lock).
    static EXIT_KEY: AtomicUsize = AtomicUsize::new(0);
}

#[cfg(not(loom))]
tls! {
    /// How many times the exit hook ran in this thread: the key destructor round, as every round
    /// after the first one it ran in calls it again.
    static EXIT_ROUND: Cell<u8> = Cell::new(0);
}

/// Creates the exit hook's key once (under the lock, so two first allocations cannot race).
#[cfg(not(loom))]
fn ensure_exit_key(_proof: &mut Locked) {
    if EXIT_KEY.load(Ordering::Relaxed) != 0 {
        return;
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is valid for the write; the destructor is a plain function valid for the
    // life of the process. pthread_key_create does not allocate.
    if unsafe { libc::pthread_key_create(&mut key, Some(exit_hook)) } == 0 {
        EXIT_KEY.store(key as usize + 1, Ordering::Release);
    }
}

/// Makes the exit hook run for the calling thread, whose heap `CURRENT` holds. False when it
/// cannot (no key: the C library is out of keys; or no memory for the key's slot).
#[cfg(not(loom))]
fn arm_exit_hook(_heap: *mut Heap) -> bool {
    let key = EXIT_KEY.load(Ordering::Acquire);
    // SAFETY: the key was made by pthread_key_create and is never deleted; the value is a
    // non-null marker (the destructor runs only for non-null values) that is never dereferenced.
    // glibc may calloc the key's second-level slot array here: that re-enters the allocator,
    // which finds `CURRENT` already set and takes its fast path.
    key != 0
        && unsafe {
            libc::pthread_setspecific(
                (key - 1) as libc::pthread_key_t,
                core::ptr::NonNull::<libc::c_void>::dangling().as_ptr(),
            )
        } == 0
}

/// The key destructor: abandons the thread's heap, and re-arms itself for the next round.
#[cfg(not(loom))]
extern "C" fn exit_hook(_marker: *mut libc::c_void) {
    let round = EXIT_ROUND
        .try_with(|r| {
            let n = r.get().saturating_add(1);
            r.set(n);
            n
        })
        .unwrap_or(EXIT_ROUNDS);
    let rearmed = round < EXIT_ROUNDS && arm_exit_hook(null_mut());
    let heap = CURRENT
        .try_with(|c| c.replace(null_mut()))
        .unwrap_or(null_mut());
    let _ = STATE.try_with(|s| s.set(if rearmed { FRESH } else { DEAD }));
    if !heap.is_null() {
        let _quiet = crate::mode::quiet();
        // SAFETY: the heap was this thread's and is no longer reachable from it.
        unsafe { abandon(heap) };
    }
}

// Thread exit under loom: a thread-local destructor (loom models no pthread keys).
#[cfg(loom)]
tls! {
    static EXIT: ExitGuard = ExitGuard(Cell::new(null_mut()));
}

/// Its destructor abandons the thread's heap when the thread exits. It holds the heap pointer
/// itself (set when the heap is acquired), so it does not depend on `CURRENT` outliving it.
#[cfg(loom)]
struct ExitGuard(Cell<*mut Heap>);

#[cfg(loom)]
impl ExitGuard {
    /// Abandons the thread's heap (once; later calls do nothing).
    fn exit(&self) {
        let heap = self.0.replace(null_mut());
        if !heap.is_null() {
            let _ = CURRENT.try_with(|c| c.set(null_mut()));
            let _ = STATE.try_with(|s| s.set(DEAD));
            let _quiet = crate::mode::quiet();
            // SAFETY: the heap was this thread's and no longer is reachable from it.
            unsafe { abandon(heap) };
        }
    }
}

#[cfg(loom)]
impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.exit();
    }
}

#[cfg(loom)]
fn ensure_exit_key(_proof: &mut Locked) {}

#[cfg(loom)]
fn arm_exit_hook(heap: *mut Heap) -> bool {
    EXIT.try_with(|g| g.0.set(heap)).is_ok()
}

/// Runs the calling thread's exit path now (for the loom models: loom 0.7 does not reliably
/// drop a model thread's locals while the execution is still running).
#[cfg(loom)]
pub(crate) fn exit_current() {
    let _ = EXIT.try_with(|g| g.exit());
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
                fault(Fault::InvalidPointer, p);
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
        // Slow path only to relink a full pool, or to retire an empty one that is not the
        // class's only pool (which `free_local_slow` would keep anyway: an alloc/free
        // ping-pong on one block must not pay for the call). A count that wrapped (a pool
        // never holds 2^31 blocks) means more frees than allocations.
        if used as i32 <= 0 || (*pool).full {
            if (used as i32) < 0 {
                fault(Fault::UsedUnderflow, block.cast());
            }
            if (*pool).full || !((*pool).prev.is_null() && (*pool).next.is_null()) {
                free_local_slow(heap, pool, None);
            }
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
        let heap = acquire_heap();
        if heap.is_null() {
            return null_mut();
        }
        let _ = CURRENT.try_with(|c| c.set(heap));
        let _ = STATE.try_with(|s| s.set(ACTIVE));
        // Arming the exit hook may allocate (re-entering us, now with a heap). If it cannot be
        // armed, serve this one request and abandon the heap at once, as for a dead thread.
        if !arm_exit_hook(heap) {
            let _ = CURRENT.try_with(|c| c.set(null_mut()));
            let _ = STATE.try_with(|s| s.set(DEAD));
            // SAFETY: the heap is ours and we are done with it.
            let p = unsafe { alloc_in::<ZERO, false>(heap, class, any_block_size(class), size) };
            // SAFETY: as above.
            unsafe { abandon(heap) };
            return p;
        }
        // SAFETY: the heap is now this thread's.
        return unsafe { alloc_in::<ZERO, false>(heap, class, any_block_size(class), size) };
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
    // A pool ran out: a due purge pass runs here (free arena pools only).
    crate::arena::purge_tick();
    // SAFETY: everything below touches only pools owned by `heap`, which is ours.
    unsafe {
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
            (*pool).full = true;
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

/// Owner: moves the pool's remote frees onto its free list (keeping it queued if it is).
///
/// # Safety
/// `pool` is owned by the calling thread's heap.
unsafe fn collect_remote(pool: *mut Pool) -> u32 {
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
unsafe fn drain_queue(heap: *mut Heap, mut locked: Option<&mut Locked>) {
    // SAFETY: the heap is ours; queued pools are owned by it and cannot be released while queued.
    unsafe {
        if (*heap).queue.load(Ordering::SeqCst).is_null() {
            return;
        }
        let mut pool = (*heap).queue.swap(null_mut(), Ordering::SeqCst);
        while !pool.is_null() {
            let next = Pool::queue_link(pool).load(Ordering::Relaxed);
            Pool::splice(pool, Pool::take_remote_and_unqueue(pool));
            free_local_slow(heap, pool, locked.as_deref_mut());
            pool = next;
        }
    }
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
        if (*pool).full && !(*pool).free.is_null() {
            (*pool).full = false;
            link_second(heap, class, pool);
        }
        if (*pool).used.load(Ordering::Relaxed) != 0 || (*pool).full || !Pool::remote_idle(pool) {
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
    }
}

/// A free from a thread that does not own the block's pool.
///
/// # Safety
/// `block` is a live block of `pool`; `heap` is the caller's heap or null.
#[cold]
#[inline(never)]
unsafe fn free_remote(heap: *mut Heap, pool: *mut Pool, block: *mut Block, size: usize) {
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
    if heap.is_null() {
        ORPHAN_REQUESTED.fetch_sub(size, Ordering::Relaxed);
    } else {
        // SAFETY: the heap is ours.
        unsafe { add_requested(heap, size.wrapping_neg()) };
    }
    // SAFETY: the block is live, so the pool's owner is stable until we publish the block; the
    // owner heap is never unmapped. Once `push_remote` reports that we set QUEUED, the pool
    // cannot be released until its owner pops it from the queue, which we push it onto here.
    unsafe {
        let owner = (*pool).owner.load(Ordering::Acquire).cast::<Heap>();
        if Pool::push_remote(pool, block) {
            let q = &(*owner).queue;
            let link = Pool::queue_link(pool);
            let mut head = q.load(Ordering::Relaxed);
            loop {
                link.store(head, Ordering::Relaxed);
                match q.compare_exchange_weak(head, pool, Ordering::SeqCst, Ordering::Relaxed) {
                    Ok(_) => break,
                    Err(h) => head = h,
                }
            }
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

/// A share-mode child's free of a block inherited from its parent ([`crate::fork`]): nothing is
/// written to the block or its pool; the block is dropped, its bytes counted as retained, and the
/// request's bytes taken off the calling thread's count as for any free.
///
/// # Safety
/// `pool` is the inherited pool of a live block.
#[cold]
#[inline(never)]
unsafe fn free_inherited(pool: *mut Pool, size: usize) {
    account(size.wrapping_neg());
    // SAFETY: the block is live, so its pool's class fields may be read.
    crate::fork::retain(unsafe { Pool::block_size(pool) });
}

// ---------------------------------------------------------------------------------------------
// Heap life cycle
// ---------------------------------------------------------------------------------------------

/// Pops an abandoned heap or makes a new one. Null when the OS refuses memory.
fn acquire_heap() -> *mut Heap {
    let heap = {
        let mut locked = Locked::take();
        ensure_exit_key(&mut locked);
        let reg = heap_list(&mut locked);
        if !reg.abandoned.is_null() {
            let h = reg.abandoned;
            // SAFETY: heaps on the abandoned list are live and guarded by the lock.
            unsafe {
                reg.abandoned = (*h).abandoned_next;
                (*h).abandoned_next = null_mut();
                (*h).abandoned.store(false, Ordering::SeqCst);
            }
            h
        } else {
            new_heap(reg)
        }
    };
    if !heap.is_null() {
        // Normally done already, by `early_init`.
        register_fork_handlers_once();
    }
    heap
}

fn new_heap(reg: &mut HeapList) -> *mut Heap {
    let size = core::mem::size_of::<Heap>().next_multiple_of(64);
    if reg.slab_left < size {
        let slab = os::map_aligned(HEAP_SLAB, 4096);
        if slab.is_null() {
            return null_mut();
        }
        crate::mode::hide(slab, HEAP_SLAB);
        reg.slab = slab;
        reg.slab_left = HEAP_SLAB;
    }
    let h = reg.slab.cast::<Heap>();
    // SAFETY: the slab has `size` unused bytes at `reg.slab`, 64-aligned, ours alone.
    unsafe {
        reg.slab = reg.slab.add(size);
        reg.slab_left -= size;
        h.write(Heap {
            classes: [sentinel(); CLASSES],
            requested: AtomicUsize::new(0),
            queue: AtomicPtr::new(null_mut()),
            empty: [null_mut(); 2],
            empty_count: [0; 2],
            all_next: reg.all,
            abandoned_next: null_mut(),
            abandoned: AtomicBool::new(false),
        });
    }
    reg.all = h;
    reg.count += 1;
    h
}

/// Gives back what the heap can spare and puts it on the abandoned list.
///
/// # Safety
/// The caller was the heap's user and will not touch it again.
unsafe fn abandon(heap: *mut Heap) {
    let mut locked = Locked::take();
    // SAFETY: until we publish it on the abandoned list the heap is ours; after that we still
    // hold the lock, under which abandoned heaps are touched.
    unsafe {
        drain_queue(heap, Some(&mut locked));
        give_back_empty_pools(heap, &mut locked);
        let reg = heap_list(&mut locked);
        reg.handoffs += 1;
        (*heap).abandoned_next = reg.abandoned;
        reg.abandoned = heap;
        (*heap).abandoned.store(true, Ordering::SeqCst);
        // The other half of the RECLAIM protocol: frees that queued a pool before they could see
        // the flag are drained here.
        drain_queue(heap, Some(&mut locked));
    }
    reclaim_abandoned(&mut locked);
}

/// Drains the remote queues of abandoned heaps if a remote free asked for it (see [`RECLAIM`]).
fn reclaim_abandoned(locked: &mut Locked) {
    if !RECLAIM.load(Ordering::Relaxed) || !RECLAIM.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut h = heap_list(locked).abandoned;
    while !h.is_null() {
        // SAFETY: heaps on the abandoned list are live and touched only under the lock, which we
        // hold.
        unsafe {
            drain_queue(h, Some(locked));
            h = (*h).abandoned_next;
        }
    }
}

// Fork. The prepare handler takes the arena lock, so that the child inherits consistent arenas
// and heaps; the parent and child handlers release it. POSIX runs prepare handlers in the reverse
// order of registration and the others in order, so handlers registered before ours run inside
// ours: their prepare after our lock is taken, their child handler before it is released. If
// they allocate, they reach the allocator while the forking thread holds its lock. Two defences:
// * ours are registered as early as a process allows: from an ELF constructor of the highest
//   priority (`.init_array.00000`, before every constructor of default priority in the same
//   executable or library, Rust's and C's), so they are the outermost in the usual case;
// * for handlers registered earlier still (a `.preinit_array` entry; in the preload library,
//   constructors of libraries initialised before it), the forking thread notes itself in
//   the lock's fork owner ([`crate::lock::hold_for_fork`]), and [`Locked::take`] lets it work under the hold it has instead of waiting for
//   itself (see there why the state is consistent).

/// The heaps' part of process start-up: registers the fork handlers and creates the exit key.
/// Called by the crate's start-up constructor (`crate::global`), before `main` and before the
/// constructors of default priority (not under Miri or loom, which model no `fork()`).
#[cfg(all(target_os = "linux", not(any(miri, loom))))]
pub(crate) fn init_process() {
    register_fork_handlers_once();
    ensure_exit_key(&mut Locked::take());
}

fn register_fork_handlers_once() {
    if !FORK_HANDLERS.swap(true, Ordering::AcqRel) {
        register_fork_handlers();
    }
}

fn register_fork_handlers() {
    #[cfg(not(any(miri, loom)))]
    // SAFETY: the handlers are plain `extern "C"` functions valid for the life of the process.
    unsafe {
        libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
    }
}

#[cfg(not(any(miri, loom)))]
extern "C" fn fork_prepare() {
    crate::lock::hold_for_fork();
}

#[cfg(not(any(miri, loom)))]
extern "C" fn fork_parent() {
    crate::lock::release_after_fork();
}

#[cfg(not(any(miri, loom)))]
extern "C" fn fork_child() {
    // Only the forking thread survives: every other thread's heap is orphaned. Abandon them so
    // later threads in the child adopt their pools, and the blocks the child inherited can be
    // freed (they are remote frees into those pools).
    let me = current();
    let _quiet = crate::mode::quiet();
    // Share mode: the child forgets every inherited heap instead (the walk below finds none).
    if crate::fork::share_at_fork() {
        share_child(&mut Locked::take());
    }
    // SAFETY: the prepare handler took the lock in this very thread before the fork, and the
    // child has no other thread; we release it at the end.
    unsafe {
        let reg = &mut *HEAP_LIST.0.get();
        let mut h = reg.all;
        while !h.is_null() {
            if h != me && !(*h).abandoned.load(Ordering::Relaxed) {
                (*h).abandoned.store(true, Ordering::Relaxed);
                (*h).abandoned_next = reg.abandoned;
                reg.abandoned = h;
            }
            h = (*h).all_next;
        }
    }
    RECLAIM.store(true, Ordering::Relaxed);
    crate::lock::reset_in_child();
}

/// The child of a share-mode fork ([`crate::fork`]) forgets every heap it inherited, without
/// writing to them (they live in inherited slabs): the heap list starts empty with no slab, so
/// the next allocation makes a fresh heap in a fresh slab, and the forking thread (the only one
/// here) drops its heap pointer. The inherited heaps' byte counts carry over to the orphan count,
/// so `bytes_requested` stays the same. Then the arenas are forgotten and the fork generation
/// goes up.
#[cfg(not(any(miri, loom)))]
fn share_child(locked: &mut Locked) {
    let requested = total_requested(locked);
    ORPHAN_REQUESTED.store(requested, Ordering::Relaxed);
    let reg = heap_list(locked);
    reg.all = null_mut();
    reg.abandoned = null_mut();
    reg.slab = null_mut();
    reg.slab_left = 0;
    reg.count = 0;
    let _ = CURRENT.try_with(|c| c.set(null_mut()));
    let _ = STATE.try_with(|s| {
        if s.get() == ACTIVE {
            s.set(FRESH);
        }
    });
    let bytes = locked.forget_arenas_after_fork();
    crate::fork::advance_generation(bytes);
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
/// of a class list) and the abandoned heaps' empty pools back to their arenas, then returns free
/// memory to the OS ([`Locked::release_free_memory`]). Other live threads' heaps are left alone:
/// only their owner may touch their lists.
pub(crate) fn release_memory() {
    let _quiet = crate::mode::quiet();
    let heap = current();
    if !heap.is_null() {
        // Remote frees first (this may retire pools, taking the lock itself).
        // SAFETY: the heap is this thread's.
        unsafe { drain_queue(heap, None) };
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
