//! The arena map: which addresses belong to the arena, a lock-free bitmap over arena addresses
//! (CPython's `arena_map_*`, mimalloc's segment map).
//!
//! `free(p)` in the `LD_PRELOAD` library ([`crate::raw`]) gets no size and no layout, so it must
//! find out, in constant time and without any lock, whether `p` lies in one of our arenas (then
//! its pool header tells the size class) or came from libc. Arenas are 1 MiB-aligned mappings, so
//! a pointer's arena is named by its address bits above bit 20 (its *slot*); this map keeps one
//! bit per possible slot in a single flat array, so a lookup is a shift, a bounds compare, one
//! load and a bit test (the radix map CPython 3.10+ uses for obmalloc's `address_in_range`,
//! flattened to one level).
//!
//! On 64-bit targets the map covers addresses below 2^48 ([`ADDRESS_BITS`]): 2^28 slots, a
//! 32 MiB bitmap in `.bss`. That is address space, not memory: the kernel backs a page of it
//! only once a bit in it is set, and one 4 KiB page covers 32 GiB of addresses, so the one or
//! two pages around the `mmap` area are all a process ever touches (the same cost as the leaves
//! of a two-level map, without the second load and its null test). On 32-bit targets it covers
//! the whole 4 GiB address space in 4096 bits (512 bytes).
//!
//! On 64-bit targets, addresses at or above 2^48 (none on x86-64 or AArch64 Linux with 4-level
//! paging, nor with 5-level paging for any mapping made without an explicit high hint) cannot
//! be published: mapping such an arena fails as if the OS had refused memory, and a lookup of
//! such an address answers "not ours". Null and every address in the first 1 MiB answer "not
//! ours" too (no arena can be mapped at address 0), so a caller needs no separate null test.
//!
//! Publication is ordered with the arena's life: [`insert`] runs under the arena lock when an
//! arena has been mapped, before any pool of it is handed out, and [`remove`] runs under the lock
//! before the arena is unmapped. A pointer the caller obtained from the arena was therefore
//! handed out after its bit was set (the lock and the allocation's own synchronisation order the
//! two), and the bit stays set while the block is live. A pointer from libc can never lie in a
//! live arena; its bit may only be set if the kernel later gives that address range to one of our
//! arenas, which requires libc to have unmapped it first, i.e. the libc block is dead.
//!
//! Under loom (whose atomics cannot fill 32 MiB) the same protocol runs on a small window of
//! slots, those of loom's one arena reservation; a lookup outside it answers "not ours" (see
//! [`Map`]).

use crate::lock::Locked;
use crate::sync::{AtomicUsize, Ordering};
use crate::tunables::ARENA_SIZE;

/// log2 of the arena size: the address bits below this are the offset inside an arena.
const ARENA_BITS: u32 = ARENA_SIZE.trailing_zeros();
/// Address bits covered by the map: 48 on 64-bit targets (the user address space of 4-level
/// paging), all of them (32) on 32-bit targets.
/// Under Miri, 36 on 64-bit targets (64 GiB, far above what Miri's addresses reach in the
/// tests): Miri tracks every byte of a static, and a 32 MiB one makes each test process take
/// minutes and gigabytes.
const ADDRESS_BITS: u32 = if usize::BITS < 48 {
    usize::BITS
} else if cfg!(miri) {
    36
} else {
    48
};
/// Arena slots covered: one per `ARENA_SIZE` of the covered address space.
const SLOTS: usize = 1 << (ADDRESS_BITS - ARENA_BITS);
/// Bits in a bitmap word.
const WORD_BITS: usize = usize::BITS as usize;
/// Words in the map.
const WORDS: usize = SLOTS / WORD_BITS;

#[cfg(all(target_pointer_width = "64", not(miri)))]
const _: () = assert!(SLOTS == 1 << 28 && WORDS * 8 == 32 << 20);
#[cfg(target_pointer_width = "32")]
const _: () = assert!(SLOTS == 4096 && WORDS * 4 == 512);

/// The bitmap.
///
/// Invariants:
/// * Bit `s % WORD_BITS` of word `s / WORD_BITS` is set exactly while an arena is mapped at
///   address `s << ARENA_BITS` and published (between [`insert`] and [`remove`]).
/// * Bits are written only under the arena lock (with atomic RMWs, since readers load the words
///   concurrently); they are read from any thread without the lock.
#[cfg(not(loom))]
#[repr(C)]
struct Map([AtomicUsize; WORDS]);

