//! Fixed-schema records: many small maps that share one key table.
//!
//! When many records draw their keys from a set known up front, storing a
//! hash table and a private copy of every key in each instance wastes most of
//! the memory. Following the idea behind CPython's key-sharing dictionaries,
//! a [`Schema`] holds the key table once (behind an [`Arc`]), and each
//! [`Record`] stores only a presence bitmap and the values, in a single heap
//! allocation.
//!
//! Key names are resolved to a [`Slot`] once with [`Schema::slot`]; slot-based
//! access is then a bit test and an indexed load. Name-based access uses a
//! small, fast (non-DoS-resistant) hash table inside the schema, or a linear
//! scan for tiny schemas.
//!
//! # Example
//!
//! ```
//! use smallarena_slotted::{Record, Schema};
//!
//! let schema = Schema::new(["name", "age", "email"]);
//! let age = schema.slot("age").unwrap();
//!
//! let mut r: Record<String> = Record::new(&schema);
//! r.insert("name", "Ada".to_string()).unwrap();
//! r.insert_slot(age, "36".to_string());
//!
//! assert_eq!(r.get("name").map(String::as_str), Some("Ada"));
//! assert_eq!(r.get_slot(age).map(String::as_str), Some("36"));
//! assert!(!r.contains_key("email"));
//! assert_eq!(r.len(), 2);
//!
//! // Keys outside the schema are refused.
//! let err = r.insert("phone", "555".to_string()).unwrap_err();
//! assert_eq!(err.to_string(), "unknown key \"phone\"");
//!
//! // Iteration follows schema order.
//! let keys: Vec<&str> = r.keys().collect();
//! assert_eq!(keys, ["name", "age"]);
//! assert_eq!(format!("{r:?}"), r#"{"name": "Ada", "age": "36"}"#);
//! ```
//!
//! # Slots from another schema
//!
//! A [`Slot`] remembers the identity of the schema that produced it (clones
//! of a [`Schema`] share that identity). Passing a slot to a record of a
//! different schema is a programming error, like an out-of-bounds index: all
//! `*_slot` methods **panic** with a message naming the mismatch. Use
//! [`Schema::owns`] or [`Record::schema`] to check beforehand if needed.
//!
//! # Serde
//!
//! With the `serde` cargo feature, a [`Record`] serializes as a map in schema
//! order, and deserializes against a schema through `RecordSeed`
//! (a `serde::de::DeserializeSeed`), rejecting unknown and duplicate keys.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::alloc::{self, Layout};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::iter::FusedIterator;
use std::marker::PhantomData;
use std::mem;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Error returned when a key is not part of a record's [`Schema`].
///
/// Displays like a Python `KeyError`: `unknown key "x"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UnknownKey {
    key: Box<str>,
}

impl UnknownKey {
    /// The key that was refused.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown key {:?}", &*self.key)
    }
}

impl std::error::Error for UnknownKey {}

/// Error returned by [`Schema::try_new`] when a key name appears twice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DuplicateKey {
    key: Box<str>,
}

impl DuplicateKey {
    /// The key that appeared more than once.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for DuplicateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "duplicate key {:?} in schema", &*self.key)
    }
}

impl std::error::Error for DuplicateKey {}

// ---------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------

/// Schemas up to this many keys resolve names by linear scan.
const LINEAR_SCAN_MAX: usize = 8;
/// Marker for an empty hash table bucket.
const EMPTY: u32 = u32::MAX;

static NEXT_SCHEMA_ID: AtomicU64 = AtomicU64::new(1);

