"""Responses at HTTP's edges, for the front's hardening tests (crates/warren/tests/edges.rs).

Plain WSGI. `h2` and `neighbour` are the same app under two callables, so that two apps of
one config tell which of them a request reached:

- `/who`: the app's name, `HTTP_HOST` and `SERVER_NAME`.
- `/headers?n=N`: N response headers.
- `/bighead?bytes=N`: one response header of N bytes.
- `/status?code=C`: that status.
- `/length?value=V&mode=stream|whole`: `hello` with `Content-Length: V`, as a generator
  (streamed) or a list (whole).
- `/big?mb=N&mode=stream|whole`: an N MiB body, yielded as one block or returned in a list.
- `/echo`: `CONTENT_LENGTH`, `HTTP_TRANSFER_ENCODING` and the bytes read from `wsgi.input`.
"""

from urllib.parse import parse_qs


def make(name):
    def application(environ, start_response):
        path = environ.get("PATH_INFO", "")
        q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if path == "/who":
            body = "{} {} {}".format(
                name, environ.get("HTTP_HOST", "-"), environ.get("SERVER_NAME", "-")
            ).encode()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [body]
        if path == "/headers":
            n = int(q.get("n", "1"))
            start_response("200 OK", [("X-H%d" % i, "v") for i in range(n)])
            return [b"many headers"]
        if path == "/bighead":
            n = int(q.get("bytes", "1"))
            start_response("200 OK", [("X-Big", "v" * n)])
            return [b"big head"]
        if path == "/status":
            start_response("%s Whatever" % q.get("code", "200"), [("Content-Type", "text/plain")])
            return [b"odd status"]
        if path == "/length":
            start_response("200 OK", [("Content-Length", q.get("value", "5"))])
            if q.get("mode") == "whole":
                return [b"hello"]
            return (b for b in [b"he", b"llo"])
        if path == "/big":
            block = b"x" * (int(q.get("mb", "1")) * 1024 * 1024)
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            if q.get("mode") == "whole":
                return [block]
            return (b for b in [block])
        if path == "/echo":
            data = environ["wsgi.input"].read()
            body = "{} {} {}".format(
                environ.get("CONTENT_LENGTH", "-"),
                environ.get("HTTP_TRANSFER_ENCODING", "-"),
                len(data),
            ).encode()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]

    return application


h2 = make("h2")
neighbour = make("neighbour")
application = h2
