//! `warren serve` refuses a bad config: it exits non-zero before serving anything, and its
//! stderr names the file, the dotted key and the reason (`FILE: KEY: REASON`). A problem of one
//! app's own refuses that app alone: the others are served, and `warren check` fails naming it.

mod support;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{fixture, tempdir};

/// What `warren serve` did with a config.
struct Refusal {
    file: PathBuf,
    stderr: String,
    stdout: String,
}

/// Runs `warren serve` on `config` and expects it to exit non-zero within a bound.
fn refused(config: &str) -> Refusal {
    let dir = tempdir();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("WARREN_LOG")
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!("warren kept running on a bad config:\n{config}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !status.success(),
        "warren accepted a bad config (exit {status}); stderr:\n{stderr}\nconfig:\n{config}"
    );
    assert!(
        !stdout.contains("listening on"),
        "warren started listening on a bad config"
    );
    // Keep the directory alive until here.
    drop(dir);
    Refusal {
        file,
        stderr,
        stdout,
    }
}

impl Refusal {
    /// The stderr names the file, then the key, then the reason contains each of `reason`.
    fn says(&self, key: &str, reason: &[&str]) {
        let prefix = format!("{}: {key}: ", self.file.display());
        let line = self
            .stderr
            .lines()
            .find(|l| l.contains(&prefix))
            .unwrap_or_else(|| {
                panic!(
                    "stderr does not say `{prefix}REASON`:\n{}{}",
                    self.stderr, self.stdout
                )
            });
        for r in reason {
            assert!(
                line.contains(r),
                "the reason does not mention {r:?}: {line}"
            );
        }
    }
}

fn app(extra: &str) -> String {
    format!(
        "[apps.a]\npath = \"{}\"\nentry = \"app:application\"\n{extra}\n",
        fixture("queues")
    )
}

#[test]
fn unknown_keys() {
    refused(&app("bogus = 1")).says("apps.a.bogus", &["unknown field", "bogus"]);
    refused("[server]\nlisen = \"127.0.0.1:0\"\n")
        .says("server.lisen", &["unknown field", "lisen"]);
    refused(&format!(
        "{}static = {{ \"/s\" = \"static\" }}\n",
        app("quue_max = 3")
    ))
    .says("apps.a.quue_max", &["unknown field"]);
}

#[test]
fn missing_app_directory() {
    refused("[apps.a]\npath = \"no-such-dir\"\nentry = \"app:application\"\n")
        .says("apps.a.path", &["no-such-dir", "No such file"]);
}

#[test]
fn app_directory_that_is_a_file() {
    let file = format!("{}/app.py", fixture("queues"));
    refused(&format!(
        "[apps.a]\npath = \"{file}\"\nentry = \"app:application\"\n"
    ))
    .says("apps.a.path", &["not a directory"]);
}

#[test]
fn bad_entry() {
    let dir = fixture("queues");
    refused(&format!("[apps.a]\npath = \"{dir}\"\nentry = \"app\"\n"))
        .says("apps.a.entry", &["module:callable"]);
    refused(&format!(
        "[apps.a]\npath = \"{dir}\"\nentry = \"no_such_module:app\"\n"
    ))
    .says("apps.a.entry", &["no_such_module", "not found"]);
    refused(&format!(
        "[apps.a]\npath = \"{dir}\"\nentry = \"app:not-an-identifier\"\n"
    ))
    .says("apps.a.entry", &["not-an-identifier"]);
}

#[test]
fn bad_listen_address() {
    refused("[server]\nlisten = \"nonsense\"\n").says("server.listen", &["nonsense"]);
    refused("[server]\nlisten = \"127.0.0.1\"\n").says("server.listen", &["127.0.0.1"]);
    // Well-formed, but not an address of this machine (TEST-NET-3).
    refused(&format!(
        "[server]\nlisten = \"203.0.113.7:8080\"\n{}",
        app("")
    ))
    .says("server.listen", &["203.0.113.7:8080"]);
    // Well-formed, but taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    refused(&format!("[server]\nlisten = \"{addr}\"\n{}", app("")))
        .says("server.listen", &[&addr.to_string()]);
}

/// `warren check --config FILE`, run to its end.
fn check(file: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["check", "--config"])
        .arg(file)
        .output()
        .unwrap()
}

/// Runs `warren check` on `config` and expects it to fail: its stdout.
fn check_refuses(config: &str) -> String {
    let dir = tempdir();
    let file = dir.path().join("check.toml");
    std::fs::write(&file, config).unwrap();
    let out = check(&file);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "check accepted:\n{config}\n{stdout}");
    stdout
}

