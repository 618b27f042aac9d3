//! A burst of small blocks over several threads, freed but for a few survivors, then a quiet
//! phase: the resident size at each step, to see the purge delay (`SMALLARENA_PURGE_DELAY_MS`)
//! give the freed memory back without `smallarena::collect()`.
//!
//! ```text
//! cargo build --release --example burst
//! target/release/examples/burst [MiB=512] [threads=4] [keep_every=1000] [quiet_ms=200]
//! ```
//!
//! Each thread allocates its share of `MiB` in blocks of 16..=512 bytes (every class in turn),
//! writes them, and frees them but one in `keep_every` (0: none kept); the threads then stay
//! alive, idle, while the main thread sleeps `quiet_ms` and makes a little allocation (1 MiB of
//! 64-byte blocks, allocated and freed: a few slow paths). Prints one line per step: resident MiB
//! (`/proc/self/statm`), minor page faults (`getrusage`), and the allocator's counters.

use std::sync::{Arc, Barrier};
use std::time::Duration;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

fn minor_faults() -> i64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes it.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_minflt as i64
    }
}

fn report(step: &str) {
    let s = smallarena::stats();
    println!(
        "{step:<24} resident {:>7.1} MiB  minflt {:>8}  arenas {:>4}  free pools {:>6}  purged {:>6}  unmapped {:>4}",
        s.resident_bytes as f64 / (1 << 20) as f64,
        minor_faults(),
        s.arenas_mapped,
        s.free_pools,
        s.pools_purged,
        s.arenas_unmapped,
    );
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let mib = args.next().flatten().unwrap_or(512);
    let threads = args.next().flatten().unwrap_or(4).max(1);
    let keep_every = args.next().flatten().unwrap_or(1000);
    let quiet_ms = args.next().flatten().unwrap_or(200);
    report("start");
    let share = (mib << 20) / threads;
    let done = Arc::new(Barrier::new(threads + 1));
    let exit = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (done, exit) = (done.clone(), exit.clone());
            std::thread::spawn(move || {
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                let mut bytes = 0;
                let mut i = 0usize;
                while bytes < share {
                    let size = 16 * (1 + (i + t) % 32);
                    blocks.push(vec![(i & 0xff) as u8; size]);
                    bytes += size;
                    i += 1;
                }
                let mut kept = Vec::new();
                for (j, b) in blocks.into_iter().enumerate() {
                    if keep_every != 0 && j % keep_every == 0 {
                        kept.push(b);
                    }
                }
                done.wait();
                exit.wait();
                kept.len()
            })
        })
        .collect();
    done.wait();
    report("burst freed");
    std::thread::sleep(Duration::from_millis(quiet_ms as u64));
    report("after the quiet phase");
    let little: Vec<Box<[u8; 64]>> = (0..16384).map(|i| Box::new([i as u8; 64])).collect();
    drop(little);
    report("after a little allocation");
    exit.wait();
    let kept: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    report("threads exited");
    smallarena::collect();
    report(&format!("collect() ({kept} kept)"));
}
