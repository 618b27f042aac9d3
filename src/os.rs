//! Memory from the operating system: aligned anonymous mappings and their release.
//!
//! Under Miri the same interface is backed by `std::alloc::System` (Miri does not model
//! `mmap`), so the pool and free-list logic above it runs unchanged under the interpreter.
//!
//! Under loom, mappings come from one fixed reservation, handed out in order and reset (and
//! zeroed) at the start of every model execution: loom replays executions and requires them to be
//! deterministic, and fresh `mmap` addresses differ from one execution to the next (the arena
//! arena map's control flow depends on addresses). Unmapping is then a no-op.

/// Maps `size` bytes of zeroed, read-write memory aligned to `align` (a power of two, at least
/// the page size, and `size` a multiple of it). Returns null when the OS refuses.
#[cfg(not(any(miri, loom)))]
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
#[cfg(not(any(miri, loom)))]
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
    // Only arenas are unmapped, and they are mapped aligned to their size.
    let l = Layout::from_size_align(size, size).expect("arena layout");
    // SAFETY: the caller hands back exactly what map_aligned produced with this layout.
    unsafe { System.dealloc(p, l) }
}

#[cfg(loom)]
mod loom_backing {
    use core::cell::Cell;

    /// Bytes reserved once per OS thread (virtual; pages are committed only when touched).
    const RESERVE: usize = 256 << 20;

    std::thread_local! {
        /// (start of this OS thread's reservation, next free offset in the current execution).
        /// Per OS thread: loom runs a model's executions on the thread that calls `model`, and
        /// the test harness runs several models at once on different threads.
        static RESERVATION: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    }

    /// Resets the reservation at the first mapping of each execution.
    struct Epoch;
    impl Epoch {
        fn new() -> Epoch {
            RESERVATION.with(|r| {
                let (base, used) = r.get();
                if base != 0 && used != 0 {
                    // SAFETY: the range is inside this thread's reservation, and no execution
                    // still uses it (the previous one has ended).
                    unsafe { libc::madvise(base as *mut libc::c_void, used, libc::MADV_DONTNEED) };
                }
                r.set((base, 0));
            });
            Epoch
        }
    }
    crate::sync::global! {
        static EPOCH: Epoch = Epoch::new();
    }

    pub(crate) fn map_aligned(size: usize, align: usize) -> *mut u8 {
        let _ = &*EPOCH;
        RESERVATION.with(|r| {
            let (mut base, next) = r.get();
            if base == 0 {
                // SAFETY: a new anonymous mapping; nothing else is affected.
                let p = unsafe { super::mmap(RESERVE + crate::tunables::ARENA_SIZE) };
                if p.is_null() {
                    return p;
                }
                let a = crate::tunables::ARENA_SIZE;
                base = (p.addr() + a - 1) & !(a - 1);
            }
            let start = (base + next + align - 1) & !(align - 1);
            if start + size > base + RESERVE {
                return core::ptr::null_mut();
            }
            r.set((base, start + size - base));
            // Provenance: loom models run on the reservation, exposed as plain addresses.
            core::ptr::with_exposed_provenance_mut(start)
        })
    }
}

#[cfg(loom)]
pub(crate) use loom_backing::map_aligned;

/// Under loom, memory goes back to the reservation when the next execution starts.
///
/// # Safety
/// As for the native `unmap`.
#[cfg(loom)]
pub(crate) unsafe fn unmap(_p: *mut u8, _size: usize) {}

/// Gives the pages of `p..p+size` back to the OS while keeping the range mapped: afterwards they
/// read as zeros (a private anonymous mapping) and use no memory until touched again. False when
/// it was not done (the range is not page-aligned, the OS refused, or Miri/loom).
///
/// # Safety
/// `p..p+size` lies inside a mapping made by [`map_aligned`], and nothing in it is in use: its
/// contents are lost.
#[cfg(not(any(miri, loom)))]
pub(crate) unsafe fn discard(p: *mut u8, size: usize) -> bool {
    let page = page_size();
    if page == 0 || p.addr() % page != 0 || size % page != 0 {
        return false;
    }
    // SAFETY: per the caller, the range is ours and unused; MADV_DONTNEED on a private anonymous
    // mapping only drops its pages (they read back as zeros).
    unsafe { libc::madvise(p.cast(), size, libc::MADV_DONTNEED) == 0 }
}

/// Miri and loom: pages are never given back.
///
/// # Safety
/// As for the native `discard`.
#[cfg(any(miri, loom))]
pub(crate) unsafe fn discard(_p: *mut u8, _size: usize) -> bool {
    false
}

/// The OS page size in bytes (0 if unknown).
#[cfg(not(any(miri, loom)))]
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions and does not allocate.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(0)
}

/// Field `field` (0: total size, 1: resident, ...) of `/proc/self/statm`, in bytes, read with
/// `open`/`read` into a stack buffer; 0 when it cannot be read. Allocates nothing.
#[cfg(not(any(miri, loom)))]
fn statm(field: usize) -> usize {
    let mut buf = [0u8; 256];
    // SAFETY: the path is a NUL-terminated literal; `buf` is valid for `buf.len()` bytes of
    // writes; the descriptor is ours and closed once. None of these calls allocates.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/statm".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            -1
        } else {
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
            n
        }
    };
    // "size resident shared text lib data dt", in pages.
    usize::try_from(n)
        .ok()
        .and_then(|n| buf.get(..n))
        .and_then(|text| text.split(|&b| b == b' ').nth(field))
        .and_then(parse_decimal)
        .map_or(0, |pages| pages.saturating_mul(page_size()))
}

/// The process's virtual size in bytes (every mapping, as `RLIMIT_AS` counts them; the first
/// field of `/proc/self/statm`); 0 when it cannot be read. Allocates nothing.
#[cfg(not(any(miri, loom)))]
#[cfg_attr(not(target_pointer_width = "64"), allow(dead_code))]
pub(crate) fn address_space() -> usize {
    statm(0)
}

/// The process's resident bytes now (`/proc/self/statm`, read with `open`/`read` into a stack
/// buffer) and at peak (`getrusage`'s `ru_maxrss`); 0 for what cannot be read. Allocates nothing.
#[cfg(not(any(miri, loom)))]
pub(crate) fn resident() -> (usize, usize) {
    let now = statm(1);
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct; getrusage only writes
    // it.
    let peak = unsafe {
        let mut ru: libc::rusage = core::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) == 0 {
            // Kibibytes on Linux.
            usize::try_from(ru.ru_maxrss)
                .unwrap_or(0)
                .saturating_mul(1024)
        } else {
            0
        }
    };
    (now, peak.max(now))
}

/// Miri and loom: unknown.
#[cfg(any(miri, loom))]
pub(crate) fn resident() -> (usize, usize) {
    (0, 0)
}

/// A decimal number of ASCII digits (surrounding whitespace ignored); `None` if empty, not all
/// digits, or too big.
#[cfg_attr(any(miri, loom), allow(dead_code))]
pub(crate) fn parse_decimal(text: &[u8]) -> Option<usize> {
    let t = text.trim_ascii();
    if t.is_empty() {
        return None;
    }
    t.iter().try_fold(0usize, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(usize::from(b - b'0'))
        } else {
            None
        }
    })
}
