//! Model-based property test: random programs of alloc / alloc_zeroed / free / realloc, run
//! against the allocator and against a plain model of what each live block must hold. After every
//! step each live block still carries its pattern; at the end, the allocator's own per-class
//! counters moved by exactly what the model says is live, and its invariants hold
//! (`smallarena::check_invariants`).
//!
//! The counters are process-wide, so this test runs without libtest's harness (`harness = false`
//! in `Cargo.toml`): under the harness, the main thread allocates while the test runs (the first
//! time it waits on its result channel it builds a 48-byte wait context), and that block showed
//! up in the counters as one the model did not know about.

mod common;
use common::pattern;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: usize,
        align_shift: u32,
        zeroed: bool,
    },
    Free(usize),
    Realloc(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![
        8 => 1usize..=512,
        1 => 513usize..=2048,
    ];
    prop_oneof![
        4 => (size.clone(), prop_oneof![4 => 0u32..=4, 1 => 5u32..=7], any::<bool>())
            .prop_map(|(size, align_shift, zeroed)| Op::Alloc { size, align_shift, zeroed }),
        3 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), size).prop_map(|(i, s)| Op::Realloc(i, s)),
    ]
}

struct Live {
    ptr: *mut u8,
    layout: Layout,
    tag: usize,
}

fn fill(b: &Live) {
    for i in 0..b.layout.size() {
        // SAFETY: `b` is a live block of `b.layout.size()` bytes, and `i` is below that.
        unsafe { b.ptr.add(i).write(pattern(b.tag, 0, i)) };
    }
}

fn check(b: &Live, upto: usize) -> Result<(), TestCaseError> {
    for i in 0..upto {
        // SAFETY: callers pass `upto <= b.layout.size()` for a live block `b`.
        let got = unsafe { b.ptr.add(i).read() };
        prop_assert_eq!(got, pattern(b.tag, 0, i), "tag {} byte {}", b.tag, i);
    }
    Ok(())
}

fn class_of(layout: &Layout) -> Option<usize> {
    (layout.size() <= 512 && layout.align() <= 16).then(|| (layout.size() - 1) / 16)
}

fn in_use_by_class() -> [usize; 32] {
    let s = smallarena::stats();
    std::array::from_fn(|c| s.classes[c].blocks_in_use)
}

const CASES: u32 = 200;

fn main() {
    common::run_without_harness("allocator_matches_model", || {
        let mut config = ProptestConfig::with_cases(CASES);
        // Failures are saved beside this file, in `model.proptest-regressions`, and replayed
        // first.
        config.source_file = Some(file!());
        config.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        )));
        let programs = proptest::collection::vec(op(), 1..400);
        if let Err(e) = TestRunner::new(config).run(&programs, allocator_matches_model) {
            panic!("allocator_matches_model: {e}");
        }
        println!("{CASES} random programs");
    });
}

fn allocator_matches_model(ops: Vec<Op>) -> Result<(), TestCaseError> {
    // Reserve all bookkeeping up front so the only allocations during the run are the ops.
    let mut live: Vec<Live> = Vec::with_capacity(ops.len());
    let before = in_use_by_class();
    for (tag, op) in ops.iter().enumerate() {
        match *op {
            Op::Alloc {
                size,
                align_shift,
                zeroed,
            } => {
                let layout = Layout::from_size_align(size, 1 << align_shift).unwrap();
                // SAFETY: the strategy only makes sizes of at least 1 byte.
                let p = unsafe {
                    if zeroed {
                        GLOBAL.alloc_zeroed(layout)
                    } else {
                        GLOBAL.alloc(layout)
                    }
                };
                prop_assert!(!p.is_null());
                prop_assert_eq!(p as usize % layout.align(), 0);
                if zeroed {
                    for i in 0..size {
                        // SAFETY: `p` is a live block of `size` bytes and `i < size`.
                        prop_assert_eq!(unsafe { p.add(i).read() }, 0);
                    }
                }
                let b = Live {
                    ptr: p,
                    layout,
                    tag,
                };
                fill(&b);
                live.push(b);
            }
            Op::Free(i) if !live.is_empty() => {
                let b = live.swap_remove(i % live.len());
                check(&b, b.layout.size())?;
                // SAFETY: `b` left the model's live set, so it is freed once, with its layout.
                unsafe { GLOBAL.dealloc(b.ptr, b.layout) };
            }
            Op::Realloc(i, new_size) if !live.is_empty() => {
                let n = live.len();
                let b = &mut live[i % n];
                // SAFETY: `b` is live with layout `b.layout`; `new_size` is at least 1.
                let q = unsafe { GLOBAL.realloc(b.ptr, b.layout, new_size) };
                prop_assert!(!q.is_null());
                prop_assert_eq!(q as usize % b.layout.align(), 0);
                let old = b.layout.size();
                b.ptr = q;
                b.layout = Layout::from_size_align(new_size, b.layout.align()).unwrap();
                check(b, old.min(new_size))?;
                for i in old.min(new_size)..new_size {
                    // SAFETY: `q` holds `new_size` bytes and `i < new_size`.
                    unsafe { q.add(i).write(pattern(b.tag, 0, i)) };
                }
            }
            _ => {}
        }
    }
    // No block overlaps another: every live block still holds its own pattern.
    for b in &live {
        check(b, b.layout.size())?;
    }
    let after = in_use_by_class();
    let mut model = [0usize; 32];
    for b in &live {
        if let Some(c) = class_of(&b.layout) {
            model[c] += 1;
        }
    }
    for c in 0..32 {
        prop_assert_eq!(after[c] - before[c], model[c], "class {}", c);
    }
    // `drain` keeps the bookkeeping buffer (itself a small block) alive for the last check.
    for b in live.drain(..) {
        // SAFETY: each block is live with its layout and leaves the model here, once.
        unsafe { GLOBAL.dealloc(b.ptr, b.layout) };
    }
    prop_assert_eq!(in_use_by_class(), before);
    // The allocator's own invariants (this thread's heap, the abandoned heaps, the arenas).
    if let Err(v) = smallarena::check_invariants() {
        return Err(TestCaseError::fail(format!("invariant broken: {v}")));
    }
    Ok(())
}
