//! Errors as values, with CPython's messages.

use std::fmt;

/// Why a URL (or one of its netloc attributes) was rejected. Each variant corresponds to a
/// `ValueError` raised by CPython 3.11's `urllib.parse`; [`fmt::Display`] gives CPython's
/// message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// The netloc has a `[` without `]` or a `]` without `[`.
    InvalidIpv6Url,
    /// A bracketed host starting with `v` is not `v<hex>.<something>`.
    InvalidIpvFuture,
    /// A bracketed host is an IPv4 address.
    Ipv4InBrackets,
    /// A bracketed host is neither an IPv4 nor an IPv6 address.
    InvalidBracketedHost {
        /// The host between the brackets.
        host: String,
    },
    /// (Text only.) The netloc contains characters that NFKC-normalize to one of `/?#@:`.
    NetlocNfkc {
        /// The offending netloc.
        netloc: String,
    },
    /// The port is not made of ASCII digits only.
    PortNotInteger {
        /// The port text.
        port: String,
    },
    /// The port is outside `0..=65535`.
    PortOutOfRange,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::InvalidIpv6Url => f.write_str("Invalid IPv6 URL"),
            UrlError::InvalidIpvFuture => f.write_str("IPvFuture address is invalid"),
            UrlError::Ipv4InBrackets => f.write_str("An IPv4 address cannot be in brackets"),
            UrlError::InvalidBracketedHost { host } => write!(
                f,
                "{} does not appear to be an IPv4 or IPv6 address",
                py_repr(host.chars())
            ),
            UrlError::NetlocNfkc { netloc } => write!(
                f,
                "netloc '{netloc}' contains invalid characters under NFKC normalization"
            ),
            UrlError::PortNotInteger { port } => write!(
                f,
                "Port could not be cast to integer value as {}",
                py_repr(port.chars())
            ),
            UrlError::PortOutOfRange => f.write_str("Port out of range 0-65535"),
        }
    }
}

impl std::error::Error for UrlError {}

/// Rough equivalent of Python's `str.isprintable()` for one non-ASCII character.
fn printable(c: char) -> bool {
    !(c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}'))
}

/// An approximation of Python's `repr(str)`.
pub(crate) fn py_repr(chars: impl Iterator<Item = char> + Clone) -> String {
    let (mut single, mut double) = (false, false);
    for c in chars.clone() {
        single |= c == '\'';
        double |= c == '"';
    }
    let quote = if single && !double { '"' } else { '\'' };
    let mut out = String::new();
    out.push(quote);
    for c in chars {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_ascii() || printable(c) => out.push(c),
            c if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
    out
}
