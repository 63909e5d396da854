"""An app that takes a while to import (as a large framework app can)."""

import time

time.sleep(2)


def application(environ, start_response):
    body = b"imported"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
