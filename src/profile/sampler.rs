//! When to sample: a per-thread countdown of bytes, redrawn from an exponential distribution after
//! each sample, and the re-entrancy guard.
//!
//! Every allocation entry point subtracts the request's size from the calling thread's countdown
//! ([`crossed`]: one subtraction and one branch on the fast path). Only when it goes below zero
//! does [`on_crossing`] run, out of line: it decides whether this allocation is a sample and
//! draws the next countdown.
//!
//! * Profiling on, at a mean of `rate` bytes between samples: the countdown is drawn from an
//!   exponential distribution with mean `rate`, so sample points form a Poisson process over the
//!   bytes a thread allocates, as in tcmalloc (`Sampler::PickNextSamplingPoint`), Go's runtime
//!   (`MemProfileRate`, `fastexprand`) and jemalloc (`lg_prof_sample`, a geometric draw): an
//!   allocation of `size` bytes is sampled with probability `1 - exp(-size / rate)`, whatever the
//!   sizes around it, and a sample stands for `1 / that` allocations (see
//!   [`super::table::Record::scale`]).
//! * Profiling off: the countdown is set to [`IDLE_INTERVAL`] (1 MiB), so a thread takes the out-of-line
//!   path once per MiB it allocates, only to notice that profiling was started meanwhile
//!   ([`super::start`] from another thread).
//! * A thread's first crossing, and the first after profiling was (re)started, only draws: the
//!   countdown that ran out was not drawn for the running profile, so sampling there would bias it.
//! * Inside the profiler (the guard, [`Guard`]): the countdown is kept negative, so every
//!   allocation of the thread takes the out-of-line path, which sends it to the system allocator
//!   and never samples it.

use crate::sync::{tls_ptr, AtomicUsize, Ordering};
use core::cell::Cell;

/// The default mean sampling interval in bytes: 512 KiB, as gperftools' tcmalloc
/// (`TCMALLOC_SAMPLE_PARAMETER`), jemalloc (`lg_prof_sample:19`) and Go (`runtime.MemProfileRate`).
pub const DEFAULT_RATE: usize = 512 * 1024;

/// The countdown while profiling is off, in bytes.
pub(crate) const IDLE_INTERVAL: usize = 1 << 20;

/// The profile being taken: 0 when off, else a number new at every [`super::start`].
pub(crate) static SESSION: AtomicUsize = AtomicUsize::new(0);
/// The mean number of bytes between samples of the running profile (written before
/// [`SESSION`], read after it).
pub(crate) static RATE: AtomicUsize = AtomicUsize::new(DEFAULT_RATE);

tls_ptr! {
    /// Bytes this thread may still allocate before its next sample point, as the address bits of
    /// a pointer (the thread-local that the preload reads in the initial-exec TLS model); below
    /// zero as an `isize` means a crossing. Zero at thread start: the first allocation crosses.
    static COUNTDOWN: Cell<*mut u8>;
}

std::thread_local! {
    /// Whether the thread is inside the profiler (see [`Guard`]).
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// The thread's xorshift64* state; 0 until seeded.
    static RNG: Cell<u64> = const { Cell::new(0) };
    /// The [`SESSION`] the running countdown was drawn for (0: drawn while off).
    static DRAWN_FOR: Cell<usize> = const { Cell::new(0) };
}

/// Subtracts `size` from the calling thread's countdown; true when it went below zero (then call
/// [`on_crossing`]). The allocation fast paths' whole cost of the profiler.
#[inline(always)]
pub(crate) fn crossed(size: usize) -> bool {
    COUNTDOWN
        .try_with(|c| {
            let left = c.get().addr().wrapping_sub(size);
            c.set(core::ptr::without_provenance_mut(left));
            (left as isize) < 0
        })
        .unwrap_or(false)
}

/// Sets the calling thread's countdown to `bytes` (`usize::MAX`: -1, crossing at once).
fn set_countdown(bytes: usize) {
    let _ = COUNTDOWN.try_with(|c| c.set(core::ptr::without_provenance_mut(bytes)));
}

/// The calling thread's countdown.
fn countdown() -> usize {
    COUNTDOWN.try_with(|c| c.get().addr()).unwrap_or(0)
}

/// What an allocation whose countdown crossed zero is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crossing {
    /// Made by the profiler itself (inside the guard): serve it from the system allocator, do not
    /// sample it.
    Guarded,
    /// An ordinary allocation, not sampled.
    Skip,
    /// A sample of the running profile, whose mean sampling interval is this many bytes: record
    /// the block once it is allocated.
    Sample(usize),
}

