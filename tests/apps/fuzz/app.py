"""The fixture of the front's property tests (`crates/warren/tests/fuzz_front.rs`).

Two roles, by path:

- `/respond?...`: **respond as told**. The query string describes the response: `status`
  (any number, sent as `"<status> Fuzz"`), `nh` headers `X-Fuzz-<i>` of `hsize` bytes each,
  the `Content-Length` to declare (`cl=right|wrong|abc|plus|dup|missing`, `wrong` being the
  body's length plus `delta`), and the body's shape: `shape=list` (the blocks returned as a
  list, whole) or `shape=gen` (a generator yielding them), with `blocks` the comma-separated
  block sizes. Block `i` is filled with the letter `"abcdefghijklmnopqrstuvwxyz"[i % 26]`, so
  the test can rebuild the body.
- anything else: **echo**. It reads `wsgi.input` the way PEP 3333 frameworks do (exactly
  `CONTENT_LENGTH` bytes when it is set, to the end otherwise: warren sets
  `wsgi.input_terminated`), then tries to read past that to catch bytes the front sent beyond
  the length it announced, and answers 200 with one `KEY=HEX` line per fact (the hex of the
  latin-1 bytes), so that nothing the client sent can break the format.
"""

import zlib
from urllib.parse import parse_qs

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def echo(environ, start_response):
    inp = environ["wsgi.input"]
    declared = environ.get("CONTENT_LENGTH")
    if declared:
        body = inp.read(int(declared))
    else:
        body = inp.read()
    # Whatever a second read finds lies past the length the app was told about.
    extra = b""
    while True:
        more = inp.read(65536)
        if not more:
            break
        extra += more
    facts = {
        "role": "echo",
        "content_length": "<absent>" if declared is None else declared,
        "read": str(len(body)),
        "extra": str(len(extra)),
        "crc32": f"{zlib.crc32(body):08x}",
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "host": environ.get("HTTP_HOST", "<absent>"),
        "transfer_encoding": environ.get("HTTP_TRANSFER_ENCODING", "<absent>"),
    }
    out = "".join(
        f"{k}={v.encode('latin-1').hex()}\n" for k, v in facts.items()
    ).encode("ascii")
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(out))),
        ("X-Fuzz-Role", "echo"),
    ])
    return [out]


def respond(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    status = int(q.get("status", "200"))
    nh = int(q.get("nh", "0"))
    hsize = int(q.get("hsize", "1"))
    sizes = [int(s) for s in q.get("blocks", "").split(",") if s]
    blocks = [LETTERS[i % 26].encode("ascii") * n for i, n in enumerate(sizes)]
    total = sum(sizes)
    cl = q.get("cl", "missing")
    headers = [("X-Fuzz-Role", "respond")]
    headers += [(f"X-Fuzz-{i}", "v" * hsize) for i in range(nh)]
    declared = {
        "right": str(total),
        "wrong": str(max(0, total + int(q.get("delta", "1")))),
        "abc": "abc",
        "plus": f"+{total}",
        "dup": f"{total}, {total}",
    }.get(cl)
    if declared is not None:
        headers.append(("Content-Length", declared))
    start_response(f"{status} Fuzz", headers)
    if q.get("shape") == "gen":
        return (b for b in blocks)
    return blocks


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/respond":
        return respond(environ, start_response)
    return echo(environ, start_response)
