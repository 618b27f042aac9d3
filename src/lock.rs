//! The allocator's one lock and the proof of holding it.
//!
//! [`LOCK`] guards every piece of shared bookkeeping that is not an atomic word: the arenas and
//! their buckets (`arena`), the heap list (`heap`), writes to the arena map (`arena_map`) and
//! annotate mode's quarantine. It is never taken on a fast path. A function that needs the state
//! it guards takes a `&mut` [`Locked`], the zero-cost proof that the caller holds it; each room
//! reaches its own state through a method or function on that proof, so the lock's discipline is
//! checked by the type system rather than by comments.
//!
//! `fork()`: the prepare handler takes the lock ([`hold_for_fork`]) so that the child inherits
//! consistent bookkeeping, and the parent and child handlers release it ([`release_after_fork`],
//! [`reset_in_child`]). Between the two, other libraries' fork handlers may run inside ours and
//! allocate in the forking thread; [`Locked::take`] then lets that thread work under the hold it
//! already has instead of waiting for itself.

use crate::sync::{global, SpinLock};
#[cfg(not(any(miri, loom)))]
use crate::sync::{AtomicUsize, Ordering};

global! {
    /// The lock behind all arena, heap-list and arena-map bookkeeping. Never taken on a fast path.
    pub(crate) static LOCK: SpinLock = SpinLock::new();
}

/// Proof that [`LOCK`] is held; the only way to reach the state it guards.
///
/// `owns` is false for the one proof that does not own the lock: the thread that holds it for
/// `fork()` (from its prepare handler until its parent or child handler) may reach the allocator
/// again from another library's fork handler, and then works under the lock it already holds
/// (see [`Locked::take`]); dropping that proof leaves the lock to the fork handlers.
pub(crate) struct Locked {
    owns: bool,
}

impl Locked {
    /// Takes the lock; or, in the thread that holds it for `fork()`, works under that hold.
    ///
    /// The fork hold is taken by [`LOCK.lock`](SpinLock::lock) outside every critical section,
    /// so when the holding thread gets here (from a fork handler of another library that runs
    /// inside ours) no section is half done and the state it guards is consistent. Waiting
    /// instead would be waiting for ourselves.
    pub(crate) fn take() -> Locked {
        #[cfg(not(any(miri, loom)))]
        if !LOCK.try_lock() {
            if fork_lock_is_mine() {
                return Locked { owns: false };
            }
            LOCK.lock();
        }
        #[cfg(any(miri, loom))]
        LOCK.lock();
        Locked { owns: true }
    }

    /// Takes the lock if nobody holds it, without waiting.
    pub(crate) fn try_take() -> Option<Locked> {
        // Not `then_some(Locked { .. })`: that builds the proof eagerly, and dropping it when the
        // lock is taken would release somebody else's lock (found by the loom models).
        if LOCK.try_lock() {
            Some(Locked { owns: true })
        } else {
            None
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        if self.owns {
            LOCK.unlock();
        }
    }
}

#[cfg(not(any(miri, loom)))]
global! {
    /// `pthread_self()` of the thread that holds the lock for `fork()` (from its prepare
    /// handler to its parent or child handler), else 0.
    static FORK_OWNER: AtomicUsize = AtomicUsize::new(0);
}

/// Whether the calling thread holds the lock for `fork()`.
///
/// `Relaxed` is enough: only the holder stores its own id, and it reads its own store; any other
/// thread reads 0 or an id that is not its own (the holder clears it before `fork()` returns, so
/// a thread reusing a dead holder's id cannot find it there).
#[cfg(not(any(miri, loom)))]
pub(crate) fn fork_lock_is_mine() -> bool {
    let owner = FORK_OWNER.load(Ordering::Relaxed);
    // SAFETY: pthread_self has no preconditions and does not allocate.
    owner != 0 && owner == unsafe { libc::pthread_self() } as usize
}

/// The `fork()` prepare handler's part: takes the lock (outside every critical section) and
/// notes the calling thread as its holder.
#[cfg(not(any(miri, loom)))]
pub(crate) fn hold_for_fork() {
    LOCK.lock();
    // SAFETY: pthread_self has no preconditions.
    FORK_OWNER.store(unsafe { libc::pthread_self() } as usize, Ordering::Relaxed);
}

/// The `fork()` parent handler's part: releases the hold [`hold_for_fork`] took.
#[cfg(not(any(miri, loom)))]
pub(crate) fn release_after_fork() {
    FORK_OWNER.store(0, Ordering::Relaxed);
    LOCK.unlock();
}

/// The `fork()` child handler's part: the forking thread, the only one left, releases its hold.
#[cfg(not(any(miri, loom)))]
pub(crate) fn reset_in_child() {
    FORK_OWNER.store(0, Ordering::Relaxed);
    LOCK.reset_after_fork();
}
