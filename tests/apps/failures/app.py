"""Routes that fail in the ways a worker can fail.

GET  /pid                   this worker's pid
GET  /exit                  the worker dies (os._exit) before answering
POST /exit                  the worker reads part of the body, then dies
GET  /exit-after-headers    the worker sends headers and a first chunk, then dies
POST /read                  reads the whole body and answers its length
GET  /hello                 answers at once
GET  /sleep?s=N             sleeps N seconds, then answers
GET  /drip                  streams a chunk every 0.1 s, forever
GET  /flood                 streams 64 KiB chunks as fast as the client takes them, forever
GET  /leak?mb=N             keeps N more MiB alive in this worker, answers the worker's pid
GET  /segv                  the worker dies of a segmentation fault
GET  /count                 how many requests this worker has served, and its pid
"""

import os
import sys
import time
from urllib.parse import parse_qs

_hoard = []
_served = 0


def reply(start_response, body, status="200 OK"):
    body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    global _served
    _served += 1
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/sleep":
        time.sleep(float(query["s"][0]))
        return reply(start_response, "slept")
    if path == "/drip":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def drip():
            while True:
                yield b"drop\n"
                time.sleep(0.1)

        return drip()
    if path == "/flood":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def flood():
            chunk = b"f" * 65536
            while True:
                yield chunk

        return flood()
    if path == "/leak":
        _hoard.append(bytearray(int(query["mb"][0]) << 20))
        return reply(start_response, str(os.getpid()))
    if path == "/segv":
        import ctypes

        ctypes.string_at(0)
    if path == "/count":
        return reply(start_response, f"{_served} {os.getpid()}")
    if path == "/pid":
        return reply(start_response, str(os.getpid()))
    if path == "/exit":
        if environ["REQUEST_METHOD"] == "POST":
            environ["wsgi.input"].read(10)
        sys.stderr.write(f"worker {os.getpid()} exits mid-request\n")
        sys.stderr.flush()
        os._exit(1)
    if path == "/exit-after-headers":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield b"y" * 1000
            time.sleep(0.2)
            os._exit(1)

        return body()
    if path == "/read":
        stream = environ["wsgi.input"]
        total = 0
        while True:
            data = stream.read(65536)
            if not data:
                break
            total += len(data)
        return reply(start_response, str(total))
    if path == "/hello":
        return reply(start_response, "hello")
    return reply(start_response, "not found", "404 Not Found")
