//! Arenas: 1 MiB mappings, 1 MiB-aligned, cut into 64 pools of 16 KiB.
//!
//! Pool 0 of every arena holds the arena's header; pools 1..=63 serve blocks. All arena bookkeeping
//! lives behind one spin lock ([`crate::lock::LOCK`]) and is touched only on slow paths: taking a
//! pool for a heap, giving an empty pool back, mapping and unmapping arenas, and `stats()`.
//!
//! Like obmalloc, pools are taken from the *fullest* arena that still has a free pool (arenas sit
//! in buckets by their number of free pools, scanned from the fewest up), so lightly used arenas
//! drain and can be returned to the OS. A wholly empty arena is unmapped unless it is the only
//! wholly empty one: one is kept as hysteresis, so a loop that frees everything and starts again
//! does not map and unmap on every turn.

use crate::lock::Locked;
use crate::os;
use crate::pool::{ensure, Pool, Violation};
use crate::sync::{global, Ordering};
use crate::tunables::{ARENA_SIZE, POOLS_PER_ARENA, POOL_SIZE, USABLE_POOLS};
use core::cell::UnsafeCell;
use core::ptr::{null, null_mut};

/// An arena's header, in its first pool.
///
/// Invariants (all fields guarded by [`crate::lock::LOCK`]):
/// * `nfree` counts pools in `free_pools` plus the untouched pools `untouched..POOLS_PER_ARENA`.
/// * The arena is in `buckets[nfree]` when `nfree > 0`, and in no bucket when it is full.
/// * Untouched pools have never been written since the mapping was made, so they read as zeros.
#[repr(C)]
pub struct Arena {
    nfree: usize,
    free_pools: *mut Pool,
    untouched: usize,
    next: *mut Arena,
    prev: *mut Arena,
    all_next: *mut Arena,
}

const _: () = assert!(core::mem::size_of::<Arena>() <= POOL_SIZE);

struct State {
    buckets: [*mut Arena; USABLE_POOLS + 1],
    all: *mut Arena,
    mapped: usize,
    peak: usize,
    /// Pools taken by heaps and not given back (statistics: when this reaches a new high, the
    /// peak of bytes requested is sampled).
    pools_out: usize,
    /// The highest `pools_out` so far.
    pools_out_peak: usize,
}

struct Global(UnsafeCell<State>);
// SAFETY: the state is only touched while holding LOCK.
unsafe impl Sync for Global {}

global! {
    static STATE: Global = Global(UnsafeCell::new(State {
    buckets: [null_mut(); USABLE_POOLS + 1],
    all: null_mut(),
    mapped: 0,
    peak: 0,
    pools_out: 0,
    pools_out_peak: 0,
}));
}

impl Locked {
    /// The arena state; the lock this proof stands for guards it.
    fn state(&mut self) -> &mut State {
        // SAFETY: holding a `Locked` means holding LOCK, and `&mut self` makes the borrow unique.
        unsafe { &mut *STATE.0.get() }
    }
}

/// The arena holding pool `p`.
fn arena_of(p: *mut Pool) -> *mut Arena {
    p.cast::<u8>().map_addr(|a| a & !(ARENA_SIZE - 1)).cast()
}

