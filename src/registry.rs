//! Which addresses belong to the arena: a lock-free radix map over arena addresses.
//!
//! `free(p)` in the `LD_PRELOAD` library ([`crate::raw`]) gets no size and no layout, so it must
//! find out, in constant time and without any lock, whether `p` lies in one of our arenas (then
//! its pool header tells the size class) or came from libc. Arenas are 1 MiB-aligned mappings, so
//! a pointer's arena is named by its address bits above bit 20; this map keeps one bit per
//! possible arena, in two levels, the scheme CPython 3.10+ uses for obmalloc's `address_in_range`.
//!
//! On 64-bit targets the map covers addresses below 2^48 ([`ADDRESS_BITS`]):
//!
//! * level 1, [`ROOT`]: 8192 pointers indexed by address bits 47..35;
//! * level 2, a [`Leaf`]: a 4 KiB bitmap of 32768 bits indexed by bits 34..20.
//!
//! On 32-bit targets it covers the whole 4 GiB address space: the root has a single entry and
//! its one leaf holds 4096 bits (512 bytes), indexed by bits 31..20.
//!
//! Leaves are mapped lazily from the OS (never through an allocator, one page each) the first
//! time an arena in their span is published, and never freed, so a lookup can always read a leaf
//! it found. On 64-bit targets, addresses at or above 2^48 (none on x86-64 or AArch64 Linux with
//! 4-level paging, which is every mapping made without an explicit high hint) cannot be
//! published: mapping such an arena fails as if the OS had refused memory, and a lookup of such
//! an address answers "not ours".
//!
//! Publication is ordered with the arena's life: [`insert`] runs under the arena lock when an
//! arena has been mapped, before any pool of it is handed out, and [`remove`] runs under the lock
//! before the arena is unmapped. A pointer the caller obtained from the arena was therefore
//! handed out after its bit was set (the lock and the allocation's own synchronisation order the
//! two), and the bit stays set while the block is live. A pointer from libc can never lie in a
//! live arena; its bit may only be set if the kernel later gives that address range to one of our
//! arenas, which requires libc to have unmapped it first, i.e. the libc block is dead.

use crate::arena::{Locked, ARENA_SIZE};
use crate::os;
use crate::sync::{AtomicPtr, AtomicUsize, Ordering};
use core::ptr::null_mut;

/// log2 of the arena size: the address bits below this are the offset inside an arena.
const ARENA_BITS: u32 = ARENA_SIZE.trailing_zeros();
/// Address bits covered by the map: 48 on 64-bit targets (the user address space of 4-level
/// paging), all of them (32) on 32-bit targets.
const ADDRESS_BITS: u32 = if usize::BITS < 48 { usize::BITS } else { 48 };
/// log2 of the arenas one leaf covers: a page of bits (2^15), or the whole address space when
/// that is smaller (2^12 arenas on 32-bit targets).
const LEAF_BITS: u32 = if ADDRESS_BITS - ARENA_BITS < 15 {
    ADDRESS_BITS - ARENA_BITS
} else {
    15
};
/// Arenas covered by one leaf: one bit each.
const LEAF_ARENAS: usize = 1 << LEAF_BITS;
/// Size of a leaf's bitmap.
const LEAF_BYTES: usize = LEAF_ARENAS / 8;
/// Bytes mapped for a leaf: one page (of the smallest page size; the OS rounds up).
const LEAF_MAP: usize = 4096;
/// Address bits a leaf covers (bits `ARENA_BITS..LEAF_SHIFT`).
const LEAF_SHIFT: u32 = ARENA_BITS + LEAF_BITS;
/// Entries of the root (bits `LEAF_SHIFT..ADDRESS_BITS`).
const ROOT_LEN: usize = 1 << (ADDRESS_BITS - LEAF_SHIFT);
/// Bits in a bitmap word.
const WORD_BITS: usize = usize::BITS as usize;
/// Words in a leaf.
const LEAF_WORDS: usize = LEAF_ARENAS / WORD_BITS;

