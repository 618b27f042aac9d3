//! Property tests of `smallarena_url`: cached == uncached, kinds never mix in the cache
//! (the 2005 `urlparse` cache bug as a regression test), text and bytes agree, no input
//! panics; plus cache bounds, counters and a multi-threaded check.

use std::borrow::Cow;

use proptest::prelude::*;
use smallarena_url::{self as url, Kind, Options, Split, UrlCache, UrlError};

mod url_pieces;
use url_pieces::PIECES;

fn url_like() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(prop::sample::select(PIECES), 0..14).prop_map(|v| v.concat()),
        1 => prop::collection::vec(any::<char>(), 0..40).prop_map(|v| v.into_iter().collect()),
    ]
}

fn ascii_url_like() -> impl Strategy<Value = String> {
    url_like().prop_map(|s| s.chars().filter(char::is_ascii).collect())
}

/// Everything observable about a split, for comparisons (cached and uncached results are
/// the same type).
fn observe<K: Kind + ?Sized>(r: &Split<'_, K>) -> String {
    let b = |k: &K| String::from_utf8_lossy(k.as_url_bytes()).into_owned();
    format!(
        "{:?} {:?} {:?} {:?} {:?}",
        r.components().map(b),
        r.username().map(b),
        r.password().map(b),
        r.hostname().as_deref().map(b),
        r.port()
    )
}

fn uncached<K: Kind + ?Sized>(u: &K, opts: &Options<'_>) -> Result<String, UrlError> {
    url::split_with(u, opts).map(|r| observe(&r))
}

fn cached<K: Kind + ?Sized>(
    cache: &UrlCache,
    u: &K,
    opts: &Options<'_>,
) -> Result<String, UrlError> {
    cache.split_with(u, opts).map(|r| observe(&r))
}

/// Exercises every function and accessor; only checks that nothing panics.
fn touch_all<K: Kind + ?Sized>(cache: &UrlCache, u: &K, base: &K) {
    for opts in [
        Options::default(),
        Options::with_scheme(" h\tt ").allow_fragments(false),
    ] {
        // Uncached and cached results are one type.
        for r in [url::parse_with(u, &opts), cache.parse_with(u, &opts)]
            .into_iter()
            .flatten()
        {
            let _ = (
                r.components(),
                r.username(),
                r.password(),
                r.hostname(),
                r.port(),
            );
        }
    }
    let _ = url::join(base, u);
    let _ = url::join(u, base);
    let _ = url::join_with(base, u, false);
    let _ = cache.join(base, u);
    let _ = cache.join_with(u, base, false);
    let _ = url::defrag(u);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn cached_equals_uncached(inputs in prop::collection::vec(url_like(), 1..16), af in any::<bool>()) {
        let cache = UrlCache::builder().capacity(8).checked(true).build();
        let opts = Options { default_scheme: "dflt", allow_fragments: af };
        // Twice over, so the second round hits.
        for u in inputs.iter().chain(inputs.iter()) {
            prop_assert_eq!(cached(&cache, u.as_str(), &opts), uncached(u.as_str(), &opts));
            prop_assert_eq!(cached(&cache, u.as_bytes(), &opts), uncached(u.as_bytes(), &opts));
            prop_assert_eq!(cache.join_with(inputs[0].as_str(), u, af), url::join_with(inputs[0].as_str(), u, af));
            if let (Ok(c), Ok(p)) = (cache.parse_with(u.as_str(), &opts), url::parse_with(u.as_str(), &opts)) {
                prop_assert_eq!(c.components(), p.components());
            }
        }
        prop_assert_eq!(cache.stats().divergences, 0, "{:?}", cache.divergence_report());
    }

    /// The 2005 bug: a text result must never answer a bytes request with the same content
    /// (nor the reverse), however the calls interleave.
    #[test]
    fn kinds_never_mix(inputs in prop::collection::vec(ascii_url_like(), 1..12), order in prop::collection::vec(any::<bool>(), 1..64)) {
        let cache = UrlCache::checked();
        let mut before = cache.stats();
        let mut seen_text = std::collections::HashSet::new();
        let mut seen_bytes = std::collections::HashSet::new();
        for (i, &text_first) in order.iter().enumerate() {
            let u = &inputs[i % inputs.len()];
            for text in [text_first, !text_first] {
                let ok = if text {
                    cache.split(u.as_str()).map(|r| {
                        // A `Split<'static, str>` by type; its content is this very input's.
                        let r: url::Split<'static, str> = r;
                        assert_eq!(Ok(r), url::split(u.as_str()));
                    }).is_ok()
                } else {
                    cache.split(u.as_bytes()).map(|r| {
                        assert_eq!(Ok(r), url::split(u.as_bytes()));
                    }).is_ok()
                };
                let after = cache.stats();
                let seen = if text { &mut seen_text } else { &mut seen_bytes };
                if ok && !seen.insert(u.clone()) {
                    // Repeats of the same kind may hit (128 entries, never evicted here).
                    prop_assert_eq!(after.hits, before.hits + 1);
                } else {
                    // The first call of a kind is a miss even if the other kind is cached.
                    prop_assert_eq!(after.misses, before.misses + 1);
                    prop_assert_eq!(after.hits, before.hits);
                }
                before = after;
            }
        }
        prop_assert_eq!(cache.stats().divergences, 0);
    }

    #[test]
    fn text_and_bytes_agree(u in url_like(), af in any::<bool>()) {
        let opts = Options { default_scheme: "", allow_fragments: af };
        let t = url::split_with(u.as_str(), &opts);
        let b = url::split_with(u.as_bytes(), &opts);
        match (&t, &b) {
            (Ok(t), Ok(b)) => {
                let tc = t.components().map(str::as_bytes);
                prop_assert_eq!(tc, b.components());
                prop_assert_eq!(t.username().map(str::as_bytes), b.username());
                prop_assert_eq!(t.password().map(str::as_bytes), b.password());
                if u.is_ascii() {
                    prop_assert_eq!(t.port(), b.port());
                } else {
                    // Same outcome; an error's quoted port text differs (UTF-8 vs latin-1).
                    let (tp, bp) = (t.port(), b.port());
                    prop_assert_eq!(tp.as_ref().ok(), bp.as_ref().ok());
                    prop_assert_eq!(
                        tp.err().map(|e| std::mem::discriminant(&e)),
                        bp.err().map(|e| std::mem::discriminant(&e))
                    );
                }
                if u.is_ascii() {
                    let (th, bh) = (t.hostname(), b.hostname());
                    prop_assert_eq!(th.as_deref().map(str::as_bytes), bh.as_deref());
                }
            }
            // Only text has the NFKC netloc check.
            (Err(UrlError::NetlocNfkc { .. }), Ok(_)) => prop_assert!(!u.is_ascii()),
            (Err(et), Err(eb)) if u.is_ascii() => prop_assert_eq!(et, eb),
            (Err(et), Err(eb)) => {
                prop_assert_eq!(std::mem::discriminant(et), std::mem::discriminant(eb))
            }
            _ => prop_assert!(false, "kinds disagree: {:?} vs {:?}", t, b),
        }
        let tj = url::join("http://a/b/c/d;p?q", u.as_str());
        let bj = url::join(b"http://a/b/c/d;p?q".as_slice(), u.as_bytes());
        if let (Ok(tj), Ok(bj)) = (&tj, &bj) {
            prop_assert_eq!(tj.as_bytes(), &**bj);
        }
    }

    #[test]
    fn no_panic_on_arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..200), base in prop::collection::vec(any::<u8>(), 0..64)) {
        let cache = UrlCache::builder().capacity(4).max_bytes(512).checked(true).build();
        touch_all(&cache, raw.as_slice(), base.as_slice());
        let text = String::from_utf8_lossy(&raw);
        let tbase = String::from_utf8_lossy(&base);
        touch_all(&cache, &*text, &*tbase);
        prop_assert_eq!(cache.stats().divergences, 0);
    }
}

