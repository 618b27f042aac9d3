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

/// What the process-wide mode byte holds: the [`Mode`] in force, in the detail the allocator
/// routes by. Stored as its `u8` discriminant in one atomic byte; the arena-mode fast path
/// compares that byte with `State::Arena as u8` and decodes nothing.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// No small allocation has happened yet: the next one decides ([`decide`]).
    Undecided = 0,
    /// [`Mode::Arena`].
    Arena = 1,
    /// [`Mode::System`].
    System = 2,
    /// [`Mode::Annotate`].
    Annotate = 3,
    /// Arena mode after the arena once could not grow (the OS refused a new arena) and a small
    /// request was served by libc instead: small blocks may now be either, so every small free
    /// asks the arena map whose block it is (the cold path). Reported as [`Mode::Arena`]; entered
    /// at most once, never left. Keeping it a state of the byte keeps the check off the fast
    /// path, which compares the byte with [`State::Arena`] anyway.
    ArenaFallback = 4,
}

impl State {
    /// The state a mode byte holds (only ever a discriminant stored by this module).
    #[inline]
    fn from_byte(b: u8) -> State {
        match b {
            1 => State::Arena,
            2 => State::System,
            3 => State::Annotate,
            4 => State::ArenaFallback,
            _ => State::Undecided,
        }
    }

    /// The public mode this state reports (undecided reads as `Arena`, its usual outcome).
    pub(crate) fn mode(self) -> Mode {
        match self {
            State::System => Mode::System,
            State::Annotate => Mode::Annotate,
            State::Undecided | State::Arena | State::ArenaFallback => Mode::Arena,
        }
    }

    /// The name printed in statistics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Undecided => "undecided",
            State::System => "System",
            State::Annotate => "Annotate",
            State::Arena | State::ArenaFallback => "Arena",
        }
    }
}

global! {
    static MODE: AtomicU8 = AtomicU8::new(State::Undecided as u8);
}

/// True when the arena serves small requests. One load and one compare on the fast path.
#[inline(always)]
pub(crate) fn is_arena() -> bool {
    MODE.load(Ordering::Relaxed) == State::Arena as u8
}

/// True in annotate mode (cold paths only).
#[inline]
pub(crate) fn is_annotate() -> bool {
    MODE.load(Ordering::Relaxed) == State::Annotate as u8
}

/// Marks allocator-owned memory (a new arena, a heap slab) no-access to memcheck in annotate mode,
/// where the program must not touch it; a no-op in every other mode.
pub(crate) fn hide(p: *mut u8, len: usize) {
    if is_annotate() {
        crate::valgrind::no_access(p, len);
    }
}

/// A section in which the allocator touches its own no-access memory: memcheck's error reporting
/// is off for the calling thread until the guard is dropped, in annotate mode; nothing happens
/// in any other mode. Every allocator entry point that may touch heap or arena structures while
/// the program runs under annotate mode opens one (see [`crate::valgrind::Quiet`]).
#[inline]
pub(crate) fn quiet() -> crate::valgrind::Quiet {
    crate::valgrind::Quiet::new(is_annotate())
}

/// Arena mode only: from now on small requests the arena cannot serve may come from libc (see
/// [`State::ArenaFallback`]). False, and nothing changes, in any other mode.
#[cold]
pub(crate) fn enter_fallback() -> bool {
    let (arena, fallback) = (State::Arena as u8, State::ArenaFallback as u8);
    match MODE.compare_exchange(arena, fallback, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => true,
        Err(now) => now == fallback,
    }
}

/// The mode in force, deciding it now if no allocation has yet.
pub fn mode() -> Mode {
    decide().mode()
}

/// The name of the mode in force, without deciding it.
pub(crate) fn name_now() -> &'static str {
    State::from_byte(MODE.load(Ordering::Acquire)).name()
}

/// Decides the mode if it is undecided and returns the state in force.
#[cold]
pub(crate) fn decide() -> State {
    let cur = MODE.load(Ordering::Acquire);
    if cur != State::Undecided as u8 {
        return State::from_byte(cur);
    }
    let (choice, note) = choose();
    match MODE.compare_exchange(
        State::Undecided as u8,
        choice as u8,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => {
            // Only the thread whose choice stands says why, so the line appears once.
            note.emit();
            choice
        }
        Err(winner) => State::from_byte(winner),
    }
}

/// What this process should use: the environment override, else the automatic choice; with the
/// line to print on stderr (empty if none) when the override was not taken as written.
fn choose() -> (State, Line) {
    let (requested, note) = crate::env::read_mode();
    let mode = match requested {
        RequestedMode::Arena => State::Arena,
        RequestedMode::System => State::System,
        RequestedMode::Annotate => State::Annotate,
        RequestedMode::Auto if crate::valgrind::running_on_valgrind() => State::System,
        RequestedMode::Auto => State::Arena,
    };
    (mode, note)
}
