//! The global allocator: [`SmallArena`]'s `GlobalAlloc` impl, which routes every request by the
//! mode in force ([`crate::mode`](mod@crate::mode)) and its layout, and the process's start-up
//! constructor.
//!
//! * Arena mode (the default): small layouts ([`is_small`]) go to the calling thread's heap
//!   ([`crate::heap`]), with one load and one compare of the mode byte on the fast path;
//!   everything else to the system allocator ([`crate::system`]), counted in `bytes_requested`.
//! * Arena mode after a fallback (the OS once refused a new arena): small blocks may be either,
//!   and a small free asks the arena map whose block it is.
//! * Annotate mode: small layouts with room for the redzone go to [`crate::annotate`].
//! * System mode: everything goes to the system allocator.
//!
//! The mode is decided on the first small request that finds it undecided (the cold path), and
//! never changes once a block exists, so `dealloc` and `realloc` route a block to the allocator
//! that made it by its layout alone.

use core::alloc::{GlobalAlloc, Layout};

use crate::mode::{self, State};
use crate::size_class::{self, is_medium, is_served, is_small};
use crate::tunables::PEAK_SAMPLE_SIZE;
#[cfg(all(feature = "profile", not(any(loom, miri))))]
use crate::profile;
use crate::{annotate, heap, raw, system};

/// Registers the fork handlers, creates the thread-exit key and arms the statistics printed at
/// exit, before `main` and before the constructors of default priority: an ELF constructor of
/// the highest priority (`.init_array.00000`). Not under Miri or loom, which model no `fork()`.
#[cfg(not(any(miri, loom)))]
#[used]
#[link_section = ".init_array.00000"]
static EARLY_INIT: extern "C" fn() = early_init;

#[cfg(not(any(miri, loom)))]
extern "C" fn early_init() {
    heap::init_process();
    crate::stats::print_at_exit_if_asked();
    crate::fork::read_env();
    #[cfg(feature = "profile")]
    crate::profile::start_if_asked();
    #[cfg(not(feature = "profile"))]
    crate::env::warn_if_profile_asked();
}

/// The global allocator. A zero-sized handle: all state is process-wide.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();
/// # fn main() { let _v = vec![1u8; 10]; }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SmallArena {
    _private: (),
}

impl SmallArena {
    /// The allocator handle, for a `#[global_allocator]` static.
    pub const fn new() -> Self {
        SmallArena { _private: () }
    }
}

/// Returns free memory to the OS now, as mimalloc's `mi_collect(true)`: what a program calls after
/// a burst of allocations is over, to lower its resident size.
///
/// First the blocks the calling thread freed into other threads' pools and still holds in its
/// remote-free buffer go out to their pools (at most 248 blocks, under 256 KiB, per thread).
///
/// Returned:
/// * the calling thread's empty pools: those its heap caches for reuse and those it keeps at the
///   head of a class list;
/// * the empty pools of abandoned heaps (of threads that have exited), after taking back the
///   blocks other threads freed into them;
/// * the pools of other live threads whose every block other threads have freed (a thread that
///   handed its blocks away and went idle), as the purge delay's idle-owner reclaim does for
///   threads idle for a delay or two, but the last pool of each class list;
/// * every wholly empty arena (1 MiB), unmapped, including the one normally kept mapped so that
///   a program freeing everything and starting again does not map and unmap on every turn;
/// * the pages of every free pool (16 KiB, header included: an arena lists its free pools in its
///   own header) of the arenas still in use, dropped with `madvise(MADV_DONTNEED)`: the range
///   stays mapped and reads as zeros when used again.
///
/// The purge delay (`SMALLARENA_PURGE_DELAY_MS`, 1 s by default) returns free pools and the kept
/// empty arena on its own once they have been unused that long, on the next slow path; `collect()`
/// does not wait, and also reaches the calling thread's and the exited threads' empty pools.
///
/// Not returned: the other live threads' heaps' cached empty pools (at most four, 64 KiB, per
/// heap: only their owner touches its lists; each thread may call `collect()` itself) and the
/// blocks in their remote-free buffers, free
/// blocks inside pools that still hold a live block, the heaps' own bookkeeping (a few KiB per
/// thread ever started), and memory of the system allocator (large blocks; see
/// `malloc_trim(3)` for glibc's). Takes the internal lock; its cost is proportional to the number
/// of free pools. Allocates nothing; does nothing in `System` mode (no arena is ever mapped).
pub fn collect() {
    heap::release_memory();
}

