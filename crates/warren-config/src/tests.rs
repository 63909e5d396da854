use super::*;

/// [`super::parse`], with an app refused on its own counted as the error: most tests here
/// check one app's refusal.
fn parse(file: &Path, text: &str) -> Result<Config, String> {
    let config = super::parse(file, text).map_err(|e| e.to_string())?;
    match config.refused.first() {
        Some(r) => Err(r.error.clone()),
        None => Ok(config),
    }
}

/// A temp dir holding `app/app.py`, `app/static/`, a fake venv, and the config file path.
fn fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("app/static")).unwrap();
    std::fs::create_dir_all(dir.path().join("app/pkg")).unwrap();
    std::fs::write(dir.path().join("app/app.py"), "application = None\n").unwrap();
    std::fs::write(dir.path().join("app/pkg/__init__.py"), "").unwrap();
    std::fs::create_dir_all(dir.path().join("venv/lib/python3.11/site-packages/vmod")).unwrap();
    std::fs::write(
        dir.path()
            .join("venv/lib/python3.11/site-packages/vmod/__init__.py"),
        "",
    )
    .unwrap();
    let file = dir.path().join("warren.toml");
    (dir, file)
}

#[test]
fn an_app_with_a_problem_of_its_own_is_refused_alone() {
    let (_dir, file) = fixture();
    // In name order: `alpha` is first, then `bad` claims alpha's host.
    let text = "[apps.alpha]\npath = \"app\"\nentry = \"app:application\"\n\
                [apps.bad]\npath = \"app\"\nentry = \"app:application\"\nvenv = \"nowhere\"\n\
                hosts = [\"bad.test\", \"alpha.localhost\"]\n\
                [apps.worse]\npath = \"missing\"\nentry = \"app:application\"\n";
    let config = super::parse(&file, text).unwrap();
    let names: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["alpha"]);
    let refused: Vec<(&str, &[String])> = config
        .refused
        .iter()
        .map(|r| (r.name.as_str(), r.hosts.as_slice()))
        .collect();
    // `bad` keeps the host no other app had; `worse`'s is its default.
    assert_eq!(
        refused,
        [
            ("bad", &["bad.test".to_owned()][..]),
            ("worse", &["worse.localhost".to_owned()][..])
        ]
    );
    assert!(
        config.refused[0]
            .error
            .contains("warren.toml: apps.bad.hosts")
            && config.refused[0]
                .error
                .contains("already routed to app `alpha`"),
        "{:?}",
        config.refused
    );
    assert!(
        config.refused[1].error.contains("apps.worse.path"),
        "{:?}",
        config.refused
    );
}

