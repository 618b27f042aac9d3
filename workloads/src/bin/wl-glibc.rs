//! The workloads with the glibc allocator as the global allocator (see the crate docs).

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    smallarena_workloads::main();
}
