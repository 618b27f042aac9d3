//! Arenas: 1 MiB mappings, 1 MiB-aligned, cut into 64 pools of 16 KiB (*small* arenas), and
//! 4 MiB mappings, 4 MiB-aligned, cut into 16 medium pools of 256 KiB (*medium* arenas).
//!
//! Pool 0 of every arena holds the arena's header (only its first page is ever touched); the
//! others serve blocks. The two kinds ([`Kind`]) are managed alike, each with its own buckets and
//! its own address map ([`crate::arena_map`]), so a block's kind is known from the map that holds
//! it and a small free never looks at the medium map. All arena bookkeeping
//! lives behind one spin lock ([`crate::lock::LOCK`]) and is touched only on slow paths: taking a
//! pool for a heap, giving an empty pool back, mapping and unmapping arenas, and `stats()`.
//!
//! Like obmalloc, pools are taken from the *fullest* arena that still has a free pool (arenas sit
//! in buckets by their number of free pools, scanned from the fewest up), so lightly used arenas
//! drain and can be returned to the OS. A wholly empty arena is unmapped unless it is the only
//! wholly empty one: one is kept as hysteresis, so a loop that frees everything and starts again
//! does not map and unmap on every turn.
//!
//! Free pools keep their pages until they have been free for the purge delay ([`crate::purge`]).
//! Each arena keeps its free pools in a stack of pool numbers in its header (not linked through
//! the pools, whose pages may be dropped whole): they are in the order they were given back,
//! newest on top, each stamped with that time, and the purged ones form its bottom.

use crate::arena_map::Kind;
use crate::lock::Locked;
use crate::os;
use crate::pool::{ensure, Pool, Violation};
use crate::sync::{global, Ordering};
use crate::tunables::{POOL_SIZE, PURGE_BATCH, USABLE_POOLS};
use core::cell::UnsafeCell;
use core::ptr::{null, null_mut};

const _: () = assert!(Kind::Medium.usable_pools() == 15 && Kind::Small.usable_pools() == 63);

/// Pools per arena of the kind with the more of them (small): the size of an arena's free stack.
const MAX_POOLS_PER_ARENA: usize = {
    let (s, m) = (Kind::Small.usable_pools() + 1, Kind::Medium.usable_pools() + 1);
    if s > m {
        s
    } else {
        m
    }
};

/// An arena's header, in its first pool.
///
/// Invariants (all fields guarded by [`crate::lock::LOCK`]):
/// * `nfree` counts the free pools on the stack (`depth`) plus the untouched pools
///   `untouched..kind.usable_pools() + 1`.
/// * The arena is in its kind's `buckets[nfree]` when `nfree > 0`, and in no bucket when it is
///   full.
/// * Untouched pools have never been written since the mapping was made, so they read as zeros.
/// * `stack[..depth]` holds the numbers of the free pools (no heap holds them, no block of theirs
///   is live), pushed and popped at the top (`depth - 1`); `freed_at[i]` is the time (of
///   [`crate::purge::now_ms`]) `stack[i]` was pushed, written while purging is on, so it does not
///   decrease upwards.
/// * The pools `stack[..purged]` are purged: their pages were given back whole, they read as
///   zeros (header included, so a purged pool's kind is known from its arena only). The others
///   keep the header [`Pool::unassign`] left.
/// * `kind` is fixed when the arena is mapped.
/// * `generation` is the fork generation of the process that mapped the arena
///   ([`crate::fork`]); written once, before any pool of the arena is handed out, and only read
///   after that (without the lock: by the free of a live block, which the allocation ordered).
#[repr(C)]
pub struct Arena {
    generation: usize,
    kind: Kind,
    nfree: usize,
    depth: usize,
    purged: usize,
    untouched: usize,
    next: *mut Arena,
    prev: *mut Arena,
    all_next: *mut Arena,
    stack: [u8; MAX_POOLS_PER_ARENA],
    freed_at: [usize; MAX_POOLS_PER_ARENA],
}

// The free stack holds pool numbers in bytes, and `for_each_pool` a mask of them in a `u64`.
const _: () = assert!(MAX_POOLS_PER_ARENA <= 64);

const _: () = assert!(core::mem::size_of::<Arena>() <= POOL_SIZE);

