//! # smallarena
//!
//! A pymalloc-style small-object allocator for Rust programs. Requests of up to 512 bytes (with
//! alignment up to 16) are served from 32 size classes, each carved out of 16 KiB pools inside
//! 1 MiB arenas mapped straight from the OS, the layout CPython's obmalloc made famous; requests
//! of 513 bytes to 32 KiB from 24 medium classes (four per doubling), carved out of 256 KiB pools
//! inside 4 MiB arenas with the same protocols. Each thread owns its pools, so allocation and free
//! on the owning thread take no lock and no atomic read-modify-write; frees from other threads go
//! through a lock-free list per pool. Bigger or more strictly aligned requests go to the system
//! allocator.
//!
//! Install it with one line:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();
//!
//! fn main() {
//!     let words: Vec<String> = (0..1000).map(|i| format!("word {i}")).collect();
//!     assert_eq!(words[999], "word 999");
//!     assert_eq!(format!("{:?}", smallarena::mode()), "Arena");
//!     let stats = smallarena::stats();
//!     assert!(stats.blocks_in_use() >= 1000);
//!     println!("{stats}");
//! }
//! ```
//!
//! ## Where things live
//! The rooms, bottom-up: each names only rooms of its own layer or below (checked by
//! `scripts/import-graph`, which holds the same list).
//! 0. `tunables` (every size, count and budget, with compile-time checks), `sync` (atomics,
//!    globals, thread-locals and the spin lock, one facade that loom swaps), `valgrind::client`
//!    (the client-request instruction sequence), `system` (the libc allocator for large and
//!    over-aligned requests).
//! 1. `valgrind` (client-request hooks only, as mimalloc's `track.h`), `lock` (the one lock and
//!    its `Locked` proof, the fork hold), `size_class` (which requests each of the 32 small and
//!    24 medium classes serves), `os` (`mmap`/`munmap`; a heap-backed stand-in under Miri, a fixed reservation
//!    under loom).
//! 2. `env` (every `SMALLARENA_*` variable, read and parsed in one place), `mode` (which
//!    allocator serves small requests, decided once per process; the mode-gated Valgrind hooks),
//!    `fork` (the fork policy, [`ForkPolicy`]: whether a child reuses the parent's pools or
//!    leaves the parent's pages shared; the fork generation and its counters).
//! 3. `pool` (16 KiB small and 256 KiB medium pools: header, free list, lock-free remote-free
//!    list), `arena_map` (which addresses are arena memory: a lock-free bitmap over arena
//!    addresses per kind of arena), `reserve` (the address-space reservation small and medium
//!    arenas are carved from, for the preload's one-compare ownership test), `purge` (the purge delay: when free pools and empty arenas
//!    go back to the OS; its clock and schedule).
//! 4. `arena` (1 MiB small and 4 MiB medium arenas, the fullest-first pool supply, returning
//!    empty arenas to the OS).
//! 5. `heap` (per-thread heaps: the fast paths and refill; `heap::remote`, remote frees;
//!    `heap::remote_buffer`, the per-heap batching of remote frees;
//!    `heap::lifecycle`, thread exit, adoption and `fork()`; `heap::reclaim`, taking whole pools
//!    back from idle live heaps; `heap::check`, the invariant checker).
//! 6. `stats` ([`Stats`], the readable snapshot, and its printing), [`raw`] (size-less
//!    `alloc`/`free`/`usable_size`/`owns`, for a C `malloc`: the `smallarena-preload` crate).
//! 7. `annotate` (annotate mode: the arena with every block described to memcheck, and its
//!    quarantine), `global` ([`SmallArena`]: routing every request by mode and layout; the
//!    start-up constructor).
//! 8. This front door (docs and re-exports), and `tests` (unit tests across rooms, run under
//!    Miri too).
//!
//! ## Companions
//! Two libraries that grew from the same seeds live in crates of their own and are re-exported
//! here behind cargo features that are off by default, so an allocator-only user compiles
//! neither:
//! - `slotted` (feature `slotted`, crate [`smallarena-slotted`](https://docs.rs/smallarena-slotted)):
//!   map-like records over a fixed, shared key set, storing only the values.
//! - `url` (feature `url`, crate [`smallarena-url`](https://docs.rs/smallarena-url)):
//!   CPython 3.11-compatible URL splitting with a kind-keyed, bounded parse cache.
//!
//! ## Seeing inside
//! [`stats()`] returns a [`Stats`] snapshot (a table as its `Display`, JSON with
//! [`Stats::json`]); `SMALLARENA_STATS=1` (or `=json`) prints it on stderr at exit. [`collect()`]
//! returns free memory to the OS now; [`usable_size()`] tells how big a block really is.
//!
//! ## Guarantees
//! The allocator never allocates through itself, never panics, serves small requests from the
//! system allocator when the arena cannot grow and returns null only when that fails too, and
//! keeps working in a child process after `fork()`; with [`ForkPolicy::Share`]
//! (`SMALLARENA_FORK=share`) the child never writes to the pages its parent's heap was on.

