"""What an app writes to its log, and headers it leaves untidy.

GET /hello      answers "hello" (5 bytes, with a Content-Length)
GET /stream     a body streamed without a Content-Length (its second block 50 ms later)
GET /raise      raises ZeroDivisionError (the worker logs the traceback, the client gets 500)
GET /levels     prints lines at each level: ERROR:root:, WARNING:root:, Flask's
                "[time] ERROR in app:" followed by its traceback, and a plain line
GET /spaces     headers whose values have spaces and tabs around them
"""

import sys
import time
import traceback


def reply(start_response, body, headers=()):
    body = body.encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), *headers],
    )
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hello":
        return reply(start_response, "hello")
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def blocks():
            yield b"one"
            time.sleep(0.05)
            yield b"two"

        return blocks()
    if path == "/raise":
        return 1 // 0
    if path == "/levels":
        err = sys.stderr
        err.write("ERROR:root:marker-error-line\n")
        err.write("WARNING:root:marker-warning-line\n")
        err.write("plain marker-info-line\n")
        try:
            {}["marker-key"]
        except KeyError:
            err.write("[2024-05-01 12:00:00,123] ERROR in app: Exception on /levels [GET]\n")
            traceback.print_exc()
        err.flush()
        return reply(start_response, "logged")
    if path == "/spaces":
        return reply(
            start_response,
            "spaces",
            [("Set-Cookie", "  csrftoken=abc  "), ("X-Tabbed", "\tvalue\t")],
        )
    return reply(start_response, "not found")
