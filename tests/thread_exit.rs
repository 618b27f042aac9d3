//! Allocation during and after a thread's exit handling, through `#[global_allocator]`:
//! * a thread whose first allocation happens in a pthread key destructor (after the thread-local
//!   destructors ran) hands its heap back like any other thread;
//! * allocation in a key destructor that runs after smallarena's exit hook, and in an `atexit`
//!   handler of the main thread, costs about what it costs before, and leaks nothing.
//!
//! Runs without libtest's harness (`harness = false`): its main thread would allocate while the
//! counters are compared. The `atexit` case runs in a child process of this test.

mod common;
use common::Rng;

use std::ffi::c_void;
use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

/// Heaps in use by a thread (created and not abandoned).
fn live_heaps(s: &smallarena::Stats) -> usize {
    s.heaps - s.heaps_abandoned
}

/// A pthread key (created now, so after smallarena's own) whose destructor is `dtor`.
fn key_with(dtor: unsafe extern "C" fn(*mut c_void)) -> libc::pthread_key_t {
    let mut key = 0;
    // SAFETY: `key` is valid for the write; the destructor lives as long as the process.
    assert_eq!(unsafe { libc::pthread_key_create(&mut key, Some(dtor)) }, 0);
    key
}

/// Runs one raw pthread (no std runtime: nothing in it allocates) that only sets `key`, so its
/// destructor runs at the thread's exit, and joins it.
fn run_thread_setting(key: libc::pthread_key_t) {
    extern "C" fn body(key: *mut c_void) -> *mut c_void {
        // SAFETY: the key is live; the value is a non-null marker never dereferenced.
        unsafe {
            libc::pthread_setspecific(
                key as usize as libc::pthread_key_t,
                std::ptr::NonNull::<c_void>::dangling().as_ptr(),
            )
        };
        std::ptr::null_mut()
    }
    // SAFETY: `pthread_t` is an integer or a pointer (musl); all-zero is a valid placeholder that
    // `pthread_create` overwrites.
    let mut t: libc::pthread_t = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is valid for the write; `body` matches the start routine's signature and
    // takes the key by value in its argument.
    unsafe {
        assert_eq!(
            libc::pthread_create(&mut t, std::ptr::null(), body, key as usize as *mut c_void),
            0
        );
        assert_eq!(libc::pthread_join(t, std::ptr::null_mut()), 0);
    }
}

/// The thread's first allocations, in a key destructor.
unsafe extern "C" fn allocate_late(_: *mut c_void) {
    for k in 0..6 {
        black_box(vec![k as u8; 64 * (k + 1)]);
    }
    black_box(format!("{}", black_box(12345)));
}

fn late_first_allocation_gives_the_heap_back() {
    let key = key_with(allocate_late);
    run_thread_setting(key); // the first one may make a heap
    let before = smallarena::stats();
    for _ in 0..300 {
        run_thread_setting(key);
    }
    let after = smallarena::stats();
    assert_eq!(
        live_heaps(&after),
        live_heaps(&before),
        "threads that first allocated in a key destructor kept their heaps: {before} -> {after}"
    );
    assert!(
        after.heaps <= before.heaps + 1,
        "heaps not reused: {before} -> {after}"
    );
    assert_eq!(after.blocks_in_use(), before.blocks_in_use());
}

const PAIRS: usize = 20_000;
static NS_BODY: AtomicU64 = AtomicU64::new(0);
static NS_EXIT: AtomicU64 = AtomicU64::new(0);

/// `PAIRS` malloc/free pairs of mixed sizes; nanoseconds taken.
fn pairs() -> u64 {
    let t = Instant::now();
    for i in 0..PAIRS {
        let v = black_box(vec![i as u8; 16 + (i * 7) % 480]);
        black_box(v[0]);
    }
    t.elapsed().as_nanos() as u64
}

/// A heap with many partly used pools (as a long-running thread has): every other block of a
/// mixed-size run is freed.
fn fragment() -> Vec<Box<[u8]>> {
    let mut rng = Rng::with_seed(5);
    let mut v: Vec<Box<[u8]>> = (0..40_000)
        .map(|_| vec![1u8; 1 + rng.u64(..512) as usize].into_boxed_slice())
        .collect();
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        i % 2 == 0
    });
    v
}

/// Runs after smallarena's exit hook (its key was created first, and glibc runs the destructors of
/// a round in key order): the thread's heap was handed back just before.
unsafe extern "C" fn allocate_after_exit_hook(_: *mut c_void) {
    NS_EXIT.store(pairs(), Ordering::Relaxed);
}

