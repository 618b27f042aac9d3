//! A heap's life cycle: the thread-exit hook that abandons a heap, acquiring (adopting or making)
//! a heap, abandoning one, draining the queues of abandoned heaps (the second half of the
//! [`RECLAIM`] protocol), and the fork handlers (abandon the heaps of threads that did not survive
//! the fork; forget every inherited heap under the share policy, see [`crate::fork`]).

use super::*;

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
pub(super) fn ensure_exit_key(_proof: &mut Locked) {
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
pub(super) fn arm_exit_hook(_heap: *mut Heap) -> bool {
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
pub(super) extern "C" fn exit_hook(_marker: *mut libc::c_void) {
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
pub(super) fn ensure_exit_key(_proof: &mut Locked) {}

#[cfg(loom)]
pub(super) fn arm_exit_hook(heap: *mut Heap) -> bool {
    EXIT.try_with(|g| g.0.set(heap)).is_ok()
}

/// Runs the calling thread's exit path now (for the loom models: loom 0.7 does not reliably
/// drop a model thread's locals while the execution is still running).
#[cfg(loom)]
pub(crate) fn exit_current() {
    let _ = EXIT.try_with(|g| g.exit());
}

/// Pops an abandoned heap or makes a new one. Null when the OS refuses memory.
pub(super) fn acquire_heap() -> *mut Heap {
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

tls! {
    /// Remote frees this thread made while it had no heap (saturating).
    static FREES_WITHOUT_HEAP: Cell<u8> = Cell::new(0);
}

/// A heap for a thread that has none and frees a block of another heap's pool, so that its
/// remote frees are batched ([`super::remote_buffer`]) like those of a thread that allocates:
/// from its [`REMOTE_FREES_BEFORE_HEAP`]th such free on, a heap is acquired ([`acquire_heap`]:
/// adopted, or new) and made current with its exit hook armed, as on a first allocation (adopted
/// rather than always new: a new thread's first call is often the free of something its parent
/// allocated, and making a new heap there would leave the abandoned heaps unused, one heap per
/// thread). Null (the block goes out alone) before that, past the thread's last exit hook, when
/// the hook cannot be armed, or when the OS refuses memory.
#[cold]
#[inline(never)]
pub(super) fn acquire_heap_for_free() -> *mut Heap {
    let frees = FREES_WITHOUT_HEAP
        .try_with(|c| {
            let n = c.get().saturating_add(1);
            c.set(n);
            n
        })
        .unwrap_or(0);
    if usize::from(frees) < REMOTE_FREES_BEFORE_HEAP
        || STATE.try_with(|s| s.get()).unwrap_or(DEAD) != FRESH
    {
        return null_mut();
    }
    match install_heap() {
        Installed::Current(heap) => heap,
        Installed::Unarmed(heap) => {
            // SAFETY: the heap is ours, unused, and we are done with it.
            unsafe { abandon(heap) };
            null_mut()
        }
        Installed::None => null_mut(),
    }
}

/// What [`install_heap`] did.
pub(super) enum Installed {
    /// The heap is the thread's current one, its exit hook armed.
    Current(*mut Heap),
    /// The exit hook could not be armed: the thread is `DEAD` and the heap, not current, is the
    /// caller's to use once and [`abandon`].
    Unarmed(*mut Heap),
    /// No heap could be had (the OS refused memory).
    None,
}

/// Acquires a heap ([`acquire_heap`]) and makes it the calling thread's, with its exit hook armed:
/// a thread's first allocation, or its [`REMOTE_FREES_BEFORE_HEAP`]th remote free. Arming the hook
/// may allocate (re-entering the allocator, now with a heap).
pub(super) fn install_heap() -> Installed {
    let heap = acquire_heap();
    if heap.is_null() {
        return Installed::None;
    }
    let _ = CURRENT.try_with(|c| c.set(heap));
    let _ = STATE.try_with(|s| s.set(ACTIVE));
    if !arm_exit_hook(heap) {
        let _ = CURRENT.try_with(|c| c.set(null_mut()));
        let _ = STATE.try_with(|s| s.set(DEAD));
        return Installed::Unarmed(heap);
    }
    Installed::Current(heap)
}

pub(super) fn new_heap(reg: &mut HeapList) -> *mut Heap {
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
            slow_paths: AtomicUsize::new(0),
            slow_paths_seen: 0,
            remote_buffer: remote_buffer::RemoteBuffer::EMPTY,
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
pub(super) unsafe fn abandon(heap: *mut Heap) {
    // Blocks this thread freed into other heaps go out first (before the lock is taken: sending
    // them may drain an abandoned owner's queue under it), so an abandoned heap buffers nothing.
    // SAFETY: the heap is still ours.
    unsafe { flush_remote_buffer(heap) };
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
pub(super) fn reclaim_abandoned(locked: &mut Locked) {
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

pub(super) fn register_fork_handlers_once() {
    if !FORK_HANDLERS.swap(true, Ordering::AcqRel) {
        register_fork_handlers();
    }
}

pub(super) fn register_fork_handlers() {
    #[cfg(not(any(miri, loom)))]
    // SAFETY: the handlers are plain `extern "C"` functions valid for the life of the process.
    unsafe {
        libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
    }
}

#[cfg(not(any(miri, loom)))]
pub(super) extern "C" fn fork_prepare() {
    // The forking thread's buffered remote frees go out before the fork: the child must not
    // inherit blocks hidden in a buffer (in a share-mode child they would be written to
    // inherited pages when it flushed).
    flush_current();
    crate::lock::hold_for_fork();
}

#[cfg(not(any(miri, loom)))]
pub(super) extern "C" fn fork_parent() {
    crate::lock::release_after_fork();
}

#[cfg(not(any(miri, loom)))]
pub(super) extern "C" fn fork_child() {
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
        // The threads gone with the fork held blocks in their heaps' remote-free buffers: send
        // them to their pools (abandoned heaps buffer nothing). With the lock held, a queue of
        // an abandoned owner is left to `RECLAIM`, set below.
        let mut h = reg.all;
        while !h.is_null() {
            if h != me {
                flush_remote_buffer(h);
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
pub(super) fn share_child(locked: &mut Locked) {
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
