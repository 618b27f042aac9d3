//! Which allocator serves small requests in this process: decided once, never changed.
//!
//! The decision is made on the first small allocation, before any block is handed out, and
//! published with a compare-and-swap so that threads racing to allocate first all agree. Every
//! free must reach the allocator that made its block, so the mode never changes afterwards.
//!
//! The automatic choice (`auto`, the default) is `System` under Valgrind, detected with a client
//! request (see [`crate::valgrind`]), so that memcheck sees every block with exact stack traces, as
//! `PYTHONMALLOC=malloc` does for CPython; natively it is `Arena`. Without the `valgrind` cargo
//! feature there is no detection and `auto` is always `Arena`.
//!
//! `SMALLARENA_MODE=arena|system|annotate|auto` overrides the automatic choice (read with
//! `libc::getenv`, which does not allocate); an unknown value is reported with one line on stderr
//! and `auto` is used.

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
    let choice = choose();
    match MODE.compare_exchange(UNDECIDED, choice, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => choice,
        Err(winner) => winner,
    }
}

/// What this process should use: the environment override, else the automatic choice.
fn choose() -> u8 {
    match env_override() {
        Some(m) => m,
        None if crate::valgrind::running_on_valgrind() => SYSTEM,
        None => ARENA,
    }
}

fn env_override() -> Option<u8> {
    #[cfg(miri)]
    {
        None
    }
    #[cfg(not(miri))]
    {
        // SAFETY: the name is a NUL-terminated literal; getenv does not allocate, and the value it
        // returns is only read here, before any other code of ours could change the environment.
        let v = unsafe { libc::getenv(c"SMALLARENA_MODE".as_ptr()) };
        if v.is_null() {
            return None;
        }
        // SAFETY: getenv returned a NUL-terminated string.
        let bytes = unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes();
        match bytes {
            b"arena" => Some(ARENA),
            b"system" => Some(SYSTEM),
            b"annotate" => Some(ANNOTATE),
            b"" | b"auto" => None,
            _ => {
                let msg: &[u8] = b"smallarena: unknown SMALLARENA_MODE value; accepted values are arena, system, annotate, auto. Using auto.\n";
                // SAFETY: writes a static buffer to stderr; no allocation.
                unsafe {
                    libc::write(2, msg.as_ptr().cast(), msg.len());
                }
                None
            }
        }
    }
}
