//! The results of `urlsplit` and `urlparse`: [`Split`] and [`Parse`], one family whatever
//! holds the text (the caller's input, a cleaned copy, or a shared cache entry).

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::sync::Arc;

use crate::split::{split_params, Layout, Span};
use crate::Kind;

/// A split that owns its text: the exact input it was parsed from, the cleaned buffer
/// when CPython's rules changed the bytes (tab/CR/LF removed, scheme lowercased; rare), and
/// the default scheme. This is what [`UrlCache`](crate::UrlCache) keeps and shares between
/// the results of its hits.
///
/// Invariant: `layout` holds spans of [`Stored::buf`], which is `cleaned` when present and
/// otherwise `input[buf_start..]` (the input after its leading C0 controls and spaces).
pub(crate) struct Stored<K: ?Sized> {
    input: Box<K>,
    cleaned: Option<Box<K>>,
    buf_start: usize,
    default_scheme: Box<K>,
    layout: Layout,
}

impl<K: Kind + ?Sized> Stored<K> {
    /// Keeps `split`, the result of splitting `input` with `default_scheme`, as owned text.
    pub(crate) fn new(input: &K, default_scheme: &K, split: Split<'_, K>) -> Self {
        let (layout, cleaned, buf_start) = match split.repr {
            Repr::Fresh { buf, layout, .. } => match buf {
                Cow::Borrowed(b) => (layout, None, input.raw().len() - b.raw().len()),
                Cow::Owned(o) => (layout, Some(Borrow::<K>::borrow(&o).boxed()), 0),
            },
            Repr::Shared(s) => (s.layout, Some(s.buf().boxed()), 0),
        };
        Stored {
            input: input.boxed(),
            cleaned,
            buf_start,
            default_scheme: default_scheme.boxed(),
            layout,
        }
    }

    /// The exact input.
    pub(crate) fn input(&self) -> &K {
        &self.input
    }

    /// The default scheme the input was split with.
    pub(crate) fn default_scheme(&self) -> &K {
        &self.default_scheme
    }

    /// The buffer the layout's spans index.
    fn buf(&self) -> &K {
        match &self.cleaned {
            Some(c) => c,
            None => self.input.sub(self.buf_start, self.input.raw().len()),
        }
    }

    /// Bytes of text held (input, cleaned copy and default scheme) plus this struct.
    pub(crate) fn size(&self) -> usize {
        self.input.raw().len()
            + self.cleaned.as_ref().map_or(0, |c| c.raw().len())
            + self.default_scheme.raw().len()
            + std::mem::size_of::<Self>()
    }
}

/// Where a [`Split`]'s text lives.
enum Repr<'a, K: Kind + ?Sized> {
    /// Just split: the buffer is the input (borrowed) or a cleaned copy of it (owned); the
    /// default scheme is the caller's (borrowed) or a cleaned copy of it.
    Fresh {
        buf: Cow<'a, K>,
        default_scheme: Cow<'a, K>,
        layout: Layout,
    },
    /// A cache entry, shared with the cache and its other hits.
    Shared(Arc<Stored<K>>),
}

impl<K: Kind + ?Sized> Clone for Repr<'_, K> {
    fn clone(&self) -> Self {
        match self {
            Repr::Fresh {
                buf,
                default_scheme,
                layout,
            } => Repr::Fresh {
                buf: buf.clone(),
                default_scheme: default_scheme.clone(),
                layout: *layout,
            },
            Repr::Shared(s) => Repr::Shared(Arc::clone(s)),
        }
    }
}

/// The result of [`split`](crate::split): CPython's `SplitResult` / `SplitResultBytes`.
///
/// Components are slices of the input, or, when tab/CR/LF had to be removed or the scheme
/// lowercased, of one cleaned copy of it. A result of [`UrlCache`](crate::UrlCache) has the
/// lifetime `'static`: its text is a cache entry it shares (`Clone` is then an `Arc`
/// clone), which stays valid after the cache evicts it.
pub struct Split<'a, K: Kind + ?Sized> {
    repr: Repr<'a, K>,
}

impl<K: Kind + ?Sized> Clone for Split<'_, K> {
    fn clone(&self) -> Self {
        Split {
            repr: self.repr.clone(),
        }
    }
}

impl<'a, K: Kind + ?Sized> Split<'a, K> {
    pub(crate) fn fresh(buf: Cow<'a, K>, default_scheme: Cow<'a, K>, layout: Layout) -> Self {
        Split {
            repr: Repr::Fresh {
                buf,
                default_scheme,
                layout,
            },
        }
    }