/// The arenas of one kind.
struct Arenas {
    /// Arenas by number of free pools (only `0..=kind.usable_pools()` used).
    buckets: [*mut Arena; USABLE_POOLS + 1],
    all: *mut Arena,
    mapped: usize,
    peak: usize,
}

const NO_ARENAS: Arenas = Arenas {
    buckets: [null_mut(); USABLE_POOLS + 1],
    all: null_mut(),
    mapped: 0,
    peak: 0,
};

struct State {
    /// Indexed by `Kind as usize`.
    kinds: [Arenas; 2],
    /// Bytes mapped for arenas of both kinds, now and at peak.
    bytes_mapped: usize,
    bytes_peak: usize,
    /// Pools taken by heaps and not given back (statistics: when this reaches a new high, the
    /// peak of bytes requested is sampled).
    pools_out: usize,
    /// The highest `pools_out` so far.
    pools_out_peak: usize,
    /// Free pools whose pages went back to the OS since the process started.
    pools_purged: usize,
    /// Arenas (of both kinds) unmapped since the process started.
    arenas_unmapped: usize,
}

struct Global(UnsafeCell<State>);
// SAFETY: the state is only touched while holding LOCK.
unsafe impl Sync for Global {}

global! {
    static STATE: Global = Global(UnsafeCell::new(State {
    kinds: [NO_ARENAS, NO_ARENAS],
    bytes_mapped: 0,
    bytes_peak: 0,
    pools_out: 0,
    pools_out_peak: 0,
    pools_purged: 0,
    arenas_unmapped: 0,
}));
}

impl Locked {
    /// The arena state; the lock this proof stands for guards it.
    fn state(&mut self) -> &mut State {
        // SAFETY: holding a `Locked` means holding LOCK, and `&mut self` makes the borrow unique.
        unsafe { &mut *STATE.0.get() }
    }

    fn arenas(&mut self, kind: Kind) -> &mut Arenas {
        &mut self.state().kinds[kind as usize]
    }
}

/// The arena holding pool `p`, of kind `kind`.
fn arena_of(p: *mut Pool, kind: Kind) -> *mut Arena {
    p.cast::<u8>()
        .map_addr(|a| a & !(kind.arena_size() - 1))
        .cast()
}

/// The number of pool `p` (of kind `kind`) in its arena.
fn index_of(p: *mut Pool, kind: Kind) -> usize {
    (p.addr() & (kind.arena_size() - 1)) / kind.pool_size()
}

/// Pool number `i` of arena `a`, of kind `kind`.
fn pool_at(a: *mut Arena, kind: Kind, i: u8) -> *mut Pool {
    a.cast::<u8>()
        .wrapping_add(usize::from(i) * kind.pool_size())
        .cast()
}

/// The numbers of arena `a`'s purged pools, as a mask (bit `i` for pool `i`).
///
/// # Safety
/// `a` is a live arena and the lock is held.
unsafe fn purged_mask(a: *mut Arena) -> u64 {
    let mut mask = 0u64;
    // SAFETY: per the caller.
    unsafe {
        for k in 0..(*a).purged {
            mask |= 1 << (*a).stack[k];
        }
    }
    mask
}

/// Runs a due purge pass if the lock is free (never waits for it): for slow paths that do not
/// hold the lock. One load when no pass is pending.
#[inline]
pub(crate) fn purge_tick() {
    if crate::purge::maybe_due() {
        if let Some(mut locked) = Locked::try_take() {
            locked.purge_if_due();
        }
    }
}

/// Whether the arena block or pool at `p` was inherited across a share-mode fork
/// ([`crate::fork`]), and so must not be written by this process: its arena was mapped in an
/// earlier fork generation. A process that never forked in share mode answers with one load of a
/// global; otherwise the arena's header is read (never written).
///
/// # Safety
/// `p` points into a mapped arena.
#[inline(always)]
pub(crate) unsafe fn inherited(p: *const u8) -> bool {
    let g = crate::fork::generation();
    // SAFETY: per the caller.
    g != 0 && unsafe { older_than(p, g) }
}

