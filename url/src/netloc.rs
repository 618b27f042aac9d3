//! The netloc attributes: `username`, `password`, `hostname`, `port`.

use std::borrow::Cow;

use super::{Kind, UrlError};

fn find(b: &[u8], c: u8) -> Option<usize> {
    b.iter().position(|&x| x == c)
}

fn rfind(b: &[u8], c: u8) -> Option<usize> {
    b.iter().rposition(|&x| x == c)
}

/// CPython's `_userinfo[0]`: the text before the first `:` of what precedes the last `@`.
pub(crate) fn username<K: Kind + ?Sized>(netloc: &K) -> Option<&K> {
    let b = netloc.raw();
    let at = rfind(b, b'@')?;
    let info = &b[..at];
    Some(netloc.sub(0, find(info, b':').unwrap_or(at)))
}

/// CPython's `_userinfo[1]`.
pub(crate) fn password<K: Kind + ?Sized>(netloc: &K) -> Option<&K> {
    let b = netloc.raw();
    let at = rfind(b, b'@')?;
    let colon = find(&b[..at], b':')?;
    Some(netloc.sub(colon + 1, at))
}

/// CPython's `_hostinfo`: (host, port text or `None` when empty).
pub(crate) fn hostinfo<K: Kind + ?Sized>(netloc: &K) -> (&K, Option<&K>) {
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
pub(crate) fn hostname<K: Kind + ?Sized>(netloc: &K) -> Option<Cow<'_, K>> {
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
pub(crate) fn port<K: Kind + ?Sized>(netloc: &K) -> Result<Option<u16>, UrlError> {
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

/// Adds the netloc attribute accessors to a result type that has `fn netloc(&self) -> &K`.
macro_rules! netloc_accessors {
    () => {
        /// The user name (CPython's `.username`): `None` without `@` in the netloc.
        pub fn username(&self) -> Option<&K> {
            crate::netloc::username(self.netloc())
        }

        /// The password (CPython's `.password`): `None` without `:` before the last `@`.
        pub fn password(&self) -> Option<&K> {
            crate::netloc::password(self.netloc())
        }

        /// The host (CPython's `.hostname`): lowercased except an IPv6 zone after `%`,
        /// brackets removed, `None` when empty. Allocates only if lowercasing changes it.
        pub fn hostname(&self) -> Option<std::borrow::Cow<'_, K>> {
            crate::netloc::hostname(self.netloc())
        }

        /// The port (CPython's `.port`): `Ok(None)` when absent or empty.
        ///
        /// # Errors
        /// [`UrlError::PortNotInteger`](crate::UrlError::PortNotInteger) or
        /// [`UrlError::PortOutOfRange`](crate::UrlError::PortOutOfRange), where CPython
        /// raises `ValueError`.
        pub fn port(&self) -> Result<Option<u16>, crate::UrlError> {
            crate::netloc::port(self.netloc())
        }
    };
}

pub(crate) use netloc_accessors;