/// A small, fast, non-cryptographic string hash (Fx-style multiply-rotate).
///
/// Not resistant to hash flooding; the table it indexes is built once from
/// trusted schema keys and only ever probed, never grown by lookups.
#[inline]
fn hash_str(s: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = s.len() as u64;
    let mut bytes = s.as_bytes();
    while bytes.len() >= 8 {
        let (head, rest) = bytes.split_at(8);
        let w = u64::from_le_bytes(head.try_into().expect("8-byte chunk"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
        bytes = rest;
    }
    if bytes.len() >= 4 {
        let (head, rest) = bytes.split_at(4);
        let w = u32::from_le_bytes(head.try_into().expect("4-byte chunk")) as u64;
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
        bytes = rest;
    }
    for &b in bytes {
        h = (h.rotate_left(5) ^ b as u64).wrapping_mul(K);
    }
    // Final avalanche so the high bits used for bucket selection are mixed.
    h ^= h >> 32;
    h = h.wrapping_mul(K);
    h ^ (h >> 29)
}

#[derive(Debug)]
struct SchemaInner {
    id: u64,
    /// Number of `u64` presence words per record (`max(1, ceil(len / 64))`).
    words: usize,
    keys: Box<[Box<str>]>,
    /// Open-addressing table of key indices (empty for tiny schemas).
    table: Box<[u32]>,
    /// `table.len() - 1` (table length is a power of two), or 0 if no table.
    mask: usize,
}

impl SchemaInner {
    #[inline]
    fn index_of(&self, key: &str) -> Option<usize> {
        if self.table.is_empty() {
            return self.keys.iter().position(|k| **k == *key);
        }
        let mut pos = (hash_str(key) as usize) & self.mask;
        loop {
            let idx = self.table[pos];
            if idx == EMPTY {
                return None;
            }
            if *self.keys[idx as usize] == *key {
                return Some(idx as usize);
            }
            pos = (pos + 1) & self.mask;
        }
    }
}

/// A shared, immutable table of key names.
///
/// A `Schema` is a cheap-to-clone handle (one [`Arc`]) to a key table; all
/// clones share the same identity, so [`Slot`]s obtained from any clone work
/// with records created from any other clone.
///
/// Two schemas compare equal (`==`) when they list the same keys in the same
/// order, even if they were created separately; slots, however, are tied to
/// schema *identity*, not equality.
#[derive(Clone)]
pub struct Schema {
    inner: Arc<SchemaInner>,
}

impl Schema {
    /// Builds a schema from key names, in the given order.
    ///
    /// Accepts any iterator of string-like items, e.g. `["a", "b"]` or
    /// `vec_of_strings.iter()`.
    ///
    /// # Panics
    ///
    /// Panics if a key appears more than once, or if there are more than
    /// `u32::MAX - 1` keys. Use [`Schema::try_new`] to handle duplicates.
    pub fn new<I>(keys: I) -> Schema
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        match Schema::try_new(keys) {
            Ok(s) => s,
            Err(e) => panic!("Schema::new: {e}"),
        }
    }

    /// Builds a schema from key names, in the given order, or returns
    /// [`DuplicateKey`] if a name appears more than once.
    ///
    /// # Panics
    ///
    /// Panics if there are more than `u32::MAX - 1` keys.
    pub fn try_new<I>(keys: I) -> Result<Schema, DuplicateKey>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let keys: Box<[Box<str>]> = keys.into_iter().map(|k| Box::from(k.as_ref())).collect();
        assert!(
            keys.len() < EMPTY as usize,
            "Schema: too many keys ({})",
            keys.len()
        );
        let n = keys.len();
        let (table, mask) = if n <= LINEAR_SCAN_MAX {
            for (i, k) in keys.iter().enumerate() {
                if keys[..i].contains(k) {
                    return Err(DuplicateKey { key: k.clone() });
                }
            }
            (Box::<[u32]>::default(), 0)
        } else {
            // Load factor at most 1/2.
            let cap = (n * 2).next_power_of_two();
            let mask = cap - 1;
            let mut table = vec![EMPTY; cap].into_boxed_slice();
            for (i, k) in keys.iter().enumerate() {
                let mut pos = (hash_str(k) as usize) & mask;
                loop {
                    let slot = table[pos];
                    if slot == EMPTY {
                        table[pos] = i as u32;
                        break;
                    }
                    if keys[slot as usize] == *k {
                        return Err(DuplicateKey { key: k.clone() });
                    }
                    pos = (pos + 1) & mask;
                }
            }
            (table, mask)
        };
        let inner = SchemaInner {
            id: NEXT_SCHEMA_ID.fetch_add(1, Ordering::Relaxed),
            words: n.div_ceil(64).max(1),
            keys,
            table,
            mask,
        };
        Ok(Schema {
            inner: Arc::new(inner),
        })
    }

    /// Number of keys in the schema.
    #[inline]
    pub fn len(&self) -> usize {
        self.inner.keys.len()
    }

    /// Returns `true` if the schema has no keys.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.inner.keys.is_empty()
    }

    /// The key names, in schema order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + DoubleEndedIterator + '_ {
        self.inner.keys.iter().map(|k| &**k)
    }

    /// Resolves a key name to a [`Slot`], or `None` if it is not in the schema.
    #[inline]
    pub fn slot(&self, key: &str) -> Option<Slot> {
        self.inner.index_of(key).map(|index| Slot {
            schema_id: self.inner.id,
            index,
        })
    }

    /// Position of `key` in schema order, if present.
    #[inline]
    pub fn index_of(&self, key: &str) -> Option<usize> {
        self.inner.index_of(key)
    }

    /// The key name a slot of this schema refers to, or `None` if the slot
    /// belongs to another schema.
    pub fn key_of(&self, slot: Slot) -> Option<&str> {
        if self.owns(slot) {
            Some(&self.inner.keys[slot.index])
        } else {
            None
        }
    }

    /// Returns `true` if `slot` was produced by this schema (or a clone of it).
    #[inline]
    pub fn owns(&self, slot: Slot) -> bool {
        slot.schema_id == self.inner.id
    }

    /// Returns `true` if both handles refer to the same schema instance
    /// (the identity slots are checked against).
    #[inline]
    pub fn ptr_eq(a: &Schema, b: &Schema) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }

    #[inline]
    fn words(&self) -> usize {
        self.inner.words
    }
}

impl PartialEq for Schema {
    fn eq(&self, other: &Schema) -> bool {
        Schema::ptr_eq(self, other) || self.inner.keys == other.inner.keys
    }
}

impl Eq for Schema {}

impl Hash for Schema {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.keys.hash(state);
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schema")
            .field(&self.inner.keys.as_ref())
            .finish()
    }
}

/// A key of a particular [`Schema`], resolved once for fast access.
///
/// Obtain one with [`Schema::slot`]. Using a slot with a record of another
/// schema panics (see the [module docs](self#slots-from-another-schema)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    schema_id: u64,
    index: usize,
}

impl Slot {
    /// Position of the key in schema order.
    #[inline]
    pub fn index(self) -> usize {
        self.index
    }
}

// ---------------------------------------------------------------------------
// Record
// ---------------------------------------------------------------------------