/// Whether the arena holding `p` was mapped in a generation before `g`.
///
/// # Safety
/// `p` points into a mapped arena.
#[cold]
#[inline(never)]
unsafe fn older_than(p: *const u8, g: usize) -> bool {
    // Annotate mode hides arena headers from the program; this read is the allocator's own.
    let _quiet = crate::mode::quiet();
    // SAFETY: per the caller.
    unsafe { generation_of(p) < g }
}

/// The fork generation recorded in the header of the arena holding `p` ([`crate::fork`]).
///
/// # Safety
/// `p` points into a mapped arena.
#[inline(always)]
pub(crate) unsafe fn generation_of(p: *const u8) -> usize {
    // The arena's kind decides where its header is: the small map answers for small arenas.
    let kind = if crate::arena_map::contains(p.addr()) {
        Kind::Small
    } else {
        Kind::Medium
    };
    // SAFETY: per the caller the arena's header is mapped; `generation` is written once, before
    // any pool of the arena is handed out (see the type invariants), and never again.
    unsafe { (*arena_of(p.cast_mut().cast(), kind)).generation }
}

impl Locked {
    fn unlink(&mut self, a: *mut Arena, bucket: usize) {
        // SAFETY: `a` is a live arena in `buckets[bucket]`; links are guarded by the lock we hold.
        unsafe {
            let (prev, next) = ((*a).prev, (*a).next);
            if prev.is_null() {
                self.arenas((*a).kind).buckets[bucket] = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*a).next = null_mut();
            (*a).prev = null_mut();
        }
    }

    fn link(&mut self, a: *mut Arena, bucket: usize) {
        // SAFETY: `a` is a live arena; its kind is fixed.
        let kind = unsafe { (*a).kind };
        let head = self.arenas(kind).buckets[bucket];
        // SAFETY: `a` is a live arena in no bucket; links are guarded by the lock we hold.
        unsafe {
            (*a).prev = null_mut();
            (*a).next = head;
            if !head.is_null() {
                (*head).prev = a;
            }
        }
        self.arenas(kind).buckets[bucket] = a;
    }

    fn new_arena(&mut self, kind: Kind) -> *mut Arena {
        let size = kind.arena_size();
        // Carved from the address-space reservation when there is one (the preload's), else
        // mapped on its own.
        let base = match crate::reserve::take(self, kind) {
            Some(base) => base,
            None => os::map_aligned(size, size),
        };
        if base.is_null() {
            return null_mut();
        }
        // Published before any pool of it is handed out, so `raw::owns` finds every block.
        if !crate::arena_map::insert(self, kind, base) {
            if !crate::reserve::give_back(self, kind, base) {
                // SAFETY: the fresh mapping is ours alone and nothing points into it yet.
                unsafe { os::unmap(base, size) };
            }
            return null_mut();
        }
        // Annotate mode: the whole arena is allocator memory memcheck must not let the program
        // touch; blocks become accessible one by one as they are handed out.
        crate::mode::hide(base, size);
        let a = base.cast::<Arena>();
        let all = self.arenas(kind).all;
        let usable = kind.usable_pools();
        // SAFETY: `base` is a fresh, exclusively owned mapping big enough for the header.
        unsafe {
            a.write(Arena {
                generation: crate::fork::generation(),
                kind,
                nfree: usable,
                depth: 0,
                purged: 0,
                untouched: 1,
                next: null_mut(),
                prev: null_mut(),
                all_next: all,
                stack: [0; MAX_POOLS_PER_ARENA],
                freed_at: [0; MAX_POOLS_PER_ARENA],
            });
        }
        let st = self.state();
        st.bytes_mapped += size;
        st.bytes_peak = st.bytes_peak.max(st.bytes_mapped);
        let ar = self.arenas(kind);
        ar.all = a;
        ar.mapped += 1;
        ar.peak = ar.peak.max(ar.mapped);
        self.link(a, usable);
        a
    }

