//! Every `SMALLARENA_*` environment variable, read in this one place.
//!
//! Variables are read with `libc::getenv`, which does not allocate, each once per process by the
//! code that needs it (the mode on the first allocation, `SMALLARENA_STATS` in the start-up
//! constructor). Values are parsed by the pure functions below (no allocation, unit-tested under
//! Miri), and a value that is not understood is echoed on stderr in one line, with what is
//! accepted and what is used instead; the warning is written once, by the one reader of the
//! variable, with one `write(2)` from a stack buffer ([`Line`]).
//!
//! | Variable | Values | Default |
//! |----------|--------|---------|
//! | `SMALLARENA_MODE` | `auto`, `arena`, `system`, `annotate` (any case) | `auto` |
//! | `SMALLARENA_STATS` | `0`, `1` (a table), `json` (one JSON object) | `0` |
//! | `SMALLARENA_QUARANTINE_MB` | a whole number of MiB (annotate mode's quarantine) | `20` |
//! | `SMALLARENA_PURGE_DELAY_MS` | a whole number of ms, `-1` or `never` (see [`crate::purge`]) | `1000` |
//! | `SMALLARENA_FORK` | `reuse`, `share` (the fork policy, see `crate::fork`) | `reuse` |
//! | `SMALLARENA_PROFILE` | a file path: the heap profile written at exit | unset |
//! | `SMALLARENA_PROFILE_RATE` | mean bytes between samples (a whole number, at least 1) | `524288` |
//! | `SMALLARENA_LEAKS` | `0`, `1` (the leak report on stderr at exit) | `0` |
//!
//! **Adding a variable**: add it to [`VARIABLES`] (the README table is checked against it by a
//! unit test), write a `parse_*` function returning the value and a warning [`Line`] built with
//! [`unknown_value`], and a `read_*` function calling [`var`]; document it in the README's
//! "Environment variables" table.

/// Every variable smallarena reads, with its default: `(name, default)`.
#[cfg_attr(not(test), allow(dead_code))] // Read by the README check.
pub(crate) const VARIABLES: &[(&str, &str)] = &[
    ("SMALLARENA_MODE", "auto"),
    ("SMALLARENA_STATS", "0"),
    ("SMALLARENA_QUARANTINE_MB", "20"),
    ("SMALLARENA_PURGE_DELAY_MS", "1000"),
    ("SMALLARENA_FORK", "reuse"),
    ("SMALLARENA_PROFILE", "unset"),
    ("SMALLARENA_PROFILE_RATE", "524288"),
    ("SMALLARENA_LEAKS", "0"),
];

/// The value of the environment variable `name`, or `None` if it is unset (always `None` under
/// Miri, which has no C environment). Does not allocate.
#[cfg_attr(miri, allow(unused_variables))]
fn var(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    #[cfg(miri)]
    {
        None
    }
    #[cfg(not(miri))]
    {
        // SAFETY: `name` is NUL-terminated; getenv does not allocate. The value is read at once
        // by our caller, before any code of ours could change the environment.
        let v = unsafe { libc::getenv(name.as_ptr()) };
        if v.is_null() {
            return None;
        }
        // SAFETY: getenv returned a non-null pointer to a NUL-terminated string, which stays
        // valid until the environment is modified (the program's business, not ours).
        Some(unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes())
    }
}

// ---------------------------------------------------------------------------------------------
// SMALLARENA_MODE
// ---------------------------------------------------------------------------------------------

/// What `SMALLARENA_MODE` asks for (after [`parse_mode`]; an unknown value counts as `Auto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestedMode {
    /// Unset, empty, `auto`, or not understood: the automatic choice.
    Auto,
    /// `arena`.
    Arena,
    /// `system`.
    System,
    /// `annotate`.
    Annotate,
}

/// Reads and parses `SMALLARENA_MODE`; the warning to print comes with it (empty if none).
/// Called once per process, by the thread that decides the mode.
pub(crate) fn read_mode() -> (RequestedMode, Line) {
    match var(c"SMALLARENA_MODE") {
        None => (RequestedMode::Auto, Line::new()),
        Some(v) => parse_mode(v, crate::valgrind::ANNOTATE_SUPPORTED),
    }
}

