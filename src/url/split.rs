//! `urlsplit` / `urlparse`: the one-pass split into component offsets.

use std::borrow::Cow;
use std::fmt;

use super::netloc::netloc_accessors;
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

fn is_scheme_char(c: &u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')
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

/// Byte classes for the single scan: first `:`, `?`, `#`, and any tab/CR/LF.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b':' as usize] = 1;
    t[b'?' as usize] = 2;
    t[b'#' as usize] = 3;
    t[b'\t' as usize] = 4;
    t[b'\r' as usize] = 4;
    t[b'\n' as usize] = 4;
    t
};

/// First positions (or `len`) of `:`, `?`, `#` and whether tab/CR/LF occur: one pass.
#[derive(Clone, Copy)]
pub(crate) struct Scan {
    colon: usize,
    question: usize,
    hash: usize,
    tab_crlf: bool,
}

/// Nonzero when some byte of `v` may equal `c` (exact for "no byte equals `c`").
#[inline]
fn may_have(v: u64, c: u8) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let x = v ^ (LO * u64::from(c));
    x.wrapping_sub(LO) & !x & HI
}

pub(crate) fn scan(b: &[u8]) -> Scan {
    let n = b.len();
    let mut s = Scan {
        colon: n,
        question: n,
        hash: n,
        tab_crlf: false,
    };
    let mut note = |i: usize, c: u8| match CLASS[usize::from(c)] {
        0 => {}
        1 => s.colon = s.colon.min(i),
        2 => s.question = s.question.min(i),
        3 => s.hash = s.hash.min(i),
        _ => s.tab_crlf = true,
    };
    // Eight bytes at a time: most words hold none of the six interesting bytes.
    let mut chunks = b.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let v = u64::from_le_bytes(w);
        let m = may_have(v, b':')
            | may_have(v, b'?')
            | may_have(v, b'#')
            | may_have(v, b'\t')
            | may_have(v, b'\r')
            | may_have(v, b'\n');
        if m != 0 {
            for (j, &c) in chunk.iter().enumerate() {
                note(base + j, c);
            }
        }
        base += 8;
    }
    for (j, &c) in chunks.remainder().iter().enumerate() {
        note(base + j, c);
    }
    s
}

/// The split proper, on the cleaned bytes, given their [`scan`]. Validates brackets in
/// the netloc.
///
/// Uses the first `:`, `?` and `#` of the whole buffer: none of them can occur before the
/// place where CPython starts looking for it (a scheme holds none of them, a netloc ends at
/// the first `?` or `#`), so the first occurrences are the delimiters.
fn layout_from(b: &[u8], sc: Scan, allow_fragments: bool) -> Result<Layout, UrlError> {
    let n = b.len();
    let mut pos = 0;
    let mut scheme = None;
    let i = sc.colon;
    if i < n && i > 0 && b[0].is_ascii_alphabetic() && b[..i].iter().all(is_scheme_char) {
        scheme = Some(Span { start: 0, end: i });
        pos = i + 1;
    }
    let mut netloc = Span::at(pos);
    if b.get(pos) == Some(&b'/') && b.get(pos + 1) == Some(&b'/') {
        let s = pos + 2;
        let limit = sc.question.min(sc.hash).max(s);
        // One pass for the end of the netloc and the presence of brackets.
        let mut e = limit;
        let mut brackets = false;
        for (j, &c) in b[s..limit].iter().enumerate() {
            match c {
                b'/' => {
                    e = s + j;
                    break;
                }
                b'[' | b']' => brackets = true,
                _ => {}
            }
        }
        netloc = Span { start: s, end: e };
        if brackets {
            check_brackets(&b[s..e])?;
        }
        pos = e;
    }
    let mut end = n;
    let mut fragment = Span::at(n);
    if allow_fragments && sc.hash < n {
        end = sc.hash.max(pos);
        fragment = Span {
            start: end + 1,
            end: n,
        };
    }
    let (path, query) = if sc.question < end && sc.question >= pos {
        let q = sc.question;
        (Span { start: pos, end: q }, Span { start: q + 1, end })
    } else {
        (Span { start: pos, end }, Span::at(end))
    };
    Ok(Layout {
        scheme,
        netloc,
        path,
        query,
        fragment,
    })
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
    let start = b
        .iter()
        .position(|&c| !is_c0_or_space(c))
        .unwrap_or(b.len());
    let stripped = url.sub(start, b.len());
    let sc = scan(stripped.raw());
    let (mut buf, sc) = if sc.tab_crlf {
        let owned: Cow<'a, K> = Cow::Owned(stripped.without_tab_crlf());
        let sc = scan(owned.raw());
        (owned, sc)
    } else {
        (Cow::Borrowed(stripped), sc)
    };
    let layout = layout_from(buf.raw(), sc, allow_fragments)?;
    if let Some(s) = layout.scheme {
        if buf.raw()[s.start..s.end].iter().any(u8::is_ascii_uppercase) {
            K::lowercase_prefix(buf.to_mut(), s.end);
        }
    }
    K::check_nfkc(buf.sub(layout.netloc.start, layout.netloc.end))?;
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

    /// The scheme, lowercased (or the default scheme when the URL has none).
    pub fn scheme(&self) -> &K {
        match self.layout.scheme {
            Some(s) => self.buf.sub(s.start, s.end),
            None => &self.default_scheme,
        }
    }

    /// The network location (after `//`, up to the first `/`, `?` or `#`).
    pub fn netloc(&self) -> &K {
        self.buf
            .sub(self.layout.netloc.start, self.layout.netloc.end)
    }

    /// The path.
    pub fn path(&self) -> &K {
        self.buf.sub(self.layout.path.start, self.layout.path.end)
    }

    /// The query (after the first `?`).
    pub fn query(&self) -> &K {
        self.buf.sub(self.layout.query.start, self.layout.query.end)
    }

    /// The fragment (after the first `#`, when fragments are allowed).
    pub fn fragment(&self) -> &K {
        self.buf
            .sub(self.layout.fragment.start, self.layout.fragment.end)
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

    netloc_accessors!();
}

impl<K: Kind + ?Sized> PartialEq for Split<'_, K> {
    fn eq(&self, other: &Self) -> bool {
        self.components() == other.components()
    }
}

impl<K: Kind + ?Sized> fmt::Debug for Split<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Split")
            .field("scheme", &self.scheme())
            .field("netloc", &self.netloc())
            .field("path", &self.path())
            .field("query", &self.query())
            .field("fragment", &self.fragment())
            .finish()
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
        self.split.buf.sub(self.path.start, self.path.end)
    }

    /// The params of the last path segment (after its first `;`).
    pub fn params(&self) -> &K {
        self.split.buf.sub(self.params.start, self.params.end)
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

    netloc_accessors!();
}

impl<K: Kind + ?Sized> PartialEq for Parse<'_, K> {
    fn eq(&self, other: &Self) -> bool {
        self.components() == other.components()
    }
}

impl<K: Kind + ?Sized> fmt::Debug for Parse<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parse")
            .field("scheme", &self.scheme())
            .field("netloc", &self.netloc())
            .field("path", &self.path())
            .field("params", &self.params())
            .field("query", &self.query())
            .field("fragment", &self.fragment())
            .finish()
    }
}
