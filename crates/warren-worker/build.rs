//! Links the worker against the interpreter pyo3 chose and records where that interpreter lives.
//!
//! Without the rpath the binary would find the system's `libpython3.11.so` first; without the
//! home, CPython derives its prefix from `PATH` at run time. Either way the worker would
//! silently run a different Python from the one the app's virtualenv was built with.

use std::process::Command;

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    let exe = config
        .executable()
        .expect("pyo3 found no Python interpreter; set PYO3_PYTHON")
        .to_owned();
    let out = Command::new(&exe)
        .args([
            "-c",
            "import sys; print(sys.base_prefix); print('%d.%d.%d' % sys.version_info[:3])",
        ])
        .output()
        .expect("running the build's Python interpreter");
    assert!(out.status.success(), "{exe} failed to report its prefix");
    let text = String::from_utf8(out.stdout).expect("prefix is UTF-8");
    let mut lines = text.lines();
    let home = lines.next().expect("the prefix");
    let version = lines.next().expect("the version");
    println!("cargo:rustc-env=WARREN_PYTHON_HOME={}", home.trim());
    println!("cargo:rustc-env=WARREN_PYTHON_VERSION={}", version.trim());
    println!("cargo:rustc-env=WARREN_PYTHON_EXE={exe}");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
