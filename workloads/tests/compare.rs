//! The comparison (`examples/compare`) as a user meets it: `--help` explains the options and
//! runs nothing; a quick run of a Rust workload and a C program measures every allocator, finds
//! the checksums in agreement and writes its charts and results.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The example binary that `cargo test` built next to this test
/// (`target/<profile>/examples/compare`).
fn compare() -> Command {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let bin: PathBuf = dir.join("examples").join("compare");
    assert!(bin.exists(), "{} not built", bin.display());
    Command::new(bin)
}

#[test]
fn help_lists_the_options_and_runs_nothing() {
    let start = Instant::now();
    let out = compare()
        .arg("--help")
        .output()
        .expect("run compare --help");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--rounds",
        "--workloads",
        "--allocators",
        "--out",
        "--quick",
        "--list",
    ] {
        assert!(text.contains(opt), "--help does not mention {opt}:\n{text}");
    }
    assert!(
        text.contains("below 1"),
        "--help does not say the ratios' direction:\n{text}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("cargo"), "--help started a build: {err}");
    assert!(
        start.elapsed().as_secs() < 10,
        "--help took {:?}",
        start.elapsed()
    );
}

#[test]
fn an_unknown_program_is_a_usage_error() {
    let out = compare()
        .args(["--workloads", "nope"])
        .output()
        .expect("run compare");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn quick_run_with_a_filter_agrees_and_writes_its_results() {
    let dir = std::env::temp_dir().join(format!("smallarena-compare-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = compare()
        .args([
            "--quick",
            "--rounds",
            "2",
            "--workloads",
            "prodcons,fixed64",
            "--out",
        ])
        .arg(&dir)
        .output()
        .expect("run compare --quick");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("round 2/2"),
        "no progress on stderr:\n{stderr}"
    );
    assert!(
        stdout.contains("smallarena / other: below 1 = smallarena better"),
        "{stdout}"
    );
    assert!(stdout.contains("same checksum"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(
        json["disagreements"].as_array().map(Vec::len),
        Some(0),
        "{json}"
    );
    let rows = json["rows"].as_array().expect("rows");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["prodcons", "fixed64"]);
    for r in rows {
        let cells = r["cells"].as_array().expect("cells");
        // smallarena, glibc, jemalloc, mimalloc at least; every one with both rounds and a ratio.
        assert!(cells.len() >= 4, "{r}");
        assert_eq!(cells[0]["allocator"], "smallarena");
        for c in cells {
            assert_eq!(c["samples"].as_array().map(Vec::len), Some(2), "{c}");
            assert!(c["samples"][0]["checksum"] == r["checksum"], "{c}");
            if c["allocator"] != "smallarena" {
                assert!(c["ratio"]["wall"]["median"].as_f64().unwrap() > 0.0, "{c}");
            }
        }
    }
    for f in ["time.svg", "rss.svg", "results.md"] {
        let p = dir.join(f);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            stdout.contains(&*p.to_string_lossy()),
            "path of {f} not printed"
        );
        if f.ends_with(".svg") {
            assert!(
                text.contains("<svg") && text.contains("left of the 1.0 line"),
                "{f}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
