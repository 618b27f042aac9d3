//! `urlsplit` / `urlparse`: the one-pass split into component offsets.

use std::borrow::Cow;
use std::fmt;

use super::{Kind, UrlError};

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
    /// `None`: the URL has no scheme, the default scheme applies.
    pub(crate) scheme: Option<Span>,
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

fn find(b: &[u8], c: u8) -> Option<usize> {
    b.iter().position(|&x| x == c)
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
// only byte these scans ever use.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Up to eight bytes of `b` from `j` (which must be `< b.len()`) as a little-endian word,
/// padded past the end with `a`, which no mask below flags.
#[inline(always)]
fn word_from(b: &[u8], j: usize) -> u64 {
    let mut w = [b'a'; 8];
    let rest = &b[j..];
    if rest.len() >= 8 {
        w.copy_from_slice(&rest[..8]);
    } else {
        w[..rest.len()].copy_from_slice(rest);
    }
    u64::from_le_bytes(w)
}

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
        let v = word_from(b, e);
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
        let m = below_0e_mask(word_from(b, j));
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
            scheme = Some(Span { start: 0, end: i });
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
        let v = word_from(b, j);
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

/// The bracket checks of `urlsplit` on a netloc.
fn check_brackets(net: &[u8]) -> Result<(), UrlError> {
    let open = find(net, b'[');
    let has_close = net.contains(&b']');
    match (open, has_close) {
        (None, false) => Ok(()),
        (Some(_), false) | (None, true) => Err(UrlError::InvalidIpv6Url),
        (Some(o), true) => {
            let after = &net[o + 1..];
            let host = &after[..find(after, b']').unwrap_or(after.len())];
            check_bracketed_host(host)
        }
    }
}

/// CPython's `_check_bracketed_host`.
fn check_bracketed_host(h: &[u8]) -> Result<(), UrlError> {
    if let Some(rest) = h.strip_prefix(b"v") {
        // \Av[a-fA-F0-9]+\..+\Z
        let hex = rest.iter().take_while(|c| c.is_ascii_hexdigit()).count();
        if hex >= 1 && rest.get(hex) == Some(&b'.') && rest.len() > hex + 1 {
            return Ok(());
        }
        return Err(UrlError::InvalidIpvFuture);
    }
    if is_ipv4(h) {
        return Err(UrlError::Ipv4InBrackets);
    }
    if is_ipv6(h) {
        return Ok(());
    }
    Err(UrlError::InvalidBracketedHost {
        host: String::from_utf8_lossy(h).into_owned(),
    })
}

/// `ipaddress.IPv4Address(s)` succeeds (strict dotted quad, no leading zeros).
fn is_ipv4(s: &[u8]) -> bool {
    let mut count = 0;
    for octet in s.split(|&c| c == b'.') {
        count += 1;
        if count > 4
            || octet.is_empty()
            || octet.len() > 3
            || !octet.iter().all(u8::is_ascii_digit)
            || (octet.len() > 1 && octet[0] == b'0')
        {
            return false;
        }
        let v = octet
            .iter()
            .fold(0u32, |a, &d| a * 10 + u32::from(d - b'0'));
        if v > 255 {
            return false;
        }
    }
    count == 4
}

/// `ipaddress.IPv6Address(s)` succeeds (CPython 3.11 rules, with `%scope`).
fn is_ipv6(s: &[u8]) -> bool {
    let addr = match find(s, b'%') {
        Some(p) => {
            let scope = &s[p + 1..];
            if scope.is_empty() || scope.contains(&b'%') {
                return false;
            }
            &s[..p]
        }
        None => s,
    };
    if addr.is_empty() {
        return false;
    }
    let colons = addr.iter().filter(|&&c| c == b':').count();
    if colons + 1 < 3 {
        return false;
    }
    // Parts; `None` stands for a (valid) hextet converted from an IPv4 suffix.
    let mut parts: [Option<&[u8]>; 9] = [None; 9];
    let mut len = 0;
    let mut raw_parts = addr.split(|&c| c == b':');
    let last_start = addr.iter().rposition(|&c| c == b':').map_or(0, |p| p + 1);
    let last = &addr[last_start..];
    let ipv4_tail = last.contains(&b'.');
    let total = colons + 1 + usize::from(ipv4_tail);
    if ipv4_tail && !is_ipv4(last) {
        return false;
    }
    if total > 9 {
        return false;
    }
    for _ in 0..colons + 1 - usize::from(ipv4_tail) {
        parts[len] = raw_parts.next();
        len += 1;
    }
    if ipv4_tail {
        len += 2; // two synthetic valid hextets (already `None`)
    }
    let empty = |i: usize| matches!(parts[i], Some(p) if p.is_empty());
    let mut skip = None;
    for i in 1..len - 1 {
        if empty(i) {
            if skip.is_some() {
                return false;
            }
            skip = Some(i);
        }
    }
    let (hi, lo) = if let Some(si) = skip {
        let mut hi = si;
        let mut lo = len - si - 1;
        if empty(0) {
            hi -= 1;
            if hi != 0 {
                return false;
            }
        }
        if empty(len - 1) {
            lo -= 1;
            if lo != 0 {
                return false;
            }
        }
        if hi + lo >= 8 {
            return false;
        }
        (hi, lo)
    } else {
        if len != 8 || empty(0) || empty(len - 1) {
            return false;
        }
        (len, 0)
    };
    let hextet = |p: Option<&[u8]>| match p {
        None => true,
        Some(h) => !h.is_empty() && h.len() <= 4 && h.iter().all(u8::is_ascii_hexdigit),
    };
    parts[..hi].iter().all(|&p| hextet(p)) && parts[len - lo..len].iter().all(|&p| hextet(p))
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
    if let (Some(s), true) = (layout.scheme, found.upper) {
        K::lowercase_prefix(buf.to_mut(), s.end);
    }
    if found.non_ascii {
        K::check_nfkc(buf.sub(layout.netloc.start, layout.netloc.end))?;
    }
    let default_scheme = if layout.scheme.is_none() {
        clean_scheme(default_scheme)
    } else {
        Cow::Borrowed(K::EMPTY)
    };
    Ok(Split {
        buf,
        default_scheme,
        layout,
    })
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
    let from = p.iter().rposition(|&c| c == b'/').unwrap_or(0);
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

/// Component names of a split, in CPython's order.
pub(crate) const SPLIT_FIELDS: [&str; 5] = ["scheme", "netloc", "path", "query", "fragment"];
/// Component names of a parse, in CPython's order.
pub(crate) const PARSE_FIELDS: [&str; 6] =
    ["scheme", "netloc", "path", "params", "query", "fragment"];

/// `Debug` for the result types: a struct named `name` with one field per component.
pub(crate) fn debug_components<K: Kind + ?Sized>(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    fields: &[&str],
    components: &[&K],
) -> fmt::Result {
    let mut d = f.debug_struct(name);
    for (field, value) in fields.iter().zip(components) {
        d.field(field, value);
    }
    d.finish()
}

/// Adds the component accessors of a split result ([`Split`], `CachedSplit`) to a type with
/// `fn span(&self, Span) -> &K` (a range of its buffer), `fn layout(&self) -> &Layout` and
/// `fn default_scheme(&self) -> &K`.
macro_rules! split_accessors {
    () => {
        /// The scheme, lowercased (or the default scheme when the URL has none).
        pub fn scheme(&self) -> &K {
            match self.layout().scheme {
                Some(s) => self.span(s),
                None => self.default_scheme(),
            }
        }

        /// The network location (after `//`, up to the first `/`, `?` or `#`).
        pub fn netloc(&self) -> &K {
            self.span(self.layout().netloc)
        }

        /// The path.
        pub fn path(&self) -> &K {
            self.span(self.layout().path)
        }

        /// The query (after the first `?`).
        pub fn query(&self) -> &K {
            self.span(self.layout().query)
        }

        /// The fragment (after the first `#`, when fragments are allowed).
        pub fn fragment(&self) -> &K {
            self.span(self.layout().fragment)
        }

        /// The five components, in CPython's order.
        pub fn components(&self) -> [&K; 5] {
            [
                self.scheme(),
                self.netloc(),
                self.path(),
                self.query(),
                self.fragment(),
            ]
        }

        $crate::netloc::netloc_accessors!();
    };
}
pub(crate) use split_accessors;

/// Adds the component accessors of a parse result ([`Parse`], `CachedParse`) to a type with
/// fields `split` (a split result with `fn span`), `path` and `params` (the spans of the path
/// without its params, and of the params).
macro_rules! parse_accessors {
    () => {
        /// The scheme, lowercased (or the default scheme).
        pub fn scheme(&self) -> &K {
            self.split.scheme()
        }

        /// The network location.
        pub fn netloc(&self) -> &K {
            self.split.netloc()
        }

        /// The path, without params.
        pub fn path(&self) -> &K {
            self.split.span(self.path)
        }

        /// The params of the last path segment (after its first `;`).
        pub fn params(&self) -> &K {
            self.split.span(self.params)
        }

        /// The query.
        pub fn query(&self) -> &K {
            self.split.query()
        }

        /// The fragment.
        pub fn fragment(&self) -> &K {
            self.split.fragment()
        }

        /// The six components, in CPython's order.
        pub fn components(&self) -> [&K; 6] {
            [
                self.scheme(),
                self.netloc(),
                self.path(),
                self.params(),
                self.query(),
                self.fragment(),
            ]
        }

        $crate::netloc::netloc_accessors!();
    };
}
pub(crate) use parse_accessors;

/// The result of [`split`](super::split): CPython's `SplitResult` / `SplitResultBytes`.
///
/// Components are slices of the input (or, when tab/CR/LF had to be removed or the scheme
/// lowercased, of one cleaned copy of it).
#[derive(Clone)]
pub struct Split<'a, K: Kind + ?Sized> {
    buf: Cow<'a, K>,
    default_scheme: Cow<'a, K>,
    layout: Layout,
}

impl<'a, K: Kind + ?Sized> Split<'a, K> {
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn buf_cow(&self) -> &Cow<'a, K> {
        &self.buf
    }

    pub(crate) fn into_buf(self) -> Cow<'a, K> {
        self.buf
    }

    fn span(&self, s: Span) -> &K {
        self.buf.sub(s.start, s.end)
    }

    fn default_scheme(&self) -> &K {
        &self.default_scheme
    }

    split_accessors!();
}

