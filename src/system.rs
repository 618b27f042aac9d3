//! The system allocator: large and over-aligned requests, and every request in `System` mode.
//!
//! `malloc` returns memory aligned to at least twice the pointer size on every supported target
//! (glibc's `MALLOC_ALIGNMENT` default and musl's minimum: 16 bytes on 64-bit targets, 8 on
//! 32-bit ones, where some glibc ports give no more), so alignments up to that use
//! `malloc`/`calloc`/`realloc`; larger ones use `posix_memalign`.
//!
//! With the cargo feature `libc-internal` (for a library that itself exports `malloc`, such as the
//! `smallarena-preload` crate) the calls go to glibc's own entry points `__libc_malloc`,
//! `__libc_calloc`, `__libc_realloc`, `__libc_free` and `__libc_memalign` instead, so they cannot
//! resolve back to the library's exported `malloc` and recurse. Only glibc exports those names:
//! on any other libc (musl, bionic, the BSDs) the feature is a compile-time error.
//!
//! The preload serves large requests from glibc itself, but it still reaches this module: when
//! the OS refuses a new arena, the heap serves a small request here instead (the arena fallback,
//! `heap::out_of_arena`), and `raw::alloc` takes that path too. Without the feature that `malloc`
//! would be the preload's own, which would find the arena still unable to grow and come back
//! here, without end.

use core::alloc::Layout;
use core::ptr::null_mut;

#[cfg(all(feature = "libc-internal", not(target_env = "gnu"), not(miri)))]
compile_error!(
    "the smallarena feature `libc-internal` calls glibc's internal entry points (__libc_malloc, \
     __libc_free, ...), which only glibc exports; this target's libc is not glibc (musl has no \
     such public aliases): build without `libc-internal` (the smallarena-preload crate needs glibc)"
);

/// The libc entry points: the public names, or glibc's internal aliases (`libc-internal`).
#[cfg(any(not(feature = "libc-internal"), miri))]
mod c {
    pub(super) use libc::{calloc, free, malloc, posix_memalign, realloc};
}

/// The libc entry points: the public names, or glibc's internal aliases (`libc-internal`).
#[cfg(all(feature = "libc-internal", not(miri)))]
mod c {
    use core::ffi::{c_int, c_void};

    extern "C" {
        #[link_name = "__libc_malloc"]
        pub(super) fn malloc(size: usize) -> *mut c_void;
        #[link_name = "__libc_calloc"]
        pub(super) fn calloc(n: usize, size: usize) -> *mut c_void;
        #[link_name = "__libc_realloc"]
        pub(super) fn realloc(p: *mut c_void, size: usize) -> *mut c_void;
        #[link_name = "__libc_free"]
        pub(super) fn free(p: *mut c_void);
        fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    }

    /// `posix_memalign` on top of `__libc_memalign` (glibc exports no internal alias for it).
    ///
    /// # Safety
    /// `align` is a power of two and a multiple of `sizeof(void*)`.
    pub(super) unsafe fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
        // SAFETY: memalign accepts any power-of-two alignment; `out` is valid per the caller.
        unsafe {
            let p = __libc_memalign(align, size);
            if p.is_null() {
                return libc::ENOMEM;
            }
            *out = p;
        }
        0
    }
}

/// The alignment every `malloc` block has: 16 on 64-bit targets, 8 on 32-bit ones.
const MALLOC_ALIGN: usize = 2 * core::mem::size_of::<usize>();

/// Allocates from libc. Null on failure.
pub(crate) fn alloc(layout: Layout) -> *mut u8 {
    if layout.align() <= MALLOC_ALIGN {
        // SAFETY: malloc has no preconditions.
        unsafe { c::malloc(layout.size()).cast() }
    } else {
        let mut p = null_mut();
        let align = layout.align().max(core::mem::size_of::<usize>());
        // SAFETY: align is a power of two and a multiple of sizeof(void*), as required.
        let rc = unsafe { c::posix_memalign(&mut p, align, layout.size()) };
        if rc == 0 {
            p.cast()
        } else {
            null_mut()
        }
    }
}

/// Allocates zeroed memory from libc. Null on failure.
pub(crate) fn alloc_zeroed(layout: Layout) -> *mut u8 {
    if layout.align() <= MALLOC_ALIGN {
        // SAFETY: calloc has no preconditions.
        unsafe { c::calloc(1, layout.size()).cast() }
    } else {
        let p = alloc(layout);
        if !p.is_null() {
            // SAFETY: p points to layout.size() writable bytes.
            unsafe { core::ptr::write_bytes(p, 0, layout.size()) };
        }
        p
    }
}

/// Frees memory from [`alloc`], [`alloc_zeroed`] or [`realloc`].
///
/// # Safety
/// `p` came from this module and was not freed.
pub(crate) unsafe fn free(p: *mut u8) {
    // SAFETY: per the caller, p is a live libc allocation.
    unsafe { c::free(p.cast()) }
}

/// Resizes a libc block. Null on failure (the old block is then untouched).
///
/// # Safety
/// `p` came from this module with `layout` and was not freed.
pub(crate) unsafe fn realloc(p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    if layout.align() <= MALLOC_ALIGN {
        // SAFETY: p is a live malloc block.
        unsafe { c::realloc(p.cast(), new_size).cast() }
    } else {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return null_mut();
        };
        let q = alloc(new_layout);
        if !q.is_null() {
            // SAFETY: both blocks are live, distinct, and at least min(old, new) bytes long.
            unsafe {
                core::ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                free(p);
            }
        }
        q
    }
}

/// The usable size of a libc block (glibc's and musl's `malloc_usable_size`; with
/// `libc-internal`, the name resolves to the preload's export, which asks glibc's for blocks it
/// does not own). The requested size under Miri, which has no such function: 0 here.
///
/// # Safety
/// `p` is a live block from this module.
pub(crate) unsafe fn usable_size(p: *mut u8) -> usize {
    #[cfg(miri)]
    {
        let _ = p;
        0
    }
    #[cfg(not(miri))]
    // SAFETY: per the caller, a live malloc-family block.
    unsafe {
        libc::malloc_usable_size(p.cast())
    }
}
