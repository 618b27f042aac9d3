//! `urlsplit` / `urlparse`: the one-pass split into component offsets.

use std::borrow::Cow;
use std::num::NonZeroUsize;

use crate::host::check_brackets;
use crate::result::Split;
use crate::scan::{find, rfind, word};
use crate::{Kind, UrlError};

/// A byte range `start..end` into a buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Span {
    fn at(pos: usize) -> Span {
        Span {
            start: pos,
            end: pos,
        }
    }
}

/// Where each component of a split lies in the cleaned buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Layout {
    /// The end of the scheme, which starts at 0 and is never empty (kept this small so that
    /// a result stays within a few vector moves). `None`: the URL has no scheme, the
    /// default scheme applies.
    pub(crate) scheme: Option<NonZeroUsize>,
    pub(crate) netloc: Span,
    pub(crate) path: Span,
    pub(crate) query: Span,
    pub(crate) fragment: Span,
}

/// `_WHATWG_C0_CONTROL_OR_SPACE`.
fn is_c0_or_space(c: u8) -> bool {
    c <= b' '
}

fn is_tab_crlf(c: u8) -> bool {
    matches!(c, b'\t' | b'\r' | b'\n')
}

/// CPython's `scheme.strip(C0_OR_SPACE)` followed by the removal of tab/CR/LF.
#[inline]
pub(crate) fn clean_scheme<K: Kind + ?Sized>(scheme: &K) -> Cow<'_, K> {
    let b = scheme.raw();
    if b.is_empty() {
        return Cow::Borrowed(scheme);
    }
    let start = b
        .iter()
        .position(|&c| !is_c0_or_space(c))
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| !is_c0_or_space(c))
        .map_or(start, |e| e + 1);
    let s = scheme.sub(start, end);
    if s.raw().iter().any(|&c| is_tab_crlf(c)) {
        Cow::Owned(s.without_tab_crlf())
    } else {
        Cow::Borrowed(s)
    }
}

// Byte classes for the one-pass split: the bits of [`CLASS`].

/// May appear in a scheme: ASCII letters and digits, `+`, `-`, `.`.
const SCHEME: u8 = 1;
/// An ASCII uppercase letter (a scheme holding one is lowercased).
const UPPER: u8 = 2;
/// `/`, `?`, `#`: the end of a netloc.
const NET_END: u8 = 4;
/// `[`, `]`: the netloc needs the bracket checks.
const BRACKET: u8 = 8;
/// Tab, CR, LF: removed anywhere before splitting.
const TAB_CRLF: u8 = 16;
/// Not ASCII: a text netloc needs the NFKC check.
const NON_ASCII: u8 = 32;
/// `?`: the start of the query.
const QUERY: u8 = 64;
/// `#`: the start of the fragment.
const HASH: u8 = 128;

/// The class bits of every byte value.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.' {
            t[c] |= SCHEME;
        }
        if b.is_ascii_uppercase() {
            t[c] |= UPPER;
        }
        if b >= 0x80 {
            t[c] |= NON_ASCII;
        }
        c += 1;
    }
    t[b'/' as usize] |= NET_END;
    t[b'?' as usize] |= NET_END | QUERY;
    t[b'#' as usize] |= NET_END | HASH;
    t[b'[' as usize] |= BRACKET;
    t[b']' as usize] |= BRACKET;
    t[b'\t' as usize] |= TAB_CRLF;
    t[b'\r' as usize] |= TAB_CRLF;
    t[b'\n' as usize] |= TAB_CRLF;
    t
};

#[inline(always)]
fn class(c: u8) -> u8 {
    CLASS[usize::from(c)]
}

// Word-at-a-time search: a `u64` holds eight bytes, and the masks below set the high bit of
// each byte that matches. A mask can also flag bytes *above* a true match (a borrow carries
// upward), never below one, so its lowest flagged byte is always a true match: that is the
// only byte these scans ever use. Past the end of the input, [`word`] pads with `a`, which no mask flags.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bytes equal to `c`.
#[inline(always)]
fn eq_mask(v: u64, c: u8) -> u64 {
    let x = v ^ (LO * u64::from(c));
    x.wrapping_sub(LO) & !x & HI
}

