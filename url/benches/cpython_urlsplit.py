"""CPython reference timing for benches/url.rs: urlsplit over the kasztp corpus, per URL.

python3 benches/cpython_urlsplit.py [corpus]
"""
import sys, time
from urllib.parse import urlsplit

path = sys.argv[1] if len(sys.argv) > 1 else "data/urls/kasztp.txt"
with open(path, encoding="utf-8") as f:
    urls = f.read().split("\n")
raw = urlsplit.__wrapped__  # the function without its lru_cache
byts = [u.encode("utf-8") for u in urls]

def run(fn, data, reps=5):
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for u in data:
            try:
                fn(u)
            except ValueError:
                pass
        best = min(best, time.perf_counter() - t)
    return best / len(data) * 1e9

ascii_bytes = [b for b in byts if b.isascii()]
print(f"{len(urls)} URLs")
print(f"urlsplit (lru_cache, mostly misses), text : {run(urlsplit, urls):7.0f} ns/URL")
print(f"urlsplit uncached (__wrapped__),  text    : {run(raw, urls):7.0f} ns/URL")
print(f"urlsplit uncached (__wrapped__),  bytes   : {run(raw, ascii_bytes):7.0f} ns/URL")
hot = urls[:100]
print(f"urlsplit lru_cache hits (100 hot), text   : {run(urlsplit, hot * 100):7.0f} ns/URL")
