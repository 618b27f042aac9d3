//! The sampling heap profiler (`--features profile`): the leak report names the function that
//! leaks through an `Rc` cycle; a program that frees everything gets an empty report; the
//! folded-stacks and pprof files parse and estimate the leaked bytes; the Rust API.
//!
//! The programs are this test binary itself, run as child processes with
//! `SMALLARENA_TEST_PROGRAM` naming one (the report is printed at exit, so it needs a process
//! of its own). No harness: `main` runs the cases (`common::run_without_harness`).

mod common;

use prost::Message;
use std::cell::RefCell;
use std::hint::black_box;
use std::io::Read;
use std::process::Command;
use std::rc::Rc;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

/// A node of a two-node reference cycle, with a payload that makes the leak easy to see.
struct Node {
    next: Option<Rc<RefCell<Node>>>,
    payload: [u8; 200],
}

/// How many cycles the leaking program makes (two nodes each).
const CYCLES: usize = 5_000;

/// Bytes one leaked node holds: the `Rc` allocation of a `RefCell<Node>` (two counts, the value).
fn node_bytes() -> usize {
    std::mem::size_of::<RefCell<Node>>() + 2 * std::mem::size_of::<usize>()
}

/// Makes `CYCLES` pairs of nodes that point at each other, and drops every handle: the counts
/// never reach zero, the nodes leak.
#[inline(never)]
fn leak_through_rc_cycle() {
    for i in 0..CYCLES {
        let a = Rc::new(RefCell::new(Node {
            next: None,
            payload: [i as u8; 200],
        }));
        let b = Rc::new(RefCell::new(Node {
            next: Some(a.clone()),
            payload: [0; 200],
        }));
        a.borrow_mut().next = Some(b);
        black_box(&a.borrow().payload);
    }
}

/// Allocates and frees about 10 MB in blocks of many sizes, keeping nothing.
#[inline(never)]
fn churn() {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for i in 0..100_000usize {
        kept.push(vec![i as u8; 8 + i % 200]);
        if kept.len() > 1000 {
            kept.clear();
        }
    }
    kept.clear();
    kept.shrink_to_fit();
    black_box(kept);
}

/// The child programs.
fn program(name: &str) {
    match name {
        "rc_cycle" => {
            churn();
            leak_through_rc_cycle();
            churn();
            // The true leak, for the parent to compare with (written with `write(2)`: no
            // stdout buffer left live at exit).
            let line = format!("leaked {}\n", 2 * CYCLES * node_bytes());
            // SAFETY: writes a live buffer to fd 1.
            unsafe { libc::write(1, line.as_ptr().cast(), line.len()) };
        }
        "frees_everything" => {
            churn();
            let rcs: Vec<Rc<RefCell<Node>>> = (0..1000)
                .map(|_| {
                    Rc::new(RefCell::new(Node {
                        next: None,
                        payload: [1; 200],
                    }))
                })
                .collect();
            black_box(
                rcs.iter()
                    .map(|r| u32::from(r.borrow().payload[0]))
                    .sum::<u32>(),
            );
            drop(rcs);
            churn();
        }
        other => panic!("no program {other}"),
    }
}

/// Runs this binary as the program `name`, with `env`; returns (stdout, stderr), checking it
/// exited 0.
fn run(name: &str, env: &[(&str, &str)]) -> (String, String) {
    let exe = std::env::current_exe().unwrap();
    let mut c = Command::new(exe);
    c.env("SMALLARENA_TEST_PROGRAM", name)
        .env_remove("SMALLARENA_PROFILE")
        .env_remove("SMALLARENA_LEAKS")
        .env_remove("SMALLARENA_MODE")
        .env_remove("SMALLARENA_PROFILE_RATE");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{name}: {}\n{out}\n{err}", o.status);
    (out, err)
}

fn leaked(stdout: &str) -> f64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("leaked "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `leaked` line in {stdout:?}"))
}

