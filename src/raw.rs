//! Size-less access to the arena, for a C-style `malloc`/`free` (the `smallarena-preload` crate).
//!
//! [`GlobalAlloc`](core::alloc::GlobalAlloc) hands the allocator the layout on every free; C's
//! `free(p)` does not. This module serves that world:
//!
//! * [`owns`] tells in constant time, without a lock, whether a pointer lies in one of smallarena's
//!   arenas (a bitmap over arena addresses, updated when arenas are mapped and unmapped), so a
//!   caller can send every foreign pointer to the allocator that made it; [`owns_small`] and
//!   [`owns_medium`] ask each kind of arena alone, one lookup each;
//! * [`usable_size`] reads the block size from the pool header of an owned pointer;
//! * [`alloc`]/[`alloc_zeroed`] serve *small* and *medium* requests (`size <= 32768`; every block
//!   is 16-byte aligned) from the calling thread's pools, and [`free`] takes them back from any
//!   thread ([`free_small`] and [`free_medium`] when the caller knows the kind already).
//!
//! [`alloc`] returns null when it will not serve a request, and the caller then uses its own
//! large-object allocator (libc in the preload). That happens for sizes above 32 KiB and in every
//! mode but
//! [`Mode::Arena`](crate::Mode::Arena): in `System` mode (the automatic choice under Valgrind)
//! and also in `Annotate` mode, which this module does not implement (its red zones would make
//! [`usable_size`] differ from the block size); a C program under Valgrind is best served by
//! libc's own functions, which memcheck replaces.
//!
//! When the OS refuses a new arena, [`alloc`] serves the small request from the system allocator
//! instead (as the `GlobalAlloc` path does): the caller tells the two apart with [`owns`], as it
//! does for every pointer. Null means the system allocator failed too.
//!
//! Blocks from [`alloc`] count their whole block size in
//! [`Stats::bytes_requested`](crate::Stats), since [`free`] learns only the block size.
//!
//! ```
//! use smallarena::raw;
//! let p = raw::alloc(100);
//! if !p.is_null() {
//!     // Arena mode: the block is ours, 112 bytes (class 6), 16-byte aligned.
//!     assert!(raw::owns(p));
//!     // SAFETY: `p` is a live block from `raw::alloc`.
//!     assert_eq!(unsafe { raw::usable_size(p) }, 112);
//!     // SAFETY: `p` is live and freed once.
//!     unsafe { raw::free(p) };
//! }
//! let medium = raw::alloc(3000);
//! if !medium.is_null() {
//!     // A medium block: 3072 bytes (four classes per doubling above 512).
//!     assert!(raw::owns(medium) && raw::owns_medium(medium) && !raw::owns_small(medium));
//!     // SAFETY: a live block from `raw::alloc`.
//!     assert_eq!(unsafe { raw::usable_size(medium) }, 3072);
//!     // SAFETY: live, freed once.
//!     unsafe { raw::free(medium) };
//! }
//! let big = raw::alloc(40_000);
//! assert!(big.is_null()); // above 32 KiB: the caller's own allocator serves it
//! assert!(!raw::owns(&0u8));
//! ```

use crate::mode::{self, State};
use crate::pool::Pool;
use crate::size_class::{
    any_block_size, any_class_of, block_size, class_of, is_medium_class, stays_in_place, GRANULE,
    MAX_MEDIUM,
};
use crate::sync::Ordering;
use crate::{arena_map, gate, heap};

pub use crate::gate::Fast;
pub use crate::tunables::{MAX_ALIGN, MAX_SMALL};

/// The fast-path word a C `malloc`/`free` reads first (one address for everything it reads from
/// smallarena's globals, which a shared library reaches through its GOT):
/// [`Fast::malloc_open`] (the mode is `Arena` and no profile is being taken: [`try_alloc_gated`]
/// may serve the request), [`Fast::free_small_open`] (the pointer is in a small arena carved
/// from the address-space reservation, see [`reserve_address_space`], and no profiler sample is
/// live: [`free_small`] may free it), [`Fast::samples_live`] and [`Fast::reserved_kind`] for
/// the other frees.
#[inline(always)]
pub fn fast() -> &'static Fast {
    gate::fast()
}

