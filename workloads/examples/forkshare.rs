//! The fork-policy benchmark: how much private memory forked children cost, per allocator.
//!
//! ```text
//! cargo run --release -p smallarena-workloads --example forkshare [-- --quick]
//! ```
//!
//! A parent builds ~200 MiB of small objects and forks 4 children; each child walks every
//! inherited object (reads only), frees a quarter of them, allocates 50 MiB of its own and churns
//! it, then reports its `Private_Dirty` (`/proc/self/smaps_rollup`). The Rust program is
//! `tests/scenario/forkshare.rs` (the same one `tests/fork_share.rs` runs smaller), with
//! smallarena as its global allocator: `SMALLARENA_FORK=share` and `=reuse`, glibc
//! (`SMALLARENA_MODE=system`) and mimalloc (`SMALLARENA_MODE=system` with Debian's
//! `libmimalloc.so.2` preloaded). The C program `workloads/c/forkshare.c` (built with `cc -O2`)
//! runs under glibc, the smallarena preload library with each policy, and mimalloc. One table:
//! the children's dirty memory summed, and what they dirtied beyond their own new data.

#[path = "../../tests/scenario/forkshare.rs"]
mod scenario;

use clap::Parser;
use scenario::{Params, Report};
use std::path::{Path, PathBuf};
use std::process::Command;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

/// Set in the processes that run the Rust scenario (its value: the parameters).
const RUN_VAR: &str = "SMALLARENA_FORKSHARE_RUN";
const MIMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2";

#[derive(Parser, Debug)]
#[command(about = "Private_Dirty of forked children: smallarena share/reuse vs glibc vs mimalloc")]
struct Args {
    /// MiB of small objects the parent builds.
    #[arg(long, default_value_t = 200)]
    heap_mib: usize,
    /// Children forked.
    #[arg(long, default_value_t = 4)]
    children: usize,
    /// MiB each child allocates of its own.
    #[arg(long, default_value_t = 50)]
    child_mib: usize,
    /// Rounds of churn over each child's own data (each replaces a tenth of it).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// A small run (32 MiB heap, 2 children, 8 MiB each).
    #[arg(long)]
    quick: bool,
    /// Only the Rust program (no C compiler or preload library needed).
    #[arg(long)]
    rust_only: bool,
}

fn params_of(s: &str) -> Params {
    let n: Vec<usize> = s.split(',').map(|w| w.parse().unwrap()).collect();
    Params {
        heap_bytes: n[0] << 20,
        children: n[1],
        child_bytes: n[2] << 20,
        churn_rounds: n[3],
    }
}

fn parse(stdout: &str) -> Vec<Report> {
    stdout.lines().filter_map(Report::parse).collect()
}

