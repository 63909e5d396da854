"""A WSGI app with one route per PEP 3333 behaviour that the end-to-end tests check.

It is run with a single worker, so module-level state (the close() counters) is shared by
every request of a test.
"""

import os
import sys
import time
import warnings
import wsgiref.validate
from urllib.parse import parse_qs

# How many times close() was called on each kind of returned iterable.
CLOSES = {}


def record_close(tag):
    CLOSES[tag] = CLOSES.get(tag, 0) + 1


def text(start_response, body, status="200 OK", headers=()):
    if isinstance(body, str):
        body = body.encode("utf-8")
    start_response(status, [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        *headers,
    ])
    return [body]


def query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


# --- environ -----------------------------------------------------------------------------

def describe(value):
    """A type name and an ASCII-safe rendering of an environ value."""
    if isinstance(value, str):
        return "str", value.encode("latin-1").hex()
    if isinstance(value, (bool, int, tuple)):
        return type(value).__name__, repr(value).encode("ascii").hex()
    methods = [m for m in ("read", "readline", "readlines", "write", "writelines", "flush")
               if callable(getattr(value, m, None))]
    return type(value).__name__, ",".join(methods).encode("ascii").hex()


def environ_dump(environ, start_response):
    """One line per key: KEY TAB TYPE TAB HEX (latin-1 bytes of a str, else repr or methods)."""
    lines = []
    for key in sorted(environ):
        kind, value = describe(environ[key])
        lines.append(f"{key}\t{kind}\t{value}")
    # Changes an app makes to its environ must not show up in the next request's.
    environ["fixture.leaked"] = "set by an earlier request"
    environ["SCRIPT_NAME"] = "/changed"
    return text(start_response, "\n".join(lines) + "\n")


# --- wsgiref.validate --------------------------------------------------------------------

def hello(environ, start_response):
    body = b"hello"
    if environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = b"got " + environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# Any warning (the validator's WSGIWarning included) becomes an exception, so a request that
# triggers one fails instead of passing with a line in the log.
warnings.simplefilter("error")

validated = wsgiref.validate.validator(hello)


# --- start_response and write() ----------------------------------------------------------

def exc_info_before_headers(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("replaced before headers")
    except ValueError:
        body = b"app error page"
        start_response("500 Internal Server Error", [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(body))),
            ("X-Error-Page", "app"),
        ], sys.exc_info())
        return [body]


class Marker(Exception):
    pass


def exc_info_after_headers(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"first;")
    try:
        raise Marker("too late")
    except Marker:
        try:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                           sys.exc_info())
        except Marker:
            return [b"reraised=yes"]
        except BaseException as e:  # noqa: BLE001 - reported to the test
            return [f"reraised=wrong:{type(e).__name__}".encode()]
    return [b"reraised=no"]


def start_response_twice(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        start_response("201 Created", [("Content-Type", "text/plain")])
    except AssertionError:
        return [b"second call refused"]
    return [b"second call accepted"]


def lazy_start(environ, start_response):
    """start_response called from inside the returned generator, before its first chunk."""
    def body():
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Lazy", "yes")])
        yield b""
        yield b"started late"

    return body()


def write_callable(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"one,")
    write(b"")
    write(b"two,")
    return [b"three"]


# --- close() -----------------------------------------------------------------------------

class Closing:
    """An iterable with close(): yields `chunks`, optionally raising after `raise_after`."""

    def __init__(self, tag, chunks, raise_after=None, delay=0.0, close_raises=False):
        self.tag = tag
        self.chunks = chunks
        self.raise_after = raise_after
        self.delay = delay
        self.close_raises = close_raises

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if self.raise_after is not None and i == self.raise_after:
                raise RuntimeError(f"iteration failed on purpose ({self.tag})")
            if self.delay:
                time.sleep(self.delay)
            yield chunk

    def close(self):
        record_close(self.tag)
        if self.close_raises:
            raise RuntimeError("close-raises-marker")


def endless(limit_s):
    """64 KiB chunks until `limit_s` seconds have passed (a bound for a misbehaving server)."""
    chunk = b"z" * 65536
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.01)
        yield chunk


