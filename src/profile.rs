//! A sampling heap profiler: which call stacks hold the memory that is still allocated, without
//! Valgrind, cheap enough to leave on in production (cargo feature `profile`).
//!
//! On average one allocation per `rate` bytes allocated is *sampled* (default
//! [`DEFAULT_RATE`], 512 KiB, as tcmalloc, jemalloc and Go's runtime do): its call stack is
//! recorded, and the record dropped when the block is freed. The live records, each scaled by
//! the inverse of its probability of being sampled, estimate the bytes and blocks every stack
//! holds. Sampling is by bytes with exponentially distributed intervals (a Poisson process), so
//! the estimate is unbiased whatever the sizes.
//!
//! From the environment (read before `main`, for Rust programs using [`SmallArena`] and programs
//! under the preload alike):
//! * `SMALLARENA_PROFILE=<path>`: profile the whole run and write the live samples to `<path>` at
//!   exit: a pprof protobuf, gzip-compressed, if the path ends in `.pb.gz` (`go tool pprof`,
//!   `pprof`, speedscope and other viewers read it), else the folded-stacks text
//!   (`outermost;...;innermost BYTES` per line: `flamegraph.pl`, `inferno-flamegraph`,
//!   speedscope). A child of `fork()` that exits through `exit()` writes `<path>.<its pid>`.
//! * `SMALLARENA_LEAKS=1`: profile the whole run and print at exit, on stderr, the top 10 sites
//!   still holding memory (estimated bytes, blocks, samples; function, file and line, callers).
//! * `SMALLARENA_PROFILE_RATE=<bytes>`: the mean sampling interval (default 524288).
//!
//! From Rust: [`start`], [`stop`], [`leaks`], [`write_folded`]/[`dump_folded`],
//! [`write_pprof`]/[`dump_pprof`].
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();
//!
//! fn main() -> std::io::Result<()> {
//!     smallarena::profile::start(4096)?;
//!     let kept: Vec<Box<[u8; 100]>> = (0..10_000).map(|_| Box::new([0; 100])).collect();
//!     let sites = smallarena::profile::leaks();
//!     let total: u64 = sites.iter().map(|s| s.bytes).sum();
//!     assert!(total > 500_000 && total < 2_000_000, "{total}"); // about 1 MB is live
//!     let mut folded = Vec::new();
//!     smallarena::profile::write_folded(&mut folded)?;
//!     smallarena::profile::stop();
//!     drop(kept);
//!     Ok(())
//! }
//! ```
//!
//! ## Cost
//! Each allocation subtracts its size from a thread-local countdown and branches on the sign
//! (the only cost on the allocation fast path, profiling on or off); each free loads one global
//! word, and while samples are live, reads one counter of a 64 KiB filter of sampled addresses.
//! A sample captures up to 64 return addresses with the unwinder (`backtrace`'s
//! `trace_unsynchronized`), and stores them in a table mapped from the OS; symbols are resolved
//! only when a profile is written. The README gives measured figures.
//!
//! ## The profiler's own memory
//! The unwinder, the symbolizer and the encoders allocate; they run under a re-entrancy guard
//! (a thread-local flag) under which the thread's allocations go to the system allocator and
//! are never sampled. Under the preload, `free` tells such blocks apart as it does every
//! pointer (the arena maps). On the `GlobalAlloc` path a small or medium block of the system
//! allocator would be routed to the arena by its layout, so once the profiler has made one,
//! `dealloc` and `realloc` also ask the arena maps for small and medium blocks (a few
//! instructions per free, for the rest of the process).
//!
//! ## Limits
//! * At most 65535 samples are live at once (then samples are lost, and the report says so):
//!   32 GiB of live memory at the default rate.
//! * A sampled block resized in place by `realloc` keeps its sample with its new size; one moved
//!   keeps its sample too (the stack of its first allocation).
//! * Stacks are those the unwinder finds (DWARF call frame information: Rust binaries and C
//!   programs built with `-g` or with unwind tables, the default on x86-64); names come from the
//!   symbol table and debug information, `-rdynamic` or `-g` helps for C programs.
//! * `valloc` and `pvalloc` under the preload are not sampled.
//!
//! [`SmallArena`]: crate::SmallArena

