//! Lookup speed: `Record` by slot and by name vs `HashMap<String, u64>::get`.
//!
//! `cargo bench --bench slotted`.

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use smallarena_slotted::{Record, Schema, Slot};
use std::collections::HashMap;

fn bench_get(c: &mut Criterion) {
    let mut group = c.benchmark_group("slotted_get");
    for n in [3usize, 10, 100, 1000] {
        let names: Vec<String> = (0..n).map(|i| format!("key_{i}")).collect();
        let schema = Schema::new(names.iter());
        let slots: Vec<Slot> = names.iter().map(|k| schema.slot(k).unwrap()).collect();
        let mut record: Record<u64> = Record::new(&schema);
        let mut map: HashMap<String, u64> = HashMap::new();
        for (i, k) in names.iter().enumerate() {
            record.insert(k, i as u64).unwrap();
            map.insert(k.clone(), i as u64);
        }
        // Cycle through up to 16 keys spread over the schema.
        let picks: Vec<usize> = (0..16).map(|j| (j * 7919) % n).collect();
        let pick_names: Vec<&str> = picks.iter().map(|&i| names[i].as_str()).collect();
        let pick_slots: Vec<Slot> = picks.iter().map(|&i| slots[i]).collect();

        group.bench_with_input(BenchmarkId::new("record_get_slot", n), &n, |b, _| {
            let mut j = 0;
            b.iter(|| {
                j = (j + 1) & 15;
                black_box(record.get_slot(black_box(pick_slots[j])))
            })
        });
        group.bench_with_input(BenchmarkId::new("record_get_name", n), &n, |b, _| {
            let mut j = 0;
            b.iter(|| {
                j = (j + 1) & 15;
                black_box(record.get(black_box(pick_names[j])))
            })
        });
        group.bench_with_input(BenchmarkId::new("hashmap_string_get", n), &n, |b, _| {
            let mut j = 0;
            b.iter(|| {
                j = (j + 1) & 15;
                black_box(map.get(black_box(pick_names[j])))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_get);
criterion_main!(benches);
