"""Large bodies in both directions, for checking that nothing buffers them whole.

POST /upload  reads wsgi.input in 64 KiB pieces and answers `bytes crc32 maxrss_kib`.
GET /download?mib=N  streams N MiB from a generator, 1 MiB per chunk, no Content-Length.
GET /rss  answers this worker's peak RSS in KiB.
"""

import resource
import zlib
from urllib.parse import parse_qs

PIECE = 64 * 1024
MIB = 1024 * 1024


def peak_rss_kib():
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def block(i):
    """The i-th MiB of a download: a header naming it, then filler that depends on i."""
    head = f"<block {i}>".encode()
    fill = bytes([(i * 7 + 1) % 251]) * (MIB - len(head))
    return head + fill


def upload(environ, start_response):
    stream = environ["wsgi.input"]
    total = 0
    crc = 0
    pieces = 0
    while True:
        data = stream.read(PIECE)
        if not data:
            break
        if len(data) > PIECE:
            raise AssertionError(f"read({PIECE}) returned {len(data)} bytes")
        pieces += 1
        total += len(data)
        crc = zlib.crc32(data, crc)
    body = f"{total} {crc} {peak_rss_kib()} {pieces}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def download(environ, start_response):
    q = parse_qs(environ.get("QUERY_STRING", ""))
    mib = int(q.get("mib", ["1"])[0])
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return (block(i) for i in range(mib))


def rss(environ, start_response):
    body = str(peak_rss_kib()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/upload":
        return upload(environ, start_response)
    if path == "/download":
        return download(environ, start_response)
    if path == "/rss":
        return rss(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]
