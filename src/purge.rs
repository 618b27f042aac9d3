//! The purge delay: free pools and wholly empty arenas go back to the OS once they have stayed
//! unused for a while, so a program's resident size falls after a burst is freed, while a steady
//! workload, which takes back within milliseconds the pools it gives up, does not fault its pages
//! in and out.
//!
//! The policy is mimalloc's `purge_delay` (`MIMALLOC_PURGE_DELAY`: "the delay in N milli-seconds
//! after which mimalloc will purge OS pages that are not in use", 0 purges at once, -1 never;
//! <https://microsoft.github.io/mimalloc/environment.html>) applied per pool, rather than
//! jemalloc's decay curve (`opt.dirty_decay_ms`, which purges a smoothstep share of the pages
//! dirtied in each of the last 200 intervals; <https://jemalloc.net/jemalloc.3.html>): a free
//! pool carries the time it was given back to its arena, and a pool free for at least
//! [`delay`] milliseconds is *purged*:
//!
//! * its pages, header included, go back to the OS with `madvise(MADV_DONTNEED)` (they read as
//!   zeros and use no memory until touched again; the arena lists its free pools in its own
//!   header, not through theirs), and the pool is fresh from the OS when it is taken again (a new
//!   header, and `alloc_zeroed` skips its memset);
//! * a wholly empty arena whose newest free pool is that old is unmapped (1 MiB, 4 MiB for a
//!   medium arena). An arena that becomes wholly empty while another of its kind is already kept
//!   is still unmapped at once, as before.
//!
//! Small and medium pools (16 KiB, 256 KiB) are purged alike, each kind in its own arenas.
//!
//! `MADV_DONTNEED` rather than `MADV_FREE`: with `MADV_FREE` the kernel takes the pages only under
//! memory pressure, so the resident size a user reads does not fall, and a pool reused before it
//! would have been purged costs no fault under either (see the README's measurements).
//!
//! When: never on a fast path. The pool's time is stamped, and a pass that purges every pool old
//! enough runs, on the slow paths that already hold the arena lock (a pool given back, a pool
//! taken) and on the allocation slow path (a pool ran out: the lock is tried, never waited for).
//! The time is `CLOCK_MONOTONIC_COARSE` (a vDSO read, no system call; a tick of a few ms), read
//! only when a pool is given back or a pass is pending. Passes run at most every quarter delay,
//! and purge at most `PURGE_BATCH` small pools' worth (16 MiB) each, adjacent pools in one `madvise`, so the
//! lock is never held for long (a pass that stops there leaves the rest to the next slow path);
//! a pool goes back between one and one and a quarter delays after it was freed (later if no
//! thread reaches a slow path: there is no background thread). Each arena's free list is pushed
//! and popped at its head, so its pools are in the order they were given back, newest first, and
//! the purged ones form its tail: a pass walks only the pools not yet purged.
//!
//! The mechanics (the free-pool stacks, the pass) are the arena's (`crate::arena`); this room
//! holds the delay, the clock and the schedule. The default, 1000 ms, is mimalloc 3's (its 2.x used 10 ms): measured on the comparison's
//! workloads (README, "Memory given back"), 10 ms doubled the page faults of the C programs with
//! remote frees (`mix1000`, `outlive`) and 100-250 ms still added half to `outlive`'s, whose
//! pools sit free for a few hundred milliseconds between phases; at 1000 ms none of them purged
//! a pool while running, and faults stayed within noise.
//!
//! The idle-owner reclaim (`heap/reclaim.rs`: whole pools taken back from live heaps whose
//! owner has gone quiet) ticks on the same clock, every delay (at least 1 ms), from the
//! allocation slow path: its schedule is here too ([`reclaim_wanted`], [`reclaim_maybe_due`]).
//!
//! `SMALLARENA_PURGE_DELAY_MS` sets the delay ([`crate::env`]); `-1` or `never` turns purging off
//! (only `collect()` gives pools back then, and one wholly empty arena stays mapped for
//! good), `0` purges every pool as it is given back and unmaps every arena as it empties. Not in
//! annotate mode (memcheck's view of the arena is kept as is), nor under Miri or loom.

use crate::lock::Locked;
use crate::sync::{global, AtomicUsize, Ordering};

