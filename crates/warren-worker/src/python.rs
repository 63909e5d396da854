//! Starting the embedded interpreter and loading the app.
//!
//! The interpreter is configured through `PyConfig` with `home` set to the prefix of the Python
//! the worker was built against (recorded by `build.rs`): CPython otherwise derives its prefix
//! from `PATH` and may pick a different installation than the `libpython` we linked. `site` is
//! not imported automatically: an app with a virtualenv gets only that venv's site-packages
//! (as `python -m venv` would give it), an app without one gets the base site-packages.

use std::ffi::CString;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

/// Where the build's Python lives (`sys.base_prefix`).
pub const PYTHON_HOME: &str = env!("WARREN_PYTHON_HOME");

/// What the zygote imports: the app and where to find it.
pub struct AppSpec {
    pub name: String,
    pub dir: String,
    pub module: String,
    pub callable: String,
    pub site_packages: Option<String>,
    /// How the zygote confines itself; `None`: unconfined.
    pub sandbox: Option<warren_sandbox::Policy>,
    /// A path the zygote requests once after the import (`GET`), so that what the app sets up
    /// lazily on its first request is done once and shared by every worker.
    pub warmup: Option<String>,
}

fn check(status: ffi::PyStatus, what: &str) -> Result<(), String> {
    // SAFETY: PyStatus_Exception only inspects the struct passed by value.
    if unsafe { ffi::PyStatus_Exception(status) } != 0 {
        let msg = if status.err_msg.is_null() {
            "unknown error".to_owned()
        } else {
            // SAFETY: a non-null err_msg is a static NUL-terminated string owned by CPython.
            unsafe { std::ffi::CStr::from_ptr(status.err_msg) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(format!("{what}: {msg}"));
    }
    Ok(())
}

/// Initialises CPython for a worker and releases the GIL, so that [`Python::attach`] works.
pub fn initialize(program: &str) -> Result<(), String> {
    let home = CString::new(PYTHON_HOME).map_err(|e| e.to_string())?;
    let program = CString::new(program).map_err(|e| e.to_string())?;
    // SAFETY: PyConfig is a plain C struct that PyConfig_InitPythonConfig fully initialises
    // before any field is read; the strings passed in outlive the calls that copy them; the
    // config is cleared after use. This runs once, before any other Python API call.
    unsafe {
        let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::zeroed();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        // Keep default signal dispositions: the master stops workers with signals.
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        config.site_import = 0;
        config.user_site_directory = 0;
        // Never write __pycache__ into an app's directory.
        config.write_bytecode = 0;
        // Log lines of the app reach the master's log as they are written.
        config.buffered_stdio = 0;
        let r = ffi::PyConfig_SetBytesString(&mut config, &mut config.home, home.as_ptr());
        let r = check(r, "setting the Python home").and_then(|()| {
            check(
                ffi::PyConfig_SetBytesString(
                    &mut config,
                    &mut config.program_name,
                    program.as_ptr(),
                ),
                "setting the program name",
            )
        });
        let r =
            r.and_then(|()| check(ffi::Py_InitializeFromConfig(&config), "initialising Python"));
        ffi::PyConfig_Clear(&mut config);
        r?;
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

/// The warm-up request: one `GET` through the app, inside the zygote, response discarded.
const WARMUP: &str = r#"
def _warren_warmup(app, target):
    import io, sys
    from wsgiref.util import setup_testing_defaults
    path, _, query = target.partition("?")
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr, "HTTP_X_WARREN_WARMUP": "1",
    }
    setup_testing_defaults(environ)
    status = []
    def start_response(s, headers, exc_info=None):
        status[:] = [s]
        return lambda data: None
    body = app(environ, start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return status[0] if status else "no status"
"#;

/// Requests `target` once through `app` (see [`AppSpec::warmup`]); the status line it got.
pub fn warm_up(py: Python<'_>, app: &Bound<'_, PyAny>, target: &str) -> PyResult<String> {
    let code = CString::new(WARMUP).expect("no NUL in the warm-up source");
    let module = PyModule::from_code(py, &code, c"<warren-warmup>", c"_warren_warmup")?;
    module
        .getattr("_warren_warmup")?
        .call1((app, target))?
        .extract()
}

/// Puts the app directory and the venv on `sys.path`, imports the app and returns its callable.
pub fn load_app<'py>(py: Python<'py>, spec: &AppSpec) -> PyResult<Bound<'py, PyAny>> {
    let site = py.import("site")?;
    match &spec.site_packages {
        Some(sp) => {
            site.call_method1("addsitedir", (sp,))?;
        }
        None => {
            site.call_method0("main")?;
        }
    }
    let sys = py.import("sys")?;
    let path = sys.getattr("path")?.cast_into::<PyList>()?;
    path.insert(0, &spec.dir)?;
    sys.setattr("argv", vec![spec.name.clone()])?;
    let module = py.import(spec.module.as_str())?;
    // `module:create_app()`: an app factory (Flask's tutorial, Nginx Unit's `factory`), called
    // once here in the zygote; every worker forked after shares what it built.
    let (name, factory) = match spec.callable.strip_suffix("()") {
        Some(name) => (name, true),
        None => (spec.callable.as_str(), false),
    };
    let mut app = module.getattr(name)?;
    if factory {
        if !app.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "{}:{name} is not callable (it is a {}), so it cannot be called as a factory",
                spec.module,
                app.get_type().name()?
            )));
        }
        app = app.call0()?;
    }
    if !app.is_callable() {
        let what = if factory { "returned" } else { "is" };
        return Err(PyTypeError::new_err(format!(
            "{}:{} {what} a {}, not a WSGI callable",
            spec.module,
            spec.callable,
            app.get_type().name()?
        )));
    }
    Ok(app)
}

/// Turns wire bytes (latin-1, as WSGI wants native strings) into a Python `str`.
pub fn latin1<'py>(py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyString>> {
    if b.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        return Ok(PyString::new(py, unsafe {
            std::str::from_utf8_unchecked(b)
        }));
    }
    // SAFETY: the pointer and length describe `b`, which outlives the call; the result is a
    // new reference (or NULL with an exception set), which from_owned_ptr_or_err takes over.
    unsafe {
        let obj = ffi::PyUnicode_DecodeLatin1(
            b.as_ptr().cast(),
            b.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Ok(Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked())
    }
}

/// Encodes a Python native string as latin-1 bytes, refusing characters past U+00FF.
pub fn to_latin1(s: &str, what: &str) -> PyResult<Vec<u8>> {
    if s.is_ascii() {
        return Ok(s.as_bytes().to_vec());
    }
    s.chars()
        .map(|c| u8::try_from(u32::from(c)))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "{what} {s:?} is not latin-1 (WSGI native strings carry only U+0000..U+00FF)"
            ))
        })
}
