//! The Python guards (`sandbox.python_guards`): a PEP 578 audit hook that turns what the sandbox
//! forbids into a clear Python exception naming the app's policy and, where there is one, the
//! setting that would allow it (`limits.threads`, `sandbox.writable`). A courtesy for the app's
//! author, not the boundary (seccomp, the namespaces and Landlock are). Each kind of refusal is
//! also written once per process to stderr, so that it reaches warren's log against the app
//! even when the app catches the exception.
//!
//! What the kernel refuses by a limit (a full `/tmp`, a file past its size limit, too many open
//! files, a read-only file system) cannot be caught before it happens; instead the exception
//! gets a note (PEP 678) naming the setting, added wherever its traceback is formatted: by the
//! worker for an exception the app did not catch, and through `traceback.TracebackException`
//! for one that a framework logs (Flask, Django and Bottle all format tracebacks with it).
//!
//! Python 3.11 raises no audit event when a thread starts (`_thread.start_new_thread` is one
//! from 3.12 on), so without `limits.threads` the guards also replace `_thread`'s starters with
//! one that raises the same error: seccomp would otherwise refuse the `clone` with a bare
//! "can't start new thread".
//!
//! The hook is a native one (`PySys_AddAuditHook`), not `sys.addaudithook`: no Python object
//! holds it, so app code cannot find it (through `gc`, say) and rewrite what it checks, and
//! the interpreter cannot remove it. An event other than a connect or a send costs a
//! comparison of its name against the few the guards act on, without calling into Python (a
//! Flask request raises one event, a plain WSGI hello none).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use pyo3::exceptions::{PyPermissionError, PyRuntimeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use warren_sandbox::Policy;

/// What the hook needs to know about the app, set once before it is installed.
struct Guards {
    /// The app's name, for the log lines.
    app: String,
    /// "by warren's sandbox policy for app 'NAME' (sandbox.python_guards)"
    policy: String,
    threads: bool,
    /// `_socket.socket`'s own `family` and `type` descriptors: they read the socket's real
    /// address family and type, where `socket.socket.family` is a Python property a subclass
    /// (or the app) may replace.
    family: Py<PyAny>,
    kind: Py<PyAny>,
    /// The read-only binds (the app, its venv, the Python prefix): one nested in a writable
    /// directory (an app kept under `/tmp` on the host) is read-only all the same.
    read_only: Vec<PathBuf>,
    /// Where the sandbox lets the app write: `/tmp`, its `sandbox.writable` directories, and
    /// `/dev` and `/proc`, whose files the kernel judges one by one.
    writable: Vec<PathBuf>,
}

/// The kinds of refusal already written to stderr by this process (bits of [`Refusal`]).
static NOTED: AtomicU32 = AtomicU32::new(0);

/// What the guards refuse, for the once-per-process log line.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Process = 1,
    Thread = 2,
    Library = 4,
    Connect = 8,
    Listen = 16,
    Write = 32,
}

/// Writes `message` to stderr (warren logs it against the app) the first time this process
/// refuses something of `kind`.
fn note_once(guards: &Guards, kind: Refusal, message: &str) {
    let bit = kind as u32;
    if NOTED.fetch_or(bit, Relaxed) & bit == 0 {
        eprintln!(
            "warren-worker: app {}: refused ({kind:?}, logged once): {message}",
            guards.app
        );
    }
}

static GUARDS: OnceLock<Guards> = OnceLock::new();

// Not in pyo3-ffi; CPython's C API (not the limited one) since Python 3.8.
unsafe extern "C" {
    fn PySys_AddAuditHook(
        hook: unsafe extern "C" fn(*const c_char, *mut ffi::PyObject, *mut c_void) -> c_int,
        user_data: *mut c_void,
    ) -> c_int;
}

/// Python that adds [`limit_notes`]'s note to an `OSError` whose traceback is formatted.
const NOTES: &CStr = c"
import traceback as _traceback

