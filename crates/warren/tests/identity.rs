//! What an app is on the host: its environment and its uid.
//!
//! An app starts from a cleared environment: warren's minimum plus its own `env` and
//! `env_files`, nothing of warren's (checked through the app, and from the host in
//! `/proc/PID/environ` of every process warren started); the env-file secret shows nowhere
//! in warren's log, `warren check` or `/metrics`. An app's uid is recorded once and kept: an
//! app added in front of it in name order does not move it (its SQLite writes go on), nor does
//! a restart; its writable directory is created for it, and one of another uid refuses it.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use support::{Client, Warren, descendants, fixture, needs_root, status_ids, tempdir};

/// Warren's own secrets: set in its environment, they must reach no app.
const WARREN_ENV: [(&str, &str); 2] = [
    ("SUPER_SECRET_DB_PASSWORD", "warren-db-password-7731"),
    ("AWS_SECRET_ACCESS_KEY", "warren-aws-key-9946"),
];
/// The value from the app's env file: the app sees it, nothing else shows it.
const FILE_SECRET: &str = "file-secret-value-5150";

fn parse_env(text: &str, sep: char) -> BTreeMap<String, String> {
    text.split(sep)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn expected(home: &str, own: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("LANG", "C.UTF-8"),
        ("PYTHONUNBUFFERED", "1"),
        ("HOME", home),
        ("TMPDIR", "/tmp"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in own {
        m.insert((*k).to_owned(), (*v).to_owned());
    }
    m
}

/// The host pid of the worker that answers `NAME.localhost`'s `/pid`. Two confined apps'
/// workers may have the same pid in their own namespaces: looked up among the app's processes.
fn worker_of(w: &Warren, app: &str) -> u32 {
    let r = w.get(&format!("{app}.localhost"), "/pid");
    assert_eq!(r.status, 200, "{}; log:\n{}", r.text(), w.logs());
    let ns_pid = r.text();
    let tag = format!("--name {app} ");
    descendants(w.pid())
        .into_iter()
        .filter(|(_, cmdline)| cmdline.contains(&tag))
        .find(|(pid, _)| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().last())
                == Some(ns_pid.trim())
        })
        .unwrap_or_else(|| panic!("no process of {app} has pid {ns_pid} in its namespace"))
        .0
}

/// The host uid of process `pid` (real, effective, saved, file system: all the same here).
fn uid_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = status_ids(&status, "Uid:");
    assert!(ids.iter().all(|&i| i == ids[0]), "{ids:?}");
    ids[0]
}

/// `warren check` on `config`: its output (stdout and stderr), after a success.
fn check_output(config: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "warren check failed: {text}");
    text
}

