//! When the arena cannot grow (the OS refuses a new arena), small and medium requests are served
//! by the system allocator before null is returned, through `GlobalAlloc` and through `raw` alike;
//! those blocks are freed, reallocated and measured correctly next to arena blocks.
//!
//! The test runs in a child process of itself whose address space is limited
//! (`RLIMIT_AS`): a little above what it uses, so that a new arena (a 2 MiB reservation, trimmed
//! to 1 MiB) cannot be mapped while libc's heap can still grow in smaller steps. Runs without
//! libtest's harness: the child must be a single thread.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

mod common;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

const CHILD: &str = "SMALLARENA_OOM_CHILD";

/// Pages of address space the process uses now (`/proc/self/statm`, first field).
fn vm_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// Writes block `i`'s pattern over its first `n` bytes.
///
/// # Safety
/// `p` points to `n` writable bytes.
unsafe fn fill(p: *mut u8, i: usize, n: usize) {
    for j in 0..n {
        // SAFETY: per the caller, and `j < n`.
        unsafe { p.add(j).write((i * 7 + j) as u8) };
    }
}

/// Checks block `i`'s pattern over its first `n` bytes.
///
/// # Safety
/// `p` points to `n` readable bytes.
unsafe fn check(p: *const u8, i: usize, n: usize) {
    for j in 0..n {
        // SAFETY: per the caller, and `j < n`.
        let got = unsafe { p.add(j).read() };
        assert_eq!(got, (i * 7 + j) as u8, "block {i} at {p:p}: byte {j}");
    }
}

/// The child: exhausts the arena under a tight address-space limit, then checks the blocks.
fn child() {
    let layout = Layout::from_size_align(64, 8).unwrap();
    let raw_layout_size = 48;
    // Every eighth request is a medium one (a 4 MiB medium arena cannot be mapped under the
    // limit either).
    let medium_layout = Layout::from_size_align(2000, 8).unwrap();
    // Room for every pointer, reserved before the limit.
    let mut blocks: Vec<(*mut u8, bool, Layout)> = Vec::with_capacity(1 << 20);
    let limit = vm_bytes() + (1536 << 10);
    let rl = libc::rlimit {
        rlim_cur: libc::rlim_t::try_from(limit).unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit for this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
    let (mut from_arena, mut from_libc, mut medium) = (0usize, 0usize, 0usize);
    while blocks.len() < blocks.capacity() {
        // Every third request through `raw` (the preload's path), the rest through GlobalAlloc.
        let via_raw = blocks.len() % 3 == 0;
        let l = if blocks.len() % 8 == 7 {
            medium += 1;
            medium_layout
        } else {
            layout
        };
        let p = if via_raw {
            smallarena::raw::alloc(if l == layout {
                raw_layout_size
            } else {
                l.size()
            })
        } else {
            // SAFETY: a valid, non-zero-size layout.
            unsafe { GLOBAL.alloc(l) }
        };
        if p.is_null() {
            break;
        }
        // SAFETY: a live block of at least 48 bytes.
        unsafe { fill(p, blocks.len(), raw_layout_size) };
        if smallarena::raw::owns(p) {
            from_arena += 1;
        } else {
            from_libc += 1;
        }
        blocks.push((p, via_raw, l));
    }
    // Lift the limit: what follows must not depend on more memory being refused.
    let rl = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
    assert_eq!(format!("{:?}", smallarena::mode()), "Arena");
    // Grow every other GlobalAlloc block within its class (stays), or to 200 bytes (moves).
    for (i, (p, via_raw, l)) in blocks.iter_mut().enumerate() {
        // SAFETY: each block is live and carries its pattern over its first 48 bytes.
        unsafe { check(*p, i, raw_layout_size) };
        if !*via_raw && i % 2 == 0 && *l == medium_layout {
            // Within the medium class (2048 bytes): an arena block stays in place (a libc block
            // may move, into the arena).
            let in_arena = smallarena::raw::owns_medium(*p);
            // SAFETY: a live GlobalAlloc block of `l`.
            let q = unsafe { GLOBAL.realloc(*p, *l, 2040) };
            assert!(!q.is_null() && (q == *p || !in_arena));
            // SAFETY: realloc kept the first 2000 bytes.
            unsafe { check(q, i, raw_layout_size) };
            // SAFETY: `q` is live with the new layout; back to `l` for the free below.
            let r = unsafe { GLOBAL.realloc(q, Layout::from_size_align(2040, 8).unwrap(), 2000) };
            assert!(!r.is_null() && (r == q || !in_arena));
            *p = r;
        } else if !*via_raw && i % 2 == 0 {
            // SAFETY: a live GlobalAlloc block of `layout`.
            let q = unsafe { GLOBAL.realloc(*p, layout, 200) };
            assert!(!q.is_null());
            // SAFETY: realloc kept the first 64 bytes.
            unsafe { check(q, i, raw_layout_size) };
            // SAFETY: `q` is live with the new layout; back to `layout` for the free below.
            let r = unsafe { GLOBAL.realloc(q, Layout::from_size_align(200, 8).unwrap(), 64) };
            assert!(!r.is_null());
            *p = r;
        }
    }
    for (p, via_raw, l) in blocks {
        if via_raw {
            if smallarena::raw::owns(p) {
                // SAFETY: a live arena block from `raw::alloc`.
                unsafe { smallarena::raw::free(p) };
            } else {
                // SAFETY: `raw::alloc` served it from libc (the preload would call libc's free).
                unsafe { libc::free(p.cast()) };
            }
        } else {
            // SAFETY: a live GlobalAlloc block of `l`.
            unsafe { GLOBAL.dealloc(p, l) };
        }
    }
    // The arena still serves once memory is there again, medium classes too.
    let b = Box::new([7u8; 40]);
    assert!(smallarena::raw::owns_small(
        &*b as *const [u8; 40] as *const u8
    ));
    let m = vec![7u8; 3000];
    assert!(smallarena::raw::owns_medium(m.as_ptr()));
    println!(
        "oom: {from_arena} arena blocks, {from_libc} system blocks before null ({medium} medium)"
    );
}

fn small_requests_fall_back_to_libc_when_the_arena_cannot_grow() {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("oom:"))
        .expect("the child's summary");
    println!("{line}");
    let nums = common::numbers(line);
    let (arena, system, medium) = (nums[0], nums[1], nums[2]);
    assert!(arena > 0, "{line}");
    assert!(medium > 10, "{line}");
    // Before null, libc served small requests (it still had room in its heap).
    assert!(system > 100, "{line}");
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    common::run_without_harness(
        "small_requests_fall_back_to_libc_when_the_arena_cannot_grow",
        small_requests_fall_back_to_libc_when_the_arena_cannot_grow,
    );
}
