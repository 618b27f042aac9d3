//! Memory from the operating system: aligned anonymous mappings and their release.
//!
//! Under Miri the same interface is backed by `std::alloc::System` (Miri does not model
//! `mmap`), so the pool and free-list logic above it runs unchanged under the interpreter.

/// Maps `size` bytes of zeroed, read-write memory aligned to `align` (a power of two, at least
/// the page size, and `size` a multiple of it). Returns null when the OS refuses.
#[cfg(not(miri))]
pub(crate) fn map_aligned(size: usize, align: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with a null hint touches no existing memory.
    let p = unsafe { mmap(size) };
    if p.is_null() {
        return p;
    }
    if p.addr() & (align - 1) == 0 {
        return p;
    }
    // SAFETY: p..p+size is the mapping we just made and nobody else knows of it.
    unsafe { unmap(p, size) };
    let Some(over) = size.checked_add(align) else {
        return core::ptr::null_mut();
    };
    // SAFETY: as above, a fresh anonymous mapping.
    let q = unsafe { mmap(over) };
    if q.is_null() {
        return q;
    }
    let start = (q.addr() + align - 1) & !(align - 1);
    let head = start - q.addr();
    let tail = over - head - size;
    // SAFETY: the head and tail trimmed here lie inside the mapping `q..q+over` we own, and
    // outside the aligned `start..start+size` we keep.
    unsafe {
        if head > 0 {
            unmap(q, head);
        }
        if tail > 0 {
            unmap(q.add(head + size), tail);
        }
        q.add(head)
    }
}

#[cfg(not(miri))]
unsafe fn mmap(size: usize) -> *mut u8 {
    // SAFETY: the caller asks for a new anonymous mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        core::ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Returns a mapping made by [`map_aligned`] to the OS.
///
/// # Safety
/// `p..p+size` must be exactly a mapping (or a page-aligned part of one) that this module
/// returned, with no live references into it.
#[cfg(not(miri))]
pub(crate) unsafe fn unmap(p: *mut u8, size: usize) {
    // SAFETY: the caller guarantees the range is ours and unused.
    unsafe {
        libc::munmap(p.cast(), size);
    }
}

#[cfg(miri)]
pub(crate) fn map_aligned(size: usize, align: usize) -> *mut u8 {
    use std::alloc::{GlobalAlloc, Layout, System};
    match Layout::from_size_align(size, align) {
        // SAFETY: the layout has a non-zero size.
        Ok(l) => unsafe { System.alloc_zeroed(l) },
        Err(_) => core::ptr::null_mut(),
    }
}

/// Miri stand-in for `munmap`.
///
/// # Safety
/// `p` and `size` must be exactly what `map_aligned` returned and was asked for.
#[cfg(miri)]
pub(crate) unsafe fn unmap(p: *mut u8, size: usize) {
    use std::alloc::{GlobalAlloc, Layout, System};
    let l = Layout::from_size_align(size, crate::arena::ARENA_SIZE).expect("arena layout");
    // SAFETY: the caller hands back exactly what map_aligned produced with this layout.
    unsafe { System.dealloc(p, l) }
}
