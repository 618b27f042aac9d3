//! The pre-fork server scenario of the fork policy (`SMALLARENA_FORK`), shared by the test
//! `tests/fork_share.rs` and the benchmark `workloads/examples/forkshare.rs` (included there with
//! `#[path]`), so both measure the same program.
//!
//! A parent builds a heap of small objects (strings, boxes, vectors of several size classes),
//! then forks children. Each child measures its `Private_Dirty` (from `/proc/self/smaps_rollup`)
//! right after the fork, walks every inherited object (reads only), measures, frees a quarter of
//! them, measures, allocates data of its own and churns it for a few rounds, measures, sends its
//! report to the parent through a pipe, and waits until the parent has every report (so the
//! parent, which keeps the shared pages mapped, outlives every measurement: a page the parent no
//! longer maps would count as private to the child). After the first fork the parent neither
//! allocates nor writes its heap (that would copy a shared page into the parent and leave the
//! child's copy private to it): it only reads pipes into arrays on its stack.
#![allow(dead_code)]

use fastrand::Rng;
use std::mem::ManuallyDrop;

/// The most children a run may fork.
pub const MAX_CHILDREN: usize = 16;

/// The size of a run.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Bytes of small objects the parent builds (requested sizes, summed).
    pub heap_bytes: usize,
    /// Children forked (at most [`MAX_CHILDREN`]).
    pub children: usize,
    /// Bytes of new objects each child allocates (requested sizes, summed).
    pub child_bytes: usize,
    /// Rounds of churn over the child's own objects (each replaces a tenth of them).
    pub churn_rounds: usize,
}

/// What a child reports. Sizes in bytes.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Report {
    /// The child's pid.
    pub pid: u64,
    /// `Private_Dirty` right after the fork, after the walk, after freeing a quarter, at the end.
    pub dirty: [u64; 4],
    /// Bytes the child allocated and still holds at the end (requested sizes, summed, including
    /// its container).
    pub own_bytes: u64,
    /// The allocator's `fork_retained_bytes` at the end (smallarena only).
    pub retained: u64,
    /// 1 when every inherited object read back as the parent built it.
    pub intact: u64,
}

impl Report {
    /// Dirty bytes the child added after the fork, beyond its own new data (saturating): what
    /// the allocator (and the program's few other writes) cost.
    pub fn extra(&self) -> u64 {
        (self.dirty[3].saturating_sub(self.dirty[0])).saturating_sub(self.own_bytes)
    }

    /// The report as the scenario process prints it: `report` and its eight numbers (pid, the
    /// four dirty figures, own bytes, retained, intact), space-separated. The C program
    /// (`workloads/c/forkshare.c`) prints the same line.
    pub fn line(&self) -> String {
        let [d0, d1, d2, d3] = self.dirty;
        format!(
            "report {} {d0} {d1} {d2} {d3} {} {} {}",
            self.pid, self.own_bytes, self.retained, self.intact
        )
    }

    /// The report of one [`Report::line`]; `None` for any other line.
    pub fn parse(line: &str) -> Option<Report> {
        let n: Vec<u64> = line
            .strip_prefix("report ")?
            .split(' ')
            .map(|w| w.parse().ok())
            .collect::<Option<_>>()?;
        let [pid, d0, d1, d2, d3, own_bytes, retained, intact] = n[..] else {
            return None;
        };
        Some(Report {
            pid,
            dirty: [d0, d1, d2, d3],
            own_bytes,
            retained,
            intact,
        })
    }
}

/// An object of the parent's heap.
enum Obj {
    Str(String),
    Small(Box<[u64; 3]>),
    Medium(Box<[u64; 12]>),
    Words(Vec<u32>),
    Pair(Box<(u64, String)>),
}

