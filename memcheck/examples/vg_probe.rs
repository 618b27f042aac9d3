//! A program with one deliberate memory error per scenario, for the Valgrind test suite
//! (`tests/valgrind.rs`) and for trying the suppressions by hand:
//!
//! ```text
//! cargo build -p smallarena-memcheck --example vg_probe
//! valgrind/run target/debug/examples/vg_probe leak
//! SMALLARENA_MODE=annotate valgrind/run target/debug/examples/vg_probe use-after-free
//! ```
//!
//! Scenarios: `clean`, `threads`, `unjoined`, `leak`, `use-after-free`, `double-free`, `overrun`, `uninit`,
//! `realloc`, `mode`. Each error happens in a function named after it (`probe_leak`, ...) so
//! memcheck's stack traces can be checked for the exact frame.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

#[inline(never)]
fn probe_leak() {
    let b: Box<[u8; 40]> = Box::new([7; 40]);
    std::mem::forget(black_box(b));
}

#[inline(never)]
fn probe_use_after_free() -> u8 {
    let b = Box::new([3u8; 48]);
    let p: *const u8 = b.as_ptr();
    drop(b);
    // SAFETY: none; reading freed memory on purpose, for memcheck to report.
    unsafe { std::ptr::read_volatile(p.add(8)) }
}

#[inline(never)]
fn probe_double_free() {
    let layout = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: a valid layout; the second dealloc is the deliberate error.
    unsafe {
        let p = GLOBAL.alloc(layout);
        GLOBAL.dealloc(p, layout);
        GLOBAL.dealloc(black_box(p), layout);
    }
}

#[inline(never)]
fn probe_overrun() {
    let layout = Layout::from_size_align(32, 8).unwrap();
    // SAFETY: writes one byte past the end on purpose, for memcheck to report.
    unsafe {
        let p = GLOBAL.alloc(layout);
        std::ptr::write_volatile(p.add(32), 1);
        GLOBAL.dealloc(p, layout);
    }
}

#[inline(never)]
fn probe_uninit() -> usize {
    let layout = Layout::from_size_align(24, 8).unwrap();
    // SAFETY: reads uninitialised bytes on purpose and branches on them.
    unsafe {
        let p = GLOBAL.alloc(layout);
        let v = std::ptr::read_volatile(p.add(4));
        let r = if v > 100 { 1 } else { 2 };
        GLOBAL.dealloc(p, layout);
        r
    }
}

/// Clean: realloc within a class, across classes, and across the 512-byte boundary.
fn realloc_chain() -> usize {
    let mut v: Vec<u8> = Vec::with_capacity(1);
    for i in 0..2000 {
        v.push(i as u8);
        if i % 7 == 0 {
            v.shrink_to_fit();
        }
    }
    v.iter().map(|&b| b as usize).sum()
}

fn work() -> usize {
    let mut m = std::collections::BTreeMap::new();
    for i in 0..5000 {
        m.insert(format!("key {i}"), vec![i; i % 9]);
    }
    m.values().map(Vec::len).sum()
}

fn main() {
    let scenario = std::env::args().nth(1).unwrap_or_else(|| "clean".into());
    println!("mode: {:?}", smallarena::mode());
    match scenario.as_str() {
        "clean" | "mode" => println!("work: {}", work()),
        "threads" => {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<String>>();
            let t = std::thread::spawn(move || {
                for _ in 0..50 {
                    tx.send((0..100).map(|i| format!("s{i}")).collect())
                        .unwrap();
                }
            });
            let n: usize = rx.iter().map(|v| v.len()).sum();
            t.join().unwrap();
            println!("received: {n}");
        }
        "unjoined" => {
            // A thread still holding blocks when the process exits.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let held: Vec<String> = (0..100).map(|i| format!("held {i}")).collect();
                tx.send(held.len()).unwrap();
                std::thread::sleep(std::time::Duration::from_secs(3600));
                drop(held);
            });
            println!("held: {}", rx.recv().unwrap());
        }
        "leak" => probe_leak(),
        "use-after-free" => println!("read: {}", probe_use_after_free()),
        "double-free" => probe_double_free(),
        "overrun" => probe_overrun(),
        "uninit" => println!("branch: {}", probe_uninit()),
        "realloc" => println!("sum: {}", realloc_chain()),
        other => {
            eprintln!("unknown scenario {other}");
            std::process::exit(2);
        }
    }
}
