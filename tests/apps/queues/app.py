"""An app whose requests can be held in the worker until the test lets them go.

GET /block?started=PATH&gate=PATH  creates `started`, then waits until `gate` exists (at most
                                   30 s, then answers 504 so that a test cannot hang on it).
GET /run?tag=T                     records that a request tagged T ran.
GET /runs                          the tags that ran, in order, comma-separated.
GET /fast                          answers at once.
GET /pid                           this worker's pid.
POST /len                          reads the body and answers its length.
"""

import os
import time
from urllib.parse import parse_qs

RUNS = []
GATE_LIMIT_S = 30.0


def reply(start_response, body, status="200 OK"):
    body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/block":
        # A body, if any, is read first (so that a request with a body is fully received).
        environ["wsgi.input"].read()
        with open(q["started"], "w") as f:
            f.write(str(os.getpid()))
        deadline = time.monotonic() + GATE_LIMIT_S
        while not os.path.exists(q["gate"]):
            if time.monotonic() > deadline:
                return reply(start_response, "gate never opened", "504 Gateway Timeout")
            time.sleep(0.01)
        return reply(start_response, "released")
    if path == "/run":
        RUNS.append(q["tag"])
        return reply(start_response, "ran " + q["tag"])
    if path == "/runs":
        return reply(start_response, ",".join(RUNS))
    if path == "/fast":
        return reply(start_response, "fast")
    if path == "/len":
        return reply(start_response, str(len(environ["wsgi.input"].read())))
    if path == "/pid":
        return reply(start_response, str(os.getpid()))
    return reply(start_response, "not found", "404 Not Found")
