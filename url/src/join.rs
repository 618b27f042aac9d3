//! `urljoin`, `urldefrag` and the `urlunparse` they rely on.

use std::borrow::Cow;

use crate::result::{Parse, Split};
use crate::split::split_impl;
use crate::{Kind, UrlError};

const USES_RELATIVE: &[&[u8]] = &[
    b"",
    b"ftp",
    b"http",
    b"gopher",
    b"nntp",
    b"imap",
    b"wais",
    b"file",
    b"https",
    b"shttp",
    b"mms",
    b"prospero",
    b"rtsp",
    b"rtsps",
    b"rtspu",
    b"sftp",
    b"svn",
    b"svn+ssh",
    b"ws",
    b"wss",
];

const USES_NETLOC: &[&[u8]] = &[
    b"",
    b"ftp",
    b"http",
    b"gopher",
    b"nntp",
    b"telnet",
    b"imap",
    b"wais",
    b"file",
    b"mms",
    b"https",
    b"shttp",
    b"snews",
    b"prospero",
    b"rtsp",
    b"rtsps",
    b"rtspu",
    b"rsync",
    b"svn",
    b"svn+ssh",
    b"sftp",
    b"nfs",
    b"git",
    b"git+ssh",
    b"ws",
    b"wss",
];

/// The result of [`defrag`](super::defrag): CPython's `DefragResult`.
#[derive(Clone, PartialEq, Eq)]
pub struct Defrag<'a, K: Kind + ?Sized> {
    /// The URL without its fragment (the input itself when it has no `#`).
    pub url: Cow<'a, K>,
    /// The fragment, empty when there is none.
    pub fragment: Cow<'a, K>,
}

impl<K: Kind + ?Sized> std::fmt::Debug for Defrag<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Defrag")
            .field("url", &&*self.url)
            .field("fragment", &&*self.fragment)
            .finish()
    }
}

/// CPython's `urlunparse((scheme, netloc, path, params, query, fragment))`.
pub(crate) fn unparse<K: Kind + ?Sized>(c: [&K; 6]) -> K::Owned {
    let [scheme, netloc, path, params, query, fragment] = c;
    let len: usize = c.iter().map(|s| s.raw().len()).sum::<usize>() + 8;
    let mut out = K::new_owned(len);
    if !scheme.raw().is_empty() {
        K::push(&mut out, scheme);
        K::push_ascii(&mut out, ":");
    }
    let p = path.raw();
    if !netloc.raw().is_empty()
        || (!scheme.raw().is_empty()
            && USES_NETLOC.contains(&scheme.raw())
            && !p.starts_with(b"//"))
    {
        K::push_ascii(&mut out, "//");
        K::push(&mut out, netloc);
        // `url` here is path plus `;params`; a non-empty one gets a leading `/`.
        let url_empty = p.is_empty() && params.raw().is_empty();
        if !url_empty && !p.starts_with(b"/") {
            K::push_ascii(&mut out, "/");
        }
    }
    K::push(&mut out, path);
    if !params.raw().is_empty() {
        K::push_ascii(&mut out, ";");
        K::push(&mut out, params);
    }
    if !query.raw().is_empty() {
        K::push_ascii(&mut out, "?");
        K::push(&mut out, query);
    }
    if !fragment.raw().is_empty() {
        K::push_ascii(&mut out, "#");
        K::push(&mut out, fragment);
    }
    out
}

fn split_slash<K: Kind + ?Sized>(s: &K) -> impl Iterator<Item = &K> {
    let b = s.raw();
    let mut start = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match b[start..].iter().position(|&c| c == b'/') {
            Some(i) => {
                let seg = s.sub(start, start + i);
                start += i + 1;
                Some(seg)
            }
            None => {
                done = true;
                Some(s.sub(start, b.len()))
            }
        }
    })
}

