"""The autoscaler lab's app: every request takes `?ms=N` milliseconds (default 20) of waiting,
as a handler that calls a slow backend would, and answers how long it took."""

import time
from urllib.parse import parse_qs


def application(environ, start_response):
    ms = float(parse_qs(environ.get("QUERY_STRING", "")).get("ms", ["20"])[0])
    time.sleep(ms / 1000.0)
    body = f"slept {ms:g} ms\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
