//! Real memcheck runs. Builds `examples/vg_probe.rs` (with and without the `valgrind` feature,
//! in a target directory of its own, as the outer `cargo test` holds the main one) and runs each
//! scenario through `valgrind/run` in each mode, checking memcheck's verdict, the error kind and
//! the exact frame it names. Needs valgrind (`scripts/setup` installs it); fails without it.
//!
//! The probe also asks memcheck from inside (crabgrind's client requests) and prints numbers:
//! the leak counts of a leak check after the `leak` scenario, and the state memcheck keeps for a
//! fresh block, a zeroed block, the redzone after a live block and a freed block (`state`). The
//! tests compare those per mode, besides memcheck's report on stderr.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (this crate is `memcheck/` inside it).
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Builds the probe once per feature set; returns the binary's path.
fn probe(features: &'static str) -> PathBuf {
    static WITH: OnceLock<PathBuf> = OnceLock::new();
    static WITHOUT: OnceLock<PathBuf> = OnceLock::new();
    let cell = if features.is_empty() { &WITHOUT } else { &WITH };
    cell.get_or_init(|| {
        let dir = root()
            .join("target")
            .join("valgrind-probe")
            .join(if features.is_empty() {
                "no-default-features"
            } else {
                "default"
            });
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "--example", "vg_probe", "--target-dir"])
            .arg(&dir);
        if features.is_empty() {
            cmd.arg("--no-default-features");
        }
        let status = cmd.status().expect("run cargo");
        assert!(status.success(), "building vg_probe failed");
        dir.join("debug").join("examples").join("vg_probe")
    })
    .clone()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn memcheck(bin: &Path, mode: Option<&str>, scenario: &str) -> Run {
    memcheck_env(bin, mode, scenario, &[])
}

/// [`memcheck`] with extra environment variables (`SMALLARENA_QUARANTINE_MB` is removed unless
/// given here).
fn memcheck_env(bin: &Path, mode: Option<&str>, scenario: &str, env: &[(&str, &str)]) -> Run {
    assert!(
        Command::new("valgrind").arg("--version").output().is_ok(),
        "valgrind is not installed: run scripts/setup"
    );
    let mut cmd = Command::new(root().join("valgrind").join("run"));
    cmd.arg(bin)
        .arg(scenario)
        .env_remove("SMALLARENA_MODE")
        .env_remove("SMALLARENA_QUARANTINE_MB");
    if let Some(m) = mode {
        cmd.env("SMALLARENA_MODE", m);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run valgrind/run");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// (scenario, memcheck's words for the error, the frame that must appear in its stack)
///
/// The `-after-reuse` scenarios use the stale pointer after allocating more blocks of its class:
/// without annotate mode's quarantine the freed block is handed out again, and memcheck sees a
/// live block (nothing reported), or the new owner blamed for its own writes and free.
const ERRORS: [(&str, &str, &str); 7] = [
    (
        "leak",
        "definitely lost in loss record",
        "vg_probe::probe_leak",
    ),
    (
        "use-after-free",
        "Invalid read of size 1",
        "vg_probe::probe_use_after_free",
    ),
    (
        "use-after-reuse",
        "Invalid read of size 1",
        "vg_probe::probe_use_after_reuse",
    ),
    (
        "double-free",
        "Invalid free()",
        "vg_probe::probe_double_free",
    ),
    (
        "double-free-after-reuse",
        "Invalid free()",
        "vg_probe::probe_double_free_after_reuse",
    ),
    (
        "overrun",
        "Invalid write of size 1",
        "vg_probe::probe_overrun",
    ),
    (
        "uninit",
        "Conditional jump or move depends on uninitialised value",
        "vg_probe::probe_uninit",
    ),
];

fn error_block<'a>(stderr: &'a str, words: &str) -> Option<&'a str> {
    let start = stderr.find(words)?;
    let rest = &stderr[start..];
    // An error report ends at the first line that is only the pid prefix.
    let end = rest
        .lines()
        .scan(0, |off, line| {
            let here = *off;
            *off += line.len() + 1;
            Some((here, line))
        })
        .skip(1)
        .find(|(_, l)| l.trim_end().ends_with("=="))
        .map_or(rest.len(), |(o, _)| o);
    Some(&rest[..end])
}

/// What memcheck knows when it tracks every block (auto, system and annotate mode alike): a fresh
/// block undefined, a zeroed one defined, the 16 bytes after a live block and a freed block not
/// addressable.
const STATE_TRACKED: &str =
    "state: fresh=undefined zeroed=defined redzone=noaccess freed=noaccess\n";
