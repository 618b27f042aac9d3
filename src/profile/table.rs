//! The live samples: a table of records in memory mapped straight from the OS, indexed by block
//! address, and a filter the free paths read without a lock.
//!
//! * The table ([`Table`]) holds up to [`CAPACITY`] records (536 bytes each on 64-bit targets:
//!   the block's address, size, sampling rate and up to [`DEPTH`] return addresses) and an
//!   open-addressing index (linear probing, backward-shift deletion) from address to record. It
//!   is mapped with `mmap` on the first [`super::start`] (35 MiB of address space, touched only
//!   as records are used) and never unmapped; every access holds [`LOCK`], a spin lock that is
//!   held for table operations only (never while allocating or freeing).
//! * The filter ([`FILTER`]) counts live samples per bucket of addresses (a multiplicative hash
//!   of the address into 32768 buckets, 64 KiB): a free whose bucket reads zero cannot be of a
//!   sampled block and takes no lock. A sample's bucket is incremented under the lock before its
//!   block is handed to the program, so a free of it (which happens after, in any thread) reads a
//!   non-zero bucket. A bucket saturates at `u16::MAX` and then stays non-zero for ever (only
//!   slower: its frees look the table up).
//! * [`ARMED`] tells the free paths whether to look at all: [`LIVE`] while the table holds a
//!   record, [`FOREIGN`] once the profiler served a small request from the system allocator
//!   (see [`super::on_dealloc`]).

use crate::sync::{global, AtomicPtr, AtomicU16, AtomicUsize, Ordering, SpinLock};
use core::ptr::null_mut;

/// Return addresses kept per sample (the innermost ones).
pub(crate) const DEPTH: usize = 64;
/// Records the table holds at most; samples beyond are counted in [`Table::dropped`] and lost.
pub(crate) const CAPACITY: usize = (1 << 16) - 1;
/// Slots of the index (a power of two, at least twice [`CAPACITY`]).
const INDEX_SLOTS: usize = 1 << 17;
/// Buckets of the filter (a power of two).
const FILTER_BUCKETS: usize = 1 << 15;

/// [`ARMED`]: the table holds at least one record.
pub(crate) const LIVE: usize = 1;
/// [`ARMED`]: blocks of small layouts from the system allocator may be live (made inside the
/// guard on the `GlobalAlloc` path in arena mode); set once, never cleared.
pub(crate) const FOREIGN: usize = 2;

global! {
    /// What the free paths must check: [`LIVE`] | [`FOREIGN`], 0 when nothing.
    pub(crate) static ARMED: AtomicUsize = AtomicUsize::new(0);
}
global! {
    /// Live samples per address bucket (see the module documentation).
    static FILTER: [AtomicU16; FILTER_BUCKETS] = [const { AtomicU16::new(0) }; FILTER_BUCKETS];
}
global! {
    /// Guards [`TABLE`] and everything the table points to.
    static LOCK: SpinLock = SpinLock::new();
}
global! {
    /// The table, mapped on first use (null before).
    static TABLE: AtomicPtr<Table> = AtomicPtr::new(null_mut());
}

/// The multiplier of the address hashes (2^64 / golden ratio, truncated on 32-bit targets).
const GOLDEN: usize = 0x9E37_79B9_7F4A_7C15_u64 as usize;

/// `addr`'s hash, `bits` bits wide.
#[inline(always)]
fn hash(addr: usize, bits: u32) -> usize {
    (addr >> 4).wrapping_mul(GOLDEN) >> (usize::BITS - bits)
}

/// The filter bucket of `addr`.
#[inline(always)]
fn bucket(addr: usize) -> &'static AtomicU16 {
    let i = hash(addr, FILTER_BUCKETS.trailing_zeros());
    // The hash has exactly log2(FILTER_BUCKETS) bits, so `i` is in range.
    &FILTER[i & (FILTER_BUCKETS - 1)]
}