#[test]
fn duplicate_hosts() {
    // The app later in name order is refused (alone: the first one is served).
    let dir = fixture("queues");
    let config = format!(
        "[apps.a]\npath = \"{dir}\"\nentry = \"app:application\"\nhosts = [\"shared.localhost\"]\n\
         [apps.b]\npath = \"{dir}\"\nentry = \"app:application\"\nhosts = [\"other.localhost\", \"Shared.localhost\"]\n"
    );
    let out = check_refuses(&config);
    assert!(
        out.contains("b: refused: ") && out.contains("apps.b.hosts: host `shared.localhost`"),
        "{out}"
    );
    assert!(out.contains("a (app:application)"), "{out}");
    // An explicit host equal to another app's default.
    let config = format!(
        "[apps.a]\npath = \"{dir}\"\nentry = \"app:application\"\n\
         [apps.b]\npath = \"{dir}\"\nentry = \"app:application\"\nhosts = [\"a.localhost\"]\n"
    );
    let out = check_refuses(&config);
    assert!(out.contains("apps.b.hosts: host `a.localhost`"), "{out}");
}

#[test]
fn out_of_range_values() {
    refused("[server]\nmax_header_bytes = 100\n").says("server.max_header_bytes", &["8192"]);
    refused("[server]\nheader_timeout_s = 0\n").says("server.header_timeout_s", &[]);
    refused(&app("workers = 0")).says("apps.a.workers", &[]);
    refused(&app("queue_max = 0")).says("apps.a.queue_max", &[]);
    refused(&app("queue_timeout_s = -1")).says("apps.a.queue_timeout_s", &[]);
    refused(&app("max_body_mb = -1")).says("apps.a.max_body_mb", &[]);
    refused(&app("workers = \"two\"")).says(
        "apps.a.workers",
        &["expected a whole number, found text \"two\""],
    );
    refused(&app("venv = \"no-such-venv\"")).says("apps.a.venv", &["no-such-venv"]);
    refused(&app("static = { \"/s\" = \"no-such-static\" }"))
        .says("apps.a.static.\"/s\"", &["no-such-static"]);
}

#[test]
fn bad_app_name_and_missing_fields() {
    let dir = fixture("queues");
    refused(&format!(
        "[apps.\"a b\"]\npath = \"{dir}\"\nentry = \"app:application\"\n"
    ))
    .says("apps.a b", &["letters"]);
    refused(&format!("[apps.a]\npath = \"{dir}\"\n")).says("apps.a.entry", &["missing"]);
}

#[test]
fn toml_syntax_error_names_the_file_and_line() {
    let r = refused("[server]\nlisten = \"127.0.0.1:0\"\n[apps.a\n");
    let prefix = format!("{}: line 3", r.file.display());
    assert!(r.stderr.contains(&prefix), "{}", r.stderr);
}

#[test]
fn missing_config_file() {
    let dir = tempdir();
    let file = dir.path().join("absent.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&file.display().to_string()),
        "stderr does not name the file: {stderr}"
    );
}

#[test]
fn each_refusal_is_one_line() {
    // The message is meant for a terminal or a service log: one line each, no backtrace, no
    // continuation lines.
    for config in [
        app("bogus = 1"),
        app("workers = \"two\""),
        format!("[apps.a]\npath = \"{}\"\n", fixture("queues")),
        "[server]\nlisten = \"nonsense\"\n".to_owned(),
    ] {
        let r = refused(&config);
        let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "the refusal of\n{config}\nis not one line:\n{}",
            r.stderr
        );
    }
}

#[test]
fn check_lists_each_app_with_its_worker_range() {
    let dir = tempdir();
    let file = dir.path().join("ok.toml");
    std::fs::write(
        &file,
        format!(
            "[apps.fixed]\npath = \"{p}\"\nentry = \"app:application\"\nworkers = 3\n\n\
             [apps.scaled]\npath = \"{p}\"\nentry = \"app:application\"\n\
             [apps.scaled.scale]\nmin = 0\nmax = 5\n\n\
             [apps.single]\npath = \"{p}\"\nentry = \"app:application\"\nworkers = 1\n",
            p = fixture("failures")
        ),
    )
    .unwrap();
    let out = check(&file);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fixed (app:application): hosts [\"fixed.localhost\"], 3 workers"),
        "{text}"
    );
    assert!(
        text.contains(
            "scaled (app:application): hosts [\"scaled.localhost\"], 0 to 5 workers (autoscaled)"
        ),
        "{text}"
    );
    assert!(
        text.contains("single (app:application): hosts [\"single.localhost\"], 1 worker,"),
        "{text}"
    );
}