/// Decides what the allocation whose countdown just crossed zero is, and draws the next
/// countdown. Allocates nothing.
#[cold]
#[inline(never)]
pub fn on_crossing() -> Crossing {
    if GUARDED.try_with(Cell::get).unwrap_or(true) {
        set_countdown(usize::MAX);
        return Crossing::Guarded;
    }
    let session = SESSION.load(Ordering::Acquire);
    let drawn_for = DRAWN_FOR.try_with(|d| d.replace(session)).unwrap_or(0);
    if session == 0 {
        set_countdown(IDLE_INTERVAL);
        return Crossing::Skip;
    }
    let rate = RATE.load(Ordering::Relaxed);
    set_countdown(next_interval(rate));
    if drawn_for == session {
        Crossing::Sample(rate)
    } else {
        Crossing::Skip
    }
}

/// Starts the calling thread on the running profile now (called by [`super::start`], so that the
/// thread that starts a profile samples from its next allocation on).
pub(crate) fn restart_current_thread() {
    let session = SESSION.load(Ordering::Acquire);
    let _ = DRAWN_FOR.try_with(|d| d.set(session));
    if session == 0 {
        set_countdown(IDLE_INTERVAL);
    } else {
        set_countdown(next_interval(RATE.load(Ordering::Relaxed)));
    }
}

/// An exponentially distributed number of bytes with mean `rate` (at least 1, below
/// `isize::MAX`).
fn next_interval(rate: usize) -> usize {
    let x = RNG
        .try_with(|r| {
            let mut x = r.get();
            if x == 0 {
                x = seed();
            }
            // xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift generators").
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            r.set(x);
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        })
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    // 53 random bits: u in [0, 1); -ln(1 - u) is exponential with mean 1.
    let u = (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    let bytes = -(1.0 - u).ln() * rate as f64;
    // `as` saturates; cap well below isize::MAX so subtracting any size cannot wrap past it.
    (bytes as usize).clamp(1, isize::MAX as usize / 2)
}

/// A non-zero seed, different per thread and per process: the address of a thread-local and the
/// monotonic clock, mixed by splitmix64's finalizer.
fn seed() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime allocates nothing.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let local = RNG.try_with(|r| core::ptr::from_ref(r).addr()).unwrap_or(0) as u64;
    let mut z = local ^ (ts.tv_sec as u64).rotate_left(32) ^ ts.tv_nsec as u64;
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z | 1
}

/// Whether the calling thread is inside the profiler.
#[cfg(test)]
pub(crate) fn guarded() -> bool {
    GUARDED.try_with(Cell::get).unwrap_or(true)
}

/// The re-entrancy guard: while one is alive, the thread's allocations go to the system allocator
/// and are never sampled (the stack capture, the symbolizer and the encoders allocate), and the
/// thread's countdown is parked. Nests (an inner guard changes nothing).
pub(crate) struct Guard {
    /// The countdown to restore, or `None` for a nested guard.
    saved: Option<usize>,
}

impl Guard {
    /// Enters the guard.
    pub(crate) fn enter() -> Guard {
        let was = GUARDED.try_with(|g| g.replace(true)).unwrap_or(true);
        if was {
            return Guard { saved: None };
        }
        let saved = countdown();
        set_countdown(usize::MAX);
        Guard { saved: Some(saved) }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(saved) = self.saved {
            set_countdown(saved);
            let _ = GUARDED.try_with(|g| g.set(false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_exponential_with_the_rate_as_mean() {
        let rate = 4096;
        let n = 200_000;
        let draws: Vec<usize> = (0..n).map(|_| next_interval(rate)).collect();
        let mean = draws.iter().sum::<usize>() as f64 / n as f64;
        assert!((mean / rate as f64 - 1.0).abs() < 0.02, "mean {mean}");
        // Exponential: P(X > rate) = 1/e.
        let above = draws.iter().filter(|&&d| d > rate).count() as f64 / n as f64;
        assert!((above - (-1f64).exp()).abs() < 0.01, "P(X > mean) = {above}");
        assert!(draws.iter().all(|&d| d >= 1));
    }

    #[test]
    fn the_guard_parks_the_countdown_and_nests() {
        set_countdown(1000);
        {
            let _g = Guard::enter();
            assert!(guarded());
            assert!(crossed(1), "inside the guard every allocation crosses");
            assert_eq!(on_crossing(), Crossing::Guarded);
            {
                let _inner = Guard::enter();
                assert!(guarded());
            }
            assert!(guarded(), "the inner guard left the outer one in place");
        }
        assert!(!guarded());
        assert_eq!(countdown(), 1000);
        assert!(!crossed(999));
        assert!(crossed(2));
    }
}
