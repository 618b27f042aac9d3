//! Everything smallarena says to Valgrind, in one place: detection, and the annotate mode that
//! keeps the arena but describes every block to memcheck.
//!
//! The client requests are issued by the hand-written [`client`] module (inline assembly, no
//! dependency). With the `valgrind` cargo feature (on by default) on x86_64 and aarch64 Linux they
//! are compiled in; without the feature, on other targets, and under Miri every request here is a
//! no-op and [`running_on_valgrind`] is false, so auto mode always means `Arena`. None of these
//! functions is on the arena-mode fast path: the allocator reaches them only when the mode byte
//! says `System` or `Annotate`.
//!
//! ## Annotate mode
//! * A block handed out is described with `MALLOCLIKE_BLOCK` (the requested size, zeroed for
//!   `alloc_zeroed`); a free is `FREELIKE_BLOCK`; an in-place `realloc` is `RESIZEINPLACE_BLOCK`.
//! * Every small request takes [`REDZONE`] more bytes from its size class, so the bytes right after
//!   a block are never another live block: an overrun lands in no-access memory and is reported.
//!   Requests too big for that go to libc, whose blocks memcheck tracks itself.
//! * Arenas (pool headers, free blocks, unused space) and heap structures are marked no-access when
//!   mapped. The allocator's own touches of them happen inside [`Quiet`] (error reporting off for
//!   the calling thread), so only the program's accesses are reported.
//! * A free of a block memcheck considers not addressable (a double free, or a pointer that is not
//!   a live block) is reported by `FREELIKE_BLOCK` and then *not* performed, so the arena's free
//!   lists are not corrupted and the run goes on to report further errors.
//! * Freed blocks wait in a bounded FIFO [`quarantine`] (no-access, already `FREELIKE_BLOCK`ed)
//!   before the heap may hand them out again, as with memcheck's own `--freelist-vol` and
//!   jemalloc 3.x's quarantine: a use-after-free read or a double free through a stale pointer is
//!   still reported at the faulty access, with its stack, after the program allocated more blocks
//!   of the class, and the block's next owner is never blamed for it. The budget is
//!   `SMALLARENA_QUARANTINE_MB` MiB (a whole number; default 20, memcheck's `--freelist-vol`
//!   default; `0` disables the quarantine), counted in whole blocks; past it the oldest blocks go
//!   back to the heap (to their pool's owner, as a remote free when another thread owns it).
//!   The queue is threaded through the blocks themselves (it allocates nothing) and guarded by
//!   the arena lock. Nothing is drained at thread or process exit.

use core::alloc::Layout;

/// Extra bytes each small request takes in annotate mode, kept no-access after the block.
pub(crate) const REDZONE: usize = 16;

mod client;
mod quarantine;

/// smallarena's requests, each a thin wrapper over [`client::request`] with the arguments
/// `valgrind.h` and `memcheck.h` document. Natively, or where requests are compiled out, each is
/// a no-op answering "not under Valgrind" / "addressable".
mod req {
    use super::client::{self, request};

    /// `RUNNING_ON_VALGRIND`: nonzero under Valgrind.
    pub(super) fn running() -> bool {
        request(0, client::RUNNING_ON_VALGRIND, [0; 5]) != 0
    }
    /// `VALGRIND_MALLOCLIKE_BLOCK(p, size, 0, zeroed)`: `size` bytes at `p` are a new heap block.
    pub(super) fn malloclike(p: *mut u8, size: usize, zeroed: bool) {
        request(
            0,
            client::MALLOCLIKE_BLOCK,
            [p as usize, size, 0, usize::from(zeroed), 0],
        );
    }
    /// `VALGRIND_FREELIKE_BLOCK(p, 0)`: the heap block at `p` is freed.
    pub(super) fn freelike(p: *mut u8) {
        request(0, client::FREELIKE_BLOCK, [p as usize, 0, 0, 0, 0]);
    }
    /// `VALGRIND_RESIZEINPLACE_BLOCK(p, old, new, 0)`: the block at `p` now has `new` bytes.
    pub(super) fn resize_in_place(p: *mut u8, old: usize, new: usize) {
        request(0, client::RESIZEINPLACE_BLOCK, [p as usize, old, new, 0, 0]);
    }
    /// `VALGRIND_MAKE_MEM_NOACCESS(p, len)`.
    pub(super) fn no_access(p: *mut u8, len: usize) {
        request(0, client::MAKE_MEM_NOACCESS, [p as usize, len, 0, 0, 0]);
    }
    /// `VALGRIND_CHECK_MEM_IS_ADDRESSABLE(p, len) == 0` (the request reports an error when not).
    pub(super) fn addressable(p: *mut u8, len: usize) -> bool {
        request(
            0,
            client::CHECK_MEM_IS_ADDRESSABLE,
            [p as usize, len, 0, 0, 0],
        ) == 0
    }
    /// `VALGRIND_DISABLE_ERROR_REPORTING` for the calling thread (nests).
    pub(super) fn quiet_begin() {
        request(0, client::CHANGE_ERR_DISABLEMENT, [1, 0, 0, 0, 0]);
    }
    /// `VALGRIND_ENABLE_ERROR_REPORTING`: undoes one [`quiet_begin`].
    pub(super) fn quiet_end() {
        request(
            0,
            client::CHANGE_ERR_DISABLEMENT,
            [usize::MAX, 0, 0, 0, 0], // -1
        );
    }
}

/// Whether this build can describe the arena to memcheck: client requests are compiled in and
/// supported on this target. Annotate mode is unavailable otherwise.
#[cfg_attr(miri, allow(dead_code))] // Miri reads no `SMALLARENA_MODE`, so asks no question.
pub(crate) const ANNOTATE_SUPPORTED: bool = client::SUPPORTED;

