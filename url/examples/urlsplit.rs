//! `cargo run --release -p smallarena-url --example urlsplit -- --jsonl`: one JSON request per input line, one
//! JSON answer per output line (see issue 7 for the format). Without `--jsonl`: one URL per
//! line, printed as a readable table of its split.
//!
//! For kind `bytes`, each character of a JSON string stands for one byte (U+0000..U+00FF),
//! in requests and answers alike. No JSON library is used: requests are flat objects of
//! strings, booleans and nulls, parsed by the small reader below.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, Write};

use smallarena_url::{self as url, Kind, Options, UrlError};

#[derive(Debug)]
enum Value {
    Str(String),
    Bool(bool),
    Null,
    Other,
}

/// Parses one flat JSON object.
fn parse_object(s: &str) -> Result<HashMap<String, Value>, String> {
    let mut it = s.trim().chars().peekable();
    let mut out = HashMap::new();
    let ws = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
    };
    if it.next() != Some('{') {
        return Err("expected an object".into());
    }
    ws(&mut it);
    if it.peek() == Some(&'}') {
        return Ok(out);
    }
    loop {
        ws(&mut it);
        let key = parse_string(&mut it)?;
        ws(&mut it);
        if it.next() != Some(':') {
            return Err("expected ':'".into());
        }
        ws(&mut it);
        let v = match it.peek() {
            Some('"') => Value::Str(parse_string(&mut it)?),
            _ => {
                let mut word = String::new();
                while it
                    .peek()
                    .is_some_and(|c| !matches!(c, ',' | '}') && !c.is_whitespace())
                {
                    word.extend(it.next());
                }
                match word.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" => Value::Null,
                    _ => Value::Other,
                }
            }
        };
        out.insert(key, v);
        ws(&mut it);
        match it.next() {
            Some(',') => continue,
            Some('}') => return Ok(out),
            _ => return Err("expected ',' or '}'".into()),
        }
    }
}

fn parse_string(it: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, String> {
    if it.next() != Some('"') {
        return Err("expected a string".into());
    }
    let mut s = String::new();
    let hex4 = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Result<u32, String> {
        let h: String = it.take(4).collect();
        u32::from_str_radix(&h, 16).map_err(|_| "bad \\u escape".to_string())
    };
    loop {
        match it.next().ok_or("unterminated string")? {
            '"' => return Ok(s),
            '\\' => match it.next().ok_or("bad escape")? {
                'n' => s.push('\n'),
                't' => s.push('\t'),
                'r' => s.push('\r'),
                'b' => s.push('\u{8}'),
                'f' => s.push('\u{c}'),
                'u' => {
                    let mut c = hex4(it)?;
                    if (0xd800..0xdc00).contains(&c)
                        && it.next() == Some('\\')
                        && it.next() == Some('u')
                    {
                        let lo = hex4(it)?;
                        c = 0x10000 + ((c - 0xd800) << 10) + (lo.wrapping_sub(0xdc00) & 0x3ff);
                    }
                    s.push(char::from_u32(c).ok_or("lone surrogate")?);
                }
                c => s.push(c),
            },
            c => s.push(c),
        }
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A value of either kind as JSON text (bytes as latin-1 characters).
fn kjson<K: Kind + ?Sized>(v: &K, text: bool) -> String {
    if text {
        json_str(&String::from_utf8_lossy(v.as_url_bytes()))
    } else {
        json_str(
            &v.as_url_bytes()
                .iter()
                .map(|&b| char::from(b))
                .collect::<String>(),
        )
    }
}

fn kopt<K: Kind + ?Sized>(v: Option<&K>, text: bool) -> String {
    v.map_or_else(|| "null".into(), |v| kjson(v, text))
}

fn port_json(p: Result<Option<u16>, UrlError>) -> String {
    match p {
        Ok(Some(p)) => p.to_string(),
        Ok(None) => "null".into(),
        Err(_) => "\"error\"".into(),
    }
}

fn answer<K: Kind + ?Sized>(op: &str, u: &K, base: &K, opts: &Options<'_>, text: bool) -> String {
    let err = |e: UrlError| format!("{{\"error\": {}}}", json_str(&e.to_string()));
    match op {
        "split" => match url::split_with(u, opts) {
            Ok(r) => format!(
                "{{\"scheme\": {}, \"netloc\": {}, \"path\": {}, \"query\": {}, \"fragment\": {}, \"username\": {}, \"password\": {}, \"hostname\": {}, \"port\": {}}}",
                kjson(r.scheme(), text), kjson(r.netloc(), text), kjson(r.path(), text),
                kjson(r.query(), text), kjson(r.fragment(), text), kopt(r.username(), text),
                kopt(r.password(), text), kopt(r.hostname().as_deref(), text), port_json(r.port())
            ),
            Err(e) => err(e),
        },
        "parse" => match url::parse_with(u, opts) {
            Ok(r) => format!(
                "{{\"scheme\": {}, \"netloc\": {}, \"path\": {}, \"params\": {}, \"query\": {}, \"fragment\": {}, \"username\": {}, \"password\": {}, \"hostname\": {}, \"port\": {}}}",
                kjson(r.scheme(), text), kjson(r.netloc(), text), kjson(r.path(), text),
                kjson(r.params(), text), kjson(r.query(), text), kjson(r.fragment(), text),
                kopt(r.username(), text), kopt(r.password(), text),
                kopt(r.hostname().as_deref(), text), port_json(r.port())
            ),
            Err(e) => err(e),
        },
        "join" => match url::join_with(base, u, opts.allow_fragments) {
            Ok(r) => {
                let r: Cow<'_, K> = r;
                format!("{{\"url\": {}}}", kjson(&*r, text))
            }
            Err(e) => err(e),
        },
        "defrag" => match url::defrag(u) {
            Ok(d) => format!(
                "{{\"url\": {}, \"fragment\": {}}}",
                kjson(&*d.url, text),
                kjson(&*d.fragment, text)
            ),
            Err(e) => err(e),
        },
        _ => format!("{{\"error\": {}}}", json_str(&format!("unknown op {op:?}"))),
    }
}

fn latin1(s: &str) -> Result<Vec<u8>, String> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| format!("character {c:?} is not a byte")))
        .collect()
}