/// Asks for small and medium arenas to be carved from one address-space reservation from now
/// on (64-bit Linux; elsewhere nothing happens), so that [`Fast::free_small_open`] tells a
/// small block of ours with one subtraction and one compare. The
/// reservation (16 GiB of address space: 8 GiB for small arenas, 8 GiB for medium ones, mapped
/// `PROT_READ` and `MAP_NORESERVE`: no memory and no commit charge until an arena is carved) is
/// made with the next new arena; when the OS refuses it, or a part is full, arenas are mapped
/// one by one as before, and only the arena map ([`owns_small`], [`owns_medium`]) knows them.
/// Every arena is in the arena map either way. For the `LD_PRELOAD` library, which calls it
/// before its first arena. A load and a branch once it was asked for.
#[inline]
pub fn reserve_address_space() {
    crate::reserve::enable();
}

/// Whether `p` points into one of smallarena's arenas (small or medium), i.e. was (or could have
/// been) returned by [`alloc`]/[`alloc_zeroed`]. Any pointer value may be asked about, including
/// null and pointers from other allocators; lock-free, constant time (one or two bitmap loads),
/// never allocates.
#[inline(always)]
pub fn owns(p: *const u8) -> bool {
    owns_small(p) || owns_medium(p)
}

/// Whether `p` points into one of smallarena's small arenas (blocks of at most 512 bytes): one
/// bitmap load. As [`owns`] otherwise.
#[inline(always)]
pub fn owns_small(p: *const u8) -> bool {
    arena_map::contains(p.addr())
}

/// Whether `p` points into one of smallarena's medium arenas (blocks of 640 to 32768 bytes): one
/// bitmap load. As [`owns`] otherwise.
#[inline(always)]
pub fn owns_medium(p: *const u8) -> bool {
    arena_map::contains_medium(p.addr())
}

/// The usable size of an arena block: its class's block size (16..=32768). Every byte of it may be
/// used, and [`free`] takes it back whole.
///
/// A pointer that is not a live block (one inside a block, or a block already freed) aborts the
/// process with a one-line message, as [`free`] does: a C `realloc` or `malloc_usable_size` of a
/// freed or interior pointer is caught here.
///
/// # Safety
/// `p` must be a live block from [`alloc`]/[`alloc_zeroed`] (so [`owns`] is true for it), or at
/// least a pointer for which [`owns`] is true.
#[inline]
pub unsafe fn usable_size(p: *const u8) -> usize {
    let small = owns_small(p);
    // SAFETY: `p` points into a mapped arena (per the caller), of the kind the map says.
    unsafe { heap::check_live(p.cast_mut(), !small) };
    if small {
        // SAFETY: as above.
        unsafe { class_size(p) }
    } else {
        // SAFETY: as above; a live block's pool serves its class while the block lives.
        unsafe { Pool::bytes(Pool::of_medium(p.cast_mut())) }
    }
}

/// The block size of the class `p`'s pool serves.
///
/// # Safety
/// `p` points into a mapped arena.
#[inline(always)]
unsafe fn class_size(p: *const u8) -> usize {
    let pool = Pool::of(p.cast_mut());
    // SAFETY: arena pool headers are mapped; a live block's pool serves the block's class while
    // the block is live (see `Pool::block_size`). For a pool serving no class the size is 0, and
    // `heap::free` rejects the pointer.
    unsafe { Pool::block_size(pool) }
}

/// A block of at least `size` bytes (a unique block for `size == 0`), 16-byte aligned, from the
/// arena. Null when the request is too big for a class (`size > 32768`), the mode is not
/// `Arena`, or the OS refused memory: the caller then serves it elsewhere.
#[inline]
pub fn alloc(size: usize) -> *mut u8 {
    match arena_class(size) {
        Some(class) if is_medium_class(class) => {
            heap::alloc_medium_sized::<false>(class, any_block_size(class))
        }
        Some(class) => heap::alloc_sized::<false>(class, block_size(class)),
        None => core::ptr::null_mut(),
    }
}

