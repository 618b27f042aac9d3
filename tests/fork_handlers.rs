//! Fork handlers of other code that allocate, registered before smallarena's own: from a
//! `.preinit_array` entry (before every constructor, so before smallarena's early registration:
//! its lock is held by the forking thread while these handlers allocate) and from an ordinary
//! `.init_array` constructor (after smallarena's: its handlers are the outermost). Prepare,
//! parent and child handlers all allocate enough to take new pools, in every combination the
//! issue names; a hang is caught by a deadline.
//!
//! Each case runs in a child process of this test (its handlers are armed by an environment
//! variable read at registration), so a deadlock is a timeout, not a stuck test run.

mod common;

use std::ffi::{c_char, c_int, CStr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

const CASE_VAR: &str = "SMALLARENA_FORK_HANDLER_CASE";

/// Which handlers allocate in this process: none (the test driver), or the case's.
static ARMED: AtomicU8 = AtomicU8::new(0);
const PREPARE: u8 = 1;
const PARENT: u8 = 2;
const CHILD: u8 = 4;

/// A few thousand blocks of 31 sizes, all live at once: more than one pool in most classes, so
/// the allocation slow path takes pools from the arena (under the arena lock).
fn churn() {
    let mut v: Vec<Box<[u8]>> = Vec::with_capacity(3000);
    for i in 0..3000 {
        v.push(vec![i as u8; 16 + (i % 31) * 16].into_boxed_slice());
    }
    assert!(v.iter().enumerate().all(|(i, b)| b[0] == i as u8));
}

extern "C" fn on_prepare() {
    if ARMED.load(Ordering::Relaxed) & PREPARE != 0 {
        churn();
    }
}
extern "C" fn on_parent() {
    if ARMED.load(Ordering::Relaxed) & PARENT != 0 {
        churn();
    }
}
extern "C" fn on_child() {
    if ARMED.load(Ordering::Relaxed) & CHILD != 0 {
        churn();
    }
}

/// The value of `CASE_VAR` in `envp`, without allocating (this runs before `main`).
///
/// # Safety
/// `envp` is null or the NULL-terminated environment array the loader passes to initializers.
unsafe fn case_from(envp: *const *const c_char) -> Option<&'static [u8]> {
    if envp.is_null() {
        return None;
    }
    let mut e = envp;
    // SAFETY: per the caller, every entry up to the NULL one is a C string that lives as long
    // as the process.
    unsafe {
        while !(*e).is_null() {
            let kv = CStr::from_ptr(*e).to_bytes();
            if let Some(v) = kv
                .strip_prefix(CASE_VAR.as_bytes())
                .and_then(|r| r.strip_prefix(b"="))
            {
                return Some(v);
            }
            e = e.add(1);
        }
    }
    None
}

/// Registers the handlers if the case asks for `phase`: `preinit` or `ctor`, then `all` (prepare,
/// parent and child allocate) or `child` (only a child handler is registered).
///
/// # Safety
/// As for [`case_from`].
unsafe fn register(phase: &[u8], envp: *const *const c_char) {
    // SAFETY: per the caller.
    let Some(case) = (unsafe { case_from(envp) }) else {
        return;
    };
    let Some(which) = case.strip_prefix(phase).and_then(|r| r.strip_prefix(b"-")) else {
        return;
    };
    // SAFETY: the handlers are plain functions that live as long as the process.
    let rc = unsafe {
        if which == b"child" {
            ARMED.store(CHILD, Ordering::Relaxed);
            libc::pthread_atfork(None, None, Some(on_child))
        } else {
            ARMED.store(PREPARE | PARENT | CHILD, Ordering::Relaxed);
            libc::pthread_atfork(Some(on_prepare), Some(on_parent), Some(on_child))
        }
    };
    assert_eq!(rc, 0);
}

extern "C" fn register_preinit(_: c_int, _: *const *const c_char, envp: *const *const c_char) {
    // SAFETY: the loader passes the process's environment.
    unsafe { register(b"preinit", envp) }
}
extern "C" fn register_ctor(_: c_int, _: *const *const c_char, envp: *const *const c_char) {
    // SAFETY: the loader passes the process's environment.
    unsafe { register(b"ctor", envp) }
}

type Init = extern "C" fn(c_int, *const *const c_char, *const *const c_char);

/// Runs before every constructor (smallarena's included).
#[used]
#[link_section = ".preinit_array"]
static PREINIT: Init = register_preinit;

/// A constructor of default priority (after smallarena's).
#[used]
#[link_section = ".init_array"]
static CTOR: Init = register_ctor;

/// The case's process: three forks, each child allocates and exits; the handlers allocate.
fn forks() -> i32 {
    let keep: Vec<String> = (0..1000).map(|i| format!("before fork {i}")).collect();
    for round in 0..3 {
        // SAFETY: the child only allocates, frees and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            churn();
            let ok = keep
                .iter()
                .enumerate()
                .all(|(i, s)| *s == format!("before fork {i}"));
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 3 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            println!("child of round {round} failed: {status:#x}");
            return 1;
        }
    }
    churn();
    println!("ok");
    0
}

/// Runs this test binary as the process of `case`, in its own process group, with a deadline.
fn run_case(case: &str) {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CASE_VAR, case)
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn the case");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            // SAFETY: kills the case's process group (it and the children it forked), which
            // we made; a hung fork child spins and would outlive its parent otherwise.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("{case}: no answer in 30 s (deadlocked in a fork handler)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success() && stdout.contains("ok"),
        "{case}: {status}\n{stdout}"
    );
}

fn main() {
    if std::env::var_os(CASE_VAR).is_some() {
        std::process::exit(forks());
    }
    common::run_without_harness(
        "handlers_registered_before_ours_allocate_in_prepare_parent_child",
        || run_case("preinit-all"),
    );
    common::run_without_harness(
        "handlers_registered_before_ours_allocate_in_child_only",
        || run_case("preinit-child"),
    );
    common::run_without_harness(
        "constructor_handlers_allocate_in_prepare_parent_child",
        || run_case("ctor-all"),
    );
    common::run_without_harness("constructor_handlers_allocate_in_child_only", || {
        run_case("ctor-child")
    });
}
