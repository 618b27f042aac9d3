//! Differential tests of `smallarena_url` against CPython 3.11 (`python3`), in bulk: every
//! case is written to one temporary file, one `python3` process (`tests/url_oracle.py`)
//! answers all of them, and the answers are compared here with the crate's, both uncached
//! and through a checked `UrlCache`.
//!
//! Corpora: the 48,009 URLs of `kasztp.txt` (text and bytes kinds), a hand-written list of
//! edge cases (controls, brackets, ports, schemes, NFKC, params), the RFC 3986 section 5.4
//! resolution examples over several bases, and generated inputs.
//!
//! Deliberate differences are excluded from the comparison and counted: bytes inputs that
//! are not ASCII (CPython raises `UnicodeDecodeError`, this crate accepts them as opaque).

use std::borrow::Cow;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use smallarena_url::{self as url, Kind, Options, UrlCache, UrlError};

mod url_pieces;

use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use url_pieces::PIECES;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Split,
    Parse,
    Join,
    Defrag,
}

#[derive(Clone, Debug)]
struct Case {
    op: Op,
    text: bool,
    allow_fragments: bool,
    url: String,
    base: String,
    scheme: String,
}

/// Lowercase hex of `b` (the exchange format with the oracle). The bytes kind is only
/// generated from ASCII text (non-ASCII bytes are a documented difference), so a `Case`'s
/// `String` holds both kinds.
fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut v = Vec::with_capacity(b.len() * 2);
    for &x in b {
        v.push(DIGITS[usize::from(x >> 4)]);
        v.push(DIGITS[usize::from(x & 15)]);
    }
    String::from_utf8(v).expect("hex digits are ASCII")
}

fn opt<K: Kind + ?Sized>(v: Option<&K>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| hex(v.as_url_bytes()))
}

fn port(p: Result<Option<u16>, UrlError>) -> String {
    match p {
        Ok(None) => "-".to_owned(),
        Ok(Some(p)) => p.to_string(),
        Err(_) => "E".to_owned(),
    }
}

fn err(e: &UrlError) -> String {
    format!("!{}", hex(e.to_string().as_bytes()))
}

macro_rules! fields {
    ($r:expr, [$($c:ident),*]) => {{
        let r = $r;
        let mut f: Vec<String> = vec![$(hex(r.$c().as_url_bytes())),*];
        f.push(opt(r.username()));
        f.push(opt(r.password()));
        f.push(opt(r.hostname().as_deref()));
        f.push(port(r.port()));
        f.join("\t")
    }};
}

