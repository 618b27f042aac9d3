//! The fast-path word of size-less access ([`crate::raw`], the `LD_PRELOAD` library's `malloc`
//! and `free`): one cache line holding what those two read before anything else, so that a C
//! `malloc` makes one test to know it may take the fast path, and a C `free` one test to know it
//! has no profiler work and one more to know a pointer is a small block of ours.
//!
//! * [`Fast::gate`], for `malloc`: the reasons its fast path must not be taken, one bit each; 0
//!   when none. [`NOT_ARENA`] until [`crate::raw`] finds the mode to be `Arena` (set at start,
//!   so an undecided, `System` or `Annotate` process never takes the fast path); [`PROFILING`]
//!   while a profile is being taken (`malloc` must count its bytes towards the sampling
//!   countdown).
//! * [`Fast::free_word`], for `free`: where the address-space reservation of `crate::reserve`
//!   starts (its small arenas in the first [`SMALL_SPAN`] bytes, its medium arenas in the next
//!   [`MEDIUM_SPAN`]), with two flags in bits no user address has: [`NO_RESERVATION`] (bit 63)
//!   while there is none, [`SAMPLES_LIVE`] (bit 62) while the profiler holds a live sample.
//!   `p - word < SMALL_SPAN` (wrapping) is then true exactly for pointers into small arenas
//!   carved from the reservation *while no sample is live*: with either flag set it is false for
//!   every user address (below 2^47, or 2^56 with 5-level paging), so `free` makes one test for
//!   both its profiler hook and its ownership test, and every other case goes out of line. The
//!   base is set once, under the arena lock, before the first arena of the reservation is handed
//!   out (so a thread holding one of its blocks sees it), with one atomic XOR that clears
//!   [`NO_RESERVATION`] and keeps [`SAMPLES_LIVE`]; the profiler sets and clears
//!   [`SAMPLES_LIVE`] with atomic OR and AND, so neither writer undoes the other.
//!
//! This is the one place the preload pays for a global's address (a GOT load in a shared
//! library): both words sit behind the same address.

use crate::sync::{global, AtomicUsize, Ordering};

/// [`Fast::gate`]: the mode is not (yet known to be) `Arena`.
pub(crate) const NOT_ARENA: usize = 1;
/// [`Fast::gate`]: a profile is being taken.
#[cfg_attr(not(all(feature = "profile", not(any(loom, miri)))), allow(dead_code))]
pub(crate) const PROFILING: usize = 2;
/// Every value the gate can take (all its bits set): it indexes the thread-local heap pointer
/// and the three null words after it (`heap::try_alloc_sized_at`), so it must be below 4.
const GATE_BITS: usize = NOT_ARENA | PROFILING;
const _: () = assert!(GATE_BITS <= 3);

/// Bytes of the reservation's small part: 8 GiB, 8192 small arenas.
pub(crate) const SMALL_SPAN: usize = if usize::BITS >= 64 { (1u64 << 33) as usize } else { 0 };
/// Bytes of the reservation's medium part, right after the small part: 8 GiB, 2048 medium arenas.
pub(crate) const MEDIUM_SPAN: usize = if usize::BITS >= 64 { (1u64 << 33) as usize } else { 0 };
/// [`Fast::free_word`]: there is no reservation (the top bit). On 32-bit targets, where no
/// reservation is made, the spans are empty and no address is in them.
pub(crate) const NO_RESERVATION: usize = 1 << (usize::BITS - 1);
/// [`Fast::free_word`]: the profiler holds at least one live sample (the bit below the top one).
pub(crate) const SAMPLES_LIVE: usize = 1 << (usize::BITS - 2);

/// The fast-path word (see the module documentation). Aligned to a cache line of its own: it is
/// read by every `malloc` and `free` and written a handful of times per process.
#[repr(C, align(64))]
pub struct Fast {
    gate: AtomicUsize,
    free_word: AtomicUsize,
}

global! {
    /// The process's fast-path word.
    pub(crate) static FAST: Fast = Fast {
        gate: AtomicUsize::new(NOT_ARENA),
        free_word: AtomicUsize::new(NO_RESERVATION),
    };
}

