//! Bracketed hosts: the checks `urlsplit` makes on a netloc holding `[` or `]`, with
//! `ipaddress`'s IPv4 and IPv6 rules (CPython 3.11).

use crate::scan::find;
use crate::UrlError;

/// The bracket checks of `urlsplit` on a netloc.
pub(crate) fn check_brackets(net: &[u8]) -> Result<(), UrlError> {
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
