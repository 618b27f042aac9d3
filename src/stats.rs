//! A snapshot of the allocator's state, in the spirit of CPython's `sys._debugmallocstats()`,
//! and its printing: as a table ([`Stats`]'s `Display`), as one JSON object ([`Stats::json`]),
//! straight to a file descriptor without allocating ([`Stats::write_to_fd`]), and at exit when
//! `SMALLARENA_STATS` asks for it.

use crate::arena_map::Kind;
use crate::tunables::MEDIUM_ARENA_SIZE;
use crate::lock::Locked;
use crate::pool::{Pool, NO_CLASS};
use crate::tunables::MEDIUM_POOL_SIZE;
use crate::size_class::{any_block_size, CLASSES};
use crate::sync::Ordering;
use crate::tunables::{ARENA_SIZE, POOL_SIZE};
use core::fmt;

/// A snapshot of the allocator's counters; see [`Stats`]. Takes the internal lock briefly and
/// allocates nothing while holding it; reads the process's resident size from the OS.
///
/// The blocks the calling thread freed into other threads' pools and still holds in its
/// remote-free buffer go out to their pools first, so a thread's own frees are never counted as
/// in use; another live thread's buffered frees are (at most 248 blocks per thread), until that
/// thread flushes them (on its allocation slow path, `collect()`, `stats()` or exit).
pub fn stats() -> Stats {
    let mut s = Stats::empty();
    let _quiet = crate::mode::quiet();
    // The calling thread's buffered remote frees go out first, so a thread sees its own frees
    // (other live threads' buffers are theirs: see `heap::remote_buffer`).
    crate::heap::flush_current();
    collect(&mut s);
    (s.fork_inherited_bytes, s.fork_retained_bytes) = crate::fork::counters();
    (s.resident_bytes, s.resident_peak_bytes) = crate::os::resident();
    s
}

/// Fills the arena-side fields of `stats` while holding the lock: walks every pool of every
/// mapped arena, then reads the heap list's counters. Allocates nothing.
fn collect(stats: &mut Stats) {
    let mut locked = Locked::take();
    // Purged pools are free; their headers are not read (that would fault their pages in).
    stats.free_pools += locked.for_each_pool(|pool| {
        // SAFETY: pool headers of mapped arenas are readable under the lock; the fields read
        // are atomics.
        unsafe {
            let class = (*pool).class.load(Ordering::Relaxed);
            let owned = !(*pool).owner.load(Ordering::Relaxed).is_null();
            if !owned {
                stats.free_pools += 1;
            } else if class == NO_CLASS {
                stats.cached_pools += 1;
            } else {
                let c = class as usize;
                let used = (*pool).used.load(Ordering::Relaxed);
                let in_use = used.saturating_sub(Pool::remote_pending(pool)) as usize;
                let cs = &mut stats.classes[c];
                cs.pools += 1;
                cs.blocks_in_use += in_use;
                cs.free_blocks += Pool::capacity(c) - in_use;
            }
        }
    });
    for c in stats.classes.iter_mut() {
        c.bytes_in_use = c.blocks_in_use * c.block_size;
        stats.bytes_in_blocks += c.bytes_in_use;
    }
    let (mapped, peak) = locked.mapped(Kind::Small);
    stats.arenas_mapped = mapped;
    stats.arenas_peak = peak;
    let (mapped, peak) = locked.mapped(Kind::Medium);
    stats.medium_arenas_mapped = mapped;
    stats.medium_arenas_peak = peak;
    (stats.bytes_mapped, stats.bytes_mapped_peak) = locked.bytes_mapped();
    (stats.pools_purged, stats.arenas_unmapped) = locked.returned();
    stats.pools_reclaimed = crate::heap::pools_reclaimed(&mut locked);
    let heaps = crate::heap::list_counts(&mut locked);
    stats.bytes_requested = heaps.requested;
    stats.bytes_requested_peak = heaps.requested_peak;
    stats.heaps = heaps.heaps;
    stats.heap_handoffs = heaps.handoffs;
    stats.heaps_abandoned = heaps.abandoned;
}

