//! The bundled example apps on real frameworks: Flask (`examples/apps/flask`) with its static
//! directory served by warren itself, and Django (`examples/apps/django`). Both use the
//! virtualenv `.venv` at the repository root, which `scripts/setup` creates.

mod support;

use std::path::PathBuf;

use support::{Response, Warren, repo_root};

const FLASK: &str = "flask.localhost";
const DJANGO: &str = "django.localhost";

/// The repository's `.venv`; the tests cannot run without it, and say how to make it.
fn venv() -> PathBuf {
    let venv = repo_root().join(".venv");
    let site = std::fs::read_dir(venv.join("lib")).ok().and_then(|mut d| {
        d.find_map(|e| {
            let p = e.ok()?.path().join("site-packages");
            p.is_dir().then_some(p)
        })
    });
    let Some(site) = site else {
        panic!(
            "{} does not exist or has no site-packages: run `scripts/setup` at the repository \
             root first (it creates .venv with Flask and Django)",
            venv.display()
        );
    };
    for package in ["flask", "django"] {
        assert!(
            site.join(package).is_dir(),
            "{package} is not installed in {}: run `scripts/setup` at the repository root",
            venv.display()
        );
    }
    venv
}

fn example(name: &str) -> PathBuf {
    let dir = repo_root().join("examples/apps").join(name);
    assert!(dir.is_dir(), "the example app {} is missing", dir.display());
    dir
}

fn start_flask() -> Warren {
    let venv = venv();
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.flask]
path = "{}"
entry = "app:app"
venv = "{}"
workers = 2
static = {{ "/static" = "static" }}
"#,
        example("flask").display(),
        venv.display()
    ));
    w.wait_workers("flask", 1);
    w
}

fn start_django() -> Warren {
    let venv = venv();
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.django]
path = "{}"
entry = "mysite.wsgi:application"
venv = "{}"
workers = 2
"#,
        example("django").display(),
        venv.display()
    ));
    w.wait_workers("django", 1);
    w
}

fn ok(resp: &Response) {
    resp.assert_ok();
}

#[test]
fn flask_routes() {
    let w = start_flask();
    let mut c = w.client(FLASK);

    let resp = c.get("/");
    ok(&resp);
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        resp.header("content-type")
    );
    assert!(resp.text().contains("<form"), "{}", resp.text());

    let resp = c.post(
        "/submit",
        "application/x-www-form-urlencoded",
        b"name=Ada+Lovelace",
    );
    ok(&resp);
    assert_eq!(resp.text(), "Hello, Ada Lovelace!");

    // Form values are escaped on the way back.
    let resp = c.post(
        "/submit",
        "application/x-www-form-urlencoded",
        b"name=%3Cb%3E",
    );
    ok(&resp);
    assert_eq!(resp.text(), "Hello, &lt;b&gt;!");

    // A chunked form body reaches Flask whole (Werkzeug honours wsgi.input_terminated).
    let resp = c.request_chunked(
        "POST",
        "/submit",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &[b"name=Gr", b"ace"],
    );
    ok(&resp);
    assert_eq!(resp.text(), "Hello, Grace!");

    let resp = c.get("/hello");
    ok(&resp);
    assert_eq!(resp.text(), "Hello from Flask!\n");
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    let resp = c.get("/json");
    ok(&resp);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let body = resp.text().replace([' ', '\n'], "");
    for part in [
        r#""framework":"flask""#,
        r#""status":"ok""#,
        r#""items":[1,2,3]"#,
    ] {
        assert!(body.contains(part), "{part} not in {body}");
    }

    let resp = c.get("/no-such-page");
    assert_eq!(resp.status, 404);

    // The method is checked by Flask, not lost on the way.
    let resp = c.request("DELETE", "/hello", &[], b"");
    assert_eq!(resp.status, 405);
    drop(c);
    w.stop();
}

fn style_css() -> Vec<u8> {
    std::fs::read(example("flask").join("static/style.css")).expect("static/style.css")
}