/// Parses `text`; expects success, or an error whose message contains `expected_err`.
fn check(text: &str, expected_err: Option<&str>) -> Option<Config> {
    let (_dir, file) = fixture();
    match (parse(&file, text), expected_err) {
        (Ok(config), None) => Some(config),
        (Ok(_), Some(want)) => panic!("expected an error containing {want:?}, got Ok"),
        (Err(e), None) => panic!("unexpected error: {e}"),
        (Err(msg), Some(want)) => {
            assert!(msg.contains(want), "error {msg:?} lacks {want:?}");
            assert!(msg.contains("warren.toml"), "error {msg:?} lacks the file");
            None
        }
    }
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"
[apps.hello]
path = "app"
entry = "app:application"
static = { "/static/" = "static" }
"#;

#[test]
fn good_config_gets_defaults() {
    let config = check(GOOD, None).unwrap();
    let app = &config.apps[0];
    assert_eq!(app.hosts, ["hello.localhost"]);
    assert_eq!(app.workers, 2);
    assert_eq!(app.module, "app");
    assert_eq!(app.callable, "application");
    assert_eq!(app.static_dirs[0].prefix, "/static");
    assert!(app.static_dirs[0].dir.ends_with("app/static"));
    assert!(app.path.is_absolute());
    assert_eq!(config.server.max_header_bytes, 16384);
}

#[test]
fn venv_site_packages_found_and_searched_for_entry() {
    let config = check(
        r#"
[apps.v]
path = "app"
entry = "vmod:app"
venv = "venv"
hosts = ["V.example", "v.localhost"]
"#,
        None,
    )
    .unwrap();
    let app = &config.apps[0];
    assert!(
        app.site_packages
            .as_ref()
            .unwrap()
            .ends_with("python3.11/site-packages")
    );
    assert_eq!(app.hosts, ["v.example", "v.localhost"]);
}

#[test]
fn a_catch_all_app_takes_every_other_host() {
    let config = check(
        "[apps.a]\npath = \"app\"\nentry = \"app:application\"\nhosts = [\"a.test\", \"*\"]\n",
        None,
    )
    .unwrap();
    assert_eq!(config.apps[0].hosts, ["a.test", CATCH_ALL]);
}

#[test]
fn bad_configs_name_key_and_reason() {
    let cases: &[(&str, &str)] = &[
        (
            "[apps.a]\npath = \"app\"\nentry = \"app:application\"\nworkerz = 3\n",
            "apps.a.workerz",
        ),
        ("[server]\nlisten = \"nope\"\n", "server.listen"),
        ("[server]\nbogus = 1\n", "server.bogus"),
        (
            "[apps.a]\npath = \"missing\"\nentry = \"app:application\"\n",
            "apps.a.path",
        ),
        (
            "[apps.a]\npath = \"app\"\nentry = \"app\"\n",
            "apps.a.entry: `app` is not of the form module:callable",
        ),
        (
            "[apps.a]\npath = \"app\"\nentry = \"nosuch:application\"\n",
            "apps.a.entry: module `nosuch` not found",
        ),
        (
            "[apps.a]\npath = \"app\"\nentry = \"app:1x\"\n",
            "apps.a.entry",
        ),
        (
            "[apps.a]\npath = \"app\"\nentry = \"pkg:app\"\nworkers = 0\n",
            "apps.a.workers",
        ),
        (
            "[apps.a]\npath = \"app\"\nentry = \"app:application\"\nvenv = \"app\"\n",
            "apps.a.venv",
        ),
        (
            "[apps.a]\npath = \"app\"\nentry = \"app:application\"\nstatic = { \"/s\" = \"nodir\" }\n",
            "apps.a.static",
        ),
        (
            "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n[apps.b]\npath = \"app\"\nentry = \"app:application\"\nhosts = [\"a.localhost\"]\n",
            "already routed to app `a`",
        ),
        ("[apps.a]\nentry = \"app:application\"\n", "apps.a"),
        ("[server\nlisten = 1\n", "line 1"),
        (
            "[apps.a]\npath = \"app\"\nentry = \"app:application\"\nworkers = \"two\"\n",
            "apps.a.workers",
        ),
        (
            "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n[apps.a.limits]\nrequest_timeout_s = -1\n",
            "apps.a.limits.request_timeout_s: must be between 0",
        ),
        (
            "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n[apps.a.limits]\nmemory_mb = 64\nmax_worker_rss_mb = 65\n",
            "apps.a.limits.max_worker_rss_mb: must not exceed limits.memory_mb (64)",
        ),
        (
            "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n[apps.a.limits]\nscheduling = \"fifo\"\n",
            "apps.a.limits.scheduling: unknown policy `fifo` (one of batch, normal)",
        ),
        (
            "[server]\nscheduling = \"rr\"\n",
            "server.scheduling: unknown policy `rr` (one of batch, normal)",
        ),
        (
            "[apps.a]\npath = \"app\"\nentry = \"app:application\"\nhosts = [\"*.example\"]\n",
            "apps.a.hosts: `*.example` is not a host name: the one wildcard is `*` alone",
        ),
        (
            "[apps.a]\npath = \"app\"\nentry = \"app:application\"\nhosts = [\"*\"]\n\
             [apps.b]\npath = \"app\"\nentry = \"app:application\"\nhosts = [\"*\"]\n",
            "apps.b.hosts: host `*` is already routed to app `a`",
        ),
    ];
    for (text, want) in cases {
        check(text, Some(want));
    }
}

#[test]
fn workers_are_batch_scheduled_unless_the_app_says_normal() {
    let default = check(
        "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n",
        None,
    )
    .unwrap();
    assert_eq!(default.apps[0].limits.scheduling, Scheduling::Batch);
    let normal = check(
        "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n[apps.a.limits]\nscheduling = \"normal\"\n",
        None,
    )
    .unwrap();
    assert_eq!(normal.apps[0].limits.scheduling, Scheduling::Normal);
}

#[test]
fn the_front_is_batch_scheduled_unless_the_server_says_normal() {
    let default = check("", None).unwrap();
    assert_eq!(default.server.scheduling, Scheduling::Batch);
    let normal = check("[server]\nscheduling = \"normal\"\n", None).unwrap();
    assert_eq!(normal.server.scheduling, Scheduling::Normal);
}

#[test]
fn missing_file_is_named() {
    let err = load(Path::new("/nonexistent/warren.toml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/warren.toml: cannot read")
    );
}

#[test]
fn scale_section_and_fixed_workers() {
    let fixed = check(
        "[apps.a]\npath = \"app\"\nentry = \"app:application\"\nworkers = 3\n",
        None,
    )
    .unwrap();
    assert_eq!((fixed.apps[0].scale.min, fixed.apps[0].scale.max), (3, 3));
    assert!(fixed.apps[0].scale.is_fixed());
    let scaled = check(
        "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n[apps.a.scale]\nmin = 0\nmax = 12\ntarget_queue_wait_ms = 20\n",
        None,
    )
    .unwrap();
    let s = &scaled.apps[0].scale;
    assert_eq!((s.min, s.max, scaled.apps[0].workers), (0, 12, 0));
    assert_eq!(s.target_queue_wait, Duration::from_millis(20));
    assert!(s.keep_zygote);
    for (text, want) in [
        (
            "[apps.a]\npath = \"app\"\nentry = \"app:application\"\nworkers = 2\n[apps.a.scale]\nmax = 4\n",
            "apps.a.workers: a fixed `workers` count and a [scale] section exclude each other",
        ),
        (
            "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n[apps.a.scale]\nmin = 5\nmax = 4\n",
            "apps.a.scale.min: must not exceed scale.max (4)",
        ),
        (
            "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n[apps.a.scale]\npanic_window_s = 90\n",
            "apps.a.scale.panic_window_s",
        ),
        ("[server]\nadmin = \"nope\"\n", "server.admin"),
        (
            "[server]\nmax_workers = 0\n",
            "server.max_workers: must be at least 1",
        ),
    ] {
        check(text, Some(want));
    }
}

#[test]
fn limits_and_sandbox_default_to_confined_and_bounded() {
    let config = check(GOOD, None).unwrap();
    let app = &config.apps[0];
    let l = &app.limits;
    let mib = 1024 * 1024;
    assert_eq!(l.memory_bytes, 256 * mib);
    assert_eq!(l.cpu_percent, 100);
    assert_eq!(l.pids, 128);
    assert_eq!(l.tmp_bytes, 16 * mib);
    assert_eq!(l.nofile, 1024);
    // A file may be as large as /tmp, and at least 64 MiB (a log, a download).
    assert_eq!(l.fsize_bytes, 64 * mib);
    assert!(!l.threads, "no threads unless asked (SAE)");
    let s = &app.sandbox;
    assert!(s.enabled && s.python_guards);
    assert!(
        s.optional.is_empty(),
        "no mechanism may be missing by default"
    );
    assert!(s.readable.is_empty() && s.writable.is_empty());
}

#[test]
fn limits_are_read_in_their_units() {
    let config = check(
        r#"
[apps.a]
path = "app"
entry = "app:application"
[apps.a.limits]
memory_mb = 96
cpu_percent = 250
pids = 40
tmp_mb = 128
nofile = 4096
fsize_mb = 8
threads = true
[apps.a.sandbox]
optional = ["cgroups", "landlock"]
readable = ["app/static"]
writable = ["app/pkg"]
"#,
        None,
    )
    .unwrap();
    let app = &config.apps[0];
    let (l, mib) = (&app.limits, 1024 * 1024);
    assert_eq!(
        (l.memory_bytes, l.cpu_percent, l.pids, l.tmp_bytes),
        (96 * mib, 250, 40, 128 * mib)
    );
    assert_eq!((l.nofile, l.fsize_bytes, l.threads), (4096, 8 * mib, true));
    assert_eq!(app.sandbox.optional, ["cgroups", "landlock"]);
    assert!(
        app.sandbox.readable[0].is_absolute() && app.sandbox.readable[0].ends_with("app/static")
    );
    assert!(app.sandbox.writable[0].ends_with("app/pkg"));
    // Without fsize_mb, a large /tmp raises the file size with it.
    let config = check(
        "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n[apps.a.limits]\ntmp_mb = 128\n",
        None,
    )
    .unwrap();
    assert_eq!(config.apps[0].limits.fsize_bytes, 128 * mib);
}

#[test]
fn bad_limits_and_sandbox_name_key_and_reason() {
    let app = "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n";
    let cases: &[(&str, &str)] = &[
        (
            "[apps.a.limits]\nmemory_mb = 8\n",
            "apps.a.limits.memory_mb: must be between 16",
        ),
        (
            "[apps.a.limits]\ncpu_percent = 0\n",
            "apps.a.limits.cpu_percent: must be between 1",
        ),
        (
            "[apps.a.limits]\npids = 2\n",
            "apps.a.limits.pids: must be between 4",
        ),
        (
            "[apps.a.limits]\ntmp_mb = 0\n",
            "apps.a.limits.tmp_mb: must be between 1",
        ),
        (
            "[apps.a.limits]\nnofile = 10\n",
            "apps.a.limits.nofile: must be between 64",
        ),
        (
            "[apps.a.limits]\nfsize_mb = 0\n",
            "apps.a.limits.fsize_mb: must be at least 1",
        ),
        (
            "[apps.a.limits]\nmemory_mb = -1\n",
            "apps.a.limits.memory_mb",
        ),
        (
            "[apps.a.limits]\nthreads = \"yes\"\n",
            "apps.a.limits.threads",
        ),
        ("[apps.a.limits]\nswap_mb = 1\n", "apps.a.limits.swap_mb"),
        (
            "[apps.a.sandbox]\noptional = [\"seccomp\", \"magic\"]\n",
            "apps.a.sandbox.optional: unknown mechanism `magic`",
        ),
        (
            "[apps.a.sandbox]\nreadable = [\"nodir\"]\n",
            "apps.a.sandbox.readable",
        ),
        (
            "[apps.a.sandbox]\nwritable = [\"no/dir\"]\n",
            "apps.a.sandbox.writable: ",
        ),
        (
            "[apps.a.sandbox]\nwritable = [\".\"]\n",
            "apps.a.sandbox.writable: ",
        ),
        (
            "[apps.a.sandbox]\nwritable = [\"app\"]\n[server]\nstate_dir = \"app/state\"\n",
            "holds warren's config file or state directory",
        ),
        (
            "env = { \"A-B\" = \"s3cr3t\" }\n",
            "apps.a.env.A-B: `A-B` is not an environment variable name",
        ),
        (
            "env = { PYTHONPATH = \"s3cr3t\" }\n",
            "apps.a.env.PYTHONPATH: `PYTHONPATH` cannot be set",
        ),
        (
            "env = { WARREN_LOG = \"s3cr3t\" }\n",
            "apps.a.env.WARREN_LOG: `WARREN_LOG` cannot be set",
        ),
        ("env = { PIN = 1234 }\n", "apps.a.env.PIN: must be a string"),
        ("env = { K = s3cr3t }\n", "line 4"),
        ("env = { K = \"s3cr3t }\n", "line 4"),
        (
            "env = \"s3cr3t\"\n",
            "apps.a.env: must be a table of strings",
        ),
        ("env_files = [\"nofile.env\"]\n", "apps.a.env_files: "),
        ("[apps.a.sandbox]\nenabled = 1\n", "apps.a.sandbox.enabled"),
    ];
    for (section, want) in cases {
        // (`env` lines land in the app's own table: `app` ends with it.)
        let text = format!("{app}{section}");
        check(&text, Some(want));
        let (_dir, file) = fixture();
        let msg = parse(&file, &text).unwrap_err().to_string();
        assert!(
            !msg.contains("s3cr3t") && !msg.contains("1234"),
            "{msg:?} shows a value"
        );
    }
}

#[test]
fn an_app_inside_another_sandboxed_app_s_directory_is_refused() {
    let (dir, file) = fixture();
    std::fs::create_dir_all(dir.path().join("app/inner")).unwrap();
    std::fs::write(dir.path().join("app/inner/m.py"), "application = None\n").unwrap();
    let text = |outer_sandbox: bool| {
        format!(
            "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n\
             [apps.a.sandbox]\nenabled = {outer_sandbox}\n\
             [apps.b]\npath = \"app/inner\"\nentry = \"m:application\"\n"
        )
    };
    let err = parse(&file, &text(true)).unwrap_err().to_string();
    assert!(
        err.contains("apps.b.path") && err.contains("inside the directory of app `a`"),
        "{err}"
    );
    // An unconfined outer app reads everything anyway; and two apps may share one directory.
    parse(&file, &text(false)).unwrap();
    parse(
        &file,
        "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n\
         [apps.b]\npath = \"app\"\nentry = \"app:application\"\n",
    )
    .unwrap();
}

#[test]
fn an_app_under_usr_is_refused() {
    // Any directory under /usr with a Python module in it (a system Python's library).
    let Some(lib) = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("os.py").is_file())
    else {
        // CI's machine has one (Debian's python3): there the test must not pass unchecked.
        assert!(
            std::env::var_os("CI").is_none(),
            "no Python library under /usr/lib to stand in for an app"
        );
        eprintln!("skipped: no Python library under /usr/lib to stand in for an app");
        return;
    };
    let (_dir, file) = fixture();
    let err = parse(
        &file,
        &format!(
            "[apps.sys]\npath = \"{}\"\nentry = \"os:getcwd\"\n",
            lib.display()
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("apps.sys.path") && err.contains("under /usr"),
        "{err}"
    );
}

#[test]
fn env_files_then_env_make_the_app_s_environment() {
    let (dir, file) = fixture();
    std::fs::write(
        dir.path().join("one.env"),
        "# shared\nexport DB_URL='postgres://x'\nTOKEN=\"first\"\nLANG=C\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/two.env"), "TOKEN=s3cr3t\n").unwrap();
    let text = "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n\
                env_files = [\"one.env\", \"secrets/two.env\"]\n\
                env = { LANG = \"de_DE.UTF-8\", MODE = \"prod\" }\n";
    let config = parse(&file, text).unwrap();
    let env = &config.apps[0].env;
    let got: Vec<(&str, &str)> = env.iter().collect();
    assert_eq!(
        got,
        [
            ("DB_URL", "postgres://x"),
            ("LANG", "de_DE.UTF-8"),
            ("MODE", "prod"),
            ("TOKEN", "s3cr3t"),
        ]
    );
    // Neither the config's nor the app's `Debug` shows a value.
    let shown = format!("{config:?}");
    assert!(
        shown.contains("TOKEN") && !shown.contains("s3cr3t"),
        "{shown}"
    );
    assert!(!shown.contains("postgres://x"));

    // A bad line: the file and its line number, not the value.
    std::fs::write(dir.path().join("secrets/two.env"), "OK=1\nTOKEN s3cr3t\n").unwrap();
    let msg = parse(&file, text).unwrap_err().to_string();
    assert!(
        msg.contains("apps.a.env_files") && msg.contains("two.env: line 2: expected KEY=VALUE"),
        "{msg}"
    );
    assert!(!msg.contains("s3cr3t"), "{msg}");
}

