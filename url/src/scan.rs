//! Byte scanning shared by the splitter, the netloc attributes and the cache's key hashing.

/// The first `c` in `b`.
#[inline]
pub(crate) fn find(b: &[u8], c: u8) -> Option<usize> {
    b.iter().position(|&x| x == c)
}

/// The last `c` in `b`.
#[inline]
pub(crate) fn rfind(b: &[u8], c: u8) -> Option<usize> {
    b.iter().rposition(|&x| x == c)
}

/// The byte that pads a short [`word`]: an ASCII letter, which no mask of the splitter's
/// word-at-a-time scans flags.
const PAD: u8 = b'a';

/// The first (up to) eight bytes of `b` as a little-endian word, padded past the end of `b`
/// with [`PAD`], without a `memcpy` call.
#[inline(always)]
pub(crate) fn word(b: &[u8]) -> u64 {
    match b.get(..8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        Some(w) => u64::from_le_bytes(w),
        None => b
            .iter()
            .rev()
            .fold(u64::from_le_bytes([PAD; 8]), |acc, &x| {
                (acc << 8) | u64::from(x)
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::word;

    #[test]
    fn word_is_little_endian_and_padded() {
        assert_eq!(word(b"abcdefghij"), u64::from_le_bytes(*b"abcdefgh"));
        assert_eq!(word(b"xyz"), u64::from_le_bytes(*b"xyzaaaaa"));
        assert_eq!(word(b""), u64::from_le_bytes(*b"aaaaaaaa"));
    }
}
