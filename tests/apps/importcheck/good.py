"""An app that imports: `warren check --import` says `import ok`."""


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"good\n"]
