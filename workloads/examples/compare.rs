//! The main job: smallarena against glibc, jemalloc and mimalloc on whole programs.
//!
//! `cargo run --release -p smallarena-workloads --example compare [-- --rounds N] [-- --quick]`
//!
//! Builds the workload binaries (`workloads/`: the same code, one binary per global allocator),
//! runs every workload with every allocator, interleaved, for several rounds; prints the median
//! wall time, the ratio to smallarena and the peak RSS (from `wait4`), checks that every
//! allocator printed the same checksum, and writes an SVG bar chart whose path it prints.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

const ALLOCATORS: [&str; 4] = ["smallarena", "glibc", "jemalloc", "mimalloc"];
const WORKLOADS: [(&str, &str); 5] = [
    ("trees", "binary trees"),
    ("strings", "map of small strings"),
    ("mixed", "random frees, mixed sizes"),
    ("vecs", "many growing Vecs"),
    ("prodcons", "cross-thread producer/consumer"),
];

struct Sample {
    seconds: f64,
    rss_kib: u64,
    checksum: String,
}

/// Runs one binary to completion; wall time, peak RSS of the child and its checksum line.
// The child is reaped with `libc::wait4` (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run(bin: &Path, workload: &str, scale: &str) -> Sample {
    let start = Instant::now();
    let child = Command::new(bin)
        .args([workload, scale])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("piped stdout");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).expect("read child output");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` are valid for writes.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(r, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{} {workload} failed (status {status})",
        bin.display()
    );
    let checksum = out
        .lines()
        .find_map(|l| l.strip_prefix("checksum="))
        .unwrap_or_else(|| panic!("{} {workload}: no checksum in {out:?}", bin.display()))
        .to_string();
    Sample {
        seconds,
        rss_kib: usage.ru_maxrss as u64,
        checksum,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn build(target_dir: &Path) {
    eprintln!("building the workload binaries (cargo build --release -p smallarena-workloads)...");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "smallarena-workloads",
            "--target-dir",
        ])
        .arg(target_dir)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the workloads failed");
}

fn svg(path: &Path, times: &[[f64; 4]]) {
    let (w, row_h, left) = (760.0, 26.0 * 4.0 + 24.0, 200.0);
    let h = 60.0 + row_h * times.len() as f64 + 30.0;
    let colors = ["#1b9e77", "#7570b3", "#d95f02", "#e7298a"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="24" font-size="16">Median wall time relative to glibc (shorter is better)</text>"#
    );
    for (k, name) in ALLOCATORS.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="36" width="12" height="12" fill="{}"/><text x="{}" y="46">{name}</text>"#,
            left + k as f64 * 130.0,
            colors[k],
            left + k as f64 * 130.0 + 16.0
        );
    }
    let max = times
        .iter()
        .flat_map(|t| t.iter().map(move |x| x / t[1]))
        .fold(1.0f64, f64::max);
    let scale = (w - left - 80.0) / max;
    for (i, t) in times.iter().enumerate() {
        let y0 = 60.0 + row_h * i as f64;
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}">{}</text>"#,
            y0 + row_h / 2.0,
            WORKLOADS[i].1
        );
        for k in 0..4 {
            let rel = t[k] / t[1];
            let y = y0 + 4.0 + 26.0 * k as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{left}" y="{y}" width="{:.1}" height="22" fill="{}"/><text x="{:.1}" y="{}">{rel:.2} ({:.0} ms)</text>"#,
                rel * scale,
                colors[k],
                left + rel * scale + 4.0,
                y + 15.0,
                t[k] * 1000.0
            );
        }
    }
    let _ = writeln!(s, "</svg>");
    std::fs::write(path, s).expect("write svg");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let scale = if quick { "0" } else { "1" };
    // The workspace root (this crate is `workloads/` inside it).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workloads/ sits inside the workspace");
    let target = root.join("target").join("compare");
    build(&target);
    let bin = |a: &str| target.join("release").join(format!("wl-{a}"));

    // samples[workload][allocator]
    let mut samples: Vec<Vec<Vec<Sample>>> = (0..WORKLOADS.len())
        .map(|_| (0..ALLOCATORS.len()).map(|_| Vec::new()).collect())
        .collect();
    let total = rounds * WORKLOADS.len() * ALLOCATORS.len();
    let mut done = 0;
    for round in 0..rounds {
        for (wi, (w, _)) in WORKLOADS.iter().enumerate() {
            // Rotate the order each round so no allocator always runs first.
            for k in 0..ALLOCATORS.len() {
                let ai = (k + round + wi) % ALLOCATORS.len();
                let s = run(&bin(ALLOCATORS[ai]), w, scale);
                done += 1;
                eprint!(
                    "\r[{done:>3}/{total}] round {} {w:<9} {:<10} {:>7.1} ms   ",
                    round + 1,
                    ALLOCATORS[ai],
                    s.seconds * 1000.0
                );
                samples[wi][ai].push(s);
            }
        }
    }
    eprintln!();

    let mut medians = Vec::new();
    println!(
        "\n{:<28} {:>12} {:>12} {:>12} {:>12}   ratio to smallarena (glibc/jemalloc/mimalloc)   peak RSS MiB (sa/glibc/je/mi)",
        "workload (median of rounds)", ALLOCATORS[0], ALLOCATORS[1], ALLOCATORS[2], ALLOCATORS[3]
    );
    let mut log_ratio = [0.0f64; 4];
    for (wi, (w, label)) in WORKLOADS.iter().enumerate() {
        let first = &samples[wi][0][0].checksum;
        for (ai, a) in ALLOCATORS.iter().enumerate() {
            for s in &samples[wi][ai] {
                assert_eq!(&s.checksum, first, "{w}: {a} printed a different checksum");
            }
        }
        let t: [f64; 4] =
            std::array::from_fn(|ai| median(samples[wi][ai].iter().map(|s| s.seconds).collect()));
        let rss: [u64; 4] =
            std::array::from_fn(|ai| samples[wi][ai].iter().map(|s| s.rss_kib).max().unwrap_or(0));
        for ai in 0..4 {
            log_ratio[ai] += (t[0] / t[ai]).ln();
        }
        println!(
            "{:<28} {:>9.1} ms {:>9.1} ms {:>9.1} ms {:>9.1} ms   {:>5.2} / {:>5.2} / {:>5.2}                      {:.1} / {:.1} / {:.1} / {:.1}",
            label,
            t[0] * 1e3,
            t[1] * 1e3,
            t[2] * 1e3,
            t[3] * 1e3,
            t[1] / t[0],
            t[2] / t[0],
            t[3] / t[0],
            rss[0] as f64 / 1024.0,
            rss[1] as f64 / 1024.0,
            rss[2] as f64 / 1024.0,
            rss[3] as f64 / 1024.0,
        );
        medians.push(t);
    }
    let n = WORKLOADS.len() as f64;
    println!(
        "\ngeometric mean of smallarena's time over the others': vs glibc {:.3}, vs jemalloc {:.3}, vs mimalloc {:.3}",
        (log_ratio[1] / n).exp(),
        (log_ratio[2] / n).exp(),
        (log_ratio[3] / n).exp()
    );
    println!("checksums agree across all allocators; {rounds} rounds, interleaved");
    let out = target.join("compare.svg");
    svg(&out, &medians);
    println!("chart: {}", out.display());
}
