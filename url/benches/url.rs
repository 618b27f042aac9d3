//! Split speed over the kasztp corpus (48,009 real URLs): uncached vs cached, text vs bytes.
//!
//! `cargo bench --bench url`; the corpus path can be overridden with `URL_CORPUS`.
//! The `compare` group times the `url` crate's `Url::parse` on the same corpus, and at the
//! end CPython's figures are printed (`python3 benches/cpython_urlsplit.py`, skipped when
//! `python3` is missing or `URL_BENCH_NO_PYTHON` is set).

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use smallarena_url::{self as url, UrlCache};

fn corpus() -> Vec<String> {
    let path = std::env::var_os("URL_CORPUS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/urls/kasztp.txt"),
        PathBuf::from,
    );
    let text = std::fs::read_to_string(&path).expect("URL corpus");
    text.lines().map(str::to_owned).collect()
}

fn bench_split(c: &mut Criterion) {
    let urls = corpus();
    let n = urls.len() as u64;
    let hot: Vec<String> = urls.iter().take(100).cloned().collect();

    let mut g = c.benchmark_group("split");
    g.measurement_time(Duration::from_secs(4));
    g.sample_size(20);
    g.throughput(Throughput::Elements(n));
    g.bench_function(BenchmarkId::new("uncached", "text"), |b| {
        b.iter(|| {
            for u in &urls {
                let _ = black_box(url::split(black_box(u.as_str())));
            }
        })
    });
    g.bench_function(BenchmarkId::new("uncached", "bytes"), |b| {
        b.iter(|| {
            for u in &urls {
                let _ = black_box(url::split(black_box(u.as_bytes())));
            }
        })
    });
    // Every URL of the corpus through a default cache (128 entries): nearly all misses,
    // so this is the cost of a split plus an insertion (and an eviction).
    g.bench_function(BenchmarkId::new("cached-corpus", "text"), |b| {
        let cache = UrlCache::new();
        b.iter(|| {
            for u in &urls {
                let _ = black_box(cache.split(black_box(u.as_str())));
            }
        })
    });
    g.bench_function(BenchmarkId::new("cached-corpus", "bytes"), |b| {
        let cache = UrlCache::new();
        b.iter(|| {
            for u in &urls {
                let _ = black_box(cache.split(black_box(u.as_bytes())));
            }
        })
    });
    g.finish();

    // The `url` crate (WHATWG parsing, which also normalises and allocates a
    // serialization) on the same corpus; relative references fail fast there.
    let mut g = c.benchmark_group("compare");
    g.measurement_time(Duration::from_secs(4));
    g.sample_size(20);
    g.throughput(Throughput::Elements(n));
    g.bench_function("url-crate-parse", |b| {
        b.iter(|| {
            for u in &urls {
                let _ = black_box(::url::Url::parse(black_box(u.as_str())));
            }
        })
    });
    g.bench_function("smallarena-split", |b| {
        b.iter(|| {
            for u in &urls {
                let _ = black_box(url::split(black_box(u.as_str())));
            }
        })
    });
    g.finish();

    // 100 hot URLs of each kind, all resident (a 1024-entry cache, so that the 200 entries
    // never collide with the per-shard bounds): the hit path.
    let mut g = c.benchmark_group("split-hit");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(hot.len() as u64));
    for (name, checked) in [("cached", false), ("checked", true)] {
        let cache = UrlCache::builder().capacity(1024).checked(checked).build();
        for u in &hot {
            let _ = cache.split(u.as_str());
            let _ = cache.split(u.as_bytes());
        }
        g.bench_function(BenchmarkId::new(name, "text"), |b| {
            b.iter(|| {
                for u in &hot {
                    let _ = black_box(cache.split(black_box(u.as_str())));
                }
            })
        });
        g.bench_function(BenchmarkId::new(name, "bytes"), |b| {
            b.iter(|| {
                for u in &hot {
                    let _ = black_box(cache.split(black_box(u.as_bytes())));
                }
            })
        });
        let s = cache.stats();
        assert_eq!(
            s.entries,
            2 * hot.len(),
            "every hot URL stays resident: {s:?}"
        );
        eprintln!("{name}: {s:?}");
    }
    g.bench_function(BenchmarkId::new("uncached", "text"), |b| {
        b.iter(|| {
            for u in &hot {
                let _ = black_box(url::split(black_box(u.as_str())));
            }
        })
    });

    // Two threads hitting the same resident entries at once (contention on the shards'
    // read locks, where the per-thread fronts take none); time per round of both threads.
    let cache = UrlCache::builder().capacity(1024).build();
    for u in &hot {
        let _ = cache.split(u.as_str());
    }
    g.bench_function(BenchmarkId::new("cached-2threads", "text"), |b| {
        b.iter_custom(|iters| {
            let t0 = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iters {
                            for u in &hot {
                                let _ = black_box(cache.split(black_box(u.as_str())));
                            }
                        }
                    });
                }
            });
            t0.elapsed()
        })
    });
    g.finish();
}

/// CPython's per-URL times on the same corpus, for the table.
fn cpython(_: &mut Criterion) {
    if std::env::var_os("URL_BENCH_NO_PYTHON").is_some() {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(root.join("benches/cpython_urlsplit.py"));
    if let Some(p) = std::env::var_os("URL_CORPUS") {
        cmd.arg(p);
    } else {
        cmd.arg(root.join("data/urls/kasztp.txt"));
    }
    match cmd.output() {
        Ok(out) if out.status.success() => {
            println!("CPython (python3 benches/cpython_urlsplit.py):");
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
        _ => println!("CPython timing skipped (python3 unavailable)"),
    }
}

criterion_group!(benches, bench_split, cpython);
criterion_main!(benches);
