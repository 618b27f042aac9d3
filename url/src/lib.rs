//! URL splitting with CPython 3.11 `urllib.parse` semantics, for two string kinds.
//!
//! The free functions [`split`], [`parse`], [`join`] and [`defrag`] mirror CPython's
//! `urlsplit`, `urlparse`, `urljoin` and `urldefrag`. They are generic over the two
//! *kinds* of input, text (`&str`) and bytes (`&[u8]`), and a result always has the
//! kind of its input, by type:
//!
//! ```
//! use smallarena_url as url;
//! let t = url::split("HTTP://User@Example.com:8080/a?q#f").unwrap();
//! assert_eq!(t.scheme(), "http");
//! assert_eq!(t.hostname().as_deref(), Some("example.com"));
//! assert_eq!(t.port(), Ok(Some(8080)));
//! let b = url::split(b"http://a/b".as_slice()).unwrap();
//! assert_eq!(b.netloc(), b"a");
//! ```
//!
//! Results borrow from the input. A split allocates only when CPython's result is not a
//! sub-slice of the input: when tab/CR/LF characters had to be removed, or when the scheme
//! had to be lowercased (both rare; the copy is made once, see [`Split`]).
//!
//! [`UrlCache`] is a bounded, sharded, thread-safe cache of split results keyed by
//! (kind, exact input, options), so a text entry can never answer a bytes request (the
//! `urlparse` cache bug of 2005, Python bug 1313119). Its results are the same [`Split`]
//! and [`Parse`] types, with the lifetime `'static`: they share the cache entry.
//!
//! ```
//! use smallarena_url::{self as url, Split, UrlCache};
//! let cache = UrlCache::new();
//! let owned: Split<'static, str> = cache.split("http://a/b?q").unwrap();
//! assert_eq!(owned, url::split("http://a/b?q").unwrap());
//! ```
//!
//! # Deliberate differences from CPython
//! - Bytes that are not ASCII are accepted as opaque bytes (CPython raises
//!   `UnicodeDecodeError` because it decodes bytes as ASCII first). The NFKC netloc check
//!   applies to text only.
//! - The default scheme of [`Options`] is a `&str` for both kinds; for bytes its UTF-8
//!   bytes are used (CPython requires a `bytes` default scheme for `bytes` input).
//! - Text hostnames are lowercased with Rust's Unicode tables, which may be a newer Unicode
//!   version than CPython 3.11's (Unicode 14); the same holds for NFKC.
//! - Error *messages* mimic CPython's, but the quoting of the offending value (Python
//!   `repr`) is an approximation for unusual characters.
//! - CPython raises for a port of more than 4300 digits with a different message ("Exceeds
//!   the limit ..."); here it is [`UrlError::PortOutOfRange`]. Both are errors.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
mod error;
mod host;
mod join;
mod kind;
mod netloc;
mod result;
mod scan;
mod split;

pub use cache::{CacheStats, UrlCache, UrlCacheBuilder};
pub use error::UrlError;
pub use join::Defrag;
pub use kind::Kind;
pub use result::{Parse, Split};

use std::borrow::Cow;

/// Options of [`split_with`] and [`parse_with`]: CPython's `scheme` and `allow_fragments`
/// arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Options<'s> {
    /// Scheme reported when the URL has none (CPython's `scheme=''`). Leading and trailing
    /// C0 controls and spaces are stripped and tab/CR/LF removed, as CPython does. For the
    /// bytes kind its UTF-8 bytes are used.
    pub default_scheme: &'s str,
    /// When `false`, `#` does not start a fragment (it stays in the path or query).
    pub allow_fragments: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            default_scheme: "",
            allow_fragments: true,
        }
    }
}

impl<'s> Options<'s> {
    /// Options with the given default scheme and fragments allowed.
    pub fn with_scheme(default_scheme: &'s str) -> Self {
        Options {
            default_scheme,
            allow_fragments: true,
        }
    }

    /// These options with `allow_fragments` set.
    pub fn allow_fragments(mut self, allow: bool) -> Self {
        self.allow_fragments = allow;
        self
    }
}

/// Splits `url` into scheme, netloc, path, query and fragment, like CPython's
/// `urllib.parse.urlsplit(url)`.
///
/// # Errors
/// [`UrlError`] where CPython raises: unbalanced or invalid bracketed hosts, and (text
/// only) a netloc that changes under NFKC into one containing `/?#@:`.
pub fn split<K: Kind + ?Sized>(url: &K) -> Result<Split<'_, K>, UrlError> {
    split::split_impl(url, K::EMPTY, true)
}

/// [`split`] with CPython's `scheme` and `allow_fragments` arguments.
///
/// # Errors
/// As [`split`].
pub fn split_with<'a, K: Kind + ?Sized>(
    url: &'a K,
    opts: &Options<'a>,
) -> Result<Split<'a, K>, UrlError> {
    split::split_impl(
        url,
        K::from_str_ref(opts.default_scheme),
        opts.allow_fragments,
    )
}

/// Like [`split`] but also splits `;params` from the last path segment for the schemes that
/// use them, like CPython's `urllib.parse.urlparse(url)`.
///
/// # Errors
/// As [`split`].
pub fn parse<K: Kind + ?Sized>(url: &K) -> Result<Parse<'_, K>, UrlError> {
    split(url).map(Parse::from_split)
}

/// [`parse`] with CPython's `scheme` and `allow_fragments` arguments.
///
/// # Errors
/// As [`split`].
pub fn parse_with<'a, K: Kind + ?Sized>(
    url: &'a K,
    opts: &Options<'a>,
) -> Result<Parse<'a, K>, UrlError> {
    split_with(url, opts).map(Parse::from_split)
}

/// Resolves `url` against `base` like CPython's `urllib.parse.urljoin(base, url)`.
///
/// Returns the input itself (borrowed) where CPython returns it unchanged, otherwise a newly
/// built URL.
///
/// # Errors
/// As [`split`], for either argument.
pub fn join<'a, K: Kind + ?Sized>(base: &'a K, url: &'a K) -> Result<Cow<'a, K>, UrlError> {
    join::join_impl(base, url, true, split::split_impl)
}

/// [`join`] with CPython's `allow_fragments` argument.
///
/// # Errors
/// As [`split`], for either argument.
pub fn join_with<'a, K: Kind + ?Sized>(
    base: &'a K,
    url: &'a K,
    allow_fragments: bool,
) -> Result<Cow<'a, K>, UrlError> {
    join::join_impl(base, url, allow_fragments, split::split_impl)
}

/// Removes the fragment of `url`, like CPython's `urllib.parse.urldefrag(url)`.
///
/// # Errors
/// As [`split`] (only when `url` contains `#`, as in CPython).
pub fn defrag<K: Kind + ?Sized>(url: &K) -> Result<Defrag<'_, K>, UrlError> {
    join::defrag_impl(url)
}