/// Whether `p` may be a sampled block (false: it certainly is not). Lock-free: one hash and one
/// load.
#[inline(always)]
pub(crate) fn maybe_sampled(p: *const u8) -> bool {
    bucket(p.addr()).load(Ordering::Relaxed) != 0
}

/// One sample: a live block and where it was allocated.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct Record {
    /// The block's address (0: a free record).
    pub(crate) addr: usize,
    /// Bytes requested.
    pub(crate) size: usize,
    /// The mean sampling interval in bytes when it was sampled.
    pub(crate) rate: usize,
    /// How many of `frames` are used.
    pub(crate) depth: usize,
    /// Return addresses, innermost first.
    pub(crate) frames: [usize; DEPTH],
}

impl Record {
    /// An empty record for `addr`.
    pub(crate) const fn new(addr: usize, size: usize, rate: usize) -> Record {
        Record {
            addr,
            size,
            rate,
            depth: 0,
            frames: [0; DEPTH],
        }
    }

    /// How many allocations this sample stands for: `1 / (1 - exp(-size / rate))`, the inverse of
    /// the probability that an allocation of `size` bytes holds a sample point when they come at
    /// a mean of `rate` bytes apart (the unbiasing of Go's `scaleHeapSample` and tcmalloc's
    /// sampled allocation weights). At least 1; about `rate / size` for small blocks.
    pub(crate) fn scale(&self) -> f64 {
        let p = 1.0 - (-(self.size.max(1) as f64) / self.rate.max(1) as f64).exp();
        if p > 0.0 {
            1.0 / p
        } else {
            1.0
        }
    }

    /// The return addresses recorded, innermost first.
    pub(crate) fn stack(&self) -> &[usize] {
        self.frames.get(..self.depth).unwrap_or(&self.frames)
    }
}

/// The table in mapped memory.
///
/// Invariants (all guarded by [`LOCK`]):
/// * `records[i]` for `i < used` is either live (`addr != 0`, referenced by exactly one index
///   slot) or on the free list (`addr == 0`, linked through `size`, ending at `u32::MAX` as
///   `usize`); records at `used..` were never touched (zero pages).
/// * `index[s]` is 0 (empty) or `1 + i` for a live record `i`; the records' addresses are
///   distinct, each reachable by linear probing from `hash(addr)` without crossing an empty slot.
/// * `live` is the number of live records; [`LIVE`] is set in [`ARMED`] exactly when it is not 0.
/// * The filter bucket of each live record's address counts it.
#[repr(C)]
struct Table {
    index: [u32; INDEX_SLOTS],
    used: usize,
    free: usize,
    live: usize,
    dropped: usize,
    records: [Record; CAPACITY],
}

/// End of the free list.
const NONE: usize = u32::MAX as usize;

/// The table, mapping it on first use; null if the OS refused the memory.
fn table() -> *mut Table {
    let t = TABLE.load(Ordering::Acquire);
    if !t.is_null() {
        return t;
    }
    let size = core::mem::size_of::<Table>();
    // SAFETY: an anonymous private mapping, no address hint; mmap allocates nothing of ours.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return null_mut();
    }
    let p = p.cast::<Table>();
    // SAFETY: fresh zeroed memory of the table's size; zero is a valid empty index and counts.
    unsafe { (*p).free = NONE };
    match TABLE.compare_exchange(null_mut(), p, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            register_fork_handlers();
            p
        }
        Err(winner) => {
            // SAFETY: our own mapping, never published.
            unsafe { libc::munmap(p.cast(), size) };
            winner
        }
    }
}

/// Maps the table now; false if the OS refused.
pub(crate) fn ensure() -> bool {
    !table().is_null()
}

/// Holds [`LOCK`] while alive; the only way to reach the table's contents.
struct Held(*mut Table);