/// The numbers of the report's first site line: (est. bytes, est. blocks, samples, site text).
fn first_site(report: &str) -> (f64, f64, usize, String) {
    let mut lines = report
        .lines()
        .skip_while(|l| !l.contains("est. bytes"))
        .skip(1);
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("no site in the report:\n{report}"));
    let mut words = line.split_whitespace();
    let mut num = || words.next().and_then(|w| w.parse::<f64>().ok()).unwrap();
    let (bytes, blocks, samples) = (num(), num(), num() as usize);
    let site = line
        .split_whitespace()
        .skip(3)
        .collect::<Vec<_>>()
        .join(" ");
    (bytes, blocks, samples, site)
}

fn within(what: &str, estimate: f64, truth: f64) {
    assert!(
        estimate >= 0.5 * truth && estimate <= 2.0 * truth,
        "{what}: estimated {estimate}, true {truth}: not within 0.5x-2x"
    );
}

fn leak_report_names_the_rc_cycle() {
    let (out, err) = run(
        "rc_cycle",
        &[
            ("SMALLARENA_LEAKS", "1"),
            ("SMALLARENA_PROFILE_RATE", "4096"),
        ],
    );
    eprintln!("{err}");
    let truth = leaked(&out);
    assert!(
        err.contains("smallarena: leak report at exit of process"),
        "{err}"
    );
    let (bytes, blocks, samples, site) = first_site(&err);
    assert!(
        site.starts_with("profile::leak_through_rc_cycle"),
        "the top site is not the leaking function: {site}\n{err}"
    );
    assert!(
        site.contains("tests/profile.rs:"),
        "no file and line: {site}"
    );
    assert!(samples >= 50, "{samples} samples");
    within("bytes at the top site", bytes, truth);
    within("blocks at the top site", blocks, (2 * CYCLES) as f64);
}

fn a_program_that_frees_everything_gets_an_empty_report() {
    // Rate 1: every allocation is sampled, so any block still live at exit would show.
    let (_, err) = run(
        "frees_everything",
        &[("SMALLARENA_LEAKS", "on"), ("SMALLARENA_PROFILE_RATE", "1")],
    );
    eprintln!("{err}");
    assert!(
        err.contains("leak report at exit of process")
            && err.contains(": no live sampled allocation"),
        "{err}"
    );
    assert!(!err.contains("est. bytes"), "{err}");
}

