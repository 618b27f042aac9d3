//! [`UrlCache`]: a bounded, sharded, kind-keyed cache of split results.
//!
//! # Design
//! - **Kind safety by construction** (`key.rs`). Entries are stored as `AnyStored`, an enum
//!   with one variant per kind, and a typed lookup only ever accepts the variant of its own
//!   kind. The kind is also hashed into the key. A text entry therefore cannot answer a
//!   bytes request even on a hash collision: the 2005 `urlparse` bug is a type error here,
//!   not a convention.
//! - **No global lock on hits** (`shard.rs`). The cache is split into shards (8 by
//!   default), each a `RwLock` over a small table. Writers (misses) lock one shard only.
//! - **Lock-free repeat hits** (`front.rs`). Each thread keeps a small front of the entries
//!   it has hit, valid while the shard's generation shows that no entry left the shard; a
//!   front hit is exactly a shared hit without the read lock. Hits are counted per thread,
//!   without read-modify-write; misses, evictions and rejections in per-shard atomics.
//! - **Replacement.** CLOCK (second chance) per shard: an approximation of LRU that needs no
//!   list relinking on hits, so hits stay read-only. CPython's `lru_cache` is an exact LRU
//!   over 128 entries; here the 128 entries are divided between the shards, so the policy
//!   is approximate (documented difference, behaviourally invisible: only speed depends on
//!   it).
//! - **Bounds.** At most `capacity` entries in total (default 128, as CPython 3.11) and at
//!   most `max_bytes` bytes of entry storage (default 1 MiB), both divided evenly between
//!   shards. An entry bigger than its shard's byte budget is returned but not kept
//!   (counted in [`CacheStats::rejected`]).
//! - **Compact entries.** An entry stores the exact input once, plus component offsets; a
//!   cleaned copy exists only when CPython's rules change the bytes (tab/CR/LF removal,
//!   uppercase scheme), which is rare. A hit returns a [`Split`] sharing the entry.
//! - **Errors are not cached**, as with `functools.lru_cache`: an input that raises is
//!   re-parsed on every call.
//! - **Checked mode** ([`UrlCacheBuilder::checked`]) re-parses on every hit and compares
//!   with the cached answer, counting and logging divergences.

mod front;
mod key;
mod shard;

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use self::front::Fronts;
use self::key::Key;
use self::shard::Shard;
use crate::join::join_impl;
use crate::result::{Parse, Split, Stored};
use crate::split::{clean_scheme, split_impl};
use crate::{Kind, Options, UrlError};

/// Counters of a [`UrlCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that parsed (including those that failed with an error).
    pub misses: u64,
    /// Entries removed to make room (count or byte bound, or a 64-bit hash collision).
    pub evictions: u64,
    /// Results too big for the byte bound, returned but not kept.
    pub rejected: u64,
    /// Checked mode: hits whose cached answer differed from a fresh parse.
    pub divergences: u64,
    /// Entries currently held.
    pub entries: usize,
    /// Bytes currently accounted to entries.
    pub bytes: usize,
}

/// Builder of a [`UrlCache`].
#[derive(Clone, Debug)]
pub struct UrlCacheBuilder {
    capacity: usize,
    max_bytes: usize,
    shards: usize,
    checked: bool,
}

impl Default for UrlCacheBuilder {
    fn default() -> Self {
        UrlCacheBuilder {
            capacity: UrlCache::DEFAULT_CAPACITY,
            max_bytes: UrlCache::DEFAULT_MAX_BYTES,
            shards: 8,
            checked: false,
        }
    }
}

impl UrlCacheBuilder {
    /// Maximum number of entries (0 disables caching).
    pub fn capacity(mut self, entries: usize) -> Self {
        self.capacity = entries;
        self
    }

    /// Maximum bytes of entry storage (inputs, cleaned copies and bookkeeping).
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Number of shards (at least 1, at most `capacity`).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Checked mode: re-parse on every hit and count divergences.
    pub fn checked(mut self, checked: bool) -> Self {
        self.checked = checked;
        self
    }

