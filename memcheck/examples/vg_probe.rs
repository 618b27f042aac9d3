//! A program with one deliberate memory error per scenario, for the Valgrind test suite
//! (`tests/valgrind.rs`) and for trying the suppressions by hand:
//!
//! ```text
//! cargo build -p smallarena-memcheck --example vg_probe
//! valgrind/run target/debug/examples/vg_probe leak
//! SMALLARENA_MODE=annotate valgrind/run target/debug/examples/vg_probe use-after-free
//! ```
//!
//! Scenarios: `clean`, `threads`, `unjoined`, `leak`, `use-after-free`, `use-after-reuse`,
//! `double-free`, `double-free-after-reuse`, `overrun`, `uninit`, `realloc`, `churn`, `state`,
//! `mode`. Each
//! error happens in a function named after it (`probe_leak`, ...) so memcheck's stack traces can
//! be checked for the exact frame.
//!
//! Under Valgrind the probe also asks memcheck from inside, with `crabgrind`'s client requests,
//! and prints the answers as `key=value` lines for the suite to compare:
//! * `leak` runs a leak check after leaking and prints
//!   `leaks: leaked_bytes=.. leaked_blocks=.. dubious_bytes=.. dubious_blocks=..`;
//! * `state` prints what memcheck knows of a few blocks' bytes (each `noaccess`, `undefined`,
//!   `defined`, or `mixed`): `state: fresh=.. zeroed=.. redzone=.. freed=..` for a fresh `alloc`
//!   block, a fresh `alloc_zeroed` block, the 16 bytes right after a live block, and a freed
//!   block.
//!
//! Natively (or where crabgrind was built without Valgrind's headers, whose requests panic) the
//! questions are skipped and those lines are not printed.

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

/// How many blocks of the freed block's class the `-after-reuse` scenarios allocate before they
/// use the stale pointer: without a quarantine the first of them is the freed block itself.
const REUSES: usize = 16;

/// Reads a freed 48-byte block after allocating [`REUSES`] more of its size.
#[inline(never)]
fn probe_use_after_reuse() -> u8 {
    let b = Box::new([3u8; 48]);
    let p: *const u8 = b.as_ptr();
    drop(b);
    let later: Vec<Box<[u8; 48]>> = (0..REUSES).map(|i| Box::new([i as u8; 48])).collect();
    // SAFETY: none; reading freed memory on purpose (after its class was allocated from again),
    // for memcheck to report.
    let v = unsafe { std::ptr::read_volatile(p.add(8)) };
    drop(black_box(later));
    v
}

/// Frees a block, allocates [`REUSES`] more of its layout (returned, for [`new_owners`]), then
/// frees the first one again through the stale pointer.
#[inline(never)]
fn probe_double_free_after_reuse(layout: Layout) -> Vec<*mut u8> {
    // SAFETY: a valid layout; the second dealloc of `p` (after its class was allocated from
    // again) is the deliberate error.
    unsafe {
        let p = GLOBAL.alloc(layout);
        GLOBAL.dealloc(p, layout);
        let later: Vec<*mut u8> = (0..REUSES).map(|_| GLOBAL.alloc(layout)).collect();
        GLOBAL.dealloc(black_box(p), layout);
        later
    }
}