#[test]
fn no_panic_on_very_long_inputs() {
    let cache = UrlCache::checked();
    let n = 1 << 20;
    let longs = [
        "[".repeat(n),
        ":".repeat(n),
        format!("http://[{}]/", ":".repeat(n)),
        format!("http://[{}]/", "1:".repeat(n / 2)),
        format!("http://h:{}/", "9".repeat(n)),
        format!("http://h:{}/", "0".repeat(n)),
        format!("http://{}@h/", "u:".repeat(n / 2)),
        format!("{}://a", "a".repeat(n)),
        format!("http://a/{}", "../".repeat(n / 3)),
        format!("http://a/{}", "a/".repeat(n / 2)),
        "\t".repeat(n),
        format!("{}http://a", "\u{0} ".repeat(n / 2)),
        "é".repeat(n / 2),
        format!("http://{}/", "\u{2100}".repeat(n / 3)),
    ];
    for u in &longs {
        touch_all(&cache, u.as_str(), "http://a/b/c");
        touch_all(&cache, u.as_bytes(), b"http://a/b/c".as_slice());
    }
    let s = cache.stats();
    assert_eq!(s.divergences, 0);
    assert!(s.rejected > 0, "1 MiB inputs exceed the byte bound: {s:?}");
    assert!(s.bytes <= UrlCache::DEFAULT_MAX_BYTES, "{s:?}");
}

#[test]
fn port_and_netloc_attributes() {
    let r = url::split("http://User:Pa:ss@[FE80::1%ZoNe]:0080/p").unwrap();
    assert_eq!(r.username(), Some("User"));
    assert_eq!(r.password(), Some("Pa:ss"));
    assert_eq!(r.hostname().as_deref(), Some("fe80::1%ZoNe"));
    assert_eq!(r.port(), Ok(Some(80)));
    assert_eq!(
        url::split("http://h:65536").unwrap().port(),
        Err(UrlError::PortOutOfRange)
    );
    let e = url::split("http://h:8a").unwrap().port().unwrap_err();
    assert_eq!(
        e.to_string(),
        "Port could not be cast to integer value as '8a'"
    );
    assert_eq!(url::split("http://h:").unwrap().port(), Ok(None));
    assert_eq!(
        url::split("http://[::1").unwrap_err().to_string(),
        "Invalid IPv6 URL"
    );
    assert_eq!(
        url::split("http://[127.0.0.1]/").unwrap_err(),
        UrlError::Ipv4InBrackets
    );
    assert!(matches!(
        url::split("http://\u{2100}.com/"),
        Err(UrlError::NetlocNfkc { .. })
    ));
    // Bytes: no NFKC check, non-ASCII accepted as opaque (documented difference).
    assert!(url::split("http://\u{2100}.com/".as_bytes()).is_ok());
}

