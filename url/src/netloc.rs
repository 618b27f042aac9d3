//! The netloc attributes: `username`, `password`, `hostname`, `port`.

use std::borrow::Cow;

use crate::result::{Parse, Split};
use crate::scan::{find, rfind};
use crate::{Kind, UrlError};

/// CPython's `_userinfo[0]`: the text before the first `:` of what precedes the last `@`.
fn username<K: Kind + ?Sized>(netloc: &K) -> Option<&K> {
    let b = netloc.raw();
    let at = rfind(b, b'@')?;
    let info = &b[..at];
    Some(netloc.sub(0, find(info, b':').unwrap_or(at)))
}

/// CPython's `_userinfo[1]`.
fn password<K: Kind + ?Sized>(netloc: &K) -> Option<&K> {
    let b = netloc.raw();
    let at = rfind(b, b'@')?;
    let colon = find(&b[..at], b':')?;
    Some(netloc.sub(colon + 1, at))
}

/// CPython's `_hostinfo`: (host, port text or `None` when empty).
fn hostinfo<K: Kind + ?Sized>(netloc: &K) -> (&K, Option<&K>) {
    let b = netloc.raw();
    let start = rfind(b, b'@').map_or(0, |i| i + 1);
    let hi = &b[start..];
    let (host, port_from) = if let Some(ob) = find(hi, b'[') {
        let s = start + ob + 1;
        match find(&b[s..], b']') {
            Some(cb) => {
                let after = s + cb + 1;
                let port = find(&b[after..], b':').map_or(b.len(), |c| after + c + 1);
                ((s, s + cb), port)
            }
            None => ((s, b.len()), b.len()),
        }
    } else {
        match find(hi, b':') {
            Some(c) => ((start, start + c), start + c + 1),
            None => ((start, b.len()), b.len()),
        }
    };
    let port = netloc.sub(port_from, b.len());
    let port = if port.raw().is_empty() {
        None
    } else {
        Some(port)
    };
    (netloc.sub(host.0, host.1), port)
}

/// CPython's `hostname`: lowercased up to the first `%` (an IPv6 zone keeps its case),
/// `None` when empty.
fn hostname<K: Kind + ?Sized>(netloc: &K) -> Option<Cow<'_, K>> {
    let (host, _) = hostinfo(netloc);
    let b = host.raw();
    if b.is_empty() {
        return None;
    }
    let pct = find(b, b'%').unwrap_or(b.len());
    let head = host.sub(0, pct);
    match head.lower() {
        Cow::Borrowed(_) => Some(Cow::Borrowed(host)),
        Cow::Owned(mut lowered) => {
            K::push(&mut lowered, host.sub(pct, b.len()));
            Some(Cow::Owned(lowered))
        }
    }
}

/// CPython's `port`: `None` when empty, an error when not ASCII digits or out of range.
fn port<K: Kind + ?Sized>(netloc: &K) -> Result<Option<u16>, UrlError> {
    let (_, port) = hostinfo(netloc);
    let Some(port) = port else {
        return Ok(None);
    };
    let b = port.raw();
    if !b.iter().all(u8::is_ascii_digit) {
        return Err(UrlError::PortNotInteger {
            port: port.lossy().into_owned(),
        });
    }
    let digits = &b[b.iter().take_while(|&&c| c == b'0').count()..];
    if digits.len() > 5 {
        return Err(UrlError::PortOutOfRange);
    }
    let v = digits
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(v)
        .map(Some)
        .map_err(|_| UrlError::PortOutOfRange)
}

impl<K: Kind + ?Sized> Split<'_, K> {
    /// The user name (CPython's `.username`): `None` without `@` in the netloc.
    pub fn username(&self) -> Option<&K> {
        username(self.netloc())
    }

    /// The password (CPython's `.password`): `None` without `:` before the last `@`.
    pub fn password(&self) -> Option<&K> {
        password(self.netloc())
    }

    /// The host (CPython's `.hostname`): lowercased except an IPv6 zone after `%`,
    /// brackets removed, `None` when empty. Allocates only if lowercasing changes it.
    pub fn hostname(&self) -> Option<Cow<'_, K>> {
        hostname(self.netloc())
    }

    /// The port (CPython's `.port`): `Ok(None)` when absent or empty.
    ///
    /// # Errors
    /// [`UrlError::PortNotInteger`] or [`UrlError::PortOutOfRange`], where CPython raises
    /// `ValueError`.
    pub fn port(&self) -> Result<Option<u16>, UrlError> {
        port(self.netloc())
    }
}

/// The same attributes on a parse (whose netloc is its split's).
impl<K: Kind + ?Sized> Parse<'_, K> {
    /// As [`Split::username`].
    pub fn username(&self) -> Option<&K> {
        self.as_split().username()
    }

    /// As [`Split::password`].
    pub fn password(&self) -> Option<&K> {
        self.as_split().password()
    }

    /// As [`Split::hostname`].
    pub fn hostname(&self) -> Option<Cow<'_, K>> {
        self.as_split().hostname()
    }

    /// As [`Split::port`].
    ///
    /// # Errors
    /// As [`Split::port`].
    pub fn port(&self) -> Result<Option<u16>, UrlError> {
        self.as_split().port()
    }
}
