//! smallarena as the `malloc` of any program, through `LD_PRELOAD`:
//!
//! ```text
//! cargo build --release -p smallarena-preload
//! LD_PRELOAD=target/release/libsmallarena_preload.so PYTHONMALLOC=malloc python3 ...
//! ```
//!
//! The library exports the glibc malloc family (`malloc`, `free`, `calloc`, `realloc`,
//! `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`,
//! `malloc_usable_size`). Requests of up to 32 KiB with alignment up to 16 come from
//! smallarena's pools ([`smallarena::raw`]: small classes up to 512 bytes, medium classes above);
//! everything else, and every pointer smallarena does not own, goes to glibc's allocator.
//!
//! ## Reaching glibc without recursion
//! Inside this library the name `malloc` resolves to our own export, so glibc's allocator is
//! called through the aliases glibc exports for exactly this purpose: `__libc_malloc`,
//! `__libc_calloc`, `__libc_realloc`, `__libc_free`, `__libc_memalign`, `__libc_valloc`,
//! `__libc_pvalloc`. They are ordinary dynamic symbols bound by the loader, so nothing is looked
//! up (and nothing allocated) at start-up, and the library works from the first allocation the
//! loader or libc makes. smallarena itself is built with its `libc-internal` feature, so its own
//! system-allocator calls use the same aliases (it makes them when the OS refuses a new arena:
//! a small request is then served by glibc, and through our own `malloc` it would come back to
//! the arena that cannot grow). The one function glibc exports no alias for,
//! `malloc_usable_size`, is looked up with `dlvsym` the first time it is asked about a glibc
//! block (long after start-up; `dlvsym` may allocate, which re-enters our `malloc`, not
//! `malloc_usable_size`).
//!
//! ## Ownership without a size
//! On its first slow path the library asks smallarena to carve its arenas from one
//! address-space reservation ([`smallarena::raw::reserve_address_space`]: 16 GiB of address
//! space mapped `PROT_READ` and `MAP_NORESERVE`, no memory and no commit charge; small arenas in
//! its first 8 GiB, medium ones in the next 8 GiB; the field's technique, as mimalloc's and
//! snmalloc's reserved regions). `free(p)` then makes one test,
//! [`smallarena::raw::Fast::free_small_open`]: `p` minus one word of the fast-path word below
//! 8 GiB. That word is the reservation's start with two flags in bits no user address has (no
//! reservation; a profiler sample is live), so the one test is both the ownership test and the
//! profiler's hook: true exactly for a small block of ours while no sample is live, and the pool
//! header (at `p` rounded down to 16 KiB) holds the block size. Every other pointer goes out of
//! line (`free_other`): the profiler's hook if samples are live; the reservation's medium part
//! (the pool header at `p` rounded down to 256 KiB); arenas mapped outside the reservation (when
//! it could not be made, for example under a low `RLIMIT_AS`, or a part is full), found in the
//! arena maps ([`smallarena::raw::owns_small`], [`smallarena::raw::owns_medium`]); and foreign
//! pointers (large blocks, the profiler's own blocks, null) to `__libc_free`. Measured under
//! callgrind (64-byte `malloc`+`free` pairs, `preload/tests/programs/pairs.c`): 76 instructions
//! per pair with the loop, against 91 with the two arena-map lookups and the profiler's own
//! loads; the README's Performance section has the breakdown.
//!
//! ## Under Valgrind
//! The mode is decided on the first allocation exactly as for the Rust path (`SMALLARENA_MODE`,
//! else a Valgrind client request; neither allocates). In auto mode under Valgrind the mode is
//! `System`, and then every call goes to the `__libc_*` functions, which memcheck replaces (its
//! `vg_replace_malloc` redirects `__libc_malloc`, `__libc_free`, ... of `libc.so.6` as well as
//! `malloc`): memcheck sees every block, reports leaks and errors as without the preload, with
//! one extra frame (this library's `malloc`) at the top of its allocation stacks.
//! `SMALLARENA_MODE=annotate` also routes to glibc: [`smallarena::raw`] does not implement the
//! annotated arena. Whatever the mode, memcheck's default malloc replacement also covers this
//! library's exports (its `somalloc` synonym matches every object), so under memcheck the program
//! calls memcheck's `malloc` directly. To keep the arena under memcheck (`SMALLARENA_MODE=arena`;
//! memcheck then does not track small blocks), give it a synonym that matches nothing:
//! `valgrind --soname-synonyms=somalloc=no-such-library`.
//!
//! ## Limits shared by every preloaded allocator
//! A library opened with `dlopen(..., RTLD_DEEPBIND)` binds its own `malloc`/`free` references to
//! glibc's before this library's, so a block it frees that came from elsewhere (or the reverse)
//! reaches the wrong allocator: glibc, mimalloc, jemalloc and tcmalloc preloads all share this.
//!
//! ## Fork, thread exit, thread-locals
//! smallarena registers its `pthread_atfork` handlers from a constructor of the highest priority
//! (`.init_array.00000`), so they run closest to the `fork()` itself, and a library whose
//! handlers still run inside them (registered from a `.preinit_array` entry, or from the
//! constructor of a library initialised before this one) may allocate in them: the forking
//! thread works under the lock it holds. A thread hands its heap back from a pthread key
//! destructor that re-arms itself for every destructor round, so a thread whose first allocation
//! comes late in its exit gives its heap back too; `atexit` handlers and static destructors keep
//! the main thread's heap. smallarena is built with its `initial-exec-tls` feature: the
//! thread's heap pointer is read in the initial-exec TLS model, with no `__tls_get_addr` call
//! (the library has `STATIC_TLS`: loaded by `LD_PRELOAD` it always gets its slot).
//!
//! ## Heap profiling
//! smallarena is built with its `profile` feature, so `SMALLARENA_LEAKS=1` (the top allocation
//! sites still live at exit, on stderr) and `SMALLARENA_PROFILE=<path>` (a pprof or folded-stacks
//! profile written at exit) work for any program; see `smallarena::profile`. While no profile is
//! being taken the hooks cost nothing of their own: `malloc` reads one word, the fast-path
//! gate ([`smallarena::raw::try_alloc_gated`]), that also says the mode is Arena, and uses it as
//! the index of the word it reads as the thread's heap (the heap pointer when the gate is open,
//! a null word after it when closed), so gate, mode check and heap test are one branch; `free`'s
//! hook is folded into its ownership test (see above). While a profile is being taken the gate is closed, and `malloc` counts its bytes
//! towards the sampling countdown (a subtraction and a branch) out of line; `calloc`, `realloc`,
//! `posix_memalign`/`aligned_alloc`/`memalign` always do. While samples are live every `free`
//! goes out of line to drop a freed block's sample. The profiler's own allocations (unwinding, symbolizing,
//! encoding) re-enter `malloc` under its guard and go to `__libc_malloc` while a profile is being
//! taken (after it stopped, as at exit, they come from the arena like any other); `free` sends
//! each block back to whoever made it, as it does every pointer. `valloc` and `pvalloc` are not
//! sampled.
//!
//! ## Semantics kept from glibc
//! `malloc(0)` returns a unique pointer; `calloc`/`reallocarray` overflow gives null with
//! `errno = ENOMEM`; `realloc(p, 0)` frees `p` and returns null; `realloc(NULL, n)` is
//! `malloc(n)`; `posix_memalign` returns `EINVAL` for an alignment that is not a power of two
//! multiple of `sizeof(void*)` and `ENOMEM` when out of memory; `malloc_usable_size(p)` is the
//! block size, and `realloc(p, n)` with `n` in the same size class returns `p` unchanged (so every
//! byte `malloc_usable_size` promised survives a `realloc`). A `realloc` of a glibc block stays
//! in glibc (`__libc_realloc`), as pymalloc does with foreign blocks.