#[test]
fn state_dir_defaults_beside_the_config_and_uids_come_from_it() {
    let (dir, file) = fixture();
    let two = "[apps.b]\npath = \"app\"\nentry = \"app:application\"\n\
               [apps.a]\npath = \"app\"\nentry = \"app:application\"\nhosts = [\"x.localhost\"]\n";
    let config = parse(&file, two).unwrap();
    let state = dir.path().canonicalize().unwrap().join(".warren");
    assert_eq!(config.server.state_dir, state);
    assert!(!state.exists(), "loading a config writes nothing");
    // Nothing recorded: the uids they would get, in name order.
    let uid = |c: &Config, n: &str| c.apps.iter().find(|a| a.name == n).unwrap().uid;
    assert_eq!((uid(&config, "a"), uid(&config, "b")), (200_000, 200_001));
    // Recorded: `b` first.
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join(identity::FILE), "b 200000\n").unwrap();
    let config = parse(&file, two).unwrap();
    assert_eq!((uid(&config, "a"), uid(&config, "b")), (200_001, 200_000));
    // A state dir elsewhere, and a broken table named with its line.
    let other = parse(&file, "[server]\nstate_dir = \"app/st\"\n").unwrap();
    assert!(other.server.state_dir.ends_with("app/st"));
    std::fs::write(state.join(identity::FILE), "b\n").unwrap();
    let msg = parse(&file, two).unwrap_err().to_string();
    assert!(msg.contains("identities: line 1"), "{msg}");
}

