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
//! `libc::getenv`, which does not allocate; any letter case, surrounding whitespace ignored). An
//! unknown value is echoed in one line on stderr and `auto` is used; `annotate` where this build
//! has no client requests (the feature is off, or the target is not x86_64/aarch64 Linux) says so
//! in one line and the arena is used.

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
    let (requested, note) = env_override();
    let mode = match requested {
        Requested::Arena => ARENA,
        Requested::System => SYSTEM,
        Requested::Annotate => ANNOTATE,
        Requested::Auto if crate::valgrind::running_on_valgrind() => SYSTEM,
        Requested::Auto => ARENA,
    };
    (mode, note)
}

/// What `SMALLARENA_MODE` asks for (after [`parse`]; an unknown value counts as `Auto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Requested {
    /// Unset, empty, `auto`, or not understood: the automatic choice.
    Auto,
    /// `arena`.
    Arena,
    /// `system`.
    System,
    /// `annotate`.
    Annotate,
}

/// Reads `SMALLARENA_MODE` (with `libc::getenv`, which does not allocate) and parses it; an
/// unknown value, or `annotate` where it is unavailable, comes with the warning to print.
fn env_override() -> (Requested, Line) {
    #[cfg(miri)]
    {
        (Requested::Auto, Line::new())
    }
    #[cfg(not(miri))]
    {
        // SAFETY: the name is a NUL-terminated literal; getenv does not allocate, and the value it
        // returns is only read here, before any other code of ours could change the environment.
        let v = unsafe { libc::getenv(c"SMALLARENA_MODE".as_ptr()) };
        if v.is_null() {
            return (Requested::Auto, Line::new());
        }
        // SAFETY: getenv returned a non-null pointer to a NUL-terminated string, which stays valid
        // while it is parsed and copied below.
        let bytes = unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes();
        interpret(bytes, crate::valgrind::ANNOTATE_SUPPORTED)
    }
}

/// The decision for a `SMALLARENA_MODE` value (pure, for the tests): an unknown value means auto,
/// with a warning echoing it; `annotate` where client requests are unsupported means arena, with
/// a warning saying so.
fn interpret(value: &[u8], annotate_supported: bool) -> (Requested, Line) {
    match parse(value) {
        Some(Requested::Annotate) if !annotate_supported => {
            let why = if cfg!(feature = "valgrind") {
                ANNOTATE_WITHOUT_TARGET
            } else {
                ANNOTATE_WITHOUT_FEATURE
            };
            let mut line = Line::new();
            line.push(why);
            (Requested::Arena, line)
        }
        Some(r) => (r, Line::new()),
        None => (Requested::Auto, unknown_value_warning(value)),
    }
}

/// Parses a `SMALLARENA_MODE` value: surrounding ASCII whitespace ignored, letters in any case;
/// empty means auto. `None` for a value that is none of `arena`, `system`, `annotate`, `auto`.
fn parse(value: &[u8]) -> Option<Requested> {
    let v = value.trim_ascii();
    if v.is_empty() || v.eq_ignore_ascii_case(b"auto") {
        Some(Requested::Auto)
    } else if v.eq_ignore_ascii_case(b"arena") {
        Some(Requested::Arena)
    } else if v.eq_ignore_ascii_case(b"system") {
        Some(Requested::System)
    } else if v.eq_ignore_ascii_case(b"annotate") {
        Some(Requested::Annotate)
    } else {
        None
    }
}

/// The line printed when `annotate` is unavailable because the `valgrind` feature is off.
const ANNOTATE_WITHOUT_FEATURE: &[u8] = b"smallarena: SMALLARENA_MODE=annotate is unavailable: \
built without the `valgrind` feature (no Valgrind client requests); using arena\n";
/// The line printed when `annotate` is unavailable because the target has no client requests.
const ANNOTATE_WITHOUT_TARGET: &[u8] = b"smallarena: SMALLARENA_MODE=annotate is unavailable: \
Valgrind client requests are supported only on x86_64 and aarch64 Linux; using arena\n";

/// At most this many bytes of an unknown value are echoed; a longer value ends in `...`.
const ECHO_MAX: usize = 40;
/// Room for the longest warning: the fixed text, four bytes per echoed byte (`\xNN`) and `...`.
const LINE_CAP: usize = UNKNOWN_HEAD.len() + 4 * ECHO_MAX + b"...".len() + UNKNOWN_TAIL.len();
/// Before the echoed value.
const UNKNOWN_HEAD: &[u8] = b"smallarena: unknown SMALLARENA_MODE value \"";
/// After the echoed value.
const UNKNOWN_TAIL: &[u8] = b"\"; accepted: arena, system, annotate, auto; using auto\n";

/// A line of text for stderr in a fixed stack buffer (empty: nothing to say): formatting it never
/// allocates, and never panics (bytes past the capacity are dropped).
#[derive(Debug)]
struct Line {
    /// The bytes; the first `len` are the line.
    buf: [u8; LINE_CAP],
    /// How many bytes of `buf` are used (never more than `LINE_CAP`).
    len: usize,
}