/// Like [`alloc`], and the block reads as zeros.
#[inline]
pub fn alloc_zeroed(size: usize) -> *mut u8 {
    match arena_class(size) {
        Some(class) if is_medium_class(class) => {
            heap::alloc_medium_sized::<true>(class, any_block_size(class))
        }
        Some(class) => heap::alloc_sized::<true>(class, block_size(class)),
        None => core::ptr::null_mut(),
    }
}

/// The fast path of [`alloc`] alone, for a `malloc` whose fallback is another allocator: a block
/// when the calling thread's pool for the class has one ready, else null, having done nothing
/// (the first request of a thread or of a class, a pool run dry, `size` 0 or above 512, a mode
/// other than `Arena`, or one not decided yet). A caller then calls [`alloc`], and its own
/// allocator if that is null too.
///
/// It makes no call and needs no stack, so a caller that tail-calls its fallback out of line
/// keeps nothing alive across a call on its fast path:
///
/// ```
/// # use smallarena::raw;
/// fn my_malloc(size: usize) -> *mut u8 {
///     let p = raw::try_alloc(size);
///     if !p.is_null() {
///         return p;
///     }
///     my_malloc_slow(size)
/// }
/// #[inline(never)]
/// fn my_malloc_slow(size: usize) -> *mut u8 {
///     let p = raw::alloc(size);
///     if p.is_null() {
///         // ... the caller's own allocator
///     }
///     p
/// }
/// let p = my_malloc(40);
/// if !p.is_null() {
///     // SAFETY: a live block from `raw`, freed once.
///     unsafe { raw::free(p) };
/// }
/// ```
#[inline(always)]
pub fn try_alloc(size: usize) -> *mut u8 {
    // One compare for both `size == 0` (served by `alloc`, as class 0) and `size > MAX_SMALL`.
    if size.wrapping_sub(1) >= MAX_SMALL || !mode::is_arena() {
        return core::ptr::null_mut();
    }
    // For 1 <= size <= MAX_SMALL, the block size of `class_of(size)`, in two instructions.
    let block = (size + (GRANULE - 1)) & !(GRANULE - 1);
    debug_assert_eq!(block, block_size(class_of(size)));
    heap::try_alloc_sized::<false>(class_of(size), block)
}

/// [`try_alloc`] behind the fast-path gate in one test: a block when [`Fast::malloc_open`] and
/// the calling thread's pool for the class has one ready, else null, having done nothing. With
/// the `initial-exec-tls` feature on x86-64 the gate's value picks the word read as the thread's
/// heap (the heap pointer for 0, a null word after it otherwise), so the gate costs a load and
/// no branch of its own; elsewhere it is tested first.
#[inline(always)]
pub fn try_alloc_gated(size: usize) -> *mut u8 {
    let gate = gate::fast().malloc_gate();
    if size.wrapping_sub(1) >= MAX_SMALL {
        return core::ptr::null_mut();
    }
    let block = (size + (GRANULE - 1)) & !(GRANULE - 1);
    debug_assert_eq!(block, block_size(class_of(size)));
    heap::try_alloc_sized_at::<false>(gate, class_of(size), block)
}

/// Whether the arena block `p` can hold `new_size` bytes where it is: `new_size` is at most
/// 32768 (`MAX_MEDIUM`) and in the block's size class (small or medium), so every byte
/// [`usable_size`] promised stays valid. A C `realloc(p, new_size)` returns `p` unchanged when this is true;
/// otherwise it moves the block. The rule (the same one `GlobalAlloc::realloc` follows) lives in
/// one place.
/// Always false for a block inherited across a `fork()` made with
/// [`ForkPolicy::Share`](crate::ForkPolicy): `realloc` copies it out to the child's own memory
/// (one load of a global in a process that never forked in share mode).
///
/// A pointer that is not a live block aborts the process, as for [`usable_size`].
///
/// # Safety
/// As for [`usable_size`].
#[inline]
pub unsafe fn resize_in_place(p: *const u8, new_size: usize) -> bool {
    // SAFETY: per the caller.
    let usable = unsafe { usable_size(p) };
    // SAFETY: a live block (checked above), so its arena is mapped.
    stays_in_place(usable, new_size) && !unsafe { crate::arena::inherited(p) }
}

