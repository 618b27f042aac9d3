//! Real programs run with `LD_PRELOAD=libsmallarena_preload.so` and without it: each must exit 0
//! with the same output. Also the same programs under Valgrind's memcheck, whose report must not
//! change with the preload.
//!
//! The library is the `cdylib` cargo builds for this package next to the test binary
//! (`target/<profile>/libsmallarena_preload.so`). Programs that are not installed (`python3` and
//! its `test` package, `git`, `gcc`, `valgrind`) are skipped with a line on stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The preload library, built once per test run. `cargo test` does not build a `cdylib`-only
/// package's library for its integration tests, so the test builds it itself (in a target
/// directory of its own: the outer `cargo test` holds the main one), with the profile this test
/// binary was built with.
fn library() -> PathBuf {
    static SO: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SO.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = manifest.join("..").join("target").join("preload-lib");
        let release = !cfg!(debug_assertions);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(manifest)
            .args([
                "build",
                "--quiet",
                "-p",
                "smallarena-preload",
                "--target-dir",
            ])
            .arg(&target);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo");
        assert!(status.success(), "building the preload library failed");
        let so = target
            .join(if release { "release" } else { "debug" })
            .join("libsmallarena_preload.so");
        assert!(so.exists(), "{} not built", so.display());
        so
    })
    .clone()
}