impl Obj {
    /// A checksum over every byte of the object (reads only).
    fn sum(&self) -> u64 {
        fn bytes(b: &[u8]) -> u64 {
            b.iter().fold(b.len() as u64, |s, &x| {
                s.wrapping_mul(31).wrapping_add(x.into())
            })
        }
        match self {
            Obj::Str(s) => bytes(s.as_bytes()),
            Obj::Small(b) => b.iter().fold(3, |s, &x| s.wrapping_mul(7) ^ x),
            Obj::Medium(b) => b.iter().fold(12, |s, &x| s.wrapping_mul(7) ^ x),
            Obj::Words(v) => v
                .iter()
                .fold(v.len() as u64, |s, &x| s.wrapping_mul(5) ^ u64::from(x)),
            Obj::Pair(p) => p.0 ^ bytes(p.1.as_bytes()),
        }
    }
}

/// A string of `len` bytes (capacity exactly `len`).
fn text(rng: &mut Rng, len: usize) -> String {
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        s.push(char::from(b'a' + rng.usize(..26) as u8));
    }
    s
}

/// One object of the mix, and the bytes it requested.
fn object(rng: &mut Rng) -> (Obj, usize) {
    match rng.usize(..10) {
        0..=3 => {
            let len = 8 + rng.usize(..193);
            (Obj::Str(text(rng, len)), len)
        }
        4 | 5 => {
            let x = rng.u64(..);
            (Obj::Small(Box::new([x, x >> 3, x >> 7])), 24)
        }
        6 => {
            let x = rng.u64(..);
            (Obj::Medium(Box::new([x; 12])), 96)
        }
        7 | 8 => {
            let n = 2 + rng.usize(..119);
            let v: Vec<u32> = (0..n).map(|_| rng.u64(..) as u32).collect();
            (Obj::Words(v), 4 * n)
        }
        _ => {
            let len = 8 + rng.usize(..57);
            let s = text(rng, len);
            (Obj::Pair(Box::new((rng.u64(..), s))), 32 + len)
        }
    }
}

/// `Private_Dirty` of this process in bytes, from `/proc/self/smaps_rollup`; read with a stack
/// buffer and `read(2)`, allocating nothing. 0 if it cannot be read.
pub fn private_dirty() -> u64 {
    let mut buf = [0u8; 4096];
    // SAFETY: a NUL-terminated path; `buf` is ours for `buf.len()` bytes; the descriptor is
    // closed once.
    let n = unsafe {
        let fd = libc::open(c"/proc/self/smaps_rollup".as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return 0;
        }
        let mut n = 0usize;
        while n < buf.len() {
            let r = libc::read(fd, buf.as_mut_ptr().add(n).cast(), buf.len() - n);
            if r <= 0 {
                break;
            }
            n += r as usize;
        }
        libc::close(fd);
        n
    };
    field_kib(&buf[..n], b"Private_Dirty:") * 1024
}

/// The value in KiB of the line starting with `name` in smaps text.
fn field_kib(text: &[u8], name: &[u8]) -> u64 {
    for line in text.split(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(name) {
            return rest
                .iter()
                .filter(|b| b.is_ascii_digit())
                .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        }
    }
    0
}

