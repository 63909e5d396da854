"""An app that answers the version it was imported with: the contents of `version.txt` next
to it, read once at import. A redeploy shows as a new answer.

GET /            the version
GET /slow?s=N    sleeps N seconds, then the version (a request in flight across a reload)
GET /pid         this worker's pid
"""

import os
import time
from urllib.parse import parse_qs

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "version.txt")) as f:
    VERSION = f.read().strip()
if VERSION == "broken":
    raise RuntimeError("this version does not import")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        time.sleep(float(parse_qs(environ.get("QUERY_STRING", ""))["s"][0]))
    body = (str(os.getpid()) if path == "/pid" else VERSION).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
