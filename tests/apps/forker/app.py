"""An app whose import forks a child that exits a moment later, once the workers run: the
zygote reaps a process that is not a worker, which must not count as a worker gone. (Run
unconfined: a confined zygote's filter refuses the app's fork.)"""

import os
import time

_pid = os.fork()
if _pid == 0:
    time.sleep(0.3)
    os._exit(0)


def application(environ, start_response):
    body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [body]