impl Held {
    /// Takes the lock; `None` if the table was never mapped.
    fn take() -> Option<Held> {
        let t = TABLE.load(Ordering::Acquire);
        if t.is_null() {
            return None;
        }
        LOCK.lock();
        Some(Held(t))
    }

    fn t(&mut self) -> &mut Table {
        // SAFETY: the table is mapped for the life of the process; holding LOCK (and `&mut self`)
        // makes this the only reference.
        unsafe { &mut *self.0 }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        LOCK.unlock();
    }
}

impl Table {
    /// The index slot holding `addr`'s record, if any.
    fn find(&self, addr: usize) -> Option<usize> {
        let mask = INDEX_SLOTS - 1;
        let mut s = hash(addr, INDEX_SLOTS.trailing_zeros());
        loop {
            let r = *self.index.get(s & mask)? as usize;
            if r == 0 {
                return None;
            }
            if self.records.get(r - 1)?.addr == addr {
                return Some(s & mask);
            }
            s += 1;
        }
    }

    /// Inserts `rec` (whose address is not in the table); false if the table is full.
    fn insert(&mut self, rec: &Record) -> bool {
        let i = if self.free != NONE {
            let i = self.free;
            self.free = self.records.get(i).map_or(NONE, |r| r.size);
            i
        } else if self.used < CAPACITY {
            self.used += 1;
            self.used - 1
        } else {
            self.dropped += 1;
            return false;
        };
        let Some(slot) = self.records.get_mut(i) else {
            return false;
        };
        *slot = *rec;
        let mask = INDEX_SLOTS - 1;
        let mut s = hash(rec.addr, INDEX_SLOTS.trailing_zeros()) & mask;
        // At most CAPACITY < INDEX_SLOTS slots are used, so an empty one is found.
        while self.index[s] != 0 {
            s = (s + 1) & mask;
        }
        self.index[s] = i as u32 + 1;
        self.live += 1;
        let b = bucket(rec.addr);
        let n = b.load(Ordering::Relaxed);
        if n != u16::MAX {
            b.store(n + 1, Ordering::Relaxed);
        }
        if self.live == 1 {
            ARMED.fetch_or(LIVE, Ordering::Release);
            crate::gate::fast().set_samples_live(true);
        }
        true
    }