impl Line {
    /// An empty line.
    fn new() -> Line {
        Line {
            buf: [0; LINE_CAP],
            len: 0,
        }
    }

    /// Appends `bytes`, dropping whatever does not fit.
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    /// The line's bytes.
    fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&self.buf)
    }

    /// Writes the line to stderr with one `write(2)`, no allocation; errors are ignored. An empty
    /// line writes nothing.
    fn emit(&self) {
        let msg = self.as_bytes();
        if msg.is_empty() {
            return;
        }
        #[cfg(not(miri))]
        // SAFETY: `msg` is a live byte slice of `msg.len()` bytes; write(2) only reads it.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
        }
    }
}

/// The warning for an unknown value: the value (trimmed as [`parse`] trims it) in quotes, its
/// first [`ECHO_MAX`] bytes only, followed by `...` if longer; bytes other than printable ASCII,
/// and `"` and `\`, as `\xNN`, so the warning stays one line whatever the value holds.
fn unknown_value_warning(value: &[u8]) -> Line {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v = value.trim_ascii();
    let mut line = Line::new();
    line.push(UNKNOWN_HEAD);
    for &b in v.iter().take(ECHO_MAX) {
        if (b.is_ascii_graphic() && b != b'"' && b != b'\\') || b == b' ' {
            line.push(&[b]);
        } else {
            line.push(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        }
    }
    if v.len() > ECHO_MAX {
        line.push(b"...");
    }
    line.push(UNKNOWN_TAIL);
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(note: &Line) -> &str {
        core::str::from_utf8(note.as_bytes()).unwrap()
    }

    #[test]
    fn values_are_case_insensitive_and_trimmed() {
        for (value, want) in [
            ("arena", Requested::Arena),
            ("ARENA", Requested::Arena),
            (" Annotate ", Requested::Annotate),
            ("\tSystem\n", Requested::System),
            ("sYsTeM", Requested::System),
            ("auto", Requested::Auto),
            (" AUTO", Requested::Auto),
            ("", Requested::Auto),
            ("   ", Requested::Auto),
        ] {
            assert_eq!(parse(value.as_bytes()), Some(want), "{value:?}");
            let (got, note) = interpret(value.as_bytes(), true);
            assert_eq!(got, want, "{value:?}");
            assert!(note.as_bytes().is_empty(), "{value:?}");
        }
        for value in [
            "fast",
            "arenas",
            "a rena",
            "sys",
            "annotate!",
            "\u{130}arena",
        ] {
            assert_eq!(parse(value.as_bytes()), None, "{value:?}");
        }
    }

    #[test]
    fn an_unknown_value_is_echoed_in_one_line() {
        let (got, note) = interpret(b" foo ", true);
        assert_eq!(got, Requested::Auto);
        assert_eq!(
            text(&note),
            "smallarena: unknown SMALLARENA_MODE value \"foo\"; accepted: arena, system, \
             annotate, auto; using auto\n"
        );
    }

    #[test]
    fn an_unprintable_value_is_escaped() {
        let (_, note) = interpret("a\"b\\c\nd é".as_bytes(), true);
        assert!(
            text(&note).starts_with(
                "smallarena: unknown SMALLARENA_MODE value \"a\\x22b\\x5cc\\x0ad \\xc3\\xa9\";"
            ),
            "{}",
            text(&note)
        );
        assert_eq!(text(&note).matches('\n').count(), 1);
    }

    #[test]
    fn a_long_value_is_truncated() {
        let long = [b'x'; 1000];
        let (_, note) = interpret(&long, true);
        let want = format!(
            "smallarena: unknown SMALLARENA_MODE value \"{}...\"; accepted: arena, system, \
             annotate, auto; using auto\n",
            "x".repeat(ECHO_MAX)
        );
        assert_eq!(text(&note), want);
        // Exactly ECHO_MAX bytes: no ellipsis.
        let (_, note) = interpret(&long[..ECHO_MAX], true);
        assert!(!text(&note).contains("..."));
        // The worst case, every byte escaped, still fits with its ending.
        let worst = [0xffu8; 1000];
        let (_, note) = interpret(&worst, true);
        assert!(
            text(&note).ends_with("...\"; accepted: arena, system, annotate, auto; using auto\n")
        );
    }

    #[test]
    fn annotate_where_unsupported_says_so_and_uses_the_arena() {
        let (got, note) = interpret(b"Annotate", false);
        assert_eq!(got, Requested::Arena);
        let t = text(&note);
        assert!(t.contains("annotate is unavailable"), "{t}");
        assert!(t.ends_with("using arena\n"), "{t}");
        assert_eq!(t.matches('\n').count(), 1);
        // Supported: taken as written.
        assert_eq!(interpret(b"annotate", true).0, Requested::Annotate);
    }

    #[test]
    fn a_line_never_overflows() {
        let mut line = Line::new();
        for _ in 0..100 {
            line.push(b"0123456789");
        }
        assert_eq!(line.as_bytes().len(), LINE_CAP);
    }
}
