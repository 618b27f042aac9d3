//! `SMALLARENA_FORK=share`: a forked child leaves the pages of its parent's heap shared.
//!
//! The scenario (`tests/scenario/forkshare.rs`, the benchmark `workloads/examples/forkshare.rs`
//! runs it at full size): a parent builds 64 MiB of small objects and forks 2 children; each walks
//! every inherited object, frees a quarter of them, allocates 16 MiB of its own and churns it,
//! and reports its `Private_Dirty` (`/proc/self/smaps_rollup`). Each policy runs in a fresh
//! process of this test binary (no libtest harness: nothing else allocates there).
//!
//! Asserted, per child, on the dirty bytes it added after the fork beyond its own new data
//! ([`Report::extra`]): with `share` at most 1/8 of the own data (class rounding, pool headers
//! and partly used pools: the allocator's fresh metadata) plus 2 MiB, and at most a tenth of what
//! `reuse` adds on the same program; `reuse` must add at least half the parent's heap (else the
//! scenario does not provoke what it is meant to measure). Also: every inherited object reads
//! back intact, and share mode counts the dropped blocks as retained.

mod common;
#[path = "scenario/forkshare.rs"]
mod scenario;

use scenario::{Params, Report};
use std::process::Command;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

const SCENARIO_VAR: &str = "SMALLARENA_TEST_FORK_SHARE_SCENARIO";
const MIB: u64 = 1 << 20;

const PARAMS: Params = Params {
    heap_bytes: 64 << 20,
    children: 2,
    child_bytes: 16 << 20,
    churn_rounds: 3,
};

/// Runs the scenario in a fresh process of this binary under `policy`; the children's reports.
fn run(policy: &str) -> Vec<Report> {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(SCENARIO_VAR, "1")
        .env("SMALLARENA_MODE", "arena")
        .env("SMALLARENA_FORK", policy)
        .output()
        .expect("run the scenario");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{policy}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<Report> = stdout.lines().filter_map(parse).collect();
    assert_eq!(reports.len(), PARAMS.children, "{policy}: {stdout}");
    reports
}

/// One `report` line of the scenario process.
fn parse(line: &str) -> Option<Report> {
    let n: Vec<u64> = line
        .strip_prefix("report ")?
        .split(' ')
        .map(|w| w.parse().unwrap())
        .collect();
    Some(Report {
        pid: n[0],
        dirty: [n[1], n[2], n[3], n[4]],
        own_bytes: n[5],
        retained: n[6],
        intact: n[7],
    })
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

fn check() {
    let share = run("share");
    let reuse = run("reuse");
    for (policy, reports) in [("share", &share), ("reuse", &reuse)] {
        for r in reports.iter() {
            println!(
                "{policy}: child {}: dirty after fork / walk / free / end = {:.1} / {:.1} / \
                 {:.1} / {:.1} MiB, own data {:.1} MiB, extra {:.2} MiB, retained {:.1} MiB",
                r.pid,
                mib(r.dirty[0]),
                mib(r.dirty[1]),
                mib(r.dirty[2]),
                mib(r.dirty[3]),
                mib(r.own_bytes),
                mib(r.extra()),
                mib(r.retained)
            );
            assert_eq!(r.intact, 1, "{policy}: an inherited object changed");
            assert!(r.dirty[3] > 0, "{policy}: smaps_rollup unreadable");
        }
    }
    let heap = PARAMS.heap_bytes as u64;
    for (s, r) in share.iter().zip(reuse.iter()) {
        // Roughly a quarter of the heap's blocks were freed and dropped (whole blocks).
        assert!(
            s.retained > heap / 8 && s.retained < heap / 2,
            "share: retained {} of a {} heap",
            s.retained,
            heap
        );
        assert_eq!(r.retained, 0, "reuse drops nothing");
        assert!(
            r.extra() >= heap / 2,
            "reuse dirtied only {:.1} MiB beyond its own data: the scenario provokes nothing",
            mib(r.extra())
        );
        let bound = s.own_bytes / 8 + 2 * MIB;
        assert!(
            s.extra() <= bound,
            "share dirtied {:.2} MiB beyond its own data (bound {:.2} MiB)",
            mib(s.extra()),
            mib(bound)
        );
        assert!(
            s.extra() * 10 <= r.extra(),
            "share {:.2} MiB is more than a tenth of reuse {:.2} MiB",
            mib(s.extra()),
            mib(r.extra())
        );
        // The walk reads only, and share mode's frees write nothing inherited.
        assert!(
            s.dirty[2] - s.dirty[0] <= MIB,
            "share: walking and freeing dirtied {:.2} MiB",
            mib(s.dirty[2] - s.dirty[0])
        );
    }
}

fn main() {
    if std::env::var_os(SCENARIO_VAR).is_some() {
        for r in scenario::run(PARAMS) {
            println!(
                "report {} {} {} {} {} {} {} {}",
                r.pid,
                r.dirty[0],
                r.dirty[1],
                r.dirty[2],
                r.dirty[3],
                r.own_bytes,
                r.retained,
                r.intact
            );
        }
        return;
    }
    common::run_without_harness("share_mode_children_leave_the_parent_heap_shared", check);
}