#[test]
fn apps_see_the_minimum_environment_and_their_own_and_nothing_of_warren_s() {
    if !needs_root() {
        return;
    }
    let dir = tempdir();
    let env_file = dir.path().join("secrets.env");
    std::fs::write(
        &env_file,
        format!("# the app's secrets\nexport DB_PASSWORD=\"{FILE_SECRET}\"\nMODE=from-file\n"),
    )
    .unwrap();
    // Readable by warren (root) alone.
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let data = dir.path().join("data");
    let todo = fixture("todo");
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[apps.todo]
path = "{todo}"
entry = "app:application"
workers = 1
env_files = ["secrets.env"]
env = {{ MODE = "from-config", TODO_DB = "{data}/todo.db" }}

[apps.todo.sandbox]
writable = ["data"]

[apps.open]
path = "{todo}"
entry = "app:application"
workers = 1
env = {{ TODO_DB = "/nonexistent/todo.db" }}

[apps.open.sandbox]
enabled = false
"#,
        data = data.display()
    );
    let w = Warren::start_in(dir, &config, &WARREN_ENV);
    w.wait_workers("todo", 1);
    w.wait_workers("open", 1);

    let todo_db = format!("{}/todo.db", data.display());
    let confined = expected(
        "/tmp",
        &[
            ("DB_PASSWORD", FILE_SECRET),
            ("MODE", "from-config"),
            ("TODO_DB", &todo_db),
        ],
    );
    let open = expected(&todo, &[("TODO_DB", "/nonexistent/todo.db")]);
    for (host, want) in [("todo.localhost", &confined), ("open.localhost", &open)] {
        let r = w.get(host, "/environ");
        assert_eq!(r.status, 200, "{host}: {}", r.text());
        assert_eq!(&parse_env(&r.text(), '\n'), want, "{host}'s os.environ");
    }

    // From the host: every process warren started (the confined app's waiter, zygote and
    // worker; the open app's zygote and worker) holds exactly its app's environment.
    let todo_worker = worker_of(&w, "todo");
    let open_worker = worker_of(&w, "open");
    let family = descendants(w.pid());
    assert!(family.len() >= 4, "{family:?}");
    for (pid, cmdline) in &family {
        let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let env = parse_env(&String::from_utf8_lossy(&raw), '\0');
        let want = if cmdline.contains("--name todo") {
            &confined
        } else {
            assert!(cmdline.contains("--name open"), "{cmdline}");
            &open
        };
        assert_eq!(&env, want, "/proc/{pid}/environ of {cmdline}");
    }
    let zygote = |worker: u32| {
        support::stat_fields(worker).unwrap()[1]
            .parse::<u32>()
            .unwrap()
    };
    for pid in [
        todo_worker,
        zygote(todo_worker),
        open_worker,
        zygote(open_worker),
    ] {
        assert!(
            family.iter().any(|(p, _)| *p == pid),
            "{pid} not in {family:?}"
        );
    }

    // The confined app writes in the directory warren made for it.
    let mut c = w.client("todo.localhost");
    let r = c.post("/", "text/plain", b"");
    assert_eq!((r.status, r.text()), (200, "1".to_owned()), "{}", w.logs());

    // The file's secret shows nowhere: not in `warren check`, `/metrics` or the log.
    let checked = check_output(&w.config_path);
    assert!(
        checked.contains("env DB_PASSWORD MODE TODO_DB"),
        "check lists the names: {checked}"
    );
    let metrics = Client::connect(w.admin_addr(), "localhost").get("/metrics");
    assert_eq!(metrics.status, 200);
    let logs = w.stop();
    for (what, text) in [
        ("warren check", &checked),
        ("/metrics", &metrics.text()),
        ("the log", &logs),
    ] {
        assert!(
            !text.contains(FILE_SECRET),
            "{what} shows the secret:\n{text}"
        );
        for (_, v) in WARREN_ENV {
            assert!(!text.contains(v), "{what} shows warren's secret:\n{text}");
        }
    }
}

/// A config of `todo` (and `aaa` when `with_aaa`), both writing SQLite in `state/data-NAME`,
/// with the state directory in `state` so that it outlives one warren's temporary directory.
fn todo_config(state: &Path, with_aaa: bool) -> String {
    let app = |name: &str| {
        format!(
            r#"
[apps.{name}]
path = "{path}"
entry = "app:application"
workers = 1
env = {{ TODO_DB = "{data}/todo.db" }}

[apps.{name}.sandbox]
writable = ["{data}"]
"#,
            path = fixture("todo"),
            data = state.join(format!("data-{name}")).display()
        )
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n{}{}",
        state.join("warren-state").display(),
        if with_aaa { app("aaa") } else { String::new() },
        app("todo")
    )
}

fn post(w: &Warren, host: &str) -> String {
    let r = w.client(host).post("/", "text/plain", b"");
    assert_eq!(r.status, 200, "{host}: {}; log:\n{}", r.text(), w.logs());
    r.text()
}