/// A map from the keys of a [`Schema`] to values of type `V`.
///
/// # Layout
///
/// A record is a `Schema` handle plus a pointer to **one** heap block laid
/// out as `[u64; W]` presence words followed by `[V; N]` value storage,
/// where `N = schema.len()` and `W = max(1, ceil(N / 64))`.
///
/// # Invariants
///
/// * `block` was allocated with `Self::layout(W, N)` and is owned
///   exclusively by this record. The schema handle is never replaced, so
///   `W`, `N` and the layout stay fixed for the record's lifetime.
/// * The first `W` `u64`s of the block are always initialized.
/// * Value slot `i < N` holds an initialized `V` **if and only if** bit
///   `i % 64` of word `i / 64` is set. Bits at positions `>= N` are never set.
///
/// Dropping a record drops exactly the values whose bits are set.
///
/// # Equality and hashing
///
/// Two records are equal when their schemas list the same keys in the same
/// order and they hold equal values for the same keys.
pub struct Record<V> {
    schema: Schema,
    block: NonNull<u64>,
    _owns: PhantomData<V>,
}

// SAFETY: a `Record<V>` owns its `V`s exactly like a `Box<[V]>` would, and the
// schema handle is an `Arc` of immutable, `Send + Sync` data. No interior
// mutability is exposed through `&Record`.
unsafe impl<V: Send> Send for Record<V> {}
// SAFETY: see the `Send` impl; `&Record<V>` only hands out `&V`.
unsafe impl<V: Sync> Sync for Record<V> {}

impl<V> Record<V> {
    /// Byte offset of the value array inside the block.
    #[inline]
    fn values_offset(words: usize) -> usize {
        let base = words * mem::size_of::<u64>();
        let align = mem::align_of::<V>();
        (base + align - 1) & !(align - 1)
    }

    /// Layout of the block for a schema with `words` words and `n` keys.
    fn layout(words: usize, n: usize) -> Layout {
        let w = Layout::array::<u64>(words).expect("record layout overflow");
        let v = Layout::array::<V>(n).expect("record layout overflow");
        let (l, off) = w.extend(v).expect("record layout overflow");
        debug_assert_eq!(off, Self::values_offset(words));
        l.pad_to_align()
    }

    /// Creates an empty record for `schema` (one heap allocation).
    pub fn new(schema: &Schema) -> Record<V> {
        let words = schema.words();
        let layout = Self::layout(words, schema.len());
        // SAFETY: `layout` has non-zero size because `words >= 1`.
        let raw = unsafe { alloc::alloc(layout) };
        let Some(block) = NonNull::new(raw.cast::<u64>()) else {
            alloc::handle_alloc_error(layout)
        };
        // SAFETY: the block is at least `words` u64s long and u64-aligned
        // (layout starts with `[u64; words]`); zeroing establishes the
        // "no value present" invariant.
        unsafe { ptr::write_bytes(block.as_ptr(), 0, words) };
        Record {
            schema: schema.clone(),
            block,
            _owns: PhantomData,
        }
    }

    /// The schema this record was created with.
    #[inline]
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    #[inline]
    fn words(&self) -> &[u64] {
        // SAFETY: invariant: the first `W` u64s of the block are initialized,
        // and `&self` forbids concurrent mutation through this record.
        unsafe { std::slice::from_raw_parts(self.block.as_ptr(), self.schema.words()) }
    }

    #[inline]
    fn words_mut(&mut self) -> &mut [u64] {
        // SAFETY: as in `words`; `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.block.as_ptr(), self.schema.words()) }
    }

    #[inline]
    fn is_present(&self, i: usize) -> bool {
        self.words()[i / 64] & (1u64 << (i % 64)) != 0
    }

    #[inline]
    fn set_bit(&mut self, i: usize) {
        self.words_mut()[i / 64] |= 1u64 << (i % 64);
    }

    #[inline]
    fn clear_bit(&mut self, i: usize) {
        self.words_mut()[i / 64] &= !(1u64 << (i % 64));
    }

    /// Pointer to value storage `i`. Caller must ensure `i < N`.
    #[inline]
    fn value_ptr(&self, i: usize) -> *mut V {
        debug_assert!(i < self.schema.len());
        let off = Self::values_offset(self.schema.words());
        // SAFETY: `off + i * size_of::<V>()` stays within the block allocated
        // with `Self::layout` since `i < N` (checked by callers).
        unsafe { self.block.as_ptr().cast::<u8>().add(off).cast::<V>().add(i) }
    }

    #[inline]
    fn check_slot(&self, slot: Slot) -> usize {
        assert!(
            self.schema.owns(slot),
            "slotted: Slot (index {}) belongs to a different Schema than this Record",
            slot.index
        );
        slot.index
    }

    #[inline]
    fn index_of(&self, key: &str) -> Option<usize> {
        self.schema.inner.index_of(key)
    }

    #[inline]
    fn get_index(&self, i: usize) -> Option<&V> {
        if self.is_present(i) {
            // SAFETY: bit `i` set => value `i` initialized (invariant); the
            // reference is bounded by `&self`.
            Some(unsafe { &*self.value_ptr(i) })
        } else {
            None
        }
    }

    #[inline]
    fn get_mut_index(&mut self, i: usize) -> Option<&mut V> {
        if self.is_present(i) {
            // SAFETY: bit `i` set => value `i` initialized; `&mut self` gives
            // exclusive access for the returned lifetime.
            Some(unsafe { &mut *self.value_ptr(i) })
        } else {
            None
        }
    }

    fn insert_index(&mut self, i: usize, value: V) -> Option<V> {
        let p = self.value_ptr(i);
        if self.is_present(i) {
            // SAFETY: bit `i` set => value `i` initialized; we swap in a new
            // initialized value, so the bit stays correct.
            Some(unsafe { ptr::replace(p, value) })
        } else {
            // SAFETY: slot `i` is in bounds and uninitialized (bit clear);
            // writing initializes it, then we set the bit.
            unsafe { ptr::write(p, value) };
            self.set_bit(i);
            None
        }
    }

