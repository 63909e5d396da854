//! A newcomer's first contact: `warren run MODULE:CALLABLE` serving a Bottle app (from PyPI,
//! in the venv `scripts/setup` makes) on any host, its refusals naming the flag at fault;
//! `warren check --import` finding a wrong callable and a missing dependency before anything
//! is served; and a fresh `git clone` of this repository, where the README's run command
//! (`cargo run --release -- serve`, here the already built binary with the same arguments and
//! working directory) serves the hello app and refuses the Flask and Django apps by name
//! until `.venv` exists.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{Warren, repo_root, slow, tempdir};

/// Runs `warren ARGS` in `cwd` to its end (within a bound).
fn warren(cwd: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("WARREN_LOG")
        .env_remove("WARREN_WORKER")
        .spawn()
        .expect("starting target/debug/warren");
    let deadline = Instant::now() + slow(Duration::from_secs(120));
    while child.try_wait().expect("waiting for warren").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("warren {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("warren's output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_serves_a_bottle_app_on_any_host() {
    let root = repo_root();
    assert!(
        root.join(".venv/lib").is_dir(),
        "run `scripts/setup` first: it makes .venv, with Bottle"
    );
    let w = Warren::start_command(
        tempdir(),
        &root,
        &[
            "run",
            "app:app",
            "--dir",
            "tests/apps/bottle",
            "--venv",
            ".venv",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    for host in ["anything.example", "127.0.0.1", "bottle.localhost"] {
        let r = w.get(host, "/");
        assert_eq!(r.status, 200, "Host {host}: {}\n{}", r.text(), w.logs());
        assert!(
            r.text().starts_with("hello from bottle 0.13"),
            "Host {host}: {}",
            r.text()
        );
    }
    let r = w.get("x.test", "/hello/ada");
    assert_eq!((r.status, r.text().as_str()), (200, "hello ada\n"));
    let logs = w.stop();
    // Confined as a config file's app is: it has its cgroup (where the machine has cgroups)
    // and its zygote is the sandboxed one, named after the directory.
    assert!(
        logs.contains("app configured") && logs.contains("app=bottle"),
        "{logs}"
    );
}

#[test]
fn run_names_the_flag_of_a_refused_value() {
    let root = repo_root();
    let missing = "/nonexistent/warren-test-venv";
    let out = warren(
        &root,
        &[
            "run",
            "app:app",
            "--dir",
            "tests/apps/bottle",
            "--venv",
            missing,
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "a missing venv was accepted: {err}");
    assert!(!text(&out.stdout).contains("listening on"));
    assert!(
        err.contains(&format!("--venv: {missing}")),
        "the refusal names --venv and the path: {err}"
    );
    assert!(!err.contains("apps."), "no config key in it: {err}");

    // A directory that is no virtualenv, relative to the working directory.
    let out = warren(
        &root,
        &[
            "run",
            "app:app",
            "--dir",
            "tests/apps/bottle",
            "--venv",
            "tests/apps",
        ],
    );
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--venv: ") && err.contains("site-packages"),
        "{err}"
    );

    let out = warren(
        &root,
        &["run", "app:app", "--dir", "tests/apps/no-such-app"],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("--dir: "), "{err}");
}

/// `warren check --import` on `apps` (`(name, entry)` of the `importcheck` fixture): its
/// exit status, and per app the lines it printed (its own line and what follows it).
fn check_import(apps: &[(&str, &str)]) -> (bool, Vec<(String, String)>) {
    let dir = tempdir();
    let mut config = String::new();
    for (name, entry) in apps {
        config.push_str(&format!(
            "[apps.{name}]\npath = \"{}\"\nentry = \"{entry}\"\n",
            support::fixture("importcheck")
        ));
    }
    let file = dir.path().join("warren.toml");
    std::fs::write(&file, config).unwrap();
    let out = warren(
        dir.path(),
        &["check", "--import", "--config", file.to_str().unwrap()],
    );
    let stdout = text(&out.stdout);
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in stdout.lines() {
        let own = apps
            .iter()
            .find(|(name, _)| line.starts_with(&format!("{name}: import ")));
        match (own, sections.last_mut()) {
            (Some((name, _)), _) => sections.push((name.to_string(), format!("{line}\n"))),
            (None, Some((_, s))) if !line.starts_with("identities: ") => {
                s.push_str(line);
                s.push('\n');
            }
            _ => {}
        }
    }
    assert_eq!(
        sections.len(),
        apps.len(),
        "one import line per app:\n{stdout}\n{}",
        text(&out.stderr)
    );
    (out.status.success(), sections)
}

#[test]
fn check_import_finds_a_wrong_callable_and_a_missing_dependency() {
    let (ok, sections) = check_import(&[
        ("dep", "missing_dep:application"),
        ("good", "good:application"),
        ("nope", "good:nope"),
    ]);
    assert!(!ok, "check --import passed with apps that do not import");
    let of = |name: &str| {
        &sections
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no line for {name}: {sections:?}"))
            .1
    };
    let good = of("good");
    assert!(
        good.starts_with("good: import ok (") && good.trim_end().ends_with(" ms)"),
        "{good}"
    );
    let dep = of("dep");
    assert!(dep.starts_with("dep: import failed:"), "{dep}");
    for needle in [
        "Traceback (most recent call last):",
        "missing_dep.py\", line 4",
        "ModuleNotFoundError: No module named 'no_such_module'",
    ] {
        assert!(dep.contains(needle), "{needle:?} not in:\n{dep}");
    }
    let nope = of("nope");
    assert!(nope.starts_with("nope: import failed:"), "{nope}");
    assert!(
        nope.contains("AttributeError: module 'good' has no attribute 'nope'"),
        "{nope}"
    );

    let (ok, sections) = check_import(&[("good", "good:application")]);
    assert!(ok, "a good app fails check --import: {sections:?}");
}

/// The parsed TOML file at `path`.
fn manifest(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_fresh_clone_serves_hello_and_names_the_apps_waiting_for_their_venv() {
    let tmp = tempdir();
    let clone: PathBuf = tmp.path().join("warren");
    let status = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(repo_root())
        .arg(&clone)
        .status()
        .expect("running git clone");
    assert!(status.success(), "git clone of the repository failed");
    assert!(!clone.join(".venv").exists(), "a clone has no venv");

    // `cargo run` at the root picks warren: the only binary of the workspace, and its
    // package's default-run.
    let member = manifest(&clone.join("crates/warren/Cargo.toml"));
    assert_eq!(
        member["package"]
            .get("default-run")
            .and_then(|v| v.as_str()),
        Some("warren"),
        "crates/warren/Cargo.toml has default-run = \"warren\""
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let meta = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(&clone)
        .output()
        .expect("running cargo metadata in the clone");
    assert!(meta.status.success(), "{}", text(&meta.stderr));
    let meta = text(&meta.stdout);
    assert_eq!(
        meta.matches("\"kind\":[\"bin\"]").count(),
        1,
        "one binary in the workspace, so `cargo run` needs no --bin"
    );
    assert!(meta.contains("\"default_run\":\"warren\""), "{meta}");

    // The README's command, run from the clone's root: `serve` on config/warren.toml. Its port
    // is 8080, which another test or program may hold: the clone's copy listens on port 0.
    let config = clone.join("config/warren.toml");
    let text_of = std::fs::read_to_string(&config).unwrap();
    let listen = "listen = \"127.0.0.1:8080\"";
    assert!(text_of.contains(listen), "the README says 8080: {text_of}");
    std::fs::write(&config, text_of.replace(listen, "listen = \"127.0.0.1:0\"")).unwrap();
    let w = Warren::start_command(tempdir(), &clone, &["serve"]);
    w.wait_workers("hello", 1);
    let r = w.get("hello.localhost", "/");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), w.logs());
    for app in ["flask", "django"] {
        let r = w.get(&format!("{app}.localhost"), "/");
        assert_eq!(r.status, 503, "{app}: {}", r.text());
        assert!(
            r.text().contains(&format!("app {app} is not running")),
            "{}",
            r.text()
        );
    }
    let logs = w.stop();
    for app in ["flask", "django"] {
        let refused = logs
            .lines()
            .find(|l| l.contains("app refused") && l.contains(&format!("app={app}")))
            .unwrap_or_else(|| panic!("no refusal of {app} in the log:\n{logs}"));
        assert!(
            refused.contains(&format!("apps.{app}.venv")) && refused.contains(".venv"),
            "{refused}"
        );
    }
}