    /// Removes the record in index slot `s` and returns it.
    fn remove_slot(&mut self, s: usize) -> Record {
        let mask = INDEX_SLOTS - 1;
        let i = self.index[s] as usize - 1;
        let rec = self.records[i];
        self.records[i].addr = 0;
        self.records[i].size = self.free;
        self.free = i;
        // Backward-shift deletion: move later entries of the probe run into the hole when their
        // home slot does not lie (cyclically) after the hole.
        let mut hole = s;
        let mut j = (s + 1) & mask;
        while self.index[j] != 0 {
            let addr = self.records[self.index[j] as usize - 1].addr;
            let home = hash(addr, INDEX_SLOTS.trailing_zeros()) & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.index[hole] = self.index[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.index[hole] = 0;
        self.live -= 1;
        let b = bucket(rec.addr);
        let n = b.load(Ordering::Relaxed);
        if n != u16::MAX && n != 0 {
            b.store(n - 1, Ordering::Relaxed);
        }
        if self.live == 0 {
            ARMED.fetch_and(!LIVE, Ordering::Release);
            crate::gate::fast().set_samples_live(false);
        }
        rec
    }
}

/// Stores a sample; false if the table is full or not mapped (the sample is lost).
pub(crate) fn insert(rec: &Record) -> bool {
    let Some(mut h) = Held::take() else {
        return false;
    };
    let t = h.t();
    if let Some(s) = t.find(rec.addr) {
        // A stale record for a reused address cannot exist (frees remove records first), but
        // keep the table consistent if the program freed a block behind the allocator's back.
        t.remove_slot(s);
    }
    t.insert(rec)
}

/// Removes and returns the record of the block at `p`, if it is sampled.
#[cold]
#[inline(never)]
pub(crate) fn take(p: *const u8) -> Option<Record> {
    let mut h = Held::take()?;
    let t = h.t();
    let s = t.find(p.addr())?;
    Some(t.remove_slot(s))
}

/// Drops the record of the block at `p`, if it is sampled (out of line, and returning nothing,
/// so that a free path that calls it keeps no room for a record on its stack).
#[cold]
#[inline(never)]
pub(crate) fn forget(p: *const u8) {
    let _ = take(p);
}

/// Whether the block at `p` has a record (for the tests).
#[cfg(test)]
pub(crate) fn contains(p: *const u8) -> bool {
    Held::take().is_some_and(|mut h| h.t().find(p.addr()).is_some())
}

/// The number of live records and of samples lost to a full table.
pub(crate) fn counts() -> (usize, usize) {
    Held::take().map_or((0, 0), |mut h| {
        let t = h.t();
        (t.live, t.dropped)
    })
}

/// Copies up to `out.capacity()` live records into `out` (which the caller reserved beforehand:
/// nothing is allocated under the lock). Returns the number of live records, which may exceed
/// what fitted.
pub(crate) fn snapshot(out: &mut Vec<Record>) -> usize {
    let Some(mut h) = Held::take() else {
        return 0;
    };
    let t = h.t();
    let used = t.used;
    for r in t.records.iter().take(used) {
        if r.addr != 0 && out.len() < out.capacity() {
            out.push(*r);
        }
    }
    t.live
}

/// Holds [`LOCK`] across `fork()`, so the child never inherits it held by a thread that is gone.
fn register_fork_handlers() {
    extern "C" fn prepare() {
        if !TABLE.load(Ordering::Acquire).is_null() {
            LOCK.lock();
        }
    }
    extern "C" fn parent() {
        if !TABLE.load(Ordering::Acquire).is_null() {
            LOCK.unlock();
        }
    }
    extern "C" fn child() {
        if !TABLE.load(Ordering::Acquire).is_null() {
            LOCK.reset_after_fork();
        }
    }
    // SAFETY: the handlers are plain functions valid for the life of the process, and allocate
    // nothing.
    unsafe {
        libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_and_go_and_the_filter_follows() {
        assert!(ensure());
        // Addresses no allocator hands out (odd, in page 0's image), colliding in the index.
        let base = 0x10_0001usize;
        let addrs: Vec<usize> = (0..3000).map(|i| base + i * 16).collect();
        for (n, &a) in addrs.iter().enumerate() {
            assert!(insert(&Record::new(a, n + 1, 4096)));
        }
        for &a in &addrs {
            assert!(maybe_sampled(core::ptr::without_provenance(a)));
            assert!(contains(core::ptr::without_provenance(a)));
        }
        // Remove every other one: the rest stay reachable through the shifted probe runs.
        for &a in addrs.iter().step_by(2) {
            let r = take(core::ptr::without_provenance(a)).expect("present");
            assert_eq!(r.addr, a);
        }
        for (n, &a) in addrs.iter().enumerate() {
            assert_eq!(contains(core::ptr::without_provenance(a)), n % 2 == 1, "{n}");
        }
        for &a in addrs.iter().skip(1).step_by(2) {
            assert_eq!(
                take(core::ptr::without_provenance(a)).map(|r| r.addr),
                Some(a)
            );
        }
        assert!(take(core::ptr::without_provenance(base)).is_none());
        for &a in &addrs {
            assert!(!contains(core::ptr::without_provenance(a)));
        }
    }

    #[test]
    fn the_scale_unbiases_by_size() {
        let small = Record::new(1, 16, 4096);
        assert!((small.scale() - 256.5).abs() < 1.0, "{}", small.scale());
        let huge = Record::new(1, 1 << 30, 4096);
        assert!((huge.scale() - 1.0).abs() < 1e-9);
    }
}
