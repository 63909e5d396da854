//! The process that runs Python for warren, linked into the `warren` binary: run under the
//! name `warren-worker` (the master sets that as its `argv[0]`), `warren` is this and nothing
//! else ([`main`]). One binary, so that `cargo run` and `cargo install` give everything.
//!
//! `warren-worker zygote --name NAME --dir DIR --module MOD --callable NAME [--site-packages DIR]
//! [--sandbox POLICY]` confines itself (when given a policy), imports one app and then forks a
//! worker per `Fork` message on its control socket (fd 3). The master starts it; it is not
//! meant to be run by hand.

mod conn;
mod guards;
mod python;
mod wsgi;
mod zygote;

use warren_protocol::control::EXIT_USAGE;

fn usage(msg: &str) -> ! {
    eprintln!("warren-worker: {msg}");
    eprintln!(
        "usage: warren-worker zygote --name NAME --dir DIR --module MOD --callable NAME [--site-packages DIR] [--warmup PATH] [--sandbox POLICY]"
    );
    std::process::exit(EXIT_USAGE);
}

/// The version of the Python this worker embeds (`3.11.7`): an app's virtualenv must be made
/// with the same minor version, whose compiled packages it can load.
pub const PYTHON_VERSION: &str = env!("WARREN_PYTHON_VERSION");
/// The interpreter it was built against, to make such a virtualenv with.
pub const PYTHON_EXE: &str = env!("WARREN_PYTHON_EXE");

/// The name (`argv[0]`) under which the `warren` binary runs as the worker.
pub const ARGV0: &str = warren_sandbox::WORKER_ARGV0;

/// Runs the zygote from the process's arguments; never returns.
pub fn main() -> ! {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("zygote") {
        usage("expected the `zygote` command");
    }
    let (mut name, mut dir, mut module, mut callable, mut site_packages) =
        (None, None, None, None, None);
    let mut sandbox = None;
    let mut warmup = None;
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--name" => name = Some(value),
            "--dir" => dir = Some(value),
            "--module" => module = Some(value),
            "--callable" => callable = Some(value),
            "--site-packages" => site_packages = Some(value),
            "--warmup" => warmup = Some(value),
            warren_sandbox::SANDBOX_FLAG => {
                sandbox = Some(warren_sandbox::Policy::decode(&value).unwrap_or_else(|e| usage(&e)))
            }
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    let need = |v: Option<String>, f: &str| v.unwrap_or_else(|| usage(&format!("{f} is required")));
    zygote::run(python::AppSpec {
        name: need(name, "--name"),
        dir: need(dir, "--dir"),
        module: need(module, "--module"),
        callable: need(callable, "--callable"),
        site_packages,
        sandbox,
        warmup,
    })
}
