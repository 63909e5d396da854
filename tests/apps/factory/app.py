"""App factories (`entry = "app:create_app()"`), as Flask's tutorial writes them.

`create_app` builds a Flask app; `plain` a plain WSGI callable. Each says which process ran
the factory and how many times it ran there: the zygote calls it once, before any worker is
forked, so every worker answers with the zygote's pid and a count of 1.
"""

import os

made = []


def create_app():
    from flask import Flask

    made.append(os.getpid())
    app = Flask(__name__)

    @app.get("/")
    def index():
        return f"flask factory ran in {made[0]} ({len(made)} time(s)); served by {os.getpid()}"

    return app


def plain():
    made.append(os.getpid())

    def application(environ, start_response):
        body = f"plain factory ran in {made[0]} ({len(made)} time(s)); served by {os.getpid()}"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body.encode()]

    return application


def not_an_app():
    return 42