/// A 40-byte block leaked, found by the probe's own leak check. (In annotate mode without the
/// quarantine the block was a recycled one, and a stale copy of its address from its earlier life
/// made this check count it as still reachable: `leaked_bytes=0`.)
const LEAKS_ONE_BLOCK: &str =
    "leaks: leaked_bytes=40 leaked_blocks=1 dubious_bytes=0 dubious_blocks=0\n";

fn check_mode(mode: Option<&str>, expect_mode: &str) {
    let bin = probe("default");
    for scenario in ["clean", "threads", "realloc", "churn"] {
        let r = memcheck(&bin, mode, scenario);
        assert!(
            r.stdout.contains(&format!("mode: {expect_mode}")),
            "{scenario}: {}",
            r.stdout
        );
        assert_eq!(
            r.code, 0,
            "{mode:?} {scenario}: memcheck complained:\n{}",
            r.stderr
        );
        assert!(r.stderr.contains("ERROR SUMMARY: 0 errors"), "{}", r.stderr);
    }
    // Asked from inside: the numbers memcheck keeps for the probe's blocks.
    let r = memcheck(&bin, mode, "state");
    assert!(r.stdout.contains(STATE_TRACKED), "{mode:?}: {}", r.stdout);
    assert_eq!(r.code, 0, "{mode:?} state: {}", r.stderr);
    assert!(r.stderr.contains("ERROR SUMMARY: 0 errors"), "{}", r.stderr);
    let r = memcheck(&bin, mode, "leak");
    assert!(r.stdout.contains(LEAKS_ONE_BLOCK), "{mode:?}: {}", r.stdout);
    // The suppressions cover exactly the residual reports of a thread alive at exit.
    let r = memcheck(&bin, mode, "unjoined");
    assert_eq!(r.code, 0, "{mode:?} unjoined:\n{}", r.stderr);
    assert!(
        r.stderr.contains("possibly lost: 0 bytes"),
        "{mode:?} unjoined:\n{}",
        r.stderr
    );
    // The thread's DTV is always suppressed; std's handle only when memcheck finds no pointer.
    assert!(
        !r.stderr.contains("suppressed: 0 bytes"),
        "nothing suppressed:\n{}",
        r.stderr
    );
    for (scenario, words, frame) in ERRORS {
        let r = memcheck(&bin, mode, scenario);
        assert_eq!(
            r.code, 99,
            "{mode:?} {scenario}: memcheck saw nothing:\n{}",
            r.stderr
        );
        let block = error_block(&r.stderr, words)
            .unwrap_or_else(|| panic!("{mode:?} {scenario}: no `{words}` in\n{}", r.stderr));
        assert!(
            block.contains(frame),
            "{mode:?} {scenario}: `{frame}` not in\n{block}"
        );
        assert!(r.stderr.contains("ERROR SUMMARY: 1 errors"), "{}", r.stderr);
    }
}

#[test]
fn auto_mode_steps_aside_under_valgrind() {
    check_mode(None, "System");
}

#[test]
fn system_mode_by_environment() {
    check_mode(Some("system"), "System");
}

#[test]
fn annotate_mode_describes_arena_blocks() {
    check_mode(Some("annotate"), "Annotate");
}