/// Runs `cmd`, which prints `report` lines; exits the benchmark if it fails.
fn measure(name: &str, mut cmd: Command) -> Vec<Report> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reports = parse(&stdout);
    if !out.status.success() || reports.is_empty() || reports.iter().any(|r| r.intact != 1) {
        eprintln!(
            "forkshare: {name} failed: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        std::process::exit(1);
    }
    reports
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// Builds the preload library and the C program; their paths.
fn build_c(target: &Path) -> (PathBuf, PathBuf) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!("forkshare: cargo build --release -p smallarena-preload");
    let ok = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "smallarena-preload",
            "--target-dir",
        ])
        .arg(target)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "building the preload library failed");
    let out = target.join("forkshare-c");
    let src = root.join("workloads/c/forkshare.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    eprintln!(
        "forkshare: {cc} -O2 -Wall -o {} {}",
        out.display(),
        src.display()
    );
    let ok = Command::new(&cc)
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "compiling {} failed", src.display());
    (target.join("release/libsmallarena_preload.so"), out)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn main() {
    if let Ok(p) = std::env::var(RUN_VAR) {
        for r in scenario::run(params_of(&p)) {
            println!("{}", r.line());
        }
        return;
    }
    let mut a = Args::parse();
    if a.quick {
        (a.heap_mib, a.children, a.child_mib, a.rounds) = (32, 2, 8, 3);
    }
    let spec = format!("{},{},{},{}", a.heap_mib, a.children, a.child_mib, a.rounds);
    let have_mimalloc = Path::new(MIMALLOC).exists();
    let mut rows: Vec<(&str, &str, Vec<Report>)> = Vec::new();

    let me = std::env::current_exe().unwrap();
    let rust = |mode: &str, fork: &str, preload: Option<&str>| {
        let mut c = Command::new(&me);
        c.env(RUN_VAR, &spec)
            .env("SMALLARENA_MODE", mode)
            .env("SMALLARENA_FORK", fork);
        if let Some(p) = preload {
            c.env("LD_PRELOAD", p);
        }
        c
    };
    eprintln!("forkshare: Rust program");
    rows.push((
        "Rust",
        "smallarena share",
        measure("rust share", rust("arena", "share", None)),
    ));
    rows.push((
        "Rust",
        "smallarena reuse",
        measure("rust reuse", rust("arena", "reuse", None)),
    ));
    rows.push((
        "Rust",
        "glibc",
        measure("rust glibc", rust("system", "reuse", None)),
    ));
    if have_mimalloc {
        rows.push((
            "Rust",
            "mimalloc",
            measure("rust mimalloc", rust("system", "reuse", Some(MIMALLOC))),
        ));
    }
    if !a.rust_only {
        let (preload, c_bin) = build_c(&target_dir());
        let preload = preload.to_str().unwrap().to_string();
        eprintln!("forkshare: C program");
        let c = |fork: &str, pre: Option<&str>| {
            let mut c = Command::new(&c_bin);
            c.args([&a.heap_mib, &a.children, &a.child_mib, &a.rounds].map(|n| n.to_string()))
                .env("SMALLARENA_FORK", fork)
                .env_remove("SMALLARENA_MODE");
            if let Some(p) = pre {
                c.env("LD_PRELOAD", p);
            }
            c
        };
        rows.push((
            "C",
            "smallarena share",
            measure("c share", c("share", Some(&preload))),
        ));
        rows.push((
            "C",
            "smallarena reuse",
            measure("c reuse", c("reuse", Some(&preload))),
        ));
        rows.push(("C", "glibc", measure("c glibc", c("reuse", None))));
        if have_mimalloc {
            rows.push((
                "C",
                "mimalloc",
                measure("c mimalloc", c("reuse", Some(MIMALLOC))),
            ));
        }
    }

    println!(
        "Parent heap {} MiB of small objects; {} children each walk it, free a quarter, allocate \
         {} MiB and churn it {} times.",
        a.heap_mib, a.children, a.child_mib, a.rounds
    );
    println!(
        "Private_Dirty summed over the children, MiB (after the walk / after freeing a quarter / \
         at the end), their own new data, and what they dirtied beyond it:\n"
    );
    println!(
        "| program | allocator | after walk | after free | at end | own data | beyond own data | \
         vs glibc |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (lang, alloc, reports) in &rows {
        let sum = |f: &dyn Fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
        let glibc: u64 = rows
            .iter()
            .find(|(l, al, _)| l == lang && *al == "glibc")
            .map(|(_, _, r)| r.iter().map(Report::extra).sum())
            .unwrap_or(0);
        let extra = sum(&|r| r.extra());
        println!(
            "| {lang} | {alloc} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1}% |",
            mib(sum(&|r| r.dirty[1].saturating_sub(r.dirty[0]))),
            mib(sum(&|r| r.dirty[2].saturating_sub(r.dirty[0]))),
            mib(sum(&|r| r.dirty[3].saturating_sub(r.dirty[0]))),
            mib(sum(&|r| r.own_bytes)),
            mib(extra),
            100.0 * extra as f64 / glibc.max(1) as f64
        );
    }
    let retained: Vec<String> = rows
        .iter()
        .filter(|(l, al, _)| *l == "Rust" && *al == "smallarena share")
        .flat_map(|(_, _, r)| r.iter().map(|r| format!("{:.1}", mib(r.retained))))
        .collect();
    println!(
        "\nsmallarena share, Rust: fork_retained_bytes per child (MiB): {}",
        retained.join(", ")
    );
}
