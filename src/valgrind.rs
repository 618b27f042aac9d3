//! Everything smallarena says to Valgrind, in one place: detection, and the annotate mode that
//! keeps the arena but describes every block to memcheck.
//!
//! With the `valgrind` cargo feature (on by default) the client requests come from the
//! `crabgrind` crate; without it every function here is a no-op and [`running_on_valgrind`] is
//! false, so `Mode::Auto` always means `Arena`. None of these functions is on the arena-mode fast
//! path: the allocator reaches them only when the mode byte says `System` or `Annotate`.
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

use core::alloc::Layout;

/// Extra bytes each small request takes in annotate mode, kept no-access after the block.
pub(crate) const REDZONE: usize = 16;

#[cfg(feature = "valgrind")]
mod client {
    use core::ffi::c_void;
    use crabgrind::memcheck::{self, MemState};
    use crabgrind::valgrind;

    pub(super) fn running() -> bool {
        valgrind::running_mode().is_valgrind()
    }
    pub(super) fn malloclike(p: *mut u8, size: usize, zeroed: bool) {
        valgrind::malloclike_block(p as *const c_void, size, 0, zeroed);
    }
    pub(super) fn freelike(p: *mut u8) {
        valgrind::freelike_block(p as *const c_void, 0);
    }
    pub(super) fn resize_in_place(p: *mut u8, old: usize, new: usize) {
        valgrind::resizeinplace_block(p as *const c_void, old, new, 0);
    }
    pub(super) fn no_access(p: *mut u8, len: usize) {
        let _ = memcheck::mark_memory(p as *const c_void, len, MemState::NoAccess);
    }
    pub(super) fn addressable(p: *mut u8, len: usize) -> bool {
        memcheck::check_mem_addressable(p as *const c_void, len).is_ok()
    }
    pub(super) fn quiet_begin() {
        valgrind::disable_error_reporting();
    }
    pub(super) fn quiet_end() {
        valgrind::enable_error_reporting();
    }
}

#[cfg(not(feature = "valgrind"))]
mod client {
    pub(super) fn running() -> bool {
        false
    }
    pub(super) fn malloclike(_: *mut u8, _: usize, _: bool) {}
    pub(super) fn freelike(_: *mut u8) {}
    pub(super) fn resize_in_place(_: *mut u8, _: usize, _: usize) {}
    pub(super) fn no_access(_: *mut u8, _: usize) {}
    pub(super) fn addressable(_: *mut u8, _: usize) -> bool {
        true
    }
    pub(super) fn quiet_begin() {}
    pub(super) fn quiet_end() {}
}

/// Whether this process runs under Valgrind (a client request; false natively, or without the
/// `valgrind` feature). Costs a handful of instructions natively; called once per process.
pub(crate) fn running_on_valgrind() -> bool {
    #[cfg(miri)]
    {
        false
    }
    #[cfg(not(miri))]
    {
        client::running()
    }
}

/// Marks allocator-owned memory no-access (annotate mode only; a no-op otherwise).
pub(crate) fn hide(p: *mut u8, len: usize) {
    if crate::mode::is_annotate() {
        client::no_access(p, len);
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
            client::quiet_begin();
        }
        Quiet(on)
    }
}

impl Drop for Quiet {
    #[inline]
    fn drop(&mut self) {
        if self.0 {
            client::quiet_end();
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
        client::malloclike(p, size, zeroed);
    }
    p
}

/// Annotate mode: frees an arena block.
///
/// # Safety
/// As for `GlobalAlloc::dealloc` with a layout that [`annotated_small`] accepts.
pub(crate) unsafe fn free(p: *mut u8, layout: Layout) {
    let live = {
        let _q = Quiet::new();
        client::addressable(p, layout.size())
    };
    // Reports a double or invalid free (with the stack) when the block is not live.
    client::freelike(p);
    if live {
        let _q = Quiet::new();
        crate::heap::account(REDZONE);
        // SAFETY: per the caller, a live arena block of this (redzone-extended) size.
        unsafe { crate::heap::free(p, layout.size() + REDZONE) };
    }
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
        client::resize_in_place(p, layout.size(), new_size);
    }
    same
}