    /// The buffer the layout indexes, the default scheme and the layout.
    #[inline]
    fn parts(&self) -> (&K, &K, &Layout) {
        match &self.repr {
            Repr::Fresh {
                buf,
                default_scheme,
                layout,
            } => (buf, default_scheme, layout),
            Repr::Shared(s) => (s.buf(), &s.default_scheme, &s.layout),
        }
    }

    fn span(&self, s: Span) -> &K {
        self.parts().0.sub(s.start, s.end)
    }

    pub(crate) fn layout(&self) -> &Layout {
        self.parts().2
    }

    /// The text of `span`, borrowed from the input when this split borrows it, else copied.
    pub(crate) fn into_span(self, span: Span) -> Cow<'a, K> {
        match self.repr {
            Repr::Fresh {
                buf: Cow::Borrowed(b),
                ..
            } => Cow::Borrowed(b.sub(span.start, span.end)),
            _ => Cow::Owned(self.span(span).to_owned()),
        }
    }

    /// The scheme, lowercased (or the default scheme when the URL has none).
    pub fn scheme(&self) -> &K {
        let (buf, default_scheme, layout) = self.parts();
        match layout.scheme {
            Some(end) => buf.sub(0, end.get()),
            None => default_scheme,
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

    /// Whether `self` and `other` are results of the same cache entry (both came from a
    /// [`UrlCache`](crate::UrlCache) and share their text). `false` for results that were
    /// not cached.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        match (&self.repr, &other.repr) {
            (Repr::Shared(a), Repr::Shared(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl<K: Kind + ?Sized> Split<'static, K> {
    /// A result sharing the cache entry `stored`.
    pub(crate) fn shared(stored: Arc<Stored<K>>) -> Self {
        Split {
            repr: Repr::Shared(stored),
        }
    }
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

/// The result of [`parse`](crate::parse): CPython's `ParseResult` / `ParseResultBytes`
/// (a [`Split`] whose path has its `;params` split off for the schemes that use them).
/// Like [`Split`], it is `'static` when it comes from a [`UrlCache`](crate::UrlCache).
pub struct Parse<'a, K: Kind + ?Sized> {
    split: Split<'a, K>,
    path: Span,
    params: Span,
}

impl<K: Kind + ?Sized> Clone for Parse<'_, K> {
    fn clone(&self) -> Self {
        Parse {
            split: self.split.clone(),
            path: self.path,
            params: self.params,
        }
    }
}

impl<'a, K: Kind + ?Sized> Parse<'a, K> {
    /// Locates the params of `split` (no allocation).
    pub(crate) fn from_split(split: Split<'a, K>) -> Self {
        let (buf, _, layout) = split.parts();
        let (path, params) = split_params(split.scheme().raw(), buf.raw(), layout.path);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::split_impl;

    /// Results are moved on every call: kept within 128 bytes, a move is a few vector moves
    /// instead of a `memcpy` call (which cost cache hits a fifth of their time).
    #[test]
    fn results_stay_small() {
        assert!(std::mem::size_of::<Result<Split<'_, str>, crate::UrlError>>() <= 128);
        assert!(std::mem::size_of::<Result<Parse<'_, [u8]>, crate::UrlError>>() <= 160);
    }

    /// A stored split answers as the split it was made from, including when CPython's rules
    /// changed the bytes (leading controls, tab/CR/LF, an uppercase scheme).
    #[test]
    fn stored_splits_answer_as_fresh_ones() {
        for url in [
            "http://a/b?c#d",
            " \u{0}http://a/b",
            "HT\ttp://A/b\n?q",
            "Http://h/p;x?q#f",
            "//net/p",
            "",
        ] {
            for scheme in ["", "dflt"] {
                let fresh = split_impl(url, scheme, true).unwrap();
                let shared = Split::shared(Arc::new(Stored::new(url, scheme, fresh.clone())));
                assert_eq!(shared, fresh, "{url:?}");
                assert_eq!(shared.scheme(), fresh.scheme(), "{url:?}");
                assert!(shared.ptr_eq(&shared.clone()));
                assert!(
                    !fresh.ptr_eq(&fresh.clone()),
                    "fresh results share no entry"
                );
                let frag = fresh.layout().fragment;
                assert_eq!(shared.into_span(frag), fresh.into_span(frag));
            }
        }
    }
}