/// The usable size in bytes of a block this allocator returned for `layout`: how much memory the
/// block really holds.
///
/// * Arena blocks (mode [`Mode::Arena`](crate::Mode::Arena), requests of up to 512 bytes with
///   alignment up to 16): the block size of the request's size class, `layout.size()` rounded up to
///   a multiple of 16 (16 for a zero-size request).
/// * In [`Mode::Annotate`](crate::Mode::Annotate), small blocks: `layout.size()` (the bytes past
///   it are a red zone that memcheck reports accesses to).
/// * Every other block comes from the system allocator: libc's `malloc_usable_size`, at least
///   `layout.size()`.
///
/// Only for information (memory accounting, choosing a capacity to ask for): `GlobalAlloc`
/// requires `dealloc` and `realloc` to be given the `layout` the block was allocated with, not
/// one grown to the usable size.
///
/// # Safety
/// `ptr` is a live block returned by [`SmallArena`] (the process's global allocator) for
/// `layout`, not yet freed.
pub unsafe fn usable_size(ptr: *const u8, layout: Layout) -> usize {
    let (size, align) = (layout.size(), layout.align());
    let m = mode::decide();
    match m {
        State::Arena | State::ArenaFallback if owned_by_arena(m, ptr, size, align) => {
            size_class::any_block_size(size_class::any_class_of(size.max(1)))
        }
        State::Annotate if annotate::annotated_small(size, align) => size,
        // SAFETY: every other block is a live libc block (per the caller).
        _ => unsafe { system::usable_size(ptr.cast_mut()) }.max(size),
    }
}

/// Where a new block of this layout is served in mode `m` (after an arena fallback, an arena-sized
/// block may also have come from libc: see [`owned_by_arena`] for an existing block).
#[inline]
fn in_arena(m: State, size: usize, align: usize) -> bool {
    match m {
        State::Arena | State::ArenaFallback => is_served(size, align),
        State::Annotate => annotate::annotated_small(size, align),
        _ => false,
    }
}

/// Whether the arena map of the kind serving `size` (small or medium) holds `ptr`.
#[inline]
fn map_holds(ptr: *const u8, size: usize) -> bool {
    if size <= size_class::MAX_SMALL {
        raw::owns_small(ptr)
    } else {
        raw::owns_medium(ptr)
    }
}

/// Whether the live block `ptr` of this layout is an arena block in mode `m`: by layout, except
/// after an arena fallback ([`State::ArenaFallback`]), where an arena-sized block may be libc's
/// and the arena map tells.
#[inline]
fn owned_by_arena(m: State, ptr: *const u8, size: usize, align: usize) -> bool {
    if m == State::ArenaFallback {
        is_served(size, align) && map_holds(ptr, size)
    } else {
        in_arena(m, size, align)
    }
}

/// Small and medium requests when the mode is not (yet known to be) `Arena`.
#[cold]
#[inline(never)]
fn alloc_small_other(layout: Layout, zeroed: bool) -> *mut u8 {
    match mode::decide() {
        State::Arena | State::ArenaFallback if zeroed => heap::alloc_any::<true>(layout.size()),
        State::Arena | State::ArenaFallback => heap::alloc_any::<false>(layout.size()),
        State::Annotate if annotate::annotated_small(layout.size(), layout.align()) => {
            annotate::alloc(layout, zeroed)
        }
        _ => large_alloc(layout, zeroed),
    }
}

/// Frees a small- or medium-layout block when the mode is not `Arena`.
///
/// # Safety
/// As for `GlobalAlloc::dealloc`.
#[cold]
#[inline(never)]
unsafe fn dealloc_small_other(ptr: *mut u8, layout: Layout) {
    let m = mode::decide();
    if m == State::ArenaFallback && map_holds(ptr, layout.size()) {
        // SAFETY: an arena block (the map of its kind says so) of this layout, served by the
        // heap.
        unsafe { heap::free_any(ptr, layout.size()) };
    } else if m == State::Annotate && in_arena(m, layout.size(), layout.align()) {
        // SAFETY: in annotate mode this layout was served by `annotate::alloc`.
        unsafe { annotate::free(ptr, layout) };
    } else {
        heap::account(layout.size().wrapping_neg());
        // SAFETY: every other block came from libc.
        unsafe { system::free(ptr) };
    }
}