#[test]
fn an_app_keeps_its_uid_when_an_app_before_it_is_added_and_across_restarts() {
    if !needs_root() {
        return;
    }
    let state = tempdir();
    let w = Warren::start_in(tempdir(), &todo_config(state.path(), false), &[]);
    w.wait_workers("todo", 1);
    assert_eq!(post(&w, "todo.localhost"), "1");
    let todo_uid = uid_of(worker_of(&w, "todo"));
    assert!(todo_uid >= 200_000, "{todo_uid}");
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(5),
            &[
                "app given a new uid",
                "app=todo",
                &format!("uid={todo_uid}")
            ]
        ),
        "{}",
        w.logs()
    );
    // Made by warren for the app: its uid, mode 0700.
    let data = std::fs::metadata(state.path().join("data-todo")).unwrap();
    assert_eq!((data.uid() as u64, data.mode() & 0o7777), (todo_uid, 0o700));
    let recorded = state.path().join("warren-state/identities");
    let table = std::fs::read_to_string(&recorded).unwrap();
    assert!(table.contains(&format!("todo {todo_uid}\n")), "{table}");
    let mode = std::fs::metadata(state.path().join("warren-state"))
        .unwrap()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    // `aaa` sorts first; the reload must not move `todo`.
    std::fs::write(&w.config_path, todo_config(state.path(), true)).unwrap();
    w.hangup();
    assert!(
        w.wait_for_log_line(Duration::from_secs(30), &["reload done"]),
        "{}",
        w.logs()
    );
    w.wait_workers("aaa", 1);
    assert_eq!(
        post(&w, "todo.localhost"),
        "2",
        "todo still writes its database"
    );
    assert_eq!(uid_of(worker_of(&w, "todo")), todo_uid);
    assert_eq!(post(&w, "aaa.localhost"), "1");
    let aaa_uid = uid_of(worker_of(&w, "aaa"));
    assert_ne!(aaa_uid, todo_uid, "the new app got todo's uid");
    assert!(
        w.log_lines(&["app given a new uid", "app=aaa"]).len() == 1
            && w.log_lines(&["app given a new uid", "app=todo"]).len() == 1,
        "{}",
        w.logs()
    );
    let checked = check_output(&w.config_path);
    assert!(
        checked.contains(&format!("uid {todo_uid}")) && checked.contains(&format!("uid {aaa_uid}")),
        "{checked}"
    );
    w.stop();

    // A restart on the same state directory: the same uids, the data still theirs.
    let w = Warren::start_in(tempdir(), &todo_config(state.path(), true), &[]);
    w.wait_workers("todo", 1);
    w.wait_workers("aaa", 1);
    assert_eq!(uid_of(worker_of(&w, "todo")), todo_uid);
    assert_eq!(uid_of(worker_of(&w, "aaa")), aaa_uid);
    assert_eq!(post(&w, "todo.localhost"), "3");
    assert!(
        w.log_lines(&["app given a new uid"]).is_empty(),
        "{}",
        w.logs()
    );
    w.stop();

    // `todo` removed, then a new app: it does not get todo's uid, and todo comes back with it.
    let only_new = todo_config(state.path(), true)
        .replace("[apps.todo]", "[apps.zzz]")
        .replace("[apps.todo.sandbox]", "[apps.zzz.sandbox]")
        .replace("data-todo", "data-zzz");
    let w = Warren::start_in(tempdir(), &only_new, &[]);
    w.wait_workers("zzz", 1);
    let zzz_uid = uid_of(worker_of(&w, "zzz"));
    assert!(![todo_uid, aaa_uid].contains(&zzz_uid), "{zzz_uid}");
    w.stop();
    let table = std::fs::read_to_string(&recorded).unwrap();
    assert!(table.contains(&format!("todo {todo_uid}\n")), "{table}");
}

#[test]
fn a_writable_directory_of_another_uid_refuses_the_app_with_the_fix() {
    if !needs_root() {
        return;
    }
    let state = tempdir();
    // Made by the test (root), as an operator might: not the app's.
    let data = state.path().join("data-todo");
    std::fs::create_dir(&data).unwrap();
    let w = Warren::start_in(tempdir(), &todo_config(state.path(), false), &[]);
    let uid = std::fs::read_to_string(state.path().join("warren-state/identities"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("todo ").map(str::to_owned))
        .expect("todo recorded");
    let fix = format!("chown -R {uid}:{uid} {}", data.display());
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(10),
            &["refusing to start the app", "belongs to uid 0", &fix]
        ),
        "{}",
        w.logs()
    );
    let r = w.get("todo.localhost", "/");
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains(&fix) && r.text().contains(&format!("the app's uid {uid}")),
        "{}",
        r.text()
    );
    w.stop();

    // Fixed as the message says: the app starts and writes.
    let status = std::process::Command::new("sh")
        .args(["-c", &fix])
        .status()
        .unwrap();
    assert!(status.success());
    let w = Warren::start_in(tempdir(), &todo_config(state.path(), false), &[]);
    w.wait_workers("todo", 1);
    assert_eq!(post(&w, "todo.localhost"), "1");
    w.stop();
}
