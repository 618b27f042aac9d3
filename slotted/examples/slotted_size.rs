//! Prints bytes per record for `slotted::Record<u64>` versus common maps.
//!
//! Every heap figure is measured, not computed: a counting global allocator
//! wraps the system allocator and tracks, per live allocation,
//!
//! * the **requested** bytes (`Layout::size()`), which depend only on the data
//!   structure's layout, and
//! * the **usable** bytes the C allocator really reserved for it
//!   (`malloc_usable_size`, glibc/Linux only), which include its rounding.
//!
//! Each figure is `size_of::<T>()` plus the heap bytes one instance holding
//! all N keys keeps alive. Keys are `"key_0"`, `"key_1"`, ...; values `u64`.
//! The ideal is 8 bytes of schema pointer + 8 bytes per 64 keys of presence
//! bits + 8 bytes per value.
//!
//! Run with `cargo run --release -p smallarena-slotted --example slotted_size`.

use smallarena_slotted::{Record, Schema};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::mem::size_of;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

/// Forwards to [`System`], counting requested and usable bytes.
struct Counting;

static REQUESTED: AtomicIsize = AtomicIsize::new(0);
static USABLE: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicIsize = AtomicIsize::new(0);

/// Bytes the C allocator really reserved for the block at `ptr`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn usable(ptr: *mut u8, _requested: usize) -> isize {
    // SAFETY: `ptr` is a live block handed out by `System`, which on
    // Linux/glibc is always a `malloc`-family allocation.
    unsafe { libc::malloc_usable_size(ptr.cast()) as isize }
}

/// Elsewhere, fall back to the requested size.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn usable(_ptr: *mut u8, requested: usize) -> isize {
    requested as isize
}

// SAFETY: every call is forwarded unchanged to `System`; the wrapper only
// updates two counters (atomics, no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            REQUESTED.fetch_add(layout.size() as isize, Ordering::Relaxed);
            USABLE.fetch_add(usable(p, layout.size()), Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
        REQUESTED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        USABLE.fetch_sub(usable(ptr, layout.size()), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_usable = usable(ptr, layout.size());
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            REQUESTED.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
            USABLE.fetch_add(usable(p, new_size) - old_usable, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes of one instance built by `build`: `(requested, usable)`, each being
/// `size_of::<T>()` plus the heap the instance keeps alive.
fn measure<T>(build: impl FnOnce() -> T) -> (usize, usize) {
    measure_with_count(build).0
}

/// Like [`measure`], also returning how many live allocations the instance
/// holds.
fn measure_with_count<T>(build: impl FnOnce() -> T) -> ((usize, usize), isize) {
    let snapshot = || {
        (
            REQUESTED.load(Ordering::Relaxed),
            USABLE.load(Ordering::Relaxed),
            ALLOCATIONS.load(Ordering::Relaxed),
        )
    };
    let (r0, u0, a0) = snapshot();
    let value = build();
    let (r1, u1, a1) = snapshot();
    drop(value);
    let own = size_of::<T>();
    (
        (own + (r1 - r0) as usize, own + (u1 - u0) as usize),
        a1 - a0,
    )
}

struct Row {
    n: usize,
    ideal: usize,
    record: (usize, usize),
    hm_string: (usize, usize),
    hm_arc: (usize, usize),
    bt_string: (usize, usize),
}

fn print_table(title: &str, rows: &[Row], pick: fn((usize, usize)) -> usize, vs_ideal: bool) {
    println!("\n{title}");
    println!(
        "{:>5} {:>7} {:>7} {:>6} | {:>13} {:>13} {:>13} | {:>8} {:>8} {:>8}",
        "N",
        "record",
        "ideal",
        "ratio",
        "HashMap<Str>",
        "HashMap<Arc>",
        "BTreeMap<Str>",
        "vs HStr",
        "vs HArc",
        "vs BTree",
    );
    for r in rows {
        let rec = pick(r.record);
        let red = |other: (usize, usize)| 100.0 * (1.0 - rec as f64 / pick(other) as f64);
        let (ideal, ratio) = if vs_ideal {
            (
                r.ideal.to_string(),
                format!("{:.3}", rec as f64 / r.ideal as f64),
            )
        } else {
            ("-".to_string(), "-".to_string())
        };
        println!(
            "{:>5} {:>7} {:>7} {:>6} | {:>13} {:>13} {:>13} | {:>7.1}% {:>7.1}% {:>7.1}%",
            r.n,
            rec,
            ideal,
            ratio,
            pick(r.hm_string),
            pick(r.hm_arc),
            pick(r.bt_string),
            red(r.hm_string),
            red(r.hm_arc),
            red(r.bt_string),
        );
    }
}

fn main() {
    let mut rows = Vec::new();
    for n in [3usize, 10, 100, 1000] {
        let names: Vec<String> = (0..n).map(|i| format!("key_{i}")).collect();
        let schema = Schema::new(names.iter());
        let shared: Vec<Arc<str>> = names.iter().map(|k| Arc::from(k.as_str())).collect();

        // The schema (shared by all records) is built beforehand and not
        // counted, just as the `Arc<str>` keys below are shared.
        let (record, allocations) = measure_with_count(|| {
            let mut r: Record<u64> = Record::new(&schema);
            for (i, k) in names.iter().enumerate() {
                r.insert(k, i as u64).unwrap();
            }
            r
        });
        assert_eq!(allocations, 1, "a record must hold exactly one allocation");
        // Each instance owns copies of its key strings (counted).
        let hm_string = measure(|| {
            let mut m: HashMap<String, u64> = HashMap::new();
            for (i, k) in names.iter().enumerate() {
                m.insert(k.clone(), i as u64);
            }
            m
        });
        // Keys are shared `Arc`s created up front (only the table counts).
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
        rows.push(Row {
            n,
            ideal: 8 + 8 * n.div_ceil(64) + 8 * n,
            record,
            hm_string,
            hm_arc,
            bt_string,
        });
    }

    println!("Bytes per instance holding N u64 values (size_of + live heap).");
    print_table(
        "Requested heap bytes (Layout::size, allocator-independent):",
        &rows,
        |(requested, _)| requested,
        true,
    );
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        print_table(
            "Usable heap bytes (malloc_usable_size, glibc rounding included):",
            &rows,
            |(_, usable)| usable,
            false,
        );
    }

    let worst = rows
        .iter()
        .map(|r| r.record.0 as f64 / r.ideal as f64)
        .fold(0.0, f64::max);
    println!("\nworst requested/ideal ratio: {worst:.3} (target <= 1.25)");
    println!("heap allocations per record: 1 (checked at every N)");
    assert!(worst <= 1.25, "record layout exceeds 1.25x of ideal");
}
