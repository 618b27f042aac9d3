//! Every number the allocator is built around, in one place, with why it has its value and what
//! must hold between them (CPython's obmalloc keeps such a block at the top of `obmalloc.c`, its
//! "the following invariants must hold" enforced with `#error`; here each is a `const`
//! assertion, so a change that breaks one does not compile).
//!
//! The size classes themselves (how a request size maps to a class) are in
//! [`crate::size_class`]; this block holds the knobs they are derived from.

// ---------------------------------------------------------------------------------------------
// Blocks and classes
// ---------------------------------------------------------------------------------------------

/// The granularity of size classes and the alignment of every block, in bytes: 16 is what
/// `malloc` guarantees on 64-bit targets (`max_align_t`), so a block can hold any C or Rust type
/// a small request can ask for, and the first class is as small as a free block's two link words.
pub const GRANULE: usize = 16;
/// `log2(GRANULE)`: the shift [`crate::size_class::class_of`] divides by.
pub(crate) const GRANULE_SHIFT: u32 = 4;
/// The largest request served from the arena, in bytes: obmalloc's `SMALL_REQUEST_THRESHOLD`.
/// Above it, a request wastes too much of a 16 KiB pool (a 512-byte class holds 31 blocks) and is
/// rare enough for the system allocator.
pub const MAX_SMALL: usize = 512;
/// The largest alignment the arena guarantees, in bytes (every block is `GRANULE`-aligned);
/// requests asking for more go to the system allocator.
pub const MAX_ALIGN: usize = GRANULE;

const _: () = assert!(GRANULE == 1 << GRANULE_SHIFT);
// A free block holds its link and its free key (two words) in its first bytes.
const _: () = assert!(GRANULE >= 2 * core::mem::size_of::<usize>());
const _: () = assert!(MAX_SMALL % GRANULE == 0);
const _: () = assert!(MAX_ALIGN <= GRANULE && MAX_ALIGN.is_power_of_two());

// ---------------------------------------------------------------------------------------------
// Pools and arenas
// ---------------------------------------------------------------------------------------------

/// Size and alignment of a pool, in bytes: four 4 KiB pages, so the largest class still fits 31
/// blocks and a pool's header costs under 1% of it (obmalloc uses 16 KiB pools since 3.10).
/// A block finds its pool header by masking its address with this size.
pub const POOL_SIZE: usize = 16 * 1024;
/// Bytes at the start of each pool taken by its header: the owner-side cache line and the
/// remote-side cache line of `Pool` (128). Under loom its atomics are bigger (they carry
/// model-checker state), so the header is too.
pub const POOL_HEADER: usize = if cfg!(loom) { 512 } else { 128 };
/// Size and alignment of an arena, in bytes: the unit mapped from and returned to the OS
/// (obmalloc's `ARENA_SIZE` on 64-bit targets since 3.10). Big enough that `mmap` calls are rare,
/// small enough that a program whose live set shrinks can give whole arenas back.
pub const ARENA_SIZE: usize = 1 << 20;
/// Pools per arena, counting the header pool (pool 0 holds the arena's header).
pub const POOLS_PER_ARENA: usize = ARENA_SIZE / POOL_SIZE;
/// Pools per arena that serve blocks.
pub const USABLE_POOLS: usize = POOLS_PER_ARENA - 1;

/// Size and alignment of a medium pool, in bytes: the largest medium class (32 KiB) gets 7
/// blocks, the smallest (640 B) 409; a pool's pages are touched only as its bump pointer reaches
/// them, so its size costs address space, not memory.
pub const MEDIUM_POOL_SIZE: usize = 256 * 1024;
/// Size and alignment of a medium arena, in bytes: 16 medium pools, one of them the header's.
pub const MEDIUM_ARENA_SIZE: usize = 4 << 20;
const _: () = assert!(MEDIUM_POOL_SIZE.is_power_of_two() && MEDIUM_ARENA_SIZE.is_power_of_two());
const _: () = assert!(MEDIUM_ARENA_SIZE / MEDIUM_POOL_SIZE - 1 <= USABLE_POOLS);
const _: () = assert!(POOL_SIZE.is_power_of_two());
const _: () = assert!(ARENA_SIZE.is_power_of_two());
const _: () = assert!(ARENA_SIZE % POOL_SIZE == 0 && POOLS_PER_ARENA >= 2);
// Blocks start right after the header, so the header keeps them `GRANULE`-aligned.
const _: () = assert!(POOL_HEADER % GRANULE == 0);
// Every class has at least one block in a pool.
const _: () = assert!(POOL_SIZE - POOL_HEADER >= MAX_SMALL);