/// The decision for a `SMALLARENA_MODE` value (pure, for the tests): an unknown value means auto,
/// with a warning echoing it; `annotate` where client requests are unsupported means arena, with
/// a warning saying so.
pub(crate) fn parse_mode(value: &[u8], annotate_supported: bool) -> (RequestedMode, Line) {
    match mode_word(value) {
        Some(RequestedMode::Annotate) if !annotate_supported => {
            let why = if cfg!(feature = "valgrind") {
                ANNOTATE_WITHOUT_TARGET
            } else {
                ANNOTATE_WITHOUT_FEATURE
            };
            let mut line = Line::new();
            line.push(why);
            (RequestedMode::Arena, line)
        }
        Some(r) => (r, Line::new()),
        None => (
            RequestedMode::Auto,
            unknown_value(
                b"SMALLARENA_MODE",
                value,
                b"arena, system, annotate, auto",
                b"auto",
            ),
        ),
    }
}

/// Parses a `SMALLARENA_MODE` value: surrounding ASCII whitespace ignored, letters in any case;
/// empty means auto. `None` for a value that is none of `arena`, `system`, `annotate`, `auto`.
fn mode_word(value: &[u8]) -> Option<RequestedMode> {
    let v = value.trim_ascii();
    if v.is_empty() || v.eq_ignore_ascii_case(b"auto") {
        Some(RequestedMode::Auto)
    } else if v.eq_ignore_ascii_case(b"arena") {
        Some(RequestedMode::Arena)
    } else if v.eq_ignore_ascii_case(b"system") {
        Some(RequestedMode::System)
    } else if v.eq_ignore_ascii_case(b"annotate") {
        Some(RequestedMode::Annotate)
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

// ---------------------------------------------------------------------------------------------
// SMALLARENA_QUARANTINE_MB
// ---------------------------------------------------------------------------------------------

/// The annotate-mode quarantine's default budget in MiB (see [`crate::tunables`]).
pub(crate) use crate::tunables::QUARANTINE_DEFAULT_MB;

/// Reads and parses `SMALLARENA_QUARANTINE_MB`: the budget in MiB, and the warning to print
/// (empty if none). Called once per process, by the first annotated free.
pub(crate) fn read_quarantine_mb() -> (usize, Line) {
    match var(c"SMALLARENA_QUARANTINE_MB") {
        None => (QUARANTINE_DEFAULT_MB, Line::new()),
        Some(v) => parse_quarantine_mb(v),
    }
}

/// The decision for a `SMALLARENA_QUARANTINE_MB` value (pure): a whole number of MiB, ASCII
/// whitespace around it ignored, saturating at `usize::MAX` (an unbounded quarantine, as asked);
/// empty means the default; anything else means the default, with a warning echoing it.
pub(crate) fn parse_quarantine_mb(value: &[u8]) -> (usize, Line) {
    let v = value.trim_ascii();
    if v.is_empty() {
        return (QUARANTINE_DEFAULT_MB, Line::new());
    }
    if !v.iter().all(u8::is_ascii_digit) {
        let line = unknown_value(
            b"SMALLARENA_QUARANTINE_MB",
            value,
            b"a whole number of MiB, 0 to disable",
            b"20",
        );
        return (QUARANTINE_DEFAULT_MB, line);
    }
    let mb = v.iter().fold(0usize, |n, &d| {
        n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
    });
    (mb, Line::new())
}

// ---------------------------------------------------------------------------------------------
// SMALLARENA_PURGE_DELAY_MS
// ---------------------------------------------------------------------------------------------

/// The purge delay's default in milliseconds (see [`crate::tunables`]).
pub(crate) use crate::tunables::PURGE_DELAY_DEFAULT_MS;

/// Reads and parses `SMALLARENA_PURGE_DELAY_MS`: the delay in milliseconds (`None`: never purge),
/// and the warning to print (empty if none). Called once per process, under the arena lock, by
/// the first slow path that gives a pool back to its arena.
#[cfg_attr(any(miri, loom), allow(dead_code))]
pub(crate) fn read_purge_delay_ms() -> (Option<usize>, Line) {
    match var(c"SMALLARENA_PURGE_DELAY_MS") {
        None => (Some(PURGE_DELAY_DEFAULT_MS), Line::new()),
        Some(v) => parse_purge_delay_ms(v),
    }
}

/// The decision for a `SMALLARENA_PURGE_DELAY_MS` value (pure): a whole number of milliseconds
/// (ASCII whitespace around it ignored, saturating at `usize::MAX`), `0` meaning at once; `-1` or
/// `never` (any case) meaning never (`None`), as mimalloc's `MIMALLOC_PURGE_DELAY` and jemalloc's
/// `dirty_decay_ms`; empty means the default; anything else means the default, with a warning
/// echoing it.
pub(crate) fn parse_purge_delay_ms(value: &[u8]) -> (Option<usize>, Line) {
    let v = value.trim_ascii();
    if v.is_empty() {
        return (Some(PURGE_DELAY_DEFAULT_MS), Line::new());
    }
    if v == b"-1" || v.eq_ignore_ascii_case(b"never") {
        return (None, Line::new());
    }
    if !v.iter().all(u8::is_ascii_digit) {
        let line = unknown_value(
            b"SMALLARENA_PURGE_DELAY_MS",
            value,
            b"a whole number of milliseconds, -1 or never",
            b"1000",
        );
        return (Some(PURGE_DELAY_DEFAULT_MS), line);
    }
    let ms = v.iter().fold(0usize, |n, &d| {
        n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
    });
    (Some(ms), Line::new())
}

// ---------------------------------------------------------------------------------------------
// SMALLARENA_STATS
// ---------------------------------------------------------------------------------------------

/// What `SMALLARENA_STATS` asks for: statistics printed on stderr at exit, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatsAtExit {
    /// Unset, empty, `0`, `false`, `no`, `off`, or not understood: nothing printed.
    Off,
    /// `1`, `true`, `yes`, `on`, `text`: the statistics table.
    Text,
    /// `json`: one JSON object on one line.
    Json,
}

/// Reads and parses `SMALLARENA_STATS`; the warning to print comes with it (empty if none).
/// Called once per process, from the start-up constructor.
#[cfg_attr(any(miri, loom), allow(dead_code))]
pub(crate) fn read_stats() -> (StatsAtExit, Line) {
    match var(c"SMALLARENA_STATS") {
        None => (StatsAtExit::Off, Line::new()),
        Some(v) => parse_stats(v),
    }
}

/// The decision for a `SMALLARENA_STATS` value (pure): surrounding ASCII whitespace ignored,
/// letters in any case; an unknown value prints nothing, with a warning echoing it.
pub(crate) fn parse_stats(value: &[u8]) -> (StatsAtExit, Line) {
    let v = value.trim_ascii();
    let is = |words: &[&[u8]]| words.iter().any(|w| v.eq_ignore_ascii_case(w));
    if is(&[b"", b"0", b"false", b"no", b"off"]) {
        (StatsAtExit::Off, Line::new())
    } else if is(&[b"1", b"true", b"yes", b"on", b"text"]) {
        (StatsAtExit::Text, Line::new())
    } else if is(&[b"json"]) {
        (StatsAtExit::Json, Line::new())
    } else {
        (
            StatsAtExit::Off,
            unknown_value(b"SMALLARENA_STATS", value, b"0, 1, json", b"0"),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// SMALLARENA_FORK
// ---------------------------------------------------------------------------------------------

/// What `SMALLARENA_FORK` asks for (the fork policy of `crate::fork`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestedFork {
    /// Unset, empty, `reuse`, or not understood.
    Reuse,
    /// `share`.
    Share,
}

/// Reads and parses `SMALLARENA_FORK`; the warning to print comes with it (empty if none).
/// Called once per process, from the start-up constructor (or the first call that needs the
/// policy).
pub(crate) fn read_fork() -> (RequestedFork, Line) {
    match var(c"SMALLARENA_FORK") {
        None => (RequestedFork::Reuse, Line::new()),
        Some(v) => parse_fork(v),
    }
}

/// The decision for a `SMALLARENA_FORK` value (pure): `reuse` or `share`, surrounding ASCII
/// whitespace ignored, letters in any case; empty means the default (`reuse`); anything else
/// means `reuse`, with a warning echoing it.
pub(crate) fn parse_fork(value: &[u8]) -> (RequestedFork, Line) {
    let v = value.trim_ascii();
    if v.is_empty() || v.eq_ignore_ascii_case(b"reuse") {
        (RequestedFork::Reuse, Line::new())
    } else if v.eq_ignore_ascii_case(b"share") {
        (RequestedFork::Share, Line::new())
    } else {
        (
            RequestedFork::Reuse,
            unknown_value(b"SMALLARENA_FORK", value, b"reuse, share", b"reuse"),
        )
    }
}

// The profiler: SMALLARENA_PROFILE, SMALLARENA_PROFILE_RATE, SMALLARENA_LEAKS
// ---------------------------------------------------------------------------------------------

/// The profiler's default mean sampling interval in bytes (`crate::profile::DEFAULT_RATE`).
pub(crate) const PROFILE_RATE_DEFAULT: usize = 512 * 1024;

/// Reads `SMALLARENA_PROFILE`: the path to write the profile to at exit, if set and not empty.
/// Called once per process, from the start-up constructor.
#[cfg_attr(not(feature = "profile"), allow(dead_code))]
pub(crate) fn read_profile_path() -> Option<&'static [u8]> {
    var(c"SMALLARENA_PROFILE").filter(|v| !v.is_empty())
}

/// Reads and parses `SMALLARENA_PROFILE_RATE`: the mean bytes between samples, and the warning to
/// print (empty if none). Called once per process, from the start-up constructor.
#[cfg_attr(not(feature = "profile"), allow(dead_code))]
pub(crate) fn read_profile_rate() -> (usize, Line) {
    match var(c"SMALLARENA_PROFILE_RATE") {
        None => (PROFILE_RATE_DEFAULT, Line::new()),
        Some(v) => parse_profile_rate(v),
    }
}

/// The decision for a `SMALLARENA_PROFILE_RATE` value (pure): a whole number of bytes, at least 1,
/// ASCII whitespace around it ignored, saturating; empty means the default; anything else means
/// the default, with a warning echoing it.
pub(crate) fn parse_profile_rate(value: &[u8]) -> (usize, Line) {
    let v = value.trim_ascii();
    if v.is_empty() {
        return (PROFILE_RATE_DEFAULT, Line::new());
    }
    let n = v.iter().all(u8::is_ascii_digit).then(|| {
        v.iter().fold(0usize, |n, &d| {
            n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
        })
    });
    match n {
        Some(n) if n >= 1 => (n, Line::new()),
        _ => (
            PROFILE_RATE_DEFAULT,
            unknown_value(
                b"SMALLARENA_PROFILE_RATE",
                value,
                b"a whole number of bytes, at least 1",
                b"524288",
            ),
        ),
    }
}

/// Reads and parses `SMALLARENA_LEAKS`; the warning to print comes with it (empty if none).
/// Called once per process, from the start-up constructor.
#[cfg_attr(not(feature = "profile"), allow(dead_code))]
pub(crate) fn read_leaks() -> (bool, Line) {
    match var(c"SMALLARENA_LEAKS") {
        None => (false, Line::new()),
        Some(v) => parse_leaks(v),
    }
}

/// The decision for a `SMALLARENA_LEAKS` value (pure): the words of `SMALLARENA_STATS` for on
/// and off; an unknown value means off, with a warning echoing it.
pub(crate) fn parse_leaks(value: &[u8]) -> (bool, Line) {
    let v = value.trim_ascii();
    let is = |words: &[&[u8]]| words.iter().any(|w| v.eq_ignore_ascii_case(w));
    if is(&[b"", b"0", b"false", b"no", b"off"]) {
        (false, Line::new())
    } else if is(&[b"1", b"true", b"yes", b"on"]) {
        (true, Line::new())
    } else {
        (
            false,
            unknown_value(b"SMALLARENA_LEAKS", value, b"0, 1", b"0"),
        )
    }
}

/// Without the `profile` feature: one line on stderr if `SMALLARENA_PROFILE` or
/// `SMALLARENA_LEAKS` asks for the profiler, which this build does not have. Called once, from
/// the start-up constructor.
#[cfg(not(feature = "profile"))]
#[cfg_attr(any(miri, loom), allow(dead_code))]
pub(crate) fn warn_if_profile_asked() {
    if read_profile_path().is_some() || read_leaks().0 {
        let mut line = Line::new();
        line.push(PROFILE_WITHOUT_FEATURE);
        line.emit();
    }
}

/// The line printed when the profiler is asked for in a build without it.
#[cfg_attr(feature = "profile", allow(dead_code))]
const PROFILE_WITHOUT_FEATURE: &[u8] = b"smallarena: SMALLARENA_PROFILE and SMALLARENA_LEAKS need \
the `profile` cargo feature, which this build lacks; not profiling\n";

// ---------------------------------------------------------------------------------------------
// Warnings
// ---------------------------------------------------------------------------------------------

/// At most this many bytes of an unknown value are echoed; a longer value ends in `...`.
pub(crate) const ECHO_MAX: usize = 40;
/// Room for the longest line: up to 160 bytes of fixed text (the variable's name, what is
/// accepted, what is used), four bytes per echoed byte (`\xNN`) and `...`.
const LINE_CAP: usize = 160 + 4 * ECHO_MAX + b"...".len();

/// A line of text for stderr in a fixed stack buffer (empty: nothing to say): formatting it never
/// allocates, and never panics (bytes past the capacity are dropped).
#[derive(Debug)]
pub(crate) struct Line {
    /// The bytes; the first `len` are the line.
    buf: [u8; LINE_CAP],
    /// How many bytes of `buf` are used (never more than `LINE_CAP`).
    len: usize,
}

impl Line {
    /// An empty line.
    pub(crate) fn new() -> Line {
        Line {
            buf: [0; LINE_CAP],
            len: 0,
        }
    }

    /// A line of fixed text.
    #[cfg_attr(not(feature = "profile"), allow(dead_code))]
    pub(crate) fn message(text: &[u8]) -> Line {
        let mut line = Line::new();
        line.push(text);
        line
    }

    /// The warning for a value of `name` longer than `max` bytes, which is ignored.
    #[cfg_attr(not(feature = "profile"), allow(dead_code))]
    pub(crate) fn too_long(name: &[u8], max: usize) -> Line {
        let mut line = Line::new();
        line.push(b"smallarena: ");
        line.push(name);
        line.push(b" is longer than ");
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = max;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        line.push(digits.get(i..).unwrap_or(&[]));
        line.push(b" bytes; ignored\n");
        line
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
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&self.buf)
    }

    /// Writes the line to stderr with one `write(2)`, no allocation; errors are ignored. An empty
    /// line writes nothing.
    pub(crate) fn emit(&self) {
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

/// The warning for a value of `name` that is not understood:
/// `smallarena: unknown NAME value "VALUE"; accepted: ACCEPTED; using USING`. The value is
/// trimmed of surrounding ASCII whitespace, its first [`ECHO_MAX`] bytes only, followed by `...`
/// if longer; bytes other than printable ASCII, and `"` and `\`, as `\xNN`, so the warning stays
/// one line whatever the value holds.
pub(crate) fn unknown_value(name: &[u8], value: &[u8], accepted: &[u8], using: &[u8]) -> Line {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v = value.trim_ascii();
    let mut line = Line::new();
    line.push(b"smallarena: unknown ");
    line.push(name);
    line.push(b" value \"");
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
    line.push(b"\"; accepted: ");
    line.push(accepted);
    line.push(b"; using ");
    line.push(using);
    line.push(b"\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(note: &Line) -> &str {
        core::str::from_utf8(note.as_bytes()).unwrap()
    }

    #[test]
    fn mode_values_are_case_insensitive_and_trimmed() {
        for (value, want) in [
            ("arena", RequestedMode::Arena),
            ("ARENA", RequestedMode::Arena),
            (" Annotate ", RequestedMode::Annotate),
            ("\tSystem\n", RequestedMode::System),
            ("sYsTeM", RequestedMode::System),
            ("auto", RequestedMode::Auto),
            (" AUTO", RequestedMode::Auto),
            ("", RequestedMode::Auto),
            ("   ", RequestedMode::Auto),
        ] {
            assert_eq!(mode_word(value.as_bytes()), Some(want), "{value:?}");
            let (got, note) = parse_mode(value.as_bytes(), true);
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
            assert_eq!(mode_word(value.as_bytes()), None, "{value:?}");
        }
    }

    #[test]
    fn an_unknown_mode_is_echoed_in_one_line() {
        let (got, note) = parse_mode(b" foo ", true);
        assert_eq!(got, RequestedMode::Auto);
        assert_eq!(
            text(&note),
            "smallarena: unknown SMALLARENA_MODE value \"foo\"; accepted: arena, system, \
             annotate, auto; using auto\n"
        );
    }

    #[test]
    fn an_unprintable_value_is_escaped() {
        let (_, note) = parse_mode("a\"b\\c\nd é".as_bytes(), true);
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
        let (_, note) = parse_mode(&long, true);
        let want = format!(
            "smallarena: unknown SMALLARENA_MODE value \"{}...\"; accepted: arena, system, \
             annotate, auto; using auto\n",
            "x".repeat(ECHO_MAX)
        );
        assert_eq!(text(&note), want);
        // Exactly ECHO_MAX bytes: no ellipsis.
        let (_, note) = parse_mode(&long[..ECHO_MAX], true);
        assert!(!text(&note).contains("..."));
        // The worst case, every byte escaped, still fits with its ending, for every variable.
        let worst = [0xffu8; 1000];
        let (_, note) = parse_mode(&worst, true);
        assert!(
            text(&note).ends_with("...\"; accepted: arena, system, annotate, auto; using auto\n")
        );
        let (_, note) = parse_stats(&worst);
        assert!(text(&note).ends_with("...\"; accepted: 0, 1, json; using 0\n"));
    }

    #[test]
    fn annotate_where_unsupported_says_so_and_uses_the_arena() {
        let (got, note) = parse_mode(b"Annotate", false);
        assert_eq!(got, RequestedMode::Arena);
        let t = text(&note);
        assert!(t.contains("annotate is unavailable"), "{t}");
        assert!(t.ends_with("using arena\n"), "{t}");
        assert_eq!(t.matches('\n').count(), 1);
        // Supported: taken as written.
        assert_eq!(parse_mode(b"annotate", true).0, RequestedMode::Annotate);
    }

    #[test]
    fn stats_values() {
        for (value, want) in [
            ("", StatsAtExit::Off),
            ("0", StatsAtExit::Off),
            (" off ", StatsAtExit::Off),
            ("No", StatsAtExit::Off),
            ("FALSE", StatsAtExit::Off),
            ("1", StatsAtExit::Text),
            ("\t1\n", StatsAtExit::Text),
            ("yes", StatsAtExit::Text),
            ("On", StatsAtExit::Text),
            ("true", StatsAtExit::Text),
            ("text", StatsAtExit::Text),
            ("json", StatsAtExit::Json),
            (" JSON ", StatsAtExit::Json),
        ] {
            let (got, note) = parse_stats(value.as_bytes());
            assert_eq!(got, want, "{value:?}");
            assert!(note.as_bytes().is_empty(), "{value:?}");
        }
        for value in ["2", "jsonl", "yes please", "\u{1F4CA}"] {
            let (got, note) = parse_stats(value.as_bytes());
            assert_eq!(got, StatsAtExit::Off, "{value:?}");
            assert!(
                text(&note).starts_with("smallarena: unknown SMALLARENA_STATS value \""),
                "{}",
                text(&note)
            );
            assert!(text(&note).ends_with("\"; accepted: 0, 1, json; using 0\n"));
        }
        assert_eq!(
            text(&parse_stats(b"verbose").1),
            "smallarena: unknown SMALLARENA_STATS value \"verbose\"; accepted: 0, 1, json; \
             using 0\n"
        );
    }

    #[test]
    fn purge_delay_values() {
        for (value, want) in [
            ("", Some(PURGE_DELAY_DEFAULT_MS)),
            ("  ", Some(PURGE_DELAY_DEFAULT_MS)),
            ("0", Some(0)),
            (" 250\n", Some(250)),
            ("-1", None),
            ("never", None),
            (" NEVER ", None),
            ("99999999999999999999999999", Some(usize::MAX)),
        ] {
            let (got, note) = parse_purge_delay_ms(value.as_bytes());
            assert_eq!(got, want, "{value:?}");
            assert!(note.as_bytes().is_empty(), "{value:?}");
        }
        for value in ["-2", "10ms", "1.5", "off", "- 1"] {
            let (got, note) = parse_purge_delay_ms(value.as_bytes());
            assert_eq!(got, Some(PURGE_DELAY_DEFAULT_MS), "{value:?}");
            assert_eq!(
                text(&note),
                format!(
                    "smallarena: unknown SMALLARENA_PURGE_DELAY_MS value \"{value}\"; accepted: a \
                     whole number of milliseconds, -1 or never; using 1000\n"
                )
            );
        }
        // The default the warning names is the default used.
        assert_eq!(PURGE_DELAY_DEFAULT_MS, 1000);
    }

    #[test]
    fn fork_values() {
        use RequestedFork as ForkPolicy;
        for (value, want) in [
            ("", ForkPolicy::Reuse),
            ("reuse", ForkPolicy::Reuse),
            (" REUSE\n", ForkPolicy::Reuse),
            ("share", ForkPolicy::Share),
            ("\tShare ", ForkPolicy::Share),
        ] {
            let (got, note) = parse_fork(value.as_bytes());
            assert_eq!(got, want, "{value:?}");
            assert!(note.as_bytes().is_empty(), "{value:?}");
        }
        for value in ["shared", "copy", "1", "sh are"] {
            let (got, note) = parse_fork(value.as_bytes());
            assert_eq!(got, ForkPolicy::Reuse, "{value:?}");
            assert_eq!(text(&note).matches('\n').count(), 1);
        }
        assert_eq!(
            text(&parse_fork(b" Shared ").1),
            "smallarena: unknown SMALLARENA_FORK value \"Shared\"; accepted: reuse, share; \
             using reuse\n"
        );
    }

    #[test]
    fn profile_values() {
        for (value, want) in [
            ("", PROFILE_RATE_DEFAULT),
            ("1", 1),
            (" 4096\n", 4096),
            ("99999999999999999999999999", usize::MAX),
        ] {
            let (got, note) = parse_profile_rate(value.as_bytes());
            assert_eq!(got, want, "{value:?}");
            assert!(note.as_bytes().is_empty(), "{value:?}");
        }
        for value in ["0", "-1", "4k", "1e6", "0x100"] {
            let (got, note) = parse_profile_rate(value.as_bytes());
            assert_eq!(got, PROFILE_RATE_DEFAULT, "{value:?}");
            assert!(
                text(&note).starts_with("smallarena: unknown SMALLARENA_PROFILE_RATE value \""),
                "{}",
                text(&note)
            );
        }
        for (value, want) in [("", false), ("0", false), ("off", false), ("1", true), (" YES ", true)] {
            let (got, note) = parse_leaks(value.as_bytes());
            assert_eq!(got, want, "{value:?}");
            assert!(note.as_bytes().is_empty(), "{value:?}");
        }
        let (got, note) = parse_leaks(b"all");
        assert!(!got);
        assert_eq!(
            text(&note),
            "smallarena: unknown SMALLARENA_LEAKS value \"all\"; accepted: 0, 1; using 0\n"
        );
        assert_eq!(
            text(&Line::too_long(b"SMALLARENA_PROFILE", 4096)),
            "smallarena: SMALLARENA_PROFILE is longer than 4096 bytes; ignored\n"
        );
    }

    #[test]
    fn a_line_never_overflows() {
        let mut line = Line::new();
        for _ in 0..100 {
            line.push(b"0123456789");
        }
        assert_eq!(line.as_bytes().len(), LINE_CAP);
    }

    #[test]
    fn the_readme_documents_every_variable() {
        let readme = include_str!("../README.md");
        for (name, default) in VARIABLES {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{name}`")))
                .unwrap_or_else(|| panic!("no README table row for {name}"));
            assert!(
                row.contains(&format!("`{default}`")),
                "README row for {name} lacks its default `{default}`: {row}"
            );
        }
    }
}