/// The resolution step of `urljoin`, given both parsed (base, url) component lists.
fn join_parts<'a, K: Kind + ?Sized>(url: &'a K, base: [&K; 6], rel: [&K; 6]) -> Cow<'a, K> {
    let [bscheme, bnetloc, bpath, bparams, bquery, _] = base;
    let [scheme, mut netloc, path, params, query, fragment] = rel;
    if scheme != bscheme || !USES_RELATIVE.contains(&scheme.raw()) {
        return Cow::Borrowed(url);
    }
    if USES_NETLOC.contains(&scheme.raw()) {
        if !netloc.raw().is_empty() {
            return Cow::Owned(unparse([scheme, netloc, path, params, query, fragment]));
        }
        netloc = bnetloc;
    }
    if path.raw().is_empty() && params.raw().is_empty() {
        let query = if query.raw().is_empty() {
            bquery
        } else {
            query
        };
        return Cow::Owned(unparse([scheme, netloc, bpath, bparams, query, fragment]));
    }
    let mut segments: Vec<&K> = Vec::new();
    if path.raw().starts_with(b"/") {
        segments.extend(split_slash(path));
    } else {
        segments.extend(split_slash(bpath));
        if segments.last().is_some_and(|s| !s.raw().is_empty()) {
            segments.pop();
        }
        segments.extend(split_slash(path));
        if segments.len() > 2 {
            let last = segments.len() - 1;
            let mut i = 0;
            segments.retain(|s| {
                let keep = i == 0 || i == last || !s.raw().is_empty();
                i += 1;
                keep
            });
        }
    }
    let mut resolved: Vec<&K> = Vec::with_capacity(segments.len());
    for seg in &segments {
        match seg.raw() {
            b".." => {
                resolved.pop();
            }
            b"." => {}
            _ => resolved.push(seg),
        }
    }
    if segments
        .last()
        .is_some_and(|s| matches!(s.raw(), b"." | b".."))
    {
        resolved.push(K::EMPTY);
    }
    let mut joined = K::new_owned(path.raw().len() + bpath.raw().len());
    for (i, seg) in resolved.iter().enumerate() {
        if i > 0 {
            K::push_ascii(&mut joined, "/");
        }
        K::push(&mut joined, seg);
    }
    let joined_ref: &K = std::borrow::Borrow::borrow(&joined);
    let path = if joined_ref.raw().is_empty() {
        K::from_str_ref("/")
    } else {
        joined_ref
    };
    Cow::Owned(unparse([scheme, netloc, path, params, query, fragment]))
}

/// `urljoin(base, url, allow_fragments)`, with `split(url, default_scheme,
/// allow_fragments)` as `urlsplit` (the free function, or a cache's lookup).
pub(crate) fn join_impl<'a, K, F>(
    base: &'a K,
    url: &'a K,
    allow_fragments: bool,
    split: F,
) -> Result<Cow<'a, K>, UrlError>
where
    K: Kind + ?Sized,
    F: for<'x> Fn(&'x K, &'x K, bool) -> Result<Split<'x, K>, UrlError>,
{
    // With an empty base the answer is `url`, with an empty `url` it is `base`, unparsed.
    if base.raw().is_empty() {
        return Ok(Cow::Borrowed(url));
    }
    if url.raw().is_empty() {
        return Ok(Cow::Borrowed(base));
    }
    let b = Parse::from_split(split(base, K::EMPTY, allow_fragments)?);
    let u = Parse::from_split(split(url, b.scheme(), allow_fragments)?);
    Ok(join_parts(url, b.components(), u.components()))
}

/// `urldefrag(url)`.
pub(crate) fn defrag_impl<K: Kind + ?Sized>(url: &K) -> Result<Defrag<'_, K>, UrlError> {
    if !url.raw().contains(&b'#') {
        return Ok(Defrag {
            url: Cow::Borrowed(url),
            fragment: Cow::Borrowed(K::EMPTY),
        });
    }
    let p = Parse::from_split(split_impl(url, K::EMPTY, true)?);
    let c = p.components();
    let defragged = unparse([c[0], c[1], c[2], c[3], c[4], K::EMPTY]);
    let frag = p.as_split().layout().fragment;
    let fragment = p.into_split().into_span(frag);
    Ok(Defrag {
        url: Cow::Owned(defragged),
        fragment,
    })
}