fn answer<K: Kind + ?Sized>(c: &Case, u: &K, b: &K, cache: Option<&UrlCache>) -> String {
    let opts = Options {
        default_scheme: &c.scheme,
        allow_fragments: c.allow_fragments,
    };
    let res: Result<String, UrlError> = match (c.op, cache) {
        (Op::Split, None) => {
            url::split_with(u, &opts).map(|r| fields!(r, [scheme, netloc, path, query, fragment]))
        }
        (Op::Split, Some(cache)) => cache
            .split_with(u, &opts)
            .map(|r| fields!(r, [scheme, netloc, path, query, fragment])),
        (Op::Parse, None) => url::parse_with(u, &opts)
            .map(|r| fields!(r, [scheme, netloc, path, params, query, fragment])),
        (Op::Parse, Some(cache)) => cache
            .parse_with(u, &opts)
            .map(|r| fields!(r, [scheme, netloc, path, params, query, fragment])),
        (Op::Join, None) => {
            url::join_with(b, u, c.allow_fragments).map(|r: Cow<'_, K>| hex(r.as_url_bytes()))
        }
        (Op::Join, Some(cache)) => cache
            .join_with(b, u, c.allow_fragments)
            .map(|r: Cow<'_, K>| hex(r.as_url_bytes())),
        (Op::Defrag, _) => url::defrag(u).map(|d| {
            format!(
                "{}\t{}",
                hex(d.url.as_url_bytes()),
                hex(d.fragment.as_url_bytes())
            )
        }),
    };
    res.unwrap_or_else(|e| err(&e))
}

fn rust_answer(c: &Case, cache: Option<&UrlCache>) -> String {
    if c.text {
        answer::<str>(c, &c.url, &c.base, cache)
    } else {
        answer::<[u8]>(c, c.url.as_bytes(), c.base.as_bytes(), cache)
    }
}

fn oracle(name: &str, cases: &[Case]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("url_parity_{}_{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("cases.tsv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for c in cases {
        let op = match c.op {
            Op::Split => "split",
            Op::Parse => "parse",
            Op::Join => "join",
            Op::Defrag => "defrag",
        };
        writeln!(
            f,
            "{op}\t{}\t{}\t{}\t{}\t{}",
            if c.text { "str" } else { "bytes" },
            u8::from(c.allow_fragments),
            hex(c.url.as_bytes()),
            hex(c.base.as_bytes()),
            hex(c.scheme.as_bytes())
        )
        .unwrap();
    }
    drop(f);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/url_oracle.py");
    let out = Command::new("python3")
        .arg(&script)
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .expect("python3 must be installed (CPython 3.11 is the reference)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "python3 oracle failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), cases.len(), "oracle answered every case");
    lines
}

fn unhex(s: &str) -> String {
    let b: Vec<u8> = (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    String::from_utf8_lossy(&b).into_owned()
}

/// Compares; an error on both sides with different messages counts separately from a
/// structural mismatch.
fn compare(name: &str, cases: &[Case]) {
    // The oracle runs while the crate computes its answers.
    let t0 = std::time::Instant::now();
    let cache = UrlCache::builder().capacity(64).checked(true).build();
    let (expected, ours) = std::thread::scope(|s| {
        let py = s.spawn(|| {
            let t = std::time::Instant::now();
            let r = oracle(name, cases);
            eprintln!("[{name}] oracle alone took {:?}", t.elapsed());
            r
        });
        let ours: Vec<Vec<String>> = cases
            .iter()
            .map(|c| {
                if c.op == Op::Defrag {
                    // `defrag` has no cached variant.
                    vec![rust_answer(c, None)]
                } else {
                    vec![
                        rust_answer(c, None),
                        rust_answer(c, Some(&cache)),
                        rust_answer(c, Some(&cache)),
                    ]
                }
            })
            .collect();
        eprintln!("[{name}] crate answers took {:?}", t0.elapsed());
        (py.join().expect("oracle thread"), ours)
    });
    eprintln!("[{name}] oracle and crate took {:?}", t0.elapsed());
    let mut mismatches = Vec::new();
    let mut message_only = Vec::new();
    for ((c, want), runs) in cases.iter().zip(&expected).zip(ours) {
        for (how, got) in ["uncached", "cached", "cached-again"].into_iter().zip(runs) {
            if &got == want {
                continue;
            }
            if got.starts_with('!') && want.starts_with('!') {
                message_only.push(format!(
                    "{how} {c:?}\n   want {}\n   got  {}",
                    unhex(&want[1..]),
                    unhex(&got[1..])
                ));
            } else {
                mismatches.push(format!("{how} {c:?}\n   want {want}\n   got  {got}"));
            }
        }
    }
    let errors = expected.iter().filter(|w| w.starts_with('!')).count();
    let stats = cache.stats();
    eprintln!(
        "[{name}] {} cases ({errors} raising in CPython), each run uncached and (except defrag) twice through a checked cache, compared with CPython: {} mismatches, {} error-message-only differences; cache {:?}",
        cases.len(),
        mismatches.len(),
        message_only.len(),
        stats
    );
    for m in message_only.iter().take(5) {
        eprintln!("  message: {m}");
    }
    for m in mismatches.iter().take(20) {
        eprintln!("  MISMATCH: {m}");
    }
    assert!(
        mismatches.is_empty(),
        "{name}: {} mismatches",
        mismatches.len()
    );
    assert!(
        message_only.is_empty(),
        "{name}: {} message differences",
        message_only.len()
    );
    assert_eq!(stats.divergences, 0, "{:?}", cache.divergence_report());
    assert!(stats.hits > 0, "the checked cache was exercised");
}

/// Adds the case for both kinds (bytes only for ASCII: the documented difference).
fn both(out: &mut Vec<Case>, skipped: &mut usize, c: Case) {
    if c.url.is_ascii() && c.base.is_ascii() && c.scheme.is_ascii() {
        out.push(Case {
            text: false,
            ..c.clone()
        });
    } else {
        *skipped += 1;
    }
    out.push(c);
}

fn case(op: Op, url: &str) -> Case {
    Case {
        op,
        text: true,
        allow_fragments: true,
        url: url.to_owned(),
        base: String::new(),
        scheme: String::new(),
    }
}

fn corpus() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/urls/kasztp.txt");
    let path = std::env::var_os("URL_CORPUS").map_or(path, PathBuf::from);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("corpus {}: {e}", path.display()));
    text.lines().map(str::to_owned).collect()
}

const RFC3986_REFS: &[&str] = &[
    "g:h",
    "g",
    "./g",
    "g/",
    "/g",
    "//g",
    "?y",
    "g?y",
    "#s",
    "g#s",
    "g?y#s",
    ";x",
    "g;x",
    "g;x?y#s",
    "",
    ".",
    "./",
    "..",
    "../",
    "../g",
    "../..",
    "../../",
    "../../g",
    "../../../g",
    "../../../../g",
    "/./g",
    "/../g",
    "g.",
    ".g",
    "g..",
    "..g",
    "./../g",
    "./g/.",
    "g/./h",
    "g/../h",
    "g;x=1/./y",
    "g;x=1/../y",
    "g?y/./x",
    "g?y/../x",
    "g#s/./x",
    "g#s/../x",
    "http:g",
    "http:",
    "http://",
    "//",
    "///x",
    "a//b/../c",
    "../a//b",
    "HTTP:g",
    " g",
    "\tg",
    "g\n?y",
];

const BASES: &[&str] = &[
    "http://a/b/c/d;p?q",
    "http://a/b/c/d;p?q#frag",
    "http://a",
    "http://a/",
    "https://u:p@a:8080/b/",
    "ftp://u@h/x/y",
    "file:///x/y",
    "svn+ssh://h/a/b",
    "mailto:x@y",
    "g:h",
    "//a/b/c",
    "a/b/c",
    "/a/b",
    "HTTP://A/b/c",
    "http://[::1]/a/b",
    "",
    "http://a/b/c/.",
    "http://a/b//c/d",
];

const TRICKY: &[&str] = &[
    "",
    " ",
    "\u{0}http://a",
    " \t\nhttp://a/b",
    "\u{1f} \u{b}http://a",
    "ht\ttp://a/b",
    "http://a\r\n/b",
    "http://a/b\t?c\n#d\r",
    "http://a/ b ",
    "HTTP://A/B",
    "Http://WWW.Example.COM:80/",
    "HtTp+X-Y.Z://Host",
    "http://[::1]:80/",
    "http://[::1",
    "http://::1]/",
    "http://[v1.fe]/",
    "http://[V1.fe]/",
    "http://[v1.]/",
    "http://[vg.x]/",
    "http://[v.x]/",
    "http://[v12ab.:]",
    "http://[127.0.0.1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:127.0.0.01]/",
    "http://[::ffff:256.0.0.1]/",
    "http://[1:2:3:4:5:6:1.2.3.4]/",
    "http://[1:2:3:4:5:6:7:1.2.3.4]/",
    "http://[fe80::1%25eth0]/",
    "http://[fe80::1%eth0]:8080/p",
    "http://[fe80::1%]/",
    "http://[fe80::1%a%b]/",
    "http://[fe80::822a:a8ff:fe49:470c%tESt]:1234/keys",
    "http://[1:2:3:4:5:6:7:8]/",
    "http://[1:2:3:4:5:6:7:8:9]/",
    "http://[1::2::3]/",
    "http://[:1::]/",
    "http://[::]/",
    "http://[::1:]/",
    "http://[:::]/",
    "http://[1:2:3:4:5:6:7::]/",
    "http://[::1:2:3:4:5:6:7]/",
    "http://[1:2:3:4:5:6::7:8]/",
    "http://[1:2:3:4::5:6:7:8]/",
    "http://[12345::]/",
    "http://[g::]/",
    "http://[]/",
    "http://[",
    "http://]",
    "http://]a[/",
    "http://a]b[c/",
    "http://a[b]c:80/",
    "http://x@[::1]:1/",
    "http://[::1]x:99",
    "http://[::1]:",
    "http://u:p@h:p/",
    "http://u:p@h:-1/",
    "http://h:65535",
    "http://h:65536",
    "http://h:00080",
    "http://h:000000000000080",
    "http://h:99999999999999999999",
    "http://h:0",
    "http://h:",
    "http://h:+1",
    "http://h: 1",
    "http://h:１２",
    "http://h:1:2",
    "http://@/",
    "http://:@/",
    "http://a@b@c/",
    "http://u:p:q@h/",
    "http://u@",
    "http://:p@h",
    "mailto:a@b",
    "file:///etc/passwd",
    "file:/x",
    "//a/b",
    "///a",
    "////a",
    "a:b",
    "1a:b",
    "a1+-.:b",
    "a_b:c",
    ":a",
    "path:80",
    "http:80",
    "javascript:alert(1)",
    "data:text/plain,hi",
    "urn:isbn:1",
    "tel:+1;x=y",
    "sip:a;b",
    "http://a/b;p?q#f",
    "http://a/b/c;p;q/d;e",
    "http://a/;x",
    "http://a/b;x/c",
    "ftp://a/b;type=a",
    "x://a/b;p",
    ";p",
    "a;b/c;d",
    "http://a?b#c?d",
    "http://a#b?c",
    "http://a/b?c#",
    "http://a/b#",
    "?q",
    "#f",
    "http://a/b#c#d",
    "http://\u{2100}.com/",
    "http://a\u{FF0F}b/",
    "http://ÉXAMPLE.com/",
    "http://straße.de/",
    "http://İ.com",
    "http://ΑΣ.gr/",
    "http://ΑΣ",
    "http://ǅ.x",
    "\u{feff}http://a",
    "http://a\u{3000}b/",
    "http://ｅｘａｍｐｌｅ.com",
    "http://a\u{FE13}b/",
    "http://\u{FF20}x",
    "http://x\u{FF03}y",
    "http://x\u{FF1F}y",
    "http://x\u{FE55}y",
    "http://u\u{FF1A}p@h",
    "http://é@[::1]",
    "http://[é]",
    "http://h:٣",
    "é://a",
    "hé://a",
    "http://a/é?é#é",
    "\u{85}http://a",
    "http://a\u{0}b/",
    "http://a\u{7f}/",
    "HTTP://[::1]:8080",
    "http://[::1]]",
    "http://[[::1]]",
    "http://[::1]/[x]",
    "http://a/[",
    "http://a?[",
    "http://a#]",
];

fn generated(n: usize, seed: u64) -> Vec<String> {
    // proptest's seeded generator: the same cases on every run for a given seed.
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = TestRng::from_seed(RngAlgorithm::XorShift, &bytes);
    let mut below = |n: usize| (rng.next_u64() % n as u64) as usize;
    (0..n)
        .map(|_| {
            let len = 1 + below(10);
            (0..len).map(|_| PIECES[below(PIECES.len())]).collect()
        })
        .collect()
}

#[test]
fn parity_kasztp_corpus() {
    let urls = corpus();
    // 48,009 newline-terminated lines plus a last, unterminated "https://".
    assert_eq!(urls.len(), 48_010);
    let mut cases = Vec::new();
    let mut skipped = 0;
    for (i, u) in urls.iter().enumerate() {
        // The first line starts with a BOM: kept for text (CPython treats it as a path
        // character), removed for bytes (CPython would raise on non-ASCII bytes).
        let ascii_form = u.trim_start_matches('\u{feff}');
        for op in [Op::Split, Op::Parse, Op::Defrag] {
            both(&mut cases, &mut skipped, case(op, u));
            if ascii_form != u {
                cases.push(Case {
                    text: false,
                    ..case(op, ascii_form)
                });
            }
        }
        let rel = RFC3986_REFS[i % RFC3986_REFS.len()];
        let next = &urls[(i + 1) % urls.len()];
        both(
            &mut cases,
            &mut skipped,
            Case {
                base: ascii_form.to_owned(),
                ..case(Op::Join, rel)
            },
        );
        cases.push(Case {
            base: ascii_form.to_owned(),
            ..case(Op::Join, next)
        });
    }
    eprintln!("kasztp: {skipped} non-ASCII cases compared as text only");
    compare("kasztp", &cases);
}

#[test]
fn parity_edge_cases_and_generated() {
    let mut cases = Vec::new();
    let mut skipped = 0;
    let gen = generated(6_000, 0x9e37_79b9_7f4a_7c15);
    let inputs: Vec<&str> = TRICKY
        .iter()
        .copied()
        .chain(gen.iter().map(String::as_str))
        .collect();
    let schemes = ["", "https", " \tHt\ntp ", "x"];
    for (i, u) in inputs.iter().enumerate() {
        for op in [Op::Split, Op::Parse] {
            for af in [true, false] {
                both(
                    &mut cases,
                    &mut skipped,
                    Case {
                        allow_fragments: af,
                        scheme: schemes[i % schemes.len()].to_owned(),
                        ..case(op, u)
                    },
                );
            }
        }
        both(&mut cases, &mut skipped, case(Op::Defrag, u));
        let base = inputs[(i * 7 + 3) % inputs.len()];
        both(
            &mut cases,
            &mut skipped,
            Case {
                base: base.to_owned(),
                allow_fragments: i % 3 != 0,
                ..case(Op::Join, u)
            },
        );
    }
    // RFC 3986 section 5.4 (normal and abnormal examples) over several bases.
    for base in BASES {
        for r in RFC3986_REFS {
            for af in [true, false] {
                both(
                    &mut cases,
                    &mut skipped,
                    Case {
                        base: (*base).to_owned(),
                        allow_fragments: af,
                        ..case(Op::Join, r)
                    },
                );
            }
        }
    }
    eprintln!("edge/generated: {skipped} non-ASCII cases compared as text only");
    compare("edge+generated+rfc3986", &cases);
}