const _: () = assert!(core::mem::size_of::<Leaf>() == LEAF_BYTES && LEAF_BYTES <= LEAF_MAP);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(LEAF_SHIFT == 35 && ROOT_LEN == 8192 && LEAF_BYTES == 4096);
#[cfg(target_pointer_width = "32")]
const _: () = assert!(LEAF_SHIFT == 32 && ROOT_LEN == 1 && LEAF_BYTES == 512);

/// A second-level node: one bit per 1 MiB arena slot of a 32 GiB span (64-bit targets) or of the
/// whole 4 GiB address space (32-bit targets).
///
/// Invariants:
/// * Bit `i` of the leaf for root index `r` is set exactly while an arena is mapped at address
///   `(r << LEAF_SHIFT) | (i << ARENA_BITS)` and published (between [`insert`] and [`remove`]).
/// * Bits are written only under the arena lock (with atomic RMWs, since readers load the words
///   concurrently); they are read from any thread without the lock.
/// * A leaf lives at the start of its own zero-initialised page mapping that is never unmapped.
#[repr(C)]
struct Leaf {
    words: [AtomicUsize; LEAF_WORDS],
}

/// The first level.
///
/// Invariants:
/// * Each entry is null or points to a [`Leaf`]; an entry goes from null to a leaf once, under
///   the arena lock (with `Release`), and never changes again.
struct Root([AtomicPtr<Leaf>; ROOT_LEN]);

impl Root {
    #[cfg(not(loom))]
    const fn new() -> Root {
        Root([const { AtomicPtr::new(null_mut()) }; ROOT_LEN])
    }

    #[cfg(loom)]
    fn new() -> Root {
        Root(core::array::from_fn(|_| AtomicPtr::new(null_mut())))
    }
}

crate::sync::global! {
    /// The root of the map (64 KiB of zeros in `.bss` on 64-bit targets, one pointer on 32-bit).
    static ROOT: Root = Root::new();
}

/// Splits an address into (root index, word index, bit mask), or `None` above the covered range.
#[inline(always)]
fn split(addr: usize) -> Option<(usize, usize, usize)> {
    // `checked_shr` because ADDRESS_BITS and LEAF_SHIFT are the full width on 32-bit targets
    // (every address is covered and the root index is always 0), where `>>` would overflow;
    // with a constant shift it compiles to a plain shift, or to nothing.
    if addr.checked_shr(ADDRESS_BITS).is_some_and(|high| high != 0) {
        return None;
    }
    let r = addr.checked_shr(LEAF_SHIFT).unwrap_or(0);
    let i = (addr >> ARENA_BITS) & (LEAF_ARENAS - 1);
    Some((r, i / WORD_BITS, 1 << (i % WORD_BITS)))
}

/// Whether `addr` lies inside a published arena. Lock-free: two loads and a bit test.
#[inline]
pub(crate) fn contains(addr: usize) -> bool {
    let Some((r, w, bit)) = split(addr) else {
        return false;
    };
    let leaf = ROOT.0[r].load(Ordering::Acquire);
    if leaf.is_null() {
        return false;
    }
    // SAFETY: non-null root entries point to leaves that are never unmapped (type invariants);
    // the Acquire load above makes the leaf's initial zeros visible.
    let words = unsafe { &(*leaf).words };
    // Relaxed suffices: a block's bit was set before the block was handed out, and the caller's
    // possession of the block orders that store before this load.
    words[w].load(Ordering::Relaxed) & bit != 0
}

