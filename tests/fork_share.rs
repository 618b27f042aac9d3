//! `SMALLARENA_FORK=share`: a forked child leaves the pages of its parent's heap shared.
//!
//! The scenario (`tests/scenario/forkshare.rs`, the benchmark `workloads/examples/forkshare.rs`
//! runs it at full size): a parent builds 64 MiB of small objects and forks 2 children; each walks
//! every inherited object, frees a quarter of them, allocates 16 MiB of its own and churns it,
//! and reports its `Private_Dirty` (`/proc/self/smaps_rollup`). Each policy runs in a fresh
//! process of this test binary (no libtest harness: nothing else allocates there).
//!
//! Asserted, per child, on the dirty bytes it added after the fork beyond its own new data
//! ([`Report::extra`]): with `share` at most 1/8 of the own data (class rounding, pool headers
//! and partly used pools: the allocator's fresh metadata) plus 2 MiB, and at most a tenth of what
//! `reuse` adds on the same program; `reuse` must add at least half the parent's heap (else the
//! scenario does not provoke what it is meant to measure). Also: every inherited object reads
//! back intact, and share mode counts the dropped blocks as retained.

mod common;
#[path = "scenario/forkshare.rs"]
mod scenario;

use scenario::{Params, Report};
use std::alloc::{alloc, dealloc, realloc, Layout};
use std::process::Command;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

const SCENARIO_VAR: &str = "SMALLARENA_TEST_FORK_SHARE_SCENARIO";
const MIB: u64 = 1 << 20;

const PARAMS: Params = Params {
    heap_bytes: 64 << 20,
    children: 2,
    child_bytes: 16 << 20,
    churn_rounds: 3,
};