/// Serves a request above the small classes: a medium class in arena mode, else as
/// [`alloc_small_other`] for medium layouts, else libc ([`large_alloc`]). Kept out of line so
/// the small fast paths that share a function with it need no saved registers.
#[inline(never)]
fn medium_or_large_alloc<const ZERO: bool>(layout: Layout) -> *mut u8 {
    if is_medium(layout.size(), layout.align()) {
        if mode::is_arena() {
            let class = size_class::medium_class_of(layout.size());
            return heap::alloc_medium_sized::<ZERO>(class, layout.size());
        }
        return alloc_small_other(layout, ZERO);
    }
    large_alloc(layout, ZERO)
}

/// Frees a block above the small classes (the counterpart of [`medium_or_large_alloc`]); out of
/// line like it.
///
/// # Safety
/// As for `GlobalAlloc::dealloc`, with a layout that is not small.
#[inline(never)]
unsafe fn medium_or_large_free(ptr: *mut u8, layout: Layout) {
    if is_medium(layout.size(), layout.align()) {
        if mode::is_arena() {
            // SAFETY: in arena mode, medium layouts were served by the heap's medium classes.
            unsafe { heap::free_medium(ptr, layout.size()) };
        } else {
            // SAFETY: forwarding the caller's contract.
            unsafe { dealloc_small_other(ptr, layout) };
        }
        return;
    }
    // SAFETY: large blocks come from libc in every mode.
    unsafe { large_free(ptr, layout) };
}

/// Serves a request from libc, counting it in `bytes_requested`. Kept out of line so the small
/// fast paths that share a function with it need no saved registers.
#[inline(never)]
fn large_alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    let p = if zeroed {
        system::alloc_zeroed(layout)
    } else {
        system::alloc(layout)
    };
    if !p.is_null() {
        heap::account(layout.size());
        if layout.size() >= PEAK_SAMPLE_SIZE {
            heap::sample_peak_now();
        }
    }
    p
}

/// Frees a libc block, counting it in `bytes_requested`; out of line, like [`large_alloc`].
///
/// # Safety
/// `ptr` is a live libc block of `layout`.
#[inline(never)]
unsafe fn large_free(ptr: *mut u8, layout: Layout) {
    heap::account(layout.size().wrapping_neg());
    // SAFETY: per the caller.
    unsafe { system::free(ptr) };
}

/// A request whose profiler countdown crossed zero (feature `profile`): the profiler's own
/// requests from the system allocator, the others as usual, recorded when they are samples.
#[cfg(all(feature = "profile", not(any(loom, miri))))]
#[cold]
#[inline(never)]
fn alloc_crossed(layout: Layout, zeroed: bool) -> *mut u8 {
    let plain = || {
        if is_small(layout.size(), layout.align()) {
            if mode::is_arena() {
                return if zeroed {
                    heap::alloc_zeroed(layout.size())
                } else {
                    heap::alloc(layout.size())
                };
            }
            return alloc_small_other(layout, zeroed);
        }
        if zeroed {
            medium_or_large_alloc::<true>(layout)
        } else {
            medium_or_large_alloc::<false>(layout)
        }
    };
    match profile::on_crossing() {
        profile::Crossing::Guarded => profile::guarded_alloc(layout, zeroed).unwrap_or_else(plain),
        profile::Crossing::Skip => plain(),
        profile::Crossing::Sample(rate) => {
            let p = plain();
            profile::record(p, layout.size(), rate);
            p
        }
    }
}