    /// Builds the cache.
    pub fn build(self) -> UrlCache {
        let n = self.shards.clamp(1, self.capacity.max(1));
        let shards = (0..n)
            .map(|i| {
                Shard::new(
                    self.capacity / n + usize::from(i < self.capacity % n),
                    self.max_bytes / n,
                )
            })
            .collect();
        UrlCache {
            fronts: Fronts::new(),
            shards,
            seed: RandomState::new().hash_one(0x5eed_u64),
            checked: self.checked,
            divergences: AtomicU64::new(0),
            divergence_log: Mutex::new(Vec::new()),
            capacity: self.capacity,
            max_bytes: self.max_bytes,
        }
    }
}

/// A bounded, thread-safe cache of [`split`](crate::split) results keyed by (kind, exact
/// input, options). See the notes at the top of `cache/mod.rs` for the design; in short:
/// sharded `RwLock`s, lock-free repeat hits through per-thread fronts validated by shard
/// generations, CLOCK replacement, immutable `Arc`-shared entries, count and byte bounds,
/// and a checked mode.
///
/// Its results are the free functions' [`Split`] and [`Parse`], with the lifetime
/// `'static`: they share the cache entry.
///
/// ```
/// use smallarena_url::{Split, UrlCache};
/// let cache = UrlCache::new();
/// let t: Split<'static, str> = cache.split("http://a/b").unwrap();
/// let b = cache.split(b"http://a/b".as_slice()).unwrap(); // never the text entry
/// assert_eq!(t.path(), "/b");
/// assert_eq!(b.path(), b"/b");
/// assert_eq!(cache.stats().misses, 2);
/// assert!(t.ptr_eq(&cache.split("http://a/b").unwrap())); // a hit shares the entry
/// ```
pub struct UrlCache {
    fronts: Fronts,
    shards: Box<[Shard]>,
    seed: u64,
    checked: bool,
    divergences: AtomicU64,
    divergence_log: Mutex<Vec<String>>,
    capacity: usize,
    max_bytes: usize,
}

impl fmt::Debug for UrlCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlCache")
            .field("capacity", &self.capacity)
            .field("max_bytes", &self.max_bytes)
            .field("shards", &self.shards.len())
            .field("checked", &self.checked)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for UrlCache {
    fn default() -> Self {
        UrlCache::new()
    }
}

/// Divergences described by [`UrlCache::divergence_report`], at most.
const MAX_LOG: usize = 32;

impl UrlCache {
    /// Default entry bound, as CPython 3.11's `lru_cache` on `urlsplit`.
    pub const DEFAULT_CAPACITY: usize = 128;
    /// Default byte bound.
    pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

    /// A cache with the default bounds (128 entries, 1 MiB), not checked.
    pub fn new() -> Self {
        UrlCacheBuilder::default().build()
    }

    /// A cache with the default bounds in checked mode: every hit is re-parsed and compared.
    pub fn checked() -> Self {
        UrlCacheBuilder::default().checked(true).build()
    }

    /// A builder for other bounds.
    pub fn builder() -> UrlCacheBuilder {
        UrlCacheBuilder::default()
    }

    /// Whether this cache re-parses and compares on every hit.
    pub fn is_checked(&self) -> bool {
        self.checked
    }