#[cfg(not(loom))]
impl Map {
    /// The word holding slot `s`'s bit, and the bit, for a lookup.
    #[inline(always)]
    fn bit(&self, s: usize) -> Option<(&AtomicUsize, usize)> {
        // `s < SLOTS` for every slot `slot` returns: no bounds check is compiled in.
        Some((self.0.get(s / WORD_BITS)?, 1 << (s % WORD_BITS)))
    }

    /// The same, to set or clear the bit (under the lock).
    fn bit_mut(&self, s: usize, _locked: &mut Locked) -> Option<(&AtomicUsize, usize)> {
        self.bit(s)
    }
}

#[cfg(not(loom))]
crate::sync::global! {
    /// The map: all zeros in `.bss` (32 MiB of address space on 64-bit targets, see the module
    /// documentation for why that costs a page or two of memory).
    static MAP: Map = Map([const { AtomicUsize::new(0) }; WORDS]);
}

/// Slots of the loom stand-in: its arenas come from one 256 MiB reservation (`os.rs`).
#[cfg(loom)]
const LOOM_SLOTS: usize = 256;

/// The loom stand-in: bits for the `LOOM_SLOTS` slots from the first one ever published
/// (`first - 1`, set once under the lock with `Release`; 0 before). Every lookup loads `first`,
/// and only a slot in that range loads a word, so the atomics a lookup touches do not depend on
/// where loom's thread stacks happen to be (a model must be deterministic).
#[cfg(loom)]
struct Map {
    first: AtomicUsize,
    words: [AtomicUsize; LOOM_SLOTS / WORD_BITS],
}

#[cfg(loom)]
impl Map {
    fn new() -> Map {
        Map {
            first: AtomicUsize::new(0),
            words: core::array::from_fn(|_| AtomicUsize::new(0)),
        }
    }

    fn at(&self, first: usize, s: usize) -> Option<(&AtomicUsize, usize)> {
        let r = s.wrapping_sub(first.checked_sub(1)?);
        (r < LOOM_SLOTS).then(|| (&self.words[r / WORD_BITS], 1 << (r % WORD_BITS)))
    }

    fn bit(&self, s: usize) -> Option<(&AtomicUsize, usize)> {
        self.at(self.first.load(Ordering::Acquire), s)
    }

    fn bit_mut(&self, s: usize, _locked: &mut Locked) -> Option<(&AtomicUsize, usize)> {
        let mut first = self.first.load(Ordering::Relaxed);
        if first == 0 {
            // Only lock holders write `first`, and we hold the lock.
            first = s + 1;
            self.first.store(first, Ordering::Release);
        }
        self.at(first, s)
    }
}

#[cfg(loom)]
crate::sync::global! {
    static MAP: Map = Map::new();
}

/// The arena slot of `addr`, or `None` above the covered range.
#[inline(always)]
fn slot(addr: usize) -> Option<usize> {
    // On 32-bit targets every address is covered and the compare folds away.
    let s = addr >> ARENA_BITS;
    (s < SLOTS).then_some(s)
}

/// Whether `addr` lies inside a published arena. Lock-free: a load and a bit test.
#[inline(always)]
pub(crate) fn contains(addr: usize) -> bool {
    let Some(s) = slot(addr) else {
        return false;
    };
    let Some((word, bit)) = MAP.bit(s) else {
        return false;
    };
    // Relaxed suffices: a block's bit was set before the block was handed out, and the caller's
    // possession of the block orders that store before this load.
    word.load(Ordering::Relaxed) & bit != 0
}

/// Publishes the arena mapped at `base` (1 MiB-aligned). False when it cannot be published (the
/// address is beyond the map); the caller must then not use it.
pub(crate) fn insert(locked: &mut Locked, base: *mut u8) -> bool {
    debug_assert_eq!(base.addr() & (ARENA_SIZE - 1), 0);
    let Some(s) = slot(base.addr()) else {
        return false;
    };
    let Some((word, bit)) = MAP.bit_mut(s, locked) else {
        return false;
    };
    word.fetch_or(bit, Ordering::Release);
    true
}