#[test]
fn record_identities_keeps_uids_as_apps_are_added() {
    let (_dir, file) = fixture();
    let one = "[apps.todo]\npath = \"app\"\nentry = \"app:application\"\n";
    let mut config = parse(&file, one).unwrap();
    assert_eq!(
        record_identities(&mut config).unwrap(),
        [("todo".to_owned(), 200_000)]
    );
    let two = format!("{one}[apps.aaa]\npath = \"app\"\nentry = \"app:application\"\n");
    let mut config = parse(&file, &two).unwrap();
    let uid = |c: &Config, n: &str| c.apps.iter().find(|a| a.name == n).unwrap().uid;
    assert_eq!(
        uid(&config, "todo"),
        200_000,
        "as recorded, before recording"
    );
    assert_eq!(
        record_identities(&mut config).unwrap(),
        [("aaa".to_owned(), 200_001)]
    );
    assert_eq!(
        (uid(&config, "aaa"), uid(&config, "todo")),
        (200_001, 200_000)
    );
}

#[test]
fn a_missing_writable_directory_is_accepted_when_its_parent_exists() {
    let config = check(
        "[apps.a]\npath = \"app\"\nentry = \"app:application\"\n[apps.a.sandbox]\nwritable = [\"data\", \"app/static\"]\n",
        None,
    )
    .unwrap();
    let w = &config.apps[0].sandbox.writable;
    assert!(w[0].is_absolute() && w[0].ends_with("data") && !w[0].exists());
    assert!(w[1].ends_with("app/static"));
}