#![cfg_attr(docsrs, feature(doc_cfg))]

// The supported targets: Linux (the allocator maps its arenas with `mmap`, hands heaps over with
// `pthread_atfork`, and its Valgrind client requests are the Linux protocol). Tested: x86_64
// (glibc, musl) and i686 (glibc); aarch64 builds. Other Unix systems may well work but have never
// been run, so they are refused rather than promised; see the README's "Platforms" section.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "smallarena supports Linux only (tested: x86_64 and i686, glibc and musl; aarch64 builds): \
     it maps its arenas with mmap and relies on pthread_atfork and Linux's thread-exit order; \
     this target is not Linux, so it is not supported"
);

/// Declares the crate's modules only where they can compile, so that on an unsupported target
/// the `compile_error!` above is the one error reported (and not one per missing libc item).
macro_rules! on_supported_targets {
    ($($item:item)*) => { $(#[cfg(target_os = "linux")] $item)* };
}

on_supported_targets! {
    // Layer 0: facades and geometry.
    mod tunables;
    mod sync;
    mod system;
    // Layer 1: hooks, the lock, size classes, the OS.
    mod valgrind;
    mod lock;
    mod size_class;
    mod os;
    mod gate;
    // Layer 2: the environment and the mode.
    mod env;
    mod mode;
    mod fork;
    // Layer 3: pools and the arena map.
    mod pool;
    mod arena_map;
    mod reserve;
    mod purge;
    // Layer 4: arenas.
    mod arena;
    // Layer 5: heaps.
    mod heap;
    // Layer 6: reports and size-less access.
    mod stats;
    pub mod raw;
    #[cfg(all(feature = "profile", not(any(loom, miri))))]
    #[cfg_attr(docsrs, doc(cfg(feature = "profile")))]
    pub mod profile;
    // Layer 7: the allocators.
    mod annotate;
    mod global;
    // Layer 8: tests across rooms.
    #[cfg(all(test, not(loom)))]
    mod tests;

    pub use global::{collect, usable_size, SmallArena};
    pub use fork::{fork_policy, set_fork_policy, ForkPolicy};
    pub use mode::{mode, Mode};
    pub use stats::{stats, ClassStats, Stats, StatsFormat, StatsJson};
    #[doc(hidden)]
    pub use pool::Violation as InvariantViolation;

    /// Checks the allocator's invariants from the calling thread: its own heap (class lists,
    /// owners, full flags, free lists, counts, empty cache), the heaps of exited threads, every
    /// arena's buckets and free pools, and the arena map. For tests (the crate's, and its
    /// integration tests after each scenario): it takes the lock, walks every pool, and
    /// allocates nothing. The first violation found is returned, naming the rule and the
    /// address where it fails.
    #[doc(hidden)]
    pub fn check_invariants() -> Result<(), InvariantViolation> {
        heap::check::check_current()
    }
}

#[cfg(feature = "slotted")]
#[cfg_attr(docsrs, doc(cfg(feature = "slotted")))]
#[doc(inline)]
pub use smallarena_slotted as slotted;
#[cfg(feature = "url")]
#[cfg_attr(docsrs, doc(cfg(feature = "url")))]
#[doc(inline)]
pub use smallarena_url as url;

#[doc(hidden)]
/// Entry points for the loom models in `tests/loom.rs` (only under `--cfg loom`): they call the
/// same internal functions the allocator's slow paths call, so a model can make them happen at
/// any point of an interleaving instead of waiting for a pool to run dry.
#[cfg(loom)]
pub mod loom_hooks {
    /// The calling thread's heap takes back every block other threads freed into its pools, as
    /// its allocation slow path does.
    pub fn collect_remote_frees() {
        crate::heap::collect_current();
    }

    /// Runs the calling thread's exit path (its heap is abandoned) as its thread-local
    /// destructor does; call it last in every model thread that allocated.
    pub fn thread_exit() {
        crate::heap::exit_current();
    }

    /// Runs the idle-owner reclaim (`heap/reclaim.rs`) on every live heap now, as a due tick does
    /// on the quiescent ones.
    pub fn reclaim_idle_heaps() {
        crate::heap::reclaim_now();
    }
}
