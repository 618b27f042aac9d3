//! End-to-end test of the `urlsplit --jsonl` tool (`examples/urlsplit.rs`): builds the example
//! in a target directory of its own (the outer `cargo test` holds the main one), feeds it
//! requests of every op and kind (latin-1 bytes and error cases included) and compares each
//! answer line, as JSON, with the answer computed at test time by `python3`'s
//! `urllib.parse` (CPython 3.11, the reference). Bad input (malformed requests, lines that
//! are not UTF-8) must be answered as such, not stop the tool, and make the exit status 1.
//!
//! Bytes that are not ASCII: CPython raises for them, the crate treats them as opaque. The
//! oracle models "opaque" by mapping each such byte to a private-use character (which no
//! lowercasing or NFKC step changes), running the text function and mapping back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tool() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("urlsplit-tool");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root())
        .args(["build", "--quiet", "--example", "urlsplit", "--target-dir"])
        .arg(&dir)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the urlsplit example failed");
    dir.join("debug").join("examples").join("urlsplit")
}

const ORACLE: &str = r#"
import json, sys
from urllib.parse import urlsplit, urlparse, urljoin, urldefrag

def to_text(b):  # opaque bytes -> text the text functions leave alone
    return "".join(chr(c) if c < 128 else chr(0xE000 + c) for c in b)

def from_text(s):
    return "".join(c if ord(c) < 128 else chr(ord(c) - 0xE000) for c in s)

def answer(req):
    op, kind = req["op"], req["kind"]
    url, base = req.get("url", ""), req.get("base", "")
    scheme, af = req.get("scheme", ""), req.get("allow_fragments", True)
    if kind == "bytes":
        raw = [s.encode("latin-1") for s in (url, base, scheme)]
        if all(b.isascii() for b in raw):
            url, base, scheme = raw
            out = lambda v: None if v is None else v.decode("latin-1")
        else:
            url, base, scheme = (to_text(b) for b in raw)
            out = lambda v: None if v is None else from_text(v)
    else:
        out = lambda v: v
    try:
        if op in ("split", "parse"):
            r = (urlsplit if op == "split" else urlparse)(url, scheme, af)
            d = {k: out(getattr(r, k)) for k in r._fields}
            for k in ("username", "password", "hostname"):
                d[k] = out(getattr(r, k))
            try:
                d["port"] = r.port
            except ValueError:
                d["port"] = "error"
            return d
        if op == "join":
            return {"url": out(urljoin(base, url, af))}
        if op == "defrag":
            r = urldefrag(url)
            return {"url": out(r.url), "fragment": out(r.fragment)}
        raise SystemExit("bad op " + op)
    except ValueError as e:
        return {"error": str(e)}

for line in sys.stdin:
    if line.strip():
        print(json.dumps(answer(json.loads(line))))
"#;

/// Runs `cmd` with `input` on its standard input; its whole output (stderr piped too).
fn output_with_input(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer").expect("write stdin");
    out
}

