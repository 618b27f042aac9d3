//! Size classes: one every 16 bytes from 16 to 512 bytes, 32 in all.
//!
//! A request of `n` bytes (1 ≤ n ≤ 512) with alignment at most 16 is served from class
//! `(n - 1) / 16`, whose blocks are `16 * (class + 1)` bytes. Everything larger, or more strictly
//! aligned, goes to the system allocator.

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

/// Whether a request with this size and alignment is served from the arena.
#[inline(always)]
pub const fn is_small(size: usize, align: usize) -> bool {
    size <= MAX_SMALL && align <= MAX_ALIGN
}

/// Whether an arena block serving a request of `old_size` bytes can serve `new_size` bytes in
/// place: `new_size` is small and falls in the same class. The one statement of `realloc`'s "same
/// class, stay in place" rule (the global allocator, annotate mode with its redzone added to
/// both sizes, and the preload through `raw::resize_in_place`).
#[inline]
pub const fn stays_in_place(old_size: usize, new_size: usize) -> bool {
    new_size <= MAX_SMALL && class_of(old_size) == class_of(new_size)
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
}