    /// [`split`](crate::split) through the cache.
    ///
    /// # Errors
    /// As [`split`](crate::split); errors are not cached.
    pub fn split<K: Kind + ?Sized>(&self, url: &K) -> Result<Split<'static, K>, UrlError> {
        self.lookup(url, K::EMPTY, true)
    }

    /// [`split_with`](crate::split_with) through the cache.
    ///
    /// # Errors
    /// As [`split`](crate::split); errors are not cached.
    pub fn split_with<K: Kind + ?Sized>(
        &self,
        url: &K,
        opts: &Options<'_>,
    ) -> Result<Split<'static, K>, UrlError> {
        let scheme = clean_scheme(K::from_str_ref(opts.default_scheme));
        self.lookup(url, &scheme, opts.allow_fragments)
    }

    /// [`parse`](crate::parse) through the cache (the split is cached; params are located
    /// on the cached split, without allocating).
    ///
    /// # Errors
    /// As [`split`](crate::split).
    pub fn parse<K: Kind + ?Sized>(&self, url: &K) -> Result<Parse<'static, K>, UrlError> {
        self.split(url).map(Parse::from_split)
    }

    /// [`parse_with`](crate::parse_with) through the cache.
    ///
    /// # Errors
    /// As [`split`](crate::split).
    pub fn parse_with<K: Kind + ?Sized>(
        &self,
        url: &K,
        opts: &Options<'_>,
    ) -> Result<Parse<'static, K>, UrlError> {
        self.split_with(url, opts).map(Parse::from_split)
    }

    /// [`join`](crate::join) with both arguments split through the cache, as CPython's
    /// `urljoin` goes through the `urlsplit` cache.
    ///
    /// # Errors
    /// As [`split`](crate::split), for either argument.
    pub fn join<'a, K: Kind + ?Sized>(
        &self,
        base: &'a K,
        url: &'a K,
    ) -> Result<Cow<'a, K>, UrlError> {
        self.join_with(base, url, true)
    }

    /// [`join_with`](crate::join_with) with both arguments split through the cache.
    ///
    /// # Errors
    /// As [`split`](crate::split), for either argument.
    pub fn join_with<'a, K: Kind + ?Sized>(
        &self,
        base: &'a K,
        url: &'a K,
        allow_fragments: bool,
    ) -> Result<Cow<'a, K>, UrlError> {
        join_impl(base, url, allow_fragments, |u, scheme, af| {
            self.lookup(u, &clean_scheme(scheme), af)
        })
    }

    fn shard(&self, hash: u64) -> &Shard {
        let n = self.shards.len() as u64;
        &self.shards[((hash >> 32) % n) as usize]
    }

    /// The split of `url` with the (cleaned) default scheme `scheme`: from this thread's
    /// front, else from the shard, else split and kept.
    fn lookup<K: Kind + ?Sized>(
        &self,
        url: &K,
        scheme: &K,
        allow_fragments: bool,
    ) -> Result<Split<'static, K>, UrlError> {
        let key = Key::new(self.seed, url, scheme, allow_fragments);
        let shard = self.shard(key.hash);
        let hit = self.fronts.get(&key, shard).or_else(|| {
            let found = shard.get(&key)?;
            self.fronts
                .note_hit(&key, &found, |h| self.shard(h).generation());
            Some(found.entry)
        });
        if let Some(entry) = hit {
            if self.checked {
                self.verify(&key, &entry);
            }
            return Ok(Split::shared(entry));
        }
        shard.count_miss();
        let fresh = split_impl(url, scheme, allow_fragments)?;
        let entry = Arc::new(Stored::new(url, scheme, fresh));
        Ok(Split::shared(shard.insert(&key, entry)))
    }

    /// Checked mode: compares a hit with a fresh split, logging a difference.
    fn verify<K: Kind + ?Sized>(&self, key: &Key<'_, K>, entry: &Arc<Stored<K>>) {
        let hit = Split::shared(Arc::clone(entry));
        let fresh = split_impl(key.url, key.scheme, key.allow_fragments);
        if fresh.as_ref().is_ok_and(|f| *f == hit) {
            return;
        }
        self.divergences.fetch_add(1, Ordering::Relaxed);
        let mut log = self
            .divergence_log
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if log.len() < MAX_LOG {
            log.push(format!(
                "{:?} input {:?}: cached {:?}, fresh {:?}",
                K::TAG,
                key.url.lossy(),
                hit,
                fresh
            ));
        }
    }

    /// Checked mode: the first divergences found (at most 32), described.
    pub fn divergence_report(&self) -> Vec<String> {
        self.divergence_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The counters, summed over shards.
    pub fn stats(&self) -> CacheStats {
        let mut s = CacheStats {
            hits: self.fronts.hits(),
            divergences: self.divergences.load(Ordering::Relaxed),
            ..CacheStats::default()
        };
        for sh in self.shards.iter() {
            sh.add_stats(&mut s);
        }
        s
    }

    /// Removes every entry (counters are kept).
    pub fn clear(&self) {
        for sh in self.shards.iter() {
            sh.clear();
        }
    }
}
