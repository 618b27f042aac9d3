//! `urlsplit`: CPython 3.11 `urllib.parse` from the command line.
//!
//! ```text
//! cargo run --release -p smallarena-url --example urlsplit -- --jsonl < requests.jsonl
//! cargo run --release -p smallarena-url --example urlsplit < urls.txt
//! ```
//!
//! Without `--jsonl`: one URL per input line, printed as a readable table of its `split`.
//!
//! # `--jsonl`: requests
//!
//! One JSON object per input line; lines that are empty or only whitespace are skipped (no
//! answer). Every other line gets exactly one answer line, in input order. Fields:
//!
//! | field | type | default | meaning |
//! |---|---|---|---|
//! | `op` | `"split"`, `"parse"`, `"join"` or `"defrag"` | required | `urlsplit`, `urlparse`, `urljoin`, `urldefrag` |
//! | `kind` | `"str"` or `"bytes"` | `"str"` | text or bytes arguments (see below) |
//! | `url` | string | required | the URL (for `join`: the reference resolved against `base`) |
//! | `base` | string | required for `join`, not allowed otherwise | `urljoin(base, url)` |
//! | `scheme` | string | `""` | `split`/`parse` only: the scheme reported when the URL has none |
//! | `allow_fragments` | boolean | `true` | `split`/`parse`/`join` only: `false` makes `#` ordinary |
//!
//! With `kind: "bytes"`, each character of a JSON string stands for one byte, U+0000..U+00FF
//! (latin-1), in requests and answers alike; a character above U+00FF is a bad request. The
//! `scheme` of a bytes request must be ASCII (the library takes the default scheme as text).
//!
//! The request is strict: it must be one JSON object and nothing else on the line, every value
//! must have the type above (`null` is not a value of any field), and an unknown field, a
//! field given twice, a missing `op`/`url` (or `base` for `join`), or a field the op does not
//! take (`base` outside `join`, `scheme` for `join`/`defrag`, `allow_fragments` for
//! `defrag`) makes it a bad request.
//!
//! # `--jsonl`: answers
//!
//! One JSON object per line, written like Python's `json.dumps` (`", "` and `": "`
//! separators); strings follow `kind`, absent values are `null`:
//!
//! * `split`: `scheme`, `netloc`, `path`, `query`, `fragment`, `username`, `password`,
//!   `hostname`, `port`.
//! * `parse`: the same plus `params` (after `path`).
//! * `join`: `url`.
//! * `defrag`: `url`, `fragment`.
//!
//! `port` is a number, `null` (no port), or the string `"error"` where CPython's `.port`
//! raises `ValueError` (not an integer, out of range); the other fields are still given.
//!
//! Errors are answers of their own, `{"error": "<message>"}`:
//!
//! * where CPython raises `ValueError` (for example `Invalid IPv6 URL`), the message is
//!   CPython's. Such an answer is a normal result: it does not change the exit status.
//! * a bad request gets `{"error": "bad request: <why>"}`, where `<why>` is serde_json's
//!   message for malformed JSON, wrong types, unknown, duplicate or missing fields and
//!   trailing characters (its "line 1 column N" counts within the request line), or names
//!   the field an op does not take, or the character that is not a byte.
//! * a line that is not valid UTF-8 gets `{"error": "bad request: line N: not valid UTF-8
//!   (...)"}` (without `--jsonl`: a table row `error: line N: ...`).
//!
//! A bad line never stops the tool: the following lines are still answered.
//!
//! # Exit status
//!
//! 0 when every line was answered and none was bad; 1 when any line was a bad request or not
//! valid UTF-8 (each one is also named, with its input line number, on stderr, followed by a
//! one-line summary); 2 when reading the input failed (stderr says why; answers already
//! written stay written).

use std::borrow::Cow;
use std::io::{BufRead, Write};

use serde::{Deserialize, Deserializer};
use smallarena_url::{self as url, Kind, Options, UrlError};

/// The operation of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Split,
    Parse,
    Join,
    Defrag,
}

/// Whether the strings of a request (and its answer) are text or latin-1 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StrKind {
    #[default]
    Str,
    Bytes,
}

/// One request line. Optional fields are `Option`s (not serde defaults) so that a field an
/// op does not take can be told apart from an absent one; `null` is rejected by [`present`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    op: Op,
    #[serde(default)]
    kind: StrKind,
    url: String,
    #[serde(default, deserialize_with = "present")]
    base: Option<String>,
    #[serde(default, deserialize_with = "present")]
    scheme: Option<String>,
    #[serde(default, deserialize_with = "present")]
    allow_fragments: Option<bool>,
}

