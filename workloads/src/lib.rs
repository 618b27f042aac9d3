//! Whole-program workloads where the global allocator matters. The same code is compiled into one
//! binary per allocator (`wl-smallarena`, `wl-glibc`, `wl-jemalloc`, `wl-mimalloc`), which differ
//! only in their `#[global_allocator]`. `examples/compare.rs` runs them.
//!
//! Usage: `wl-<allocator> <workload> [scale]`; prints `checksum=<n>`, which must agree across
//! allocators. Scale 1 (the default) is the full run, larger scales multiply the work, and 0 is
//! the quick run of the comparison's `--quick` (about a twentieth of scale 1; `pairs` excepted,
//! which runs exactly `scale` million pairs). Workloads: `trees`, `strings`, `mixed`, `vecs`, `prodcons`, `pairs`.

use fastrand::Rng;
use std::collections::{BTreeMap, HashMap};

/// The amount of work at `scale`: `full` at 1, `full * scale` above, a twentieth of `full` at 0.
fn amount(scale: u32, full: u64) -> u64 {
    if scale == 0 {
        full / 20
    } else {
        full * u64::from(scale)
    }
}

/// Binary trees (the benchmarks-game shape): many short-lived trees of small nodes plus one
/// long-lived tree.
pub fn trees(scale: u32) -> u64 {
    enum Tree {
        Leaf,
        Node(Box<Tree>, Box<Tree>),
    }
    fn make(d: u32) -> Tree {
        if d == 0 {
            Tree::Leaf
        } else {
            Tree::Node(Box::new(make(d - 1)), Box::new(make(d - 1)))
        }
    }
    fn check(t: &Tree) -> u64 {
        match t {
            Tree::Leaf => 1,
            Tree::Node(l, r) => 1 + check(l) + check(r),
        }
    }
    // Depth 16 at scale 1; every extra depth doubles the work. Depth 12 (1/16) at scale 0.
    let max = if scale == 0 { 12 } else { 15 + scale };
    let long = make(max);
    let mut sum = 0;
    let mut d = 4;
    while d <= max {
        let iters = 1u64 << (max - d + 4);
        for _ in 0..iters {
            sum += check(&make(d));
        }
        d += 2;
    }
    sum + check(&long)
}

/// A map of many small strings: build, look up, update, drop.
pub fn strings(scale: u32) -> u64 {
    let n = amount(scale, 400_000);
    let mut m: HashMap<String, String> = HashMap::new();
    let mut rng = Rng::with_seed(7);
    for i in 0..n {
        let v = format!("value-{}-{}", i, rng.u64(..1000));
        m.insert(format!("key-{i}"), v);
    }
    let mut sum = 0u64;
    for i in 0..n {
        if let Some(v) = m.get(&format!("key-{}", rng.u64(..n))) {
            sum += v.len() as u64;
        }
        if i % 3 == 0 {
            m.remove(&format!("key-{i}"));
        }
    }
    let b: BTreeMap<&String, &String> = m.iter().collect();
    sum + b.len() as u64
}

/// Random-order frees of mixed small sizes (8..=512 bytes, a few larger), with a working set
/// that keeps changing.
pub fn mixed(scale: u32) -> u64 {
    let ops = amount(scale, 5_000_000);
    let mut rng = Rng::with_seed(11);
    let mut live: Vec<Vec<u8>> = Vec::with_capacity(20_000);
    let mut sum = 0u64;
    for _ in 0..ops {
        if live.len() < 20_000 && (live.is_empty() || rng.u64(..100) < 55) {
            let size = if rng.u64(..50) == 0 {
                513 + rng.u64(..3000) as usize
            } else {
                8 + rng.u64(..505) as usize
            };
            live.push(vec![size as u8; size]);
        } else {
            let i = rng.u64(..live.len() as u64) as usize;
            let v = live.swap_remove(i);
            sum += v[0] as u64 + v.len() as u64;
        }
    }
    sum + live.len() as u64
}

/// Many growing Vecs: push one element at a time (realloc growth through the small classes into
/// large sizes), interleaved across vectors.
pub fn vecs(scale: u32) -> u64 {
    let mut sum = 0u64;
    for round in 0..amount(scale, 300) as u32 {
        let mut vs: Vec<Vec<u32>> = (0..2000).map(|_| Vec::new()).collect();
        for i in 0..200u32 {
            for (j, v) in vs.iter_mut().enumerate() {
                if (i as usize + j) % 3 != 0 {
                    v.push(i ^ round);
                }
            }
        }
        sum += vs
            .iter()
            .map(|v| v.len() as u64 + v.last().copied().unwrap_or(0) as u64)
            .sum::<u64>();
    }
    sum
}

/// Cross-thread producer/consumer: one thread allocates small boxed messages, the other frees
/// them (every free is a remote free for smallarena).
pub fn prodcons(scale: u32) -> u64 {
    let n = amount(scale, 3_000_000);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Box<[u64; 4]>>>(64);
    let producer = std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(256);
        for i in 0..n {
            batch.push(Box::new([i, i + 1, i + 2, i + 3]));
            if batch.len() == 256 {
                tx.send(std::mem::replace(&mut batch, Vec::with_capacity(256)))
                    .unwrap();
            }
        }
        tx.send(batch).unwrap();
    });
    let mut sum = 0u64;
    for batch in rx {
        for b in batch {
            sum = sum.wrapping_add(b[3]);
        }
    }
    producer.join().unwrap();
    sum
}

/// Exactly `1_000_000 * scale` alloc+free pairs of 64 bytes (for instruction counts).
pub fn pairs(scale: u32) -> u64 {
    let mut sum = 0u64;
    for i in 0..(1_000_000 * scale as u64) {
        let b = std::hint::black_box(Box::new([i; 8]));
        sum = sum.wrapping_add(b[7]);
    }
    sum
}

/// Alloc+free pairs of 64-byte boxes through a ring of 16, each freed 16 allocations after it
/// was made (the Rust twin of the C `fixed64`): unlike [`pairs`], which frees each block at once,
/// no pool or page ever becomes empty, so no allocator takes an empty-page path on every pair.
/// For instruction counts per pair (callgrind at two scales, the difference / 1M).
pub fn ring(scale: u32) -> u64 {
    let mut ring: [Option<Box<[u64; 8]>>; 16] = Default::default();
    let mut sum = 0u64;
    for i in 0..(1_000_000 * scale as u64) {
        let b = std::hint::black_box(Box::new([i; 8]));
        if let Some(old) = ring[(i % 16) as usize].replace(b) {
            sum = sum.wrapping_add(old[7]);
        }
    }
    sum
}

/// Entry point shared by the per-allocator binaries.
pub fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_default();
    let scale: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let sum = match name.as_str() {
        "trees" => trees(scale),
        "strings" => strings(scale),
        "mixed" => mixed(scale),
        "vecs" => vecs(scale),
        "prodcons" => prodcons(scale),
        "pairs" => pairs(scale),
        "ring" => ring(scale),
        _ => {
            eprintln!("usage: wl-<allocator> trees|strings|mixed|vecs|prodcons|pairs|ring [scale]");
            std::process::exit(2);
        }
    };
    println!("checksum={sum}");
}