#[test]
fn minor_versions_and_the_version_of_a_venv() {
    let check = |v: &str, want: &str| assert_eq!(minor(v), want, "{v}");
    check("3.11.7", "3.11");
    check("3.11", "3.11");
    check("3.12.0rc1", "3.12");
    check("3", "3");
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("lib/python3.13/site-packages");
    std::fs::create_dir_all(&sp).unwrap();
    // Without pyvenv.cfg: the lib directory's name.
    assert_eq!(venv_version(dir.path(), &sp), "3.13");
    std::fs::write(
        dir.path().join("pyvenv.cfg"),
        "home = /x\nversion_info = 3.13.1.final.0\n",
    )
    .unwrap();
    assert_eq!(venv_version(dir.path(), &sp), "3.13.1.final.0");
    assert_eq!(minor(&venv_version(dir.path(), &sp)), "3.13");
}

#[test]
fn entries_name_a_callable_or_a_factory() {
    let check = |entry: &str, want: Option<(&str, &str)>| {
        let got = parse_entry(entry).ok();
        let got = got.as_ref().map(|(m, c)| (m.as_str(), c.as_str()));
        assert_eq!(got, want, "{entry}");
    };
    check("app:application", Some(("app", "application")));
    check("pkg.wsgi:app", Some(("pkg.wsgi", "app")));
    check("app:create_app()", Some(("app", "create_app()")));
    check("app:create_app(1)", None);
    check("app:()", None);
    check("app:create_app()()", None);
    check("app", None);
    check(":app", None);
}