    fn remove_index(&mut self, i: usize) -> Option<V> {
        if self.is_present(i) {
            self.clear_bit(i);
            // SAFETY: bit `i` was set => value `i` initialized; the bit is now
            // clear, so ownership moves out exactly once.
            Some(unsafe { ptr::read(self.value_ptr(i)) })
        } else {
            None
        }
    }

    /// Returns the value for `key`, or `None` if absent or not in the schema.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&V> {
        let i = self.index_of(key)?;
        self.get_index(i)
    }

    /// Returns a mutable reference to the value for `key`, if present.
    #[inline]
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let i = self.index_of(key)?;
        self.get_mut_index(i)
    }

    /// Returns `true` if a value is present for `key`.
    #[inline]
    pub fn contains_key(&self, key: &str) -> bool {
        self.index_of(key).is_some_and(|i| self.is_present(i))
    }

    /// Inserts a value for `key`, returning the previous value if any.
    ///
    /// Returns [`UnknownKey`] (dropping `value`) if `key` is not in the
    /// schema.
    pub fn insert(&mut self, key: &str, value: V) -> Result<Option<V>, UnknownKey> {
        match self.index_of(key) {
            Some(i) => Ok(self.insert_index(i, value)),
            None => Err(UnknownKey { key: key.into() }),
        }
    }

    /// Removes and returns the value for `key`, if present.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let i = self.index_of(key)?;
        self.remove_index(i)
    }

    /// Returns the value at `slot`, if present.
    ///
    /// # Panics
    ///
    /// Panics if `slot` belongs to another schema.
    #[inline]
    pub fn get_slot(&self, slot: Slot) -> Option<&V> {
        let i = self.check_slot(slot);
        self.get_index(i)
    }

    /// Returns a mutable reference to the value at `slot`, if present.
    ///
    /// # Panics
    ///
    /// Panics if `slot` belongs to another schema.
    #[inline]
    pub fn get_slot_mut(&mut self, slot: Slot) -> Option<&mut V> {
        let i = self.check_slot(slot);
        self.get_mut_index(i)
    }

    /// Returns `true` if a value is present at `slot`.
    ///
    /// # Panics
    ///
    /// Panics if `slot` belongs to another schema.
    #[inline]
    pub fn contains_slot(&self, slot: Slot) -> bool {
        let i = self.check_slot(slot);
        self.is_present(i)
    }

    /// Inserts a value at `slot`, returning the previous value if any.
    ///
    /// # Panics
    ///
    /// Panics if `slot` belongs to another schema.
    pub fn insert_slot(&mut self, slot: Slot, value: V) -> Option<V> {
        let i = self.check_slot(slot);
        self.insert_index(i, value)
    }

    /// Removes and returns the value at `slot`, if present.
    ///
    /// # Panics
    ///
    /// Panics if `slot` belongs to another schema.
    pub fn remove_slot(&mut self, slot: Slot) -> Option<V> {
        let i = self.check_slot(slot);
        self.remove_index(i)
    }

    /// Gets the entry for `key` for in-place manipulation, or [`UnknownKey`]
    /// if `key` is not in the schema.
    pub fn entry(&mut self, key: &str) -> Result<Entry<'_, V>, UnknownKey> {
        match self.index_of(key) {
            Some(i) => Ok(self.entry_index(i)),
            None => Err(UnknownKey { key: key.into() }),
        }
    }

    /// Gets the entry at `slot` for in-place manipulation.
    ///
    /// # Panics
    ///
    /// Panics if `slot` belongs to another schema.
    pub fn entry_slot(&mut self, slot: Slot) -> Entry<'_, V> {
        let i = self.check_slot(slot);
        self.entry_index(i)
    }

    fn entry_index(&mut self, index: usize) -> Entry<'_, V> {
        if self.is_present(index) {
            Entry::Occupied(OccupiedEntry {
                record: self,
                index,
            })
        } else {
            Entry::Vacant(VacantEntry {
                record: self,
                index,
            })
        }
    }

    /// Number of values present.
    #[inline]
    pub fn len(&self) -> usize {
        self.words().iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Returns `true` if no values are present.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.words().iter().all(|&w| w == 0)
    }

    /// Removes (and drops) all values, keeping the allocation.
    ///
    /// If dropping a value panics, the remaining values are still dropped
    /// (like `Vec::clear`) and the panic then propagates; the record is left
    /// empty. A second panic while dropping aborts, as in the standard
    /// collections.
    pub fn clear(&mut self) {
        /// Resumes dropping the remaining values if a value's `drop` panics.
        struct Resume<'r, V>(&'r mut Record<V>);
        impl<V> Drop for Resume<'_, V> {
            fn drop(&mut self) {
                self.0.drop_present_values();
            }
        }
        let guard = Resume(self);
        guard.0.drop_present_values();
        mem::forget(guard);
    }

    /// Drops every present value, clearing each bit before dropping its value.
    fn drop_present_values(&mut self) {
        for wi in 0..self.schema.words() {
            while self.words()[wi] != 0 {
                let b = self.words()[wi].trailing_zeros() as usize;
                let i = wi * 64 + b;
                self.clear_bit(i);
                // SAFETY: bit `i` was set => value initialized; bit cleared
                // first, so it is dropped at most once even if drop panics.
                unsafe { ptr::drop_in_place(self.value_ptr(i)) };
            }
        }
    }

    /// Iterates over present `(key, value)` pairs in schema order.
    pub fn iter(&self) -> Iter<'_, V> {
        Iter {
            bits: BitIter::new(self.words()),
            keys: &self.schema.inner.keys,
            values: self.value_ptr_base(),
            _marker: PhantomData,
        }
    }

    /// Iterates over present `(key, &mut value)` pairs in schema order.
    pub fn iter_mut(&mut self) -> IterMut<'_, V> {
        let values = self.value_ptr_base();
        IterMut {
            bits: BitIter::new(self.words()),
            keys: &self.schema.inner.keys,
            values,
            _marker: PhantomData,
        }
    }

    /// Iterates over the keys that have values, in schema order.
    pub fn keys(&self) -> Keys<'_, V> {
        Keys { inner: self.iter() }
    }

    /// Iterates over present values, in schema order.
    pub fn values(&self) -> Values<'_, V> {
        Values { inner: self.iter() }
    }

    /// Iterates mutably over present values, in schema order.
    pub fn values_mut(&mut self) -> ValuesMut<'_, V> {
        ValuesMut {
            inner: self.iter_mut(),
        }
    }

    #[inline]
    fn value_ptr_base(&self) -> *mut V {
        let off = Self::values_offset(self.schema.words());
        // SAFETY: `off` is within (or one past the end of) the block
        // allocated with `Self::layout`.
        unsafe { self.block.as_ptr().cast::<u8>().add(off).cast::<V>() }
    }
}