fn have(program: &str, arg: &str) -> bool {
    let ok = Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // Under CI (and `scripts/test-all`, which installs them) a missing tool is a failure, not a
    // skip: a suite that skips everything must not pass there.
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "`{program}` is not available under CI: scripts/setup installs it"
    );
    if !ok {
        eprintln!("skipped: `{program}` not available");
    }
    ok
}

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d =
            std::env::temp_dir().join(format!("smallarena-preload-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `args` with or without the preload (and with `env` set).
fn run(args: &[&str], env: &[(&str, &str)], preload: bool, dir: Option<&Path>) -> Output {
    let mut c = Command::new(args[0]);
    c.args(&args[1..])
        .env_remove("LD_PRELOAD")
        .env_remove("SMALLARENA_MODE");
    for (k, v) in env {
        c.env(k, v);
    }
    if preload {
        c.env("LD_PRELOAD", library());
    }
    if let Some(d) = dir {
        c.current_dir(d);
    }
    c.stdin(Stdio::null());
    c.output().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs `args` natively and preloaded: both exit 0, stdout equal after `normalize`.
/// Returns the preloaded run's output.
fn same(args: &[&str], env: &[(&str, &str)], normalize: fn(&str) -> String) -> Output {
    let native = run(args, env, false, None);
    let pre = run(args, env, true, None);
    for (what, o) in [("native", &native), ("preloaded", &pre)] {
        assert!(
            o.status.success(),
            "{what} {args:?}: {}\nstdout:\n{}\nstderr:\n{}",
            o.status,
            tail(&o.stdout),
            tail(&o.stderr)
        );
    }
    let (a, b) = (
        normalize(&String::from_utf8_lossy(&native.stdout)),
        normalize(&String::from_utf8_lossy(&pre.stdout)),
    );
    assert!(
        a == b,
        "{args:?}: outputs differ\nnative:\n{a}\npreloaded:\n{b}"
    );
    pre
}

fn tail(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[b.len().saturating_sub(3000)..]).into_owned()
}

fn exact(s: &str) -> String {
    s.to_string()
}

/// Compiles one of the C programs in `tests/programs/`.
fn compile(name: &str, scratch: &Scratch) -> Option<PathBuf> {
    compile_with(name, name, &[], scratch)
}

/// Compiles `tests/programs/{name}.c` with `flags` into `out` in the scratch directory.
fn compile_with(name: &str, out: &str, flags: &[&str], scratch: &Scratch) -> Option<PathBuf> {
    if !have("gcc", "--version") {
        return None;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/programs/{name}.c"));
    let out = scratch.0.join(out);
    let st = Command::new("gcc")
        .args(["-O2", "-g", "-pthread", "-fno-builtin"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc");
    assert!(st.success(), "gcc {}", src.display());
    Some(out)
}

#[test]
fn threaded_c_program_mixing_sizes_and_freeing_across_threads() {
    let s = Scratch::new("threads");
    let Some(exe) = compile("threads", &s) else {
        return;
    };
    let exe = exe.to_str().unwrap();
    let pre = same(&[exe, "300000"], &[], exact);
    // The preloaded run really was served by the arena: a 1-byte block has the 16-byte class size
    // (glibc's would be 24).
    let err = String::from_utf8_lossy(&pre.stderr);
    assert!(err.contains("usable_size(malloc(1)) = 16"), "{err}");
    // SMALLARENA_MODE=system sends everything to glibc, with the same results.
    let sys = run(
        &[exe, "20000"],
        &[("SMALLARENA_MODE", "system")],
        true,
        None,
    );
    assert!(sys.status.success());
    let err = String::from_utf8_lossy(&sys.stderr);
    assert!(err.contains("usable_size(malloc(1)) = 24"), "{err}");
}

/// Runs `args` preloaded with the soft `RLIMIT_AS` set to `limit` bytes before `exec` (`None`:
/// unlimited).
fn run_with_address_limit(args: &[&str], limit: Option<u64>) -> Output {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(args[0]);
    c.args(&args[1..])
        .env_remove("SMALLARENA_MODE")
        .env("LD_PRELOAD", library())
        .stdin(Stdio::null());
    if let Some(limit) = limit {
        // SAFETY: `setrlimit` is async-signal-safe and touches only the child's own limits.
        unsafe {
            c.pre_exec(move || {
                let rl = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: libc::RLIM_INFINITY,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &rl) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    c.output().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// `VmSize` in KiB from a `/proc/<pid>/status` text.
fn vm_size_kib(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmSize in {status}"))
}

/// The preload carves its arenas from a 16 GiB address-space reservation (it shows in the virtual
/// size of any program that allocates). With the address space limited below that from the start
/// (`RLIMIT_AS` set before `exec`), the reservation cannot be made: arenas are mapped one by one
/// and `free` finds them in the arena maps. The threaded program still gets arena blocks and the
/// same results.
#[test]
fn arenas_outside_the_reservation_when_it_cannot_be_made() {
    let status = |limit| {
        let o = run_with_address_limit(&["cat", "/proc/self/status"], limit);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        vm_size_kib(&String::from_utf8_lossy(&o.stdout))
    };
    let reserved = status(None);
    assert!(
        reserved >= 16 << 20,
        "VmSize {reserved} KiB: no reservation"
    );
    let limited = status(Some(8 << 30));
    assert!(
        limited < 8 << 20,
        "VmSize {limited} KiB under an 8 GiB limit"
    );

    let s = Scratch::new("threads_no_reservation");
    let Some(exe) = compile("threads", &s) else {
        return;
    };
    let exe = exe.to_str().unwrap();
    let native = run(&[exe, "100000"], &[], false, None);
    assert!(native.status.success());
    let pre = run_with_address_limit(&[exe, "100000"], Some(8 << 30));
    let err = String::from_utf8_lossy(&pre.stderr);
    assert!(pre.status.success(), "{}\n{err}", pre.status);
    assert_eq!(pre.stdout, native.stdout);
    // Served by the arena (a 1-byte block has the 16-byte class size; glibc's would be 24).
    assert!(err.contains("usable_size(malloc(1)) = 16"), "{err}");
}

/// Runs `exe` preloaded, with `env`, in a process group of its own, and kills the group if it has
/// not finished in 30 s (a deadlocked fork child would otherwise spin on for ever). Panics on a
/// timeout; else the output.
fn run_with_deadline(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(exe);
    c.args(args)
        .env_remove("SMALLARENA_MODE")
        .env("LD_PRELOAD", library())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            // SAFETY: kills the process group we made for this run (it and its fork children).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "{} {args:?} {env:?}: no answer in 30 s (hung)",
                exe.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Fork handlers registered before smallarena's (from a `.preinit_array` entry, before the
/// preload library's constructor) or after (from a constructor of the program) allocate in
/// prepare, parent and child, or only in a child handler: never a deadlock.
#[test]
fn fork_handlers_that_allocate() {
    let s = Scratch::new("atfork");
    for (out, flags) in [
        ("atfork_ctor", &[][..]),
        ("atfork_preinit", &["-DPREINIT"][..]),
    ] {
        let Some(exe) = compile_with("atfork_alloc", out, flags, &s) else {
            return;
        };
        for env in [&[][..], &[("CHILD_ONLY", "1")][..]] {
            let o = run_with_deadline(&exe, &[], env);
            assert!(
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ok"),
                "{out} {env:?}: {}\n{}{}",
                o.status,
                tail(&o.stdout),
                tail(&o.stderr)
            );
        }
    }
}

/// Threads whose first allocation is in a pthread key destructor (after their thread-local
/// destructors ran) hand their heaps back: RSS stays flat over 1000 of them.
#[test]
fn late_first_allocation_in_a_key_destructor_gives_the_heap_back() {
    let s = Scratch::new("latefirst");
    let Some(exe) = compile("late_first_alloc", &s) else {
        return;
    };
    let o = run_with_deadline(&exe, &["1000"], &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    eprintln!("{out}");
    assert!(o.status.success(), "RSS grew by more than 8 MiB: {out}");
}

/// Allocation in an `atexit` handler keeps the main thread's heap: `exit()` runs no pthread key
/// destructor, so no heap is handed back, however much the handler allocates. Checked on the
/// statistics the preload prints at exit (`SMALLARENA_STATS=1`, printed by a handler registered
/// before `main`, so after the program's own): `heap handoffs` is 0 (1 allowed). The ns/pair lines
/// are printed for information only: tests do not assert timings.
#[test]
fn allocation_in_an_atexit_handler_keeps_the_main_heap() {
    let s = Scratch::new("exitcost");
    let Some(exe) = compile("exit_alloc_cost", &s) else {
        return;
    };
    let o = run_with_deadline(&exe, &["20000", "200000"], &[("SMALLARENA_STATS", "1")]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    eprint!("{out}");
    assert!(
        out.contains("pairs in atexit"),
        "the atexit handler did not run: {out}"
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("# heap handoffs"))
        .unwrap_or_else(|| panic!("no statistics at exit on stderr:\n{err}"));
    let handoffs: usize = line
        .rsplit('=')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    eprintln!("{line}");
    assert!(
        handoffs <= 1,
        "{handoffs} heap handoffs: allocation in atexit handed heaps back\n{err}"
    );
    // The statistics are printed after the program's own atexit handler, which frees the 20000
    // blocks kept live (of at least 16 bytes each): they are no longer counted.
    let small: usize = err
        .lines()
        .find(|l| l.starts_with("# bytes in blocks"))
        .and_then(|l| l.rsplit('=').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no bytes-in-blocks line:\n{err}"));
    assert!(
        small < 20_000 * 16,
        "{small} bytes still in small blocks\n{err}"
    );
}

#[test]
fn fork_and_exec() {
    let s = Scratch::new("forkexec");
    let Some(exe) = compile("forkexec", &s) else {
        return;
    };
    let pre = same(&[exe.to_str().unwrap()], &[], exact);
    assert!(String::from_utf8_lossy(&pre.stdout).contains("parent done"));
}

#[test]
fn sort_a_large_file() {
    let s = Scratch::new("sort");
    let file = s.0.join("input.txt");
    let mut text = String::with_capacity(12 << 20);
    let mut x = 0x2545F4914F6CDD1Du64;
    for i in 0..300_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let word: String = (0..(3 + x % 12))
            .map(|k| char::from(b'a' + ((x >> (k * 4)) % 26) as u8))
            .collect();
        text.push_str(&format!("{word} {} {i}\n", x % 100_000));
    }
    std::fs::write(&file, text).unwrap();
    let f = file.to_str().unwrap();
    let c = [("LC_ALL", "C")];
    same(&["sort", f], &c, exact);
    same(&["sort", "-n", "-k2", "-k3", f], &c, exact);
    same(&["sort", "-u", "-k1,1", f], &c, exact);
}

#[test]
fn git_on_this_repository() {
    if !have("git", "--version") {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let inside = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["rev-parse", "--git-dir"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !inside {
        eprintln!("skipped: not a git checkout");
        return;
    }
    let s = Scratch::new("git");
    let repo = repo.to_str().unwrap();
    let env = [
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("HOME", s.0.to_str().unwrap()),
    ];
    same(
        &["git", "-C", repo, "log", "--stat", "-n", "50"],
        &env,
        exact,
    );
    same(&["git", "-C", repo, "log", "-p", "-n", "3"], &env, exact);
    same(
        &["git", "-C", repo, "rev-list", "--objects", "--all"],
        &env,
        exact,
    );
    // A clone (pack writing, many small allocations), then status and a grep inside it.
    for (i, preload) in [false, true].into_iter().enumerate() {
        let dst = s.0.join(format!("clone{i}"));
        let o = run(
            &[
                "git",
                "clone",
                "-q",
                "--no-hardlinks",
                repo,
                dst.to_str().unwrap(),
            ],
            &env,
            preload,
            None,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let c0 = s.0.join("clone0");
    for args in [
        &["git", "status", "--porcelain=v1", "--branch"][..],
        &["git", "grep", "-n", "unsafe"][..],
        &["git", "fsck", "--no-progress"][..],
    ] {
        let a = run(args, &env, false, Some(&c0));
        let b = run(args, &env, true, Some(&s.0.join("clone1")));
        assert!(a.status.success() && b.status.success(), "{args:?}");
        assert_eq!(a.stdout, b.stdout, "{args:?}");
    }
}

/// A Python workload of its own: dicts, lists, JSON, regular expressions, URL parsing, threads.
const PY_WORKLOAD: &str = r#"
import json, re, threading, urllib.parse, collections, hashlib
d = {}
for i in range(200000):
    d[f"key{i}"] = [i, str(i) * (i % 7), {"n": i}]
for i in range(0, 200000, 3):
    del d[f"key{i}"]
s = json.dumps(d, sort_keys=True)
back = json.loads(s)
print(len(d), len(s), back == d, hashlib.sha256(s.encode()).hexdigest())
words = re.findall(r"[a-z]+\d+", s)
print(len(words), collections.Counter(w[:4] for w in words).most_common(3))
urls = [urllib.parse.urlsplit(f"https://u{i}@host{i % 97}.example:80{i % 10}/p/{i}?q={i}#f") for i in range(50000)]
print(sum(len(u.netloc) for u in urls), urls[-1])
out = []
def work(k):
    local = [bytes([k]) * n for n in range(2000)]
    out.append(sum(map(len, local)))
ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sorted(out))
"#;

/// The Python interpreter itself (not a wrapper script such as a pyenv shim, which Valgrind
/// would run instead of Python), or `None` when there is none.
fn python() -> Option<String> {
    let o = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output();
    match o {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        _ => {
            eprintln!("skipped: `python3` not available");
            None
        }
    }
}

#[test]
fn python_workload() {
    let Some(py) = python() else {
        return;
    };
    same(
        &[&py, "-c", PY_WORKLOAD],
        &[("PYTHONMALLOC", "malloc"), ("PYTHONHASHSEED", "0")],
        exact,
    );
}

/// Drops the lines of `python -m test` output that carry times and load averages.
fn regrtest_normalize(s: &str) -> String {
    s.lines()
        .filter(|l| !l.contains("Total duration") && !l.contains("random seed"))
        .map(|l| match l.find(" load avg: ") {
            // "0:00:02 load avg: 1.30 [4/5] test_re" -> "[4/5] test_re"
            Some(i) => l[i + 11..].split_once(' ').map_or(l, |(_, r)| r),
            None => l,
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn python_regression_tests_slice() {
    let Some(py) = python() else {
        return;
    };
    let has_tests = Command::new(&py)
        .args(["-c", "import test.libregrtest"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_tests {
        eprintln!("skipped: CPython's test package is not installed");
        return;
    }
    let pre = same(
        &[
            &py,
            "-m",
            "test",
            "test_dict",
            "test_list",
            "test_json",
            "test_re",
            "test_urlparse",
        ],
        &[("PYTHONMALLOC", "malloc")],
        regrtest_normalize,
    );
    assert!(String::from_utf8_lossy(&pre.stdout).contains("Result: SUCCESS"));
}

/// The lines of a memcheck report that must not change with the preload (pids and addresses
/// stripped).
fn memcheck_summary(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| {
            [
                "ERROR SUMMARY",
                "in use at exit",
                "total heap usage",
                "definitely lost:",
                "indirectly lost:",
                "possibly lost:",
                "still reachable:",
                "Invalid",
                "uninitialised",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .map(|l| l.split_once(' ').map_or(l, |(_, r)| r))
        // The environment the program copies holds LD_PRELOAD: byte totals may differ by that.
        .map(|l| format!("{}\n", l.split(" frees, ").next().unwrap_or(l)))
        .collect()
}

fn under_memcheck(args: &[&str], env: &[(&str, &str)]) {
    let mut vg = vec!["valgrind", "--leak-check=full", "--error-exitcode=99"];
    vg.extend_from_slice(args);
    let native = run(&vg, env, false, None);
    let pre = run(&vg, env, true, None);
    assert_eq!(
        native.status.code(),
        pre.status.code(),
        "{args:?} exit codes"
    );
    let (a, b) = (
        memcheck_summary(&native.stderr),
        memcheck_summary(&pre.stderr),
    );
    assert!(a.contains("ERROR SUMMARY"), "{}", tail(&native.stderr));
    assert_eq!(a, b, "{args:?}: memcheck reports differ");
    assert_eq!(native.stdout, pre.stdout, "{args:?}: outputs differ");
}

#[test]
fn memcheck_reports_the_same_with_the_preload() {
    if !have("valgrind", "--version") {
        return;
    }
    let s = Scratch::new("memcheck");
    if let Some(exe) = compile("threads", &s) {
        under_memcheck(&[exe.to_str().unwrap(), "3000"], &[]);
    }
    if let Some(exe) = compile("leaky", &s) {
        under_memcheck(&[exe.to_str().unwrap()], &[]);
    }
    if let Some(py) = python() {
        under_memcheck(
            &[
                &py,
                "-c",
                "import json; print(len(json.dumps({str(i): [i] * 3 for i in range(3000)})))",
            ],
            &[("PYTHONMALLOC", "malloc")],
        );
    }
}

/// Wrong frees through the C `free` and `realloc` (`tests/programs/bad_free_alias.c`, compiled
/// with `-O0 -fno-builtin` so the compiler keeps the faulty calls): a double free, a free of a
/// pointer inside a block, and a `realloc` of a freed block each abort (SIGABRT) with one line
/// naming the fault and the address, instead of handing the same memory out twice.
#[test]
fn wrong_frees_abort_with_a_message() {
    use std::os::unix::process::ExitStatusExt;
    if !have("cc", "--version") {
        return;
    }
    let s = Scratch::new("bad_free");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/bad_free_alias.c");
    let exe = s.0.join("bad_free_alias");
    let st = Command::new("cc")
        .args(["-O0", "-fno-builtin", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(st.success(), "cc {}", src.display());
    let exe = exe.to_str().unwrap();
    for (mode, fault) in [
        ("double", "double free of "),
        ("interior", "invalid free of "),
        ("realloc-freed", "double free of "),
    ] {
        let o = run(&[exe, mode], &[("SMALLARENA_MODE", "arena")], true, None);
        let out = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGABRT),
            "{mode}: {}\nstdout:\n{out}\nstderr:\n{err}",
            o.status
        );
        let line = err
            .lines()
            .find(|l| l.starts_with("smallarena: "))
            .unwrap_or_else(|| panic!("{mode}: no fault line\n{err}"));
        assert!(
            line.starts_with(&format!("smallarena: {fault}0x")),
            "{mode}: {line}"
        );
        // The line names the faulty pointer: the block the program printed (`p = ...`), or the
        // interior pointer 16 bytes into it.
        let addr = line[line.find("0x").unwrap() + 2..]
            .split(' ')
            .next()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .unwrap();
        if let Some(p) = out
            .lines()
            .find_map(|l| l.strip_prefix("p = 0x"))
            .and_then(|h| usize::from_str_radix(h.trim(), 16).ok())
        {
            assert_eq!(addr, p, "{mode}: {line}");
        }
        // Nothing after the fault ran: the program's own report of the aliasing never printed.
        assert!(!out.contains("next"), "{mode}: {out}");
    }
}

/// Who serves `malloc` under memcheck: memcheck's default malloc replacement covers every object,
/// this library included, whatever `SMALLARENA_MODE` says; with a `somalloc` synonym that matches
/// nothing, memcheck leaves this library's functions alone and `SMALLARENA_MODE=arena` keeps the
/// arena (auto mode still steps aside to glibc's `__libc_*`, which memcheck replaces).
#[test]
fn who_serves_malloc_under_memcheck() {
    if !have("valgrind", "--version") {
        return;
    }
    let s = Scratch::new("usable");
    let Some(exe) = compile("usable", &s) else {
        return;
    };
    let usable = |mode: &str, synonyms: bool| -> String {
        let mut args = vec!["valgrind", "-q", "--error-exitcode=99"];
        if synonyms {
            args.push("--soname-synonyms=somalloc=no-such-library");
        }
        args.push(exe.to_str().unwrap());
        let o = run(&args, &[("SMALLARENA_MODE", mode)], true, None);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{mode} {synonyms}: {err}");
        err.lines()
            .find_map(|l| l.strip_prefix("usable_size(malloc(1)) = "))
            .unwrap_or_else(|| panic!("no usable_size line: {err}"))
            .to_string()
    };
    // memcheck's replacement (a 1-byte block is 1 byte) in every mode by default.
    for mode in ["arena", "auto", "system"] {
        assert_eq!(usable(mode, false), "1", "{mode}");
    }
    // With the synonym: the arena's 16-byte class in arena mode, memcheck's through glibc in auto.
    assert_eq!(usable("arena", true), "16");
    assert_eq!(usable("auto", true), "1");
}

/// When the OS refuses a new arena, small requests are served by glibc (smallarena's
/// out-of-arena fallback, which reaches glibc through `__libc_malloc`: the `libc-internal`
/// feature, without which the fallback's `malloc` would be this library's own and recurse), then
/// malloc returns NULL once glibc is out of memory too; every block keeps its bytes.
#[test]
fn small_requests_fall_back_to_glibc_when_the_arena_cannot_grow() {
    let s = Scratch::new("out_of_arena");
    let Some(exe) = compile("out_of_arena", &s) else {
        return;
    };
    let o = run(&[exe.to_str().unwrap()], &[], true, None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{}\nstdout:\n{out}\nstderr:\n{}",
        o.status,
        tail(&o.stderr)
    );
    let counts: Vec<usize> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        matches!(counts[..], [arena, libc] if arena > 0 && libc > 0),
        "both allocators served blocks: {out}"
    );
}

/// The children of `workloads/c/forkshare.c` (a parent mallocs 16 MiB of small objects, forks 2
/// children that each walk them, free a quarter and malloc 4 MiB of their own) under the preload
/// with `SMALLARENA_FORK=policy`: per child, the `Private_Dirty` bytes added after the fork
/// beyond its own new data, and its own data.
fn forkshare_children(exe: &Path, policy: &str) -> Vec<(u64, u64)> {
    let out = run(
        &[exe.to_str().unwrap(), "16", "2", "4", "2"],
        &[("SMALLARENA_FORK", policy)],
        true,
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{policy}: {}\n{stdout}", out.status);
    let children: Vec<(u64, u64)> = stdout
        .lines()
        .filter_map(|l| {
            let n: Vec<u64> = l
                .strip_prefix("report ")?
                .split(' ')
                .map(|w| w.parse().unwrap())
                .collect();
            assert_eq!(n[7], 1, "{policy}: an inherited object changed");
            Some((n[4].saturating_sub(n[1]).saturating_sub(n[5]), n[5]))
        })
        .collect();
    assert_eq!(children.len(), 2, "{policy}: {stdout}");
    children
}

#[test]
fn share_mode_children_leave_the_parent_heap_shared() {
    if !have("cc", "--version") {
        return;
    }
    let s = Scratch::new("forkshare");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workloads/c/forkshare.c");
    let exe = s.0.join("forkshare");
    let st = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(st.success(), "cc {}", src.display());
    let share = forkshare_children(&exe, "share");
    let reuse = forkshare_children(&exe, "reuse");
    const MIB: u64 = 1 << 20;
    for (&(s_extra, own), &(r_extra, _)) in share.iter().zip(reuse.iter()) {
        eprintln!(
            "beyond own data: share {:.2} MiB, reuse {:.2} MiB (own data {:.2} MiB)",
            s_extra as f64 / MIB as f64,
            r_extra as f64 / MIB as f64,
            own as f64 / MIB as f64
        );
        assert!(r_extra >= 8 * MIB, "reuse dirtied only {r_extra} bytes");
        assert!(
            s_extra <= own / 8 + 2 * MIB,
            "share dirtied {s_extra} bytes"
        );
        assert!(
            s_extra * 10 <= r_extra,
            "share {s_extra} vs reuse {r_extra}"
        );
    }
}

/// The profiler through the preload: a C program leaking in a named function gets that function
/// at the top of the leak report (`SMALLARENA_LEAKS=1`), with an estimate of the leaked bytes
/// within 0.5x-2x; the folded profile (`SMALLARENA_PROFILE`) names it too; freeing the leak before
/// exit leaves it out of the report.
#[test]
fn leak_report_of_a_c_program() {
    let s = Scratch::new("leak_in_c");
    let Some(exe) = compile_with(
        "leak_in_c",
        "leak_in_c",
        &["-fno-omit-frame-pointer", "-rdynamic"],
        &s,
    ) else {
        return;
    };
    let folded = s.0.join("heap.folded");
    let o = run_with_deadline(
        &exe,
        &[],
        &[
            ("SMALLARENA_LEAKS", "1"),
            ("SMALLARENA_PROFILE_RATE", "4096"),
            ("SMALLARENA_PROFILE", folded.to_str().unwrap()),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    eprint!("{err}");
    let truth: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("leaked "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `leaked` line: {out}"));
    let site = err
        .lines()
        .skip_while(|l| !l.contains("est. bytes"))
        .nth(1)
        .unwrap_or_else(|| panic!("no site in the report:\n{err}"));
    let words: Vec<&str> = site.split_whitespace().collect();
    assert_eq!(words.get(3), Some(&"leak_in_c"), "top site: {site}\n{err}");
    assert!(site.contains("leak_in_c.c:"), "no file and line: {site}");
    let bytes: f64 = words[0].parse().unwrap();
    assert!(
        bytes >= 0.5 * truth && bytes <= 2.0 * truth,
        "estimated {bytes} bytes, leaked {truth}"
    );
    let text = std::fs::read_to_string(&folded).unwrap();
    let at_leak: f64 = text
        .lines()
        .filter(|l| l.contains(";leak_in_c "))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(
        at_leak >= 0.5 * truth && at_leak <= 2.0 * truth,
        "folded: {at_leak} bytes under leak_in_c, leaked {truth}\n{text}"
    );
    assert!(
        text.lines()
            .all(|l| l.starts_with("_start;") || l.starts_with("0x")),
        "outermost frame first:\n{text}"
    );

    let o = run_with_deadline(
        &exe,
        &["free"],
        &[
            ("SMALLARENA_LEAKS", "1"),
            ("SMALLARENA_PROFILE_RATE", "4096"),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("smallarena: leak report at exit"), "{err}");
    assert!(
        !err.contains("leak_in_c"),
        "a freed leak is reported:\n{err}"
    );
}