/// Counters for one size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ClassStats {
    /// Block size of the class, in bytes.
    pub block_size: usize,
    /// Pools currently serving this class (each 16 KiB for a small class, 256 KiB for a medium
    /// one).
    pub pools: usize,
    /// Blocks handed out and not yet freed.
    pub blocks_in_use: usize,
    /// Free blocks in this class's pools (never-used space included).
    pub free_blocks: usize,
    /// Bytes in the blocks handed out and not yet freed: `blocks_in_use * block_size`.
    pub bytes_in_use: usize,
}

/// A snapshot returned by [`stats()`].
///
/// Counts are exact when no other thread is allocating; while threads run, each counter is a
/// recent value but the set of them is not one atomic picture. New fields may be added in minor
/// releases (the struct is `#[non_exhaustive]`); with the `serde` feature it implements
/// `serde::Serialize`, field names as here.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Stats {
    /// Per size class, smallest first: the 32 small classes (16..=512 bytes), then the 24 medium
    /// ones (640..=32768 bytes); see `src/size_class.rs`.
    #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_classes"))]
    pub classes: [ClassStats; CLASSES],
    /// Small arenas (1 MiB) mapped now.
    pub arenas_mapped: usize,
    /// Most small arenas ever mapped at once.
    pub arenas_peak: usize,
    /// Medium arenas (4 MiB) mapped now.
    pub medium_arenas_mapped: usize,
    /// Most medium arenas ever mapped at once.
    pub medium_arenas_peak: usize,
    /// Bytes mapped for arenas of both kinds now (address space: pages of it never touched use
    /// no memory).
    pub bytes_mapped: usize,
    /// Most bytes ever mapped for arenas at once.
    pub bytes_mapped_peak: usize,
    /// Bytes in blocks (small and medium) handed out and not yet freed, class-rounded: the sum of
    /// the classes' `bytes_in_use`.
    pub bytes_in_blocks: usize,
    /// Bytes requested and not yet freed, over every allocation (arena and system). Under the
    /// preload, only arena blocks (each counted at its block size): glibc serves the others
    /// directly.
    pub bytes_requested: usize,
    /// The highest `bytes_requested` seen, in bytes. Sampled, not tracked on every allocation
    /// (that would cost the fast path): whenever the heaps together hold more pools than ever
    /// before, at each system allocation of 1 MiB or more, and at every [`stats()`]. A lower
    /// bound of the true peak, close to it for programs whose peak is made of many blocks.
    pub bytes_requested_peak: usize,
    /// Bytes of the process resident in memory now (the whole process, from the OS:
    /// `/proc/self/statm`); 0 if unknown.
    pub resident_bytes: usize,
    /// The most bytes of the process ever resident at once (the OS's high-water mark:
    /// `getrusage`'s `ru_maxrss`); 0 if unknown.
    pub resident_peak_bytes: usize,
    /// Pools free in their arenas (small and medium), ready for any class of their kind.
    pub free_pools: usize,
    /// Empty pools cached by heaps for quick reuse.
    pub cached_pools: usize,
    /// Thread heaps ever created (they are reused, never unmapped).
    pub heaps: usize,
    /// Heaps whose thread has exited, waiting to be adopted.
    pub heaps_abandoned: usize,
    /// Times a heap was handed back (abandoned) since the process started: once per exiting thread
    /// that allocated, plus once per allocation made after a thread's last exit round (each borrows
    /// a heap and hands it back). A count far above the number of threads means allocation keeps
    /// happening after exit handling, where each one pays a whole handoff.
    pub heap_handoffs: usize,
    /// Free pools (small and medium) whose memory went back to the OS since the process started
    /// (all of a pool's pages, header included, dropped with `madvise(MADV_DONTNEED)`): by the
    /// purge delay (`SMALLARENA_PURGE_DELAY_MS`) or by [`crate::collect()`].
    pub pools_purged: usize,
    /// Arenas (1 MiB small and 4 MiB medium ones) unmapped since the process started: as they
    /// became wholly empty while
    /// another empty one was kept, after staying empty for the purge delay, or by
    /// [`crate::collect()`].
    pub arenas_unmapped: usize,
    /// Pools taken back from live threads that had gone idle, since the process started: pools
    /// whose every block other threads had freed, given to their arenas by another thread's slow
    /// path (and then back to the OS by the purge delay) instead of waiting for their owner's next
    /// slow path. Only while purging is on (`SMALLARENA_PURGE_DELAY_MS`).
    pub pools_reclaimed: usize,
    /// Bytes of the arenas this process inherited across `fork()`s made with
    /// [`ForkPolicy::Share`](crate::ForkPolicy) (1 MiB each) and leaves untouched, shared with
    /// the parent: not counted in `arenas_mapped`, `bytes_mapped` or the per-class counters.
    /// 0 in a process that was not forked in share mode.
    pub fork_inherited_bytes: usize,
    /// Bytes of inherited blocks (see `fork_inherited_bytes`) this process freed: in share mode
    /// such a block is dropped rather than written to, so its memory stays unused until the
    /// process exits (whole blocks, class-rounded).
    pub fork_retained_bytes: usize,
}

