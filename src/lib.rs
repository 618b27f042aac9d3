//! # smallarena
//!
//! A pymalloc-style small-object allocator for Rust programs. Requests of up to 512 bytes (with
//! alignment up to 16) are served from 32 size classes, each carved out of 16 KiB pools inside
//! 1 MiB arenas mapped straight from the OS, the layout CPython's obmalloc made famous. Each
//! thread owns its pools, so allocation and free on the owning thread take no lock and no atomic
//! read-modify-write; frees from other threads go through a lock-free list per pool. Bigger or
//! more strictly aligned requests go to the system allocator.
//!
//! Install it with one line:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();
//!
//! fn main() {
//!     let words: Vec<String> = (0..1000).map(|i| format!("word {i}")).collect();
//!     assert_eq!(words[999], "word 999");
//!     assert_eq!(format!("{:?}", smallarena::mode()), "Arena");
//!     let stats = smallarena::stats();
//!     assert!(stats.blocks_in_use() >= 1000);
//!     println!("{stats}");
//! }
//! ```
//!
//! ## Where things live
//! - [`size_class`]: the 32 classes and which requests they serve.
//! - `pool`: 16 KiB pools, their header, free list and lock-free remote-free list.
//! - `arena`: 1 MiB arenas, the fullest-first pool supply, returning empty arenas to the OS.
//! - `heap`: per-thread heaps, the fast paths, thread exit and adoption, `fork()`.
//! - `os`: `mmap`/`munmap` (a heap-backed stand-in under Miri, a fixed reservation under loom).
//! - `system`: the libc allocator for large and over-aligned requests.
//! - [`mode`](mod@mode): which allocator serves small requests, decided once per process.
//! - [`stats`](mod@stats): [`Stats`], the readable snapshot.
//! - `env`: every `SMALLARENA_*` environment variable, read and parsed in one place.
//! - `sync`: the atomics, globals, thread-locals and spin lock, one facade (loom swaps it).
//! - `valgrind`: every client request: detection, and the annotate mode's block descriptions.
//! - `registry`: which addresses are arena memory, a lock-free bitmap over arena addresses.
//! - [`raw`]: size-less `alloc`/`free`/`usable_size`/`owns`, for a C `malloc` (the
//!   `smallarena-preload` crate).
//!
//! ## Companions
//! Two libraries that grew from the same seeds live in crates of their own and are re-exported
//! here behind cargo features that are off by default, so an allocator-only user compiles
//! neither:
//! - `slotted` (feature `slotted`, crate [`smallarena-slotted`](https://docs.rs/smallarena-slotted)):
//!   map-like records over a fixed, shared key set, storing only the values.
//! - `url` (feature `url`, crate [`smallarena-url`](https://docs.rs/smallarena-url)):
//!   CPython 3.11-compatible URL splitting with a kind-keyed, bounded parse cache.
//!
//! ## Seeing inside
//! [`stats()`] returns a [`Stats`] snapshot (a table as its `Display`, JSON with
//! [`Stats::json`]); `SMALLARENA_STATS=1` (or `=json`) prints it on stderr at exit. [`collect()`]
//! returns free memory to the OS now; [`usable_size()`] tells how big a block really is. With the
//! `profile` feature, `profile` is a sampling heap profiler: `SMALLARENA_LEAKS=1` prints the
//! sites still holding memory at exit, `SMALLARENA_PROFILE=<path>` writes a pprof or
//! folded-stacks profile.
//!
//! ## Guarantees
//! The allocator never allocates through itself, never panics, serves small requests from the
//! system allocator when the arena cannot grow and returns null only when that fails too, and
//! keeps working in a child process after `fork()`.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The supported targets: Linux (the allocator maps its arenas with `mmap`, hands heaps over with
// `pthread_atfork`, and its Valgrind client requests are the Linux protocol). Tested: x86_64
// (glibc, musl) and i686 (glibc); aarch64 builds. Other Unix systems may well work but have never
// been run, so they are refused rather than promised; see the README's "Platforms" section.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "smallarena supports Linux only (tested: x86_64 and i686, glibc and musl; aarch64 builds): \
     it maps its arenas with mmap and relies on pthread_atfork and Linux's thread-exit order; \
     this target is not Linux, so it is not supported"
);

