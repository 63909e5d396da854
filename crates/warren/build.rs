//! The `warren` binary embeds the worker (`warren-worker`, CPython through pyo3): it is linked
//! with the rpath of the interpreter pyo3 chose, so that it loads that `libpython` and not the
//! system's (see `crates/warren-worker/build.rs`, which records the interpreter's home).

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
