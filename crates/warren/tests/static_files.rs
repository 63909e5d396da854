//! Static directories served by the front: routing by prefix, validators that follow the file
//! on disk, directory handling and the HTTP details; then what the front must never serve: a
//! symlink (out of the directory, inside it, as a directory component, or the static directory
//! itself swapped for one), a hard link, a FIFO, and the same planted by a confined tenant in its
//! writable directory that is also one of its static directories. The front runs as root, as
//! these tests do, so a root-only secret read through any of them would be served.
//!
//! The app behind the first tests is `tests/apps/failures`, the tenant is `tests/apps/uploads`;
//! the files live in a temporary directory the test writes.

mod support;

use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use support::{Client, Response, Warren, fixture, needs_root, tempdir};

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

/// A file only root can read, outside every static directory: mode 0600, holding random hex.
fn secret(dir: &Path, name: &str) -> (PathBuf, String) {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(name);
    std::fs::write(&path, format!("secret {secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (path, secret)
}

/// The front refused `path` with a 404 and none of `secrets` is in what it sent.
#[track_caller]
fn refused(c: &mut Client, path: &str, secrets: &[&str]) -> Response {
    let resp = c.get(path);
    let text = resp.text();
    for secret in secrets {
        // The body is not shown: it would put the secret in the test's output.
        assert!(
            !text.contains(secret),
            "{path}: the secret was served ({}, {} bytes)",
            resp.status,
            resp.body.len()
        );
    }
    assert_eq!(resp.status, 404, "{path}: {text}");
    resp
}

#[test]
fn symlinks_are_never_followed() {
    let w = start();
    let top = w.dir.path();
    let files = top.join("files");
    let (secret_path, secret) = secret(top, "secret.txt");
    std::fs::create_dir(top.join("private")).unwrap();
    std::fs::copy(&secret_path, top.join("private/index.html")).unwrap();
    std::fs::copy(&secret_path, top.join("private/secret.txt")).unwrap();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let root_line = passwd.lines().next().unwrap();

    // Out of the directory, to a root-only file and to /etc.
    symlink(&secret_path, files.join("to-secret")).unwrap();
    symlink("/etc/shadow", files.join("shadow")).unwrap();
    symlink("/etc/passwd", files.join("passwd")).unwrap();
    // A directory component.
    symlink("/etc", files.join("etc")).unwrap();
    symlink(top.join("private"), files.join("private")).unwrap();
    // Inside the directory: refused all the same (no symlink at all).
    symlink("a.txt", files.join("also-a.txt")).unwrap();
    symlink("img", files.join("also-img")).unwrap();
    // A directory's index.
    std::fs::create_dir(files.join("docs")).unwrap();
    symlink(&secret_path, files.join("docs/index.html")).unwrap();

    let mut c = w.client(HOST);
    let secrets = [secret.as_str(), root_line, "root:"];
    for path in [
        "/files/to-secret",
        "/files/shadow",
        "/files/passwd",
        "/files/etc/passwd",
        "/files/etc/shadow",
        "/files/etc/",
        "/files/private/secret.txt",
        "/files/private/",
        "/files/also-a.txt",
        "/files/also-img/in-files.txt",
        "/files/docs/",
    ] {
        refused(&mut c, path, &secrets);
    }
    // The static directory itself swapped for a symlink after warren started (as a tenant
    // with a writable parent could).
    let images = top.join("images");
    std::fs::rename(&images, top.join("images.old")).unwrap();
    symlink(top.join("private"), &images).unwrap();
    refused(&mut c, "/files/img/secret.txt", &secrets);
    refused(&mut c, "/files/img/", &secrets);
    // And the real files are still served.
    let resp = c.get("/files/a.txt");
    assert_eq!((resp.status, resp.text().as_str()), (200, "version one"));
    drop(c);
    w.stop();
}

#[test]
fn hard_links_are_refused() {
    let w = start();
    let top = w.dir.path();
    let (secret_path, secret) = secret(top, "secret.txt");
    std::fs::hard_link(&secret_path, top.join("files/hard.txt")).unwrap();
    // Nothing on the path shows that the name leads outside: the link count does.
    std::fs::write(top.join("files/twice.txt"), "mine").unwrap();
    std::fs::hard_link(top.join("files/twice.txt"), top.join("files/again.txt")).unwrap();
    let mut c = w.client(HOST);
    refused(&mut c, "/files/hard.txt", &[&secret]);
    refused(&mut c, "/files/twice.txt", &[]);
    refused(&mut c, "/files/again.txt", &[]);
    // One link left: an ordinary file again.
    std::fs::remove_file(top.join("files/again.txt")).unwrap();
    let resp = c.get("/files/twice.txt");
    assert_eq!((resp.status, resp.text().as_str()), (200, "mine"));
    drop(c);
    w.stop();
}

#[test]
fn a_fifo_is_refused_at_once_and_the_front_keeps_answering() {
    let w = start();
    let fifo = w.dir.path().join("files/pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("running mkfifo");
    assert!(status.success());
    let mut c = w.client(HOST);
    // Opening a FIFO for reading waits for a writer unless O_NONBLOCK: a front that did so
    // would never answer (the client's read timeout would fail the test).
    c.set_read_timeout(support::slow(Duration::from_secs(5)));
    let started = Instant::now();
    for _ in 0..3 {
        refused(&mut c, "/files/pipe", &[]);
    }
    let resp = c.get("/files/a.txt");
    assert_eq!((resp.status, resp.text().as_str()), (200, "version one"));
    let resp = w.get(HOST, "/hello");
    assert_eq!((resp.status, resp.text().as_str()), (200, "hello"));
    assert!(
        started.elapsed() < support::slow(Duration::from_secs(5)),
        "took {:?}",
        started.elapsed()
    );
    drop(c);
    w.stop();
}

#[test]
fn methods_redirects_ranges_and_names() {
    let w = start();
    let files = w.dir.path().join("files");
    std::fs::create_dir(files.join("docs")).unwrap();
    std::fs::write(files.join("docs/index.html"), "<p>docs</p>").unwrap();
    std::fs::write(files.join("with space.txt"), "spaced").unwrap();
    let mut c = w.client(HOST);

    let resp = c.request("POST", "/files/a.txt", &[], b"x");
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("GET,HEAD"));

    // A directory without its slash is redirected, query kept; with it, its index is served.
    let resp = c.get("/files/docs?v=1");
    assert_eq!(resp.status, 307);
    assert_eq!(resp.header("location"), Some("/files/docs/?v=1"));
    let resp = c.get("/files");
    assert_eq!(resp.status, 307);
    assert_eq!(resp.header("location"), Some("/files/"));
    let resp = c.get("/files/docs/");
    assert_eq!((resp.status, resp.text().as_str()), (200, "<p>docs</p>"));
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        resp.header("content-type")
    );
    // A file asked for as a directory.
    refused(&mut c, "/files/a.txt/", &[]);

    let resp = c.get("/files/with%20space.txt");
    assert_eq!((resp.status, resp.text().as_str()), (200, "spaced"));
    refused(&mut c, "/files/a.txt%00.png", &[]);
    refused(&mut c, "/files/..%2f..%2fetc/passwd", &["root:"]);

    let resp = c.get("/files/a.txt");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("accept-ranges"), Some("bytes"));
    assert_eq!(resp.header("content-length"), Some("11"));
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        resp.header("content-type")
    );
    let resp = c.request("HEAD", "/files/a.txt", &[], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("11"));
    assert!(resp.body.is_empty());

    let range = |c: &mut Client, r: &str| c.request("GET", "/files/a.txt", &[("Range", r)], b"");
    let resp = range(&mut c, "bytes=8-");
    assert_eq!((resp.status, resp.text().as_str()), (206, "one"));
    assert_eq!(resp.header("content-range"), Some("bytes 8-10/11"));
    assert_eq!(resp.header("content-length"), Some("3"));
    // Several ranges: the whole file (RFC 9110 lets a server ignore Range).
    let resp = range(&mut c, "bytes=0-1,4-5");
    assert_eq!((resp.status, resp.text().as_str()), (200, "version one"));
    let resp = range(&mut c, "bytes=11-");
    assert_eq!(resp.status, 416);
    assert_eq!(resp.header("content-range"), Some("bytes */11"));
    assert!(resp.body.is_empty());
    // The connection is still in step.
    let resp = c.get("/files/a.txt");
    assert_eq!((resp.status, resp.text().as_str()), (200, "version one"));
    drop(c);
    w.stop();
}