impl<V> Drop for Record<V> {
    fn drop(&mut self) {
        /// Frees the block even if dropping a value panics.
        struct Free(NonNull<u64>, Layout);
        impl Drop for Free {
            fn drop(&mut self) {
                // SAFETY: the block was allocated by `Record::new` with this
                // exact layout (the schema is immutable); it is freed only
                // here, after all values were dropped (or the drop unwound),
                // and the record is never used again.
                unsafe { alloc::dealloc(self.0.as_ptr().cast::<u8>(), self.1) };
            }
        }
        let _free = Free(
            self.block,
            Self::layout(self.schema.words(), self.schema.len()),
        );
        if mem::needs_drop::<V>() {
            self.clear();
        }
    }
}

impl<V: Clone> Clone for Record<V> {
    fn clone(&self) -> Record<V> {
        // Starts empty; each value is cloned before its bit is set, so a
        // panicking `clone` leaves a valid partial record that drops cleanly.
        let mut out = Record::new(&self.schema);
        for i in BitIter::new(self.words()) {
            // SAFETY: `i` comes from a set bit of `self` => initialized.
            let v = unsafe { &*self.value_ptr(i) };
            out.insert_index(i, v.clone());
        }
        out
    }
}

impl<V: PartialEq> PartialEq for Record<V> {
    fn eq(&self, other: &Record<V>) -> bool {
        self.schema == other.schema
            && self.words() == other.words()
            && BitIter::new(self.words()).all(|i| {
                // SAFETY: same presence bits in both records => both
                // values at `i` initialized.
                unsafe { *self.value_ptr(i) == *other.value_ptr(i) }
            })
    }
}

impl<V: Eq> Eq for Record<V> {}

impl<V: Hash> Hash for Record<V> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Consistent with `Eq`: equal records have equal key lists (so the
        // same N and bit positions), equal presence words and equal values.
        state.write_usize(self.schema.len());
        self.words().hash(state);
        for v in self.values() {
            v.hash(state);
        }
    }
}

impl<V: fmt::Debug> fmt::Debug for Record<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a, V> IntoIterator for &'a Record<V> {
    type Item = (&'a str, &'a V);
    type IntoIter = Iter<'a, V>;
    fn into_iter(self) -> Iter<'a, V> {
        self.iter()
    }
}

impl<'a, V> IntoIterator for &'a mut Record<V> {
    type Item = (&'a str, &'a mut V);
    type IntoIter = IterMut<'a, V>;
    fn into_iter(self) -> IterMut<'a, V> {
        self.iter_mut()
    }
}