fn request(line: &str) -> String {
    let obj = match parse_object(line) {
        Ok(o) => o,
        Err(e) => return format!("{{\"error\": {}}}", json_str(&format!("bad request: {e}"))),
    };
    let get = |k: &str| match obj.get(k) {
        Some(Value::Str(s)) => s.clone(),
        _ => String::new(),
    };
    let op = get("op");
    let scheme = get("scheme");
    let allow_fragments = !matches!(obj.get("allow_fragments"), Some(Value::Bool(false)));
    let opts = Options {
        default_scheme: &scheme,
        allow_fragments,
    };
    let (u, base) = (get("url"), get("base"));
    if matches!(obj.get("kind"), Some(Value::Str(k)) if k == "bytes") {
        match (latin1(&u), latin1(&base)) {
            (Ok(ub), Ok(bb)) => answer(&op, ub.as_slice(), bb.as_slice(), &opts, false),
            (Err(e), _) | (_, Err(e)) => format!("{{\"error\": {}}}", json_str(&e)),
        }
    } else {
        let _ = (&Value::Null, &Value::Other);
        answer(&op, u.as_str(), base.as_str(), &opts, true)
    }
}

fn main() {
    let jsonl = std::env::args().any(|a| a == "--jsonl");
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // Lines are read as bytes so that one line that is not UTF-8 is answered with an error and
    // the rest of the input is still processed; the exit status says whether any line was bad.
    let mut bad_lines = 0usize;
    for (n, line) in stdin.lock().split(b'\n').enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                let _ = out.flush();
                eprintln!("urlsplit: reading line {}: {e}", n + 1);
                std::process::exit(2);
            }
        };
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        let written = match std::str::from_utf8(line) {
            Err(e) => {
                bad_lines += 1;
                let msg = format!("line {}: not valid UTF-8 ({e})", n + 1);
                eprintln!("urlsplit: {msg}");
                if jsonl {
                    writeln!(out, "{{\"error\": {}}}", json_str(&msg))
                } else {
                    writeln!(out, "error: {msg}")
                }
            }
            Ok(line) if jsonl => {
                if line.trim().is_empty() {
                    continue;
                }
                writeln!(out, "{}", request(line))
            }
            Ok(line) => match url::split(line) {
                Ok(r) => writeln!(
                    out,
                    "{:<40} scheme={:?} netloc={:?} path={:?} query={:?} fragment={:?} host={:?} port={:?}",
                    line, r.scheme(), r.netloc(), r.path(), r.query(), r.fragment(),
                    r.hostname(), r.port()
                ),
                Err(e) => writeln!(out, "{line:<40} error: {e}"),
            },
        };
        if written.is_err() {
            break;
        }
    }
    let _ = out.flush();
    if bad_lines > 0 {
        eprintln!("urlsplit: {bad_lines} line(s) were not valid UTF-8");
        std::process::exit(1);
    }
}
