"""A to-do list in SQLite, for the tests of app identities and environments.

The database lives at $TODO_DB (a file in one of the app's writable directories).

GET  /        how many rows the table holds
POST /        inserts a row, answers the new count
GET  /pid     this worker's pid (as the worker sees it)
GET  /environ this process's environment, one KEY=VALUE per line, sorted
"""

import os
import sqlite3


def reply(start_response, body, status="200 OK"):
    body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def db():
    conn = sqlite3.connect(os.environ["TODO_DB"])
    conn.execute("CREATE TABLE IF NOT EXISTS todo (id INTEGER PRIMARY KEY, added REAL)")
    return conn


def count(conn):
    return conn.execute("SELECT COUNT(*) FROM todo").fetchone()[0]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    method = environ["REQUEST_METHOD"]
    if path == "/pid":
        return reply(start_response, str(os.getpid()))
    if path == "/environ":
        lines = "".join(f"{k}={v}\n" for k, v in sorted(os.environ.items()))
        return reply(start_response, lines)
    if path == "/":
        try:
            with db() as conn:
                if method == "POST":
                    conn.execute("INSERT INTO todo (added) VALUES (julianday('now'))")
                n = count(conn)
        except sqlite3.Error as exc:
            return reply(start_response, f"{type(exc).__name__}: {exc}", "500 Internal Server Error")
        return reply(start_response, str(n))
    return reply(start_response, "not found", "404 Not Found")