use core::ffi::{c_int, c_void};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, Ordering};
use libc::{__errno_location, dlvsym, EINVAL, ENOMEM, RTLD_NEXT};
use smallarena::profile::hooks::{self, Crossing};
use smallarena::raw::{self, MAX_ALIGN};

// glibc's internal aliases of its allocator, which the `libc` crate does not declare.
extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_free(p: *mut c_void);
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn __libc_valloc(size: usize) -> *mut c_void;
    fn __libc_pvalloc(size: usize) -> *mut c_void;
}

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno, always valid.
    unsafe { *__errno_location() = e };
}

/// Allocates `size` bytes, 16-byte aligned: the arena for small and medium requests, glibc
/// otherwise.
///
/// # Safety
/// Any size may be asked for; the block must be freed with this library's `free`.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    // The fast-path gate (the mode is Arena and no profile is being taken) is one load that
    // picks the word read as the thread's heap: a closed gate reads as no heap. No call and no
    // stack: everything else (the gate closed, a pool run dry, a thread's first request, size 0,
    // bigger requests) goes to `malloc_gated` as a tail call.
    let p = raw::try_alloc_gated(size);
    if !p.is_null() {
        return p.cast();
    }
    // SAFETY: forwarding.
    unsafe { malloc_gated(size) }
}