impl<V, Q> std::ops::Index<&Q> for Record<V>
where
    Q: Borrow<str> + ?Sized,
{
    type Output = V;

    /// Returns the value for `key`.
    ///
    /// # Panics
    ///
    /// Panics if the key is absent or not in the schema.
    fn index(&self, key: &Q) -> &V {
        let key = key.borrow();
        match self.get(key) {
            Some(v) => v,
            None => panic!("slotted: no value for key {key:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Iterators
// ---------------------------------------------------------------------------

/// Iterator over set bit positions of a presence bitmap.
#[derive(Clone)]
struct BitIter<'a> {
    words: &'a [u64],
    next_word: usize,
    current: u64,
    base: usize,
    remaining: usize,
}

impl<'a> BitIter<'a> {
    fn new(words: &'a [u64]) -> BitIter<'a> {
        let remaining = words.iter().map(|w| w.count_ones() as usize).sum();
        BitIter {
            words,
            next_word: 1,
            current: words.first().copied().unwrap_or(0),
            base: 0,
            remaining,
        }
    }
}

impl Iterator for BitIter<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.current == 0 {
            if self.next_word >= self.words.len() {
                return None;
            }
            self.current = self.words[self.next_word];
            self.base = self.next_word * 64;
            self.next_word += 1;
        }
        let b = self.current.trailing_zeros() as usize;
        self.current &= self.current - 1;
        self.remaining -= 1;
        Some(self.base + b)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

/// Iterator over `(key, &value)` pairs of a [`Record`], in schema order.
//
// Invariant: `values` points at the value array of a record borrowed for
// `'a`, and `bits` iterates over (a snapshot of) that record's presence words,
// so every index it yields is an initialized value.
pub struct Iter<'a, V> {
    bits: BitIter<'a>,
    keys: &'a [Box<str>],
    values: *const V,
    _marker: PhantomData<&'a V>,
}

impl<V> Clone for Iter<'_, V> {
    fn clone(&self) -> Self {
        Iter {
            bits: self.bits.clone(),
            keys: self.keys,
            values: self.values,
            _marker: PhantomData,
        }
    }
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a str, &'a V);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let i = self.bits.next()?;
        // SAFETY: `i` is a set bit of the borrowed record => value `i` is
        // initialized and in bounds; the record is borrowed for `'a`.
        let v = unsafe { &*self.values.add(i) };
        Some((&self.keys[i], v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.bits.size_hint()
    }
}

impl<V> ExactSizeIterator for Iter<'_, V> {}
impl<V> FusedIterator for Iter<'_, V> {}

// SAFETY: `Iter` is a shared borrow of a record (it only hands out `&V` and
// `&str`), so it may cross threads exactly when `&V` may.
unsafe impl<V: Sync> Send for Iter<'_, V> {}
// SAFETY: as above; `&Iter` gives no access to anything.
unsafe impl<V: Sync> Sync for Iter<'_, V> {}

/// Iterator over `(key, &mut value)` pairs of a [`Record`], in schema order.
//
// Invariant: as for `Iter`, but the record is borrowed exclusively for `'a`;
// each index is yielded at most once, so the `&mut V`s handed out are disjoint.
pub struct IterMut<'a, V> {
    bits: BitIter<'a>,
    keys: &'a [Box<str>],
    values: *mut V,
    _marker: PhantomData<&'a mut V>,
}

impl<'a, V> Iterator for IterMut<'a, V> {
    type Item = (&'a str, &'a mut V);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let i = self.bits.next()?;
        // SAFETY: `i` is a set bit of the exclusively borrowed record =>
        // value `i` initialized; each index is yielded once, so the `&mut`s
        // are disjoint.
        let v = unsafe { &mut *self.values.add(i) };
        Some((&self.keys[i], v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.bits.size_hint()
    }
}

impl<V> ExactSizeIterator for IterMut<'_, V> {}
impl<V> FusedIterator for IterMut<'_, V> {}

// SAFETY: `IterMut` is an exclusive borrow of a record handing out disjoint
// `&mut V`s, so it is `Send`/`Sync` under the same bounds as `&mut V`.
unsafe impl<V: Send> Send for IterMut<'_, V> {}
// SAFETY: as above; `&IterMut` gives no access to any value.
unsafe impl<V: Sync> Sync for IterMut<'_, V> {}

/// Iterator over the present keys of a [`Record`], in schema order.
pub struct Keys<'a, V> {
    inner: Iter<'a, V>,
}

impl<'a, V> Iterator for Keys<'a, V> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        self.inner.next().map(|(k, _)| k)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<V> ExactSizeIterator for Keys<'_, V> {}
impl<V> FusedIterator for Keys<'_, V> {}

/// Iterator over the present values of a [`Record`], in schema order.
pub struct Values<'a, V> {
    inner: Iter<'a, V>,
}

impl<'a, V> Iterator for Values<'a, V> {
    type Item = &'a V;

    #[inline]
    fn next(&mut self) -> Option<&'a V> {
        self.inner.next().map(|(_, v)| v)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<V> ExactSizeIterator for Values<'_, V> {}
impl<V> FusedIterator for Values<'_, V> {}

/// Mutable iterator over the present values of a [`Record`], in schema order.
pub struct ValuesMut<'a, V> {
    inner: IterMut<'a, V>,
}

impl<'a, V> Iterator for ValuesMut<'a, V> {
    type Item = &'a mut V;

    #[inline]
    fn next(&mut self) -> Option<&'a mut V> {
        self.inner.next().map(|(_, v)| v)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<V> ExactSizeIterator for ValuesMut<'_, V> {}
impl<V> FusedIterator for ValuesMut<'_, V> {}

// ---------------------------------------------------------------------------
// Entry API
// ---------------------------------------------------------------------------

/// A view into one key of a [`Record`], from [`Record::entry`] or
/// [`Record::entry_slot`].
pub enum Entry<'a, V> {
    /// The key has a value.
    Occupied(OccupiedEntry<'a, V>),
    /// The key has no value.
    Vacant(VacantEntry<'a, V>),
}

impl<'a, V> Entry<'a, V> {
    /// The key name of this entry.
    pub fn key(&self) -> &str {
        match self {
            Entry::Occupied(e) => e.key(),
            Entry::Vacant(e) => e.key(),
        }
    }

    /// Ensures a value is present, inserting `default` if vacant.
    pub fn or_insert(self, default: V) -> &'a mut V {
        match self {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(default),
        }
    }

    /// Ensures a value is present, inserting the result of `f` if vacant.
    pub fn or_insert_with<F: FnOnce() -> V>(self, f: F) -> &'a mut V {
        match self {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(f()),
        }
    }

    /// Ensures a value is present, inserting `V::default()` if vacant.
    pub fn or_default(self) -> &'a mut V
    where
        V: Default,
    {
        self.or_insert_with(V::default)
    }

    /// Calls `f` on the value if occupied; returns the entry.
    pub fn and_modify<F: FnOnce(&mut V)>(mut self, f: F) -> Self {
        if let Entry::Occupied(e) = &mut self {
            f(e.get_mut());
        }
        self
    }
}

/// An entry whose key has a value. Part of [`Entry`].
pub struct OccupiedEntry<'a, V> {
    record: &'a mut Record<V>,
    index: usize,
}

