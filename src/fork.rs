//! What a child process does with the allocator's memory after `fork()`: the fork policy.
//!
//! `fork()` gives the child a copy-on-write view of the parent's memory: a page stays shared
//! (one physical copy for both) until either process writes to it. An allocator writes to the
//! parent's pages in the child in three ways: it hands out free blocks that sit on them (the new
//! object lands there), it links freed blocks into free lists stored inside them, and it updates
//! pool headers (counts, list links) kept on them. A pre-fork server (a parent that builds a large
//! read-mostly heap, then forks workers) loses its sharing that way, page by page.
//!
//! * [`ForkPolicy::Reuse`] (the default): the child takes over the parent's heaps, pools and
//!   arenas, and reuses their free space; freeing an inherited block puts it on its pool's free
//!   list, inside the inherited page.
//! * [`ForkPolicy::Share`]: the child never writes, through the allocator, to a page the parent
//!   had in use at fork time. At the fork the child forgets every inherited arena, pool and heap
//!   without writing to them (only the allocator's globals and the forking thread's
//!   thread-locals are reset); it then allocates from arenas it maps itself, through heaps made
//!   in its own fresh memory. A free of an inherited block writes nothing: the block is dropped
//!   and its bytes counted in [`Stats::fork_retained_bytes`](crate::Stats); a `realloc` of one
//!   always copies it out. A grandchild forked in share mode treats the child's arenas the same
//!   way.
//!
//! How a free knows a block is inherited, at no cost on the fast path: every arena header records
//! the *fork generation* it was mapped in (written once, before any of its pools is handed out),
//! and the process's generation goes up by one at every share-mode fork, in the child. An arena
//! of an older generation is inherited. Since a share-mode child gives its thread a fresh heap,
//! no inherited pool is owned by a heap the child uses, so an inherited block always takes the
//! free path of blocks owned by another heap (the cold, out-of-line "remote" path), which asks
//! `arena::inherited` before writing anything; a process that never forked in share mode pays one
//! load of a global and a predictable branch there, nothing on the fast paths.
//!
//! This room holds the policy, the generation and the counters; the arena room records and
//! compares generations, the heap room forgets heaps and arenas in the child's fork handler and
//! drops inherited blocks, annotate mode forgets its quarantine.

use crate::sync::{global, AtomicU8, AtomicUsize, Ordering};

/// What a child process does with the memory the allocator inherited from its parent at
/// `fork()`. Chosen with `SMALLARENA_FORK=share|reuse` at start-up, or with
/// [`set_fork_policy`]; read at every `fork()`, in the child.
///
/// The default is [`Reuse`](ForkPolicy::Reuse): it serves best the two commonest children, one
/// that calls `exec` at once (it allocates next to nothing before the whole address space is
/// replaced, so pages it dirties cost nothing for long, while `Share` would map a fresh arena and
/// heap for those few allocations) and one that frees much of what it inherited and allocates
/// again (`Reuse` recycles the freed blocks and the free space of the inherited pools, where
/// `Share` cannot and grows instead). `Share` is for pre-fork servers: a parent that builds a
/// large, read-mostly heap and forks long-lived workers that keep it.
///
/// ```
/// use smallarena::{fork_policy, set_fork_policy, ForkPolicy};
/// set_fork_policy(ForkPolicy::Share);
/// assert_eq!(fork_policy(), ForkPolicy::Share);
/// set_fork_policy(ForkPolicy::Reuse);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ForkPolicy {
    /// The child takes over the parent's heaps, pools and arenas and reuses their free space (and
    /// so writes to the parent's pages: they stop being shared). `SMALLARENA_FORK=reuse`.
    #[default]
    Reuse,
    /// The child never writes, through the allocator, to a page the parent had in use at fork
    /// time: it allocates from arenas it maps itself, drops inherited blocks it frees (counted in
    /// [`Stats::fork_retained_bytes`](crate::Stats)), and copies inherited blocks out on
    /// `realloc`. The free space of the inherited pools is not used by the child.
    /// `SMALLARENA_FORK=share`.
    Share,
}

/// [`POLICY`] before `SMALLARENA_FORK` was read.
const UNREAD: u8 = 0;
const REUSE: u8 = 1;
const SHARE: u8 = 2;

