//! Prints bytes per record for `slotted::Record<u64>` versus common maps.
//!
//! Heap bytes are measured with a counting global allocator (requested
//! sizes, not allocator bucket sizes). Each figure is `size_of::<T>()` plus
//! the heap bytes owned by one instance holding all N keys.
//!
//! Run with `cargo run --release --example slotted_size`.

use smallarena::slotted::{Record, Schema};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::mem::size_of;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to `System`, only adding bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Bytes of one instance: `size_of::<T>()` plus the heap it allocates in
/// `build` (and keeps alive).
fn measure<T>(build: impl FnOnce() -> T) -> usize {
    let before = live();
    let value = build();
    let heap = live() - before;
    let total = size_of::<T>() + heap as usize;
    drop(value);
    total
}

fn main() {
    println!(
        "{:>5} {:>9} {:>7} {:>6} | {:>14} {:>14} {:>14} | {:>8} {:>8} {:>8}",
        "N",
        "record",
        "ideal",
        "ratio",
        "HashMap<Str>",
        "HashMap<Arc>",
        "BTreeMap<Str>",
        "red.HStr",
        "red.HArc",
        "red.BT",
    );
    for n in [3usize, 10, 100, 1000] {
        let names: Vec<String> = (0..n).map(|i| format!("key_{i}")).collect();
        let schema = Schema::new(names.iter());
        let shared: Vec<Arc<str>> = names.iter().map(|k| Arc::from(k.as_str())).collect();

        let record = measure(|| {
            let mut r: Record<u64> = Record::new(&schema);
            for (i, k) in names.iter().enumerate() {
                r.insert(k, i as u64).unwrap();
            }
            r
        });
        let ideal = 8 + 8 * n.div_ceil(64) + 8 * n;

        // Each instance owns copies of its key strings (counted).
        let hm_string = measure(|| {
            let mut m: HashMap<String, u64> = HashMap::new();
            for (i, k) in names.iter().enumerate() {
                m.insert(k.clone(), i as u64);
            }
            m
        });
        // Keys are shared Arcs created up front (only the table counts).
        let hm_arc = measure(|| {
            let mut m: HashMap<Arc<str>, u64> = HashMap::new();
            for (i, k) in shared.iter().enumerate() {
                m.insert(k.clone(), i as u64);
            }
            m
        });
        let bt_string = measure(|| {
            let mut m: BTreeMap<String, u64> = BTreeMap::new();
            for (i, k) in names.iter().enumerate() {
                m.insert(k.clone(), i as u64);
            }
            m
        });

        let red = |other: usize| 100.0 * (1.0 - record as f64 / other as f64);
        println!(
            "{:>5} {:>9} {:>7} {:>6.3} | {:>14} {:>14} {:>14} | {:>7.1}% {:>7.1}% {:>7.1}%",
            n,
            record,
            ideal,
            record as f64 / ideal as f64,
            hm_string,
            hm_arc,
            bt_string,
            red(hm_string),
            red(hm_arc),
            red(bt_string),
        );
    }
}