/// Runs the scenario in a fresh process of this binary under `policy`; the children's reports.
fn run(policy: &str) -> Vec<Report> {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(SCENARIO_VAR, "1")
        .env("SMALLARENA_MODE", "arena")
        .env("SMALLARENA_FORK", policy)
        .output()
        .expect("run the scenario");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{policy}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<Report> = stdout.lines().filter_map(Report::parse).collect();
    assert_eq!(reports.len(), PARAMS.children, "{policy}: {stdout}");
    reports
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

fn check() {
    let share = run("share");
    let reuse = run("reuse");
    for (policy, reports) in [("share", &share), ("reuse", &reuse)] {
        for r in reports.iter() {
            println!(
                "{policy}: child {}: dirty after fork / walk / free / end = {:.1} / {:.1} / \
                 {:.1} / {:.1} MiB, own data {:.1} MiB, extra {:.2} MiB, retained {:.1} MiB",
                r.pid,
                mib(r.dirty[0]),
                mib(r.dirty[1]),
                mib(r.dirty[2]),
                mib(r.dirty[3]),
                mib(r.own_bytes),
                mib(r.extra()),
                mib(r.retained)
            );
            assert_eq!(r.intact, 1, "{policy}: an inherited object changed");
            assert!(r.dirty[3] > 0, "{policy}: smaps_rollup unreadable");
        }
    }
    let heap = PARAMS.heap_bytes as u64;
    for (s, r) in share.iter().zip(reuse.iter()) {
        // Roughly a quarter of the heap's blocks were freed and dropped (whole blocks).
        assert!(
            s.retained > heap / 8 && s.retained < heap / 2,
            "share: retained {} of a {} heap",
            s.retained,
            heap
        );
        assert_eq!(r.retained, 0, "reuse drops nothing");
        assert!(
            r.extra() >= heap / 2,
            "reuse dirtied only {:.1} MiB beyond its own data: the scenario provokes nothing",
            mib(r.extra())
        );
        let bound = s.own_bytes / 8 + 2 * MIB;
        assert!(
            s.extra() <= bound,
            "share dirtied {:.2} MiB beyond its own data (bound {:.2} MiB)",
            mib(s.extra()),
            mib(bound)
        );
        assert!(
            s.extra() * 10 <= r.extra(),
            "share {:.2} MiB is more than a tenth of reuse {:.2} MiB",
            mib(s.extra()),
            mib(r.extra())
        );
        // The walk reads only, and share mode's frees write nothing inherited.
        assert!(
            s.dirty[2].saturating_sub(s.dirty[0]) <= MIB,
            "share: walking and freeing dirtied {:.2} MiB",
            mib(s.dirty[2].saturating_sub(s.dirty[0]))
        );
    }
}

const PROTECT_VAR: &str = "SMALLARENA_TEST_FORK_SHARE_PROTECT";

/// Blocks of every size class, a few per class, their pointers and sizes.
fn blocks(n: usize, fill: u8) -> Vec<(*mut u8, usize)> {
    (0..n)
        .map(|i| {
            let size = 1 + (i * 37) % 512;
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: a non-zero size.
            let p = unsafe { alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: `size` writable bytes.
            unsafe { p.write_bytes(fill, size) };
            (p, size)
        })
        .collect()
}

/// Makes every arena holding one of `blocks` read-only: the allocator writing to any of them
/// from now on is a `SIGSEGV`.
fn protect_arenas(blocks: &[(*mut u8, usize)]) {
    const ARENA: usize = 1 << 20;
    let mut bases: Vec<usize> = blocks
        .iter()
        .map(|&(p, _)| p as usize & !(ARENA - 1))
        .collect();
    bases.sort_unstable();
    bases.dedup();
    for b in bases {
        // SAFETY: a whole arena (1 MiB-aligned, 1 MiB) of the allocator's, which stays mapped;
        // only its protection changes.
        let rc = unsafe { libc::mprotect(b as *mut libc::c_void, ARENA, libc::PROT_READ) };
        assert_eq!(rc, 0, "mprotect");
    }
}

/// In a share-mode child: reads, frees and reallocates the `inherited` blocks (every other one
/// freed, every fourth reallocated within its size class: it must move, its bytes kept), after
/// making their arenas read-only; allocates and frees its own blocks, runs a thread that
/// allocates and exits (its heap is abandoned), asks for statistics and returns memory.
/// Returns the child's own blocks (still live), for a grandchild.
fn work_on_inherited(inherited: &[(*mut u8, usize)], fill: u8) -> Vec<(*mut u8, usize)> {
    protect_arenas(inherited);
    let before = smallarena::stats().fork_retained_bytes;
    for (i, &(p, size)) in inherited.iter().enumerate() {
        // SAFETY: live inherited blocks of `size` bytes.
        assert!(unsafe { std::slice::from_raw_parts(p, size) }
            .iter()
            .all(|&b| b == fill));
        let layout = Layout::from_size_align(size, 8).unwrap();
        if i % 4 == 1 {
            // Same size class (block sizes are multiples of 16): in place, but not here.
            let grown = size.div_ceil(16) * 16;
            // SAFETY: a live block of `layout`; `grown` is non-zero.
            let q = unsafe { realloc(p, layout, grown) };
            assert!(
                !q.is_null() && q != p,
                "an inherited block was resized in place"
            );
            // SAFETY: `q` holds at least `size` bytes copied from `p`.
            assert!(unsafe { std::slice::from_raw_parts(q, size) }
                .iter()
                .all(|&b| b == fill));
            // SAFETY: the live block `realloc` returned, with its new layout.
            unsafe { dealloc(q, Layout::from_size_align(grown, 8).unwrap()) };
        } else if i % 2 == 0 {
            // SAFETY: a live block of `layout`, freed once.
            unsafe { dealloc(p, layout) };
        }
    }
    let after = smallarena::stats().fork_retained_bytes;
    assert!(after > before, "no inherited block counted as retained");
    let churn = blocks(5000, 0x5A);
    for (p, size) in churn {
        // SAFETY: live blocks of our own, freed once.
        unsafe { dealloc(p, Layout::from_size_align(size, 8).unwrap()) };
    }
    // A plain pthread, not `std::thread`: std's own bookkeeping of a new thread may write to
    // objects the parent allocated (on i686 it does), which the read-only arenas would not allow;
    // only the allocator's writes are under test.
    extern "C" fn worker(_: *mut libc::c_void) -> *mut libc::c_void {
        let made = (0..2000)
            .map(|i| vec![i as u8; 1 + i % 300])
            .filter(|v| v[0] == v[v.len() - 1])
            .count();
        made as *mut libc::c_void
    }
    // SAFETY: `t` and `made` are valid for the writes; the thread is joined before we go on.
    unsafe {
        let mut t: libc::pthread_t = std::mem::zeroed();
        let rc = libc::pthread_create(&mut t, std::ptr::null(), worker, std::ptr::null_mut());
        assert_eq!(rc, 0, "pthread_create");
        let mut made = std::ptr::null_mut();
        assert_eq!(libc::pthread_join(t, &mut made), 0);
        assert_eq!(made as usize, 2000);
    }
    smallarena::collect();
    let s = smallarena::stats();
    assert!(s.fork_inherited_bytes >= 1 << 20, "{s:?}");
    blocks(3000, fill.wrapping_add(1))
}

/// Forks, runs `child` in the child (which exits 0 unless it panics), and returns the child's
/// wait status.
fn fork_and_wait(child: impl FnOnce()) -> i32 {
    // SAFETY: the child runs `child` in this single-threaded process, then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).is_ok();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 3 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

/// The process of the protection case: parent, child and grandchild (see [`protected`]).
fn protect_case(policy: &str) -> i32 {
    smallarena::set_fork_policy(if policy == "share" {
        smallarena::ForkPolicy::Share
    } else {
        smallarena::ForkPolicy::Reuse
    });
    let mut parent = blocks(4000, 0xA5);
    // Free blocks in the parent's pools too: a reusing child would hand them out.
    for (p, size) in parent.drain(..1000) {
        // SAFETY: live blocks, freed once.
        unsafe { dealloc(p, Layout::from_size_align(size, 8).unwrap()) };
    }
    let status = fork_and_wait(|| {
        let own = work_on_inherited(&parent, 0xA5);
        // The parent's blocks the child left live (neither freed nor reallocated).
        let kept: Vec<(*mut u8, usize)> = parent.iter().copied().skip(3).step_by(4).collect();
        // A grandchild: the child's blocks are inherited now, and the parent's still are.
        let status = fork_and_wait(|| {
            work_on_inherited(&own, 0xA6);
            work_on_inherited(&kept, 0xA5);
        });
        assert_eq!(status, 0, "grandchild: wait status {status:#x}");
    });
    if libc::WIFSIGNALED(status) {
        println!("child killed by signal {}", libc::WTERMSIG(status));
        return libc::WTERMSIG(status);
    }
    println!("child exit status {}", libc::WEXITSTATUS(status));
    0
}

/// Runs the protection case under `policy` in a fresh process; its output.
fn run_protect(policy: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(PROTECT_VAR, policy)
        .env("SMALLARENA_MODE", "arena")
        .env_remove("SMALLARENA_FORK")
        .output()
        .expect("run the case");
    assert!(out.status.success(), "{policy}: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// With `share`, a child and a grandchild work on inherited blocks whose arenas are read-only:
/// the allocator never writes them. With `reuse` the same program faults (so the case can fail).
fn protected() {
    let share = run_protect("share");
    assert!(share.contains("child exit status 0"), "share: {share}");
    let reuse = run_protect("reuse");
    assert!(
        reuse.contains(&format!("child killed by signal {}", libc::SIGSEGV)),
        "reuse: {reuse}"
    );
}

const POLICY_VAR: &str = "SMALLARENA_TEST_FORK_SHARE_POLICY";

/// Runs this binary printing its fork policy (parent, then a forked child) with
/// `SMALLARENA_FORK=value`; stdout and stderr.
fn policy_with(value: &str) -> (String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(POLICY_VAR, "1")
        .env("SMALLARENA_FORK", value)
        .output()
        .expect("run the case");
    assert!(out.status.success(), "{value}: {}", out.status);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `SMALLARENA_FORK` is read once at start-up: a bad value is echoed once (not again in a forked
/// child) and `reuse` is used; `share` in any case is taken; `set_fork_policy` overrides it.
fn environment() {
    let (out, err) = policy_with(" SHARE ");
    assert_eq!(out, "parent Share\nchild Share\noverridden Reuse\n");
    assert_eq!(err, "");
    let (out, err) = policy_with("sharing");
    assert_eq!(out, "parent Reuse\nchild Reuse\noverridden Reuse\n");
    assert_eq!(
        err,
        "smallarena: unknown SMALLARENA_FORK value \"sharing\"; accepted: reuse, share; \
         using reuse\n"
    );
}

/// The process of [`environment`].
fn policy_case() {
    println!("parent {:?}", smallarena::fork_policy());
    let status = fork_and_wait(|| println!("child {:?}", smallarena::fork_policy()));
    assert_eq!(status, 0);
    smallarena::set_fork_policy(smallarena::ForkPolicy::Reuse);
    println!("overridden {:?}", smallarena::fork_policy());
}

fn main() {
    if std::env::var_os(POLICY_VAR).is_some() {
        policy_case();
        return;
    }
    if let Some(policy) = std::env::var_os(PROTECT_VAR) {
        protect_case(policy.to_str().unwrap());
        return;
    }
    if std::env::var_os(SCENARIO_VAR).is_some() {
        for r in scenario::run(PARAMS) {
            println!("{}", r.line());
        }
        return;
    }
    common::run_without_harness("share_mode_children_leave_the_parent_heap_shared", check);
    common::run_without_harness("share_mode_never_writes_inherited_arenas", protected);
    common::run_without_harness("the_policy_comes_from_the_environment", environment);
}
