from flask import Flask, jsonify, request
from markupsafe import escape

app = Flask(__name__)

INDEX = """<!doctype html>
<html>
<head>
  <meta charset="utf-8">
  <title>Flask on warren</title>
  <link rel="stylesheet" href="/static/style.css">
</head>
<body>
  <h1>Flask on warren</h1>
  <form method="post" action="/submit">
    <label>Name <input name="name" required></label>
    <button type="submit">Greet</button>
  </form>
  <p><a href="/static/logo.txt">logo</a> &middot; <a href="/json">json</a></p>
</body>
</html>
"""


@app.get("/")
def index():
    return INDEX


@app.post("/submit")
def submit():
    name = request.form.get("name", "")
    return f"Hello, {escape(name)}!"


@app.get("/hello")
def hello():
    return "Hello from Flask!\n", {"Content-Type": "text/plain; charset=utf-8"}


@app.get("/json")
def json_view():
    return jsonify(framework="flask", status="ok", items=[1, 2, 3])