def install(notes):
    def annotate(exc):
        note = notes.get(getattr(exc, 'errno', None)) if isinstance(exc, OSError) else None
        if note is not None and note not in getattr(exc, '__notes__', ()):
            exc.add_note(note)

    init = _traceback.TracebackException.__init__

    def __init__(self, exc_type, exc_value, *args, **kwargs):
        try:
            annotate(exc_value)
        except Exception:
            pass
        init(self, exc_type, exc_value, *args, **kwargs)

    _traceback.TracebackException.__init__ = __init__
    return annotate
";

/// The note for each errno a limit of `policy` causes.
fn limit_notes(policy: &Policy) -> Vec<(i32, String)> {
    let mb = |b: u64| b.div_ceil(1024 * 1024);
    vec![
        (
            libc::ENOSPC,
            format!(
                "warren: the app's /tmp holds limits.tmp_mb = {} MB (or the file system of a \
                 sandbox.writable directory is full)",
                mb(policy.tmp_bytes)
            ),
        ),
        (
            libc::EFBIG,
            format!(
                "warren: a file may grow to limits.fsize_mb = {} MB",
                mb(policy.fsize_bytes)
            ),
        ),
        (
            libc::EMFILE,
            format!(
                "warren: a worker may hold limits.nofile = {} open files",
                policy.nofile
            ),
        ),
        (
            libc::EROFS,
            "warren: the sandbox writes only to /tmp and the sandbox.writable directories".into(),
        ),
    ]
}

/// The Python function that adds a limit's note to an exception (see the module doc).
static ANNOTATE: OnceLock<Py<PyAny>> = OnceLock::new();

/// Adds a limit's note to `err` when it is an `OSError` a limit caused (before the worker
/// prints an exception the app did not catch). Nothing without the guards.
pub fn annotate(py: Python<'_>, err: &PyErr) {
    if let Some(f) = ANNOTATE.get() {
        let _ = f.bind(py).call1((err.value(py),));
    }
}