pub mod pprof;
mod report;
pub(crate) mod sampler;
pub(crate) mod table;

use crate::mode::{self, State};
use crate::size_class::is_served;
use crate::system;
use core::alloc::Layout;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use report::Site;
pub use sampler::{Crossing, DEFAULT_RATE};

/// Starts (or restarts, with a new rate) sampling: on average one allocation per `rate` bytes
/// allocated, in every thread. Samples of an earlier profile that are still live are kept (each
/// scaled by its own rate).
///
/// The calling thread samples from its next allocation on; other threads once they have
/// allocated up to 1 MiB more (they notice at their next idle check).
///
/// # Errors
/// `InvalidInput` if `rate` is 0; `OutOfMemory` if the OS refused the sample table (35 MiB of
/// address space, mapped once, touched as samples come).
pub fn start(rate: usize) -> io::Result<()> {
    if rate == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the sampling rate is a mean number of bytes between samples: at least 1",
        ));
    }
    if !table::ensure() {
        return Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            "smallarena: could not map the profiler's sample table",
        ));
    }
    use crate::sync::Ordering;
    static NEXT: crate::sync::AtomicUsize = crate::sync::AtomicUsize::new(1);
    sampler::RATE.store(rate, Ordering::Relaxed);
    sampler::SESSION.store(NEXT.fetch_add(1, Ordering::Relaxed), Ordering::Release);
    sync_gate();
    sampler::restart_current_thread();
    Ok(())
}

/// Makes the fast-path word's [`crate::gate::PROFILING`] bit say whether a session runs (a C
/// `malloc` counts its bytes towards the sampling countdown only while it is set). Re-checks the
/// session after writing, so that of two racing [`start`]/[`stop`] calls the last to write the
/// bit writes the right one.
fn sync_gate() {
    use crate::sync::Ordering;
    let fast = crate::gate::fast();
    loop {
        let session = sampler::SESSION.load(Ordering::SeqCst);
        if session != 0 {
            fast.close(crate::gate::PROFILING);
        } else {
            fast.open(crate::gate::PROFILING);
        }
        if sampler::SESSION.load(Ordering::SeqCst) == session {
            break;
        }
    }
}

/// Stops sampling. Live samples are kept (and dropped as their blocks are freed), so a profile
/// can still be written.
pub fn stop() {
    sampler::SESSION.store(0, crate::sync::Ordering::Release);
    sync_gate();
    sampler::restart_current_thread();
}

/// Whether a profile is being taken.
pub fn is_active() -> bool {
    sampler::SESSION.load(crate::sync::Ordering::Acquire) != 0
}

/// The sites holding live sampled memory now, biggest estimated bytes first. Empty when nothing
/// was sampled (profiling never started, or everything sampled was freed).
pub fn leaks() -> Vec<Site> {
    let g = sampler::Guard::enter();
    let snap = report::Snapshot::take();
    let sites = snap.sites();
    drop(g);
    // Copies made outside the guard: the caller owns and frees them like any other block.
    let out = sites.to_vec();
    let _g = sampler::Guard::enter();
    drop(sites);
    drop(snap);
    out
}

/// Runs `make` inside the guard and hands its bytes to `w` outside it (so `w` allocates as the
/// program does), then frees them inside the guard.
fn write_outside(w: &mut dyn Write, make: impl FnOnce() -> io::Result<Vec<u8>>) -> io::Result<()> {
    let g = sampler::Guard::enter();
    let bytes = make();
    drop(g);
    let r = match &bytes {
        Ok(b) => w.write_all(b),
        Err(_) => Ok(()),
    };
    let _g = sampler::Guard::enter();
    match bytes {
        Ok(_) => r,
        Err(e) => Err(e),
    }
}

