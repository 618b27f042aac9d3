//! End-to-end test of the `urlsplit --jsonl` tool (`examples/urlsplit.rs`): builds the example
//! in a target directory of its own (the outer `cargo test` holds the main one), feeds it
//! requests of every op and kind (latin-1 bytes and error cases included) and compares each
//! answer line, as JSON, with the answer computed at test time by `python3`'s
//! `urllib.parse` (CPython 3.11, the reference).
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

fn run(cmd: &mut Command, input: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer").expect("write stdin");
    assert!(out.status.success(), "{cmd:?} failed");
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
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait");
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