#[test]
fn a_missing_config_file_is_said_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["serve", "--config", "/nonexistent/warren.toml"])
        .env_remove("WARREN_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "warren: /nonexistent/warren.toml: cannot read: No such file or directory (os error 2)"
    );
}

/// Two apps, `good` and one whose virtualenv does not exist (yet).
fn good_and_missing_venv() -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [apps.good]\npath = \"{hello}\"\nentry = \"app:application\"\nworkers = 1\n\n\
         [apps.novenv]\npath = \"{hello}\"\nentry = \"app:application\"\nworkers = 1\n\
         venv = \"no-such-venv\"\n",
        hello = support::repo_root().join("examples/apps/hello").display()
    )
}

#[test]
fn an_app_that_cannot_run_is_refused_alone_and_named() {
    // `warren serve`: the other app is served; the refused one's host says why it is not.
    let w = support::Warren::start(&good_and_missing_venv());
    w.wait_workers("good", 1);
    w.get("good.localhost", "/").assert_ok();
    let resp = w.get("novenv.localhost", "/");
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(
        resp.text().contains("app novenv is not running"),
        "{}",
        resp.text()
    );
    assert!(
        !resp.text().contains("no-such-venv"),
        "a client is not told the server's paths: {}",
        resp.text()
    );
    let refused = w.log_lines(&["app refused", "apps.novenv.venv", "no-such-venv"]);
    assert_eq!(refused.len(), 1, "{}", w.logs());
    // Once its virtualenv exists, a reload starts it.
    let venv = w
        .dir
        .path()
        .join("no-such-venv/lib/python3.11/site-packages");
    std::fs::create_dir_all(&venv).unwrap();
    w.hangup();
    assert!(
        w.wait_for_log_line(Duration::from_secs(30), &["reload done"]),
        "{}",
        w.logs()
    );
    w.wait_workers("novenv", 1);
    w.get("novenv.localhost", "/").assert_ok();
    // And when it goes away again, the running version keeps serving.
    std::fs::remove_dir_all(w.dir.path().join("no-such-venv")).unwrap();
    w.hangup();
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(30),
            &["apps.novenv.venv", "the running version keeps serving"]
        ),
        "{}",
        w.logs()
    );
    w.get("novenv.localhost", "/").assert_ok();
    w.stop();

    // `warren check` names it and fails.
    let dir = tempdir();
    let file = dir.path().join("two.toml");
    std::fs::write(&file, good_and_missing_venv()).unwrap();
    let out = check(&file);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("good (app:application)"), "{text}");
    assert!(
        text.contains("novenv: refused: ") && text.contains("apps.novenv.venv"),
        "{text}"
    );
}

#[test]
fn a_config_whose_apps_all_fail_or_that_has_none_is_refused() {
    refused(&app("venv = \"no-such-venv\"")).says("apps.a.venv", &["no-such-venv"]);
    let r = refused("[server]\nlisten = \"127.0.0.1:0\"\n");
    assert!(r.stderr.contains("no [apps.NAME] table"), "{}", r.stderr);
}

#[test]
fn a_virtualenv_of_another_python_is_refused_with_both_versions() {
    let dir = tempdir();
    let venv = dir.path().join("venv312");
    std::fs::create_dir_all(venv.join("lib/python3.12/site-packages")).unwrap();
    std::fs::write(
        venv.join("pyvenv.cfg"),
        "home = /usr/bin\nversion = 3.12.1\n",
    )
    .unwrap();
    let file = dir.path().join("py.toml");
    std::fs::write(
        &file,
        format!(
            "[apps.good]\npath = \"{hello}\"\nentry = \"app:application\"\n\
             [apps.other]\npath = \"{hello}\"\nentry = \"app:application\"\nvenv = \"venv312\"\n",
            hello = support::repo_root().join("examples/apps/hello").display()
        ),
    )
    .unwrap();
    let out = check(&file);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    let embedded = String::from_utf8(
        Command::new(support::repo_root().join(".venv/bin/python"))
            .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("other: refused: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("apps.other.venv")
            && line.contains("made with Python 3.12.1")
            && line.contains(&format!("warren embeds Python {}", embedded.trim()))
            && line.contains("-m venv"),
        "{line}"
    );
    // The project's own venv, made by scripts/setup from the same Python, is accepted.
    std::fs::write(
        &file,
        format!(
            "[apps.good]\npath = \"{hello}\"\nentry = \"app:application\"\nvenv = \"{venv}\"\n",
            hello = support::repo_root().join("examples/apps/hello").display(),
            venv = support::repo_root().join(".venv").display()
        ),
    )
    .unwrap();
    let out = check(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
