"""A tiny Bottle app (Bottle from PyPI, in the venv scripts/setup makes): `warren run
app:app --dir tests/apps/bottle --venv .venv` serves it on every host."""

import bottle

app = bottle.Bottle()


@app.route("/")
def index():
    return "hello from bottle %s\n" % bottle.__version__


@app.route("/hello/<name>")
def hello(name):
    return "hello %s\n" % name