/// Writes the live samples in the folded-stacks text format: one line per distinct stack,
/// frames from the outermost to the allocating function separated by `;`, a space, and the
/// estimated live bytes (inlined functions appear as frames; the allocator's own frames are
/// left out). What `flamegraph.pl`, `inferno-flamegraph` and speedscope read.
///
/// # Errors
/// Those of `w`.
pub fn write_folded(w: &mut impl Write) -> io::Result<()> {
    write_outside(w, || Ok(report::Snapshot::take().folded()))
}

/// [`write_folded`] to a new file at `path` (replaced if it exists).
///
/// # Errors
/// Creating or writing the file.
pub fn dump_folded(path: impl AsRef<Path>) -> io::Result<()> {
    let _g = sampler::Guard::enter();
    std::fs::write(path, report::Snapshot::take().folded())
}

/// Writes the live samples as a pprof profile (`profile.proto`, gzip-compressed): sample types
/// `inuse_objects` (count) and `inuse_space` (bytes), period type `space` (bytes), period the
/// sampling rate. What `go tool pprof`, `pprof` and its viewers read; [`pprof`] has the
/// messages, to decode it with `prost`.
///
/// # Errors
/// Those of `w`.
pub fn write_pprof(w: &mut impl Write) -> io::Result<()> {
    write_outside(w, || report::Snapshot::take().pprof_gz())
}

/// [`write_pprof`] to a new file at `path` (replaced if it exists).
///
/// # Errors
/// Creating or writing the file.
pub fn dump_pprof(path: impl AsRef<Path>) -> io::Result<()> {
    let _g = sampler::Guard::enter();
    std::fs::write(path, report::Snapshot::take().pprof_gz()?)
}

/// Writes the live samples to `path`: pprof ([`dump_pprof`]) if the name ends in `.pb.gz`, else
/// folded stacks ([`dump_folded`]). What `SMALLARENA_PROFILE` does at exit.
///
/// # Errors
/// Creating or writing the file.
pub fn dump(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    if path.as_os_str().as_encoded_bytes().ends_with(b".pb.gz") {
        dump_pprof(path)
    } else {
        dump_folded(path)
    }
}

// ---------------------------------------------------------------------------------------------
// The GlobalAlloc hooks
// ---------------------------------------------------------------------------------------------

/// `GlobalAlloc::alloc`'s hook: true when the request's countdown crossed zero; the caller then
/// asks [`on_crossing`] what to do (`crate::global`'s `alloc_crossed`).
#[inline(always)]
pub(crate) fn crossed(size: usize) -> bool {
    sampler::crossed(size)
}

pub(crate) use sampler::on_crossing;

/// A request of the profiler itself ([`Crossing::Guarded`]) on the `GlobalAlloc` path: small and
/// medium layouts in arena mode come from the system allocator (and from now on small and medium
/// frees ask the arena maps, see [`on_dealloc`]); `None` for every other request, which the
/// caller serves as usual (from the system allocator too, or in a mode where the layout routes
/// it right).
pub(crate) fn guarded_alloc(layout: Layout, zeroed: bool) -> Option<*mut u8> {
    let served = is_served(layout.size(), layout.align());
    if !(served && matches!(mode::decide(), State::Arena | State::ArenaFallback)) {
        return None;
    }
    table::ARMED.fetch_or(table::FOREIGN, crate::sync::Ordering::AcqRel);
    Some(if zeroed {
        system::alloc_zeroed(layout)
    } else {
        system::alloc(layout)
    })
}

/// `GlobalAlloc::dealloc`'s hook, before the block is freed: drops the block's sample, and
/// frees a small or medium block the profiler took from the system allocator itself (true: done, the
/// caller must not free it).
///
/// # Safety
/// As for `GlobalAlloc::dealloc`.
#[inline(always)]
pub(crate) unsafe fn on_dealloc(ptr: *mut u8, layout: Layout) -> bool {
    let armed = table::ARMED.load(crate::sync::Ordering::Relaxed);
    if armed == 0 {
        return false;
    }
    // SAFETY: forwarding the caller's contract.
    unsafe { on_dealloc_armed(ptr, layout, armed) }
}