impl Stats {
    pub(crate) fn empty() -> Stats {
        let mut classes = [ClassStats::default(); CLASSES];
        for (i, c) in classes.iter_mut().enumerate() {
            c.block_size = any_block_size(i);
        }
        Stats {
            classes,
            arenas_mapped: 0,
            arenas_peak: 0,
            medium_arenas_mapped: 0,
            medium_arenas_peak: 0,
            bytes_mapped: 0,
            bytes_mapped_peak: 0,
            bytes_in_blocks: 0,
            bytes_requested: 0,
            bytes_requested_peak: 0,
            resident_bytes: 0,
            resident_peak_bytes: 0,
            free_pools: 0,
            cached_pools: 0,
            heaps: 0,
            heaps_abandoned: 0,
            heap_handoffs: 0,
            pools_purged: 0,
            arenas_unmapped: 0,
            pools_reclaimed: 0,
            fork_inherited_bytes: 0,
            fork_retained_bytes: 0,
        }
    }

    /// Blocks in use over all classes.
    pub fn blocks_in_use(&self) -> usize {
        self.classes.iter().map(|c| c.blocks_in_use).sum()
    }

    /// Free blocks over all classes (never-used space in their pools included).
    pub fn free_blocks(&self) -> usize {
        self.classes.iter().map(|c| c.free_blocks).sum()
    }

    /// Pools serving some class.
    pub fn pools_in_use(&self) -> usize {
        self.classes.iter().map(|c| c.pools).sum()
    }

    /// The snapshot as one JSON object on one line (its `Display`), with every field above plus
    /// `"mode"` (the mode's name) and the totals `"blocks_in_use"`, `"free_blocks"`,
    /// `"pools_in_use"`, `"pool_size"`, `"medium_pool_size"`, `"arena_size"` and
    /// `"medium_arena_size"` (bytes). Formatting it allocates nothing.
    ///
    /// ```
    /// let s = smallarena::stats();
    /// let json = s.json().to_string();
    /// assert!(json.starts_with("{\"mode\":"));
    /// ```
    pub fn json(&self) -> StatsJson<'_> {
        StatsJson(self)
    }

    /// Writes the snapshot to the file descriptor `fd` (2 for stderr): the table, or with
    /// `format` [`StatsFormat::Json`] one JSON object and a newline. Allocates nothing: formats
    /// into a
    /// fixed 8 KiB stack buffer and writes it with `write(2)` as it fills, so it is safe in a
    /// process that is exiting (an `atexit` handler) and from C. Write errors are ignored.
    pub fn write_to_fd(&self, fd: i32, format: StatsFormat) {
        let mut w = FdWriter::new(fd);
        // The writer never fails, and `Display` of `Stats` fails only if it does.
        let _ = match format {
            StatsFormat::Text => fmt::Write::write_fmt(&mut w, format_args!("{self}\n")),
            StatsFormat::Json => fmt::Write::write_fmt(&mut w, format_args!("{}\n", self.json())),
        };
        w.flush();
    }
}