/// Runs `cmd` on `input`, which must succeed; its standard output.
fn run(cmd: &mut Command, input: &str) -> String {
    let out = output_with_input(cmd, input.as_bytes());
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn requests() -> Vec<Value> {
    let urls = [
        "http://User:Pa%20ss@Example.COM:8080/a/b;p?q=1&r=2#frag",
        "HTTPS://[::1]:443/x?y#z",
        "http://[v1.fe]/",
        "  \x01http://a/b\tc\r\n",
        "ftp://ftp.example.org/pub;type=d",
        "//netloc/only?q",
        "path/only#f",
        "mailto:someone@example.com",
        "http://a:b@c:65535/",
        "http://a:65536/",
        "http://a:x1/",
        "http://a:/",
        "http://[::1/",
        "http://::1]/",
        "http://[1.2.3.4]/",
        "http://[zz]/",
        "http://[vz.x]/",
        "http://ex\u{ff0f}ample/",
        "http://ex\u{e9}mple.com/caf\u{e9}",
        "http://h\u{f6}st:80/\u{e4}?\u{fc}#\u{df}",
        "http://\u{c9}X.com/\u{ff}\u{80}",
        "a#b#c?d",
        "",
        "#",
        "?",
        "x:y",
        "1http://a",
        "https:relative",
    ];
    let mut reqs = Vec::new();
    for kind in ["str", "bytes"] {
        for u in urls {
            if kind == "bytes" && u.chars().any(|c| u32::from(c) > 0xff) {
                continue;
            }
            for op in ["split", "parse", "defrag"] {
                reqs.push(json!({"op": op, "kind": kind, "url": u}));
            }
            reqs.push(json!({"op": "split", "kind": kind, "url": u, "scheme": "https"}));
            reqs.push(json!({"op": "parse", "kind": kind, "url": u, "allow_fragments": false}));
            for base in ["http://a/b/c/d;p?q", "https://H\u{e9}/x/", ""] {
                reqs.push(json!({"op": "join", "kind": kind, "url": u, "base": base}));
                reqs.push(json!({
                    "op": "join", "kind": kind, "url": u, "base": base, "allow_fragments": false
                }));
            }
        }
        for rel in ["../g", "./g;x?y#s", "//g", "../../../g", "g/./h/../i", ".."] {
            reqs.push(
                json!({"op": "join", "kind": kind, "url": rel, "base": "http://a/b/c/d;p?q"}),
            );
        }
    }
    reqs
}

#[test]
fn jsonl_tool_matches_cpython() {
    let reqs = requests();
    let input: String = reqs.iter().map(|r| format!("{r}\n")).collect();
    let expected = run(Command::new("python3").args(["-c", ORACLE]), &input);
    let got = run(Command::new(tool()).arg("--jsonl"), &input);
    let expected: Vec<&str> = expected.lines().collect();
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(expected.len(), reqs.len(), "python3 answered every request");
    assert_eq!(got.len(), reqs.len(), "the tool answered every request");
    let mut mismatches = Vec::new();
    for ((req, want), have) in reqs.iter().zip(&expected).zip(&got) {
        let want: Value = serde_json::from_str(want).expect("python JSON");
        let have_v: Value = serde_json::from_str(have)
            .unwrap_or_else(|e| panic!("tool answer is not JSON ({e}): {have}"));
        if want != have_v {
            mismatches.push(format!("{req}\n  python: {want}\n  tool:   {have}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} answers differ:\n{}",
        mismatches.len(),
        reqs.len(),
        mismatches.join("\n")
    );
    for kind in ["str", "bytes"] {
        for op in ["split", "parse", "join", "defrag"] {
            assert!(
                reqs.iter().any(|r| r["op"] == op && r["kind"] == kind),
                "{op}/{kind} covered"
            );
        }
    }
    let errors = expected.iter().filter(|l| l.contains("\"error\"")).count();
    assert!(errors >= 4, "error answers covered ({errors})");
    eprintln!("{} requests, all equal to CPython", reqs.len());
}

/// A line that is not UTF-8 is answered with an error naming it, the lines after it are still
/// answered, and the exit status says the input was bad (it used to end the input silently).
#[test]
fn invalid_utf8_line_is_reported_not_truncated() {
    for jsonl in [true, false] {
        let mut input: Vec<u8> = Vec::new();
        let good = if jsonl {
            r#"{"op": "split", "kind": "str", "url": "http://a/b"}"#
        } else {
            "http://a/b"
        };
        input.extend_from_slice(good.as_bytes());
        input.extend_from_slice(b"\nhttp://\xff\xfe/bad\n");
        input.extend_from_slice(good.as_bytes());
        input.push(b'\n');
        let mut cmd = Command::new(tool());
        if jsonl {
            cmd.arg("--jsonl");
        }
        let out = output_with_input(&mut cmd, &input);
        assert_eq!(out.status.code(), Some(1), "jsonl={jsonl}: exit status");
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.len(),
            3,
            "jsonl={jsonl}: every line answered: {stdout}"
        );
        assert!(lines[1].contains("line 2: not valid UTF-8"), "{}", lines[1]);
        assert!(
            lines[2].contains("http"),
            "the line after the bad one: {}",
            lines[2]
        );
        if jsonl {
            let v: Value = serde_json::from_str(lines[1]).expect("error answer is JSON");
            assert!(v["error"].is_string());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("line 2"), "stderr names the line: {stderr}");
    }
}

/// Runs the tool with `--jsonl` on `input`; returns (exit code, stdout lines, stderr).
fn run_jsonl(input: &str) -> (Option<i32>, Vec<String>, String) {
    let out = output_with_input(Command::new(tool()).arg("--jsonl"), input.as_bytes());
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    let lines = stdout.lines().map(str::to_owned).collect();
    (
        out.status.code(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Bad requests and the part of the answer that names the problem. Each one used to be
/// answered as something else (a split of `""`, an "unknown op", a mangled URL) or silently
/// accepted.
const BAD_REQUESTS: &[(&str, &str)] = &[
    (r#"{"op": split}"#, "expected value"),
    (r#"{"op":"split","ur1":"http://x/"}"#, "unknown field `ur1`"),
    (r#"{"op":"split","url":123}"#, "invalid type: integer `123`"),
    (r#"{"op":"split","url":"a\q"}"#, "invalid escape"),
    (
        r#"{"op":"split","url":"http://a/"} x"#,
        "trailing characters",
    ),
    (
        r#"{"op":"split","url":"http://a/"}{}"#,
        "trailing characters",
    ),
    (
        r#"{"op":"split","url":"a","url":"b"}"#,
        "duplicate field `url`",
    ),
    (
        r#"{"op":"split","op":"split","url":"a"}"#,
        "duplicate field `op`",
    ),
    (r#"{"op":"split"}"#, "missing field `url`"),
    (r#"{"url":"http://a/"}"#, "missing field `op`"),
    (r#"{}"#, "missing field `op`"),
    (r#"{"op":"splat","url":"a"}"#, "unknown variant `splat`"),
    (
        r#"{"op":"split","kind":"text","url":"a"}"#,
        "unknown variant `text`",
    ),
    (r#"{"op":"split","url":null}"#, "invalid type: null"),
    (
        r#"{"op":"split","url":"a","scheme":null}"#,
        "invalid type: null",
    ),
    (
        r#"{"op":"split","url":"a","allow_fragments":"no"}"#,
        "invalid type: string",
    ),
    (r#"{"op":"join","url":"g"}"#, "missing field `base`"),
    (
        r#"{"op":"split","url":"g","base":"http://a/"}"#,
        "`base` is not taken by op `split`",
    ),
    (
        r#"{"op":"join","url":"g","base":"http://a/","scheme":"x"}"#,
        "`scheme` is not taken",
    ),
    (
        r#"{"op":"defrag","url":"g","allow_fragments":true}"#,
        "`allow_fragments` is not taken",
    ),
    (
        r#"{"op":"split","kind":"bytes","url":"\u0100"}"#,
        "is not a byte",
    ),
    (r#"{"op":"split","url":"\ud800\u0041"}"#, "surrogate"),
    (r#"["split","str","http://a/"]"#, "expected a JSON object"),
    ("not json", "expected"),
    ("{\"op\":\"split\",\"url\":\"http://a/", "EOF"),
];

const GOOD: &str = r#"{"op": "split", "url": "http://h/p?q#f"}"#;

fn good_answer() -> Value {
    json!({"scheme": "http", "netloc": "h", "path": "/p", "query": "q", "fragment": "f",
           "username": null, "password": null, "hostname": "h", "port": null})
}

/// Each bad request alone: one "bad request" answer naming the problem, the next (valid) line
/// still answered, exit status 1 and a summary on stderr.
#[test]
fn bad_request_is_answered_and_fails_the_run() {
    for &(bad, why) in BAD_REQUESTS {
        let (code, lines, stderr) = run_jsonl(&format!("{bad}\n{GOOD}\n"));
        assert_eq!(code, Some(1), "{bad}: exit status");
        assert_eq!(lines.len(), 2, "{bad}: one answer a line: {lines:?}");
        let err: Value = serde_json::from_str(&lines[0]).expect("error answer is JSON");
        let msg = err["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{bad}: {}", lines[0]));
        assert!(msg.starts_with("bad request: "), "{bad}: {msg}");
        assert!(msg.contains(why), "{bad}: {msg:?} should contain {why:?}");
        assert_eq!(err.as_object().map(|o| o.len()), Some(1), "{bad}: {err}");
        let next: Value = serde_json::from_str(&lines[1]).expect("answer is JSON");
        assert_eq!(next, good_answer(), "{bad}: the line after it");
        assert!(stderr.contains("line 1: bad request"), "{bad}: {stderr}");
        assert!(
            stderr.contains("1 of 2 line(s) were bad"),
            "{bad}: {stderr}"
        );
    }
}

/// All the bad requests in one input, between valid ones: every line answered in order.
#[test]
fn bad_requests_do_not_stop_the_input() {
    let mut input = String::new();
    for &(bad, _) in BAD_REQUESTS {
        input.push_str(&format!("{GOOD}\n{bad}\n"));
    }
    input.push_str(GOOD);
    input.push('\n');
    let (code, lines, stderr) = run_jsonl(&input);
    assert_eq!(code, Some(1));
    assert_eq!(lines.len(), 2 * BAD_REQUESTS.len() + 1, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        let v: Value = serde_json::from_str(line).expect("answer is JSON");
        if i % 2 == 0 {
            assert_eq!(v, good_answer(), "line {}", i + 1);
        } else {
            let msg = v["error"].as_str().expect("error answer");
            assert!(msg.starts_with("bad request: "), "line {}: {msg}", i + 1);
        }
    }
    let n = BAD_REQUESTS.len();
    assert!(
        stderr.contains(&format!(
            "{n} of {} line(s) were bad ({n} bad request(s)",
            2 * n + 1
        )),
        "{stderr}"
    );
}

/// Valid requests only (CPython's `ValueError` answers, blank lines and `\r\n` included):
/// exit status 0, nothing on stderr.
#[test]
fn valid_requests_exit_zero() {
    let input = format!(
        "{GOOD}\n\n   \n{}\r\n{}\n{}\n",
        r#"{"op": "split", "url": "http://[::1/"}"#,
        r#"{"op": "join", "kind": "bytes", "url": "g", "base": "http://a/\u00e9/", "allow_fragments": false}"#,
        r#" {"kind": "str", "op": "parse", "url": "x", "scheme": "s", "allow_fragments": true} "#,
    );
    let (code, lines, stderr) = run_jsonl(&input);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(lines.len(), 4, "{lines:?}");
    let v: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(v[0], good_answer());
    assert_eq!(v[1], json!({"error": "Invalid IPv6 URL"}));
    assert_eq!(v[2], json!({"url": "http://a/\u{e9}/g"}));
    assert_eq!(v[3]["scheme"], "s");
    assert_eq!(v[3]["path"], "x");
    assert_eq!(v[3]["params"], "");
}