/// A full pool (unlinked from its class list) goes back into the list once this share of its
/// blocks has come back (at least one block). With one block the pool would be relinked on the
/// first free and unlinked again on the next allocation that reaches it: a program freeing at
/// random across many pools (the `mixed` workload) spent 9% of its allocations and 10% of its
/// frees in those two slow paths, with the cache misses of touching neighbouring pool headers.
/// The price is memory: a full pool holds at most this share of its blocks free and unused.
pub const RELINK_SHARE: usize = 8;
// `check_cap` holds a pool's capacity in 16 bits, `slow_at` in 15.
const _: () = assert!((MEDIUM_POOL_SIZE - POOL_HEADER) / (MAX_SMALL + GRANULE) <= i16::MAX as usize);
const _: () = assert!((POOL_SIZE - POOL_HEADER) / GRANULE <= i16::MAX as usize);

// ---------------------------------------------------------------------------------------------
// Heaps
// ---------------------------------------------------------------------------------------------

/// Empty pools a heap keeps for reuse before giving them back to their arena: enough to absorb
/// a burst of frees followed by allocations of another class without taking the arena lock,
/// few enough (64 KiB per thread) that idle threads do not hoard memory.
pub(crate) const EMPTY_CACHE: usize = 4;
/// Empty medium pools (256 KiB each) a heap keeps for reuse: two, so a class that empties and
/// refills its pool does not take the arena lock every time, while an idle thread holds at most
/// 512 KiB of them.
pub(crate) const MEDIUM_EMPTY_CACHE: usize = 2;
/// Bytes mapped at a time for heap headers (heaps are never unmapped, so they are carved out of
/// slabs): one mapping serves dozens of threads.
pub(crate) const HEAP_SLAB: usize = 64 * 1024;
/// Rounds of pthread key destructors the C library runs at most: POSIX's minimum
/// `_POSIX_THREAD_DESTRUCTOR_ITERATIONS`, glibc's and musl's value. The exit hook re-arms itself
/// for every round but the last; a C library running more only makes the last rounds borrow a
/// heap per allocation.
#[cfg(not(loom))]
pub(crate) const EXIT_ROUNDS: u8 = 4;

const _: () = assert!(EMPTY_CACHE >= 1);
const _: () = assert!(HEAP_SLAB % 4096 == 0);
#[cfg(not(loom))]
const _: () = assert!(EXIT_ROUNDS >= 1);

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/// System allocations of at least this many bytes sample the peak of bytes requested
/// (`Stats::bytes_requested_peak`): big enough that sampling (which takes the lock) is rare next
/// to the allocation's own cost, small enough that a peak made of large buffers is seen.
pub(crate) const PEAK_SAMPLE_SIZE: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Giving memory back
// ---------------------------------------------------------------------------------------------

/// How long, in milliseconds, a free pool or the kept empty arena stays unused before its memory
/// goes back to the OS when `SMALLARENA_PURGE_DELAY_MS` is unset (see `purge` for the policy, and
/// the README's "Memory given back" for the delays measured): mimalloc 3's default.
pub(crate) const PURGE_DELAY_DEFAULT_MS: usize = 1000;
/// Most free small pools one purge pass gives back (16 MiB; a 256 KiB medium pool counts as 16
/// of them), so the arena lock is not held while the
/// OS frees a whole burst's pages; a pass that stops there leaves the rest to the next slow path.
pub(crate) const PURGE_BATCH: usize = 1024;

// ---------------------------------------------------------------------------------------------
// Annotate mode (Valgrind)
// ---------------------------------------------------------------------------------------------

/// Extra bytes each small request takes in annotate mode, kept no-access after the block, so an
/// overrun of up to this many bytes lands in no-access memory and memcheck reports it: one
/// granule, the smallest amount that keeps the next block off the end of this one.
pub(crate) const REDZONE: usize = 16;
/// The quarantine's default budget in MiB when `SMALLARENA_QUARANTINE_MB` is unset: memcheck's
/// own `--freelist-vol` default (20 MB).
pub(crate) const QUARANTINE_DEFAULT_MB: usize = 20;

const _: () = assert!(REDZONE % GRANULE == 0 && REDZONE < MAX_SMALL);
// A quarantined block holds its two link words; the smallest annotated block is one byte plus
// the redzone, rounded up to a granule.
const _: () = assert!(GRANULE + REDZONE >= 2 * core::mem::size_of::<usize>());
