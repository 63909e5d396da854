"""A Flask app that saves uploads through Flask's own file handling.

Werkzeug spools a multipart file part past 500 KB to a temporary file in `/tmp` (the app's
private one, `limits.tmp_mb`), then `FileStorage.save` copies it to `UPLOAD_DIR` (a
`sandbox.writable` directory). The end-to-end test (crates/warren/tests/frameworks.rs) posts
a body at `max_body_mb`'s default and checks it arrives whole.

POST /upload (multipart, field `file`)   saves it as UPLOAD_DIR/<filename>, answers its size
"""

import os

from flask import Flask, request
from werkzeug.utils import secure_filename

app = Flask(__name__)


@app.post("/upload")
def upload():
    f = request.files["file"]
    path = os.path.join(os.environ["UPLOAD_DIR"], secure_filename(f.filename))
    f.save(path)
    return str(os.path.getsize(path)), {"Content-Type": "text/plain"}