/// Whether this process runs under Valgrind (a client request; false natively, or without the
/// `valgrind` feature). Costs a handful of instructions natively; called once per process.
pub(crate) fn running_on_valgrind() -> bool {
    req::running()
}

/// Marks allocator-owned memory no-access (annotate mode only; a no-op otherwise).
pub(crate) fn hide(p: *mut u8, len: usize) {
    if crate::mode::is_annotate() {
        req::no_access(p, len);
    }
}

/// Turns memcheck's error reporting off for the calling thread while the allocator touches its
/// own no-access memory; back on when dropped. Nests. Does nothing outside annotate mode.
pub(crate) struct Quiet(bool);

impl Quiet {
    /// Quiet if the process is in annotate mode.
    #[inline]
    pub(crate) fn new() -> Quiet {
        let on = crate::mode::is_annotate();
        if on {
            req::quiet_begin();
        }
        Quiet(on)
    }
}

impl Drop for Quiet {
    #[inline]
    fn drop(&mut self) {
        if self.0 {
            req::quiet_end();
        }
    }
}

/// Whether a request is served by the arena in annotate mode (room left for the redzone).
#[inline]
pub(crate) fn annotated_small(size: usize, align: usize) -> bool {
    crate::size_class::is_small(size + REDZONE, align)
}

/// Annotate mode: an arena block for a small request, described to memcheck.
pub(crate) fn alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    let size = layout.size();
    let p = {
        let _q = Quiet::new();
        let p = if zeroed {
            crate::heap::alloc_zeroed(size + REDZONE)
        } else {
            crate::heap::alloc(size + REDZONE)
        };
        if !p.is_null() {
            // The heap counted size + REDZONE as requested; the caller asked for `size`.
            crate::heap::account(REDZONE.wrapping_neg());
        }
        p
    };
    if !p.is_null() {
        req::malloclike(p, size, zeroed);
    }
    p
}

/// Annotate mode: frees an arena block: described to memcheck as freed at once, then held in the
/// [`quarantine`] (when it is enabled) before the heap may hand it out again.
///
/// # Safety
/// As for `GlobalAlloc::dealloc` with a layout that [`annotated_small`] accepts.
pub(crate) unsafe fn free(p: *mut u8, layout: Layout) {
    let size = layout.size();
    let live = {
        let _q = Quiet::new();
        req::addressable(p, size)
    };
    // Reports a double or invalid free (with the stack) when the block is not live: one freed
    // earlier is no-access until it leaves the quarantine, so a stale pointer's free is caught.
    req::freelike(p);
    if !live {
        return;
    }
    let _q = Quiet::new();
    let budget = quarantine::budget();
    // SAFETY: a live arena block, so its arena is mapped. An inherited block is not queued: the
    // queue's links live in the blocks ([`crate::fork`]); the heap drops it.
    if budget == 0 || unsafe { crate::fork::inherited(p) } {
        // SAFETY: per the caller, a live arena block of this size.
        unsafe { release(p, size) };
        return;
    }
    // The program's bytes are gone now; the block's are counted again when it leaves.
    crate::heap::account(size.wrapping_neg());
    let chain = {
        let mut locked = crate::arena::Locked::take();
        // SAFETY: a live annotated block (so at least 32 bytes, 16-byte aligned, room for a
        // `Link`), freed once (a second free finds it no-access and returns above), and ours
        // until the queue gives it back.
        unsafe { quarantine::queue(&mut locked).push(p.cast(), size, budget) }
    };
    // Given back outside the lock: `heap::free` may take it.
    let mut link = chain;
    while !link.is_null() {
        // SAFETY: a block of the chain the push returned, visited once, before it is freed.
        let (next, size) = unsafe { quarantine::unlink(link) };
        crate::heap::account(size);
        // SAFETY: a block the program freed (a live arena block of this size until then),
        // which only the quarantine held since.
        unsafe { release(link.cast(), size) };
        link = next;
    }
}

/// A share-mode fork's child forgets the quarantine it inherited (its links live in inherited
/// blocks, which the child must not write: see [`crate::fork`]); returns the bytes it held, which
/// stay unused.
#[cfg_attr(any(miri, loom), allow(dead_code))] // Fork handlers only (none under Miri or loom).
pub(crate) fn forget_quarantine_after_fork(locked: &mut crate::arena::Locked) -> usize {
    let q = quarantine::queue(locked);
    let bytes = q.bytes();
    *q = quarantine::Fifo::new();
    bytes
}

/// Gives an annotated block back to the heap (inside a [`Quiet`] section: the block is no-access).
///
/// # Safety
/// `p` is an arena block of an annotated `size`-byte request that the program freed and nobody
/// else frees.
unsafe fn release(p: *mut u8, size: usize) {
    crate::heap::account(REDZONE);
    // SAFETY: per the caller, an arena block of this (redzone-extended) size, freed once.
    unsafe { crate::heap::free(p, size + REDZONE) };
}

/// Annotate mode: `realloc` of an arena block, in place when the class allows it.
///
/// # Safety
/// As for `GlobalAlloc::realloc`; `layout` is accepted by [`annotated_small`].
pub(crate) unsafe fn realloc_in_place(p: *mut u8, layout: Layout, new_size: usize) -> bool {
    let small = annotated_small(new_size, layout.align());
    let same = small
        && crate::size_class::class_of(layout.size() + REDZONE)
            == crate::size_class::class_of(new_size + REDZONE);
    if same {
        {
            let _q = Quiet::new();
            crate::heap::account(new_size.wrapping_sub(layout.size()));
        }
        req::resize_in_place(p, layout.size(), new_size);
    }
    same
}
