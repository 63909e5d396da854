"""Reports where `flask` comes from (or that it cannot be imported), then sys.path."""

import sys


def application(environ, start_response):
    try:
        import flask

        where = flask.__file__
    except ImportError:
        where = "ImportError"
    body = "\n".join([where, *sys.path]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