#[test]
fn type_errors_say_the_kind_of_value_in_words() {
    let (_dir, file) = fixture();
    let check = |text: &str, key: &str, want: &str| {
        let msg = parse(&file, text).expect_err(text).to_string();
        assert!(msg.contains(key) && msg.ends_with(want), "{text}: {msg:?}");
        for rust in [
            "usize",
            "u32",
            "f64",
            "bool",
            "sequence",
            "struct",
            "invalid type",
        ] {
            assert!(!msg.contains(rust), "{text}: {msg:?} names {rust:?}");
        }
    };
    let app =
        |line: &str| format!("[apps.a]\npath = \"app\"\nentry = \"app:application\"\n{line}\n");
    check(
        &app("workers = \"two\""),
        "apps.a.workers",
        "expected a whole number, found text \"two\"",
    );
    check(
        &app("workers = -1"),
        "apps.a.workers",
        "expected a whole number, found the number -1",
    );
    check(
        &app("workers = 1.5"),
        "apps.a.workers",
        "expected a whole number, found the number 1.5",
    );
    check(
        &app("queue_timeout_s = \"x\""),
        "apps.a.queue_timeout_s",
        "expected a number, found text \"x\"",
    );
    check(
        &app("hosts = \"a.test\""),
        "apps.a.hosts",
        "expected a list, found text \"a.test\"",
    );
    check(
        &app("warmup = 5"),
        "apps.a.warmup",
        "expected text, found the number 5",
    );
    check(
        &app("scale = 3"),
        "apps.a.scale",
        "expected a table, found the number 3",
    );
    check(
        "[server]\naccess_log = \"no\"\n",
        "server.access_log",
        "expected true or false, found text \"no\"",
    );
    check(
        "[server]\nthreads = true\n",
        "server.threads",
        "expected a whole number, found true",
    );
}

