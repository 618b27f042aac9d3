//! Wrong frees through the Rust paths (`GlobalAlloc::dealloc` and `smallarena::raw`) abort the
//! process with one line on stderr naming the fault and the address, as glibc does, instead of
//! handing the same memory out twice.
//!
//! Each fault runs in a child process (this test binary run again with `MISUSE_CASE` set to the
//! case's name and a filter selecting the child entry point), whose death by `SIGABRT` and stderr
//! line the parent checks. A model test runs random valid programs with one misuse injected at a
//! random point, and random valid programs alone (including live blocks that hold the very value
//! the allocator uses as its free key), which must not abort.

mod common;
use common::Rng;
use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

const CASE: &str = "MISUSE_CASE";

/// Runs `case` in a child process; returns its stderr after checking it died of SIGABRT.
fn run_child(case: &str) -> String {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_entry_point",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CASE, case)
        .env("SMALLARENA_MODE", "arena")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run child");
    // A misuse that is not caught may leave a cyclic free list behind, and the child spinning.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("child output");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{case}: {:?}\nstdout:\n{}\nstderr:\n{err}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

/// The fault line the child printed for `addr` (as the child printed it on stdout).
fn expect(case: &str, fault: &str) {
    let err = run_child(case);
    let line = err
        .lines()
        .find(|l| l.starts_with("smallarena: "))
        .unwrap_or_else(|| panic!("{case}: no fault line in\n{err}"));
    let addr = err
        .lines()
        .find_map(|l| l.strip_prefix("addr "))
        .unwrap_or_else(|| panic!("{case}: no address in\n{err}"));
    assert!(
        line.starts_with(&format!("smallarena: {fault} of {addr} (free(): ")),
        "{case}: {line}"
    );
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Prints the address the fault line must name (on stderr, unbuffered, before the fault).
fn announce(p: *mut u8) {
    eprintln!("addr {p:p}");
}

/// The misuse cases, run in the child.
fn child(case: &str) {
    let l = layout(40);
    // Blocks that cross threads: a class that spawning a thread does not allocate from, so the
    // freed block is still free when the second free comes.
    let t = layout(456);
    // SAFETY: every case but the last step of each is a valid use of the allocator; the last step
    // is the misuse under test, which must abort.
    unsafe {
        let keep = GLOBAL.alloc(l); // the pool stays in use
        match case {
            "dealloc_double" => {
                let p = GLOBAL.alloc(l);
                GLOBAL.dealloc(p, l);
                announce(p);
                GLOBAL.dealloc(p, l);
            }
            "dealloc_double_deep" => {
                // The block is deep in the free list, behind other freed blocks.
                let ps: Vec<*mut u8> = (0..50).map(|_| GLOBAL.alloc(l)).collect();
                for &p in &ps {
                    GLOBAL.dealloc(p, l);
                }
                announce(ps[10]);
                GLOBAL.dealloc(ps[10], l);
            }
            "dealloc_interior" => {
                let p = GLOBAL.alloc(layout(64));
                let q = p.add(16);
                announce(q);
                GLOBAL.dealloc(q, layout(48));
            }
            "dealloc_header" => {
                let p = GLOBAL.alloc(l);
                let q = p.map_addr(|a| a & !(16 * 1024 - 1));
                announce(q);
                GLOBAL.dealloc(q, l);
            }
            "dealloc_double_remote" => {
                let p = GLOBAL.alloc(t) as usize;
                std::thread::spawn(move || {
                    let p = p as *mut u8;
                    GLOBAL.dealloc(p, t);
                    announce(p);
                    GLOBAL.dealloc(p, t);
                })
                .join()
                .unwrap();
            }
            "dealloc_double_remote_then_local" => {
                let p = GLOBAL.alloc(t);
                let a = p as usize;
                std::thread::spawn(move || GLOBAL.dealloc(a as *mut u8, t))
                    .join()
                    .unwrap();
                announce(p);
                GLOBAL.dealloc(p, t);
            }
            "dealloc_double_local_then_remote" => {
                let p = GLOBAL.alloc(t);
                GLOBAL.dealloc(p, t);
                let a = p as usize;
                announce(p);
                std::thread::spawn(move || GLOBAL.dealloc(a as *mut u8, t))
                    .join()
                    .unwrap();
            }
            "dealloc_interior_remote" => {
                let p = GLOBAL.alloc(layout(64)) as usize;
                std::thread::spawn(move || {
                    let q = (p + 32) as *mut u8;
                    announce(q);
                    GLOBAL.dealloc(q, layout(32));
                })
                .join()
                .unwrap();
            }
            "dealloc_underflow" => {
                // The only block of a fresh pool of its class, freed twice with its free key
                // overwritten in between (a write after free): the pool's count would wrap.
                let l = layout(496);
                let p = GLOBAL.alloc(l);
                GLOBAL.dealloc(p, l);
                p.cast::<usize>().add(1).write(0);
                announce(p);
                GLOBAL.dealloc(p, l);
            }
            "raw_double" => {
                let p = smallarena::raw::alloc(40);
                smallarena::raw::free(p);
                announce(p);
                smallarena::raw::free(p);
            }
            "raw_interior" => {
                let p = smallarena::raw::alloc(64);
                announce(p.add(16));
                smallarena::raw::free(p.add(16));
            }
            "raw_usable_size_freed" => {
                // What the preload's `realloc` asks first.
                let p = smallarena::raw::alloc(40);
                smallarena::raw::free(p);
                announce(p);
                smallarena::raw::usable_size(p);
            }
            "raw_double_remote" => {
                let p = smallarena::raw::alloc(456) as usize;
                smallarena::raw::free(p as *mut u8);
                std::thread::spawn(move || {
                    announce(p as *mut u8);
                    smallarena::raw::free(p as *mut u8);
                })
                .join()
                .unwrap();
            }
            other => {
                let seed: u64 = other
                    .strip_prefix("model_")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("unknown case {other}"));
                model(seed, true);
            }
        }
        GLOBAL.dealloc(keep, l);
    }
    eprintln!("no fault caught");
}

/// The child's entry point: does nothing unless `MISUSE_CASE` is set.
#[test]
fn child_entry_point() {
    if let Ok(case) = std::env::var(CASE) {
        child(&case);
    }
}

#[test]
fn double_free_through_dealloc_aborts() {
    expect("dealloc_double", "double free");
    expect("dealloc_double_deep", "double free");
}

#[test]
fn interior_free_through_dealloc_aborts() {
    expect("dealloc_interior", "invalid free");
    expect("dealloc_header", "invalid free");
}

#[test]
fn double_free_from_another_thread_aborts() {
    expect("dealloc_double_remote", "double free");
    expect("dealloc_double_remote_then_local", "double free");
    expect("dealloc_double_local_then_remote", "double free");
    expect("raw_double_remote", "double free");
}

#[test]
fn interior_free_from_another_thread_aborts() {
    expect("dealloc_interior_remote", "invalid free");
}

#[test]
fn used_count_underflow_aborts() {
    expect("dealloc_underflow", "double free");
}

#[test]
fn wrong_frees_through_raw_abort() {
    expect("raw_double", "double free");
    expect("raw_interior", "invalid free");
    expect("raw_usable_size_freed", "double free");
}

/// A live block of the arena, with the layout it was allocated with.
struct Live {
    p: *mut u8,
    l: Layout,
}

/// A random program of allocations and frees over a few classes, with live blocks that now and
/// then hold the free key (copied from a freed block) in their second word. With `inject`, one
/// misuse at a random step: a double free of a block still free, or a free of a pointer inside a
/// live block. Returns only if nothing was injected (the checks caught no false fault).
///
/// # Safety
/// Reads the second word of a freed block (mapped arena memory) to learn the key.
unsafe fn model(seed: u64, inject: bool) {
    let mut rng = Rng::with_seed(seed | 1);
    let steps = 400;
    let at = rng.u64(..steps) as usize;
    // Every vector of the model is allocated here, before the first free, with room for the
    // whole run: were one to grow (or be built) later, its buffer could take a freed block of
    // the classes under test, and a "double free" of that block would free a live buffer (on
    // i686, where pointers are 4 bytes, the candidates' buffer took the latest freed 40-byte
    // block).
    let mut live: Vec<Live> = Vec::with_capacity(steps as usize);
    // Freed blocks not handed out again since, with their layouts.
    let mut freed: Vec<Live> = Vec::with_capacity(steps as usize);
    let mut in_use: Vec<usize> = Vec::with_capacity(steps as usize + 8);
    let mut candidates: Vec<&Live> = Vec::with_capacity(steps as usize);
    let mut key = 0usize;
    let pool = |p: *mut u8| p as usize & !(16 * 1024 - 1);
    // One block of each size stays live throughout, so the first pool of each class stays in use:
    // a freed block of such a pool is still free there (not in a pool that went to another class).
    let sizes = [40, 64, 100, 256];
    let anchors: Vec<Live> = sizes
        .iter()
        .map(|&s| Live {
            // SAFETY: a valid, non-zero-size layout.
            p: unsafe { GLOBAL.alloc(layout(s)) },
            l: layout(s),
        })
        .collect();
    for step in 0..steps as usize {
        if inject && step == at {
            in_use.extend(anchors.iter().chain(&live).map(|b| pool(b.p)));
            candidates.extend(freed.iter().filter(|f| in_use.contains(&pool(f.p))));
            let double = !candidates.is_empty() && (live.is_empty() || rng.u64(..2) == 0);
            // SAFETY: the misuse under test: it must abort.
            unsafe {
                if double {
                    let b = candidates[rng.u64(..candidates.len() as u64) as usize];
                    announce(b.p);
                    GLOBAL.dealloc(b.p, b.l);
                } else if let Some(b) = live.first().or(anchors.first()) {
                    let off = 16 * (1 + rng.u64(..b.l.size() as u64 / 16 - 1) as usize);
                    let q = b.p.add(off);
                    announce(q);
                    GLOBAL.dealloc(q, layout(16));
                }
            }
            panic!("step {step}: misuse not caught");
        }
        if live.is_empty() || rng.u64(..5) < 3 {
            let size = sizes[rng.u64(..4) as usize];
            let l = layout(size);
            // SAFETY: a valid layout.
            let p = unsafe { GLOBAL.alloc(l) };
            assert!(!p.is_null());
            freed.retain(|f| f.p != p);
            // SAFETY: `p` has `size` writable bytes.
            unsafe {
                p.write_bytes(0x5a, size);
                if key != 0 && rng.u64(..4) == 0 {
                    p.cast::<usize>().add(1).write(key);
                }
            }
            live.push(Live { p, l });
        } else {
            let b = live.swap_remove(rng.u64(..live.len() as u64) as usize);
            // SAFETY: a live block with its layout, freed once.
            unsafe { GLOBAL.dealloc(b.p, b.l) };
            if key == 0 && anchors.iter().any(|a| pool(a.p) == pool(b.p)) {
                // SAFETY: arena memory stays mapped while its pool is in use (its anchor keeps
                // it so); this reads what the free stored.
                key = unsafe { b.p.cast::<usize>().add(1).read() };
            }
            freed.push(b);
        }
    }
    for b in live.into_iter().chain(anchors) {
        // SAFETY: live blocks with their layouts, freed once.
        unsafe { GLOBAL.dealloc(b.p, b.l) };
    }
}

/// Random valid programs, some of whose live blocks hold the free key, never abort.
#[test]
fn valid_programs_holding_the_key_do_not_abort() {
    for seed in 0..50 {
        // SAFETY: see `model`.
        unsafe { model(seed, false) };
    }
}

/// One misuse injected into a random valid program is always caught.
#[test]
fn injected_misuse_is_caught() {
    for seed in 1..=12u64 {
        let err = run_child(&format!("model_{seed}"));
        let addr = err
            .lines()
            .find_map(|l| l.strip_prefix("addr "))
            .unwrap_or_else(|| panic!("seed {seed}: no address in\n{err}"));
        assert!(
            err.lines()
                .any(|l| l.starts_with("smallarena: ")
                    && l.contains(&format!(" of {addr} (free(): "))),
            "seed {seed}:\n{err}"
        );
    }
}