// SAFETY: small and medium blocks come from pools that hand each block to one caller at a time,
// sized and aligned for the class (16-byte aligned, at least `size` bytes); everything else comes from libc
// with the requested alignment. `dealloc`/`realloc` route by the `Layout` the caller must pass
// back unchanged, and the mode that decides the routing never changes once a block exists.
unsafe impl GlobalAlloc for SmallArena {
    // Always inlined: with the profiler's hook (feature `profile`) the body crossed LLVM's
    // threshold for `#[inline]`, as `dealloc`'s did.
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        #[cfg(all(feature = "profile", not(any(loom, miri))))]
        if profile::crossed(layout.size()) {
            return alloc_crossed(layout, false);
        }
        if is_small(layout.size(), layout.align()) {
            if mode::is_arena() {
                return heap::alloc(layout.size());
            }
            return alloc_small_other(layout, false);
        }
        medium_or_large_alloc::<false>(layout)
    }

    // Always inlined: with the profiler's hook (feature `profile`) the body crossed LLVM's
    // threshold for `#[inline]`, as `dealloc`'s did.
    #[inline(always)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        #[cfg(all(feature = "profile", not(any(loom, miri))))]
        if profile::crossed(layout.size()) {
            return alloc_crossed(layout, true);
        }
        if is_small(layout.size(), layout.align()) {
            if mode::is_arena() {
                return heap::alloc_zeroed(layout.size());
            }
            return alloc_small_other(layout, true);
        }
        medium_or_large_alloc::<true>(layout)
    }

    // Always inlined: with the wrong-free checks the body crossed LLVM's threshold for `#[inline]`,
    // and a direct caller paid a call (and its register shuffling) on every free.
    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        #[cfg(all(feature = "profile", not(any(loom, miri))))]
        // SAFETY: forwarding the caller's contract; true means the hook freed the block.
        if unsafe { profile::on_dealloc(ptr, layout) } {
            return;
        }
        if is_small(layout.size(), layout.align()) {
            if mode::is_arena() {
                // SAFETY: the caller passes a live block from `alloc` with this layout; small
                // layouts in arena mode were served by the heap.
                unsafe { heap::free(ptr, layout.size()) };
                return;
            }
            // SAFETY: forwarding the caller's contract.
            unsafe { dealloc_small_other(ptr, layout) };
            return;
        }
        // SAFETY: forwarding the caller's contract.
        unsafe { medium_or_large_free(ptr, layout) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        #[cfg(all(feature = "profile", not(any(loom, miri))))]
        // SAFETY: forwarding the caller's contract.
        match unsafe { profile::realloc_begin(ptr, layout, new_size) } {
            profile::Realloc::Plain => {}
            profile::Realloc::Done(q) => return q,
            profile::Realloc::Moving(rec) => {
                // The sample is out of the table: this call takes the usual path.
                // SAFETY: forwarding the caller's contract.
                let q = unsafe { self.realloc(ptr, layout, new_size) };
                profile::realloc_end(rec, ptr, q, new_size);
                return q;
            }
        }
        let m = mode::decide();
        let old_arena = owned_by_arena(m, ptr, layout.size(), layout.align());
        let new_arena = in_arena(m, new_size, layout.align());
        // An inherited block (share-mode fork) is never resized in place: it is copied out, so
        // the program's writes land on the child's own pages.
        // SAFETY: `old_arena`: a live arena block, so its arena is mapped.
        if old_arena && new_arena && !unsafe { crate::arena::inherited(ptr) } {
            if m == State::Annotate {
                // SAFETY: a live annotated arena block with this layout.
                if unsafe { annotate::realloc_in_place(ptr, layout, new_size) } {
                    return ptr;
                }
            } else if size_class::stays_in_place(layout.size(), new_size) {
                heap::account(new_size.wrapping_sub(layout.size()));
                return ptr;
            }
        } else if !old_arena && !new_arena {
            // Both sides live in libc.
            // SAFETY: the block is a live libc block with this layout.
            let q = unsafe { system::realloc(ptr, layout, new_size) };
            if !q.is_null() {
                heap::account(new_size.wrapping_sub(layout.size()));
                if new_size >= PEAK_SAMPLE_SIZE && new_size > layout.size() {
                    heap::sample_peak_now();
                }
            }
            #[cfg(all(feature = "profile", not(any(loom, miri))))]
            profile::after_system_realloc(q, new_size);
            return q;
        }
        // Moving between the arena and libc, or between two arena classes.
        // SAFETY: `realloc`'s contract guarantees the new layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: forwarding the caller's valid layouts and live block.
        unsafe {
            let q = self.alloc(new_layout);
            if !q.is_null() {
                core::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            q
        }
    }
}