global! {
    /// The policy in force ([`REUSE`] or [`SHARE`]), [`UNREAD`] until the environment is read.
    static POLICY: AtomicU8 = AtomicU8::new(UNREAD);
}

global! {
    /// The fork generation of this process: how many share-mode forks lie between it and the
    /// process that started the program (0 there). Written only in a share-mode child's fork
    /// handler (a single thread), read on the remote free path and when an arena is mapped.
    static GENERATION: AtomicUsize = AtomicUsize::new(0);
}

global! {
    /// Bytes of inherited blocks this process freed and dropped (whole blocks).
    static RETAINED: AtomicUsize = AtomicUsize::new(0);
}

global! {
    /// Bytes of the arenas this process inherited across share-mode forks and left untouched.
    static INHERITED: AtomicUsize = AtomicUsize::new(0);
}

fn encode(p: ForkPolicy) -> u8 {
    match p {
        ForkPolicy::Reuse => REUSE,
        ForkPolicy::Share => SHARE,
    }
}

/// Sets the fork policy for the `fork()` calls that follow (in this process and, as they inherit
/// it, in its children). Takes effect at the next `fork()`; overrides `SMALLARENA_FORK`. Cheap:
/// one atomic store, no allocation, any thread.
pub fn set_fork_policy(policy: ForkPolicy) {
    // The environment is read first, so that a bad value is still reported once.
    read_env();
    POLICY.store(encode(policy), Ordering::Relaxed);
}

/// The fork policy in force: the last [`set_fork_policy`], else `SMALLARENA_FORK`, else
/// [`ForkPolicy::Reuse`].
pub fn fork_policy() -> ForkPolicy {
    match read_env() {
        SHARE => ForkPolicy::Share,
        _ => ForkPolicy::Reuse,
    }
}

/// Reads `SMALLARENA_FORK` if nobody has yet (from the start-up constructor, normally), printing
/// the warning for a value not understood once; returns the policy in force.
pub(crate) fn read_env() -> u8 {
    let cur = POLICY.load(Ordering::Relaxed);
    if cur != UNREAD {
        return cur;
    }
    let (requested, note) = crate::env::read_fork();
    let policy = match requested {
        crate::env::RequestedFork::Reuse => REUSE,
        crate::env::RequestedFork::Share => SHARE,
    };
    match POLICY.compare_exchange(UNREAD, policy, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => {
            note.emit();
            policy
        }
        Err(now) => now,
    }
}

/// Whether the child of the `fork()` in progress takes the share policy (called in the child's
/// fork handler, which reads the parent's setting: the child's memory is a copy of it).
#[cfg_attr(any(miri, loom), allow(dead_code))] // Fork handlers only (none under Miri or loom).
pub(crate) fn share_at_fork() -> bool {
    read_env() == SHARE
}

/// The fork generation of this process (see the module documentation), recorded in every arena
/// it maps.
pub(crate) fn generation() -> usize {
    // loom models no `fork()` (the generation stays 0): no operation added to the models.
    if cfg!(loom) {
        return 0;
    }
    GENERATION.load(Ordering::Relaxed)
}

/// The child side of a share-mode fork, after the heaps and arenas were forgotten: counts the
/// `inherited_arena_bytes` of arenas left untouched, and the generation goes up. Called by the forking thread
/// in the child, the only thread there.
#[cfg_attr(any(miri, loom), allow(dead_code))] // Fork handlers only (none under Miri or loom).
pub(crate) fn advance_generation(inherited_arena_bytes: usize) {
    INHERITED.fetch_add(inherited_arena_bytes, Ordering::Relaxed);
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Counts `bytes` of inherited blocks dropped instead of freed (see the module documentation).
#[cold]
pub(crate) fn retain(bytes: usize) {
    RETAINED.fetch_add(bytes, Ordering::Relaxed);
}

/// `(inherited, retained)` bytes for [`crate::Stats`]: the arenas this process inherited across
/// share-mode forks, and the inherited blocks it freed and dropped.
pub(crate) fn counters() -> (usize, usize) {
    (
        INHERITED.load(Ordering::Relaxed),
        RETAINED.load(Ordering::Relaxed),
    )
}
