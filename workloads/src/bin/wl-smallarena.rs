//! The workloads with the smallarena allocator as the global allocator (see the crate docs).

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

fn main() {
    smallarena_workloads::main();
}