fn allocation_after_the_exit_hook_hands_back_once() {
    extern "C" fn body(key: *mut c_void) -> *mut c_void {
        let kept = fragment();
        NS_BODY.store(pairs(), Ordering::Relaxed);
        drop(kept);
        // SAFETY: the key is live; the value is a non-null marker never dereferenced.
        unsafe {
            libc::pthread_setspecific(
                key as usize as libc::pthread_key_t,
                std::ptr::NonNull::<c_void>::dangling().as_ptr(),
            )
        };
        std::ptr::null_mut()
    }
    let key = key_with(allocate_after_exit_hook);
    let before = smallarena::stats();
    let (mut body_best, mut exit_best) = (u64::MAX, u64::MAX);
    for _ in 0..3 {
        // SAFETY: `pthread_t` is an integer or a pointer (musl); all-zero is a valid placeholder that
        // `pthread_create` overwrites.
        let mut t: libc::pthread_t = unsafe { std::mem::zeroed() };
        // SAFETY: as in `run_thread_setting`.
        unsafe {
            assert_eq!(
                libc::pthread_create(&mut t, std::ptr::null(), body, key as usize as *mut c_void),
                0
            );
            assert_eq!(libc::pthread_join(t, std::ptr::null_mut()), 0);
        }
        let (body_ns, exit_ns) = (
            NS_BODY.load(Ordering::Relaxed),
            NS_EXIT.load(Ordering::Relaxed),
        );
        body_best = body_best.min(body_ns);
        exit_best = exit_best.min(exit_ns);
        println!(
            "{PAIRS} pairs: {} ns/pair in the thread, {} ns/pair in a key destructor after the exit hook",
            body_ns / PAIRS as u64,
            exit_ns / PAIRS as u64
        );
    }
    let after = smallarena::stats();
    // The mechanism, counted rather than timed: each thread hands its heap back at its exit hook
    // and, having allocated again in a later destructor round, once more. Before the fix every
    // allocation after the hook borrowed a heap and handed it back (20,000 handoffs a thread).
    let handoffs = after.heap_handoffs - before.heap_handoffs;
    println!(
        "3 threads: {handoffs} heap handoffs; best {} vs {} ns/pair in the thread / after the hook",
        body_best / PAIRS as u64,
        exit_best / PAIRS as u64
    );
    assert!(handoffs <= 3 * 2, "{handoffs} heap handoffs for 3 threads");
    assert_eq!(
        live_heaps(&after),
        live_heaps(&before),
        "{before} -> {after}"
    );
    assert_eq!(after.blocks_in_use(), before.blocks_in_use());
}

const ATEXIT_VAR: &str = "SMALLARENA_THREAD_EXIT_ATEXIT";
static NS_MAIN: AtomicU64 = AtomicU64::new(0);

extern "C" fn atexit_handler() {
    let before = smallarena::stats();
    let ns = pairs();
    let after = smallarena::stats();
    let leaked = after.blocks_in_use().abs_diff(before.blocks_in_use());
    let handoffs = after.heap_handoffs - before.heap_handoffs;
    let main = NS_MAIN.load(Ordering::Relaxed);
    eprintln!(
        "atexit: {PAIRS} pairs in main {main} ns, in atexit {ns} ns, blocks leaked {leaked}, \
         heap handoffs {handoffs}"
    );
}

/// The child process: a fragmented heap, pairs in `main`, then pairs in an `atexit` handler.
fn atexit_child() {
    let kept = fragment();
    NS_MAIN.store(pairs().min(pairs()), Ordering::Relaxed);
    // SAFETY: registers a plain function that lives as long as the process.
    assert_eq!(unsafe { libc::atexit(atexit_handler) }, 0);
    std::mem::forget(kept);
}

fn allocation_in_an_atexit_handler_keeps_the_heap() {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(ATEXIT_VAR, "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let line = err.lines().find(|l| l.starts_with("atexit:")).expect(&err);
    println!("{line}");
    let nums = common::numbers(line);
    let (leaked, handoffs) = (nums[3], nums[4]);
    assert_eq!(leaked, 0, "{line}");
    // `exit()` runs no key destructor, so the main thread keeps its heap in `atexit` handlers:
    // no allocation there hands a heap back (before the fix, each of them did).
    assert_eq!(handoffs, 0, "{line}");
}

fn main() {
    if std::env::var_os(ATEXIT_VAR).is_some() {
        atexit_child();
        return;
    }
    common::run_without_harness(
        "late_first_allocation_gives_the_heap_back",
        late_first_allocation_gives_the_heap_back,
    );
    common::run_without_harness(
        "allocation_after_the_exit_hook_hands_back_once",
        allocation_after_the_exit_hook_hands_back_once,
    );
    common::run_without_harness(
        "allocation_in_an_atexit_handler_keeps_the_heap",
        allocation_in_an_atexit_handler_keeps_the_heap,
    );
}
