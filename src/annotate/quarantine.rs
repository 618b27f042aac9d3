//! Annotate mode's quarantine: freed blocks held back, oldest first, before the heap may hand
//! them out again, so that memcheck still sees them as freed when a stale pointer is used.
//!
//! Without it a freed block goes straight back onto its pool's free list, and the very next
//! request of its class gets it: a use-after-free read after that reuse reads a live block
//! (unreported), and a double free through the stale pointer frees the new owner's block
//! (unreported, and the new owner is blamed for its own legitimate accesses later). memcheck's
//! own allocator avoids this with `--freelist-vol`, jemalloc 3.x with its quarantine; this is
//! the same idea for the annotated arena.
//!
//! ## Storage
//! The queue allocates nothing: it is an intrusive FIFO threaded through the quarantined blocks
//! themselves. Each holds a [`Link`] (two words: the next block, the size the program asked for) in
//! its first 16 bytes; every annotated block has at least 32 (one byte asked for plus the 16-byte
//! redzone, rounded up to a class). The blocks stay no-access to memcheck: the links are written
//! and read inside a `Quiet` section. The queue itself (head, tail, bytes held) lives in a static
//! guarded by the allocator's lock ([`crate::lock::Locked`]), which the `fork()` handlers already
//! take and release, so a fork never leaves it locked in the child.
//!
//! ## Budget
//! The quarantine holds at most [`budget`] bytes, counted as whole blocks (the request, its
//! redzone, and the class's rounding). `SMALLARENA_QUARANTINE_MB` sets it in MiB (a whole number,
//! spaces around it ignored; read once, by [`crate::env`]); the default (unset or empty) is
//! [`crate::tunables::QUARANTINE_DEFAULT_MB`] (20 MiB, memcheck's own `--freelist-vol` default);
//! `0` disables the quarantine, and a value that is not a number is echoed in one line on stderr
//! and the default used. When a free pushes the total over the budget, the oldest blocks are taken
//! off the queue (under the lock) and freed to the heap (after it, by the freeing thread:
//! `heap::free` sends a block whose pool another thread owns back to that owner as a remote free).
//!
//! Nothing is drained at thread or process exit: the blocks were freed for memcheck already
//! (`FREELIKE_BLOCK`), so they are neither leaks nor reachable, and the arena's pages go with the
//! process.

use core::cell::UnsafeCell;
use core::ptr::null_mut;

use crate::lock::Locked;
use crate::size_class::{block_size, class_of};
use crate::sync::{global, AtomicUsize, Ordering};
use crate::tunables::REDZONE;

/// The words a quarantined block carries at its start while it waits.
#[repr(C)]
pub(crate) struct Link {
    /// The next younger block in the queue, or null.
    next: *mut Link,
    /// The size the program asked for (the block holds that plus the redzone).
    size: usize,
}

/// The bytes a block of a `size`-byte annotated request occupies in its pool: the request, the
/// redzone, rounded up to the block size of its class.
pub(crate) const fn held_bytes(size: usize) -> usize {
    block_size(class_of(size + REDZONE))
}

/// An intrusive FIFO of blocks with a running byte total. Pure bookkeeping: it only reads and
/// writes the [`Link`] words of the blocks pushed onto it.
pub(crate) struct Fifo {
    /// The oldest block, or null when empty.
    head: *mut Link,
    /// The youngest block, or null when empty.
    tail: *mut Link,
    /// [`held_bytes`] summed over the queued blocks.
    bytes: usize,
    /// How many blocks are queued.
    len: usize,
}

impl Fifo {
    /// An empty queue.
    pub(crate) const fn new() -> Fifo {
        Fifo {
            head: null_mut(),
            tail: null_mut(),
            bytes: 0,
            len: 0,
        }
    }