impl<'a, V> OccupiedEntry<'a, V> {
    /// The key name of this entry.
    pub fn key(&self) -> &str {
        &self.record.schema.inner.keys[self.index]
    }

    /// The present value.
    pub fn get(&self) -> &V {
        self.record
            .get_index(self.index)
            .expect("occupied entry has a value")
    }

    /// The present value, mutably.
    pub fn get_mut(&mut self) -> &mut V {
        self.record
            .get_mut_index(self.index)
            .expect("occupied entry has a value")
    }

    /// Converts into a mutable reference bound to the record's borrow.
    pub fn into_mut(self) -> &'a mut V {
        self.record
            .get_mut_index(self.index)
            .expect("occupied entry has a value")
    }

    /// Replaces the value, returning the old one.
    pub fn insert(&mut self, value: V) -> V {
        mem::replace(self.get_mut(), value)
    }

    /// Removes the value and returns it.
    pub fn remove(self) -> V {
        self.record
            .remove_index(self.index)
            .expect("occupied entry has a value")
    }
}

/// An entry whose key has no value. Part of [`Entry`].
pub struct VacantEntry<'a, V> {
    record: &'a mut Record<V>,
    index: usize,
}

impl<'a, V> VacantEntry<'a, V> {
    /// The key name of this entry.
    pub fn key(&self) -> &str {
        &self.record.schema.inner.keys[self.index]
    }

    /// Inserts a value and returns a mutable reference to it.
    pub fn insert(self, value: V) -> &'a mut V {
        self.record.insert_index(self.index, value);
        self.record
            .get_mut_index(self.index)
            .expect("value was just inserted")
    }
}

// ---------------------------------------------------------------------------
// Serde
// ---------------------------------------------------------------------------

#[cfg(feature = "serde")]
mod serde_impl {
    use super::{Record, Schema};
    use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
    use serde::ser::{Serialize, SerializeMap, Serializer};
    use std::fmt;
    use std::marker::PhantomData;

    impl<V: Serialize> Serialize for Record<V> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(self.len()))?;
            for (k, v) in self.iter() {
                map.serialize_entry(k, v)?;
            }
            map.end()
        }
    }

    /// Deserializes a [`Record`] of a given [`Schema`] from a map, via
    /// [`serde::de::DeserializeSeed`].
    ///
    /// Keys outside the schema and repeated keys are rejected with an error
    /// such as `unknown key "x"` or `duplicate key "a"`.
    ///
    /// ```
    /// use serde::de::DeserializeSeed;
    /// use smallarena_slotted::{RecordSeed, Schema};
    ///
    /// let schema = Schema::new(["a", "b"]);
    /// let mut de = serde_json::Deserializer::from_str(r#"{"b": 2}"#);
    /// let r = RecordSeed::<u64>::new(&schema).deserialize(&mut de).unwrap();
    /// assert_eq!(r.get("b"), Some(&2));
    /// ```
    pub struct RecordSeed<V> {
        schema: Schema,
        _marker: PhantomData<fn() -> V>,
    }

    impl<V> RecordSeed<V> {
        /// A seed producing records of `schema`.
        pub fn new(schema: &Schema) -> RecordSeed<V> {
            RecordSeed {
                schema: schema.clone(),
                _marker: PhantomData,
            }
        }
    }

    impl<V> Clone for RecordSeed<V> {
        fn clone(&self) -> Self {
            RecordSeed::new(&self.schema)
        }
    }

    impl<V> fmt::Debug for RecordSeed<V> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RecordSeed")
                .field("schema", &self.schema)
                .finish()
        }
    }

    impl<'de, V: de::Deserialize<'de>> DeserializeSeed<'de> for RecordSeed<V> {
        type Value = Record<V>;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Record<V>, D::Error> {
            d.deserialize_map(RecordVisitor::<V> {
                schema: self.schema,
                _marker: PhantomData,
            })
        }
    }

    struct RecordVisitor<V> {
        schema: Schema,
        _marker: PhantomData<fn() -> V>,
    }

    impl<'de, V: de::Deserialize<'de>> Visitor<'de> for RecordVisitor<V> {
        type Value = Record<V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map whose keys belong to the record schema")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record<V>, A::Error> {
            let mut rec = Record::new(&self.schema);
            while let Some(i) = map.next_key_seed(KeySeed {
                schema: &self.schema,
            })? {
                let v: V = map.next_value()?;
                if rec.insert_index(i, v).is_some() {
                    return Err(de::Error::custom(format_args!(
                        "duplicate key {:?}",
                        &*self.schema.inner.keys[i]
                    )));
                }
            }
            Ok(rec)
        }
    }

    /// Resolves a map key to its schema index.
    struct KeySeed<'s> {
        schema: &'s Schema,
    }

    impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
        type Value = usize;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for KeySeed<'_> {
        type Value = usize;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a key name of the record schema")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<usize, E> {
            self.schema
                .index_of(s)
                .ok_or_else(|| E::custom(format_args!("unknown key {s:?}")))
        }

        fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<usize, E> {
            match std::str::from_utf8(b) {
                Ok(s) => self.visit_str(s),
                Err(_) => Err(E::invalid_value(de::Unexpected::Bytes(b), &self)),
            }
        }
    }
}

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use serde_impl::RecordSeed;

