//! The programs and the allocators of the comparison.

/// The allocators compared, smallarena first (the numerator of every ratio).
pub const ALLOCATORS: [&str; 5] = ["smallarena", "glibc", "jemalloc", "mimalloc", "tcmalloc"];

/// How a program is built and run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Lang {
    /// A workload of `workloads/src/lib.rs`, one binary per `#[global_allocator]`.
    Rust,
    /// A C program of `workloads/c/`, the allocator preloaded.
    C,
}

impl Lang {
    /// The group's name in tables and charts.
    pub fn group(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::C => "C",
        }
    }
}

/// One program of the comparison.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Its name on the command line (`--workloads`) and in `results.json`.
    pub name: &'static str,
    /// Rust workload or C program.
    pub lang: Lang,
    /// What it does, for tables and charts.
    pub label: &'static str,
}

/// Every program, Rust workloads first.
pub const WORKLOADS: [Workload; 10] = [
    Workload {
        name: "trees",
        lang: Lang::Rust,
        label: "binary trees",
    },
    Workload {
        name: "strings",
        lang: Lang::Rust,
        label: "map of small strings",
    },
    Workload {
        name: "mixed",
        lang: Lang::Rust,
        label: "random frees, 8-3512 B",
    },
    Workload {
        name: "vecs",
        lang: Lang::Rust,
        label: "many growing Vecs",
    },
    Workload {
        name: "prodcons",
        lang: Lang::Rust,
        label: "producer/consumer, 32 B",
    },
    Workload {
        name: "mix1000",
        lang: Lang::C,
        label: "8-1000 B, remote frees",
    },
    Workload {
        name: "prodcons64",
        lang: Lang::C,
        label: "producer/consumer, 64 B",
    },
    Workload {
        name: "mix32k",
        lang: Lang::C,
        label: "4 B-32 KiB mix, realloc",
    },
    Workload {
        name: "outlive",
        lang: Lang::C,
        label: "objects outlive threads",
    },
    Workload {
        name: "fixed64",
        lang: Lang::C,
        label: "fixed 64 B alloc/free",
    },
];
