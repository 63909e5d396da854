"""An app with a dependency that is not installed: `warren check --import` shows the
ModuleNotFoundError's traceback before anything is served."""

import no_such_module  # noqa: F401


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"unreachable\n"]
