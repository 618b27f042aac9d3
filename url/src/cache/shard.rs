//! One shard of the cache: its entries under a read-write lock, their count and byte bounds,
//! CLOCK replacement, the generation that tells per-thread fronts whether an entry may have
//! left, and the shard's counters.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::key::{AnyStored, IdHasher, Key};
use super::CacheStats;
use crate::result::Stored;
use crate::Kind;

struct Slot {
    hash: u64,
    entry: AnyStored,
    allow_fragments: bool,
    /// Bytes accounted to the entry.
    size: usize,
}

/// The entries of a shard.
///
/// Invariants: `index` maps the hash of every occupied slot to its index; `free` lists the
/// unoccupied indices below `slots.len()`; `live` and `bytes` are the number and sizes of
/// the occupied slots; `slots.len() <= cap`, because an entry is only added when
/// `live < cap`, into a free index first.
struct Table {
    index: HashMap<u64, usize, BuildHasherDefault<IdHasher>>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// The CLOCK hand: the next index to consider for eviction.
    hand: usize,
    live: usize,
    bytes: usize,
    cap: usize,
    max_bytes: usize,
}

impl Table {
    fn remove(&mut self, i: usize) {
        if let Some(slot) = self.slots.get_mut(i).and_then(Option::take) {
            self.index.remove(&slot.hash);
            self.live -= 1;
            self.bytes -= slot.size;
            self.free.push(i);
        }
    }

    /// Evicts one entry by CLOCK (second chance: a referenced entry loses its mark and is
    /// passed over once); returns false when empty.
    fn evict_one(&mut self, referenced: &[AtomicBool]) -> bool {
        let n = self.slots.len();
        if self.live == 0 || n == 0 {
            return false;
        }
        for _ in 0..2 * n + 1 {
            let i = self.hand % n;
            self.hand = (i + 1) % n;
            if self.slots[i].is_some() {
                if referenced
                    .get(i)
                    .is_some_and(|r| r.swap(false, Ordering::Relaxed))
                {
                    continue;
                }
                self.remove(i);
                return true;
            }
        }
        false
    }
}

/// A resident entry found by [`Shard::get`].
pub(super) struct Found<K: ?Sized> {
    pub(super) entry: Arc<Stored<K>>,
    /// Its slot index in the shard.
    pub(super) slot: usize,
    /// The shard's generation while the entry was seen resident.
    pub(super) generation: u64,
    /// Bytes accounted to it.
    pub(super) size: usize,
}

/// Cache-line aligned, so that the counters of different shards do not share a line.
#[repr(align(128))]
pub(super) struct Shard {
    table: RwLock<Table>,
    /// CLOCK reference bits, one per slot index (`cap` of them): set by hits, under the read
    /// lock or (from a per-thread front) under none; cleared by the hand under the write
    /// lock. A bit set by a front hit just after its entry left can give the slot's next
    /// entry a second chance it did not earn: that changes only which entry goes first.
    referenced: Box<[AtomicBool]>,
    /// Bumped (under the write lock) whenever an entry leaves the shard; a per-thread front
    /// slot stamped with an older generation may hold an entry that is no longer resident.
    generation: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    rejected: AtomicU64,
}

impl Shard {
    /// An empty shard for at most `cap` entries and `max_bytes` bytes.
    pub(super) fn new(cap: usize, max_bytes: usize) -> Shard {
        Shard {
            table: RwLock::new(Table {
                index: HashMap::default(),
                slots: Vec::new(),
                free: Vec::new(),
                hand: 0,
                live: 0,
                bytes: 0,
                cap,
                max_bytes,
            }),
            referenced: (0..cap).map(|_| AtomicBool::new(false)).collect(),
            generation: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// The current generation (see [`Shard::generation`]'s field).
    #[inline(always)]
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Marks slot `i` referenced for CLOCK (a plain store, and only when not yet marked, so
    /// that hits do not keep writing the cache line).
    #[inline(always)]
    pub(super) fn touch(&self, i: usize) {
        if let Some(r) = self.referenced.get(i) {
            if !r.load(Ordering::Relaxed) {
                r.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The entry answering `key`, if resident (under the read lock), marked referenced.
    pub(super) fn get<K: Kind + ?Sized>(&self, key: &Key<'_, K>) -> Option<Found<K>> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        let i = *t.index.get(&key.hash)?;
        let slot = t.slots.get(i)?.as_ref()?;
        let entry = slot.entry.get::<K>()?;
        if !key.matches(entry, slot.allow_fragments) {
            return None;
        }
        self.touch(i);
        Some(Found {
            entry: Arc::clone(entry),
            slot: i,
            // Read under the lock: the entry is resident at this generation.
            generation: self.generation(),
            size: slot.size,
        })
    }

    /// Counts a lookup that had to split.
    pub(super) fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps `entry`, the answer to `key`, evicting by CLOCK to make room; returns the
    /// entry to hand out (the resident one if another thread inserted the same key
    /// meanwhile). An entry over the shard's byte bound, or of a kind the cache cannot tag,
    /// is returned without being kept.
    pub(super) fn insert<K: Kind + ?Sized>(
        &self,
        key: &Key<'_, K>,
        entry: Arc<Stored<K>>,
    ) -> Arc<Stored<K>> {
        let size = entry.size() + std::mem::size_of::<Slot>();
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        let tagged = AnyStored::new(&entry);
        let Some(tagged) = tagged.filter(|_| t.cap > 0 && size <= t.max_bytes) else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return entry;
        };
        if let Some(&i) = t.index.get(&key.hash) {
            let same = t
                .slots
                .get(i)
                .and_then(Option::as_ref)
                .and_then(|s| {
                    s.entry
                        .get::<K>()
                        .filter(|e| key.matches(e, s.allow_fragments))
                })
                .cloned();
            if let Some(existing) = same {
                // Another thread inserted the same key meanwhile.
                return existing;
            }
            // A different key with the same 64-bit hash: replace it.
            t.remove(i);
            self.count_eviction();
        }
        while t.live >= t.cap || t.bytes + size > t.max_bytes {
            if !t.evict_one(&self.referenced) {
                break;
            }
            self.count_eviction();
        }
        let slot = Slot {
            hash: key.hash,
            entry: tagged,
            allow_fragments: key.allow_fragments,
            size,
        };
        let i = match t.free.pop() {
            Some(i) => {
                t.slots[i] = Some(slot);
                i
            }
            None => {
                t.slots.push(Some(slot));
                t.slots.len() - 1
            }
        };
        if let Some(r) = self.referenced.get(i) {
            r.store(false, Ordering::Relaxed);
        }
        t.index.insert(key.hash, i);
        t.live += 1;
        t.bytes += size;
        entry
    }

    /// An entry left (called under the write lock).
    fn count_eviction(&self) {
        self.generation.fetch_add(1, Ordering::Release);
        self.evictions.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes every entry (counters are kept).
    pub(super) fn clear(&self) {
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        t.index.clear();
        t.slots.clear();
        t.free.clear();
        t.hand = 0;
        t.live = 0;
        t.bytes = 0;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Adds this shard's counters and occupancy to `s`.
    pub(super) fn add_stats(&self, s: &mut CacheStats) {
        s.misses += self.misses.load(Ordering::Relaxed);
        s.evictions += self.evictions.load(Ordering::Relaxed);
        s.rejected += self.rejected.load(Ordering::Relaxed);
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        s.entries += t.live;
        s.bytes += t.bytes;
    }
}