// ---------------------------------------------------------------------------
// Unit tests (plain loops; runnable under Miri)
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("k{i}")).collect()
    }

    /// Counts live instances via a shared counter.
    #[derive(Debug)]
    struct Tracked {
        live: Rc<Cell<isize>>,
        val: u32,
    }

    impl Tracked {
        fn new(live: &Rc<Cell<isize>>, val: u32) -> Tracked {
            live.set(live.get() + 1);
            Tracked {
                live: live.clone(),
                val,
            }
        }
    }

    impl Clone for Tracked {
        fn clone(&self) -> Tracked {
            Tracked::new(&self.live, self.val)
        }
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.live.set(self.live.get() - 1);
        }
    }

    #[test]
    fn layout_across_sizes_and_types() {
        for n in [0usize, 1, 3, 63, 64, 65, 130] {
            let s = Schema::new(keys(n).iter());
            let mut a: Record<u8> = Record::new(&s);
            let mut b: Record<String> = Record::new(&s);
            let mut c: Record<u128> = Record::new(&s);
            let mut z: Record<()> = Record::new(&s);
            for i in (0..n).step_by(2) {
                let k = format!("k{i}");
                a.insert(&k, i as u8).unwrap();
                b.insert(&k, k.clone()).unwrap();
                c.insert(&k, i as u128 * 3).unwrap();
                z.insert(&k, ()).unwrap();
            }
            let expect = n.div_ceil(2);
            assert_eq!(a.len(), expect);
            assert_eq!(b.len(), expect);
            assert_eq!(c.len(), expect);
            assert_eq!(z.len(), expect);
            for i in 0..n {
                let k = format!("k{i}");
                let present = i % 2 == 0;
                assert_eq!(a.get(&k).is_some(), present);
                if present {
                    assert_eq!(b.get(&k), Some(&k));
                    assert_eq!(c.get(&k), Some(&(i as u128 * 3)));
                }
            }
            let b2 = b.clone();
            assert_eq!(b, b2);
            assert_eq!(b.iter().count(), expect);
            for v in c.values_mut() {
                *v += 1;
            }
            for (k, v) in &c {
                let i: u128 = k[1..].parse().unwrap();
                assert_eq!(*v, i * 3 + 1);
            }
            b.clear();
            assert!(b.is_empty());
            assert_eq!(b2.len(), expect);
        }
    }

    #[test]
    fn insert_remove_overwrite_drop_accounting() {
        let live = Rc::new(Cell::new(0));
        let s = Schema::new(keys(70).iter());
        {
            let mut r = Record::new(&s);
            for i in 0..70 {
                assert!(r
                    .insert(&format!("k{i}"), Tracked::new(&live, i))
                    .unwrap()
                    .is_none());
            }
            assert_eq!(live.get(), 70);
            // Overwrite returns (and thus drops) the old value.
            let old = r.insert("k5", Tracked::new(&live, 500)).unwrap().unwrap();
            assert_eq!(old.val, 5);
            drop(old);
            assert_eq!(live.get(), 70);
            // Remove.
            let slot = s.slot("k66").unwrap();
            assert_eq!(r.remove_slot(slot).unwrap().val, 66);
            assert_eq!(live.get(), 69);
            assert!(r.remove_slot(slot).is_none());
            // Unknown key: value dropped, nothing stored.
            assert!(r.insert("nope", Tracked::new(&live, 0)).is_err());
            assert_eq!(live.get(), 69);
            // Clone doubles, clear halves.
            let mut r2 = r.clone();
            assert_eq!(live.get(), 138);
            r2.clear();
            assert_eq!(live.get(), 69);
            r2.insert("k1", Tracked::new(&live, 1)).unwrap();
            assert_eq!(live.get(), 70);
            drop(r2);
            assert_eq!(live.get(), 69);
        }
        assert_eq!(live.get(), 0);
    }

    #[test]
    fn entry_api() {
        let s = Schema::new(["a", "b", "c"]);
        let mut r: Record<Vec<u32>> = Record::new(&s);
        r.entry("a").unwrap().or_default().push(1);
        r.entry("a").unwrap().or_default().push(2);
        assert_eq!(r.get("a"), Some(&vec![1, 2]));
        let b = s.slot("b").unwrap();
        r.entry_slot(b)
            .and_modify(|v| v.push(9))
            .or_insert_with(|| vec![7]);
        assert_eq!(r.get("b"), Some(&vec![7]));
        match r.entry("a").unwrap() {
            Entry::Occupied(e) => {
                assert_eq!(e.key(), "a");
                assert_eq!(e.remove(), vec![1, 2]);
            }
            Entry::Vacant(_) => panic!("expected occupied"),
        }
        assert!(r.entry("zz").is_err());
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn hashed_lookup_large_schema() {
        let ks = keys(300);
        let s = Schema::new(ks.iter());
        for (i, k) in ks.iter().enumerate() {
            assert_eq!(s.index_of(k), Some(i));
        }
        assert_eq!(s.index_of("k300"), None);
        assert_eq!(s.index_of(""), None);
        let dup = Schema::try_new(["x", "y", "x"]).unwrap_err();
        assert_eq!(dup.key(), "x");
        let mut big: Vec<String> = keys(20);
        big.push("k3".into());
        assert_eq!(Schema::try_new(&big).unwrap_err().key(), "k3");
    }

    #[test]
    #[should_panic(expected = "different Schema")]
    fn foreign_slot_panics() {
        let a = Schema::new(["x"]);
        let b = Schema::new(["x"]);
        let r: Record<u8> = Record::new(&b);
        let _ = r.get_slot(a.slot("x").unwrap());
    }
}
