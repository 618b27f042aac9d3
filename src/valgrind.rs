//! Every client request smallarena makes to Valgrind, in one place and nothing else: hooks only,
//! in the manner of mimalloc's `track.h`. Nothing here allocates, calls into the allocator, or
//! knows which mode the process is in; the callers decide when a hook applies (the allocator's
//! rooms go through [`crate::mode::hide`] and [`crate::mode::quiet`], which act only in annotate
//! mode, and the annotate-mode allocator in [`crate::annotate`] calls the block hooks).
//!
//! The client requests are issued by the hand-written [`client`] module (inline assembly, no
//! dependency). With the `valgrind` cargo feature (on by default) on x86_64 and aarch64 Linux they
//! are compiled in; without the feature, on other targets, and under Miri every request here is a
//! no-op and [`running_on_valgrind`] is false, so auto mode always means `Arena`. None of these
//! functions is on the arena-mode fast path.
//!
//! Which entry points quiet memcheck ([`Quiet`]): every path that touches the allocator's own
//! no-access memory in annotate mode: the annotate allocator around its heap calls, the heap's
//! accounting and exit paths, `stats()` and `collect()`.

mod client;

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

/// `VALGRIND_MAKE_MEM_NOACCESS(p, len)`: the program may not touch `p..p+len`.
#[inline]
pub(crate) fn no_access(p: *mut u8, len: usize) {
    req::no_access(p, len);
}

/// `VALGRIND_MALLOCLIKE_BLOCK`: `size` bytes at `p` are a new heap block (zeroed if `zeroed`).
#[inline]
pub(crate) fn malloclike(p: *mut u8, size: usize, zeroed: bool) {
    req::malloclike(p, size, zeroed);
}

/// `VALGRIND_FREELIKE_BLOCK`: the heap block at `p` is freed (memcheck reports a double or
/// invalid free here, with the stack).
#[inline]
pub(crate) fn freelike(p: *mut u8) {
    req::freelike(p);
}

/// `VALGRIND_RESIZEINPLACE_BLOCK`: the block at `p` now has `new` bytes instead of `old`.
#[inline]
pub(crate) fn resize_in_place(p: *mut u8, old: usize, new: usize) {
    req::resize_in_place(p, old, new);
}

/// Whether memcheck considers `p..p+len` addressable (`VALGRIND_CHECK_MEM_IS_ADDRESSABLE`, which
/// itself reports an error when not; call it inside a [`Quiet`] to ask silently). True natively.
#[inline]
pub(crate) fn addressable(p: *mut u8, len: usize) -> bool {
    req::addressable(p, len)
}

/// Turns memcheck's error reporting off for the calling thread while the allocator touches its
/// own no-access memory; back on when dropped. Nests. Does nothing when made with `false`.
pub(crate) struct Quiet(bool);

impl Quiet {
    /// Quiet if `on` (the caller knows whether annotate mode is in force).
    #[inline]
    pub(crate) fn new(on: bool) -> Quiet {
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
