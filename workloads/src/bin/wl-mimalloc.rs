//! The workloads with the mimalloc allocator as the global allocator (see the crate docs).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    smallarena_workloads::main();
}
