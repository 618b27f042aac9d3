//! smallarena's memcheck suite; the code is in `examples/vg_probe.rs` (the probe program, with one
//! deliberate memory error per scenario) and `tests/valgrind.rs` (runs it under memcheck in every
//! mode and checks memcheck's verdicts). This library is empty: the crate exists so that the
//! probe's dev-dependency `crabgrind` (which needs Valgrind's headers and libclang to build)
//! stays out of the allocator's dependency graph.
