//! The one place the allocator gets its atomics and its spin lock from.
//!
//! Every shared word the allocator touches is declared with a type from this module, so that a
//! model checker can later swap in its own types behind `cfg(loom)` without any other code path
//! changing. The spin lock guards only slow paths (arena bookkeeping, the heap registry); the
//! allocation and free fast paths never take it.

pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering,
};

/// A test-and-test-and-set spin lock that yields the CPU while it waits.
///
/// It never allocates, which is why the allocator can use it: a `std::sync::Mutex` may not
/// allocate today, but nothing promises that. It is held only for short, bounded sections of the
/// slow path (taking or returning a pool, mapping or unmapping an arena, registering a heap).
pub(crate) struct SpinLock {
    locked: AtomicBool,
}

impl SpinLock {
    /// An unlocked lock.
    pub(crate) const fn new() -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
        }
    }

    /// Spins (yielding to the scheduler) until the lock is ours.
    pub(crate) fn lock(&self) {
        let mut spins = 0u32;
        loop {
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            while self.locked.load(Ordering::Relaxed) {
                spins += 1;
                if spins < 64 {
                    core::hint::spin_loop();
                } else {
                    yield_now();
                }
            }
        }
    }

    /// Takes the lock if it is free, without waiting.
    pub(crate) fn try_lock(&self) -> bool {
        !self.locked.load(Ordering::Relaxed)
            && self
                .locked
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Releases the lock. Only the holder may call this.
    pub(crate) fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// Resets the lock to unlocked in a child process after `fork()`, where the thread that
    /// took it in the prepare handler is the only thread left.
    #[cfg(not(miri))]
    pub(crate) fn reset_after_fork(&self) {
        self.locked.store(false, Ordering::Relaxed);
    }
}

fn yield_now() {
    #[cfg(not(miri))]
    // SAFETY: sched_yield has no preconditions and does not allocate.
    unsafe {
        libc::sched_yield();
    }
    #[cfg(miri)]
    std::thread::yield_now();
}
