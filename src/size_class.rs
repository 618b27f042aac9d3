//! Size classes: one every 16 bytes from 16 to 512 bytes, 32 in all.
//!
//! A request of `n` bytes (1 ≤ n ≤ 512) with alignment at most 16 is served from class
//! `(n - 1) / 16`, whose blocks are `16 * (class + 1)` bytes. Everything larger, or more strictly
//! aligned, goes to the system allocator.

/// The granularity of size classes and the alignment every block has.
pub const GRANULE: usize = 16;
/// The largest request served from the arena.
pub const MAX_SMALL: usize = 512;
/// The largest alignment the arena guarantees (every block is 16-byte aligned).
pub const MAX_ALIGN: usize = GRANULE;
/// How many size classes there are.
pub const CLASS_COUNT: usize = MAX_SMALL / GRANULE;

/// The class of a request of `size` bytes, for `1 <= size <= MAX_SMALL`.
///
/// A zero-byte request (which `GlobalAlloc` never makes) lands in the last class, which can
/// hold it; the result is always a valid index, so callers need no bounds check.
#[inline(always)]
pub const fn class_of(size: usize) -> usize {
    (size.wrapping_sub(1) >> 4) & (CLASS_COUNT - 1)
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
