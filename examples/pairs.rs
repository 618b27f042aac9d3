//! Exactly N small alloc+free pairs through the installed allocator, for instruction counts:
//!
//! ```text
//! cargo build --release --example pairs
//! SMALLARENA_MODE=arena valgrind --tool=callgrind target/release/examples/pairs 1000000 64
//! ```
//!
//! Instructions per pair = (Ir at 2N - Ir at N) / N, which cancels start-up and exit costs.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let layout = Layout::from_size_align(size, 8).expect("layout");
    for _ in 0..n {
        // SAFETY: a valid layout; each block is freed once, right away.
        unsafe {
            let p = GLOBAL.alloc(black_box(layout));
            GLOBAL.dealloc(black_box(p), layout);
        }
    }
    println!("{n} pairs of {size} bytes in {:?} mode", smallarena::mode());
}
