"""An app that fails to import, until a file named FIXED appears next to it."""

import os

if not os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "FIXED")):
    raise RuntimeError("broken-at-import-marker: this app does not import")


def application(environ, start_response):
    body = b"fixed"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
