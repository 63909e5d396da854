//! Static directories served by the front: routing by prefix, validators that follow the file
//! on disk, and directory handling. The app behind them is `tests/apps/failures`; the files
//! live in a temporary directory the test writes.

mod support;

use std::time::{Duration, SystemTime};

use support::{Warren, fixture, tempdir};

const HOST: &str = "site.localhost";

fn start() -> Warren {
    let dir = tempdir();
    let files = dir.path().join("files");
    std::fs::create_dir_all(files.join("img")).unwrap();
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    std::fs::write(files.join("a.txt"), b"version one").unwrap();
    std::fs::write(files.join("img/in-files.txt"), b"from files/img").unwrap();
    std::fs::write(dir.path().join("images/pic.txt"), b"from images").unwrap();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.site]
path = "{}"
entry = "app:application"
workers = 1
static = {{ "/files" = "{files}", "/files/img" = "{images}" }}
"#,
        fixture("failures"),
        files = files.display(),
        images = dir.path().join("images").display(),
    );
    Warren::start_in(dir, &config, &[])
}

#[test]
fn longest_prefix_wins_and_prefixes_match_whole_segments() {
    let w = start();
    let mut c = w.client(HOST);
    let resp = c.get("/files/a.txt");
    assert_eq!((resp.status, resp.text().as_str()), (200, "version one"));
    // `/files/img` is its own static directory, not a subdirectory of `/files`.
    let resp = c.get("/files/img/pic.txt");
    assert_eq!((resp.status, resp.text().as_str()), (200, "from images"));
    let resp = c.get("/files/img/in-files.txt");
    assert_eq!(resp.status, 404);
    // `/filesx` is not under `/files`: the app answers it.
    let resp = c.get("/filesx/a.txt");
    assert_eq!((resp.status, resp.text().as_str()), (404, "not found"));
    let resp = c.get("/hello");
    assert_eq!((resp.status, resp.text().as_str()), (200, "hello"));
    drop(c);
    w.stop();
}

#[test]
fn validators_follow_the_file_on_disk() {
    let w = start();
    let file = w.dir.path().join("files/a.txt");
    let mut c = w.client(HOST);
    let first = c.get("/files/a.txt");
    assert_eq!(first.status, 200);
    let etag1 = first.header("etag").expect("ETag").to_owned();
    let resp = c.request("GET", "/files/a.txt", &[("If-None-Match", &etag1)], b"");
    assert_eq!(resp.status, 304);

    // New content of another size.
    std::fs::write(&file, b"version two, longer").unwrap();
    let resp = c.request("GET", "/files/a.txt", &[("If-None-Match", &etag1)], b"");
    assert_eq!(
        resp.status, 200,
        "a stale ETag still matched after the file changed"
    );
    assert_eq!(resp.text(), "version two, longer");
    let etag2 = resp.header("etag").expect("ETag").to_owned();
    assert_ne!(etag1, etag2);

    // Same size, other content, another modification time.
    std::fs::write(&file, b"VERSION TWO, LONGER").unwrap();
    let f = std::fs::File::options().write(true).open(&file).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    let resp = c.request("GET", "/files/a.txt", &[("If-None-Match", &etag2)], b"");
    assert_eq!(
        resp.status, 200,
        "a stale ETag still matched after the file changed"
    );
    assert_eq!(resp.text(), "VERSION TWO, LONGER");

    // A 206 carries the same ETag as the whole file.
    let whole = c.get("/files/a.txt");
    let part = c.request("GET", "/files/a.txt", &[("Range", "bytes=0-6")], b"");
    assert_eq!(part.status, 206);
    assert_eq!(part.text(), "VERSION");
    assert_eq!(part.header("etag"), whole.header("etag"));
    drop(c);
    w.stop();
}

#[test]
fn directories_and_missing_files() {
    let w = start();
    let mut c = w.client(HOST);
    // A directory without index.html is not listed.
    let resp = c.get("/files/");
    assert_eq!(resp.status, 404, "{}", resp.text());
    std::fs::write(w.dir.path().join("files/index.html"), b"<p>index</p>").unwrap();
    let resp = c.get("/files/");
    assert_eq!((resp.status, resp.text().as_str()), (200, "<p>index</p>"));
    let resp = c.get("/files/nope.txt");
    assert_eq!(resp.status, 404);
    assert!(resp.header("x-request-id").is_some());
    drop(c);
    w.stop();
}