/// The legitimate owners of the blocks allocated after the stale free: writes, reads and frees
/// that memcheck must not blame.
#[inline(never)]
fn new_owners(blocks: Vec<*mut u8>, layout: Layout) -> usize {
    let mut sum = 0;
    for q in blocks {
        // SAFETY: each is a live block of `layout`, freed once here.
        unsafe {
            std::ptr::write_bytes(q, 0xab, layout.size());
            sum += usize::from(std::ptr::read_volatile(q.add(layout.size() - 1)));
            GLOBAL.dealloc(q, layout);
        }
    }
    sum
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

/// Whether the probe may ask memcheck: crabgrind found Valgrind's headers when it was built (its
/// requests panic otherwise) and the probe runs under Valgrind.
fn under_valgrind() -> bool {
    crabgrind::VALGRIND_AVAILABLE && !crabgrind::valgrind::running_mode().is_native()
}

/// Overwrites the stack below the caller's frame with zeros, so that frames called next hold no
/// stale copy of a pointer the program dropped (memcheck's leak check scans the live part of the
/// stack, uninitialised slots of a new frame included, and would count the block as reachable).
#[inline(never)]
fn scrub_stack() {
    let mut words = [1usize; 8192];
    for w in words.iter_mut() {
        // SAFETY: a write to a local array element.
        unsafe { std::ptr::write_volatile(w, 0) };
    }
    black_box(&words);
}

/// Runs a leak check and prints memcheck's counts in one parseable line.
#[inline(never)]
fn report_leaks() {
    use crabgrind::memcheck::{count_leak_blocks, count_leaks, leak_check, LeakCheck};
    leak_check(LeakCheck::Quick);
    let (bytes, blocks) = (count_leaks(), count_leak_blocks());
    println!(
        "leaks: leaked_bytes={} leaked_blocks={} dubious_bytes={} dubious_blocks={}",
        bytes.leaked, blocks.leaked, bytes.dubious, blocks.dubious
    );
}

/// What memcheck knows of the `len` bytes at `p`: `noaccess`, `undefined` or `defined` when every
/// byte is so, else `mixed`. Asks byte by byte with `VALGRIND_GET_VBITS`, which (unlike the
/// `CHECK_MEM_*` requests) reports no error for bytes that are not addressable.
fn memory_state(p: *const u8, len: usize) -> &'static str {
    let mut seen = None;
    for i in 0..len {
        let mut v = [0u8; 1];
        let state = match crabgrind::memcheck::vbits(p.wrapping_add(i).cast(), &mut v) {
            Err(crabgrind::memcheck::VBitsError::Unaddressable) => "noaccess",
            Ok(()) if v[0] == 0 => "defined",
            Ok(()) if v[0] == 0xff => "undefined",
            _ => return "mixed",
        };
        match seen {
            None => seen = Some(state),
            Some(s) if s != state => return "mixed",
            Some(_) => {}
        }
    }
    seen.unwrap_or("mixed")
}

/// Asks memcheck about a fresh block, a zeroed one, the redzone after a live block and a freed
/// block, and prints the answers in one parseable line.
fn report_state() {
    let layout = Layout::from_size_align(40, 8).unwrap();
    // SAFETY: a valid layout; the blocks are only inspected through client requests (which read
    // memcheck's bookkeeping, not the bytes), and each is freed once.
    unsafe {
        let fresh = GLOBAL.alloc(layout);
        let zeroed = GLOBAL.alloc_zeroed(layout);
        let fresh_state = memory_state(fresh, 40);
        let zeroed_state = memory_state(zeroed, 40);
        let redzone = memory_state(fresh.wrapping_add(40), 16);
        GLOBAL.dealloc(zeroed, layout);
        let freed = memory_state(zeroed, 40);
        GLOBAL.dealloc(fresh, layout);
        println!(
            "state: fresh={fresh_state} zeroed={zeroed_state} redzone={redzone} freed={freed}"
        );
    }
}

/// Clean: 40,000 blocks of eight classes (about 7 MB) allocated here and freed by another thread,
/// then as many allocated again. In annotate mode with a small quarantine
/// (`SMALLARENA_QUARANTINE_MB=1`) the quarantine drains, from the freeing thread, blocks whose
/// pools this thread owns. Returns the bytes freed and the allocator's blocks in use at the end.
fn churn() -> (usize, usize) {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<Box<[u8]>>>();
    let t = std::thread::spawn(move || rx.iter().flatten().map(|b| b.len()).sum::<usize>());
    for round in 0..40u8 {
        let v: Vec<Box<[u8]>> = (0..1000)
            .map(|i| vec![round; 16 + (i % 8) * 40].into_boxed_slice())
            .collect();
        tx.send(v).unwrap();
    }
    drop(tx);
    let freed = t.join().unwrap();
    let again: Vec<Box<[u8]>> = (0..40_000)
        .map(|i| vec![1; 16 + (i % 8) * 40].into_boxed_slice())
        .collect();
    let sum = again.iter().map(|b| b.len()).sum::<usize>();
    drop(again);
    assert_eq!(sum, freed);
    (freed, smallarena::stats().blocks_in_use())
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
        "leak" => {
            probe_leak();
            if under_valgrind() {
                scrub_stack();
                report_leaks();
            }
        }
        "use-after-free" => println!("read: {}", probe_use_after_free()),
        "use-after-reuse" => println!("read: {}", probe_use_after_reuse()),
        "double-free" => probe_double_free(),
        "double-free-after-reuse" => {
            let layout = Layout::from_size_align(64, 8).unwrap();
            let blocks = probe_double_free_after_reuse(layout);
            println!("new owners: {}", new_owners(blocks, layout));
        }
        "state" => {
            if under_valgrind() {
                report_state();
            }
        }
        "overrun" => probe_overrun(),
        "uninit" => println!("branch: {}", probe_uninit()),
        "realloc" => println!("sum: {}", realloc_chain()),
        "churn" => {
            let (freed, in_use) = churn();
            println!("churn: freed={freed} blocks_in_use={in_use}");
        }
        other => {
            eprintln!("unknown scenario {other}");
            std::process::exit(2);
        }
    }
}