/// [`DELAY`] before the variable is read.
const UNREAD: usize = usize::MAX;
/// [`DELAY`] when purging is off.
const OFF: usize = usize::MAX - 1;
/// [`NEXT`] when no pass is pending.
const NONE: usize = usize::MAX;

global! {
    /// The delay in milliseconds, [`OFF`], or [`UNREAD`]. Written under the arena lock.
    static DELAY: AtomicUsize = AtomicUsize::new(UNREAD);
}
global! {
    /// When the next pass is due (milliseconds of [`now_ms`]), or [`NONE`]. Written under the
    /// arena lock; read without it by [`maybe_due`] (a stale value only makes a pass early or
    /// late).
    static NEXT: AtomicUsize = AtomicUsize::new(NONE);
}

/// The purge delay in milliseconds, `None` when purging is off: `SMALLARENA_PURGE_DELAY_MS`,
/// read on the first call (under the lock, so the variable is read and any warning printed
/// once). Off in annotate mode and under Miri and loom.
pub(crate) fn delay(_proof: &mut Locked) -> Option<usize> {
    let mut d = DELAY.load(Ordering::Relaxed);
    if d == UNREAD {
        d = read_delay();
        DELAY.store(d, Ordering::Relaxed);
    }
    (d != OFF).then_some(d)
}

#[cfg(not(any(miri, loom)))]
fn read_delay() -> usize {
    if crate::mode::is_annotate() {
        return OFF;
    }
    let (d, note) = crate::env::read_purge_delay_ms();
    note.emit();
    // A delay this long never comes: the same as off.
    d.filter(|&ms| ms < OFF / 2).unwrap_or(OFF)
}

#[cfg(any(miri, loom))]
fn read_delay() -> usize {
    OFF
}

/// Milliseconds of `CLOCK_MONOTONIC_COARSE` (wrapping; only differences are used).
#[cfg(not(any(miri, loom)))]
pub(crate) fn now_ms() -> usize {
    // SAFETY: an all-zero timespec is a valid value; clock_gettime only writes it, and for this
    // clock is served by the vDSO without a system call or an allocation.
    let ts = unsafe {
        let mut ts: libc::timespec = core::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
        ts
    };
    (ts.tv_sec as usize)
        .wrapping_mul(1000)
        .wrapping_add(ts.tv_nsec as usize / 1_000_000)
}

/// Miri and loom: purging is off, the clock is never asked.
#[cfg(any(miri, loom))]
pub(crate) fn now_ms() -> usize {
    0
}

/// A pool was just given back at `now` with the delay `delay` (> 0): schedules a pass if none is
/// pending. Whether the pending one is due (the caller then runs it, and reports to [`passed`]).
pub(crate) fn given_back(_proof: &mut Locked, now: usize, delay: usize) -> bool {
    let next = NEXT.load(Ordering::Relaxed);
    if next == NONE {
        NEXT.store(deadline(now.wrapping_add(delay)), Ordering::Relaxed);
        false
    } else {
        is_due(now, next)
    }
}

/// `Some((now, delay))` when a pass is pending and due: the caller, holding the lock, runs it and
/// reports to [`passed`]. Reads the clock only when a pass is pending.
pub(crate) fn due(proof: &mut Locked) -> Option<(usize, usize)> {
    let next = NEXT.load(Ordering::Relaxed);
    if next == NONE {
        return None;
    }
    let now = now_ms();
    if !is_due(now, next) {
        return None;
    }
    delay(proof).map(|d| (now, d))
}

/// Whether a pass may be due, for a slow path that does not hold the lock: one load when none is
/// pending, and a clock read when one is. The caller then takes the lock (if it is free) and asks
/// [`due`].
#[inline]
pub(crate) fn maybe_due() -> bool {
    NEXT.load(Ordering::Relaxed) != NONE && maybe_due_now()
}

#[cold]
#[inline(never)]
fn maybe_due_now() -> bool {
    is_due(now_ms(), NEXT.load(Ordering::Relaxed))
}

