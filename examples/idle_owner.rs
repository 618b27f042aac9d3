//! An owner thread that goes idle after handing its blocks away: the resident size at each step,
//! to see the idle-owner reclaim (`src/heap/reclaim.rs`) and the purge delay
//! (`SMALLARENA_PURGE_DELAY_MS`) give the memory back while the owner stays parked.
//!
//! ```text
//! cargo build --release --example idle_owner
//! target/release/examples/idle_owner [MiB=512] [size=64] [work_ms=3000]
//! ```
//!
//! Thread A allocates `MiB` of `size`-byte blocks and writes them, hands them all to thread B,
//! which frees them all (remote frees into A's pools), and parks for good (`thread::park`, which
//! allocates nothing). The main thread then does slow-path work (allocating and freeing 1000
//! blocks of 200 bytes every 10 ms) for `work_ms`. Prints one line per step: resident MiB
//! (`/proc/self/statm`), the arena counters, and the pools reclaimed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

fn report(step: &str) {
    let s = smallarena::stats();
    println!(
        "{step:<28} resident {:>7.1} MiB  mapped {:>7.1} MiB  purged {:>6}  unmapped {:>4}  reclaimed {:>6}",
        s.resident_bytes as f64 / (1 << 20) as f64,
        s.bytes_mapped as f64 / (1 << 20) as f64,
        s.pools_purged,
        s.arenas_unmapped,
        s.pools_reclaimed,
    );
}

/// A block address that can cross threads.
struct Block(*mut u8);
// SAFETY: plain memory handed from one thread to another, used by one at a time.
unsafe impl Send for Block {}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let mib = args.next().flatten().unwrap_or(512);
    let size = args.next().flatten().unwrap_or(64).max(1);
    let work_ms = args.next().flatten().unwrap_or(3000) as u64;
    report("start");
    let n = (mib << 20) / size;
    let (to_b, from_a) = mpsc::channel::<Vec<Block>>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let wake = Arc::new(AtomicBool::new(false));
    let woken = wake.clone();
    let a = std::thread::spawn(move || {
        let layout = std::alloc::Layout::from_size_align(size, 8).unwrap();
        let blocks: Vec<Block> = (0..n)
            .map(|i| {
                // SAFETY: a valid non-zero layout; B frees every block once.
                let p = unsafe { std::alloc::alloc(layout) };
                assert!(!p.is_null());
                // SAFETY: the block has `size` writable bytes.
                unsafe { p.write_bytes(i as u8, size) };
                Block(p)
            })
            .collect();
        to_b.send(blocks).unwrap();
        ready_tx.send(()).unwrap();
        while !woken.load(Ordering::Acquire) {
            std::thread::park();
        }
    });
    let b = std::thread::spawn(move || {
        let layout = std::alloc::Layout::from_size_align(size, 8).unwrap();
        go_rx.recv().unwrap();
        for Block(p) in from_a.recv().unwrap() {
            // SAFETY: a live block of `layout`, freed once.
            unsafe { std::alloc::dealloc(p, layout) };
        }
    });
    ready_rx.recv().unwrap();
    report("A allocated, parked");
    go_tx.send(()).unwrap();
    b.join().unwrap();
    report("B freed everything");
    let start = Instant::now();
    let l = std::alloc::Layout::from_size_align(200, 8).unwrap();
    let mut next = 500;
    while start.elapsed() < Duration::from_millis(work_ms) {
        std::thread::sleep(Duration::from_millis(10));
        let v: Vec<*mut u8> = (0..1000)
            // SAFETY: a valid non-zero layout.
            .map(|_| unsafe { std::alloc::alloc(l) })
            .collect();
        for p in v {
            // SAFETY: a live block of `l`, freed once.
            unsafe { std::alloc::dealloc(p, l) };
        }
        if start.elapsed() >= Duration::from_millis(next) {
            report(&format!("main worked {next} ms"));
            next += 500;
        }
    }
    report("end (A still parked)");
    wake.store(true, Ordering::Release);
    a.thread().unpark();
    a.join().unwrap();
}