/// [`on_dealloc`] while something is armed.
///
/// # Safety
/// As for `GlobalAlloc::dealloc`.
#[inline]
unsafe fn on_dealloc_armed(ptr: *mut u8, layout: Layout, armed: usize) -> bool {
    if armed & table::FOREIGN != 0 && is_foreign(ptr, layout) {
        // SAFETY: a small or medium block not in the arena, in arena mode: only the guard's system
        // allocations make those; live per the caller.
        unsafe { system::free(ptr) };
        return true;
    }
    if armed & table::LIVE != 0 && table::maybe_sampled(ptr) {
        table::forget(ptr);
    }
    false
}

/// Whether a live `GlobalAlloc` block of `layout` is one of the guard's system blocks: a small or
/// medium layout in arena mode (where the arena serves every other such block) outside the
/// arenas.
#[inline]
fn is_foreign(ptr: *const u8, layout: Layout) -> bool {
    is_served(layout.size(), layout.align()) && mode::is_arena() && !crate::raw::owns(ptr)
}

/// What `GlobalAlloc::realloc` does after [`realloc_begin`].
// The record travels on the stack of the (out-of-line) `realloc`: boxing it would allocate.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Realloc {
    /// Nothing to do with the profiler: go on as usual.
    Plain,
    /// Done: return this block.
    Done(*mut u8),
    /// The block is a sample, taken out of the table: go on as usual, then hand the result to
    /// [`realloc_end`].
    Moving(table::Record),
}

/// `GlobalAlloc::realloc`'s hook, first thing: reallocates one of the guard's system blocks
/// itself, and takes a sampled block's sample out of the table (to follow the block).
///
/// # Safety
/// As for `GlobalAlloc::realloc`.
pub(crate) unsafe fn realloc_begin(ptr: *mut u8, layout: Layout, new_size: usize) -> Realloc {
    let armed = table::ARMED.load(crate::sync::Ordering::Relaxed);
    if armed == 0 {
        return Realloc::Plain;
    }
    if armed & table::FOREIGN != 0 && is_foreign(ptr, layout) {
        // SAFETY: one of the guard's live system blocks, with this layout (per the caller).
        return Realloc::Done(unsafe { system::realloc(ptr, layout, new_size) });
    }
    if armed & table::LIVE == 0 || !table::maybe_sampled(ptr) {
        return Realloc::Plain;
    }
    match table::take(ptr) {
        Some(rec) => Realloc::Moving(rec),
        None => Realloc::Plain,
    }
}

/// After a `realloc` of a sampled block from `old` to `new` (null: it failed, the block stayed):
/// the sample follows the block, with the new size.
pub(crate) fn realloc_end(rec: table::Record, old: *mut u8, new: *mut u8, new_size: usize) {
    keep_sample(rec, old, new, new_size);
}

/// Puts back the sample `rec` of a block `realloc` moved from `old` to `new` (null: failed, the
/// block stayed), with its new size, unless the new block was sampled by its own allocation.
fn keep_sample(mut rec: table::Record, old: *mut u8, new: *mut u8, new_size: usize) {
    if new.is_null() {
        rec.addr = old.addr();
    } else if table::maybe_sampled(new) && table::take(new).map(|r| table::insert(&r)).is_some() {
        return;
    } else {
        rec.addr = new.addr();
        rec.size = new_size;
    }
    table::insert(&rec);
}

/// `GlobalAlloc::realloc`'s hook on the system allocator's own `realloc` (the block stays in
/// libc): the new size counts as allocated bytes, and a crossing samples the new block.
pub(crate) fn after_system_realloc(q: *mut u8, new_size: usize) {
    if !q.is_null() && sampler::crossed(new_size) {
        if let Crossing::Sample(rate) = sampler::on_crossing() {
            record(q, new_size, rate);
        }
    }
}

