//! Size classes: 32 *small* classes, one every 16 bytes from 16 to 512 bytes, and 24 *medium*
//! classes, four per doubling from 640 bytes to 32 KiB.
//!
//! A request of `n` bytes (1 ≤ n ≤ 512) with alignment at most 16 is served from small class
//! `(n - 1) / 16`, whose blocks are `16 * (class + 1)` bytes (CPython's obmalloc layout, with a
//! finer step). A request of 513 ≤ n ≤ 32768 bytes is served from a medium class: the block sizes
//! are `(4 + k) * 2^(e - 2)` for `k = 1..=4` within each doubling `2^e < n ≤ 2^(e+1)` (640, 768,
//! 896, 1024, 1280, ..., 28672, 32768), the geometric spacing of mimalloc's and rpmalloc's classes
//! above their small range: at most 25 % of a block is rounding (at the low end of each doubling),
//! 11 % on average for uniformly spread sizes. Everything larger, or more strictly aligned, goes to
//! the system allocator.
//!
//! Class numbers form one index space: `0..CLASS_COUNT` are the small classes (served from 16 KiB
//! pools), `CLASS_COUNT..CLASSES` the medium ones (served from 256 KiB pools, see
//! `crate::medium`).

use crate::tunables::GRANULE_SHIFT;
pub use crate::tunables::{GRANULE, MAX_ALIGN, MAX_SMALL};

/// How many size classes there are.
pub const CLASS_COUNT: usize = MAX_SMALL / GRANULE;

// `class_of` divides by a shift and keeps the result in range with a mask.
const _: () = assert!(CLASS_COUNT.is_power_of_two());
const _: () = assert!(CLASS_COUNT * GRANULE == MAX_SMALL);
// A pool's `class` is a byte, with `u8::MAX` meaning none.
const _: () = assert!(CLASS_COUNT < u8::MAX as usize);

/// The class of a request of `size` bytes, for `1 <= size <= MAX_SMALL`.
///
/// A zero-byte request (which `GlobalAlloc` never makes) lands in the last class, which can
/// hold it; the result is always a valid index, so callers need no bounds check.
#[inline(always)]
pub const fn class_of(size: usize) -> usize {
    (size.wrapping_sub(1) >> GRANULE_SHIFT) & (CLASS_COUNT - 1)
}

/// The block size of `class`.
#[inline(always)]
pub const fn block_size(class: usize) -> usize {
    (class + 1) * GRANULE
}

/// Whether a request with this size and alignment is served from a small class.
#[inline(always)]
pub const fn is_small(size: usize, align: usize) -> bool {
    size <= MAX_SMALL && align <= MAX_ALIGN
}

/// The largest request served from a medium class (32 KiB); larger ones go to the system allocator.
pub const MAX_MEDIUM: usize = 32 * 1024;
/// Medium classes per doubling of the block size.
const MEDIUM_STEPS: usize = 4;
/// How many medium classes there are: four per doubling from 512 to 32 KiB.
pub const MEDIUM_CLASS_COUNT: usize =
    MEDIUM_STEPS * (MAX_MEDIUM.trailing_zeros() - MAX_SMALL.trailing_zeros()) as usize;
/// How many classes there are in all: small classes `0..CLASS_COUNT`, medium classes
/// `CLASS_COUNT..CLASSES`.
pub const CLASSES: usize = CLASS_COUNT + MEDIUM_CLASS_COUNT;

const _: () = assert!(MEDIUM_CLASS_COUNT == 24 && CLASSES < u8::MAX as usize);

/// Whether a request with this size and alignment is served from a medium class:
/// `MAX_SMALL < size <= MAX_MEDIUM`, alignment at most [`MAX_ALIGN`].
#[inline(always)]
pub const fn is_medium(size: usize, align: usize) -> bool {
    size.wrapping_sub(MAX_SMALL + 1) < MAX_MEDIUM - MAX_SMALL && align <= MAX_ALIGN
}

/// Whether a request with this size and alignment is served from a class at all (small or
/// medium), not by the system allocator.
#[inline(always)]
pub const fn is_served(size: usize, align: usize) -> bool {
    size <= MAX_MEDIUM && align <= MAX_ALIGN
}

/// The medium class (an index in `CLASS_COUNT..CLASSES`) of a request of `size` bytes, for
/// `MAX_SMALL < size <= MAX_MEDIUM`. Other sizes give some valid medium class (never an index out
/// of range), so callers need no bounds check.
#[inline(always)]
pub const fn medium_class_of(size: usize) -> usize {
    // n = size - 1 lies in 512..32768: its top bit e (9..=14) names the doubling, the two bits
    // below it the step inside it.
    let n = size.wrapping_sub(1);
    let n = if n < MAX_SMALL {
        MAX_SMALL
    } else if n >= MAX_MEDIUM {
        MAX_MEDIUM - 1
    } else {
        n
    };
    let e = (usize::BITS - 1 - n.leading_zeros()) as usize;
    let step = (n >> (e - 2)) & (MEDIUM_STEPS - 1);
    CLASS_COUNT + (e - MAX_SMALL.trailing_zeros() as usize) * MEDIUM_STEPS + step
}