/// Runs the scenario in this process (which should be a fresh one: the parent's heap is all it
/// should hold) and returns the children's reports. Panics if a fork or a pipe fails or a child
/// dies.
pub fn run(p: Params) -> Vec<Report> {
    assert!(p.children >= 1 && p.children <= MAX_CHILDREN);
    let mut rng = Rng::with_seed(0x5EED_F0F0_1234_5678);
    // The container is one large block (the system allocator's): room for every object first,
    // so it is never reallocated.
    let slots = p.heap_bytes / 40 + 1024;
    let mut heap: Vec<ManuallyDrop<Obj>> = Vec::with_capacity(slots);
    let mut built = 0usize;
    while built < p.heap_bytes && heap.len() < slots {
        let (o, n) = object(&mut rng);
        heap.push(ManuallyDrop::new(o));
        built += n;
    }
    let want: u64 = heap.iter().fold(0u64, |s, o| s.wrapping_add(o.sum()));

    let mut reports = [Report::default(); MAX_CHILDREN];
    let mut pids = [0 as libc::pid_t; MAX_CHILDREN];
    let mut results = [0 as libc::c_int; 2];
    let mut go = [0 as libc::c_int; 2];
    // SAFETY: two-element arrays for pipe(2).
    unsafe {
        assert_eq!(libc::pipe(results.as_mut_ptr()), 0, "pipe");
        assert_eq!(libc::pipe(go.as_mut_ptr()), 0, "pipe");
    }
    for pid in pids.iter_mut().take(p.children) {
        // SAFETY: the child runs `child` and leaves with `_exit`.
        let f = unsafe { libc::fork() };
        assert!(f >= 0, "fork failed");
        if f == 0 {
            // SAFETY: closing our copies of the ends the child does not use.
            unsafe {
                libc::close(results[0]);
                libc::close(go[1]);
            }
            let r = child(&mut heap, want, p);
            // SAFETY: `r` is plain data of `size_of::<Report>()` bytes (under PIPE_BUF, so the
            // write is atomic); then we wait for the parent to close `go`, and leave without
            // running destructors (the inherited heap is the parent's business).
            unsafe {
                let n = libc::write(
                    results[1],
                    (&r as *const Report).cast(),
                    core::mem::size_of::<Report>(),
                );
                let mut b = 0u8;
                libc::read(go[0], (&mut b as *mut u8).cast(), 1);
                libc::_exit(if n as usize == core::mem::size_of::<Report>() {
                    0
                } else {
                    2
                });
            }
        }
        *pid = f;
    }
    // SAFETY: plain reads into stack memory, closes and waits on our own descriptors and children.
    unsafe {
        libc::close(results[1]);
        libc::close(go[0]);
        for r in reports.iter_mut().take(p.children) {
            let want = core::mem::size_of::<Report>();
            let mut got = 0;
            while got < want {
                let n = libc::read(
                    results[0],
                    (r as *mut Report).cast::<u8>().add(got).cast(),
                    want - got,
                );
                assert!(n > 0, "a child died before reporting");
                got += n as usize;
            }
        }
        libc::close(go[1]);
        libc::close(results[0]);
        for &pid in pids.iter().take(p.children) {
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child {pid} failed: status {status:#x}"
            );
        }
    }
    // Leaked on purpose, like the children do: this process ends now.
    core::mem::forget(heap);
    reports[..p.children].to_vec()
}

/// A child's work (see the module documentation).
fn child(heap: &mut [ManuallyDrop<Obj>], want: u64, p: Params) -> Report {
    let mut r = Report {
        // SAFETY: getpid has no preconditions.
        pid: unsafe { libc::getpid() } as u64,
        ..Report::default()
    };
    r.dirty[0] = private_dirty();
    let got = heap.iter().fold(0u64, |s, o| s.wrapping_add(o.sum()));
    r.intact = u64::from(got == want);
    r.dirty[1] = private_dirty();
    for o in heap.iter_mut().step_by(4) {
        // SAFETY: each object is dropped once and never used again (the child leaves with
        // `_exit`, and the slots are not read after this loop).
        unsafe { ManuallyDrop::drop(o) };
    }
    r.dirty[2] = private_dirty();
    let mut rng = Rng::with_seed(0xC41D_0000 ^ r.pid);
    let mut mine: Vec<String> = Vec::with_capacity(p.child_bytes / 60 + 16);
    let mut bytes = 0usize;
    while bytes < p.child_bytes && mine.len() < mine.capacity() {
        let len = 8 + rng.usize(..193);
        bytes += len;
        mine.push(text(&mut rng, len));
    }
    for round in 0..p.churn_rounds {
        for i in (round % 10..mine.len()).step_by(10) {
            let len = 8 + rng.usize(..193);
            bytes = bytes - mine[i].len() + len;
            mine[i] = text(&mut rng, len);
        }
    }
    // The container's slots in use (the rest of its capacity is never touched).
    r.own_bytes = (bytes + mine.len() * core::mem::size_of::<String>()) as u64;
    r.retained = smallarena::stats().fork_retained_bytes as u64;
    r.dirty[3] = private_dirty();
    core::mem::forget(mine);
    r
}

/// Sums the reports' fields (bytes).
pub fn total(reports: &[Report], f: impl Fn(&Report) -> u64) -> u64 {
    reports.iter().map(f).sum()
}