/// Publishes the arena mapped at `base` (1 MiB-aligned). False when it cannot be published (the
/// address is beyond the map or a leaf could not be mapped); the caller must then not use it.
pub(crate) fn insert(_locked: &mut Locked, base: *mut u8) -> bool {
    debug_assert_eq!(base.addr() & (ARENA_SIZE - 1), 0);
    let Some((r, w, bit)) = split(base.addr()) else {
        return false;
    };
    let slot = &ROOT.0[r];
    let mut leaf = slot.load(Ordering::Acquire);
    if leaf.is_null() {
        leaf = os::map_aligned(LEAF_MAP, LEAF_MAP).cast::<Leaf>();
        if leaf.is_null() {
            return false;
        }
        // Construct the words in place: zeroed memory already is a valid `Leaf` natively, but
        // under loom each atomic must be created inside the model.
        for i in 0..LEAF_WORDS {
            // SAFETY: the fresh mapping (LEAF_MAP >= LEAF_BYTES bytes, page-aligned) holds
            // LEAF_WORDS words, ours alone until published below.
            unsafe { core::ptr::addr_of_mut!((*leaf).words[i]).write(AtomicUsize::new(0)) };
        }
        // Only lock holders write root entries, and we hold the lock: nobody raced us here.
        slot.store(leaf, Ordering::Release);
    }
    // SAFETY: the leaf is live forever (type invariants); zeroed memory is a valid `Leaf`.
    unsafe { (*leaf).words[w].fetch_or(bit, Ordering::Release) };
    true
}

/// Withdraws the arena at `base` before it is unmapped. It must have been [`insert`]ed.
pub(crate) fn remove(_locked: &mut Locked, base: *mut u8) {
    let Some((r, w, bit)) = split(base.addr()) else {
        return;
    };
    let leaf = ROOT.0[r].load(Ordering::Acquire);
    if leaf.is_null() {
        return;
    }
    // SAFETY: as in `insert`.
    unsafe { (*leaf).words[w].fetch_and(!bit, Ordering::Release) };
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A fake arena address far from anything the OS or Miri hands out, in the middle of a leaf:
    /// the map only does arithmetic on it, never dereferences it. 64-bit: bit 46 set.
    #[cfg(target_pointer_width = "64")]
    const FAKE: usize = 0x4000_0000_0000 + 77 * ARENA_SIZE;
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
    fn split_covers_the_address_space() {
        assert_eq!(split(0), Some((0, 0, 1)));
        assert_eq!(split(ARENA_SIZE), Some((0, 0, 2)));
        assert_eq!(split(ARENA_SIZE * WORD_BITS), Some((0, 1, 1)));
        let last = Some((ROOT_LEN - 1, LEAF_WORDS - 1, 1 << (WORD_BITS - 1)));
        // The highest covered address is in the last bit of the last leaf...
        let top = usize::MAX >> (usize::BITS - ADDRESS_BITS);
        assert_eq!(split(top), last);
        assert_eq!(split(top - (ARENA_SIZE - 1)), last);
        // ...and the second leaf starts where the first ends (64-bit; 32-bit has one leaf).
        if ROOT_LEN > 1 {
            assert_eq!(split(LEAF_ARENAS * ARENA_SIZE), Some((1, 0, 1)));
        }
        match BEYOND {
            Some(beyond) => {
                assert_eq!(ADDRESS_BITS, 48);
                assert_eq!(split(beyond), None);
                assert_eq!(split(usize::MAX), None);
            }
            // 32-bit: every address is covered, the top one included.
            None => {
                assert_eq!((ADDRESS_BITS, ROOT_LEN), (usize::BITS, 1));
                assert_eq!(split(usize::MAX), last);
            }
        }
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
    fn arena_blocks_are_found_and_foreign_memory_is_not() {
        let p = crate::heap::alloc(56); // class 3, which no other unit test uses
        assert!(!p.is_null());
        assert!(contains(p.addr()));
        assert!(crate::raw::owns(p));
        // SAFETY: `p` is a live block of class 3 (64 bytes).
        assert_eq!(unsafe { crate::raw::usable_size(p) }, 64);
        let on_heap = Box::new([0u8; 64]);
        let on_stack = 0u64;
        assert!(!contains(on_heap.as_ptr().addr()));
        assert!(!contains(core::ptr::addr_of!(on_stack).addr()));
        assert!(!contains(0));
        // SAFETY: `p` came from heap::alloc(56) and is freed once.
        unsafe { crate::heap::free(p, 56) };
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
