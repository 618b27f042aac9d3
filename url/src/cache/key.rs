//! What the cache is keyed by: (kind, exact input, default scheme, `allow_fragments`), its
//! 64-bit hash, and the kind-tagged entries that make a text entry unable to answer a bytes
//! request.

use std::any::Any;
use std::hash::Hasher;
use std::sync::Arc;

use crate::result::Stored;
use crate::scan::word;
use crate::Kind;

/// One lookup's key, with its hash.
pub(super) struct Key<'k, K: ?Sized> {
    pub(super) url: &'k K,
    /// The cleaned default scheme.
    pub(super) scheme: &'k K,
    pub(super) allow_fragments: bool,
    pub(super) hash: u64,
}

impl<'k, K: Kind + ?Sized> Key<'k, K> {
    /// The key of `url` split with `scheme` (already cleaned) and `allow_fragments`; `seed`
    /// is the cache's random hash seed. The kind and `allow_fragments` are hashed too, so
    /// that the text and bytes keys of the same bytes differ.
    #[inline]
    pub(super) fn new(seed: u64, url: &'k K, scheme: &'k K, allow_fragments: bool) -> Self {
        let tag = (K::TAG as u64) << 1 | u64::from(allow_fragments);
        let h = seed ^ tag.wrapping_mul(M2);
        let h = if scheme.raw().is_empty() {
            h
        } else {
            hash_bytes(h, scheme.raw())
        };
        Key {
            url,
            scheme,
            allow_fragments,
            hash: mix(hash_bytes(h, url.raw()), M1 ^ tag),
        }
    }

    /// Whether `stored`, kept with `allow_fragments`, answers this key (the whole key is
    /// compared: hashes only choose the slot).
    #[inline(always)]
    pub(super) fn matches(&self, stored: &Stored<K>, allow_fragments: bool) -> bool {
        self.allow_fragments == allow_fragments
            && same_bytes(stored.input().raw(), self.url.raw())
            && same_bytes(stored.default_scheme().raw(), self.scheme.raw())
    }
}

/// A cache entry of either kind. A typed lookup ([`AnyStored::get`]) only ever returns the
/// variant of its own kind, so a text entry cannot answer a bytes request even on a hash
/// collision: the 2005 `urlparse` bug is a type error here, not a convention.
pub(super) enum AnyStored {
    Text(Arc<Stored<str>>),
    Bytes(Arc<Stored<[u8]>>),
}

impl AnyStored {
    /// Tags `entry` with its kind; `None` for a kind the cache does not know (there is
    /// none: [`Kind`] is sealed to `str` and `[u8]`).
    ///
    /// The kinds are told apart with [`Any`] on concrete types, which the compiler resolves
    /// when it instantiates this function: no run-time cost, and the string kinds need
    /// not know the cache.
    #[inline]
    pub(super) fn new<K: Kind + ?Sized>(entry: &Arc<Stored<K>>) -> Option<Self> {
        let any: &dyn Any = entry;
        if let Some(t) = any.downcast_ref::<Arc<Stored<str>>>() {
            Some(AnyStored::Text(Arc::clone(t)))
        } else {
            any.downcast_ref::<Arc<Stored<[u8]>>>()
                .map(|b| AnyStored::Bytes(Arc::clone(b)))
        }
    }

    /// The entry, if it has the kind `K`.
    #[inline(always)]
    pub(super) fn get<K: Kind + ?Sized>(&self) -> Option<&Arc<Stored<K>>> {
        match self {
            AnyStored::Text(t) => (t as &dyn Any).downcast_ref(),
            AnyStored::Bytes(b) => (b as &dyn Any).downcast_ref(),
        }
    }
}

#[inline(always)]
fn mix(a: u64, b: u64) -> u64 {
    let r = u128::from(a).wrapping_mul(u128::from(b));
    (r as u64) ^ ((r >> 64) as u64)
}

const M1: u64 = 0x9e37_79b9_7f4a_7c15;
const M2: u64 = 0xd6e8_feb8_6659_fd93;

/// Seeded multiply-fold hash, 16 bytes per multiplication. Not DoS-resistant by itself, but
/// collisions only cost cache efficiency: the table maps hash -> one slot and every hit
/// compares the full key.
#[inline]
fn hash_bytes(mut h: u64, data: &[u8]) -> u64 {
    h = mix(h ^ data.len() as u64, M1);
    let mut chunks = data.chunks_exact(16);
    for c in &mut chunks {
        h = mix(h ^ word(&c[..8]), word(&c[8..]) ^ M2);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let (a, b) = rest.split_at(rest.len().min(8));
        h = mix(h ^ word(a), word(b) ^ M1);
    }
    h
}

/// Byte equality without a call to libc `memcmp` (keys are short; an inlined word loop is
/// several times cheaper than the call on the hit path).
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        if word(x) != word(y) {
            return false;
        }
    }
    ca.remainder()
        .iter()
        .zip(cb.remainder())
        .all(|(x, y)| x == y)
}

/// Hasher for table keys that are already 64-bit hashes.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::split_impl;

    fn stored<K: Kind + ?Sized>(url: &K) -> Arc<Stored<K>> {
        Arc::new(Stored::new(
            url,
            K::EMPTY,
            split_impl(url, K::EMPTY, true).unwrap(),
        ))
    }

    #[test]
    fn an_entry_answers_its_own_kind_only() {
        let text = AnyStored::new(&stored("http://a/b")).unwrap();
        let bytes = AnyStored::new(&stored(b"http://a/b".as_slice())).unwrap();
        assert!(matches!(text, AnyStored::Text(_)));
        assert!(matches!(bytes, AnyStored::Bytes(_)));
        assert!(text.get::<str>().is_some() && text.get::<[u8]>().is_none());
        assert!(bytes.get::<[u8]>().is_some() && bytes.get::<str>().is_none());
    }

    #[test]
    fn keys_differ_by_kind_and_options_and_match_exactly() {
        let t = Key::new(7, "http://a/b", "", true);
        let b = Key::new(7, b"http://a/b".as_slice(), b"".as_slice(), true);
        let t_nofrag = Key::new(7, "http://a/b", "", false);
        let t_scheme = Key::new(7, "http://a/b", "x", true);
        assert_ne!(t.hash, b.hash);
        assert_ne!(t.hash, t_nofrag.hash);
        assert_ne!(t.hash, t_scheme.hash);
        assert_eq!(t.hash, Key::new(7, "http://a/b", "", true).hash);
        let e = stored("http://a/b");
        assert!(t.matches(&e, true));
        assert!(!t.matches(&e, false));
        assert!(!t_scheme.matches(&e, true));
        assert!(!Key::new(7, "http://a/c", "", true).matches(&e, true));
    }
}
