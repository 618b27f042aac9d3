//! Installs smallarena, does some small-object work on a few threads and prints the allocator's
//! statistics table: `cargo run --release --example stats`.

use std::collections::BTreeMap;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

fn main() {
    println!("mode: {:?}", smallarena::mode());
    let maps: Vec<BTreeMap<String, Vec<u32>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || {
                    (0..20_000u32)
                        .map(|i| (format!("key-{t}-{i}"), vec![i; (i % 24) as usize]))
                        .collect::<BTreeMap<_, _>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let total: usize = maps
        .iter()
        .map(|m| m.values().map(Vec::len).sum::<usize>())
        .sum();
    println!(
        "{} maps, {} values; while they are alive:\n",
        maps.len(),
        total
    );
    println!("{}", smallarena::stats());
    // Freed on the main thread: remote frees into the (exited) workers' pools.
    drop(maps);
    println!("after dropping them:\n");
    println!("{}", smallarena::stats());
}