/// How [`Stats::write_to_fd`] prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsFormat {
    /// The table of [`Stats`]'s `Display`.
    Text,
    /// One JSON object ([`Stats::json`]).
    Json,
}

/// [`Stats`] as a JSON object: see [`Stats::json`].
///
/// Hand-formatted on purpose: it is printed at exit from inside the allocator, which must not
/// allocate, so no JSON library (they build strings) can be used; every value is a number except
/// the mode's name, a fixed ASCII word.
#[derive(Clone, Copy, Debug)]
pub struct StatsJson<'a>(&'a Stats);

impl fmt::Display for StatsJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(f, "{{\"mode\":\"{}\",\"classes\":[", crate::mode::name_now())?;
        for (i, c) in s.classes.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(
                f,
                "{{\"block_size\":{},\"pools\":{},\"blocks_in_use\":{},\"free_blocks\":{},\
                 \"bytes_in_use\":{}}}",
                c.block_size, c.pools, c.blocks_in_use, c.free_blocks, c.bytes_in_use
            )?;
        }
        f.write_str("]")?;
        let fields: [(&str, usize); 29] = [
            ("arenas_mapped", s.arenas_mapped),
            ("arenas_peak", s.arenas_peak),
            ("medium_arenas_mapped", s.medium_arenas_mapped),
            ("medium_arenas_peak", s.medium_arenas_peak),
            ("bytes_mapped", s.bytes_mapped),
            ("bytes_mapped_peak", s.bytes_mapped_peak),
            ("bytes_in_blocks", s.bytes_in_blocks),
            ("bytes_requested", s.bytes_requested),
            ("bytes_requested_peak", s.bytes_requested_peak),
            ("resident_bytes", s.resident_bytes),
            ("resident_peak_bytes", s.resident_peak_bytes),
            ("free_pools", s.free_pools),
            ("cached_pools", s.cached_pools),
            ("heaps", s.heaps),
            ("heaps_abandoned", s.heaps_abandoned),
            ("heap_handoffs", s.heap_handoffs),
            ("pools_purged", s.pools_purged),
            ("arenas_unmapped", s.arenas_unmapped),
            ("pools_reclaimed", s.pools_reclaimed),
            ("fork_inherited_bytes", s.fork_inherited_bytes),
            ("fork_retained_bytes", s.fork_retained_bytes),
            ("blocks_in_use", s.blocks_in_use()),
            ("free_blocks", s.free_blocks()),
            ("pools_in_use", s.pools_in_use()),
            ("pool_size", POOL_SIZE),
            ("medium_pool_size", MEDIUM_POOL_SIZE),
            ("arena_size", ARENA_SIZE),
            ("medium_arena_size", MEDIUM_ARENA_SIZE),
            ("pid", process_id()),
        ];
        for (name, value) in fields {
            write!(f, ",\"{name}\":{value}")?;
        }
        f.write_str("}")
    }
}

/// `Stats::classes` as a sequence (serde implements `Serialize` for arrays of at most 32).
#[cfg(feature = "serde")]
fn serialize_classes<S: serde::Serializer>(
    classes: &[ClassStats; CLASSES],
    s: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&classes[..], s)
}

/// This process's id (0 under Miri).
fn process_id() -> usize {
    #[cfg(miri)]
    {
        0
    }
    #[cfg(not(miri))]
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe {
        libc::getpid() as usize
    }
}

/// A `core::fmt::Write` sink for a file descriptor through a fixed buffer: never allocates,
/// writes with `write(2)` when the buffer is full and on [`FdWriter::flush`].
struct FdWriter {
    fd: i32,
    buf: [u8; 8192],
    len: usize,
}

impl FdWriter {
    fn new(fd: i32) -> FdWriter {
        FdWriter {
            fd,
            buf: [0; 8192],
            len: 0,
        }
    }

