//! The main job: smallarena against glibc, jemalloc, mimalloc and tcmalloc on whole programs.
//!
//! `cargo run --release -p smallarena-workloads --example compare [-- OPTIONS]` (`--help` lists
//! them). It builds the Rust workload binaries (`workloads/src`: the same code, one binary per
//! `#[global_allocator]`), the `LD_PRELOAD` library and the C programs (`workloads/c`, with
//! `cc -O2`), then runs every selected program with every allocator for several rounds, all
//! allocators interleaved within each round, and reports per program and allocator the median
//! wall time with its spread, the median CPU time (user + sys from `wait4`) and the peak RSS,
//! the ratios smallarena / other (below 1 = smallarena better) and their geometric means per
//! group and overall. Every allocator must print the same checksum for a program. It writes the
//! time and RSS charts (SVG, `plotters`), `results.json` and `results.md` into the output
//! directory and prints their paths.

mod chart;
mod measure;
mod programs;
mod setup;
mod summary;

use clap::Parser;
use programs::{Lang, Workload, ALLOCATORS, WORKLOADS};
use std::io::IsTerminal as _;
use std::path::PathBuf;

/// smallarena against glibc, jemalloc, mimalloc and tcmalloc on whole programs: Rust workloads
/// through `#[global_allocator]`, C programs through `LD_PRELOAD`.
///
/// Builds what it runs (into `target/compare`), runs every program with every allocator for
/// several rounds, all allocators interleaved within each round, checks that all allocators
/// print the same checksum, and reports wall time (median and min-max), CPU time, peak RSS and
/// the ratios smallarena / other (below 1 = smallarena better), with charts.
#[derive(Parser, Debug)]
#[command(name = "compare", after_help = AFTER_HELP)]
pub struct Args {
    /// Rounds; each runs every selected program once with every allocator [default: 5, 1 with
    /// --quick]
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: Option<u32>,

    /// Programs to run, comma-separated: names (trees, strings, mixed, vecs, prodcons, mix1000,
    /// prodcons64, mix32k, outlive, fixed64) or the groups `rust` and `c` [default: all]
    #[arg(short, long, value_delimiter = ',')]
    pub workloads: Vec<String>,

    /// Allocators to compare with smallarena, comma-separated (glibc, jemalloc, mimalloc,
    /// tcmalloc) [default: all that are installed]
    #[arg(short, long, value_delimiter = ',')]
    pub allocators: Vec<String>,

    /// Where the charts, results.json and results.md go [default: target/compare]
    #[arg(short, long)]
    pub out: Option<PathBuf>,

    /// Small inputs and one round (a smoke test; the numbers mean little)
    #[arg(short, long)]
    pub quick: bool,

    /// List the programs and allocators (with the libraries found) and exit
    #[arg(long)]
    pub list: bool,
}

const AFTER_HELP: &str = "\
Ratios are smallarena / other allocator: below 1 means smallarena is better.
C programs run with LD_PRELOAD=<library> (glibc: nothing preloaded); the Debian libraries of
mimalloc, jemalloc and tcmalloc are installed by scripts/setup. A full run takes about 3-5
minutes on 2 cores after the first build; --quick well under a minute.";

