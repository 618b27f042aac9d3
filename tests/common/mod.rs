//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code)]

/// The tests' deterministic PRNG (seeded, so a failing run replays exactly).
#[allow(unused_imports)] // not every test binary draws random numbers
pub use fastrand::Rng;

/// The byte pattern a block of `size` bytes at `addr` carries.
pub fn pattern(addr: usize, size: usize, i: usize) -> u8 {
    (addr ^ (addr >> 8) ^ size ^ i.wrapping_mul(31)) as u8
}

/// Fills a block with its pattern.
///
/// # Safety
/// `p` points to `size` writable bytes.
pub unsafe fn fill(p: *mut u8, size: usize) {
    for i in 0..size {
        // SAFETY: per the caller `p..p + size` is writable, and `i < size`.
        unsafe { p.add(i).write(pattern(p as usize, size, i)) };
    }
}

/// Checks a block still carries its pattern; panics naming the first bad byte.
///
/// # Safety
/// `p` points to `size` readable bytes.
pub unsafe fn check(p: *const u8, size: usize) {
    for i in 0..size {
        // SAFETY: per the caller `p..p + size` is readable, and `i < size`.
        let got = unsafe { p.add(i).read() };
        let want = pattern(p as usize, size, i);
        assert_eq!(got, want, "block {p:p} size {size}: byte {i} corrupted");
    }
}

/// The whole numbers in a line of a child process's report, in order (`"a 12, b 3"` gives
/// `[12, 3]`).
pub fn numbers(line: &str) -> Vec<u64> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// `main` of a test built with `harness = false`: runs `test`, named `name`, as libtest would
/// for the arguments cargo and nextest pass. `--list` prints `name: test` (nothing with
/// `--ignored`, there being no ignored tests) and runs nothing; a name filter (exact with
/// `--exact`) that does not match runs nothing. `test` fails by panicking, which exits the
/// process non-zero.
pub fn run_without_harness(name: &str, test: impl FnOnce()) {
    // libtest's options that take a value: their value is not a filter.
    const WITH_VALUE: [&str; 7] = [
        "--test-threads",
        "--skip",
        "--logfile",
        "--format",
        "--color",
        "--shuffle-seed",
        "-Z",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let mut filters = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if WITH_VALUE.contains(&args[i].as_str()) {
            i += 1;
        } else if !args[i].starts_with('-') {
            filters.push(args[i].as_str());
        }
        i += 1;
    }
    let selected = filters.is_empty()
        || filters.iter().any(|f| {
            if has("--exact") {
                name == *f
            } else {
                name.contains(f)
            }
        });
    if has("--list") {
        if selected && !has("--ignored") {
            println!("{name}: test");
        }
    } else if selected {
        test();
        println!("test {name} ... ok");
    } else {
        println!("{name}: filtered out");
    }
}

/// Runs the test `case` of the calling test binary again, alone, in a child process whose
/// environment has `marker=case` (so the child knows it is the child) and `env` set, and
/// `SMALLARENA_STATS` and `SMALLARENA_MODE` removed; fails with the child's output unless it
/// succeeds. Returns (and prints) its standard output. For settings the allocator reads once per
/// process.
pub fn run_case_in_child(case: &str, marker: &str, env: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let o = std::process::Command::new(exe)
        .args(["--exact", case, "--nocapture", "--test-threads=1"])
        .env_remove("SMALLARENA_STATS")
        .env_remove("SMALLARENA_MODE")
        .env(marker, case)
        .envs(env.iter().copied())
        .output()
        .expect("run the child");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "child {case} with {env:?} failed: {}\n{out}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    print!("{out}");
    out
}

/// Allocates and frees 1,000 blocks of 200 bytes through the global allocator (a class the
/// purge and reclaim tests use for nothing else): the allocation slow path runs, where due purge
/// passes and reclaim ticks run.
pub fn reach_a_slow_path() {
    let l = std::alloc::Layout::from_size_align(200, 8).unwrap();
    let v: Vec<*mut u8> = (0..1000)
        // SAFETY: a valid non-zero layout.
        .map(|_| unsafe { std::alloc::alloc(l) })
        .collect();
    for p in v {
        assert!(!p.is_null());
        // SAFETY: a live block of `l`, freed once.
        unsafe { std::alloc::dealloc(p, l) };
    }
}

/// The allocator's invariants hold (`smallarena::check_invariants`), or the test fails.
pub fn check_invariants() {
    if let Err(v) = smallarena::check_invariants() {
        panic!("invariant violated: {v}");
    }
}