#[test]
fn flask_static_files_with_validators_and_ranges() {
    let w = start_flask();
    let want = style_css();
    let mut c = w.client(FLASK);

    let resp = c.get("/static/style.css");
    ok(&resp);
    assert!(resp.body == want, "static body differs from the file");
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("text/css")),
        "{:?}",
        resp.header("content-type")
    );
    let etag = resp.header("etag").expect("ETag").to_owned();
    let last_modified = resp
        .header("last-modified")
        .expect("Last-Modified")
        .to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert!(last_modified.ends_with(" GMT"), "{last_modified}");

    // A range.
    let resp = c.request("GET", "/static/style.css", &[("Range", "bytes=5-14")], b"");
    assert_eq!(resp.status, 206, "{}", resp.text());
    assert_eq!(resp.body, want[5..15], "the bytes of the range");
    assert_eq!(
        resp.header("content-range"),
        Some(format!("bytes 5-14/{}", want.len()).as_str())
    );
    // A suffix range.
    let resp = c.request("GET", "/static/style.css", &[("Range", "bytes=-4")], b"");
    assert_eq!(resp.status, 206);
    assert_eq!(resp.body, want[want.len() - 4..]);
    // A range past the end.
    let resp = c.request(
        "GET",
        "/static/style.css",
        &[("Range", &format!("bytes={}-", want.len() + 10))],
        b"",
    );
    assert_eq!(resp.status, 416);

    // Conditional requests.
    let resp = c.request("GET", "/static/style.css", &[("If-None-Match", &etag)], b"");
    assert_eq!(resp.status, 304, "If-None-Match with the current ETag");
    assert!(resp.body.is_empty());
    assert_eq!(resp.header("etag"), Some(etag.as_str()));
    let resp = c.request(
        "GET",
        "/static/style.css",
        &[("If-None-Match", "\"something-else\"")],
        b"",
    );
    ok(&resp);
    assert!(resp.body == want);
    let resp = c.request(
        "GET",
        "/static/style.css",
        &[("If-Modified-Since", &last_modified)],
        b"",
    );
    assert_eq!(resp.status, 304, "If-Modified-Since with Last-Modified");
    assert!(resp.body.is_empty());
    let resp = c.request(
        "GET",
        "/static/style.css",
        &[("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")],
        b"",
    );
    ok(&resp);

    // HEAD: the headers, no body.
    let resp = c.request("HEAD", "/static/style.css", &[], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-length"),
        Some(want.len().to_string().as_str())
    );

    // A file that is not there.
    let resp = c.get("/static/missing.css");
    assert_eq!(resp.status, 404);

    // The connection is still in step after all of the above.
    let resp = c.get("/static/logo.txt");
    ok(&resp);
    drop(c);
    w.stop();
}

#[test]
fn flask_static_refuses_path_traversal() {
    let w = start_flask();
    let app_py = std::fs::read(example("flask").join("app.py")).unwrap();
    for path in [
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/%2E%2E/app.py",
        "/static/..%2fapp.py",
        "/static/..%2Fapp.py",
        "/static/%2e%2e%2fapp.py",
        "/static/./../app.py",
        "/static/logo.txt/../../app.py",
        "/static/..%5capp.py",
        "/static//../app.py",
        "/static/%2fetc%2fpasswd",
        "/static/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    ] {
        let mut c = w.client(FLASK);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: {FLASK}\r\n\r\n").as_bytes())
            .unwrap();
        let resp = match c.read_response("GET") {
            Ok(r) => r,
            // Refusing by closing the connection is fine too.
            Err(_) => continue,
        };
        assert!(
            !(resp.status == 200 && resp.body == app_py),
            "{path}: the app's source was served"
        );
        assert!(
            !resp.text().contains("root:"),
            "{path}: /etc/passwd was served"
        );
        assert!(
            !resp.text().contains("from flask import"),
            "{path}: the app's source was served (status {})",
            resp.status
        );
        assert_ne!(resp.status, 200, "{path}: {}", resp.text());
    }
    w.stop();
}