/// The class (small or medium) of a request of `size` bytes, `1 <= size <= MAX_MEDIUM`.
#[inline]
pub const fn any_class_of(size: usize) -> usize {
    if size <= MAX_SMALL {
        class_of(size)
    } else {
        medium_class_of(size)
    }
}

/// The block sizes of the medium classes, in bytes: `(4 + k) * 2^(e - 2)`, `k = 1..=4`.
const MEDIUM_SIZES: [u32; MEDIUM_CLASS_COUNT] = {
    let mut t = [0; MEDIUM_CLASS_COUNT];
    let mut m = 0;
    while m < MEDIUM_CLASS_COUNT {
        let shift = MAX_SMALL.trailing_zeros() as usize - 2 + m / MEDIUM_STEPS;
        t[m] = ((MEDIUM_STEPS + 1 + m % MEDIUM_STEPS) << shift) as u32;
        m += 1;
    }
    t
};

/// The block size of any class, small or medium (`class < CLASSES`).
#[inline]
pub const fn any_block_size(class: usize) -> usize {
    if class < CLASS_COUNT {
        block_size(class)
    } else {
        MEDIUM_SIZES[(class - CLASS_COUNT) % MEDIUM_CLASS_COUNT] as usize
    }
}

/// Whether `class` is a medium class.
#[inline(always)]
pub const fn is_medium_class(class: usize) -> bool {
    class >= CLASS_COUNT
}

/// Whether an arena block serving a request of `old_size` bytes can serve `new_size` bytes in
/// place: `new_size` is served by a class (small or medium) and falls in the same class. The one statement of `realloc`'s "same
/// class, stay in place" rule (the global allocator, annotate mode with its redzone added to
/// both sizes, and the preload through `raw::resize_in_place`).
#[inline]
pub const fn stays_in_place(old_size: usize, new_size: usize) -> bool {
    new_size <= MAX_MEDIUM && any_class_of(old_size) == any_class_of(new_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_fits_its_class_and_no_smaller_one() {
        for size in 1..=MAX_SMALL {
            let c = class_of(size);
            assert!(block_size(c) >= size, "size {size} class {c}");
            if c > 0 {
                assert!(block_size(c - 1) < size, "size {size} wasted a class");
            }
            assert!(is_small(size, 16));
        }
        assert_eq!(class_of(0), CLASS_COUNT - 1);
        assert!(!is_small(513, 8));
        assert!(!is_small(16, 32));
        assert_eq!(block_size(CLASS_COUNT - 1), MAX_SMALL);
    }

    #[test]
    fn every_medium_size_fits_its_class_and_no_smaller_one() {
        let mut last = MAX_SMALL;
        for class in CLASS_COUNT..CLASSES {
            let bs = any_block_size(class);
            assert!(bs > last, "class {class}");
            // Blocks keep the 16-byte alignment, and at most a quarter of a block is rounding.
            assert_eq!(bs % GRANULE, 0);
            assert!((bs - last) * 4 <= bs + last, "class {class}: {last} -> {bs}");
            last = bs;
        }
        assert_eq!(last, MAX_MEDIUM);
        assert_eq!(any_block_size(CLASS_COUNT), 640);
        for size in MAX_SMALL + 1..=MAX_MEDIUM {
            let c = medium_class_of(size);
            assert_eq!(c, any_class_of(size));
            assert!(is_medium_class(c));
            assert!(any_block_size(c) >= size, "size {size} class {c}");
            let below = if c == CLASS_COUNT { MAX_SMALL } else { any_block_size(c - 1) };
            assert!(below < size, "size {size} wasted a class");
            assert!(is_medium(size, 16) && is_served(size, 16) && !is_small(size, 16));
        }
        for size in 1..=MAX_SMALL {
            assert_eq!(any_class_of(size), class_of(size));
            assert_eq!(any_block_size(class_of(size)), block_size(class_of(size)));
            assert!(!is_medium(size, 1));
        }
        // Out-of-range sizes still give valid indices.
        for size in [0, 1, MAX_SMALL, MAX_MEDIUM + 1, usize::MAX] {
            assert!((CLASS_COUNT..CLASSES).contains(&medium_class_of(size)));
        }
        assert!(!is_medium(MAX_MEDIUM + 1, 8) && !is_served(MAX_MEDIUM + 1, 8));
        assert!(!is_medium(1024, 32) && !is_served(1024, 32));
    }
}