/// Forcing the arena under Valgrind hides its blocks from memcheck: the leak goes unseen. This
/// is why auto mode steps aside, and it shows the suite above can tell the difference.
#[test]
fn arena_mode_hides_blocks_from_memcheck() {
    let r = memcheck(&probe("default"), Some("arena"), "leak");
    assert!(r.stdout.contains("mode: Arena"), "{}", r.stdout);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // memcheck's summary has no lost bytes: "definitely lost: 0 bytes" when libc still held
    // blocks at exit, "no leaks are possible" when it held none (every request of the probe,
    // medium sizes included, is the arena's).
    assert!(
        r.stderr.contains("definitely lost: 0 bytes")
            || r.stderr
                .contains("All heap blocks were freed -- no leaks are possible"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout
            .contains("leaks: leaked_bytes=0 leaked_blocks=0 dubious_bytes=0 dubious_blocks=0\n"),
        "{}",
        r.stdout
    );
    // memcheck sees only mapped memory: every byte defined, even past a block and after a free.
    let r = memcheck(&probe("default"), Some("arena"), "state");
    assert!(
        r.stdout
            .contains("state: fresh=defined zeroed=defined redzone=defined freed=defined\n"),
        "{}",
        r.stdout
    );
}

/// Annotate mode's quarantine holds freed blocks up to its budget (`SMALLARENA_QUARANTINE_MB`,
/// default 20 MiB) and gives the oldest back past it: `churn` frees about 7 MB twice (from
/// another thread than the allocating one, the first time), all held by the default budget, and
/// at most 1 MiB of blocks held with `SMALLARENA_QUARANTINE_MB=1`, which drains, memcheck
/// reporting nothing either way. `0` disables it: the use after reuse goes unseen again.
#[test]
fn annotate_quarantine_budget() {
    let bin = probe("default");
    let blocks_in_use = |r: &Run| -> usize {
        let line = r.stdout.lines().find(|l| l.starts_with("churn: ")).unwrap();
        line.rsplit_once("blocks_in_use=")
            .unwrap()
            .1
            .parse()
            .unwrap()
    };
    let r = memcheck(&bin, Some("annotate"), "churn");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(blocks_in_use(&r) >= 80_000, "{}", r.stdout);
    let r = memcheck_env(
        &bin,
        Some("annotate"),
        "churn",
        &[("SMALLARENA_QUARANTINE_MB", "1")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("ERROR SUMMARY: 0 errors"), "{}", r.stderr);
    // 1 MiB of blocks of 32 to 352 bytes (192 on average): about 5,500 blocks.
    let held = blocks_in_use(&r);
    assert!((1000..10_000).contains(&held), "{}", r.stdout);
    // Caught with a 1 MiB quarantine too (16 blocks allocated in between).
    let r = memcheck_env(
        &bin,
        Some("annotate"),
        "use-after-reuse",
        &[("SMALLARENA_QUARANTINE_MB", "1")],
    );
    assert_eq!(r.code, 99, "{}", r.stderr);
    let r = memcheck_env(
        &bin,
        Some("annotate"),
        "use-after-reuse",
        &[("SMALLARENA_QUARANTINE_MB", "0")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("ERROR SUMMARY: 0 errors"), "{}", r.stderr);
    // A value that is not a number is said once, and the default used.
    let r = memcheck_env(
        &bin,
        Some("annotate"),
        "use-after-reuse",
        &[("SMALLARENA_QUARANTINE_MB", "lots")],
    );
    assert_eq!(r.code, 99, "{}", r.stderr);
    let line = "smallarena: unknown SMALLARENA_QUARANTINE_MB value \"lots\"; accepted: a whole \
                number of MiB, 0 to disable; using 20\n";
    assert_eq!(r.stderr.matches(line).count(), 1, "{}", r.stderr);
}

/// Without the `valgrind` feature there is no detection: auto is the arena, as documented.
#[test]
fn without_the_feature_auto_is_arena() {
    let r = memcheck(&probe(""), None, "clean");
    assert!(r.stdout.contains("mode: Arena"), "{}", r.stdout);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn unknown_mode_is_reported_once_and_auto_is_used() {
    let r = memcheck(&probe("default"), Some("fast"), "mode");
    assert!(r.stdout.contains("mode: System"), "{}", r.stdout);
    let line = "smallarena: unknown SMALLARENA_MODE value \"fast\"; accepted: arena, system, \
                annotate, auto; using auto\n";
    assert_eq!(r.stderr.matches(line).count(), 1, "{}", r.stderr);
}

/// Values are read case-insensitively, surrounding whitespace ignored.
#[test]
fn mode_values_ignore_case_and_surrounding_spaces() {
    let r = memcheck(&probe("default"), Some(" Annotate "), "leak");
    assert!(r.stdout.contains("mode: Annotate"), "{}", r.stdout);
    assert!(
        r.stderr.contains("definitely lost in loss record"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("SMALLARENA_MODE"), "{}", r.stderr);
}

/// Without the `valgrind` feature annotate mode cannot describe blocks: it says so in one line
/// and uses the arena.
#[test]
fn without_the_feature_annotate_says_it_is_unavailable() {
    let r = memcheck(&probe(""), Some("annotate"), "clean");
    assert!(r.stdout.contains("mode: Arena"), "{}", r.stdout);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = "smallarena: SMALLARENA_MODE=annotate is unavailable: built without the `valgrind` \
                feature (no Valgrind client requests); using arena\n";
    assert_eq!(r.stderr.matches(line).count(), 1, "{}", r.stderr);
}
