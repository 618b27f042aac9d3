//! Every alignment from 1 to 4096 at sizes on both sides of the 512-byte boundary, `realloc` in
//! place and across classes and the boundary, and `alloc_zeroed` on recycled (dirty) blocks.

mod common;
use common::{check, fill, pattern};
use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

const SIZES: [usize; 12] = [1, 7, 16, 17, 100, 255, 496, 511, 512, 513, 1000, 5000];

#[test]
fn every_alignment_is_honoured() {
    let mut live = Vec::new();
    for shift in 0..=12 {
        let align = 1usize << shift;
        for &size in &SIZES {
            for zeroed in [false, true] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: every layout here has a non-zero size.
                let p = unsafe {
                    if zeroed {
                        GLOBAL.alloc_zeroed(layout)
                    } else {
                        GLOBAL.alloc(layout)
                    }
                };
                assert!(!p.is_null(), "{layout:?}");
                assert_eq!(p as usize % align, 0, "{layout:?} gave {p:p}");
                if zeroed {
                    // SAFETY: `p` is a live block of `size` bytes (non-null, checked above).
                    let s = unsafe { std::slice::from_raw_parts(p, size) };
                    assert!(s.iter().all(|&b| b == 0), "{layout:?} not zeroed");
                }
                // SAFETY: `p` is a live, writable block of `size` bytes.
                unsafe { fill(p, size) };
                live.push((p, layout));
            }
        }
    }
    for (p, layout) in live {
        // SAFETY: `p` is a live block allocated above with `layout` and freed only here.
        unsafe {
            check(p, layout.size());
            GLOBAL.dealloc(p, layout);
        }
    }
}

#[test]
fn zeroed_blocks_are_zero_even_when_recycled() {
    for size in (16..=512).step_by(16) {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // Dirty a batch of blocks, free them, then ask for zeroed ones: they reuse the dirty blocks.
        let dirty: Vec<_> = (0..64)
            // SAFETY: `layout` has a non-zero size; the block it returns has `size` bytes.
            .map(|_| unsafe {
                let p = GLOBAL.alloc(layout);
                p.write_bytes(0xA5, size);
                p
            })
            .collect();
        for &p in &dirty {
            // SAFETY: each dirty block is live, allocated with `layout`, freed once.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
        let clean: Vec<_> = (0..64)
            // SAFETY: `layout` has a non-zero size.
            .map(|_| unsafe { GLOBAL.alloc_zeroed(layout) })
            .collect();
        for &p in &clean {
            // SAFETY: `p` is a live zeroed block of `size` bytes.
            let s = unsafe { std::slice::from_raw_parts(p, size) };
            assert!(
                s.iter().all(|&b| b == 0),
                "size {size}: recycled block not zeroed"
            );
        }
        let reused = clean.iter().filter(|p| dirty.contains(p)).count();
        assert!(
            reused > 0,
            "size {size}: the test did not exercise recycled blocks"
        );
        for p in clean {
            // SAFETY: each clean block is live, allocated with `layout`, freed once.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
    }
}

/// Grows then shrinks one block through every size from 1 to 1100 and back, checking the
/// content survives each move; within a class the block must not move.
#[test]
fn realloc_keeps_content_across_classes_and_the_boundary() {
    for align in [1, 8, 16, 32, 64] {
        let mut layout = Layout::from_size_align(1, align).unwrap();
        // SAFETY: `layout` has size 1; the write stays inside the one-byte block.
        let mut p = unsafe { GLOBAL.alloc(layout) };
        // SAFETY: `p` is a live block of one byte.
        unsafe { p.write(pattern(0, 0, 0)) };
        let mut sizes: Vec<usize> = (2..=1100).collect();
        sizes.extend((1..1100).rev());
        for new_size in sizes {
            // SAFETY: `p` is the live block allocated with `layout`; `new_size` is non-zero.
            let q = unsafe { GLOBAL.realloc(p, layout, new_size) };
            assert!(!q.is_null());
            assert_eq!(q as usize % align, 0);
            let kept = layout.size().min(new_size);
            for i in 0..kept {
                assert_eq!(
                    // SAFETY: `q` holds `new_size` bytes and `i < kept <= new_size`.
                    unsafe { q.add(i).read() },
                    pattern(0, 0, i),
                    "align {align} size {new_size} byte {i}"
                );
            }
            let same_class = align <= 16
                && layout.size() <= 512
                && new_size <= 512
                && (layout.size() - 1) / 16 == (new_size - 1) / 16;
            if same_class {
                assert_eq!(
                    q,
                    p,
                    "realloc {} -> {new_size} moved within a class",
                    layout.size()
                );
            }
            for i in kept..new_size {
                // SAFETY: `q` holds `new_size` bytes and `i < new_size`.
                unsafe { q.add(i).write(pattern(0, 0, i)) };
            }
            p = q;
            layout = Layout::from_size_align(new_size, align).unwrap();
        }
        // SAFETY: `p` is the live block, of the current `layout`.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
}

/// Requests of nearly `isize::MAX` bytes (the largest a `Layout` allows) fail with null on a
/// 64-bit target, where no address space is that big. A 32-bit process may really get 2 GiB (on a
/// 64-bit kernel it has 4 GiB of address space), so there a success must be a usable block.
#[test]
fn huge_requests_fail_with_null_not_a_crash() {
    let impossible = cfg!(target_pointer_width = "64");
    let huge = isize::MAX as usize - 4095;
    let layout = Layout::from_size_align(huge, 4096).unwrap();
    // SAFETY: the layout is valid (it was built by `from_size_align`) and non-zero.
    let p = unsafe { GLOBAL.alloc(layout) };
    assert!(p.is_null() || !impossible);
    if !p.is_null() {
        // SAFETY: `p` is a live block of `huge` bytes (both ends written), freed once.
        unsafe {
            p.write(1);
            p.add(huge - 1).write(2);
            GLOBAL.dealloc(p, layout);
        }
    }
    let small = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: a valid non-zero layout.
    let p = unsafe { GLOBAL.alloc(small) };
    assert!(!p.is_null());
    // SAFETY: `p` holds 64 bytes.
    unsafe { p.write_bytes(0x3C, 64) };
    // SAFETY: `p` is live with layout `small`; the new size rounded up to the alignment does
    // not overflow `isize`.
    let q = unsafe { GLOBAL.realloc(p, small, huge) };
    if q.is_null() {
        // The original block is still ours and intact after a failed realloc.
        // SAFETY: after the failed realloc `p` is still live with layout `small`.
        unsafe {
            assert!(core::slice::from_raw_parts(p, 64)
                .iter()
                .all(|&b| b == 0x3C));
            GLOBAL.dealloc(p, small);
        }
    } else {
        assert!(!impossible, "realloc to an impossible size must fail");
        // SAFETY: `q` is the live moved block of `huge` bytes with alignment 8, freed once.
        unsafe {
            assert!(core::slice::from_raw_parts(q, 64)
                .iter()
                .all(|&b| b == 0x3C));
            q.add(huge - 1).write(2);
            GLOBAL.dealloc(q, Layout::from_size_align(huge, 8).unwrap());
        }
    }
}