    /// Takes a free pool of `kind` (header written, serving nothing) from the fullest arena of
    /// that kind that has one, mapping a new arena if none has. Null when the OS refuses memory.
    pub(crate) fn take_pool(&mut self, kind: Kind) -> *mut Pool {
        self.purge_if_due();
        let usable = kind.usable_pools();
        let mut found = null_mut();
        let mut n = 1;
        while n <= usable {
            let a = self.arenas(kind).buckets[n];
            if !a.is_null() {
                found = a;
                break;
            }
            n += 1;
        }
        if found.is_null() {
            found = self.new_arena(kind);
            if found.is_null() {
                return null_mut();
            }
            n = usable;
        }
        let a = found;
        self.unlink(a, n);
        // SAFETY: `a` is a live arena with nfree == n > 0; its fields are guarded by our lock.
        unsafe {
            let pool;
            if (*a).depth > 0 {
                let top = (*a).depth - 1;
                (*a).depth = top;
                pool = pool_at(a, kind, (*a).stack[top]);
                if top < (*a).purged {
                    // Its pages went back whole: a new header, and its blocks read as zeros.
                    (*a).purged = top;
                    Pool::init_free(pool, true, kind == Kind::Medium);
                } else {
                    (*pool).next = null_mut();
                }
            } else {
                pool = a
                    .cast::<u8>()
                    .add((*a).untouched * kind.pool_size())
                    .cast::<Pool>();
                (*a).untouched += 1;
                Pool::init_free(pool, true, kind == Kind::Medium);
            }
            (*a).nfree = n - 1;
            if n > 1 {
                self.link(a, n - 1);
            }
            self.state().pools_out += 1;
            pool
        }
    }

    /// Gives an empty pool back to its arena; unmaps the arena if that leaves it wholly empty and
    /// another wholly empty arena is already kept (or the purge delay is 0). Stamps the pool with
    /// the time for the purge delay, and runs a purge pass if one is due ([`crate::purge`]).
    ///
    /// # Safety
    /// The pool must be empty (`used == 0`, remote word clear) and no longer linked from any heap.
    pub(crate) unsafe fn give_pool(&mut self, pool: *mut Pool) {
        // SAFETY: the pool and its arena are live; per the caller the pool has no live block,
        // so nobody else can reach it; the arena's fields are guarded by our lock.
        unsafe {
            let kind = Kind::of(pool);
            let usable = kind.usable_pools();
            let a = arena_of(pool, kind);
            (*pool).owner.store(null_mut(), Ordering::Relaxed);
            Pool::unassign(pool);
            let st = self.state();
            st.pools_out = st.pools_out.saturating_sub(1);
            let delay = crate::purge::delay(self);
            let now = if delay.is_some() {
                crate::purge::now_ms()
            } else {
                0
            };
            let top = (*a).depth;
            // A pool number is below MAX_POOLS_PER_ARENA (64).
            (*a).stack[top] = index_of(pool, kind) as u8;
            (*a).freed_at[top] = now;
            (*a).depth = top + 1;
            let n = (*a).nfree;
            if n > 0 {
                self.unlink(a, n);
            }
            (*a).nfree = n + 1;
            if n + 1 == usable && (delay == Some(0) || !self.arenas(kind).buckets[usable].is_null())
            {
                self.unmap(a);
            } else {
                self.link(a, n + 1);
                match delay {
                    None => {}
                    // At once: this pool (and any below it the OS refused before).
                    Some(0) => {
                        self.purge_bottom(a, usable, |_| true);
                    }
                    Some(d) if crate::purge::given_back(self, now, d) => self.purge_pass(now, d),
                    Some(_) => {}
                }
            }
        }
    }

    /// Unmaps a wholly empty arena that is in no bucket.
    unsafe fn unmap(&mut self, a: *mut Arena) {
        // SAFETY: `a` is in the all-list (guarded by our lock) and holds no live pool.
        unsafe {
            let kind = (*a).kind;
            let size = kind.arena_size();
            let st = self.state();
            st.bytes_mapped -= size;
            st.arenas_unmapped += 1;
            let st = self.arenas(kind);
            let mut link: *mut *mut Arena = &mut st.all;
            while !(*link).is_null() {
                if *link == a {
                    *link = (*a).all_next;
                    break;
                }
                link = &mut (**link).all_next;
            }
            st.mapped -= 1;
            // Withdrawn before the range goes back to the OS (and could become libc memory).
            crate::arena_map::remove(self, kind, a.cast());
            if !crate::reserve::give_back(self, kind, a.cast()) {
                os::unmap(a.cast(), size);
            }
        }
    }