/// [`malloc`] beyond its fast path: the fast-path word's gate is closed (the mode is not, or not
/// yet known to be, Arena, or a profile is being taken), or the pool had no block ready. Counts
/// the request towards the profiler's countdown, then serves it as [`malloc_plain`] does.
///
/// # Safety
/// As for [`malloc`].
#[inline(never)]
unsafe extern "C" fn malloc_gated(size: usize) -> *mut c_void {
    // The profiler's countdown (one subtraction and a branch): see `malloc_crossed`.
    if hooks::crossed(size) {
        // SAFETY: forwarding.
        return unsafe { malloc_crossed(size) };
    }
    // SAFETY: forwarding.
    unsafe { malloc_plain(size) }
}

/// [`malloc`] without the profiler's hook, the mode read.
///
/// # Safety
/// As for [`malloc`].
#[inline(always)]
unsafe fn malloc_plain(size: usize) -> *mut c_void {
    let p = raw::try_alloc(size);
    if !p.is_null() {
        return p.cast();
    }
    // SAFETY: forwarding.
    unsafe { malloc_slow(size) }
}

/// A request whose profiler countdown crossed zero: from glibc when the profiler itself asks
/// (its guard), else as usual, and recorded if it is a sample.
///
/// # Safety
/// As for [`malloc`].
#[cold]
#[inline(never)]
unsafe extern "C" fn malloc_crossed(size: usize) -> *mut c_void {
    match hooks::on_crossing() {
        // SAFETY: glibc's malloc has no preconditions.
        Crossing::Guarded => unsafe { __libc_malloc(size) },
        // SAFETY: forwarding.
        Crossing::Skip => unsafe { malloc_plain(size) },
        Crossing::Sample(rate) => {
            // SAFETY: forwarding.
            let p = unsafe { malloc_plain(size) };
            hooks::record(p.cast(), size, rate);
            p
        }
    }
}

/// After a block was served by another path than [`malloc`] (`calloc`, glibc's `realloc` and
/// `memalign`): counts its size, and records it if it is a sample.
#[inline(always)]
fn count(p: *mut c_void, size: usize) {
    if hooks::crossed(size) {
        count_crossed(p, size);
    }
}

#[cold]
#[inline(never)]
fn count_crossed(p: *mut c_void, size: usize) {
    if let Crossing::Sample(rate) = hooks::on_crossing() {
        hooks::record(p.cast(), size, rate);
    }
}

/// [`malloc`] beyond the fast path.
///
/// # Safety
/// As for [`malloc`].
#[cold]
#[inline(never)]
unsafe extern "C" fn malloc_slow(size: usize) -> *mut c_void {
    // Before the first arena: small and medium arenas come from one reservation, which makes
    // `free`'s ownership test one compare. A store, on the slow path only.
    raw::reserve_address_space();
    let p = raw::alloc(size);
    if !p.is_null() {
        return p.cast();
    }
    // SAFETY: glibc's malloc has no preconditions.
    unsafe { __libc_malloc(size) }
}

/// Frees a block from any function of this library (or from glibc before it was loaded).
///
/// One load, a subtraction and a compare ([`raw::Fast::free_small_open`]: a small block of an
/// arena carved from the reservation, and no profiler sample live), then straight to the arena's
/// free path, inlined (the pool header, at `p` rounded down to 16 KiB, holds the block size).
/// Every other pointer goes to `free_other` as a tail call.
///
/// # Safety
/// `p` is null or a live block of this process's malloc family.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if raw::fast().free_small_open(p.cast()) {
        // SAFETY: a live block (per the caller) in a small arena of ours (it lies in the
        // reservation's small part, where only small arenas are carved, and a live block's
        // arena stays carved).
        return unsafe { raw::free_small(p.cast()) };
    }
    // SAFETY: forwarding.
    unsafe { free_other(p) }
}