/// Installs the guards for the app `policy` confines. Once per process.
pub fn install(py: Python<'_>, policy: &Policy) -> PyResult<()> {
    let socket = py
        .import("_socket")?
        .getattr("socket")?
        .getattr("__dict__")?;
    let app = &policy.app;
    let guards = Guards {
        app: app.clone(),
        policy: format!("by warren's sandbox policy for app '{app}' (sandbox.python_guards)"),
        threads: policy.threads,
        family: socket.get_item("family")?.unbind(),
        kind: socket.get_item("type")?.unbind(),
        read_only: policy.read_only.clone(),
        writable: ["/tmp", "/dev", "/proc"]
            .into_iter()
            .map(PathBuf::from)
            .chain(policy.writable.iter().cloned())
            .collect(),
    };
    if GUARDS.set(guards).is_err() {
        return Err(PyRuntimeError::new_err(
            "the Python guards are already installed",
        ));
    }
    // SAFETY: `hook` has the signature CPython calls; it is called with the thread attached.
    if unsafe { PySys_AddAuditHook(hook, std::ptr::null_mut()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    if !policy.threads {
        replace_thread_starters(py)?;
    }
    let notes = PyDict::new(py);
    for (errno, note) in limit_notes(policy) {
        notes.set_item(errno, note)?;
    }
    let module = pyo3::types::PyModule::from_code(py, NOTES, c"<warren-notes>", c"_warren_notes")?;
    let annotate = module.getattr("install")?.call1((notes,))?;
    let _ = ANNOTATE.set(annotate.unbind());
    Ok(())
}

/// Puts [`refuse_thread`] in place of `_thread`'s thread starters (and `threading`'s copies,
/// if it was imported already), for the Pythons that raise no audit event for them.
fn replace_thread_starters(py: Python<'_>) -> PyResult<()> {
    let refuse = wrap_pyfunction!(refuse_thread, py)?;
    let thread = py.import("_thread")?;
    for name in ["start_new_thread", "start_new", "start_joinable_thread"] {
        if thread.hasattr(name)? {
            thread.setattr(name, &refuse)?;
        }
    }
    let modules = py.import("sys")?.getattr("modules")?;
    if let Ok(threading) = modules.get_item("threading") {
        for name in ["_start_new_thread", "_start_joinable_thread"] {
            if threading.hasattr(name)? {
                threading.setattr(name, &refuse)?;
            }
        }
    }
    Ok(())
}

fn thread_error(guards: &Guards) -> PyErr {
    let message = format!(
        "threads are disabled {}; set limits.threads = true to allow them",
        guards.policy
    );
    note_once(guards, Refusal::Thread, &message);
    PyRuntimeError::new_err(message)
}

/// `_thread.start_new_thread` of an app without `limits.threads`.
#[pyfunction]
#[pyo3(signature = (*_args, **_kwargs))]
fn refuse_thread(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
    match GUARDS.get() {
        Some(guards) => Err(thread_error(guards)),
        None => Err(PyRuntimeError::new_err("can't start new thread")),
    }
}

/// What the guards refuse, by event name: `Some(what is refused)`.
fn process_event(event: &[u8]) -> Option<&'static str> {
    Some(match event {
        b"subprocess.Popen" => "subprocess",
        b"os.system" => "os.system",
        b"os.exec" => "os.exec*",
        b"os.posix_spawn" => "os.posix_spawn",
        b"os.spawn" => "os.spawn*",
        b"os.fork" => "os.fork",
        b"os.forkpty" => "os.forkpty",
        b"pty.spawn" => "pty.spawn",
        _ => return None,
    })
}

/// The audit hook: 0 lets the operation go on, -1 (with an exception set) refuses it.
unsafe extern "C" fn hook(event: *const c_char, args: *mut ffi::PyObject, _: *mut c_void) -> c_int {
    let Some(guards) = GUARDS.get() else {
        return 0;
    };
    // SAFETY: CPython passes the event's NUL-terminated name and a tuple of its arguments, and
    // calls audit hooks with the calling thread attached.
    let (event, py) = unsafe { (CStr::from_ptr(event).to_bytes(), Python::assume_attached()) };
    // A panic must not unwind into CPython: it refuses the operation instead.
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check(py, guards, event, args)
    }));
    let err = match checked {
        Ok(None) => return 0,
        Ok(Some(err)) => err,
        Err(_) => PyRuntimeError::new_err(format!(
            "warren's Python guards failed on audit event {}",
            String::from_utf8_lossy(event)
        )),
    };
    err.restore(py);
    -1
}

/// A `PermissionError` carrying `message`, also written to stderr once for its kind.
fn permission(guards: &Guards, kind: Refusal, message: String) -> PyErr {
    note_once(guards, kind, &message);
    PyPermissionError::new_err(message)
}

