//! The workloads with the jemalloc allocator as the global allocator (see the crate docs).

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    smallarena_workloads::main();
}