#[test]
fn access_log_is_on_unless_turned_off() {
    let config = check(GOOD, None).unwrap();
    assert!(config.server.access_log);
    let off = GOOD.replace("[server]\n", "[server]\naccess_log = false\n");
    assert!(!check(&off, None).unwrap().server.access_log);
}

/// The warnings of the config made of one app `a` with the extra `lines`.
fn body_warnings(lines: &str) -> Vec<String> {
    let text = format!("[apps.a]\npath = \"app\"\nentry = \"app:application\"\n{lines}");
    check(&text, None).unwrap().warnings
}

#[test]
fn the_default_body_fits_in_the_default_tmp() {
    let config = check(GOOD, None).unwrap();
    let app = &config.apps[0];
    let mib = 1024 * 1024;
    assert_eq!(app.max_body_bytes, DEFAULT_MAX_BODY_MB * mib);
    assert_eq!(app.limits.tmp_bytes, DEFAULT_TMP_MB * mib);
    // Twice over: the default two workers may each spool one.
    assert!(2 * app.max_body_bytes <= app.limits.tmp_bytes);
    assert!(app.max_body_bytes <= app.limits.fsize_bytes);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn a_body_the_tmp_cannot_hold_is_a_warning_naming_both_keys() {
    // (extra lines, the keys the warning must name; none: no warning)
    let cases: [(&str, &[&str]); 7] = [
        ("", &[]),
        ("max_body_mb = 16\n", &[]),
        (
            "max_body_mb = 20\n",
            &["apps.a.max_body_mb", "20 MiB", "limits.tmp_mb 16 MiB"],
        ),
        (
            "max_body_mb = 100\n[apps.a.limits]\ntmp_mb = 128\nmemory_mb = 512\n",
            &[],
        ),
        (
            "[apps.a.limits]\ntmp_mb = 4\n",
            &["apps.a.max_body_mb", "8 MiB", "limits.tmp_mb 4 MiB"],
        ),
        (
            "max_body_mb = 100\n[apps.a.limits]\ntmp_mb = 128\nfsize_mb = 50\n",
            &["apps.a.max_body_mb", "limits.fsize_mb 50 MiB"],
        ),
        // Unconfined, the app's /tmp is the host's: nothing to compare with.
        (
            "max_body_mb = 1024\n[apps.a.sandbox]\nenabled = false\n",
            &[],
        ),
    ];
    for (lines, want) in cases {
        let warnings = body_warnings(lines);
        if want.is_empty() {
            assert!(warnings.is_empty(), "{lines:?}: {warnings:?}");
            continue;
        }
        assert_eq!(warnings.len(), 1, "{lines:?}: {warnings:?}");
        let w = &warnings[0];
        assert!(w.contains("warren.toml: "), "{w}");
        for part in want {
            assert!(w.contains(part), "{lines:?}: {w:?} lacks {part:?}");
        }
    }
}