    /// Calls `f` on every pool of every mapped arena (of both kinds) that has been set up at
    /// least once, but the purged ones (free, whose header reads as zeros: reading it would fault
    /// a page in); returns how many purged pools were skipped.
    pub(crate) fn for_each_pool(&mut self, mut f: impl FnMut(*mut Pool)) -> usize {
        let mut skipped = 0;
        for kind in [Kind::Small, Kind::Medium] {
            let mut a = self.arenas(kind).all;
            while !a.is_null() {
                // SAFETY: arenas in the all-list are live while we hold the lock.
                unsafe {
                    let purged = purged_mask(a);
                    skipped += purged.count_ones() as usize;
                    for i in 1..(*a).untouched {
                        if purged & (1 << i) == 0 {
                            f(a.cast::<u8>().add(i * kind.pool_size()).cast());
                        }
                    }
                    a = (*a).all_next;
                }
            }
        }
        skipped
    }

    /// Whether the heaps hold more pools than ever before; if so, the new high is remembered.
    pub(crate) fn pools_out_new_high(&mut self) -> bool {
        let st = self.state();
        let high = st.pools_out > st.pools_out_peak;
        if high {
            st.pools_out_peak = st.pools_out;
        }
        high
    }

    /// Returns the memory of free pools and empty arenas to the OS: unmaps every wholly empty
    /// arena (the one kept for hysteresis too), and purges every free pool of the other arenas
    /// (its pages dropped whole with `MADV_DONTNEED`, see [`os::discard`]), so a pool handed out again
    /// is fresh from the OS (its blocks read as zeros, which `alloc_zeroed` relies on). Pools
    /// already purged are skipped.
    pub(crate) fn release_free_memory(&mut self) {
        for kind in [Kind::Small, Kind::Medium] {
            let usable = kind.usable_pools();
            while !self.arenas(kind).buckets[usable].is_null() {
                let a = self.arenas(kind).buckets[usable];
                self.unlink(a, usable);
                // SAFETY: an arena in the last bucket has every usable pool free: no live block,
                // no heap holds a pool of it. It is in no bucket now.
                unsafe { self.unmap(a) };
            }
            let mut a = self.arenas(kind).all;
            while !a.is_null() {
                // SAFETY: arenas in the all-list are live while we hold the lock.
                unsafe {
                    self.purge_bottom(a, usable, |_| true);
                    a = (*a).all_next;
                }
            }
        }
        crate::purge::nothing_pending(self);
    }

    /// Purges the free pools of arena `a` from the bottom of its stack up, while `old(i)` says
    /// the pool at stack position `i` may go, at most `budget` of them: all their pages, header
    /// included (the arena keeps its free stack in its own header), with `madvise(MADV_DONTNEED)`
    /// ([`os::discard`]); pools next to each other in the arena go back in one call. If the OS refuses one, none of them counts as
    /// purged: their headers are rewritten as unassigned (some pages may have gone; they read as
    /// zeros, which is still a valid free pool). Returns how many went.
    ///
    /// # Safety
    /// `a` is a live arena (the lock is held).
    unsafe fn purge_bottom(
        &mut self,
        a: *mut Arena,
        budget: usize,
        mut old: impl FnMut(usize) -> bool,
    ) -> usize {
        // SAFETY: per the caller; the pools on the stack belong to no heap and hold no live
        // block, so their memory is ours to drop.
        unsafe {
            let kind = (*a).kind;
            let first = (*a).purged;
            let mut end = first;
            let mut mask = 0u64;
            while end < (*a).depth && end - first < budget && old(end) {
                mask |= 1 << (*a).stack[end];
                end += 1;
            }
            if mask == 0 {
                return 0;
            }
            // Runs of adjacent pools, lowest first.
            let mut ok = true;
            let mut rest = mask;
            while rest != 0 {
                let start = rest.trailing_zeros() as u8;
                let len = (rest >> start).trailing_ones() as usize;
                ok &= os::discard(pool_at(a, kind, start).cast(), len * kind.pool_size());
                rest &= !(((1u64 << len) - 1) << start);
            }
            if !ok {
                for k in first..end {
                    Pool::init_free(pool_at(a, kind, (*a).stack[k]), false, kind == Kind::Medium);
                }
                return 0;
            }
            (*a).purged = end;
            self.state().pools_purged += end - first;
            end - first
        }
    }

