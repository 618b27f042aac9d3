//! [`UrlCache`]: a bounded, sharded, kind-keyed cache of split results.
//!
//! # Design
//! - **Kind safety by construction.** Entries are stored as [`AnyEntry`], an enum with one
//!   variant per kind, and a typed lookup only ever accepts the variant of its own kind
//!   (`K::unwrap_entry`). The kind is also hashed into the key. A text entry therefore cannot
//!   answer a bytes request even on a hash collision: the 2005 `urlparse` bug is a type
//!   error here, not a convention.
//! - **No global lock on hits.** The cache is split into shards (8 by default), each a
//!   `RwLock` over a small table. Writers (misses) lock one shard only.
//! - **Lock-free repeat hits: per-thread fronts.** Each thread keeps a small front (512
//!   slots, two candidate slots per key) of entries it has hit, each stamped with its
//!   shard's *generation*, a counter bumped under the write lock whenever an entry leaves the
//!   shard (eviction, collision, `clear`). A front slot answers only while the stamp equals
//!   the shard's current generation, i.e. while the entry is still resident, so a front hit
//!   is exactly a shared-cache hit (same entry, same counts, same CLOCK marking); it just
//!   needs no lock: one atomic load, the key compare and the `Arc` clone. Other hits take
//!   the shard's *read* lock and refill the front. Entries over 512 bytes are not kept in
//!   fronts, so the evicted entries a front may still hold until its slot is reused pin at
//!   most 256 KiB per thread.
//! - **Hit counting without read-modify-write.** Each thread counts its hits of a cache in
//!   its own `AtomicU64` (registered once per thread with the cache), with a relaxed load
//!   and store: single writer, so exact and thread-safe; [`UrlCache::stats`] sums them.
//!   Misses, evictions and rejections keep per-shard atomic counters.
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
//!   uppercase scheme), which is rare.
//! - **Errors are not cached**, as with `functools.lru_cache`: an input that raises is
//!   re-parsed on every call.
//! - **Checked mode** ([`UrlCacheBuilder::checked`]) re-parses on every hit and compares
//!   with the cached answer, counting and logging divergences.

use std::borrow::{Borrow, Cow};
use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::ThreadId;

use super::join::{join_parts, join_unchanged};
use super::split::{
    clean_scheme, debug_components, parse_accessors, split_accessors, split_impl, split_params,
    Layout, Span, Split, PARSE_FIELDS, SPLIT_FIELDS,
};
use super::{Kind, Options, UrlError};

/// One cached split: the key (exact input and effective options) and the layout.
pub struct Entry<K: ?Sized> {
    input: Box<K>,
    /// The cleaned buffer when it is not a suffix of `input`.
    cleaned: Option<Box<K>>,
    /// Start of the cleaned buffer within `input` when `cleaned` is `None`.
    buf_start: usize,
    /// The effective (stripped, cleaned) default scheme.
    default_scheme: Box<K>,
    allow_fragments: bool,
    layout: Layout,
    /// CLOCK reference bit (replacement metadata; the answer itself is immutable).
    referenced: AtomicBool,
}

impl<K: Kind + ?Sized> Entry<K> {
    fn buf(&self) -> &K {
        match &self.cleaned {
            Some(c) => c,
            None => self.input.sub(self.buf_start, self.input.raw().len()),
        }
    }

    #[inline(always)]
    fn matches(&self, url: &K, scheme: &K, allow_fragments: bool) -> bool {
        self.allow_fragments == allow_fragments
            && same_bytes(self.input.raw(), url.raw())
            && same_bytes(self.default_scheme.raw(), scheme.raw())
    }

    /// Marks the entry referenced for CLOCK (a plain store, and only when not yet marked,
    /// so that hits do not keep writing the cache line).
    fn touch(&self) {
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }

    fn size(&self) -> usize {
        self.input.raw().len()
            + self.cleaned.as_ref().map_or(0, |c| c.raw().len())
            + self.default_scheme.raw().len()
            + std::mem::size_of::<Self>()
            + std::mem::size_of::<Slot>()
    }
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

/// A cache entry of either kind.
pub enum AnyEntry {
    Text(Arc<Entry<str>>),
    Bytes(Arc<Entry<[u8]>>),
}

impl AnyEntry {
    fn referenced(&self) -> &AtomicBool {
        match self {
            AnyEntry::Text(e) => &e.referenced,
            AnyEntry::Bytes(e) => &e.referenced,
        }
    }
}

struct Slot {
    hash: u64,
    entry: AnyEntry,
    size: usize,
}

/// Hasher for keys that are already 64-bit hashes.
#[derive(Default)]
struct IdHasher(u64);

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

struct ShardInner {
    index: HashMap<u64, usize, BuildHasherDefault<IdHasher>>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    hand: usize,
    live: usize,
    bytes: usize,
    cap: usize,
    max_bytes: usize,
}

impl ShardInner {
    fn remove(&mut self, i: usize) {
        if let Some(slot) = self.slots.get_mut(i).and_then(Option::take) {
            self.index.remove(&slot.hash);
            self.live -= 1;
            self.bytes -= slot.size;
            self.free.push(i);
        }
    }