#[test]
fn django_routes() {
    let w = start_django();
    let mut c = w.client(DJANGO);

    let resp = c.get("/");
    ok(&resp);
    assert_eq!(resp.text(), "Hello from Django!\n");

    let resp = c.get("/items/7/");
    ok(&resp);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.text(), r#"{"item": 7}"#);

    let resp = c.get("/items/123456789/");
    ok(&resp);
    assert_eq!(resp.text(), r#"{"item": 123456789}"#);

    let resp = c.get("/items/abc/");
    assert_eq!(resp.status, 404);

    // CommonMiddleware's APPEND_SLASH redirect: a relative or absolute URL of the same path.
    let resp = c.get("/items/7");
    assert_eq!(resp.status, 301, "{}", resp.text());
    let location = resp.header("location").expect("Location").to_owned();
    assert!(location.ends_with("/items/7/"), "{location}");

    let resp = c.post(
        "/echo/",
        "application/x-www-form-urlencoded",
        b"name=Ada&x=1",
    );
    ok(&resp);
    assert_eq!(resp.text(), r#"{"length": 12, "name": "Ada"}"#);

    let resp = c.get("/echo/");
    assert_eq!(resp.status, 405);
    drop(c);
    w.stop();
}

#[test]
fn flask_and_django_side_by_side() {
    let venv = venv();
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.flask]
path = "{}"
entry = "app:app"
venv = "{venv}"
workers = 1
static = {{ "/static" = "static" }}

[apps.django]
path = "{}"
entry = "mysite.wsgi:application"
venv = "{venv}"
workers = 1
"#,
        example("flask").display(),
        example("django").display(),
        venv = venv.display()
    ));
    for _ in 0..5 {
        let resp = w.get(FLASK, "/hello");
        ok(&resp);
        assert_eq!(resp.text(), "Hello from Flask!\n");
        let resp = w.get(DJANGO, "/");
        ok(&resp);
        assert_eq!(resp.text(), "Hello from Django!\n");
    }
    // Static paths belong to the app of the host only.
    let resp = w.get(DJANGO, "/static/style.css");
    assert_eq!(resp.status, 404);
    w.stop();
}

#[test]
fn each_app_sees_its_own_venv_only() {
    let repo_venv = venv();
    let dir = support::tempdir();
    // A fresh venv without Flask.
    let empty = dir.path().join("empty-venv");
    let status = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&empty)
        .status()
        .expect("running python3 -m venv");
    assert!(status.success(), "python3 -m venv failed");
    let app = support::fixture("sitecheck");
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.bare]
path = "{app}"
entry = "app:application"
venv = "empty-venv"
workers = 1

[apps.full]
path = "{app}"
entry = "app:application"
venv = "{}"
workers = 1
"#,
        repo_venv.display()
    );
    let w = Warren::start_in(dir, &config, &[]);
    let resp = w.get("bare.localhost", "/");
    ok(&resp);
    let text = resp.text();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("ImportError"),
        "an app with an empty venv imported Flask from elsewhere:\n{text}"
    );
    assert_eq!(
        lines.next(),
        Some(app.as_str()),
        "the app directory comes first on sys.path"
    );
    assert!(
        text.contains("empty-venv/lib/python3"),
        "the venv's site-packages is not on sys.path:\n{text}"
    );

    let resp = w.get("full.localhost", "/");
    ok(&resp);
    let text = resp.text();
    let site = repo_venv.canonicalize().unwrap();
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.starts_with(&site.display().to_string())),
        "Flask does not come from {}:\n{text}",
        site.display()
    );
    w.stop();
}

#[test]
fn an_app_factory_is_called_once_in_the_zygote() {
    let venv = venv();
    let factory = repo_root().join("tests/apps/factory");
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.flaskf]
path = "{dir}"
entry = "app:create_app()"
venv = "{venv}"
workers = 2

[apps.plainf]
path = "{dir}"
entry = "app:plain()"
workers = 2

