//! Allocator microbenchmarks, all four allocators in one process through their `GlobalAlloc`
//! (the bench binary itself keeps the system allocator):
//! `cargo bench -p smallarena-workloads --bench alloc` (criterion's HTML report lands in `target/criterion/`).
//!
//! Groups: alloc+free pairs per size class and one large size; batches of N allocations freed
//! LIFO, FIFO and in random order; realloc growth; alloc_zeroed; producer/consumer across two
//! threads (the consumer frees).

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use std::alloc::{GlobalAlloc, Layout, System};
use std::time::Duration;

static SMALLARENA: smallarena::SmallArena = smallarena::SmallArena::new();
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn allocators() -> [(&'static str, &'static (dyn GlobalAlloc + Sync)); 4] {
    [
        ("smallarena", &SMALLARENA),
        ("glibc", &System),
        ("jemalloc", &JEMALLOC),
        ("mimalloc", &MIMALLOC),
    ]
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn pairs(c: &mut Criterion) {
    let mut g = c.benchmark_group("pair");
    for size in [16, 32, 64, 128, 256, 512, 4096] {
        for (name, a) in allocators() {
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, &size| {
                let l = layout(size);
                // SAFETY: a valid layout; each block is freed once with it.
                b.iter(|| unsafe { a.dealloc(black_box(a.alloc(l)), l) });
            });
        }
    }
    g.finish();
}

/// A deterministic permutation of 0..n.
fn shuffled(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

fn batches(c: &mut Criterion) {
    const N: usize = 1000;
    let order = shuffled(N);
    let mut g = c.benchmark_group("batch1000x48");
    for (name, a) in allocators() {
        let l = layout(48);
        let mut ptrs = vec![std::ptr::null_mut::<u8>(); N];
        for kind in ["lifo", "fifo", "random"] {
            g.bench_function(BenchmarkId::new(name, kind), |b| {
                b.iter(|| {
                    for p in ptrs.iter_mut() {
                        // SAFETY: a valid layout.
                        *p = unsafe { a.alloc(l) };
                    }
                    // SAFETY: each block freed once, with its layout.
                    unsafe {
                        match kind {
                            "lifo" => ptrs.iter().rev().for_each(|&p| a.dealloc(p, l)),
                            "fifo" => ptrs.iter().for_each(|&p| a.dealloc(p, l)),
                            _ => order.iter().for_each(|&i| a.dealloc(ptrs[i], l)),
                        }
                    }
                })
            });
        }
    }
    g.finish();
}

fn realloc_growth(c: &mut Criterion) {
    let mut g = c.benchmark_group("realloc_16_to_4096");
    for (name, a) in allocators() {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut size = 16;
                // SAFETY: valid layouts; the block is reallocated with its current layout and
                // freed once.
                unsafe {
                    let mut p = a.alloc(layout(size));
                    while size < 4096 {
                        let next = size + size / 2 + 8;
                        p = a.realloc(p, layout(size), next);
                        size = next;
                    }
                    a.dealloc(black_box(p), layout(size));
                }
            })
        });
    }
    g.finish();
}

fn zeroed(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_zeroed_256");
    for (name, a) in allocators() {
        g.bench_function(name, |b| {
            let l = layout(256);
            // SAFETY: a valid layout; each block freed once.
            b.iter(|| unsafe { a.dealloc(black_box(a.alloc_zeroed(l)), l) });
        });
    }
    g.finish();
}

/// Pointers sent to the consumer thread, which frees them.
struct Batch(Vec<*mut u8>);
// SAFETY: the blocks are owned by whoever holds the batch; any thread may free them.
unsafe impl Send for Batch {}

fn producer_consumer(c: &mut Criterion) {
    let mut g = c.benchmark_group("prodcons_10000x64");
    for (name, a) in allocators() {
        g.bench_function(name, |b| {
            b.iter(|| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(8);
                let consumer = std::thread::spawn(move || {
                    for batch in rx {
                        for p in batch.0 {
                            // SAFETY: allocated by the producer with this layout, freed once.
                            unsafe { a.dealloc(p, layout(64)) };
                        }
                    }
                });
                for _ in 0..100 {
                    // SAFETY: a valid layout.
                    let v = (0..100).map(|_| unsafe { a.alloc(layout(64)) }).collect();
                    tx.send(Batch(v)).unwrap();
                }
                drop(tx);
                consumer.join().unwrap();
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = pairs, batches, realloc_growth, zeroed, producer_consumer
}
criterion_main!(benches);