/// A field that is given must hold a `T`: `null` is a type error, not "absent".
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl Request {
    /// Checks the fields against the op (what serde cannot say).
    fn check(&self) -> Result<(), String> {
        let op = match self.op {
            Op::Split => "split",
            Op::Parse => "parse",
            Op::Join => "join",
            Op::Defrag => "defrag",
        };
        let not_for = |field: &str| Err(format!("field `{field}` is not taken by op `{op}`"));
        match self.op {
            Op::Join if self.base.is_none() => {
                Err("missing field `base` (op `join` needs it)".into())
            }
            Op::Split | Op::Parse | Op::Defrag if self.base.is_some() => not_for("base"),
            Op::Join | Op::Defrag if self.scheme.is_some() => not_for("scheme"),
            Op::Defrag if self.allow_fragments.is_some() => not_for("allow_fragments"),
            _ => Ok(()),
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

fn answer<K: Kind + ?Sized>(op: Op, u: &K, base: &K, opts: &Options<'_>, text: bool) -> String {
    let err = |e: UrlError| format!("{{\"error\": {}}}", json_str(&e.to_string()));
    match op {
        Op::Split => match url::split_with(u, opts) {
            Ok(r) => format!(
                "{{\"scheme\": {}, \"netloc\": {}, \"path\": {}, \"query\": {}, \"fragment\": {}, \"username\": {}, \"password\": {}, \"hostname\": {}, \"port\": {}}}",
                kjson(r.scheme(), text), kjson(r.netloc(), text), kjson(r.path(), text),
                kjson(r.query(), text), kjson(r.fragment(), text), kopt(r.username(), text),
                kopt(r.password(), text), kopt(r.hostname().as_deref(), text), port_json(r.port())
            ),
            Err(e) => err(e),
        },
        Op::Parse => match url::parse_with(u, opts) {
            Ok(r) => format!(
                "{{\"scheme\": {}, \"netloc\": {}, \"path\": {}, \"params\": {}, \"query\": {}, \"fragment\": {}, \"username\": {}, \"password\": {}, \"hostname\": {}, \"port\": {}}}",
                kjson(r.scheme(), text), kjson(r.netloc(), text), kjson(r.path(), text),
                kjson(r.params(), text), kjson(r.query(), text), kjson(r.fragment(), text),
                kopt(r.username(), text), kopt(r.password(), text),
                kopt(r.hostname().as_deref(), text), port_json(r.port())
            ),
            Err(e) => err(e),
        },
        Op::Join => match url::join_with(base, u, opts.allow_fragments) {
            Ok(r) => {
                let r: Cow<'_, K> = r;
                format!("{{\"url\": {}}}", kjson(&*r, text))
            }
            Err(e) => err(e),
        },
        Op::Defrag => match url::defrag(u) {
            Ok(d) => format!(
                "{{\"url\": {}, \"fragment\": {}}}",
                kjson(&*d.url, text),
                kjson(&*d.fragment, text)
            ),
            Err(e) => err(e),
        },
    }
}

fn latin1(field: &str, s: &str) -> Result<Vec<u8>, String> {
    s.chars()
        .map(|c| {
            u8::try_from(u32::from(c)).map_err(|_| {
                format!("field `{field}`: character {c:?} is not a byte (kind `bytes`)")
            })
        })
        .collect()
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

fn error_json(msg: &str) -> String {
    format!("{{\"error\": {}}}", json_str(msg))
}

/// Answers one request line: `Ok(answer)` (a URL error included), or `Err(why)` for a bad
/// request.
fn request(line: &str) -> Result<String, String> {
    // A derived struct also accepts a JSON array (its fields by position): only objects here.
    if !line.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde_json::Value>(line) {
            Err(e) => e.to_string(),
            Ok(v) => format!("invalid type: {}, expected a JSON object", json_type(&v)),
        });
    }
    let req: Request = serde_json::from_str(line).map_err(|e| e.to_string())?;
    req.check()?;
    let scheme = req.scheme.as_deref().unwrap_or("");
    let opts = Options {
        default_scheme: scheme,
        allow_fragments: req.allow_fragments.unwrap_or(true),
    };
    let base = req.base.as_deref().unwrap_or("");
    Ok(match req.kind {
        StrKind::Str => answer(req.op, req.url.as_str(), base, &opts, true),
        StrKind::Bytes => {
            if !scheme.is_ascii() {
                return Err("field `scheme`: must be ASCII for kind `bytes`".into());
            }
            let (u, b) = (latin1("url", &req.url)?, latin1("base", base)?);
            answer(req.op, u.as_slice(), b.as_slice(), &opts, false)
        }
    })
}

fn main() {
    let jsonl = std::env::args().any(|a| a == "--jsonl");
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // Lines are read as bytes so that a line that is not UTF-8, like a bad request, is answered
    // with an error and the rest of the input is still processed; the exit status says whether
    // any line was bad.
    let (mut not_utf8, mut bad_requests, mut lines) = (0usize, 0usize, 0usize);
    for (n, line) in stdin.lock().split(b'\n').enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                let _ = out.flush();
                eprintln!("urlsplit: reading line {}: {e}", n + 1);
                std::process::exit(2);
            }
        };
        lines += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        let written = match std::str::from_utf8(line) {
            Err(e) => {
                not_utf8 += 1;
                let msg = format!("line {}: not valid UTF-8 ({e})", n + 1);
                eprintln!("urlsplit: {msg}");
                if jsonl {
                    writeln!(out, "{}", error_json(&format!("bad request: {msg}")))
                } else {
                    writeln!(out, "error: {msg}")
                }
            }
            Ok(line) if jsonl => {
                if line.trim().is_empty() {
                    continue;
                }
                match request(line) {
                    Ok(answer) => writeln!(out, "{answer}"),
                    Err(why) => {
                        bad_requests += 1;
                        eprintln!("urlsplit: line {}: bad request: {why}", n + 1);
                        writeln!(out, "{}", error_json(&format!("bad request: {why}")))
                    }
                }
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
    if not_utf8 + bad_requests > 0 {
        eprintln!(
            "urlsplit: {} of {lines} line(s) were bad ({bad_requests} bad request(s), {not_utf8} not valid UTF-8)",
            not_utf8 + bad_requests
        );
        std::process::exit(1);
    }
}
