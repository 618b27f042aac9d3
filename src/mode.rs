//! Which allocator serves small requests in this process: decided once, never changed.
//!
//! The decision is made on the first small allocation, before any block is handed out, and
//! published with a compare-and-swap so that threads racing to allocate first all agree. Every
//! free must reach the allocator that made its block, so the mode never changes afterwards.
//!
//! The automatic choice (`auto`, the default) is `System` under Valgrind, detected with a client
//! request (the crate's `valgrind` module), so that memcheck sees every block with exact stack traces, as
//! `PYTHONMALLOC=malloc` does for CPython; natively it is `Arena`. Without the `valgrind` cargo
//! feature there is no detection and `auto` is always `Arena`.
//!
//! `SMALLARENA_MODE=arena|system|annotate|auto` overrides the automatic choice (read and parsed by
//! the crate's one reader of `SMALLARENA_*` variables, without allocating; any letter case,
//! surrounding whitespace ignored). An unknown value is echoed in one line on stderr and `auto` is
//! used; `annotate` where this build has no client requests (the feature is off, or the target is
//! not x86_64/aarch64 Linux) says so in one line and the arena is used.

use crate::env::{Line, RequestedMode};
use crate::sync::{global, AtomicU8, Ordering};

/// The allocator serving small requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Small requests come from smallarena's pools (the default).
    Arena,
    /// Every request goes to the system allocator (libc `malloc`/`free`/`posix_memalign`).
    System,
    /// The arena is used and every block is described to Valgrind's memcheck.
    Annotate,
}

const UNDECIDED: u8 = 0;
pub(crate) const ARENA: u8 = 1;
pub(crate) const SYSTEM: u8 = 2;
pub(crate) const ANNOTATE: u8 = 3;
/// Arena mode after the arena once could not grow (the OS refused a new arena) and a small
/// request was served by libc instead: small blocks may now be either, so every small free asks
/// the arena map whose block it is (the cold path). Reported as [`Mode::Arena`]; entered at most
/// once, never left. Keeping it a mode byte keeps the check off the fast path, which compares the
/// byte with [`ARENA`] anyway.
pub(crate) const ARENA_FALLBACK: u8 = 4;

global! {
    static MODE: AtomicU8 = AtomicU8::new(UNDECIDED);
}

/// True when the arena serves small requests. One load and one compare on the fast path.
#[inline(always)]
pub(crate) fn is_arena() -> bool {
    MODE.load(Ordering::Relaxed) == ARENA
}

/// True in annotate mode (cold paths only).
#[inline]
pub(crate) fn is_annotate() -> bool {
    MODE.load(Ordering::Relaxed) == ANNOTATE
}

/// Arena mode only: from now on small requests the arena cannot serve may come from libc (see
/// [`ARENA_FALLBACK`]). False, and nothing changes, in any other mode.
#[cold]
pub(crate) fn enter_fallback() -> bool {
    match MODE.compare_exchange(ARENA, ARENA_FALLBACK, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => true,
        Err(now) => now == ARENA_FALLBACK,
    }
}

/// The mode in force, deciding it now if no allocation has yet.
pub fn mode() -> Mode {
    decode(decide())
}

/// The name of the mode in force, without deciding it.
pub(crate) fn mode_name() -> &'static str {
    match MODE.load(Ordering::Acquire) {
        UNDECIDED => "undecided",
        SYSTEM => "System",
        ANNOTATE => "Annotate",
        _ => "Arena",
    }
}

fn decode(m: u8) -> Mode {
    match m {
        SYSTEM => Mode::System,
        ANNOTATE => Mode::Annotate,
        _ => Mode::Arena,
    }
}

/// Decides the mode if it is undecided and returns the one in force.
#[cold]
pub(crate) fn decide() -> u8 {
    let cur = MODE.load(Ordering::Acquire);
    if cur != UNDECIDED {
        return cur;
    }
    let (choice, note) = choose();
    match MODE.compare_exchange(UNDECIDED, choice, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            // Only the thread whose choice stands says why, so the line appears once.
            note.emit();
            choice
        }
        Err(winner) => winner,
    }
}

/// What this process should use: the environment override, else the automatic choice; with the
/// line to print on stderr (empty if none) when the override was not taken as written.
fn choose() -> (u8, Line) {
    let (requested, note) = crate::env::read_mode();
    let mode = match requested {
        RequestedMode::Arena => ARENA,
        RequestedMode::System => SYSTEM,
        RequestedMode::Annotate => ANNOTATE,
        RequestedMode::Auto if crate::valgrind::running_on_valgrind() => SYSTEM,
        RequestedMode::Auto => ARENA,
    };
    (mode, note)
}
