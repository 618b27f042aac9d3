//! Which addresses belong to the arena: a lock-free radix map over arena addresses.
//!
//! `free(p)` in the `LD_PRELOAD` library ([`crate::raw`]) gets no size and no layout, so it must
//! find out, in constant time and without any lock, whether `p` lies in one of our arenas (then
//! its pool header tells the size class) or came from libc. Arenas are 1 MiB-aligned mappings, so
//! a pointer's arena is named by its address bits 47..20; this map keeps one bit per possible
//! arena, in two levels, the scheme CPython 3.10+ uses for obmalloc's `address_in_range`:
//!
//! * level 1, [`ROOT`]: 8192 pointers indexed by address bits 47..35;
//! * level 2, a [`Leaf`]: one 4 KiB page holding a bitmap of 32768 bits indexed by bits 34..20.
//!
//! Leaves are mapped lazily from the OS (never through an allocator) the first time an arena in
//! their 32 GiB span is published, and never freed, so a lookup can always read a leaf it found.
//! Addresses at or above 2^48 (none on x86-64 or AArch64 Linux with 4-level paging, which is
//! every mapping made without an explicit high hint) cannot be published: mapping such an arena
//! fails as if the OS had refused memory, and a lookup of such an address answers "not ours".
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
/// Address bits covered by the map (addresses below 2^48).
const ADDRESS_BITS: u32 = 48;
/// Size of a leaf: one page.
const LEAF_BYTES: usize = 4096;
/// Arenas covered by one leaf: one bit each.
const LEAF_ARENAS: usize = LEAF_BYTES * 8;
/// Address bits a leaf covers (bits `ARENA_BITS..LEAF_SHIFT`).
const LEAF_SHIFT: u32 = ARENA_BITS + LEAF_ARENAS.trailing_zeros();
/// Entries of the root (bits `LEAF_SHIFT..ADDRESS_BITS`).
const ROOT_LEN: usize = 1 << (ADDRESS_BITS - LEAF_SHIFT);
/// Bits in a bitmap word.
const WORD_BITS: usize = usize::BITS as usize;
/// Words in a leaf.
const LEAF_WORDS: usize = LEAF_ARENAS / WORD_BITS;

const _: () = assert!(core::mem::size_of::<Leaf>() == LEAF_BYTES);
const _: () = assert!(LEAF_SHIFT == 35 && ROOT_LEN == 8192);

/// A second-level node: one bit per 1 MiB arena slot of a 32 GiB span.
///
/// Invariants:
/// * Bit `i` of the leaf for root index `r` is set exactly while an arena is mapped at address
///   `(r << LEAF_SHIFT) | (i << ARENA_BITS)` and published (between [`insert`] and [`remove`]).
/// * Bits are written only under the arena lock (with atomic RMWs, since readers load the words
///   concurrently); they are read from any thread without the lock.
/// * A leaf lives in its own zero-initialised page mapping that is never unmapped.
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
    /// The root of the map (64 KiB of zeros in `.bss`).
    static ROOT: Root = Root::new();
}

/// Splits an address into (root index, word index, bit mask), or `None` above the covered range.
#[inline(always)]
fn split(addr: usize) -> Option<(usize, usize, usize)> {
    if addr >> ADDRESS_BITS != 0 {
        return None;
    }
    let r = addr >> LEAF_SHIFT;
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
        leaf = os::map_aligned(LEAF_BYTES, LEAF_BYTES).cast::<Leaf>();
        if leaf.is_null() {
            return false;
        }
        // Construct the words in place: zeroed memory already is a valid `Leaf` natively, but
        // under loom each atomic must be created inside the model.
        for i in 0..LEAF_WORDS {
            // SAFETY: the fresh mapping holds LEAF_WORDS words, ours alone until published below.
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

    /// A fake arena address far from anything the OS or Miri hands out (bit 46 set), in the
    /// middle of a leaf: the map only does arithmetic on it, never dereferences it.
    const FAKE: usize = 0x4000_0000_0000 + 77 * ARENA_SIZE;

    fn fake(n: usize) -> *mut u8 {
        core::ptr::without_provenance_mut(FAKE + n * ARENA_SIZE)
    }

    #[test]
    fn split_covers_the_48_bit_space() {
        assert_eq!(split(0), Some((0, 0, 1)));
        assert_eq!(split(ARENA_SIZE), Some((0, 0, 2)));
        assert_eq!(split(ARENA_SIZE * 64), Some((0, 1, 1)));
        assert_eq!(
            split((1 << 48) - 1),
            Some((ROOT_LEN - 1, LEAF_WORDS - 1, 1 << (WORD_BITS - 1)))
        );
        assert_eq!(split(1 << 48), None);
        assert_eq!(split(usize::MAX), None);
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
            // Beyond the map: refused, and never reported as ours.
            assert!(!insert(&mut l, core::ptr::without_provenance_mut(1 << 48)));
        }
        assert!(!contains(FAKE + 2 * ARENA_SIZE));
        assert!(!contains(1 << 48));
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