def write_endless(environ, start_response):
    """Streams with write() until it fails (or 30 s pass): the legacy way to stream."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    chunk = b"w" * 65536
    deadline = time.monotonic() + 30.0
    try:
        while time.monotonic() < deadline:
            time.sleep(0.01)
            write(chunk)
    except Exception:
        record_close("write-raised")
        raise
    return []


def close_route(environ, start_response):
    kind = environ["PATH_INFO"].rsplit("/", 1)[-1]
    start_response("200 OK", [("Content-Type", "text/plain")])
    if kind == "normal":
        return Closing("normal", [b"a", b"b", b"c"])
    if kind == "raise":
        return Closing("raise", [b"partial-body;", b"never"], raise_after=1)
    if kind == "close-raises":
        return Closing("close-raises", [b"whole ", b"body"], close_raises=True)
    if kind == "disconnect":
        return Closing("disconnect", endless(30.0))
    if kind == "file":
        class TrackedFile:
            def __init__(self, f):
                self.f = f

            def read(self, n):
                return self.f.read(n)

            def close(self):
                record_close("file")
                self.f.close()

        f = TrackedFile(open(__file__, "rb"))
        return environ["wsgi.file_wrapper"](f, 4096)
    raise KeyError(kind)


def closes(environ, start_response):
    body = ",".join(f"{k}={v}" for k, v in sorted(CLOSES.items()))
    return text(start_response, body)


# --- errors ------------------------------------------------------------------------------

def errors_stream(environ, start_response):
    marker = query(environ).get("marker", "")
    errors = environ["wsgi.errors"]
    errors.write(f"wsgi.errors says {marker}\n")
    errors.writelines([f"second line {marker}\n"])
    errors.flush()
    return text(start_response, "logged")


def long_log_line(environ, start_response):
    q = query(environ)
    line = "L" * int(q["n"]) + q.get("marker", "") + "\n"
    environ["wsgi.errors"].write(line)
    environ["wsgi.errors"].flush()
    return text(start_response, "logged")


def log_flood(environ, start_response):
    """Writes n short lines to wsgi.errors at once."""
    q = query(environ)
    errors = environ["wsgi.errors"]
    for i in range(int(q["n"])):
        errors.write(f"flood-line {i}\n")
    errors.flush()
    return text(start_response, "flooded")


def header_injection(environ, start_response):
    """A header value with CRLF in it: the server must refuse it, not send two headers."""
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("X-Bad", "a\r\nX-Injected: yes"),
    ])
    return [b"should not be sent as is"]


def error_before_headers(environ, start_response):
    raise LookupError("exception-before-headers-marker")


def error_after_first_chunk(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body():
        yield b"x" * 1000
        time.sleep(0.2)
        raise RuntimeError("exception-after-first-chunk-marker")

    return body()


# --- bodies and framing ------------------------------------------------------------------

def status_route(environ, start_response):
    code = environ["PATH_INFO"].rsplit("/", 1)[-1]
    reason = {"204": "No Content", "304": "Not Modified"}[code]
    start_response(f"{code} {reason}", [("X-Status", code)])
    # A body the server must not send, if asked.
    return [b"this must not be sent"] if query(environ).get("body") else []


def with_length(environ, start_response):
    size = int(query(environ).get("size", "11"))
    body = (b"hello world" * (size // 11 + 1))[:size]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(size))])
    piece = 65536
    return (body[i:i + piece] for i in range(0, size, piece))


def without_length(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def body():
        for i in range(4):
            yield bytes([ord("a") + i]) * (256 * 1024)

    return body()


def wrong_length(environ, start_response):
    """Claims one Content-Length and returns a list with another number of bytes."""
    q = query(environ)
    claim, send = int(q["claim"]), int(q["send"])
    # Bytes that would read as a response of their own if they spilled past the framing.
    spill = b"HTTP/1.1 299 Spilled\r\nContent-Length: 0\r\n\r\n"
    body = (b"abcde" + spill * (send // len(spill) + 1))[:send]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(claim))])
    if q.get("iter") == "1":
        # As a framework answers: an iterator, the body in two blocks.
        return iter([body[: send // 2], body[send // 2:]])
    return [body]


def complete_then_raise(environ, start_response):
    """Declares Content-Length, yields all of it in two blocks, then raises."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])

    def body():
        yield b"whole "
        yield b"body"
        raise RuntimeError("raised-after-the-body-marker")

    return Closing("complete-then-raise", body())


def custom_status(environ, start_response):
    start_response("299 Message Here", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def cookies(environ, start_response):
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "a=1; Path=/"),
        ("Set-Cookie", "b=2; Path=/"),
        ("X-Custom-Header", "kept"),
    ])
    return [b"ok"]


# --- wsgi.input --------------------------------------------------------------------------

def input_route(environ, start_response):
    how = environ["PATH_INFO"].rsplit("/", 1)[-1]
    stream = environ["wsgi.input"]
    q = query(environ)
    if how == "read":
        pieces = [stream.read()]
    elif how == "readn":
        n = int(q.get("n", "5"))
        pieces = []
        while True:
            piece = stream.read(n)
            if not piece:
                break
            pieces.append(piece)
    elif how == "readline":
        size = int(q["size"]) if "size" in q else None
        pieces = []
        while True:
            line = stream.readline() if size is None else stream.readline(size)
            if not line:
                break
            pieces.append(line)
    elif how == "iter":
        pieces = list(stream)
    elif how == "readlines":
        hint = int(q["hint"]) if "hint" in q else None
        pieces = stream.readlines() if hint is None else stream.readlines(hint)
        # What readlines() left, marked (the marker is not counted in the total below).
        pieces.append(b"<rest>" + stream.read())
    else:
        raise KeyError(how)
    total = sum(len(p) for p in pieces) - (len(b"<rest>") if how == "readlines" else 0)
    cl = environ.get("CONTENT_LENGTH", "<absent>")
    if "summary" in q:
        # Piece lengths and the first byte of each, for bodies too large to echo.
        shown = [(len(p), p[:1]) for p in pieces]
        return text(start_response, f"{total} {cl} {shown!r}")
    return text(start_response, f"{total} {cl} {pieces!r}")


ROUTES = {
    "p": environ_dump,
    "environ": environ_dump,
    "validate": validated,
    "exc-before": exc_info_before_headers,
    "exc-after": exc_info_after_headers,
    "twice": start_response_twice,
    "write": write_callable,
    "write-endless": write_endless,
    "lazy-start": lazy_start,
    "close": close_route,
    "closes": closes,
    "errors": errors_stream,
    "long-log": long_log_line,
    "log-flood": log_flood,
    "inject": header_injection,
    "error-before": error_before_headers,
    "error-after": error_after_first_chunk,
    "status": status_route,
    "length": with_length,
    "nolength": without_length,
    "input": input_route,
    "wrong-length": wrong_length,
    "complete-then-raise": complete_then_raise,
    "custom-status": custom_status,
    "cookies": cookies,
    "pid": lambda environ, start_response: text(start_response, str(os.getpid())),
}


def application(environ, start_response):
    first = environ["PATH_INFO"].lstrip("/").split("/", 1)[0]
    handler = ROUTES.get(first)
    if handler is None:
        return text(start_response, f"no route {first!r}\n", "404 Not Found")
    return handler(environ, start_response)
