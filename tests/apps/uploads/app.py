"""A tenant whose writable directory is also served as static files, and who plants things
there from inside its sandbox for the front (root, on the host) to serve.

Plain WSGI, standard library only. Every route answers 200 `done` when the file system call
worked, or 500 `errno=N error=...` when it failed; the end-to-end test
(crates/warren/tests/static_files.rs) then asks the front for what was planted.

GET /write?path=P&text=T        writes T to P (an upload)
GET /symlink?target=T&link=L    os.symlink(T, L)
GET /hardlink?target=T&link=L   os.link(T, L)
GET /swap?dir=D&target=T        renames the directory D away and puts a symlink to T in its place
GET /ok                         answers at once
"""

import os
from urllib.parse import parse_qs


def reply(start_response, status, body):
    body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def plant(path, q):
    if path == "/write":
        with open(q["path"], "w") as f:
            f.write(q["text"])
    elif path == "/symlink":
        os.symlink(q["target"], q["link"])
    elif path == "/hardlink":
        os.link(q["target"], q["link"])
    elif path == "/swap":
        os.rename(q["dir"], q["dir"] + ".old")
        os.symlink(q["target"], q["dir"])
    elif path != "/ok":
        return False
    return True


def application(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    try:
        if not plant(environ["PATH_INFO"], q):
            return reply(start_response, "404 Not Found", "not found")
    except OSError as e:
        return reply(start_response, "500 Internal Server Error", f"errno={e.errno} error={e}")
    return reply(start_response, "200 OK", "done")