/// A query value with nothing to encode (temporary paths are letters, digits, `-_./`).
fn plain(path: &Path) -> String {
    let s = path.display().to_string();
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b)),
        "{s}"
    );
    s
}

#[test]
fn a_tenant_cannot_serve_host_files_from_its_writable_static_directory() {
    if !needs_root() {
        return;
    }
    const TENANT: &str = "tenant.localhost";
    let dir = tempdir();
    let top = dir.path().to_path_buf();
    // Owned by the tenant's uid (the first of a fresh state directory's: sandbox_uid_base),
    // as warren requires of a writable directory.
    const TENANT_UID: u32 = 200_000;
    let uploads = top.join("uploads");
    std::fs::create_dir_all(uploads.join("pub")).unwrap();
    for d in [&uploads, &uploads.join("pub")] {
        std::os::unix::fs::chown(d, Some(TENANT_UID), Some(TENANT_UID)).unwrap();
    }
    std::fs::write(uploads.join("pub/notice.txt"), "public").unwrap();
    let (secret_path, secret) = secret(&top, "host-secret.txt");
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.tenant]
path = "{app}"
entry = "app:application"
workers = 1
static = {{ "/uploads" = "{uploads}", "/pub" = "{uploads}/pub" }}

[apps.tenant.sandbox]
writable = ["{uploads}"]
"#,
        app = fixture("uploads"),
        uploads = uploads.display(),
    );
    let w = Warren::start_in(dir, &config, &[]);
    w.wait_workers("tenant", 1);
    let mut c = w.client(TENANT);
    let u = plain(&uploads);
    let mut plant = |route: &str| {
        let resp = c.get(route);
        assert_eq!(
            (resp.status, resp.text().as_str()),
            (200, "done"),
            "{route}; log:\n{}",
            w.logs()
        );
    };
    // What the tenant does from inside its sandbox, where its writable directory is bound at
    // the same path: an upload, symlinks to the host's shadow file, to a root-only file outside
    // the sandbox, to /etc, a hard link between two of its own files, and its `pub` directory
    // (a static directory of its own) replaced by a symlink to /etc.
    plant(&format!("/write?path={u}/mine.txt&text=uploaded"));
    plant(&format!("/symlink?target=/etc/shadow&link={u}/shadow"));
    plant(&format!(
        "/symlink?target={}&link={u}/secret",
        plain(&secret_path)
    ));
    plant(&format!("/symlink?target=/etc&link={u}/etc"));
    plant(&format!("/write?path={u}/linked.txt&text=twice"));
    plant(&format!(
        "/hardlink?target={u}/linked.txt&link={u}/linked-too.txt"
    ));
    let mut c = w.client(TENANT);
    let resp = c.get("/pub/notice.txt");
    assert_eq!((resp.status, resp.text().as_str()), (200, "public"));
    let mut plant_more = w.client(TENANT);
    let resp = plant_more.get(&format!("/swap?dir={u}/pub&target=/etc"));
    assert_eq!((resp.status, resp.text().as_str()), (200, "done"));
    assert!(
        std::fs::symlink_metadata(uploads.join("shadow")).is_ok_and(|m| m.file_type().is_symlink())
            && std::fs::symlink_metadata(uploads.join("pub"))
                .is_ok_and(|m| m.file_type().is_symlink()),
        "the tenant's symlinks are not there"
    );

    // Its own upload is served: uploads served back are what the directory is for.
    let resp = c.get("/uploads/mine.txt");
    assert_eq!((resp.status, resp.text().as_str()), (200, "uploaded"));
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let shadow_line = shadow.lines().next().unwrap_or("root:");
    let secrets = [secret.as_str(), shadow_line, "root:"];
    for path in [
        "/uploads/shadow",
        "/uploads/secret",
        "/uploads/etc/shadow",
        "/uploads/etc/passwd",
        "/uploads/linked.txt",
        "/uploads/linked-too.txt",
        "/pub/shadow",
        "/pub/passwd",
        "/pub/",
    ] {
        refused(&mut c, path, &secrets);
    }
    drop(c);
    w.stop();
}