#[test]
fn borrows_without_copy_unless_needed() {
    let input = String::from("http://a/b?c#d");
    let r = url::split(input.as_str()).unwrap();
    let range = input.as_bytes().as_ptr_range();
    assert!(
        range.contains(&r.path().as_ptr()),
        "path borrows from the input"
    );
    let j = url::join("http://a/b", "mailto:x").unwrap();
    assert!(matches!(j, Cow::Borrowed("mailto:x")));
}

#[test]
fn cache_bounds_and_counters() {
    let cache = UrlCache::builder().capacity(16).shards(4).build();
    for i in 0..100 {
        cache.split(format!("http://h{i}/").as_str()).unwrap();
    }
    let s = cache.stats();
    assert_eq!(s.misses, 100);
    assert!(s.entries <= 16, "{s:?}");
    assert_eq!(s.evictions as usize, 100 - s.entries, "{s:?}");
    let a = cache.split("http://h99/").unwrap();
    let b = cache.split("http://h99/").unwrap();
    assert!(a.ptr_eq(&b), "a hit shares the entry");
    assert!(cache.stats().hits >= 1);
    // Errors are not cached.
    assert!(cache.split("http://[x").is_err());
    assert!(cache.split("http://[x").is_err());
    let s = cache.stats();
    assert_eq!((s.hits, s.misses), (2, 102), "{s:?}");
    // Disabled cache.
    let off = UrlCache::builder().capacity(0).build();
    off.split("http://a").unwrap();
    off.split("http://a").unwrap();
    assert_eq!(off.stats().hits, 0);
    assert_eq!(off.stats().entries, 0);
}

#[test]
fn shared_between_threads() {
    let cache = UrlCache::builder().capacity(32).checked(true).build();
    let urls: Vec<String> = (0..64)
        .map(|i| format!("HTTP://u{i}:p@Host{}:{}/p;x?q#f", i % 7, 1000 + i))
        .collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (cache, urls) = (&cache, &urls);
            s.spawn(move || {
                for round in 0..200 {
                    let u = &urls[(round * 7 + t * 13) % urls.len()];
                    if (round + t) % 2 == 0 {
                        let r = cache.split(u.as_str()).unwrap();
                        assert_eq!(Ok(&r), url::split(u.as_str()).as_ref());
                        assert_eq!(r.scheme(), "http");
                    } else {
                        let r = cache.parse(u.as_bytes()).unwrap();
                        assert_eq!(Ok(&r), url::parse(u.as_bytes()).as_ref());
                        assert_eq!(r.params(), b"x");
                    }
                }
            });
        }
    });
    let s = cache.stats();
    assert_eq!(s.divergences, 0, "{:?}", cache.divergence_report());
    assert_eq!(s.hits + s.misses, 800);
    assert!(s.entries <= 32);
}

/// Hits are counted per thread (no shared read-modify-write); counters of exited threads and
/// of threads that moved to another cache are folded in, never lost, and eviction
/// invalidates the per-thread fronts (a front never answers with an evicted entry).
#[test]
fn hit_counts_survive_thread_churn_and_eviction() {
    let cache = UrlCache::builder()
        .capacity(4)
        .shards(1)
        .checked(true)
        .build();
    let other = UrlCache::new();
    let _ = cache.split("http://a/hot").unwrap();
    for round in 0..40 {
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..3 {
                    let _ = cache.split("http://a/hot").unwrap();
                }
                if round % 2 == 0 {
                    // Moves this thread's front to another cache.
                    let _ = other.split("http://b/").unwrap();
                    let _ = other.split("http://b/").unwrap();
                }
            });
        });
    }
    assert_eq!(cache.stats().hits, 120);
    assert_eq!(other.stats().hits, 39); // 40 lookups, the first a miss
                                        // Evict the hot entry (capacity 4, fresh keys), then hit it again: a miss.
    let misses = cache.stats().misses;
    for i in 0..8 {
        let _ = cache.split(format!("http://c/{i}").as_str()).unwrap();
    }
    let before = cache.stats();
    let r = cache.split("http://a/hot").unwrap();
    assert_eq!(r.path(), "/hot");
    let after = cache.stats();
    assert_eq!(after.misses, before.misses + 1, "{before:?} -> {after:?}");
    assert_eq!(after.hits, before.hits);
    assert_eq!(before.misses, misses + 8);
    assert_eq!(after.divergences, 0);
}