/// Records the block `p` of `size` bytes as a sample, with the calling stack.
#[cold]
#[inline(never)]
pub(crate) fn record(p: *mut u8, size: usize, rate: usize) {
    if p.is_null() {
        return;
    }
    let mut rec = table::Record::new(p.addr(), size, rate);
    {
        let _g = sampler::Guard::enter();
        let mut n = 0;
        // SAFETY: `trace_unsynchronized` requires no concurrent `trace`/`resolve` calls to the
        // unwinder that are not thread-safe; the libgcc unwinder it uses on Linux is thread-safe
        // (what `backtrace::trace` serialises is for other platforms' unwinders).
        unsafe {
            backtrace::trace_unsynchronized(|frame| {
                if let Some(slot) = rec.frames.get_mut(n) {
                    *slot = frame.ip().addr();
                    n += 1;
                    true
                } else {
                    false
                }
            });
        }
        rec.depth = n;
    }
    table::insert(&rec);
}

// ---------------------------------------------------------------------------------------------
// For the preload
// ---------------------------------------------------------------------------------------------

/// Entry points for a C `malloc` built on [`crate::raw`] (the `smallarena-preload` crate): the
/// same hooks the `GlobalAlloc` implementation calls. A C allocator calls [`hooks::crossed`]
/// with each request's size before serving it; when it returns true it calls
/// [`hooks::on_crossing`] and serves the request from its system allocator
/// ([`Crossing::Guarded`]: the profiler's own allocation), as usual ([`Crossing::Skip`]), or as
/// usual and then [`hooks::record`]s the block ([`Crossing::Sample`]). Its `free` calls
/// [`hooks::on_free`] before freeing, and its `realloc` [`hooks::realloc_begin`] and
/// [`hooks::realloc_end`] around the move.
pub mod hooks {
    pub use super::sampler::on_crossing;
    pub use super::Crossing;
    use super::{sampler, table};

    /// Subtracts `size` bytes from the calling thread's countdown; true when it crossed zero.
    /// One subtraction and one branch.
    #[inline(always)]
    pub fn crossed(size: usize) -> bool {
        sampler::crossed(size)
    }

    /// Records the block `p` (null: nothing) of `size` bytes as a sample taken at `rate` (from
    /// [`Crossing::Sample`]), with the calling stack.
    pub fn record(p: *mut u8, size: usize, rate: usize) {
        super::record(p, size, rate);
    }

    /// Whether any sample is live (then a `free` calls [`on_free`]). One load of a global word.
    #[inline(always)]
    pub fn samples_live() -> bool {
        table::ARMED.load(crate::sync::Ordering::Relaxed) & table::LIVE != 0
    }

    /// Drops the sample of the block `p`, which is about to be freed, if it is one. One load of a
    /// global word when no sample is live.
    #[inline(always)]
    pub fn on_free(p: *const u8) {
        if table::ARMED.load(crate::sync::Ordering::Relaxed) & table::LIVE != 0
            && table::maybe_sampled(p)
        {
            table::forget(p);
        }
    }

    /// A sample taken out of the table for a `realloc` (see [`realloc_begin`]).
    pub struct Moving(table::Record);

    /// Before `realloc(p, ..)` of a live block: takes out `p`'s sample, if it is one, to be put
    /// back with [`realloc_end`].
    #[inline]
    pub fn realloc_begin(p: *const u8) -> Option<Moving> {
        if table::ARMED.load(crate::sync::Ordering::Relaxed) & table::LIVE != 0
            && table::maybe_sampled(p)
        {
            table::take(p).map(Moving)
        } else {
            None
        }
    }

    /// After `realloc(old, new_size)` returned `new` (null: failed, `old` stays): the sample
    /// follows the block.
    pub fn realloc_end(m: Moving, old: *mut u8, new: *mut u8, new_size: usize) {
        super::keep_sample(m.0, old, new, new_size);
    }
}