fn main() {
    let args = Args::parse();
    let workloads = match select_workloads(&args.workloads) {
        Ok(w) => w,
        Err(e) => exit_usage(&e),
    };
    let root = setup::workspace_root();
    let target = root.join("target").join("compare");
    let found = setup::find_preloads();
    let allocators = match select_allocators(&args.allocators, &found) {
        Ok(a) => a,
        Err(e) => exit_usage(&e),
    };
    if args.list {
        list(&found);
        return;
    }
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 5 }) as usize;
    let out = args.out.clone().unwrap_or_else(|| target.clone());
    let load = summary::loadavg();
    eprintln!(
        "compare: {} program(s) x {} allocator(s) x {rounds} round(s){}; load average at start {}",
        workloads.len(),
        allocators.len(),
        if args.quick { ", quick scale" } else { "" },
        load.text
    );
    if load.busy {
        eprintln!(
            "compare: the machine is busy (load {:.2} on {} CPUs): expect noisy numbers",
            load.one, load.cpus
        );
    }
    let bins = setup::build_all(&root, &target, &workloads, &allocators, &found);
    let scale = if args.quick { "0" } else { "1" };

    let plan = measure::plan(&workloads, &allocators, rounds, |w, a| {
        setup::Bins::runs(w.lang, a, &found)
    });
    let tty = std::io::stderr().is_terminal();
    let mut samples = measure::Samples::new(workloads.len(), ALLOCATORS.len());
    for (i, run) in plan.iter().enumerate() {
        let w = &workloads[run.workload];
        let alloc = ALLOCATORS[run.allocator];
        let cmd = bins.command(w, alloc, scale);
        let s = measure::run(cmd, w.name, alloc);
        let line = format!(
            "[{:>3}/{}] round {}/{rounds}  {:<10} {:<10} {:>8.1} ms",
            i + 1,
            plan.len(),
            run.round + 1,
            w.name,
            alloc,
            s.wall * 1e3
        );
        if tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
        samples.push(run.workload, run.allocator, s);
    }
    if tty {
        eprintln!();
    }

    let report = summary::Report::new(&workloads, &allocators, &samples, rounds, args.quick, load);
    print!("{}", report.text());
    std::fs::create_dir_all(&out)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", out.display()));
    let json = out.join("results.json");
    std::fs::write(&json, report.json()).expect("write results.json");
    let md = out.join("results.md");
    std::fs::write(&md, report.markdown()).expect("write results.md");
    let charts = chart::write_all(&out, &report);
    println!();
    for c in &charts {
        println!("chart: {}", c.display());
    }
    println!("results: {}", json.display());
    println!("tables (Markdown): {}", md.display());
    if !report.disagreements.is_empty() {
        for d in &report.disagreements {
            eprintln!("compare: checksum mismatch: {d}");
        }
        std::process::exit(1);
    }
}

fn exit_usage(msg: &str) -> ! {
    eprintln!("compare: {msg} (see --help)");
    std::process::exit(2);
}

/// The programs `--workloads` names (all when empty), in the order of [`WORKLOADS`].
pub fn select_workloads(names: &[String]) -> Result<Vec<Workload>, String> {
    if names.is_empty() {
        return Ok(WORKLOADS.to_vec());
    }
    for n in names {
        let known = WORKLOADS.iter().any(|w| w.name == n) || n == "rust" || n == "c";
        if !known {
            return Err(format!("unknown program {n:?}"));
        }
    }
    Ok(WORKLOADS
        .iter()
        .filter(|w| {
            names.iter().any(|n| {
                n == w.name
                    || (n == "rust" && w.lang == Lang::Rust)
                    || (n == "c" && w.lang == Lang::C)
            })
        })
        .copied()
        .collect())
}

/// Indices into [`ALLOCATORS`]: smallarena and those `--allocators` names (all when empty;
/// then a Debian library that is missing only drops that allocator from the C programs).
pub fn select_allocators(names: &[String], found: &setup::Preloads) -> Result<Vec<usize>, String> {
    let mut out = vec![0];
    for (i, a) in ALLOCATORS.iter().enumerate().skip(1) {
        if names.is_empty() || names.iter().any(|n| n == a) {
            out.push(i);
        }
    }
    for n in names {
        if !ALLOCATORS.contains(&n.as_str()) {
            return Err(format!("unknown allocator {n:?}"));
        }
        if n == "tcmalloc" && found.get("tcmalloc").is_none() {
            return Err("tcmalloc is not installed (scripts/setup installs it)".into());
        }
    }
    Ok(out)
}

fn list(found: &setup::Preloads) {
    println!("programs:");
    for w in WORKLOADS {
        println!("  {:<11} {:<5} {}", w.name, w.lang.group(), w.label);
    }
    println!("allocators (Rust: #[global_allocator]; C: LD_PRELOAD):");
    for a in ALLOCATORS {
        let c = match (a, found.get(a)) {
            ("smallarena", _) => "target/compare/release/libsmallarena_preload.so".into(),
            ("glibc", _) => "nothing preloaded".into(),
            (_, Some(p)) => p.display().to_string(),
            (_, None) => "not installed: run scripts/setup".into(),
        };
        let rust = if a == "tcmalloc" { "no" } else { "yes" };
        println!("  {a:<10} Rust: {rust:<3}  C: {c}");
    }
}