/// [`free`] of any pointer but a small block of the reservation while no sample is live: drops
/// `p`'s sample if it is one (small, medium or glibc's), then frees it where it belongs: a
/// block of the reservation by its part, a block of an arena mapped outside it (the reservation
/// could not be made, or was full) as the arena maps say, anything else (glibc's, or null) with
/// `__libc_free`.
///
/// # Safety
/// As for [`free`].
#[inline(never)]
unsafe extern "C" fn free_other(p: *mut c_void) {
    let fast = raw::fast();
    if fast.samples_live() {
        hooks::on_free(p.cast());
    }
    match fast.reserved_kind(p.cast()) {
        // SAFETY: a live block (per the caller) in the reservation's small part.
        Some(true) => unsafe { raw::free_small(p.cast()) },
        // SAFETY: a live block (per the caller) in the reservation's medium part.
        Some(false) => unsafe { raw::free_medium(p.cast()) },
        None if raw::owns_small(p.cast()) => {
            // SAFETY: a live block in our small arenas (per the caller and the registry).
            unsafe { raw::free_small(p.cast()) }
        }
        None if raw::owns_medium(p.cast()) => {
            // SAFETY: a live block in our medium arenas (per the caller and the registry).
            unsafe { raw::free_medium(p.cast()) }
        }
        // SAFETY: a live block that is not ours (or null) can only be glibc's.
        None => unsafe { __libc_free(p) },
    }
}

/// Allocates `n * size` zeroed bytes; null with `ENOMEM` if the product overflows.
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        set_errno(ENOMEM);
        return null_mut();
    };
    if hooks::crossed(total) {
        // SAFETY: forwarding.
        return unsafe { calloc_crossed(n, size, total) };
    }
    // SAFETY: forwarding.
    unsafe { calloc_plain(n, size, total) }
}

/// [`calloc`] of `total = n * size` bytes without the profiler's hook.
///
/// # Safety
/// As for [`malloc`].
unsafe fn calloc_plain(n: usize, size: usize, total: usize) -> *mut c_void {
    // The loader's first request may be a `calloc`: its arena comes from the reservation too (a
    // load and a branch once it is asked for).
    raw::reserve_address_space();
    let p = raw::alloc_zeroed(total);
    if !p.is_null() {
        return p.cast();
    }
    // SAFETY: glibc's calloc has no preconditions.
    unsafe { __libc_calloc(n, size) }
}

/// [`calloc`] when the profiler's countdown crossed zero (see [`malloc_crossed`]).
///
/// # Safety
/// As for [`malloc`].
#[cold]
#[inline(never)]
unsafe extern "C" fn calloc_crossed(n: usize, size: usize, total: usize) -> *mut c_void {
    match hooks::on_crossing() {
        // SAFETY: glibc's calloc has no preconditions.
        Crossing::Guarded => unsafe { __libc_calloc(n, size) },
        // SAFETY: forwarding.
        Crossing::Skip => unsafe { calloc_plain(n, size, total) },
        Crossing::Sample(rate) => {
            // SAFETY: forwarding.
            let p = unsafe { calloc_plain(n, size, total) };
            hooks::record(p.cast(), total, rate);
            p
        }
    }
}

/// Resizes a block, glibc semantics: `realloc(NULL, n)` is `malloc(n)`, `realloc(p, 0)` frees `p`
/// and returns null; on failure null with `ENOMEM` and `p` untouched.
///
/// # Safety
/// `p` is null or a live block of this process's malloc family.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        // SAFETY: forwarding.
        return unsafe { malloc(size) };
    }
    // A sampled block's sample follows it.
    if let Some(m) = hooks::realloc_begin(p.cast()) {
        // SAFETY: forwarding.
        let q = unsafe { realloc_plain(p, size) };
        // `realloc(p, 0)` freed the block (null back): its sample goes with it.
        if !(q.is_null() && size == 0) {
            hooks::realloc_end(m, p.cast(), q.cast(), size);
        }
        return q;
    }
    // SAFETY: forwarding.
    unsafe { realloc_plain(p, size) }
}

/// [`realloc`] of a live block without the sample's move.
///
/// # Safety
/// As for [`realloc`], and `p` is not null.
unsafe fn realloc_plain(p: *mut c_void, size: usize) -> *mut c_void {
    if !raw::owns(p.cast()) {
        // SAFETY: a live glibc block.
        let q = unsafe { __libc_realloc(p, size) };
        count(q, size);
        return q;
    }
    if size == 0 {
        // SAFETY: a live arena block.
        unsafe { raw::free(p.cast()) };
        return null_mut();
    }
    // SAFETY: a live arena block.
    if unsafe { raw::resize_in_place(p.cast(), size) } {
        return p;
    }
    // SAFETY: a live arena block.
    let usable = unsafe { raw::usable_size(p.cast()) };
    // SAFETY: forwarding.
    let q = unsafe { malloc(size) };
    if !q.is_null() {
        // SAFETY: both blocks are live and distinct; `p` has `usable` bytes, `q` at least `size`.
        unsafe {
            core::ptr::copy_nonoverlapping(p.cast::<u8>(), q.cast::<u8>(), usable.min(size));
            raw::free(p.cast());
        }
    }
    q
}

