"""Reference oracle for tests/url_parity.rs: CPython's urllib.parse, in bulk.

Reads one request per line on stdin:  op TAB kind TAB allow_fragments TAB hex(url) TAB hex(base) TAB hex(scheme)
  op: split|parse|join|defrag; kind: str|bytes; allow_fragments: 1|0; hex of UTF-8 (str) or raw bytes.
Writes one answer per line: TAB-separated fields, each hex, or '-' for None, or for the port
'E' when reading .port raises; or the single field '!' + hex(str(exception)) when the call raises.
"""
import sys
from urllib.parse import urlsplit, urlparse, urljoin, urldefrag


def h(v, kind):
    if v is None:
        return "-"
    if kind == "str":
        return v.encode("utf-8", "surrogatepass").hex()
    return v.hex()


def netloc_attrs(r, kind):
    out = [h(r.username, kind), h(r.password, kind), h(r.hostname, kind)]
    try:
        p = r.port
        out.append("-" if p is None else str(p))
    except ValueError:
        out.append("E")
    return out


def main():
    out = sys.stdout
    for line in sys.stdin.buffer:
        op, kind, af, u, b, s = line.rstrip(b"\n").decode("ascii").split("\t")
        af = af == "1"
        u, b, s = bytes.fromhex(u), bytes.fromhex(b), bytes.fromhex(s)
        if kind == "str":
            u, b, s = u.decode("utf-8"), b.decode("utf-8"), s.decode("utf-8")
        try:
            if op == "split":
                r = urlsplit(u, s, af)
                fields = [h(x, kind) for x in r] + netloc_attrs(r, kind)
            elif op == "parse":
                r = urlparse(u, s, af)
                fields = [h(x, kind) for x in r] + netloc_attrs(r, kind)
            elif op == "join":
                fields = [h(urljoin(b, u, af), kind)]
            elif op == "defrag":
                r = urldefrag(u)
                fields = [h(r.url, kind), h(r.fragment, kind)]
            else:
                raise SystemExit("bad op " + op)
            out.write("\t".join(fields))
        except (ValueError, UnicodeError) as e:
            out.write("!" + str(e).encode("utf-8", "surrogatepass").hex())
        out.write("\n")


main()