    /// Writes out the buffered bytes (retrying short writes and `EINTR`, giving up on any other
    /// error) and empties the buffer.
    fn flush(&mut self) {
        let mut done = 0;
        while done < self.len {
            let rest = self.buf.get(done..self.len).unwrap_or(&[]);
            #[cfg(not(miri))]
            // SAFETY: `rest` is a live, initialised byte slice; write(2) only reads it, and
            // `__errno_location` returns this thread's errno, always valid.
            let (n, interrupted) = unsafe {
                let n = libc::write(self.fd, rest.as_ptr().cast(), rest.len());
                (n, n < 0 && *libc::__errno_location() == libc::EINTR)
            };
            // Miri: written nowhere (no file descriptors there).
            #[cfg(miri)]
            let (n, interrupted) = (rest.len() as isize, self.fd < 0);
            if n > 0 {
                done += n as usize;
            } else if !interrupted {
                break;
            }
        }
        self.len = 0;
    }
}

impl fmt::Write for FdWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

#[cfg(not(any(miri, loom)))]
crate::sync::global! {
    /// A duplicate of the descriptor that was stderr at start-up (plus one; 0: none), kept for
    /// printing at exit when the program has closed its stderr by then (GNU coreutils' `ls`,
    /// `sort`, ... close it in their own `atexit` handler, which runs before ours).
    static SAVED_STDERR: crate::sync::AtomicUsize = crate::sync::AtomicUsize::new(0);
}
#[cfg(not(any(miri, loom)))]
crate::sync::global! {
    /// The device and inode numbers of that stderr, to recognise it at exit (the program may have
    /// closed the duplicate and reused its number for a file of its own).
    static SAVED_IDENTITY: [crate::sync::AtomicUsize; 2] =
        [crate::sync::AtomicUsize::new(0), crate::sync::AtomicUsize::new(0)];
}

/// The device and inode numbers of the open file `fd` (truncated to `usize`), if it is open.
#[cfg(not(any(miri, loom)))]
fn identity(fd: i32) -> Option<[usize; 2]> {
    // SAFETY: an all-zero `stat` is a valid value of the plain C struct; fstat only writes it and
    // allocates nothing.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        (libc::fstat(fd, &mut st) == 0).then_some([st.st_dev as usize, st.st_ino as usize])
    }
}

/// Reads `SMALLARENA_STATS` and, if it asks for statistics, registers the `atexit` handler that
/// prints them. Called once, from the start-up constructor (before `main`, so the handler runs
/// after every `atexit` handler the program registers itself).
#[cfg(not(any(miri, loom)))]
pub(crate) fn print_at_exit_if_asked() {
    let (what, note) = crate::env::read_stats();
    note.emit();
    let handler: extern "C" fn() = match what {
        crate::env::StatsAtExit::Off => return,
        crate::env::StatsAtExit::Text => print_text_at_exit,
        crate::env::StatsAtExit::Json => print_json_at_exit,
    };
    if let Some(id) = identity(2) {
        // A high number, out of the way of programs that expect the low ones free; close-on-exec.
        // SAFETY: fcntl on a descriptor we checked is open; it allocates nothing.
        let dup = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 100) };
        if dup >= 0 {
            SAVED_IDENTITY[0].store(id[0], Ordering::Relaxed);
            SAVED_IDENTITY[1].store(id[1], Ordering::Relaxed);
            SAVED_STDERR.store(dup as usize + 1, Ordering::Release);
        }
    }
    // SAFETY: the handler is a plain function valid for the life of the process (in a shared
    // library, glibc runs it when the library is unloaded, if that comes first). atexit does not
    // allocate for its first 32 handlers.
    unsafe {
        libc::atexit(handler);
    }
}

/// Where to print at exit: stderr if it is still open; else the duplicate made at start-up, if it
/// still is the file stderr was then; else nowhere.
#[cfg(not(any(miri, loom)))]
fn exit_fd() -> Option<i32> {
    if identity(2).is_some() {
        return Some(2);
    }
    let saved = SAVED_STDERR.load(Ordering::Acquire);
    let fd = i32::try_from(saved.checked_sub(1)?).ok()?;
    let want = [
        SAVED_IDENTITY[0].load(Ordering::Relaxed),
        SAVED_IDENTITY[1].load(Ordering::Relaxed),
    ];
    (identity(fd) == Some(want)).then_some(fd)
}