/// `realloc(p, n * size)`, null with `ENOMEM` (and `p` untouched) if the product overflows.
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarding.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            set_errno(ENOMEM);
            null_mut()
        }
    }
}

/// `size` bytes aligned to `align` (glibc rounds a non-power-of-two alignment up).
///
/// # Safety
/// Any arguments; as for [`malloc`].
unsafe fn aligned(align: usize, size: usize) -> *mut c_void {
    if align <= MAX_ALIGN {
        // Every block of ours and of glibc's malloc is 16-byte aligned.
        // SAFETY: forwarding.
        unsafe { malloc(size) }
    } else {
        // SAFETY: glibc checks the alignment itself (EINVAL for absurd ones).
        let p = unsafe { __libc_memalign(align, size) };
        count(p, size);
        p
    }
}

/// Stores a block of `size` bytes aligned to `align` in `*out`; `EINVAL` for an alignment that is
/// not a power of two multiple of `sizeof(void*)`, `ENOMEM` when out of memory.
///
/// # Safety
/// `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return EINVAL;
    }
    // SAFETY: forwarding.
    let p = unsafe { aligned(align, size) };
    if p.is_null() {
        return ENOMEM;
    }
    // SAFETY: per the caller.
    unsafe { *out = p };
    0
}

/// C11 `aligned_alloc` (glibc 2.36 semantics: the same as `memalign`).
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarding.
    unsafe { aligned(align, size) }
}

/// `size` bytes aligned to `align`.
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarding.
    unsafe { aligned(align, size) }
}

/// Page-aligned `size` bytes (from glibc).
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    // SAFETY: no preconditions.
    unsafe { __libc_valloc(size) }
}

/// Page-aligned, page-rounded `size` bytes (from glibc).
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    // SAFETY: no preconditions.
    unsafe { __libc_pvalloc(size) }
}

type UsableFn = unsafe extern "C" fn(*mut c_void) -> usize;
static LIBC_USABLE: AtomicPtr<c_void> = AtomicPtr::new(null_mut());

/// Bytes usable in the block `p` (0 for null): the block size of its class for arena blocks.
///
/// # Safety
/// `p` is null or a live block of this process's malloc family.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    if raw::owns(p.cast()) {
        // SAFETY: a live arena block.
        return unsafe { raw::usable_size(p.cast()) };
    }
    let mut f = LIBC_USABLE.load(Ordering::Acquire);
    if f.is_null() {
        // SAFETY: NUL-terminated literals; RTLD_NEXT finds glibc's definition after ours.
        f = unsafe {
            dlvsym(
                RTLD_NEXT,
                c"malloc_usable_size".as_ptr(),
                c"GLIBC_2.2.5".as_ptr(),
            )
        };
        if f.is_null() {
            return 0;
        }
        LIBC_USABLE.store(f, Ordering::Release);
    }
    // SAFETY: `f` is glibc's malloc_usable_size, with this signature; `p` is a glibc block.
    unsafe { core::mem::transmute::<*mut c_void, UsableFn>(f)(p) }
}

/// Returns free memory to the OS now (smallarena's `collect()`, as mimalloc's
/// `mi_collect(true)`): the calling thread's empty pools, the empty pools of exited threads, every
/// wholly empty arena, and the pages of the other free pools. glibc's own memory (large blocks)
/// is not touched: call `malloc_trim(0)` for that.
///
/// From C: `extern void smallarena_collect(void);`
#[no_mangle]
pub extern "C" fn smallarena_collect() {
    smallarena::collect();
}

/// Prints smallarena's statistics to the file descriptor `fd` (2 for stderr): the table, or one
/// JSON object on one line when `json` is non-zero. Allocates nothing (a stack buffer and
/// `write(2)`).
///
/// From C: `extern void smallarena_stats_print(int fd, int json);`
#[no_mangle]
pub extern "C" fn smallarena_stats_print(fd: c_int, json: c_int) {
    let format = if json != 0 {
        smallarena::StatsFormat::Json
    } else {
        smallarena::StatsFormat::Text
    };
    smallarena::stats().write_to_fd(fd, format);
}