    /// The bytes held (whole blocks).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many blocks are held.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends the block at `link` (of a `size`-byte request), then takes the oldest blocks off
    /// until at most `budget` bytes are held. Returns the blocks taken off as a null-terminated
    /// chain, oldest first (null if none; the block just pushed may be among them, when it alone
    /// is over the budget).
    ///
    /// # Safety
    /// `link` is valid for reads and writes of a [`Link`] and suitably aligned, is not queued,
    /// and stays so until the block comes back from a push. Every block queued was pushed so.
    pub(crate) unsafe fn push(&mut self, link: *mut Link, size: usize, budget: usize) -> *mut Link {
        // SAFETY: `link` is valid per the caller; `tail` (when non-null) is a queued block, valid
        // until it leaves the queue, which only this function does.
        unsafe {
            link.write(Link {
                next: null_mut(),
                size,
            });
            if self.tail.is_null() {
                self.head = link;
            } else {
                (*self.tail).next = link;
            }
        }
        self.tail = link;
        self.bytes += held_bytes(size);
        self.len += 1;
        if self.bytes <= budget {
            return null_mut();
        }
        let first = self.head;
        let mut last = null_mut::<Link>();
        while self.bytes > budget && !self.head.is_null() {
            last = self.head;
            // SAFETY: `head` is a queued block, valid per the contract of the push that queued it.
            unsafe {
                self.bytes -= held_bytes((*last).size);
                self.head = (*last).next;
            }
            self.len -= 1;
        }
        if self.head.is_null() {
            self.tail = null_mut();
        }
        // SAFETY: at least one block was taken off (bytes exceeded the budget, and an empty queue
        // holds 0 bytes), so `last` is a valid block; ending the chain there detaches it.
        unsafe { (*last).next = null_mut() };
        first
    }
}

/// The next block of a chain returned by [`Fifo::push`], and the size of the request `link` was.
///
/// # Safety
/// `link` is a block of such a chain, not yet given back to the heap.
pub(crate) unsafe fn unlink(link: *mut Link) -> (*mut Link, usize) {
    // SAFETY: per the caller, the block still holds the link words the push wrote.
    unsafe { ((*link).next, (*link).size) }
}

/// The process-wide queue's cell, guarded by the arena lock (reached through [`queue`] only).
struct FifoCell(UnsafeCell<Fifo>);
// SAFETY: only touched while holding the lock (every access takes a `&mut Locked`).
unsafe impl Sync for FifoCell {}
global! {
    static QUEUE: FifoCell = FifoCell(UnsafeCell::new(Fifo::new()));
}

/// The process-wide queue; the `Locked` proves the arena lock is held.
pub(crate) fn queue(_proof: &mut Locked) -> &mut Fifo {
    // SAFETY: the `Locked` proves the lock is held; the &mut borrow of it makes this unique.
    unsafe { &mut *QUEUE.0.get() }
}

/// [`BUDGET`] before the environment was read.
const UNREAD: usize = usize::MAX;

global! {
    /// The budget in bytes, [`UNREAD`] until the first annotated free reads the environment.
    static BUDGET: AtomicUsize = AtomicUsize::new(UNREAD);
}