// ---------------------------------------------------------------------------------------------
// At start-up and exit
// ---------------------------------------------------------------------------------------------

/// `SMALLARENA_PROFILE`'s path, copied at start-up (NUL-free bytes; length in `PATH_LEN`).
static mut PATH: [u8; 4096] = [0; 4096];
static PATH_LEN: crate::sync::AtomicUsize = crate::sync::AtomicUsize::new(0);
static LEAKS: crate::sync::AtomicBool = crate::sync::AtomicBool::new(false);
/// The process id when profiling started from the environment (a fork child has another).
static START_PID: crate::sync::AtomicUsize = crate::sync::AtomicUsize::new(0);

/// Reads `SMALLARENA_PROFILE`, `SMALLARENA_PROFILE_RATE` and `SMALLARENA_LEAKS`; when either of the
/// first or the last asks for it, starts profiling and registers the `atexit` handler that writes
/// the profile and the report. Called once, from the start-up constructor; allocates nothing.
pub(crate) fn start_if_asked() {
    use crate::sync::Ordering;
    let (rate, note) = crate::env::read_profile_rate();
    note.emit();
    let (leaks, note) = crate::env::read_leaks();
    note.emit();
    let path = crate::env::read_profile_path();
    if let Some(p) = path {
        // SAFETY: written once, here, before `main` and before any thread; read at exit.
        let buf = unsafe { &mut *core::ptr::addr_of_mut!(PATH) };
        if p.len() > buf.len() {
            crate::env::Line::too_long(b"SMALLARENA_PROFILE", buf.len()).emit();
        } else if let Some(dst) = buf.get_mut(..p.len()) {
            dst.copy_from_slice(p);
            PATH_LEN.store(p.len(), Ordering::Release);
        }
    }
    LEAKS.store(leaks, Ordering::Release);
    START_PID.store(std::process::id() as usize, Ordering::Relaxed);
    if PATH_LEN.load(Ordering::Acquire) == 0 && !leaks {
        return;
    }
    if start(rate).is_err() {
        crate::env::Line::message(b"smallarena: the profiler could not map its sample table; not profiling\n").emit();
        return;
    }
    // SAFETY: a plain function valid for the life of the process; atexit allocates nothing for
    // its first 32 handlers.
    unsafe {
        libc::atexit(write_at_exit);
    }
}

/// The `atexit` handler: stops sampling, writes the profile file and/or prints the leak report.
extern "C" fn write_at_exit() {
    use crate::sync::Ordering;
    stop();
    let _g = sampler::Guard::enter();
    let snap = report::Snapshot::take();
    let len = PATH_LEN.load(Ordering::Acquire);
    if len > 0 {
        // SAFETY: written once before `main`, never again.
        let bytes = unsafe { &*core::ptr::addr_of!(PATH) }.get(..len).unwrap_or(&[]);
        let mut path = PathBuf::from(std::ffi::OsStr::from_bytes(bytes));
        // A child of `fork()` that exits through `exit()` writes beside its parent's file.
        let pid = std::process::id();
        if pid as usize != START_PID.load(Ordering::Relaxed) {
            let mut name = path.into_os_string();
            name.push(format!(".{pid}"));
            path = name.into();
        }
        let data = if bytes.ends_with(b".pb.gz") {
            snap.pprof_gz()
        } else {
            Ok(snap.folded())
        };
        if let Err(e) = data.and_then(|d| std::fs::write(&path, d)) {
            let msg = format!(
                "smallarena: could not write the profile to {}: {e}\n",
                path.display()
            );
            crate::stats::write_at_exit(msg.as_bytes());
        }
    }
    if LEAKS.load(Ordering::Acquire) {
        let when = format!("at exit of process {}", std::process::id());
        crate::stats::write_at_exit(&snap.leak_report(10, &when));
    }
}
