"""An app whose workers die on every request until a file named `fixed` sits next to it at
import time: a crash loop that a deploy of fixed code ends."""

import os

FIXED = os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixed"))


def application(environ, start_response):
    if not FIXED:
        os._exit(7)
    body = b"fixed"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