/// Frees an arena block (small or medium), from any thread: [`free_small`] or [`free_medium`], as
/// the address maps say.
///
/// # Safety
/// As for [`free_small`], for a pointer for which [`owns`] is true.
#[inline]
pub unsafe fn free(p: *mut u8) {
    // SAFETY: per the caller, an arena pointer, of the kind the map says.
    unsafe {
        if owns_small(p) {
            free_small(p)
        } else {
            free_medium(p)
        }
    }
}

/// Frees a small arena block, from any thread.
///
/// Wrong frees that are cheap to tell abort the process with one line on stderr naming the fault
/// and the address (as glibc does): a pointer that is not the start of a block (inside one, or in
/// a pool serving nothing) and a block that is already free (a double free).
///
/// # Safety
/// `p` must be a live block from [`alloc`]/[`alloc_zeroed`], not freed since; or at least a
/// pointer for which [`owns_small`] is true (then the checks above apply).
///
/// Always inlined, so that a `free` that has just asked [`owns_small`] goes straight to the heap:
/// no call, and no second ownership test.
#[inline(always)]
pub unsafe fn free_small(p: *mut u8) {
    // SAFETY: per the caller, an arena pointer; its class gives the size it was served with, and
    // `heap::free` checks it.
    unsafe { heap::free(p, class_size(p)) }
}

/// Frees a medium arena block, from any thread; the checks of [`free_small`] apply.
///
/// # Safety
/// `p` must be a live block from [`alloc`]/[`alloc_zeroed`], not freed since; or at least a
/// pointer for which [`owns_medium`] is true.
#[inline]
pub unsafe fn free_medium(p: *mut u8) {
    // SAFETY: per the caller, a pointer into a mapped medium arena: its pool header is readable,
    // and for a live block holds the class it was served with (for a pool serving none, some
    // size: `heap::free_medium` rejects the pointer before it counts it). The class is read from
    // the header's first line, not `Pool::bytes` on the line remote freers write.
    unsafe {
        let class = usize::from((*Pool::of_medium(p)).class.load(Ordering::Relaxed));
        heap::free_medium(p, any_block_size(class))
    }
}