/// A pass ran at `now`: schedules the next for when the oldest pool left (`oldest_left`, its age
/// in ms; `None`: none left) becomes due, but no sooner than a quarter delay from now, so passes
/// batch; or at once (the next slow path) when the pass stopped at its budget (`more`).
pub(crate) fn passed(
    _proof: &mut Locked,
    now: usize,
    delay: usize,
    oldest_left: Option<usize>,
    more: bool,
) {
    let next = match oldest_left {
        None => NONE,
        Some(_) if more => deadline(now),
        Some(age) => {
            let wait = delay.saturating_sub(age).max(delay / 4).max(1);
            deadline(now.wrapping_add(wait))
        }
    };
    NEXT.store(next, Ordering::Relaxed);
}

/// Everything free was just purged ([`crate::global::collect`]): no pass is pending.
pub(crate) fn nothing_pending(_proof: &mut Locked) {
    NEXT.store(NONE, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// The idle-owner reclaim's tick (the protocol is the heap's: `heap/reclaim.rs`)
// ---------------------------------------------------------------------------------------------

global! {
    /// When the next reclaim tick is due (milliseconds of [`now_ms`]), or [`NONE`]. Written under
    /// the arena lock; read without it by [`reclaim_maybe_due`] (a stale value only makes a tick
    /// early or late).
    static RECLAIM_NEXT: AtomicUsize = AtomicUsize::new(NONE);
}

/// The time between two reclaim ticks, in milliseconds: the purge delay (at least 1 ms), so a
/// heap is found idle when its owner ran no slow path for one to two delays, and the pools taken
/// from it go back to the OS one delay later. `None` when purging is off: then there is no tick
/// (the pools would not go back to the OS anyway).
fn reclaim_period(proof: &mut Locked) -> Option<usize> {
    delay(proof).map(|d| d.max(1))
}

/// A slow path that holds the lock saw activity (a pool taken from the arenas): schedules a
/// reclaim tick one period from now if none is pending. Reads the clock only then.
pub(crate) fn reclaim_wanted(proof: &mut Locked) {
    if RECLAIM_NEXT.load(Ordering::Relaxed) != NONE {
        return;
    }
    if let Some(period) = reclaim_period(proof) {
        RECLAIM_NEXT.store(deadline(now_ms().wrapping_add(period)), Ordering::Relaxed);
    }
}

/// Whether a reclaim tick may be due, for a slow path that does not hold the lock: one load when
/// none is pending, and a clock read when one is. The caller then takes the lock (if it is free)
/// and asks [`reclaim_due`].
#[inline]
pub(crate) fn reclaim_maybe_due() -> bool {
    let next = RECLAIM_NEXT.load(Ordering::Relaxed);
    next != NONE && is_due(now_ms(), next)
}

/// `Some(now)` when a reclaim tick is pending and due: the caller, holding the lock, runs it and
/// reports to [`reclaim_ticked`].
pub(crate) fn reclaim_due(_proof: &mut Locked) -> Option<usize> {
    let next = RECLAIM_NEXT.load(Ordering::Relaxed);
    if next == NONE {
        return None;
    }
    let now = now_ms();
    is_due(now, next).then_some(now)
}

/// A reclaim tick ran at `now`: the next is due one period later if `again` (a live heap still
/// had pools queued, so a later tick may find it idle), else none is pending until
/// [`reclaim_wanted`].
pub(crate) fn reclaim_ticked(proof: &mut Locked, now: usize, again: bool) {
    let next = match reclaim_period(proof) {
        Some(period) if again => deadline(now.wrapping_add(period)),
        _ => NONE,
    };
    RECLAIM_NEXT.store(next, Ordering::Relaxed);
}

/// Whether the time `now` is at or past `t` (wrapping: differences under half the range).
fn is_due(now: usize, t: usize) -> bool {
    now.wrapping_sub(t) <= usize::MAX / 2
}

/// `t` as a deadline: never the [`NONE`] marker.
fn deadline(t: usize) -> usize {
    if t == NONE {
        NONE - 1
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_wrap() {
        assert!(is_due(10, 10));
        assert!(is_due(11, 10));
        assert!(!is_due(9, 10));
        assert!(is_due(3, usize::MAX - 3));
        assert!(!is_due(usize::MAX - 3, 3));
        assert_eq!(deadline(NONE), NONE - 1);
        assert_eq!(deadline(5), 5);
    }

    #[test]
    #[cfg(not(miri))]
    fn the_clock_does_not_go_back() {
        let a = now_ms();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b = now_ms();
        assert!(is_due(b, a));
        assert!(b.wrapping_sub(a) >= 20, "{a} -> {b}");
    }
}