/// The exception for `event`, if the guards refuse it.
fn check(py: Python<'_>, guards: &Guards, event: &[u8], args: *mut ffi::PyObject) -> Option<PyErr> {
    let policy = &guards.policy;
    if let Some(what) = process_event(event) {
        return Some(permission(
            guards,
            Refusal::Process,
            format!("{what} is disabled {policy}: a worker runs one process and no other program"),
        ));
    }
    if event == b"_thread.start_new_thread" {
        return (!guards.threads).then(|| thread_error(guards));
    }
    if !matches!(
        event,
        b"ctypes.dlopen" | b"socket.connect" | b"socket.sendto" | b"socket.bind" | b"open"
    ) || args.is_null()
    {
        return None;
    }
    // SAFETY: `args` is the event's argument tuple, borrowed for the duration of the call.
    let args = unsafe { Bound::from_borrowed_ptr(py, args) };
    let args = args.cast::<PyTuple>().ok()?;
    let arg = |i: usize| args.get_item(i).ok();
    let repr = |o: Bound<'_, PyAny>| o.repr().map_or_else(|_| "?".into(), |r| r.to_string());
    if event == b"ctypes.dlopen" {
        let name = arg(0).filter(|n| !n.is_none())?;
        return Some(permission(
            guards,
            Refusal::Library,
            format!(
                "loading native library {} through ctypes is disabled {policy}",
                repr(name)
            ),
        ));
    }
    if event == b"open" {
        // (path, mode, flags): a mode string from `open()`, None and flags from `os.open()`.
        let path = arg(0)?;
        let mode = arg(1)?;
        let writes = match mode.extract::<String>() {
            Ok(m) => m.contains(['w', 'a', 'x', '+']),
            Err(_) => arg(2)?.extract::<i32>().ok()? & WRITE_FLAGS != 0,
        };
        if !writes {
            return None;
        }
        let path: PathBuf = py
            .import("os")
            .ok()?
            .call_method1("fsdecode", (path,))
            .ok()?
            .extract::<String>()
            .ok()?
            .into();
        let target = resolve(&path)?;
        if writable(&guards.writable, &guards.read_only, &target) {
            return None;
        }
        return Some(permission(
            guards,
            Refusal::Write,
            format!(
                "writing {} is refused {policy}: the app's files are read-only; list a \
                 directory in sandbox.writable to write there, or write under /tmp \
                 (limits.tmp_mb)",
                path.display()
            ),
        ));
    }
    // socket.connect, socket.sendto, socket.bind: (socket, address, ...); AF_INET and
    // AF_INET6 only (and for bind, TCP only: what Landlock refuses).
    let sock = arg(0)?;
    let get = |descriptor: &Py<PyAny>| {
        descriptor
            .bind(py)
            .call_method1("__get__", (&sock,))
            .ok()?
            .extract::<i64>()
            .ok()
    };
    let family = get(&guards.family)?;
    let address = arg(1)?;
    if family != i64::from(libc::AF_INET) && family != i64::from(libc::AF_INET6) {
        return None;
    }
    if event == b"socket.bind" {
        return (get(&guards.kind)? == i64::from(libc::SOCK_STREAM)).then(|| {
            permission(
                guards,
                Refusal::Listen,
                format!(
                    "listening on {} is disabled {policy}: a worker's requests come from warren",
                    repr(address)
                ),
            )
        });
    }
    Some(permission(
        guards,
        Refusal::Connect,
        format!(
            "outbound network connections ({}) are disabled {policy}",
            repr(address)
        ),
    ))
}

/// Whether `target` is writable in the sandbox: its innermost mount among the writable and
/// the read-only binds is a writable one.
fn writable(writable: &[PathBuf], read_only: &[PathBuf], target: &Path) -> bool {
    let depth = |dirs: &[PathBuf]| {
        dirs.iter()
            .filter(|d| target.starts_with(d))
            .map(|d| d.components().count())
            .max()
    };
    match (depth(writable), depth(read_only)) {
        (Some(w), Some(r)) => w > r,
        (w, _) => w.is_some(),
    }
}

/// `os.open` flags that write.
const WRITE_FLAGS: i32 =
    libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND;

/// Where a write to `path` lands: absolute, `.` and `..` taken out, and its directory's
/// symbolic links followed (the file itself may not exist yet). `None` when the directory does
/// not exist: the open fails by itself then.
fn resolve(path: &Path) -> Option<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let mut clean = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    let name = clean.file_name()?.to_owned();
    let dir = std::fs::canonicalize(clean.parent()?).ok()?;
    Some(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_bind_decides_whether_a_path_is_writable() {
        let w: Vec<PathBuf> = ["/tmp", "/dev", "/srv/data"].map(PathBuf::from).to_vec();
        let r: Vec<PathBuf> = ["/tmp/ci/app", "/usr", "/srv"].map(PathBuf::from).to_vec();
        let check = |path: &str, want: bool| {
            assert_eq!(writable(&w, &r, Path::new(path)), want, "{path}");
        };
        check("/tmp/x", true);
        check("/tmp/ci/app/written", false);
        check("/tmp/ci/other", true);
        check("/srv/data/db.sqlite", true);
        check("/srv/app.py", false);
        check("/usr/lib/x", false);
        check("/etc/passwd", false);
        check("/dev/null", true);
    }
}
