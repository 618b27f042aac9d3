//! Annotate mode: the arena, with every block described to Valgrind's memcheck
//! (`SMALLARENA_MODE=annotate`). This is an allocator of its own, layered on the heap's: the
//! global allocator ([`crate::global`]) routes small requests here when the mode says so, and
//! every Valgrind request it makes goes through the hooks of [`crate::valgrind`].
//!
//! * A block handed out is described with `MALLOCLIKE_BLOCK` (the requested size, zeroed for
//!   `alloc_zeroed`); a free is `FREELIKE_BLOCK`; an in-place `realloc` is `RESIZEINPLACE_BLOCK`.
//! * Every small request takes [`REDZONE`] more bytes from its size class, so the bytes right after
//!   a block are never another live block: an overrun lands in no-access memory and is reported.
//!   Requests too big for that go to libc, whose blocks memcheck tracks itself.
//! * Arenas (pool headers, free blocks, unused space) and heap structures are marked no-access when
//!   mapped. The allocator's own touches of them happen inside [`crate::valgrind::Quiet`] (error
//!   reporting off for the calling thread), so only the program's accesses are reported.
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
//!   the allocator's lock. Nothing is drained at thread or process exit.

use core::alloc::Layout;

use crate::mode::quiet as quiet_section;
use crate::size_class::{is_small, stays_in_place};
pub(crate) use crate::tunables::REDZONE;
use crate::valgrind;

mod quarantine;

/// Whether a request is served by the arena in annotate mode (room left for the redzone).
#[inline]
pub(crate) fn annotated_small(size: usize, align: usize) -> bool {
    is_small(size + REDZONE, align)
}

/// Annotate mode: an arena block for a small request, described to memcheck.
pub(crate) fn alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    let size = layout.size();
    let p = {
        let _q = quiet_section();
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
        valgrind::malloclike(p, size, zeroed);
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
        let _q = quiet_section();
        valgrind::addressable(p, size)
    };
    // Reports a double or invalid free (with the stack) when the block is not live: one freed
    // earlier is no-access until it leaves the quarantine, so a stale pointer's free is caught.
    valgrind::freelike(p);
    if !live {
        return;
    }
    let _q = quiet_section();
    let budget = quarantine::budget();
    if budget == 0 {
        // SAFETY: per the caller, a live arena block of this size.
        unsafe { release(p, size) };
        return;
    }
    // The program's bytes are gone now; the block's are counted again when it leaves.
    crate::heap::account(size.wrapping_neg());
    let chain = {
        let mut locked = crate::lock::Locked::take();
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

/// Gives an annotated block back to the heap (inside a quiet section: the block is no-access).
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
    let same = small && stays_in_place(layout.size() + REDZONE, new_size + REDZONE);
    if same {
        {
            let _q = quiet_section();
            crate::heap::account(new_size.wrapping_sub(layout.size()));
        }
        valgrind::resize_in_place(p, layout.size(), new_size);
    }
    same
}
