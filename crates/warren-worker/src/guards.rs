//! The Python guards (`sandbox.python_guards`): a PEP 578 audit hook that turns what the sandbox
//! forbids into a clear Python exception naming the app's policy. A courtesy for the app's
//! author, not the boundary (seccomp, the namespaces and Landlock are).
//!
//! The hook is a native one (`PySys_AddAuditHook`), not `sys.addaudithook`: no Python object
//! holds it, so app code cannot find it (through `gc`, say) and rewrite what it checks, and
//! the interpreter cannot remove it. An event other than a connect or a send costs a
//! comparison of its name against the few the guards act on, without calling into Python (a
//! Flask request raises one event, a plain WSGI hello none).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use pyo3::exceptions::{PyPermissionError, PyRuntimeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// What the hook needs to know about the app, set once before it is installed.
struct Guards {
    /// "by warren's sandbox policy for app 'NAME' (sandbox.python_guards)"
    policy: String,
    threads: bool,
    /// `_socket.socket`'s own `family` descriptor: it reads the socket's real address family,
    /// where `socket.socket.family` is a Python property a subclass (or the app) may replace.
    family: Py<PyAny>,
}

static GUARDS: OnceLock<Guards> = OnceLock::new();

// Not in pyo3-ffi; CPython's C API (not the limited one) since Python 3.8.
unsafe extern "C" {
    fn PySys_AddAuditHook(
        hook: unsafe extern "C" fn(*const c_char, *mut ffi::PyObject, *mut c_void) -> c_int,
        user_data: *mut c_void,
    ) -> c_int;
}

/// Installs the guards for `app`; `threads` is the app's `limits.threads`. Once per process.
pub fn install(py: Python<'_>, app: &str, threads: bool) -> PyResult<()> {
    let family = py
        .import("_socket")?
        .getattr("socket")?
        .getattr("__dict__")?
        .get_item("family")?
        .unbind();
    let guards = Guards {
        policy: format!("by warren's sandbox policy for app '{app}' (sandbox.python_guards)"),
        threads,
        family,
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
    Ok(())
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

/// The exception for `event`, if the guards refuse it.
fn check(py: Python<'_>, guards: &Guards, event: &[u8], args: *mut ffi::PyObject) -> Option<PyErr> {
    let policy = &guards.policy;
    if let Some(what) = process_event(event) {
        return Some(PyPermissionError::new_err(format!(
            "{what} is disabled {policy}: a worker runs one process and no other program"
        )));
    }
    if event == b"_thread.start_new_thread" {
        return (!guards.threads).then(|| {
            PyRuntimeError::new_err(format!(
                "threads are disabled {policy}; set limits.threads = true to allow them"
            ))
        });
    }
    if !matches!(
        event,
        b"ctypes.dlopen" | b"socket.connect" | b"socket.sendto"
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
        return Some(PyPermissionError::new_err(format!(
            "loading native library {} through ctypes is disabled {policy}",
            repr(name)
        )));
    }
    // socket.connect and socket.sendto: (socket, address, ...); AF_INET and AF_INET6 only.
    let sock = arg(0)?;
    let family = guards
        .family
        .bind(py)
        .call_method1("__get__", (&sock,))
        .ok()?;
    let family = family.extract::<i64>().ok()?;
    let address = arg(1)?;
    (family == i64::from(libc::AF_INET) || family == i64::from(libc::AF_INET6)).then(|| {
        PyPermissionError::new_err(format!(
            "outbound network connections ({}) are disabled {policy}",
            repr(address)
        ))
    })
}