impl Fast {
    /// True when `malloc` may take its fast path: the mode is `Arena` and no profile is being
    /// taken. One load and a compare.
    #[inline(always)]
    pub fn malloc_open(&self) -> bool {
        self.gate.load(Ordering::Relaxed) == 0
    }

    /// True when `p` is in a small arena carved from the reservation and no profiler sample is
    /// live: `free` may then free it as a small block with no other test. One load, a
    /// subtraction and a compare.
    #[inline(always)]
    pub fn free_small_open(&self, p: *const u8) -> bool {
        // Relaxed: see the module documentation (the base is written before any block of the
        // reservation exists; a sample's flag before its block is handed out).
        p.addr().wrapping_sub(self.free_word.load(Ordering::Relaxed)) < SMALL_SPAN
    }

    /// The gate's value: 0 when `malloc` may take its fast path, else 1 to 3 (the bits of
    /// [`NOT_ARENA`] and [`PROFILING`]).
    #[inline(always)]
    pub(crate) fn malloc_gate(&self) -> usize {
        self.gate.load(Ordering::Relaxed)
    }

    /// True when a `free` has profiler work: a sample is live.
    #[inline(always)]
    pub fn samples_live(&self) -> bool {
        self.free_word.load(Ordering::Relaxed) & SAMPLES_LIVE != 0
    }

    /// Where `p` lies in the reservation: `Some(true)` in its small part, `Some(false)` in its
    /// medium part, `None` outside it (or when there is none).
    #[inline]
    pub fn reserved_kind(&self, p: *const u8) -> Option<bool> {
        let word = self.free_word.load(Ordering::Relaxed);
        if word & NO_RESERVATION != 0 {
            return None;
        }
        let offset = p.addr().wrapping_sub(word & !SAMPLES_LIVE);
        if offset < SMALL_SPAN {
            Some(true)
        } else if offset - SMALL_SPAN < MEDIUM_SPAN {
            Some(false)
        } else {
            None
        }
    }

    /// Sets the gate bits `bits`.
    #[cfg_attr(not(all(feature = "profile", not(any(loom, miri)))), allow(dead_code))]
    pub(crate) fn close(&self, bits: usize) {
        self.gate.fetch_or(bits, Ordering::SeqCst);
    }

    /// Clears the gate bits `bits`.
    pub(crate) fn open(&self, bits: usize) {
        self.gate.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Whether any of the gate bits `bits` is set.
    pub(crate) fn is_closed(&self, bits: usize) -> bool {
        self.gate.load(Ordering::Relaxed) & bits != 0
    }

    /// Sets or clears [`SAMPLES_LIVE`] (the profiler, under its table lock).
    #[cfg_attr(not(all(feature = "profile", not(any(loom, miri)))), allow(dead_code))]
    pub(crate) fn set_samples_live(&self, live: bool) {
        if live {
            self.free_word.fetch_or(SAMPLES_LIVE, Ordering::SeqCst);
        } else {
            self.free_word.fetch_and(!SAMPLES_LIVE, Ordering::SeqCst);
        }
    }

    /// The reservation's start, or `None` when there is none.
    #[cfg_attr(
        not(all(target_pointer_width = "64", not(any(miri, loom)))),
        allow(dead_code)
    )]
    pub(crate) fn base(&self) -> Option<usize> {
        let word = self.free_word.load(Ordering::Acquire);
        (word & NO_RESERVATION == 0).then_some(word & !SAMPLES_LIVE)
    }

    /// Publishes the reservation's start (once, under the arena lock; `base` is aligned to a
    /// medium arena and below 2^62).
    #[cfg_attr(
        not(all(target_pointer_width = "64", not(any(miri, loom)))),
        allow(dead_code)
    )]
    pub(crate) fn set_base(&self, base: usize) {
        debug_assert!(base & (NO_RESERVATION | SAMPLES_LIVE) == 0);
        self.free_word
            .fetch_xor(NO_RESERVATION | base, Ordering::SeqCst);
    }
}

/// The process's fast-path word.
#[inline(always)]
pub(crate) fn fast() -> &'static Fast {
    &FAST
}