fn folded_profile_parses_and_estimates_the_leak() {
    let dir = std::env::temp_dir().join(format!("smallarena-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("heap.folded");
    let (out, _) = run(
        "rc_cycle",
        &[
            ("SMALLARENA_PROFILE", path.to_str().unwrap()),
            ("SMALLARENA_PROFILE_RATE", "4096"),
        ],
    );
    let truth = leaked(&out);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut total = 0.0;
    let mut at_leak = 0.0;
    for line in text.lines() {
        let (stack, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not `stack value`: {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let frames: Vec<&str> = stack.split(';').collect();
        assert!(
            frames.iter().all(|f| !f.is_empty()),
            "empty frame: {line:?}"
        );
        assert!(
            !frames.iter().any(|f| f.starts_with("smallarena::")),
            "the allocator's own frames are left out: {line:?}"
        );
        total += value;
        if frames.iter().any(|f| f.ends_with("leak_through_rc_cycle")) {
            // Outermost first: main's frames come before the leaking function.
            let i = frames
                .iter()
                .position(|f| f.ends_with("leak_through_rc_cycle"))
                .unwrap();
            assert!(
                frames[..i].iter().any(|f| f.ends_with("profile::main")),
                "{line:?}"
            );
            at_leak += value;
        }
    }
    eprintln!(
        "folded: {} lines, {total} bytes in all, {at_leak} at the leak, truth {truth}",
        text.lines().count()
    );
    within("folded bytes under leak_through_rc_cycle", at_leak, truth);
    within("folded bytes in all", total, truth);

    let path = dir.join("heap.pb.gz");
    let (out, _) = run(
        "rc_cycle",
        &[
            ("SMALLARENA_PROFILE", path.to_str().unwrap()),
            ("SMALLARENA_PROFILE_RATE", "4096"),
        ],
    );
    let truth = leaked(&out);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let p = smallarena::profile::pprof::Profile::decode(raw.as_slice()).unwrap();
    let s = |i: i64| p.string_table[i as usize].as_str();
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|t| (s(t.r#type), s(t.unit)))
        .collect();
    assert_eq!(
        types,
        [("inuse_objects", "count"), ("inuse_space", "bytes")]
    );
    assert_eq!(p.period, 4096);
    let mut total = 0.0;
    let mut at_leak = 0.0;
    for sample in &p.sample {
        assert_eq!(sample.value.len(), 2);
        total += sample.value[1] as f64;
        let names: Vec<&str> = sample
            .location_id
            .iter()
            .flat_map(|id| {
                let loc = p.location.iter().find(|l| l.id == *id).expect("location");
                loc.line.iter().map(|l| {
                    let f = p
                        .function
                        .iter()
                        .find(|f| f.id == l.function_id)
                        .expect("function");
                    s(f.name)
                })
            })
            .collect();
        if names.iter().any(|n| n.ends_with("leak_through_rc_cycle")) {
            at_leak += sample.value[1] as f64;
        }
    }
    eprintln!(
        "pprof: {} samples, {total} bytes in all, {at_leak} at the leak, truth {truth}",
        p.sample.len()
    );
    within("pprof bytes under leak_through_rc_cycle", at_leak, truth);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The API in this process: start, leak, report, stop; the sample of a freed block is dropped.
/// 5000 blocks of 300 bytes (boxed one by one: the blocks are what the test counts).
#[inline(never)]
#[allow(clippy::vec_box)]
fn keep_boxes() -> Vec<Box<[u8; 300]>> {
    (0..5000).map(|_| Box::new([7; 300])).collect()
}

fn the_rust_api() {
    smallarena::profile::start(4096).unwrap();
    assert!(smallarena::profile::is_active());
    let kept = keep_boxes();
    let sites = smallarena::profile::leaks();
    let here = sites
        .iter()
        .find(|s| s.function.contains("keep_boxes"))
        .unwrap_or_else(|| panic!("no site in keep_boxes: {sites:#?}"));
    within("the API's site", here.bytes as f64, (5000 * 300) as f64);
    let mut folded = Vec::new();
    smallarena::profile::write_folded(&mut folded).unwrap();
    assert!(String::from_utf8(folded).unwrap().contains("keep_boxes"));
    let mut pb = Vec::new();
    smallarena::profile::write_pprof(&mut pb).unwrap();
    assert!(pb.starts_with(&[0x1f, 0x8b]), "gzip");
    drop(kept);
    let sites = smallarena::profile::leaks();
    assert!(
        !sites.iter().any(|s| s.function.contains("keep_boxes")),
        "freed blocks are still reported: {sites:#?}"
    );
    smallarena::profile::stop();
    assert!(!smallarena::profile::is_active());
    assert!(smallarena::profile::start(0).is_err());
}

fn main() {
    if let Ok(name) = std::env::var("SMALLARENA_TEST_PROGRAM") {
        program(&name);
        return;
    }
    common::run_without_harness(
        "leak_report_names_the_rc_cycle",
        leak_report_names_the_rc_cycle,
    );
    common::run_without_harness(
        "a_program_that_frees_everything_gets_an_empty_report",
        a_program_that_frees_everything_gets_an_empty_report,
    );
    common::run_without_harness(
        "folded_profile_parses_and_estimates_the_leak",
        folded_profile_parses_and_estimates_the_leak,
    );
    common::run_without_harness("the_rust_api", the_rust_api);
}
