//! Real memcheck runs. Builds `examples/vg_probe.rs` (with and without the `valgrind` feature,
//! in a target directory of its own, as the outer `cargo test` holds the main one) and runs each
//! scenario through `valgrind/run` in each mode, checking memcheck's verdict, the error kind and
//! the exact frame it names. Needs valgrind (`scripts/setup` installs it); fails without it.

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
    assert!(
        Command::new("valgrind").arg("--version").output().is_ok(),
        "valgrind is not installed: run scripts/setup"
    );
    let mut cmd = Command::new(root().join("valgrind").join("run"));
    cmd.arg(bin).arg(scenario).env_remove("SMALLARENA_MODE");
    if let Some(m) = mode {
        cmd.env("SMALLARENA_MODE", m);
    }
    let out = cmd.output().expect("run valgrind/run");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// (scenario, memcheck's words for the error, the frame that must appear in its stack)
const ERRORS: [(&str, &str, &str); 5] = [
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
        "double-free",
        "Invalid free()",
        "vg_probe::probe_double_free",
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

fn check_mode(mode: Option<&str>, expect_mode: &str) {
    let bin = probe("default");
    for scenario in ["clean", "threads", "realloc"] {
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
    assert!(
        r.stderr.contains("definitely lost: 0 bytes"),
        "{}",
        r.stderr
    );
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