/// Declares the crate's modules only where they can compile, so that on an unsupported target
/// the `compile_error!` above is the one error reported (and not one per missing libc item).
macro_rules! on_supported_targets {
    ($($item:item)*) => { $(#[cfg(target_os = "linux")] $item)* };
}

on_supported_targets! {
    mod arena;
    mod env;
    mod heap;
    pub mod mode;
    mod os;
    mod pool;
    #[cfg(all(feature = "profile", not(any(loom, miri))))]
    #[cfg_attr(docsrs, doc(cfg(feature = "profile")))]
    pub mod profile;
    pub mod raw;
    mod registry;
    pub mod size_class;
    pub mod stats;
    mod sync;
    mod system;
    #[cfg(all(test, not(loom)))]
    mod tests;
    mod valgrind;

    use core::alloc::{GlobalAlloc, Layout};
    pub use mode::{mode, Mode};
    use size_class::is_small;
    pub use stats::{ClassStats, Stats};
}

#[cfg(feature = "slotted")]
#[cfg_attr(docsrs, doc(cfg(feature = "slotted")))]
#[doc(inline)]
pub use smallarena_slotted as slotted;
#[cfg(feature = "url")]
#[cfg_attr(docsrs, doc(cfg(feature = "url")))]
#[doc(inline)]
pub use smallarena_url as url;

/// Entry points for the loom models in `tests/loom.rs` (only under `--cfg loom`): they call the
/// same internal functions the allocator's slow paths call, so a model can make them happen at
/// any point of an interleaving instead of waiting for a pool to run dry.
#[cfg(loom)]
pub mod loom_hooks {
    /// The calling thread's heap takes back every block other threads freed into its pools, as
    /// its allocation slow path does.
    pub fn collect_remote_frees() {
        crate::heap::collect_current();
    }

    /// Runs the calling thread's exit path (its heap is abandoned) as its thread-local
    /// destructor does; call it last in every model thread that allocated.
    pub fn thread_exit() {
        crate::heap::exit_current();
    }
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

/// A snapshot of the allocator's counters; see [`Stats`]. Takes the internal lock briefly and
/// allocates nothing while holding it; reads the process's resident size from the OS.
#[cfg(target_os = "linux")]
pub fn stats() -> Stats {
    let mut s = Stats::empty();
    let _quiet = valgrind::Quiet::new();
    heap::collect(&mut s);
    (s.resident_bytes, s.resident_peak_bytes) = os::resident();
    s
}

/// Returns free memory to the OS now, as mimalloc's `mi_collect(true)`: what a program calls after
/// a burst of allocations is over, to lower its resident size.
///
/// Returned:
/// * the calling thread's empty pools: those its heap caches for reuse and those it keeps at the
///   head of a class list;
/// * the empty pools of abandoned heaps (of threads that have exited), after taking back the
///   blocks other threads freed into them;
/// * every wholly empty arena (1 MiB), unmapped, including the one normally kept mapped so that
///   a program freeing everything and starting again does not map and unmap on every turn;
/// * the pages of every free pool (16 KiB) of the arenas still in use, dropped with
///   `madvise(MADV_DONTNEED)`: the range stays mapped and reads as zeros when used again. On a
///   4 KiB-page system the pool's first page is touched again at once (it holds the pool's
///   header), so 12 KiB of each 16 KiB free pool go back.
///
/// Not returned: the other live threads' heaps' cached empty pools (at most four, 64 KiB, per
/// heap: only their owner touches its lists; each thread may call `collect()` itself), free
/// blocks inside pools that still hold a live block, the heaps' own bookkeeping (a few KiB per
/// thread ever started), and memory of the system allocator (large blocks; see
/// `malloc_trim(3)` for glibc's). Takes the internal lock; its cost is proportional to the number
/// of free pools. Allocates nothing; does nothing in `System` mode (no arena is ever mapped).
#[cfg(target_os = "linux")]
pub fn collect() {
    heap::release_memory();
}

/// The usable size in bytes of a block this allocator returned for `layout`: how much memory the
/// block really holds.
///
/// * Arena blocks (mode [`Mode::Arena`], requests of up to 512 bytes with alignment up to 16): the
///   block size of the request's size class, `layout.size()` rounded up to a multiple of 16
///   (16 for a zero-size request).
/// * In [`Mode::Annotate`], small blocks: `layout.size()` (the bytes past it are a red zone that
///   memcheck reports accesses to).
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
#[cfg(target_os = "linux")]
pub unsafe fn usable_size(ptr: *const u8, layout: Layout) -> usize {
    let (size, align) = (layout.size(), layout.align());
    let m = mode::decide();
    match m {
        mode::ARENA | mode::ARENA_FALLBACK if owned_small(m, ptr, size, align) => {
            size_class::block_size(size_class::class_of(size.max(1)))
        }
        mode::ANNOTATE if valgrind::annotated_small(size, align) => size,
        // SAFETY: every other block is a live libc block (per the caller).
        _ => unsafe { system::usable_size(ptr.cast_mut()) }.max(size),
    }
}

/// System allocations of at least this many bytes sample the peak of bytes requested
/// ([`Stats::bytes_requested_peak`]).
#[cfg(target_os = "linux")]
const PEAK_SAMPLE_SIZE: usize = 1 << 20;

/// Where a new block of this layout is served in mode `m` (after an arena fallback, a small block
/// may also have come from libc: see [`owned_small`] for an existing block).
#[cfg(target_os = "linux")]
#[inline]
fn in_arena(m: u8, size: usize, align: usize) -> bool {
    match m {
        mode::ARENA | mode::ARENA_FALLBACK => is_small(size, align),
        mode::ANNOTATE => valgrind::annotated_small(size, align),
        _ => false,
    }
}

/// Whether the live block `ptr` of this layout is an arena block in mode `m`: by layout, except
/// after an arena fallback ([`mode::ARENA_FALLBACK`]), where a small block may be libc's and the
/// arena map tells.
#[cfg(target_os = "linux")]
#[inline]
fn owned_small(m: u8, ptr: *const u8, size: usize, align: usize) -> bool {
    if m == mode::ARENA_FALLBACK {
        is_small(size, align) && raw::owns(ptr)
    } else {
        in_arena(m, size, align)
    }
}

/// Small requests when the mode is not (yet known to be) `Arena`.
#[cfg(target_os = "linux")]
#[cold]
#[inline(never)]
fn alloc_small_other(layout: Layout, zeroed: bool) -> *mut u8 {
    match mode::decide() {
        mode::ARENA | mode::ARENA_FALLBACK if zeroed => heap::alloc_zeroed(layout.size()),
        mode::ARENA | mode::ARENA_FALLBACK => heap::alloc(layout.size()),
        mode::ANNOTATE if valgrind::annotated_small(layout.size(), layout.align()) => {
            valgrind::alloc(layout, zeroed)
        }
        _ => large_alloc(layout, zeroed),
    }
}

/// Frees a small-layout block when the mode is not `Arena`.
///
/// # Safety
/// As for `GlobalAlloc::dealloc`.
#[cfg(target_os = "linux")]
#[cold]
#[inline(never)]
unsafe fn dealloc_small_other(ptr: *mut u8, layout: Layout) {
    let m = mode::decide();
    if m == mode::ARENA_FALLBACK && raw::owns(ptr) {
        // SAFETY: an arena block (the map says so) of this small layout, served by the heap.
        unsafe { heap::free(ptr, layout.size()) };
    } else if m == mode::ANNOTATE && in_arena(m, layout.size(), layout.align()) {
        // SAFETY: in annotate mode this layout was served by `valgrind::alloc`.
        unsafe { valgrind::free(ptr, layout) };
    } else {
        heap::account(layout.size().wrapping_neg());
        // SAFETY: every other block came from libc.
        unsafe { system::free(ptr) };
    }
}

/// Serves a request from libc, counting it in `bytes_requested`. Kept out of line so the small
/// fast paths that share a function with it need no saved registers.
#[cfg(target_os = "linux")]
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
#[cfg(target_os = "linux")]
#[inline(never)]
unsafe fn large_free(ptr: *mut u8, layout: Layout) {
    heap::account(layout.size().wrapping_neg());
    // SAFETY: per the caller.
    unsafe { system::free(ptr) };
}

// SAFETY: small blocks come from pools that hand each block to one caller at a time, sized and
// aligned for the class (16-byte aligned, at least `size` bytes); everything else comes from libc
// with the requested alignment. `dealloc`/`realloc` route by the `Layout` the caller must pass
// back unchanged, and the mode that decides the routing never changes once a block exists.
#[cfg(target_os = "linux")]
unsafe impl GlobalAlloc for SmallArena {
    // Always inlined: with the profiler's hook (feature `profile`) the body crossed LLVM's
    // threshold for `#[inline]`, as `dealloc`'s did.
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        #[cfg(all(feature = "profile", not(any(loom, miri))))]
        if profile::crossed(layout.size()) {
            return profile::alloc_crossed(layout, false);
        }
        if is_small(layout.size(), layout.align()) {
            if mode::is_arena() {
                return heap::alloc(layout.size());
            }
            return alloc_small_other(layout, false);
        }
        large_alloc(layout, false)
    }

    // Always inlined: with the profiler's hook (feature `profile`) the body crossed LLVM's
    // threshold for `#[inline]`, as `dealloc`'s did.
    #[inline(always)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        #[cfg(all(feature = "profile", not(any(loom, miri))))]
        if profile::crossed(layout.size()) {
            return profile::alloc_crossed(layout, true);
        }
        if is_small(layout.size(), layout.align()) {
            if mode::is_arena() {
                return heap::alloc_zeroed(layout.size());
            }
            return alloc_small_other(layout, true);
        }
        large_alloc(layout, true)
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
        // SAFETY: large blocks come from libc in every mode.
        unsafe { large_free(ptr, layout) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        #[cfg(all(feature = "profile", not(any(loom, miri))))]
        // SAFETY: forwarding the caller's contract.
        if let Some(q) = unsafe { profile::realloc_hook(self, ptr, layout, new_size) } {
            return q;
        }
        let m = mode::decide();
        let old_arena = owned_small(m, ptr, layout.size(), layout.align());
        let new_arena = in_arena(m, new_size, layout.align());
        if old_arena && new_arena {
            if m == mode::ANNOTATE {
                // SAFETY: a live annotated arena block with this layout.
                if unsafe { valgrind::realloc_in_place(ptr, layout, new_size) } {
                    return ptr;
                }
            } else if size_class::class_of(layout.size()) == size_class::class_of(new_size) {
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