/// Bytes below 0x0E (tab, CR and LF are).
#[inline(always)]
fn below_0e_mask(v: u64) -> u64 {
    v.wrapping_sub(LO * 0x0E) & !v & HI
}

/// Index of the lowest flagged byte of a nonzero mask.
#[inline(always)]
fn lowest(mask: u64) -> usize {
    (mask.trailing_zeros() / 8) as usize
}

/// The end of the netloc that starts at `s` (the first `/`, `?` or `#`, or `b.len()`), and
/// class bits of the bytes before it: every `BRACKET`, `TAB_CRLF` and `NON_ASCII` bit among
/// them is set (the other bits are not needed for a netloc and may be missing).
#[inline(always)]
fn netloc_end(b: &[u8], s: usize) -> (usize, u8) {
    let n = b.len();
    let mut e = s;
    let mut seen = 0u8;
    while e < n {
        let v = word(&b[e..]);
        let end = eq_mask(v, b'/') | eq_mask(v, b'?') | eq_mask(v, b'#');
        // Brackets, tab/CR/LF and non-ASCII bytes need their class bits; plain host bytes
        // (the common case) contribute nothing.
        let look = eq_mask(v, b'[') | eq_mask(v, b']') | below_0e_mask(v) | (v & HI);
        let k = if end != 0 {
            lowest(end)
        } else {
            (n - e).min(8)
        };
        let below_k = if k >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * k)) - 1
        };
        if look & below_k != 0 {
            for &c in &b[e..e + k] {
                seen |= class(c);
            }
        }
        e += k;
        if end != 0 {
            break;
        }
    }
    (e, seen)
}

/// Whether a tab, CR or LF occurs in `b[j..]`.
#[inline(always)]
fn has_tab_crlf_from(b: &[u8], mut j: usize) -> bool {
    while j < b.len() {
        let m = below_0e_mask(word(&b[j..]));
        if m == 0 {
            j += 8;
            continue;
        }
        j += lowest(m);
        if class(b[j]) & TAB_CRLF != 0 {
            return true;
        }
        j += 1;
    }
    false
}

/// A [`Layout`] plus what the split learned on the way.
struct Found {
    layout: Layout,
    /// The scheme holds an uppercase letter.
    upper: bool,
    /// The netloc holds a byte that is not ASCII.
    non_ascii: bool,
}

/// The split proper, in one pass over `b` (stripped of leading C0 controls and spaces).
/// `None` when `b` holds a tab, CR or LF: CPython removes those first, so the caller splits a
/// copy without them. Validates brackets in the netloc.
///
/// Follows `urlsplit` step by step: the scheme is the run of scheme characters from the start
/// when a `:` ends it (the first `:` of the URL, as `url.find(':')`) and it starts with a letter;
/// after `//` the netloc runs to the first `/`, `?` or `#`; then, with fragments allowed, the
/// first `#` starts the fragment, and the first `?` before it the query.
fn layout_of(b: &[u8], allow_fragments: bool) -> Result<Option<Found>, UrlError> {
    let n = b.len();
    let mut i = 0;
    let mut seen = 0u8;
    while i < n && class(b[i]) & SCHEME != 0 {
        seen |= class(b[i]);
        i += 1;
    }
    let mut pos = 0;
    let mut scheme = None;
    match b.get(i) {
        Some(b':') if i > 0 && b[0].is_ascii_alphabetic() => {
            scheme = NonZeroUsize::new(i);
            pos = i + 1;
        }
        Some(&c) if class(c) & TAB_CRLF != 0 => return Ok(None),
        _ => {}
    }
    let upper = scheme.is_some() && seen & UPPER != 0;

    let mut netloc = Span::at(pos);
    let mut non_ascii = false;
    if b.get(pos) == Some(&b'/') && b.get(pos + 1) == Some(&b'/') {
        let s = pos + 2;
        let (e, seen) = netloc_end(b, s);
        if seen & TAB_CRLF != 0 {
            return Ok(None);
        }
        netloc = Span { start: s, end: e };
        if seen & BRACKET != 0 {
            check_brackets(&b[s..e])?;
        }
        non_ascii = seen & NON_ASCII != 0;
        pos = e;
    }

    // The first `?` and (with fragments allowed) the first `#` after the netloc.
    let mut question = n;
    let mut hash = n;
    let mut j = pos;
    while j < n {
        let v = word(&b[j..]);
        let m = eq_mask(v, b'?') | eq_mask(v, b'#') | below_0e_mask(v);
        if m == 0 {
            j += 8;
            continue;
        }
        j += lowest(m);
        let c = class(b[j]);
        if c & TAB_CRLF != 0 {
            return Ok(None);
        }
        if c & QUERY != 0 && question == n {
            question = j;
        }
        if c & HASH != 0 && allow_fragments {
            hash = j;
            break;
        }
        j += 1;
    }
    if hash < n && has_tab_crlf_from(b, hash + 1) {
        return Ok(None);
    }
    let fragment = if hash < n {
        Span {
            start: hash + 1,
            end: n,
        }
    } else {
        Span::at(n)
    };
    let (path, query) = if question < hash {
        (
            Span {
                start: pos,
                end: question,
            },
            Span {
                start: question + 1,
                end: hash,
            },
        )
    } else {
        (
            Span {
                start: pos,
                end: hash,
            },
            Span::at(hash),
        )
    };
    Ok(Some(Found {
        layout: Layout {
            scheme,
            netloc,
            path,
            query,
            fragment,
        },
        upper,
        non_ascii,
    }))
}

