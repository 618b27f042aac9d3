//! The unit tests of the comparison's summary (checksum agreement, spreads, geometric means, the
//! date), compiled here from the example's own modules: an example built as a test
//! (`test = true`) is no longer built as the program that `tests/compare.rs` runs.
#![allow(dead_code)]

#[path = "../examples/compare/measure.rs"]
mod measure;
#[path = "../examples/compare/programs.rs"]
mod programs;
#[path = "../examples/compare/summary.rs"]
mod summary;