impl<K: Kind + ?Sized> PartialEq for Split<'_, K> {
    fn eq(&self, other: &Self) -> bool {
        self.components() == other.components()
    }
}

impl<K: Kind + ?Sized> fmt::Debug for Split<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_components(f, "Split", &SPLIT_FIELDS, &self.components())
    }
}

/// The result of [`parse`](super::parse): CPython's `ParseResult` / `ParseResultBytes`
/// (a [`Split`] whose path has its `;params` split off for the schemes that use them).
#[derive(Clone)]
pub struct Parse<'a, K: Kind + ?Sized> {
    split: Split<'a, K>,
    path: Span,
    params: Span,
}

impl<'a, K: Kind + ?Sized> Parse<'a, K> {
    pub(crate) fn from_split(split: Split<'a, K>) -> Self {
        let (path, params) = split_params(split.scheme().raw(), split.buf.raw(), split.layout.path);
        Parse {
            split,
            path,
            params,
        }
    }

    pub(crate) fn into_split(self) -> Split<'a, K> {
        self.split
    }

    /// The underlying split (its path still contains the params).
    pub fn as_split(&self) -> &Split<'a, K> {
        &self.split
    }

    parse_accessors!();
}

impl<K: Kind + ?Sized> PartialEq for Parse<'_, K> {
    fn eq(&self, other: &Self) -> bool {
        self.components() == other.components()
    }
}

impl<K: Kind + ?Sized> fmt::Debug for Parse<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_components(f, "Parse", &PARSE_FIELDS, &self.components())
    }
}