/// Splits with CPython's `urlsplit` rules; shared by the free functions and the cache.
pub(crate) fn split_impl<'a, K: Kind + ?Sized>(
    url: &'a K,
    default_scheme: &'a K,
    allow_fragments: bool,
) -> Result<Split<'a, K>, UrlError> {
    let b = url.raw();
    let start = match b.first() {
        Some(&c) if !is_c0_or_space(c) => 0,
        _ => b
            .iter()
            .position(|&c| !is_c0_or_space(c))
            .unwrap_or(b.len()),
    };
    let mut buf: Cow<'a, K> = Cow::Borrowed(url.sub(start, b.len()));
    let found = loop {
        if let Some(found) = layout_of(buf.raw(), allow_fragments)? {
            break found;
        }
        // Tab, CR or LF: split a copy without them (which has none, so the loop ends).
        buf = Cow::Owned(buf.without_tab_crlf());
    };
    let layout = found.layout;
    if let (Some(end), true) = (layout.scheme, found.upper) {
        K::lowercase_prefix(buf.to_mut(), end.get());
    }
    if found.non_ascii {
        K::check_nfkc(buf.sub(layout.netloc.start, layout.netloc.end))?;
    }
    let default_scheme = if layout.scheme.is_none() {
        clean_scheme(default_scheme)
    } else {
        Cow::Borrowed(K::EMPTY)
    };
    Ok(Split::fresh(buf, default_scheme, layout))
}

/// CPython's `_splitparams` applied when `scheme in uses_params and ';' in path`: returns
/// the (path, params) spans.
pub(crate) fn split_params(scheme: &[u8], buf: &[u8], path: Span) -> (Span, Span) {
    const USES_PARAMS: &[&[u8]] = &[
        b"",
        b"ftp",
        b"hdl",
        b"prospero",
        b"http",
        b"imap",
        b"https",
        b"shttp",
        b"rtsp",
        b"rtsps",
        b"rtspu",
        b"sip",
        b"sips",
        b"mms",
        b"sftp",
        b"tel",
    ];
    let p = &buf[path.start..path.end];
    let none = (path, Span::at(path.end));
    if !USES_PARAMS.contains(&scheme) || !p.contains(&b';') {
        return none;
    }
    let from = rfind(p, b'/').unwrap_or(0);
    match find(&p[from..], b';') {
        Some(i) => {
            let semi = path.start + from + i;
            (
                Span {
                    start: path.start,
                    end: semi,
                },
                Span {
                    start: semi + 1,
                    end: path.end,
                },
            )
        }
        None => none,
    }
}
