//! The two string kinds, text (`str`) and bytes (`[u8]`), behind a sealed trait.

use std::borrow::Cow;

/// The kind of a URL string: implemented for `str` (text) and `[u8]` (bytes) only.
///
/// The trait is sealed; its methods are internal. A result of any function in this module
/// has the kind of its input.
pub trait Kind: sealed::Sealed {
    /// The bytes of this string (UTF-8 for text).
    fn as_url_bytes(&self) -> &[u8] {
        self.raw()
    }
}

impl Kind for str {}
impl Kind for [u8] {}

/// Tag distinguishing the kinds at run time (in messages and hashes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KindTag {
    Text = 1,
    Bytes = 2,
}

pub(crate) mod sealed {
    use super::*;

    /// Internal operations on a kind. Every slicing operation takes byte offsets that sit on
    /// ASCII delimiters, so they are always char boundaries for `str`; out-of-range or
    /// misaligned offsets yield an empty slice instead of panicking.
    pub trait Sealed: ToOwned + PartialEq + std::fmt::Debug + Send + Sync + 'static {
        /// Run-time tag of the kind.
        const TAG: KindTag;
        /// The empty string of this kind.
        const EMPTY: &'static Self;
        /// The underlying bytes.
        fn raw(&self) -> &[u8];
        /// The sub-string `start..end` (byte offsets), or empty when not a valid range.
        fn sub(&self, start: usize, end: usize) -> &Self;
        /// A `&str` seen as this kind (bytes: its UTF-8 bytes).
        fn from_str_ref(s: &str) -> &Self;
        /// A copy without tab, CR and LF.
        fn without_tab_crlf(&self) -> Self::Owned;
        /// Lowercases the ASCII letters of `owned[..end]` in place.
        fn lowercase_prefix(owned: &mut Self::Owned, end: usize);
        /// A new, empty owned buffer.
        fn new_owned(capacity: usize) -> Self::Owned;
        /// Appends `s` to `buf`.
        fn push(buf: &mut Self::Owned, s: &Self);
        /// Appends ASCII text to `buf`.
        fn push_ascii(buf: &mut Self::Owned, s: &str);
        /// Lowercased as CPython's `str.lower()` / `bytes.lower()` would.
        fn lower(&self) -> Cow<'_, Self>;
        /// CPython's `_checknetloc`: the NFKC check (text only).
        fn check_nfkc(netloc: &Self) -> Result<(), crate::UrlError>;
        /// Approximation of Python's `repr()` of the value as a `str` (bytes are decoded as
        /// latin-1, as CPython would have decoded ASCII).
        fn py_repr(&self) -> String;
        /// Text for messages.
        fn lossy(&self) -> Cow<'_, str>;
        /// A boxed copy.
        fn boxed(&self) -> Box<Self>;
    }
}

fn find_any3(b: &[u8]) -> bool {
    b.iter().any(|&c| c == b'\t' || c == b'\r' || c == b'\n')
}

impl sealed::Sealed for str {
    const TAG: KindTag = KindTag::Text;
    const EMPTY: &'static Self = "";

    fn raw(&self) -> &[u8] {
        self.as_bytes()
    }
    fn sub(&self, start: usize, end: usize) -> &Self {
        self.get(start..end).unwrap_or("")
    }
    fn from_str_ref(s: &str) -> &Self {
        s
    }
    fn without_tab_crlf(&self) -> String {
        if !find_any3(self.as_bytes()) {
            return self.to_owned();
        }
        self.chars()
            .filter(|&c| c != '\t' && c != '\r' && c != '\n')
            .collect()
    }
    fn lowercase_prefix(owned: &mut String, end: usize) {
        if let Some(p) = owned.get_mut(..end) {
            p.make_ascii_lowercase();
        }
    }
    fn new_owned(capacity: usize) -> String {
        String::with_capacity(capacity)
    }
    fn push(buf: &mut String, s: &str) {
        buf.push_str(s);
    }
    fn push_ascii(buf: &mut String, s: &str) {
        buf.push_str(s);
    }
    fn lower(&self) -> Cow<'_, str> {
        if self.is_ascii() {
            if self.bytes().any(|c| c.is_ascii_uppercase()) {
                Cow::Owned(self.to_ascii_lowercase())
            } else {
                Cow::Borrowed(self)
            }
        } else {
            let l = self.to_lowercase();
            if l == self {
                Cow::Borrowed(self)
            } else {
                Cow::Owned(l)
            }
        }
    }
    fn check_nfkc(netloc: &str) -> Result<(), crate::UrlError> {
        use unicode_normalization::UnicodeNormalization;
        if netloc.is_ascii() {
            return Ok(());
        }
        let kept = || {
            netloc
                .chars()
                .filter(|c| !matches!(c, '@' | ':' | '#' | '?'))
        };
        if kept().eq(kept().nfkc()) {
            return Ok(());
        }
        if kept()
            .nfkc()
            .any(|c| matches!(c, '/' | '?' | '#' | '@' | ':'))
        {
            return Err(crate::UrlError::NetlocNfkc {
                netloc: netloc.to_owned(),
            });
        }
        Ok(())
    }
    fn py_repr(&self) -> String {
        crate::error::py_repr(self.chars())
    }
    fn lossy(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
    fn boxed(&self) -> Box<str> {
        Box::from(self)
    }
}

impl sealed::Sealed for [u8] {
    const TAG: KindTag = KindTag::Bytes;
    const EMPTY: &'static Self = b"";

    fn raw(&self) -> &[u8] {
        self
    }
    fn sub(&self, start: usize, end: usize) -> &Self {
        self.get(start..end).unwrap_or(b"")
    }
    fn from_str_ref(s: &str) -> &Self {
        s.as_bytes()
    }
    fn without_tab_crlf(&self) -> Vec<u8> {
        self.iter()
            .copied()
            .filter(|&c| c != b'\t' && c != b'\r' && c != b'\n')
            .collect()
    }
    fn lowercase_prefix(owned: &mut Vec<u8>, end: usize) {
        if let Some(p) = owned.get_mut(..end) {
            p.make_ascii_lowercase();
        }
    }
    fn new_owned(capacity: usize) -> Vec<u8> {
        Vec::with_capacity(capacity)
    }
    fn push(buf: &mut Vec<u8>, s: &[u8]) {
        buf.extend_from_slice(s);
    }
    fn push_ascii(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(s.as_bytes());
    }
    fn lower(&self) -> Cow<'_, [u8]> {
        if self.iter().any(|c| c.is_ascii_uppercase()) {
            Cow::Owned(self.to_ascii_lowercase())
        } else {
            Cow::Borrowed(self)
        }
    }
    fn check_nfkc(_netloc: &[u8]) -> Result<(), crate::UrlError> {
        Ok(())
    }
    fn py_repr(&self) -> String {
        crate::error::py_repr(self.iter().map(|&b| char::from(b)))
    }
    fn lossy(&self) -> Cow<'_, str> {
        Cow::Owned(self.iter().map(|&b| char::from(b)).collect())
    }
    fn boxed(&self) -> Box<[u8]> {
        Box::from(self)
    }
}