/// The quarantine's budget in bytes (0: disabled). Reads `SMALLARENA_QUARANTINE_MB` (through
/// [`crate::env`]) on first use.
pub(crate) fn budget() -> usize {
    let b = BUDGET.load(Ordering::Relaxed);
    if b != UNREAD {
        return b;
    }
    let (mb, warning) = crate::env::read_quarantine_mb();
    let b = mib(mb);
    // Only the thread whose value is stored warns, so the line appears once.
    if BUDGET
        .compare_exchange(UNREAD, b, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
    {
        warning.emit();
    }
    b
}

/// `mb` MiB in bytes, saturating below [`UNREAD`].
const fn mib(mb: usize) -> usize {
    let b = mb.saturating_mul(1 << 20);
    if b == UNREAD {
        UNREAD - 1
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block for the queue: memory the test owns, at least a `Link` big.
    fn block() -> *mut Link {
        Box::into_raw(Box::new(Link {
            next: null_mut(),
            size: 0,
        }))
    }

    /// Walks a chain the push returned, freeing the test's blocks, and returns their sizes.
    fn drain(mut chain: *mut Link) -> Vec<usize> {
        let mut sizes = Vec::new();
        while !chain.is_null() {
            // SAFETY: a chain from `push` of blocks made by `block`, each visited once.
            let (next, size) = unsafe { unlink(chain) };
            // SAFETY: made by `Box::into_raw` in `block` and no longer queued.
            drop(unsafe { Box::from_raw(chain) });
            sizes.push(size);
            chain = next;
        }
        sizes
    }

    #[test]
    fn held_bytes_count_the_redzone_and_the_class() {
        assert_eq!(held_bytes(1), 32);
        assert_eq!(held_bytes(16), 32);
        assert_eq!(held_bytes(17), 48);
        assert_eq!(held_bytes(48), 64);
        assert_eq!(held_bytes(496), 512);
    }

    /// Blocks come out oldest first, only once the budget is exceeded, and only as many as it
    /// takes to be within it again.
    #[test]
    fn first_in_first_out_within_the_budget() {
        let mut q = Fifo::new();
        let budget = 3 * 64;
        for size in [40, 41, 42] {
            // SAFETY: a fresh block, queued once.
            let out = unsafe { q.push(block(), size, budget) };
            assert!(out.is_null());
        }
        assert_eq!((q.len(), q.bytes()), (3, 192));
        // SAFETY: as above.
        assert_eq!(drain(unsafe { q.push(block(), 43, budget) }), [40]);
        assert_eq!((q.len(), q.bytes()), (3, 192));
        // A bigger block pushes out as many old ones as it needs.
        // SAFETY: as above.
        assert_eq!(drain(unsafe { q.push(block(), 100, budget) }), [41, 42]);
        assert_eq!((q.len(), q.bytes()), (2, 64 + 128));
        // Everything, the new block too, when one block alone exceeds the budget.
        // SAFETY: as above.
        assert_eq!(drain(unsafe { q.push(block(), 40, 32) }), [43, 100, 40]);
        assert_eq!((q.len(), q.bytes()), (0, 0));
        assert!(q.head.is_null() && q.tail.is_null());
        // The queue works again once emptied.
        // SAFETY: as above.
        assert!(unsafe { q.push(block(), 1, 64) }.is_null());
        // SAFETY: as above.
        assert!(unsafe { q.push(block(), 2, 64) }.is_null());
        // SAFETY: as above.
        assert_eq!(drain(unsafe { q.push(block(), 3, 64) }), [1]);
        // SAFETY: as above.
        assert_eq!(drain(unsafe { q.push(block(), 4, 0) }), [2, 3, 4]);
    }

    /// A budget of 0 holds nothing: each block comes straight back.
    #[test]
    fn zero_budget_holds_nothing() {
        let mut q = Fifo::new();
        for size in 1..20 {
            // SAFETY: a fresh block, queued once.
            assert_eq!(drain(unsafe { q.push(block(), size, 0) }), [size]);
            assert_eq!(q.len(), 0);
        }
    }

    #[test]
    fn budget_values() {
        use crate::env::parse_quarantine_mb as parse;
        assert_eq!(parse(b"20").0, 20);
        assert_eq!(parse(b" 0 \n").0, 0);
        assert_eq!(parse(b"007").0, 7);
        assert_eq!(parse(b"99999999999999999999999").0, usize::MAX);
        for empty in [&b""[..], b" "] {
            let (mb, warning) = parse(empty);
            assert_eq!((mb, warning.as_bytes()), (20, &b""[..]), "{empty:?}");
        }
        for bad in [&b"-1"[..], b"1.5", b"20M", b"0x10", b"lots"] {
            let (mb, warning) = parse(bad);
            assert_eq!(mb, 20, "{bad:?}");
            assert!(
                warning
                    .as_bytes()
                    .starts_with(b"smallarena: unknown SMALLARENA_QUARANTINE_MB value \""),
                "{bad:?}"
            );
        }
        assert_eq!(mib(20), 20 << 20);
        assert_eq!(mib(0), 0);
        assert_eq!(mib(usize::MAX), UNREAD - 1);
    }
}