[apps.notapp]
path = "{dir}"
entry = "app:not_an_app()"
workers = 1
"#,
        dir = factory.display(),
        venv = venv.display(),
    ));
    w.wait_workers("flaskf", 2);
    w.wait_workers("plainf", 2);
    for (host, kind) in [("flaskf.localhost", "flask"), ("plainf.localhost", "plain")] {
        let mut makers = std::collections::BTreeSet::new();
        let mut servers = std::collections::BTreeSet::new();
        let mut c = w.client(host);
        // Both workers answer (the pool hands out the idle ones in turn under two at once).
        for _ in 0..20 {
            let resp = c.get("/");
            ok(&resp);
            let text = resp.text();
            let rest = text
                .strip_prefix(&format!("{kind} factory ran in "))
                .unwrap_or_else(|| panic!("{text}"));
            let (maker, rest) = rest.split_once(' ').unwrap();
            assert!(rest.starts_with("(1 time(s))"), "{text}");
            makers.insert(maker.to_owned());
            servers.insert(rest.rsplit(' ').next().unwrap().to_owned());
        }
        assert_eq!(makers.len(), 1, "{kind}: the factory ran in {makers:?}");
        assert!(
            !servers.contains(makers.iter().next().unwrap()),
            "{kind}: the zygote served a request itself"
        );
    }
    // A factory that returns something else: the import fails with a clear error.
    assert!(
        w.wait_for_log_line(
            std::time::Duration::from_secs(20),
            &["app:not_an_app()", "returned a int, not a WSGI callable"]
        ),
        "{}",
        w.logs()
    );
    w.stop();
}

/// A `multipart/form-data` body of exactly `total` bytes whose one file part, `file` named
/// `name`, is filled with a repeating pattern; returns the body and the file's length.
fn multipart_of_size(total: usize, name: &str) -> (Vec<u8>, usize, &'static str) {
    const BOUNDARY: &str = "warren-upload-boundary";
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    let file_len = total - head.len() - tail.len();
    let mut body = head.into_bytes();
    body.extend((0..file_len).map(|i| b'a' + (i % 26) as u8));
    body.extend_from_slice(tail.as_bytes());
    assert_eq!(body.len(), total);
    (body, file_len, BOUNDARY)
}

/// A body at the default `max_body_mb` fits where Flask spools it (the app's private `/tmp`,
/// `limits.tmp_mb` by default) and is saved whole through `request.files`; one byte more is
/// refused with 413 before any worker sees it. (With the old default of 1024 MiB, a 20 MB
/// upload was accepted and failed in the app: "No space left on device".)
#[test]
fn an_upload_at_the_default_body_limit_is_saved_and_one_over_it_is_413() {
    let venv = venv();
    let dir = support::tempdir();
    let saved = dir.path().join("saved");
    let w = Warren::start_in(
        dir,
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"

[apps.upload]
path = "{}"
entry = "app:app"
venv = "{}"
workers = 2
env = {{ UPLOAD_DIR = "{}" }}

[apps.upload.sandbox]
writable = ["{}"]
"#,
            support::fixture("flask_upload"),
            venv.display(),
            saved.display(),
            saved.display(),
        ),
        &[],
    );
    w.wait_workers("upload", 1);
    let limit = warren_config::DEFAULT_MAX_BODY_MB as usize * 1024 * 1024;
    let mut c = w.client("upload.localhost");

    let (body, file_len, boundary) = multipart_of_size(limit, "at-limit.bin");
    let resp = c.post(
        "/upload",
        &format!("multipart/form-data; boundary={boundary}"),
        &body,
    );
    assert_eq!(
        (resp.status, resp.text()),
        (200, file_len.to_string()),
        "log:\n{}",
        w.logs()
    );
    let on_disk = std::fs::read(saved.join("at-limit.bin")).expect("the saved upload");
    assert!(
        on_disk.len() == file_len
            && on_disk
                .iter()
                .enumerate()
                .all(|(i, &b)| b == b'a' + (i % 26) as u8),
        "the saved file differs from the upload ({} bytes of {file_len})",
        on_disk.len()
    );

    // One byte over: the head alone gets the refusal (the front answers before the body).
    let (body, _, boundary) = multipart_of_size(limit + 1, "over.bin");
    let mut c = w.client("upload.localhost");
    let mut head = c.head_bytes(
        "POST",
        "/upload",
        &[(
            "Content-Type",
            &format!("multipart/form-data; boundary={boundary}"),
        )],
        Some(body.len()),
    );
    head.extend_from_slice(&body[..1024]);
    c.send(&head).unwrap();
    let resp = c
        .read_response("POST")
        .expect("an answer to an oversized body");
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert!(!saved.join("over.bin").exists());
    assert!(
        !w.logs().contains("config warning"),
        "the defaults disagree:\n{}",
        w.logs()
    );
    w.stop();
}
