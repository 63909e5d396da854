//! Changing apps while they serve: SIGHUP redeploys every app under load with no failed
//! request, a touched `touch_reload` file redeploys its app alone, apps come and go with the
//! config, and a config or a version that does not work is refused while the running one
//! keeps serving.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Warren, fixture, repo_root, tempdir};

const VER: &str = "ver.localhost";
const OTHER: &str = "other.localhost";

/// A copy of the version app in `dir/ver`, answering `version`.
fn version_app(dir: &Path, version: &str) {
    let app = dir.join("ver");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::copy(format!("{}/app.py", fixture("version")), app.join("app.py")).unwrap();
    std::fs::write(app.join("version.txt"), version).unwrap();
}

fn config(extra_ver: &str, other: bool) -> String {
    let mut c = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.ver]
path = "ver"
entry = "app:application"
workers = 2
{extra_ver}
"#
    );
    if other {
        c.push_str(&format!(
            "\n[apps.other]\npath = \"{}\"\nentry = \"app:application\"\nworkers = 1\n",
            repo_root().join("examples/apps/hello").display()
        ));
    }
    c
}

fn start(extra_ver: &str) -> Warren {
    let dir = tempdir();
    version_app(dir.path(), "v1");
    let w = Warren::start_in(dir, &config(extra_ver, true), &[]);
    w.wait_workers("ver", 2);
    w.wait_workers("other", 1);
    w
}

fn version(w: &Warren) -> String {
    let r = w.get(VER, "/");
    r.assert_ok();
    r.text()
}

/// Polls until `/` answers `want` (panics with the log after `timeout`).
fn wait_version(w: &Warren, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if version(w) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still not {want}; log:\n{}",
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Clients that keep requesting `ver` (some requests slow, so that some are in flight across
/// the reload) and record every answer.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(u16, String)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(w: &Warren, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|i| {
                let (stop, answers) = (stop.clone(), answers.clone());
                let mut client = w.client(VER);
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let path = if (n + i) % 8 == 0 { "/slow?s=0.3" } else { "/" };
                        let r = client.get(path);
                        let closes = r.closes();
                        answers.lock().unwrap().push((r.status, r.text()));
                        if closes {
                            client.reconnect();
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            answers,
            threads,
        }
    }

    fn finish(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a load client panicked");
        }
        Arc::try_unwrap(self.answers).unwrap().into_inner().unwrap()
    }
}

fn zygotes_ready(w: &Warren, app: &str) -> usize {
    w.log_lines(&["zygote ready", &format!("app=\"{app}\"")])
        .len()
}

#[test]
fn sighup_redeploys_every_app_under_load_without_a_failed_request() {
    let w = start("");
    let load = Load::start(&w, 4);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(w.dir.path().join("ver/version.txt"), "v2").unwrap();
    w.hangup();
    assert!(
        w.wait_for_log_line(Duration::from_secs(30), &["reload done"]),
        "{}",
        w.logs()
    );
    // Requests go on a while on the new generation, and the old one drains.
    std::thread::sleep(Duration::from_millis(500));
    let answers = load.finish();
    let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the reload: {:?}\nlog:\n{}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)],
        w.logs()
    );
    assert!(answers.iter().any(|(_, v)| v == "v1"), "v1 served before");
    assert!(answers.iter().any(|(_, v)| v == "v2"), "v2 served after");
    // The version is read at import: v2 comes from a new zygote's workers.
    assert_eq!(version(&w), "v2");
    // SIGHUP redeploys every app, not only the changed one.
    assert_eq!(zygotes_ready(&w, "other"), 2, "{}", w.logs());
    w.get(OTHER, "/").assert_ok();
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(30),
            &["old generation drained", "app=\"ver\""]
        ),
        "{}",
        w.logs()
    );
    w.stop();
}

#[test]
fn touching_an_apps_reload_file_redeploys_that_app_alone() {
    let w = start(r#"touch_reload = ["ver/reload.touch"]"#);
    assert_eq!(version(&w), "v1");
    std::fs::write(w.dir.path().join("ver/version.txt"), "v2").unwrap();
    std::fs::write(w.dir.path().join("ver/reload.touch"), b"").unwrap();
    wait_version(&w, "v2", Duration::from_secs(20));
    assert!(
        w.wait_for_log_line(Duration::from_secs(5), &["reload done"]),
        "{}",
        w.logs()
    );
    assert_eq!(
        zygotes_ready(&w, "other"),
        1,
        "the other app was left alone"
    );
    w.stop();
}

#[test]
fn sighup_adds_and_removes_apps_and_refuses_a_bad_config() {
    let w = start("");
    // `other` goes, `more` comes.
    let mut next = config("", false);
    next.push_str(&format!(
        "\n[apps.more]\npath = \"{}\"\nentry = \"app:application\"\nworkers = 1\n",
        repo_root().join("examples/apps/hello").display()
    ));
    std::fs::write(&w.config_path, next).unwrap();
    w.hangup();
    assert!(
        w.wait_for_log_line(Duration::from_secs(30), &["reload done"]),
        "{}",
        w.logs()
    );
    w.get("more.localhost", "/").assert_ok();
    assert_eq!(w.get(OTHER, "/").status, 404, "a removed app is not routed");
    version(&w);

    // A config that does not load changes nothing, and says why.
    std::fs::write(&w.config_path, "[apps.ver]\npath = \"ver\"\nentry = 3\n").unwrap();
    w.hangup();
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(10),
            &["reload refused", "apps.ver.entry"]
        ),
        "{}",
        w.logs()
    );
    w.get("more.localhost", "/").assert_ok();
    assert_eq!(version(&w), "v1");
    w.stop();
}

#[test]
fn a_version_that_does_not_import_leaves_the_running_one_serving() {
    let w = start("");
    let load = Load::start(&w, 2);
    std::fs::write(w.dir.path().join("ver/version.txt"), "broken").unwrap();
    w.hangup();
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(30),
            &["the new version did not start", "keeps serving"]
        ),
        "{}",
        w.logs()
    );
    let answers = load.finish();
    assert!(
        answers.iter().all(|(s, v)| *s == 200 && v == "v1"),
        "{:?}",
        answers.iter().find(|(s, v)| *s != 200 || v != "v1")
    );
    assert_eq!(version(&w), "v1");
    w.stop();
}

#[test]
fn an_app_that_scales_to_zero_is_redeployed_too() {
    for keep in [true, false] {
        let dir = tempdir();
        version_app(dir.path(), "v1");
        let w = Warren::start_in(
            dir,
            &format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n\n[apps.ver]\npath = \"ver\"\nentry = \"app:application\"\n\n[apps.ver.scale]\nmin = 0\nmax = 2\nkeep_zygote = {keep}\n"
            ),
            &[],
        );
        assert_eq!(version(&w), "v1");
        std::fs::write(w.dir.path().join("ver/version.txt"), "v2").unwrap();
        w.hangup();
        assert!(
            w.wait_for_log_line(
                Duration::from_secs(30),
                &["reload done", "redeployed=[\"ver\"]"]
            ),
            "{}",
            w.logs()
        );
        assert_eq!(version(&w), "v2");
        w.stop();
    }
}