    /// Runs the purge pass if one is due ([`crate::purge::due`]).
    pub(crate) fn purge_if_due(&mut self) {
        if let Some((now, delay)) = crate::purge::due(self) {
            self.purge_pass(now, delay);
        }
    }

    /// The purge pass ([`crate::purge`]): at time `now`, purges every free pool (of both kinds)
    /// given back at least `delay` ms ago (at most [`PURGE_BATCH`] small pools' worth of bytes,
    /// 16 MiB, so the lock is not held for long: the rest go on the next slow path), unmaps every
    /// wholly empty arena whose newest free pool is that old, and schedules the next pass from
    /// the oldest pool left.
    fn purge_pass(&mut self, now: usize, delay: usize) {
        let mut oldest_left: Option<usize> = None;
        // In bytes: a medium pool counts as the 16 small pools it spans.
        let mut budget = PURGE_BATCH * POOL_SIZE;
        let mut stopped = false;
        for kind in [Kind::Small, Kind::Medium] {
            let (usable, pool_size) = (kind.usable_pools(), kind.pool_size());
            let mut a = self.arenas(kind).all;
            while !a.is_null() {
                // SAFETY: arenas in the all-list are live while we hold the lock; an arena is
                // unmapped only when wholly empty (in the last bucket), after we read its next
                // link.
                unsafe {
                    let next_arena = (*a).all_next;
                    let depth = (*a).depth;
                    let age = |i: usize| now.wrapping_sub((*a).freed_at[i]);
                    if (*a).nfree == usable && (depth == 0 || age(depth - 1) >= delay) {
                        self.unlink(a, usable);
                        self.unmap(a);
                        a = next_arena;
                        continue;
                    }
                    // Oldest first: the stamps do not decrease upwards.
                    budget -= pool_size
                        * self.purge_bottom(a, budget / pool_size, |i| age(i) >= delay);
                    stopped |= budget < pool_size;
                    let left = (*a).purged;
                    if left < depth {
                        let oldest = age(left);
                        oldest_left = Some(oldest_left.map_or(oldest, |o| o.max(oldest)));
                    }
                    a = next_arena;
                }
            }
        }
        crate::purge::passed(self, now, delay, oldest_left, stopped);
    }

    /// Free pools purged and arenas unmapped since the process started.
    pub(crate) fn returned(&mut self) -> (usize, usize) {
        let st = self.state();
        (st.pools_purged, st.arenas_unmapped)
    }

    /// A share-mode fork's child forgets every arena it inherited (see [`crate::fork`]): the
    /// arena lists start empty, so no pool of those arenas is handed out, given back, released or
    /// walked for statistics in this process, and nothing is written to them; they stay mapped
    /// (and published in the arena maps) for the inherited blocks still in use. Returns how many
    /// bytes of arenas (both kinds) were forgotten. Only the global state is written.
    #[cfg_attr(any(miri, loom), allow(dead_code))] // Fork handlers only (none under Miri or loom).
    pub(crate) fn forget_arenas_after_fork(&mut self) -> usize {
        let st = self.state();
        let forgotten = st.bytes_mapped;
        st.kinds = [NO_ARENAS, NO_ARENAS];
        st.bytes_mapped = 0;
        st.pools_out = 0;
        st.pools_out_peak = 0;
        forgotten
    }

    /// Arenas of `kind` mapped now and at peak.
    pub(crate) fn mapped(&mut self, kind: Kind) -> (usize, usize) {
        let ar = self.arenas(kind);
        (ar.mapped, ar.peak)
    }

    /// Bytes mapped for arenas of both kinds, now and at peak.
    pub(crate) fn bytes_mapped(&mut self) -> (usize, usize) {
        let st = self.state();
        (st.bytes_mapped, st.bytes_peak)
    }
}

impl Locked {
    /// The invariant checker's part for the arenas (see `heap::check`): the all-list is as long
    /// as the mapped count; every arena is in the arena map, counts its free pools right
    /// (`nfree` is its free-stack depth plus its untouched pools), and is in the bucket of its
    /// count exactly when it has a free pool; every bucket holds only arenas of its count, linked
    /// both ways; every free pool is a set-up pool of its arena, on its stack once, stamped no
    /// earlier than the pool below it, and (unless purged) serves nothing and belongs to no heap.
    pub(crate) fn check_arenas(&mut self) -> Result<(), Violation> {
        self.check_arenas_of(Kind::Small)?;
        self.check_arenas_of(Kind::Medium)
    }