/// The class (small or medium) serving `size` when the arena should serve it.
#[inline(always)]
fn arena_class(size: usize) -> Option<usize> {
    if size > MAX_MEDIUM {
        return None;
    }
    if !mode::is_arena() && !matches!(mode::decide(), State::Arena | State::ArenaFallback) {
        return None;
    }
    // The arena serves: `malloc`'s fast path may too (see `try_alloc_gated`).
    let fast = gate::fast();
    if fast.is_closed(gate::NOT_ARENA) {
        fast.open(gate::NOT_ARENA);
    }
    Some(any_class_of(size.max(1)))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn small_sizes_round_trip_and_large_ones_are_refused() {
        // Classes 0, 1, 15 and 31: none that `crate::tests` counts.
        for size in [0, 1, 15, 16, 17, 250, 511, 512] {
            let p = alloc(size);
            assert!(!p.is_null(), "{size}");
            assert!(owns(p));
            assert_eq!(p.addr() % 16, 0);
            // SAFETY: live block from `alloc`.
            let us = unsafe { usable_size(p) };
            assert!(us >= size.max(1) && us < size.max(1) + 16, "{size} -> {us}");
            // SAFETY: the block has `us` writable bytes; freed once.
            unsafe {
                core::ptr::write_bytes(p, 0xAB, us);
                free(p);
            }
        }
        // Medium sizes: classes 32, 33, 43, 55.
        for size in [513, 700, 4000, 32768] {
            let p = alloc(size);
            assert!(!p.is_null(), "{size}");
            assert!(owns(p) && owns_medium(p) && !owns_small(p));
            assert_eq!(p.addr() % 16, 0);
            // SAFETY: live block from `alloc`.
            let us = unsafe { usable_size(p) };
            assert!(us >= size && us <= size + size / 4, "{size} -> {us}");
            // SAFETY: the block has `us` writable bytes; freed once.
            unsafe {
                core::ptr::write_bytes(p, 0xAB, us);
                free(p);
            }
        }
        assert!(alloc(MAX_MEDIUM + 1).is_null());
        assert!(alloc_zeroed(usize::MAX).is_null());
    }

    #[test]
    fn arenas_carved_from_the_reservation_are_told_by_one_compare() {
        // From now on this test process's new arenas come from the reservation (64-bit Linux;
        // nothing changes under Miri or on 32-bit targets, where none is made).
        reserve_address_space();
        let reserved = cfg!(all(target_pointer_width = "64", not(miri)));
        let fast = fast();
        // Enough blocks of classes no other unit test uses to need a new arena of each kind:
        // 2 MiB of 400-byte blocks (class 24), 6 MiB of 24 KiB blocks (class 53).
        let n = if cfg!(miri) { 8 } else { 5200 };
        let small: Vec<*mut u8> = (0..n).map(|_| alloc(400)).collect();
        let medium: Vec<*mut u8> = (0..n / 20).map(|_| alloc(24_000)).collect();
        assert!(small.iter().chain(&medium).all(|p| !p.is_null() && owns(*p)));
        let carved_small = small.iter().filter(|&&p| fast.free_small_open(p)).count();
        let carved_medium = medium
            .iter()
            .filter(|&&p| fast.reserved_kind(p) == Some(false))
            .count();
        assert_eq!(carved_small > 0, reserved, "{carved_small} of {n}");
        assert_eq!(carved_medium > 0, reserved, "{carved_medium}");
        for &p in &small {
            // The one compare never says yes for a block that is not a small one of ours, and
            // agrees with the map when it says yes.
            assert!(!fast.free_small_open(p) || (owns_small(p) && fast.reserved_kind(p) == Some(true)));
        }
        for &p in &medium {
            assert!(!fast.free_small_open(p) && owns_medium(p));
        }
        // Foreign pointers: a stack address, a block of the system allocator, null.
        let on_stack = 0u8;
        let boxed = Box::new([0u8; 64]);
        for p in [&on_stack as *const u8, boxed.as_ptr(), core::ptr::null()] {
            assert!(!fast.free_small_open(p) && fast.reserved_kind(p).is_none());
        }
        for p in small.into_iter().chain(medium) {
            // SAFETY: live blocks from `alloc`, freed once.
            unsafe { free(p) };
        }
    }

    /// A block handed to another thread to free.
    struct Ptr(*mut u8);
    // SAFETY: arena blocks may be freed from any thread; each is used by one thread at a time.
    unsafe impl Send for Ptr {}

    #[test]
    fn zeroed_blocks_read_as_zeros_and_free_crosses_threads() {
        const SIZE: usize = 160; // class 9, which no other unit test uses
        let n = if cfg!(miri) { 20 } else { 500 };
        let mut ps = Vec::new();
        for _ in 0..n {
            let p = alloc_zeroed(SIZE);
            assert!(!p.is_null());
            // SAFETY: live block of at least SIZE bytes.
            let zero = unsafe { core::slice::from_raw_parts(p, SIZE) }
                .iter()
                .all(|&b| b == 0);
            assert!(zero);
            // SAFETY: as above; dirty it so a recycled block would show.
            unsafe { core::ptr::write_bytes(p, 0xCD, SIZE) };
            ps.push(Ptr(p));
        }
        std::thread::spawn(move || {
            for p in ps {
                assert!(owns(p.0));
                // SAFETY: each block is live and freed exactly once, here.
                unsafe { free(p.0) };
            }
        })
        .join()
        .unwrap();
        // Recycled blocks come back zeroed too.
        let p = alloc_zeroed(SIZE);
        // SAFETY: live block of at least SIZE bytes, freed once.
        unsafe {
            assert!(core::slice::from_raw_parts(p, SIZE).iter().all(|&b| b == 0));
            free(p);
        }
    }
}