/// Withdraws the arena at `base` before it is unmapped. It must have been [`insert`]ed.
pub(crate) fn remove(locked: &mut Locked, base: *mut u8) {
    let Some(s) = slot(base.addr()) else {
        return;
    };
    if let Some((word, bit)) = MAP.bit_mut(s, locked) {
        word.fetch_and(!bit, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A fake arena address far from anything the OS or Miri hands out, mid-word in the map:
    /// the map only does arithmetic on it, never dereferences it. 64-bit: bit 46 set.
    #[cfg(all(target_pointer_width = "64", not(miri)))]
    const FAKE: usize = 0x4000_0000_0000 + 77 * ARENA_SIZE;
    /// Under Miri (64-bit), in the 36-bit map but beyond any address Miri hands the tests.
    #[cfg(all(target_pointer_width = "64", miri))]
    const FAKE: usize = 0x8_0000_0000 + 77 * ARENA_SIZE;
    /// 32-bit: the gap Linux keeps between the main thread's stack and the top of the `mmap`
    /// area (at least 128 MiB below the stack top, itself at most 8 MiB below 4 GiB on a 64-bit
    /// kernel), or kernel space on a 32-bit kernel with the usual 3 GiB split.
    #[cfg(target_pointer_width = "32")]
    const FAKE: usize = 0xFA00_0000 + 77 * ARENA_SIZE;

    /// The first address above the map, if the address space has one (64-bit targets).
    const BEYOND: Option<usize> = 1usize.checked_shl(ADDRESS_BITS);

    fn fake(n: usize) -> *mut u8 {
        core::ptr::without_provenance_mut(FAKE + n * ARENA_SIZE)
    }

    #[test]
    fn slots_cover_the_address_space() {
        assert_eq!(slot(0), Some(0));
        assert_eq!(slot(ARENA_SIZE - 1), Some(0));
        assert_eq!(slot(ARENA_SIZE), Some(1));
        assert_eq!(slot(ARENA_SIZE * WORD_BITS), Some(WORD_BITS));
        // The highest covered address is in the last slot, the last bit of the last word.
        let top = usize::MAX >> (usize::BITS - ADDRESS_BITS);
        assert_eq!(slot(top), Some(SLOTS - 1));
        assert_eq!(slot(top - (ARENA_SIZE - 1)), Some(SLOTS - 1));
        assert_eq!((SLOTS - 1) / WORD_BITS, WORDS - 1);
        match BEYOND {
            Some(beyond) => {
                assert_eq!(ADDRESS_BITS, if cfg!(miri) { 36 } else { 48 });
                assert_eq!(slot(beyond), None);
                assert_eq!(slot(usize::MAX), None);
            }
            // 32-bit: every address is covered, the top one included.
            None => {
                assert_eq!(ADDRESS_BITS, usize::BITS);
                assert_eq!(slot(usize::MAX), Some(SLOTS - 1));
            }
        }
        // Null and the first arena's worth of addresses are never ours.
        assert!(!contains(0));
        assert!(!contains(ARENA_SIZE - 1));
    }

    #[test]
    fn insert_and_remove_a_fake_arena() {
        // Two neighbouring slots, to check the bits do not bleed into each other.
        assert!(!contains(FAKE));
        {
            let mut l = Locked::take();
            assert!(insert(&mut l, fake(0)));
            assert!(insert(&mut l, fake(2)));
        }
        for (a, owned) in [
            (FAKE - 1, false),
            (FAKE, true),
            (FAKE + ARENA_SIZE / 2, true),
            (FAKE + ARENA_SIZE - 1, true),
            (FAKE + ARENA_SIZE, false),
            (FAKE + 2 * ARENA_SIZE, true),
            (FAKE + 3 * ARENA_SIZE, false),
        ] {
            assert_eq!(contains(a), owned, "{a:#x}");
        }
        {
            let mut l = Locked::take();
            remove(&mut l, fake(0));
        }
        assert!(!contains(FAKE));
        assert!(contains(FAKE + 2 * ARENA_SIZE));
        {
            let mut l = Locked::take();
            remove(&mut l, fake(2));
            // Beyond the map (64-bit): refused, and never reported as ours.
            if let Some(beyond) = BEYOND {
                assert!(!insert(&mut l, core::ptr::without_provenance_mut(beyond)));
            }
        }
        assert!(!contains(FAKE + 2 * ARENA_SIZE));
        if let Some(beyond) = BEYOND {
            assert!(!contains(beyond));
        }
    }

    #[test]
    fn lookups_race_with_publication() {
        // Readers spin on a slot while the main thread publishes and withdraws it: every answer
        // is a clean yes or no (Miri checks the accesses for data races).
        let rounds = if cfg!(miri) { 20 } else { 2000 };
        let a = FAKE + 5 * ARENA_SIZE;
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let mut seen = 0usize;
                    for _ in 0..rounds {
                        seen += usize::from(contains(a + 123));
                    }
                    seen
                });
            }
            for _ in 0..rounds {
                let mut l = Locked::take();
                assert!(insert(&mut l, core::ptr::without_provenance_mut(a)));
                drop(l);
                assert!(contains(a));
                let mut l = Locked::take();
                remove(&mut l, core::ptr::without_provenance_mut(a));
            }
        });
        assert!(!contains(a));
    }
}
