//! Running one program once, and the order of all runs.

use crate::programs::{Workload, ALLOCATORS};
use std::process::{Command, Stdio};
use std::time::Instant;

/// One run of one program with one allocator.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sample {
    /// Wall time, seconds (from spawn to reaped).
    pub wall: f64,
    /// CPU time of the child, user + system, seconds (`wait4`'s rusage).
    pub cpu: f64,
    /// Peak resident set size of the child, KiB (`ru_maxrss`).
    pub rss_kib: u64,
    /// What the program printed after `checksum=`.
    pub checksum: String,
}

/// Every sample, indexed by workload and allocator (indices into the selected workloads and
/// into [`ALLOCATORS`]).
pub struct Samples(Vec<Vec<Vec<Sample>>>);

impl Samples {
    /// No samples yet for `workloads` x `allocators`.
    pub fn new(workloads: usize, allocators: usize) -> Samples {
        Samples(vec![vec![Vec::new(); allocators]; workloads])
    }
    /// Records one run.
    pub fn push(&mut self, workload: usize, allocator: usize, s: Sample) {
        self.0[workload][allocator].push(s);
    }
    /// The runs of one workload with one allocator, in round order.
    pub fn get(&self, workload: usize, allocator: usize) -> &[Sample] {
        &self.0[workload][allocator]
    }
}

/// One planned run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// 0-based round.
    pub round: usize,
    /// Index into the selected workloads.
    pub workload: usize,
    /// Index into [`ALLOCATORS`].
    pub allocator: usize,
}

/// The order of all runs: round by round; within a round, program by program, every allocator
/// that `runs` says is measured on it, the allocators' order rotated by round and program so
/// that none always runs first (or right after the same neighbour).
pub fn plan(
    workloads: &[Workload],
    allocators: &[usize],
    rounds: usize,
    runs: impl Fn(&Workload, &str) -> bool,
) -> Vec<Run> {
    let mut out = Vec::new();
    for round in 0..rounds {
        for (wi, w) in workloads.iter().enumerate() {
            let these: Vec<usize> = allocators
                .iter()
                .copied()
                .filter(|&a| runs(w, ALLOCATORS[a]))
                .collect();
            for k in 0..these.len() {
                let allocator = these[(k + round + wi) % these.len()];
                out.push(Run {
                    round,
                    workload: wi,
                    allocator,
                });
            }
        }
    }
    out
}

/// Runs `cmd` to completion: wall time, CPU time and peak RSS of the child (from `wait4`), and
/// its checksum line. Exits the comparison if the program fails or prints no checksum.
// The child is reaped with `libc::wait4` (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn run(mut cmd: Command, workload: &str, allocator: &str) -> Sample {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("piped stdout");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).expect("read child output");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` are valid for writes.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed().as_secs_f64();
    assert_eq!(r, pid, "wait4 failed");
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        eprintln!("\ncompare: {workload} with {allocator} failed (wait status {status})");
        std::process::exit(1);
    }
    let Some(checksum) = out.lines().find_map(|l| l.strip_prefix("checksum=")) else {
        eprintln!("\ncompare: {workload} with {allocator} printed no checksum: {out:?}");
        std::process::exit(1);
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Sample {
        wall,
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        rss_kib: usage.ru_maxrss as u64,
        checksum: checksum.to_string(),
    }
}