    /// Evicts one entry by CLOCK; returns false when empty.
    fn evict_one(&mut self) -> bool {
        let n = self.slots.len();
        if self.live == 0 || n == 0 {
            return false;
        }
        for _ in 0..2 * n + 1 {
            let i = self.hand % n;
            self.hand = (i + 1) % n;
            if let Some(slot) = &self.slots[i] {
                if slot.entry.referenced().swap(false, Ordering::Relaxed) {
                    continue;
                }
                self.remove(i);
                return true;
            }
        }
        false
    }
}

/// Cache-line aligned shard, so that counters of different shards do not share a line.
#[repr(align(128))]
struct Shard {
    inner: RwLock<ShardInner>,
    /// Bumped (under the write lock) whenever an entry leaves the shard; a per-thread front
    /// slot stamped with an older generation may hold an entry that is no longer resident.
    generation: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    rejected: AtomicU64,
}

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
            .map(|i| Shard {
                inner: RwLock::new(ShardInner {
                    index: HashMap::default(),
                    slots: Vec::new(),
                    free: Vec::new(),
                    hand: 0,
                    live: 0,
                    bytes: 0,
                    cap: self.capacity / n + usize::from(i < self.capacity % n),
                    max_bytes: self.max_bytes / n,
                }),
                generation: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
            })
            .collect();
        UrlCache {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            thread_hits: Mutex::new(Vec::new()),
            fallback_hits: AtomicU64::new(0),
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

/// A bounded, thread-safe cache of [`split`](super::split) results keyed by (kind, exact
/// input, options). See the notes at the top of `cache.rs` for the design; in short: sharded
/// `RwLock`s, lock-free repeat hits through per-thread fronts validated by shard
/// generations, CLOCK replacement, immutable `Arc`-shared entries, count and byte bounds,
/// and a checked mode.
///
/// ```
/// use smallarena_url::UrlCache;
/// let cache = UrlCache::new();
/// let t = cache.split("http://a/b").unwrap();
/// let b = cache.split(b"http://a/b".as_slice()).unwrap(); // never the text entry
/// assert_eq!(t.path(), "/b");
/// assert_eq!(b.path(), b"/b");
/// assert_eq!(cache.stats().misses, 2);
/// ```
pub struct UrlCache {
    /// Unique among all caches ever built in the process (keys the per-thread fronts).
    uid: u64,
    /// Hit counters, one per thread that hit this cache, each written by its thread only
    /// (a relaxed load and store, no read-modify-write) and summed by [`UrlCache::stats`].
    thread_hits: Mutex<Vec<(ThreadId, Arc<AtomicU64>)>>,
    /// Hits counted while the thread's front was unavailable (thread teardown), plus the
    /// counts of retired per-thread counters.
    fallback_hits: AtomicU64,
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

#[inline(always)]
fn mix(a: u64, b: u64) -> u64 {
    let r = u128::from(a).wrapping_mul(u128::from(b));
    (r as u64) ^ ((r >> 64) as u64)
}

const M1: u64 = 0x9e37_79b9_7f4a_7c15;
const M2: u64 = 0xd6e8_feb8_6659_fd93;

/// The first (up to) 8 bytes of `b` as a little-endian word, without a `memcpy` call.
#[inline(always)]
fn word(b: &[u8]) -> u64 {
    match b.get(..8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        Some(w) => u64::from_le_bytes(w),
        None => b
            .iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
    }
}

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

const MAX_LOG: usize = 32;

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// Slots of a thread's front (direct-mapped by key hash).
const FRONT_SLOTS: usize = 512;
/// Entries bigger than this are not kept in fronts, so that the evicted entries a front may
/// still hold until its slot is reused pin at most `FRONT_SLOTS * FRONT_MAX_ENTRY` bytes
/// per thread.
const FRONT_MAX_ENTRY: usize = 512;

struct FrontSlot {
    hash: u64,
    /// The shard's generation when the entry was seen resident.
    generation: u64,
    entry: AnyEntry,
}

/// A thread's front for one cache: recently hit entries, answered without taking the
/// shard's lock while the shard's generation shows that no entry left it since. A front hit
/// is therefore exactly a hit of the shared cache (same entry, same counting, same CLOCK
/// marking); the front only saves the lock.
struct Front {
    uid: u64,
    hits: Option<Arc<AtomicU64>>,
    slots: Vec<Option<FrontSlot>>,
}

impl Front {
    /// Points the front at `cache`, dropping another cache's slots.
    fn enter<'a>(&'a mut self, cache: &'a UrlCache) -> &'a AtomicU64 {
        if self.uid != cache.uid || self.hits.is_none() {
            self.uid = cache.uid;
            self.slots.clear();
            self.slots.resize_with(FRONT_SLOTS, || None);
            self.hits = Some(cache.thread_counter());
        }
        self.hits.as_deref().unwrap_or(&cache.fallback_hits)
    }
}

thread_local! {
    static FRONT: RefCell<Front> = const {
        RefCell::new(Front {
            uid: 0,
            hits: None,
            slots: Vec::new(),
        })
    };
}

/// The two front slots a key may occupy.
#[inline]
fn front_slots(hash: u64) -> [usize; 2] {
    [
        hash as usize % FRONT_SLOTS,
        (hash >> 20) as usize % FRONT_SLOTS,
    ]
}

/// Adds one to a counter written only by the current thread: no read-modify-write needed.
fn bump_own(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

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

    fn key_hash<K: Kind + ?Sized>(&self, url: &K, scheme: &K, allow_fragments: bool) -> u64 {
        let tag = (K::TAG as u64) << 1 | u64::from(allow_fragments);
        let h = self.seed ^ tag.wrapping_mul(M2);
        let h = if scheme.raw().is_empty() {
            h
        } else {
            hash_bytes(h, scheme.raw())
        };
        mix(hash_bytes(h, url.raw()), M1 ^ tag)
    }

    /// This thread's hit counter for this cache (registered once per thread).
    fn thread_counter(&self) -> Arc<AtomicU64> {
        let me = std::thread::current().id();
        let mut reg = self.thread_hits.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = reg.iter().find(|(t, _)| *t == me) {
            return Arc::clone(c);
        }
        // Counters no thread holds any more (their thread exited or moved its front to
        // another cache) are folded into `fallback_hits`, so that the registry stays
        // bounded by the threads currently using this cache. Only holders of a clone write
        // a counter, and clones are only made here, under the lock.
        reg.retain(|(_, c)| {
            if Arc::strong_count(c) == 1 {
                self.fallback_hits
                    .fetch_add(c.load(Ordering::Relaxed), Ordering::Relaxed);
                false
            } else {
                true
            }
        });
        let c = Arc::new(AtomicU64::new(0));
        reg.push((me, Arc::clone(&c)));
        c
    }

    /// Counts a hit on the slow path, and remembers the entry in this thread's front.
    fn note_hit(&self, hash: u64, generation: u64, entry: AnyEntry, size_ok: bool) {
        let done = FRONT.try_with(|f| {
            let Ok(mut f) = f.try_borrow_mut() else {
                return false;
            };
            bump_own(f.enter(self));
            if size_ok {
                // Two candidate slots per key: the first that is free or out of date,
                // else the second.
                let [a, b] = front_slots(hash);
                let current = |s: &Option<FrontSlot>| {
                    s.as_ref().is_some_and(|s| {
                        s.generation == self.shard(s.hash).generation.load(Ordering::Relaxed)
                    })
                };
                let i = if current(&f.slots[a]) { b } else { a };
                f.slots[i] = Some(FrontSlot {
                    hash,
                    generation,
                    entry,
                });
            }
            true
        });
        if done != Ok(true) {
            self.fallback_hits.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn shard(&self, hash: u64) -> &Shard {
        let n = self.shards.len() as u64;
        &self.shards[((hash >> 32) % n) as usize]
    }

    /// [`split`](super::split) through the cache.
    ///
    /// # Errors
    /// As [`split`](super::split); errors are not cached.
    pub fn split<K: Kind + ?Sized>(&self, url: &K) -> Result<CachedSplit<K>, UrlError> {
        self.split_with(url, &Options::default())
    }

    /// [`split_with`](super::split_with) through the cache.
    ///
    /// # Errors
    /// As [`split`](super::split); errors are not cached.
    pub fn split_with<K: Kind + ?Sized>(
        &self,
        url: &K,
        opts: &Options<'_>,
    ) -> Result<CachedSplit<K>, UrlError> {
        let scheme = clean_scheme(K::from_str_ref(opts.default_scheme));
        self.split_key(url, &scheme, opts.allow_fragments)
    }

    /// [`parse`](super::parse) through the cache (the split is cached; params are located on
    /// the cached split, without allocating).
    ///
    /// # Errors
    /// As [`split`](super::split).
    pub fn parse<K: Kind + ?Sized>(&self, url: &K) -> Result<CachedParse<K>, UrlError> {
        self.split(url).map(CachedParse::new)
    }

    /// [`parse_with`](super::parse_with) through the cache.
    ///
    /// # Errors
    /// As [`split`](super::split).
    pub fn parse_with<K: Kind + ?Sized>(
        &self,
        url: &K,
        opts: &Options<'_>,
    ) -> Result<CachedParse<K>, UrlError> {
        self.split_with(url, opts).map(CachedParse::new)
    }

    /// [`join_with`](super::join_with) with both arguments parsed through the cache, as
    /// CPython's `urljoin` goes through the `urlsplit` cache.
    ///
    /// # Errors
    /// As [`split`](super::split), for either argument.
    pub fn join<'a, K: Kind + ?Sized>(
        &self,
        base: &'a K,
        url: &'a K,
        allow_fragments: bool,
    ) -> Result<Cow<'a, K>, UrlError> {
        if let Some(same) = join_unchanged(base, url) {
            return Ok(Cow::Borrowed(same));
        }
        let b = CachedParse::new(self.split_key(base, K::EMPTY, allow_fragments)?);
        let bscheme = clean_scheme(b.scheme());
        let u = CachedParse::new(self.split_key(url, &bscheme, allow_fragments)?);
        Ok(join_parts(url, b.components(), u.components()))
    }

    fn split_key<K: Kind + ?Sized>(
        &self,
        url: &K,
        scheme: &K,
        allow_fragments: bool,
    ) -> Result<CachedSplit<K>, UrlError> {
        let hash = self.key_hash(url, scheme, allow_fragments);
        let shard = self.shard(hash);
        // The front: no lock, no shared write (the hit counter is this thread's own).
        let generation = shard.generation.load(Ordering::Acquire);
        let front = FRONT
            .try_with(|f| {
                let mut f = f.try_borrow_mut().ok()?;
                if f.uid != self.uid {
                    return None;
                }
                let [a, b] = front_slots(hash);
                let slot = [a, b].into_iter().find_map(|i| {
                    f.slots
                        .get(i)?
                        .as_ref()
                        .filter(|s| s.hash == hash && s.generation == generation)
                })?;
                let e = K::unwrap_entry(&slot.entry)?;
                if !e.matches(url, scheme, allow_fragments) {
                    return None;
                }
                e.touch();
                let e = Arc::clone(e);
                bump_own(f.enter(self));
                Some(e)
            })
            .ok()
            .flatten();
        let found = front.map(|e| (e, None)).or_else(|| {
            let g = shard.inner.read().unwrap_or_else(|e| e.into_inner());
            let slot = g
                .index
                .get(&hash)
                .and_then(|&i| g.slots.get(i))
                .and_then(Option::as_ref)?;
            let e = K::unwrap_entry(&slot.entry)?;
            if !e.matches(url, scheme, allow_fragments) {
                return None;
            }
            e.touch();
            // Read under the lock: the entry is resident at this generation.
            let generation = shard.generation.load(Ordering::Acquire);
            Some((Arc::clone(e), Some((generation, slot.size))))
        });
        if let Some((entry, slow)) = found {
            if let Some((generation, size)) = slow {
                let any = K::wrap(Arc::clone(&entry));
                self.note_hit(hash, generation, any, size <= FRONT_MAX_ENTRY);
            }
            let hit = CachedSplit { entry };
            if self.checked {
                self.verify(url, scheme, allow_fragments, &hit);
            }
            return Ok(hit);
        }
        shard.misses.fetch_add(1, Ordering::Relaxed);
        let fresh = split_impl(url, scheme, allow_fragments)?;
        let (cleaned, buf_start) = match fresh.buf_cow() {
            Cow::Borrowed(b) => (None, url.raw().len() - b.raw().len()),
            Cow::Owned(o) => (Some(Borrow::<K>::borrow(o).boxed()), 0),
        };
        let entry = Arc::new(Entry {
            input: url.boxed(),
            cleaned,
            buf_start,
            default_scheme: scheme.boxed(),
            allow_fragments,
            layout: *fresh.layout(),
            referenced: AtomicBool::new(false),
        });
        Ok(CachedSplit {
            entry: self.insert(shard, hash, entry),
        })
    }

    fn insert<K: Kind + ?Sized>(
        &self,
        shard: &Shard,
        hash: u64,
        entry: Arc<Entry<K>>,
    ) -> Arc<Entry<K>> {
        let size = entry.size();
        let mut g = shard.inner.write().unwrap_or_else(|e| e.into_inner());
        if g.cap == 0 || size > g.max_bytes {
            shard.rejected.fetch_add(1, Ordering::Relaxed);
            return entry;
        }
        if let Some(&i) = g.index.get(&hash) {
            let same = g
                .slots
                .get(i)
                .and_then(Option::as_ref)
                .and_then(|s| K::unwrap_entry(&s.entry))
                .filter(|e| e.matches(&entry.input, &entry.default_scheme, entry.allow_fragments))
                .cloned();
            if let Some(existing) = same {
                // Another thread inserted the same key meanwhile.
                return existing;
            }
            // A different key with the same 64-bit hash: replace it.
            g.remove(i);
            shard.generation.fetch_add(1, Ordering::Release);
            shard.evictions.fetch_add(1, Ordering::Relaxed);
        }
        while g.live >= g.cap || g.bytes + size > g.max_bytes {
            if !g.evict_one() {
                break;
            }
            shard.generation.fetch_add(1, Ordering::Release);
            shard.evictions.fetch_add(1, Ordering::Relaxed);
        }
        let slot = Slot {
            hash,
            entry: K::wrap(Arc::clone(&entry)),
            size,
        };
        let i = match g.free.pop() {
            Some(i) => {
                g.slots[i] = Some(slot);
                i
            }
            None => {
                g.slots.push(Some(slot));
                g.slots.len() - 1
            }
        };
        g.index.insert(hash, i);
        g.live += 1;
        g.bytes += size;
        entry
    }

    fn verify<K: Kind + ?Sized>(
        &self,
        url: &K,
        scheme: &K,
        allow_fragments: bool,
        hit: &CachedSplit<K>,
    ) {
        let fresh: Result<Split<'_, K>, UrlError> = split_impl(url, scheme, allow_fragments);
        let same = match &fresh {
            Ok(f) => f.components() == hit.components(),
            Err(_) => false,
        };
        if !same {
            self.divergences.fetch_add(1, Ordering::Relaxed);
            let mut log = self
                .divergence_log
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if log.len() < MAX_LOG {
                log.push(format!(
                    "{:?} input {:?}: cached {:?}, fresh {:?}",
                    K::TAG,
                    url.lossy(),
                    hit,
                    fresh
                ));
            }
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
            divergences: self.divergences.load(Ordering::Relaxed),
            ..CacheStats::default()
        };
        {
            // Under the registry lock, so that a counter being retired into
            // `fallback_hits` is counted exactly once.
            let reg = self.thread_hits.lock().unwrap_or_else(|e| e.into_inner());
            s.hits = self.fallback_hits.load(Ordering::Relaxed);
            for (_, c) in reg.iter() {
                s.hits += c.load(Ordering::Relaxed);
            }
        }
        for sh in self.shards.iter() {
            s.misses += sh.misses.load(Ordering::Relaxed);
            s.evictions += sh.evictions.load(Ordering::Relaxed);
            s.rejected += sh.rejected.load(Ordering::Relaxed);
            let g = sh.inner.read().unwrap_or_else(|e| e.into_inner());
            s.entries += g.live;
            s.bytes += g.bytes;
        }
        s
    }

    /// Removes every entry (counters are kept).
    pub fn clear(&self) {
        for sh in self.shards.iter() {
            let mut g = sh.inner.write().unwrap_or_else(|e| e.into_inner());
            g.index.clear();
            g.slots.clear();
            g.free.clear();
            g.hand = 0;
            g.live = 0;
            g.bytes = 0;
            sh.generation.fetch_add(1, Ordering::Release);
        }
    }
}

/// A cached split: immutable, shared (`Clone` is an `Arc` clone), of the kind `K` of its
/// input.
pub struct CachedSplit<K: Kind + ?Sized> {
    entry: Arc<Entry<K>>,
}

impl<K: Kind + ?Sized> Clone for CachedSplit<K> {
    fn clone(&self) -> Self {
        CachedSplit {
            entry: Arc::clone(&self.entry),
        }
    }
}

impl<K: Kind + ?Sized> CachedSplit<K> {
    fn span(&self, s: Span) -> &K {
        self.entry.buf().sub(s.start, s.end)
    }

    /// The exact input this result was parsed from.
    pub fn input(&self) -> &K {
        &self.entry.input
    }

    fn layout(&self) -> &Layout {
        &self.entry.layout
    }

    fn default_scheme(&self) -> &K {
        &self.entry.default_scheme
    }

    split_accessors!();

    /// Whether `self` and `other` share the same cache entry.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.entry, &other.entry)
    }
}

impl<K: Kind + ?Sized> fmt::Debug for CachedSplit<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_components(f, "CachedSplit", &SPLIT_FIELDS, &self.components())
    }
}

/// A cached parse: a [`CachedSplit`] plus the location of the params.
#[derive(Clone)]
pub struct CachedParse<K: Kind + ?Sized> {
    split: CachedSplit<K>,
    path: Span,
    params: Span,
}

impl<K: Kind + ?Sized> CachedParse<K> {
    fn new(split: CachedSplit<K>) -> Self {
        let (path, params) = split_params(
            split.scheme().raw(),
            split.entry.buf().raw(),
            split.entry.layout.path,
        );
        CachedParse {
            split,
            path,
            params,
        }
    }

    /// The underlying cached split.
    pub fn as_split(&self) -> &CachedSplit<K> {
        &self.split
    }

    parse_accessors!();
}

impl<K: Kind + ?Sized> fmt::Debug for CachedParse<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_components(f, "CachedParse", &PARSE_FIELDS, &self.components())
    }
}