    /// [`Locked::check_arenas`] for the arenas of one kind.
    fn check_arenas_of(&mut self, kind: Kind) -> Result<(), Violation> {
        let (usable, pools_per_arena) = (kind.usable_pools(), kind.usable_pools() + 1);
        let mut arenas = 0;
        let mut with_free = 0;
        let mut a = self.arenas(kind).all;
        while !a.is_null() {
            let at = a.cast::<u8>();
            ensure(
                arenas < self.arenas(kind).mapped,
                "arena list longer than the mapped count",
                at,
            )?;
            ensure(
                at.addr() % kind.arena_size() == 0
                    && match kind {
                        Kind::Small => crate::arena_map::contains(a.addr()),
                        Kind::Medium => crate::arena_map::contains_medium(a.addr()),
                    },
                "mapped arena missing from the arena map",
                at,
            )?;
            // SAFETY: arenas in the all-list are live while we hold the lock, and so are the
            // pools on their free lists (free pools belong to no heap: only lock holders touch
            // them).
            unsafe {
                let untouched = (*a).untouched;
                ensure((*a).kind == kind, "arena in the lists of the other kind", at)?;
                ensure(
                    (1..=pools_per_arena).contains(&untouched),
                    "arena untouched index out of range",
                    at,
                )?;
                let depth = (*a).depth;
                ensure(depth <= usable, "arena free stack too deep", at)?;
                ensure((*a).purged <= depth, "arena purged count beyond its free stack", at)?;
                let mut seen = 0u64;
                for k in 0..depth {
                    let index = usize::from((*a).stack[k]);
                    let pool = pool_at(a, kind, (*a).stack[k]);
                    let p = pool.cast::<u8>();
                    ensure(
                        index >= 1 && index < untouched,
                        "free pool not a set-up pool of its arena",
                        p,
                    )?;
                    ensure(seen & (1 << index) == 0, "pool twice on its arena's free stack", p)?;
                    seen |= 1 << index;
                    if k > 0 {
                        ensure(
                            (*a).freed_at[k].wrapping_sub((*a).freed_at[k - 1]) <= usize::MAX / 2,
                            "arena free stack stamps decrease upwards",
                            p,
                        )?;
                    }
                    // A purged pool's header reads as zeros (and reading it would fault a page
                    // in): only the others are looked at.
                    if k >= (*a).purged {
                        ensure(
                            (*pool).owner.load(Ordering::Relaxed).is_null(),
                            "free pool owned by a heap",
                            p,
                        )?;
                        ensure(Kind::of(pool) == kind, "free pool of the other kind", p)?;
                        Pool::check_unassigned(pool)?;
                    }
                }
                let free = depth;
                ensure(
                    (*a).nfree == free + (pools_per_arena - untouched),
                    "arena free count differs from its free and untouched pools",
                    at,
                )?;
                if (*a).nfree > 0 {
                    with_free += 1;
                }
                a = (*a).all_next;
            }
            arenas += 1;
        }
        let st = self.arenas(kind);
        ensure(arenas == st.mapped, "arena list shorter than the mapped count", null())?;
        ensure(st.buckets[0].is_null(), "a full arena is in a bucket", st.buckets[0].cast())?;
        let mut bucketed = 0;
        for (n, &head) in st.buckets.iter().enumerate() {
            let mut prev = null_mut::<Arena>();
            let mut a = head;
            while !a.is_null() {
                let at = a.cast::<u8>();
                ensure(bucketed < arenas, "arena bucket list has a cycle", at)?;
                // SAFETY: as above: arenas in buckets are live, guarded by our lock.
                unsafe {
                    ensure((*a).nfree == n, "arena in the bucket of another count", at)?;
                    ensure((*a).prev == prev, "arena bucket links not symmetric", at)?;
                    prev = a;
                    a = (*a).next;
                }
                bucketed += 1;
            }
        }
        ensure(
            bucketed == with_free,
            "arenas with a free pool and bucketed arenas differ",
            null(),
        )
    }
}