/// Writes `bytes` where the statistics go at exit (stderr, or its saved duplicate; nowhere if
/// neither is open), with `write(2)`, retrying short writes. For the profiler's leak report.
#[cfg(all(feature = "profile", not(any(miri, loom))))]
pub(crate) fn write_at_exit(bytes: &[u8]) {
    let Some(fd) = exit_fd() else { return };
    let mut w = FdWriter::new(fd);
    for chunk in bytes.chunks(w.buf.len()) {
        if let Some(dst) = w.buf.get_mut(..chunk.len()) {
            dst.copy_from_slice(chunk);
            w.len = chunk.len();
        }
        w.flush();
    }
}

#[cfg(not(any(miri, loom)))]
extern "C" fn print_text_at_exit() {
    let Some(fd) = exit_fd() else { return };
    let mut w = FdWriter::new(fd);
    let _ = fmt::Write::write_fmt(
        &mut w,
        format_args!(
            "smallarena: statistics at exit of process {}\n",
            process_id()
        ),
    );
    w.flush();
    stats().write_to_fd(fd, StatsFormat::Text);
}

#[cfg(not(any(miri, loom)))]
extern "C" fn print_json_at_exit() {
    if let Some(fd) = exit_fd() {
        stats().write_to_fd(fd, StatsFormat::Json);
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "smallarena: {} mode", crate::mode::name_now())?;
        writeln!(f, "class    size   pools   blocks in use   free blocks")?;
        writeln!(f, "-----   -----   -----   -------------   -----------")?;
        for (i, c) in self.classes.iter().enumerate() {
            if c.pools == 0 {
                continue;
            }
            writeln!(
                f,
                "{:>5}   {:>5}   {:>5}   {:>13}   {:>11}",
                i, c.block_size, c.pools, c.blocks_in_use, c.free_blocks
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "# arenas mapped now / peak     = {} / {}",
            self.arenas_mapped, self.arenas_peak
        )?;
        writeln!(
            f,
            "# medium arenas now / peak     = {} / {}",
            self.medium_arenas_mapped, self.medium_arenas_peak
        )?;
        writeln!(
            f,
            "# bytes mapped now / peak      = {} / {}",
            self.bytes_mapped, self.bytes_mapped_peak
        )?;
        writeln!(
            f,
            "# pools in use / cached / free = {} / {} / {}",
            self.pools_in_use(),
            self.cached_pools,
            self.free_pools
        )?;
        writeln!(f, "# bytes in blocks              = {}", self.bytes_in_blocks)?;
        writeln!(
            f,
            "# bytes requested now / peak   = {} / {}",
            self.bytes_requested, self.bytes_requested_peak
        )?;
        writeln!(
            f,
            "# resident bytes now / peak    = {} / {}",
            self.resident_bytes, self.resident_peak_bytes
        )?;
        writeln!(
            f,
            "# pool size small / medium     = {} / {}",
            POOL_SIZE, MEDIUM_POOL_SIZE
        )?;
        writeln!(
            f,
            "# heaps (abandoned)            = {} ({})",
            self.heaps, self.heaps_abandoned
        )?;
        writeln!(f, "# heap handoffs                = {}", self.heap_handoffs)?;
        writeln!(f, "# pools purged                 = {}", self.pools_purged)?;
        writeln!(f, "# arenas unmapped              = {}", self.arenas_unmapped)?;
        write!(f, "# pools reclaimed              = {}", self.pools_reclaimed)?;
        if self.fork_inherited_bytes != 0 || self.fork_retained_bytes != 0 {
            write!(
                f,
                "\n# fork: inherited / retained   = {} / {}",
                self.fork_inherited_bytes, self.fork_retained_bytes
            )?;
        }
        Ok(())
    }
}
