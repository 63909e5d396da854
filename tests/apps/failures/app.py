"""Routes that fail in the ways a worker can fail.

GET  /pid                   this worker's pid
GET  /exit                  the worker dies (os._exit) before answering
POST /exit                  the worker reads part of the body, then dies
GET  /exit-after-headers    the worker sends headers and a first chunk, then dies
POST /read                  reads the whole body and answers its length
GET  /hello                 answers at once
"""

import os
import sys
import time


def reply(start_response, body, status="200 OK"):
    body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
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