impl Locked {
    fn unlink(&mut self, a: *mut Arena, bucket: usize) {
        // SAFETY: `a` is a live arena in `buckets[bucket]`; links are guarded by the lock we hold.
        unsafe {
            let (prev, next) = ((*a).prev, (*a).next);
            if prev.is_null() {
                self.state().buckets[bucket] = next;
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
        let head = self.state().buckets[bucket];
        // SAFETY: `a` is a live arena in no bucket; links are guarded by the lock we hold.
        unsafe {
            (*a).prev = null_mut();
            (*a).next = head;
            if !head.is_null() {
                (*head).prev = a;
            }
        }
        self.state().buckets[bucket] = a;
    }

    fn new_arena(&mut self) -> *mut Arena {
        let base = os::map_aligned(ARENA_SIZE, ARENA_SIZE);
        if base.is_null() {
            return null_mut();
        }
        // Published before any pool of it is handed out, so `raw::owns` finds every block.
        if !crate::arena_map::insert(self, base) {
            // SAFETY: the fresh mapping is ours alone and nothing points into it yet.
            unsafe { os::unmap(base, ARENA_SIZE) };
            return null_mut();
        }
        // Annotate mode: the whole arena is allocator memory memcheck must not let the program
        // touch; blocks become accessible one by one as they are handed out.
        crate::mode::hide(base, ARENA_SIZE);
        let a = base.cast::<Arena>();
        let all = self.state().all;
        // SAFETY: `base` is a fresh, exclusively owned mapping big enough for the header.
        unsafe {
            a.write(Arena {
                nfree: USABLE_POOLS,
                free_pools: null_mut(),
                untouched: 1,
                next: null_mut(),
                prev: null_mut(),
                all_next: all,
            });
        }
        let st = self.state();
        st.all = a;
        st.mapped += 1;
        st.peak = st.peak.max(st.mapped);
        self.link(a, USABLE_POOLS);
        a
    }

    /// Takes a free pool (header written, serving nothing) from the fullest arena that has one,
    /// mapping a new arena if none has. Null when the OS refuses memory.
    pub(crate) fn take_pool(&mut self) -> *mut Pool {
        let mut found = null_mut();
        let mut n = 1;
        while n <= USABLE_POOLS {
            let a = self.state().buckets[n];
            if !a.is_null() {
                found = a;
                break;
            }
            n += 1;
        }
        if found.is_null() {
            found = self.new_arena();
            if found.is_null() {
                return null_mut();
            }
            n = USABLE_POOLS;
        }
        let a = found;
        self.unlink(a, n);
        // SAFETY: `a` is a live arena with nfree == n > 0; its fields are guarded by our lock.
        unsafe {
            let pool;
            if !(*a).free_pools.is_null() {
                pool = (*a).free_pools;
                (*a).free_pools = (*pool).next;
                (*pool).next = null_mut();
            } else {
                pool = a
                    .cast::<u8>()
                    .add((*a).untouched * POOL_SIZE)
                    .cast::<Pool>();
                (*a).untouched += 1;
                Pool::init_free(pool, true);
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
    /// another wholly empty arena is already kept.
    ///
    /// # Safety
    /// The pool must be empty (`used == 0`, remote word clear) and no longer linked from any heap.
    pub(crate) unsafe fn give_pool(&mut self, pool: *mut Pool) {
        let a = arena_of(pool);
        // SAFETY: the pool and its arena are live; per the caller the pool has no live block,
        // so nobody else can reach it; the arena's fields are guarded by our lock.
        unsafe {
            (*pool).owner.store(null_mut(), Ordering::Relaxed);
            Pool::unassign(pool);
            let st = self.state();
            st.pools_out = st.pools_out.saturating_sub(1);
            (*pool).next = (*a).free_pools;
            (*a).free_pools = pool;
            let n = (*a).nfree;
            if n > 0 {
                self.unlink(a, n);
            }
            (*a).nfree = n + 1;
            if n + 1 == USABLE_POOLS && !self.state().buckets[USABLE_POOLS].is_null() {
                self.unmap(a);
            } else {
                self.link(a, n + 1);
            }
        }
    }

    /// Unmaps a wholly empty arena that is in no bucket.
    unsafe fn unmap(&mut self, a: *mut Arena) {
        let st = self.state();
        // SAFETY: `a` is in the all-list (guarded by our lock) and holds no live pool.
        unsafe {
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
            crate::arena_map::remove(self, a.cast());
            os::unmap(a.cast(), ARENA_SIZE);
        }
    }

    /// Calls `f` on every pool of every mapped arena that has been set up at least once.
    pub(crate) fn for_each_pool(&mut self, mut f: impl FnMut(*mut Pool)) {
        let mut a = self.state().all;
        while !a.is_null() {
            // SAFETY: arenas in the all-list are live while we hold the lock.
            unsafe {
                for i in 1..(*a).untouched {
                    f(a.cast::<u8>().add(i * POOL_SIZE).cast());
                }
                a = (*a).all_next;
            }
        }
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
    /// arena (the one kept for hysteresis too), and drops the pages of every free pool of the
    /// other arenas (`MADV_DONTNEED`, see [`crate::os::discard`]), whose header is then rewritten
    /// as a fresh one, so a pool handed out again counts as fresh from the OS (its blocks read as
    /// zeros, which `alloc_zeroed` relies on). Pools already given back since they were last used
    /// (marked fresh) are skipped.
    pub(crate) fn release_free_memory(&mut self) {
        while !self.state().buckets[USABLE_POOLS].is_null() {
            let a = self.state().buckets[USABLE_POOLS];
            self.unlink(a, USABLE_POOLS);
            // SAFETY: an arena in the last bucket has every usable pool free: no live block, no
            // heap holds a pool of it. It is in no bucket now.
            unsafe { self.unmap(a) };
        }
        let page = crate::os::page_size_or_zero();
        if page == 0 || page > POOL_SIZE || POOL_SIZE % page != 0 {
            return;
        }
        let mut a = self.state().all;
        while !a.is_null() {
            // SAFETY: arenas in the all-list are live while we hold the lock; pools on an arena's
            // free list belong to no heap and hold no live block, so their memory is ours to drop;
            // the header is rewritten (with its list link) before the lock is released.
            unsafe {
                let mut pool = (*a).free_pools;
                while !pool.is_null() {
                    let next = (*pool).next;
                    if !(*pool).fresh && crate::os::discard(pool.cast(), POOL_SIZE) {
                        Pool::init_free(pool, true);
                        (*pool).next = next;
                    }
                    pool = next;
                }
                a = (*a).all_next;
            }
        }
    }

    /// Arenas mapped now and at peak.
    pub(crate) fn mapped(&mut self) -> (usize, usize) {
        let st = self.state();
        (st.mapped, st.peak)
    }
}

impl Locked {
    /// The invariant checker's part for the arenas (see `heap::check`): the all-list is as long
    /// as the mapped count; every arena is in the arena map, counts its free pools right
    /// (`nfree` is its free-list length plus its untouched pools), and is in the bucket of its
    /// count exactly when it has a free pool; every bucket holds only arenas of its count, linked
    /// both ways; every free pool lies in its arena, serves nothing and belongs to no heap.
    pub(crate) fn check_arenas(&mut self) -> Result<(), Violation> {
        let mut arenas = 0;
        let mut with_free = 0;
        let mut a = self.state().all;
        while !a.is_null() {
            let at = a.cast::<u8>();
            ensure(arenas < self.state().mapped, "arena list longer than the mapped count", at)?;
            ensure(
                crate::arena_map::contains(a.addr()),
                "mapped arena missing from the arena map",
                at,
            )?;
            // SAFETY: arenas in the all-list are live while we hold the lock, and so are the
            // pools on their free lists (free pools belong to no heap: only lock holders touch
            // them).
            unsafe {
                let untouched = (*a).untouched;
                ensure(
                    (1..=POOLS_PER_ARENA).contains(&untouched),
                    "arena untouched index out of range",
                    at,
                )?;
                let mut free = 0;
                let mut pool = (*a).free_pools;
                while !pool.is_null() {
                    let p = pool.cast::<u8>();
                    ensure(free < USABLE_POOLS, "arena free-pool list has a cycle", at)?;
                    ensure(arena_of(pool) == a, "free pool outside its arena", p)?;
                    let index = (p.addr() - at.addr()) / POOL_SIZE;
                    ensure(
                        p.addr() % POOL_SIZE == 0 && index >= 1 && index < untouched,
                        "free pool not a set-up pool of its arena",
                        p,
                    )?;
                    ensure(
                        (*pool).owner.load(Ordering::Relaxed).is_null(),
                        "free pool owned by a heap",
                        p,
                    )?;
                    Pool::check_unassigned(pool)?;
                    free += 1;
                    pool = (*pool).next;
                }
                ensure(
                    (*a).nfree == free + (POOLS_PER_ARENA - untouched),
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
        let st = self.state();
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
