"""The escape suite's hostile app: every route tries one way out of the sandbox.

Plain WSGI, standard library and ctypes only, x86_64 Linux. Each route runs one attack and
answers 200 text/plain with `key=value` lines (one value per line, never a newline inside):

    outcome=contained|ESCAPED
    errno=<int, or empty>
    error=<ExceptionType: message, or empty>
    detail=<free text>

then, for some routes, extra keys the end-to-end test (crates/warren/tests/escape.rs) checks,
such as `stage=`, `written=` or `count=`.

outcome=ESCAPED means the attack worked: the process was created, the file was read, the
connection was made, the clock could be set. Anything else is `contained`, including an
exception nobody expected (it is reported in `error=`), so that the test, not this app, decides
whether the errno is the one the layer meant to stop the attack gives. Two routes, /memory_hog
and /i386_int80, are expected never to answer: the kernel kills the worker (OOM killer,
SIGSYS) and warren answers 502.

Attacks are written to be harmless if they wrongly succeed: every child created exits at once,
every descriptor is closed, files written are removed, the clock is set to the time it already
is, process_vm_writev targets address 0. Those that would still hurt a host if the worker were
not confined at all (kill(-1), mount, sethostname, the clock, ptrace of pid 1, filling memory or
/tmp) first check that the worker does not run as root of the host's user namespace
(`/proc/self/uid_map`) and otherwise refuse, reporting outcome=ESCAPED with
`error=SafetyInterlock: ...`: the sandbox visibly is not there.

Routes (the errno expected under the sandbox in brackets):

  processes   /fork_bomb [1]  /thread_bomb [RuntimeError, started=0]  /subprocess_run [1|2]
              /posixsubprocess [1]  /os_system  /raw_syscall [fork 1, execve 1]
              /clone3 [38]  /memfd_exec [1 at memfd_create]
  syscalls    /i386_int80 [SIGSYS: 502]  /io_uring [38]  /unshare [1]  /setns [1]  /mount [1]
              /pivot_root [1]  /chroot [1]  /ptrace [1]  /process_vm_writev [1]  /tiocsti [1]
              /bpf [1]  /perf_event_open [1]  /keyctl [1]  /userfaultfd [1]
  files       /load_so_from_tmp [OSError]  /read_shadow [2|13]  /read_other_app?path=P [2|13]
              /read_proc1_root  /write_code [30|13]  /write_site_packages [30|13]
  resources   /memory_hog [OOM: 502]  /memory_hold?mib=N&seconds=S  /cpu_spin?seconds=S  /fill_tmp [28|27]  /many_fds [24]
  network     /connect_host?port=N [111|101|13|1]  /abstract_unix?name=N [111|13|1]
              /tcp_in_sandbox [13: Landlock alone]
              /raw_socket [1]  /netlink_socket [1]
  identity    /kill_all [1]  /sethostname [1]  /settimeofday [1]  /fds  /self_check
  guards      /audit_tamper  /guards?port=N   (for an app with the Python guards on)
  health      /ok
"""

import errno as E
import fcntl
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import traceback
import urllib.parse

# The Python guards may refuse ctypes altogether (importing it loads a library); the app must
# still import so that the routes can report that.
try:
    import ctypes
except Exception as _exc:  # noqa: BLE001 - whatever the guard raised is the answer
    ctypes = None
    CTYPES_ERROR = _exc
else:
    CTYPES_ERROR = None

MiB = 1 << 20

# x86_64 system call numbers.
SYS_GETPID = 39
SYS_FORK = 57
SYS_EXECVE = 59
SYS_PTRACE = 101
SYS_PIVOT_ROOT = 155
SYS_KEYCTL = 250
SYS_PERF_EVENT_OPEN = 298
SYS_PROCESS_VM_WRITEV = 311
SYS_BPF = 321
SYS_EXECVEAT = 322
SYS_USERFAULTFD = 323
SYS_IO_URING_SETUP = 425
SYS_CLONE3 = 435

# Other kernel constants.
CLONE_NEWUSER = 0x10000000
PTRACE_ATTACH = 16
PTRACE_DETACH = 17
KEYCTL_GET_KEYRING_ID = 0
KEY_SPEC_SESSION_KEYRING = -3
BPF_MAP_CREATE = 0
AT_EMPTY_PATH = 0x1000
MNT_DETACH = 2
WALL = 0x40000000  # __WALL: wait for any child, whatever its exit signal
AF_NETLINK = 16
TIOCSTI = getattr(termios, "TIOCSTI", 0x5412)
# i386 code: mov eax, 20 (getpid in the i386 table); int 0x80; ret
I386_GETPID = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------------------------
# Reports


class Report(dict):
    """The lines of an answer, in order: outcome, errno, error, detail, then the extra keys."""


def describe(exc):
    return f"{type(exc).__name__}: {exc}"


def errno_of(exc):
    value = getattr(exc, "errno", None)
    return value if isinstance(value, int) else None


def report(outcome, detail="", exc=None, errno=None, error=None, **extra):
    if exc is not None:
        errno = errno_of(exc) if errno is None else errno
        error = describe(exc) if error is None else error
    r = Report(outcome=outcome, errno="" if errno is None else errno, error=error or "",
               detail=detail)
    r.update(extra)
    return r


def contained(detail="", exc=None, **kw):
    return report("contained", detail, exc, **kw)


def escaped(detail="", exc=None, **kw):
    return report("ESCAPED", detail, exc, **kw)


def render(r):
    lines = []
    for key, value in r.items():
        text = "" if value is None else str(value)
        text = text.replace("\r", " ").replace("\n", " | ")
        lines.append(f"{key}={text}")
    return ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------------------------
# Helpers


def need_ctypes():
    if ctypes is None:
        raise CTYPES_ERROR


_LIBS = {}


def libc(keep_gil=False):
    """The C library (the process' global symbols), errno kept by ctypes.

    keep_gil: a PyDLL handle, which does not release the GIL around the call: used for the
    calls that create a process, so that a child never has to take the GIL back.
    """
    need_ctypes()
    if keep_gil not in _LIBS:
        cls = ctypes.PyDLL if keep_gil else ctypes.CDLL
        _LIBS[keep_gil] = cls(None, use_errno=True)
    return _LIBS[keep_gil]


def _carg(a):
    # Integers go as full 64-bit registers (a negative int as c_int would not be sign-extended).
    return ctypes.c_long(a) if isinstance(a, int) else a


def call(name, *args, keep_gil=False):
    """Calls libc function `name`; returns its result or raises OSError(errno) on -1."""
    fn = getattr(libc(keep_gil), name)
    fn.restype = ctypes.c_long
    ctypes.set_errno(0)
    result = fn(*map(_carg, args))
    err = ctypes.get_errno()
    if result == -1:
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return result


def syscall(nr, *args, keep_gil=False):
    """A raw system call through libc's syscall(); raises OSError(errno) on -1."""
    return call("syscall", nr, *args, keep_gil=keep_gil)


def child_exits_now(pid):
    """After a fork-like call: in the child (pid 0) exit at once, in the parent reap it."""
    if pid == 0:
        os._exit(0)
    try:
        os.waitpid(pid, WALL)
    except OSError:
        pass


def close_quietly(fd):
    try:
        os.close(fd)
    except OSError:
        pass


def remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def host_uid_problem():
    """Why this process may be the host's root (None if it visibly is not).

    The destructive attacks run only when the worker's effective uid maps to a non-zero uid of
    the parent user namespace: then even an attack that wrongly succeeds cannot touch the host
    (no kill(-1) of root's processes, no mount/clock/hostname in the host's namespaces).
    """
    try:
        with open("/proc/self/uid_map") as f:
            lines = [l.split() for l in f.read().splitlines() if l.strip()]
    except OSError as exc:
        return f"cannot read /proc/self/uid_map ({describe(exc)})"
    euid = os.geteuid()
    for fields in lines:
        try:
            inside, outside, count = (int(x) for x in fields)
        except ValueError:
            continue
        if inside <= euid < inside + count:
            host_uid = outside + (euid - inside)
            if host_uid == 0:
                return f"euid {euid} is uid 0 of the parent user namespace (uid_map {lines})"
            if (inside, outside, count) == (0, 0, 4294967295):
                return "the worker is in the host's user namespace"
            return None
    return f"euid {euid} not found in uid_map {lines}"


def refused_unconfined():
    problem = host_uid_problem()
    if problem is None:
        return None
    return escaped(
        "refused to run this attack: the worker is visibly not confined, and the attack would "
        "harm the host if it succeeded",
        error=f"SafetyInterlock: {problem}",
    )


def guarded_by_interlock(fn):
    def wrapper(q):
        refusal = refused_unconfined()
        return refusal if refusal is not None else fn(q)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def fork_exec_sh():
    """_posixsubprocess.fork_exec of `/bin/sh -c true`, bypassing subprocess (and its audit event).

    Returns (ran, forked, errno, error). `forked`: the kernel created a child (the exec may still
    have failed in it, reported through the error pipe as subprocess does).
    """
    import _posixsubprocess

    errpipe_read, errpipe_write = os.pipe()
    try:
        args = [b"/bin/sh", b"-c", b"true"]
        # 3.11: args, executable_list, close_fds, pass_fds, cwd, env, p2cread, p2cwrite,
        # c2pread, c2pwrite, errread, errwrite, errpipe_read, errpipe_write, restore_signals,
        # call_setsid, pgid_to_set, gid, extra_groups, uid, child_umask, preexec_fn[, allow_vfork]
        common = (args, (b"/bin/sh",), True, (errpipe_write,), None, None,
                  -1, -1, -1, -1, -1, -1, errpipe_read, errpipe_write,
                  True, False, -1, None, None, None, -1, None)
        try:
            pid = _posixsubprocess.fork_exec(*common, True)
        except TypeError as exc:
            if "argument" not in str(exc):
                raise
            pid = _posixsubprocess.fork_exec(*common)
    except OSError as exc:
        close_quietly(errpipe_read)
        close_quietly(errpipe_write)
        return False, False, errno_of(exc), describe(exc)
    close_quietly(errpipe_write)
    data = b""
    try:
        while True:
            part = os.read(errpipe_read, 50000)
            if not part:
                break
            data += part
    finally:
        close_quietly(errpipe_read)
    child_exits_now(pid)
    if not data:
        return True, True, None, ""
    # "ExceptionName:hex_errno:message", as subprocess reads it.
    parts = data.split(b":", 2)
    err = None
    if len(parts) == 3:
        try:
            err = int(parts[1], 16)
        except ValueError:
            pass
    return False, True, err, f"in the child: {data.decode(errors='replace')}"


def refused_by_guard(exc):
    return isinstance(exc, (PermissionError, RuntimeError)) and "sandbox" in str(exc)


# ---------------------------------------------------------------------------------------------
# Processes


def attack_fork_bomb(q):
    """os.fork() in a loop; every child exits at once and is reaped."""
    created = 0
    try:
        for _ in range(256):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            created += 1
            os.waitpid(pid, 0)
    except OSError as exc:
        if created == 0:
            return contained("the first fork failed", exc, forks=0)
        return escaped(f"{created} forks succeeded before one failed", exc, forks=created)
    return escaped(f"all {created} forks succeeded", forks=created)


def attack_thread_bomb(q):
    """Starts up to 1000 threads that sleep 2 s. ESCAPED only if all 1000 start; the test wants 0."""
    threads = []
    failure = None
    try:
        for _ in range(1000):
            t = threading.Thread(target=time.sleep, args=(2,), daemon=True)
            t.start()
            threads.append(t)
    except Exception as exc:  # noqa: BLE001 - RuntimeError("can't start new thread") expected
        failure = exc
    for t in threads:
        t.join()
    started = len(threads)
    if failure is None:
        return escaped(f"all {started} threads started", started=started)
    return contained(f"{started} thread(s) started before the failure", failure, started=started)


def attack_subprocess_run(q):
    """subprocess.run(["/bin/true"]): ESCAPED only if it ran."""
    try:
        done = subprocess.run(["/bin/true"])
    except OSError as exc:
        return contained("subprocess.run raised", exc)
    return escaped(f"/bin/true ran, return code {done.returncode}")


def attack_posixsubprocess(q):
    """_posixsubprocess.fork_exec directly, for /bin/sh -c true."""
    ran, forked, err, error = fork_exec_sh()
    if ran:
        return escaped("/bin/sh -c true ran", forked=1)
    what = "the child was created but its exec failed" if forked else "no child was created"
    return contained(what, errno=err, error=error, forked=int(forked))


def attack_os_system(q):
    """os.system("echo pwned > /tmp/pwned"): contained if it returns non-zero and no file exists."""
    target = "/tmp/pwned"
    remove_quietly(target)
    status = os.system(f"echo pwned > {target}")
    exists = os.path.exists(target)
    remove_quietly(target)
    detail = f"os.system returned {status}; {target} {'was' if exists else 'was not'} written"
    if status == 0 or exists:
        return escaped(detail, status=status)
    return contained(detail, status=status)


def attack_raw_syscall(q):
    """SYS_fork, then SYS_execve of /bin/sh, through libc's syscall()."""
    try:
        pid = syscall(SYS_FORK, keep_gil=True)
    except OSError as exc:
        fork_exc = exc
    else:
        child_exits_now(pid)
        return escaped(f"raw fork created pid {pid}")
    need_ctypes()
    argv = (ctypes.c_char_p * 4)(b"/bin/sh", b"-c", b"true", None)
    envp = (ctypes.c_char_p * 1)(None)
    # If execve worked, this worker would become `sh -c true` and exit: the test sees a 502.
    try:
        syscall(SYS_EXECVE, b"/bin/sh", argv, envp)
    except OSError as exc:
        exec_exc = exc
    else:
        return escaped("execve returned success")
    return contained(
        f"fork: {describe(fork_exc)}; execve: {describe(exec_exc)}",
        fork_exc,
        fork_errno=errno_of(fork_exc),
        execve_errno=errno_of(exec_exc),
    )


def attack_clone3(q):
    """clone3 with zeroed clone_args (a plain fork); the child exits at once."""
    need_ctypes()
    args = ctypes.create_string_buffer(88)
    try:
        pid = syscall(SYS_CLONE3, args, 88, keep_gil=True)
    except OSError as exc:
        return contained("clone3 failed", exc)
    child_exits_now(pid)
    return escaped(f"clone3 created pid {pid}")


def attack_memfd_exec(q):
    """memfd_create, then execveat(AT_EMPTY_PATH) of a script written into it."""
    try:
        fd = os.memfd_create("x")
    except OSError as exc:
        return contained("memfd_create failed", exc, stage="memfd_create")
    try:
        need_ctypes()
        os.write(fd, b"#!/bin/sh\nexit 0\n")
        argv = (ctypes.c_char_p * 2)(b"x", None)
        envp = (ctypes.c_char_p * 1)(None)
        # If this worked, the worker would be replaced by the script: the test sees a 502.
        syscall(SYS_EXECVEAT, fd, b"", argv, envp, AT_EMPTY_PATH)
    except OSError as exc:
        return contained("memfd_create worked (it should not), execveat failed", exc,
                         stage="execveat")
    finally:
        close_quietly(fd)
    return escaped("execveat returned success", stage="execveat")


# ---------------------------------------------------------------------------------------------
# System calls the filter must refuse


def attack_i386_int80(q):
    """i386 getpid through int 0x80 from an executable page: the filter's arch check must kill."""
    need_ctypes()
    stage = "mmap rwx"
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(I386_GETPID)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    except OSError:
        # W^X: write it, then make it executable.
        stage = "mmap rw + mprotect rx"
        try:
            page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                             prot=mmap.PROT_READ | mmap.PROT_WRITE)
            page.write(I386_GETPID)
            addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
            call("mprotect", addr, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC)
        except OSError as exc:
            return contained("could not get an executable page: the code never ran", exc,
                             stage=stage)
    fn = ctypes.CFUNCTYPE(ctypes.c_int)(addr)
    result = fn()
    return escaped(f"int 0x80 (i386 getpid) returned {result} (own pid {os.getpid()})",
                   stage=stage)


def attack_io_uring(q):
    """io_uring_setup(8, zeroed params)."""
    need_ctypes()
    params = ctypes.create_string_buffer(120)
    fd = syscall(SYS_IO_URING_SETUP, 8, params)
    close_quietly(fd)
    return escaped(f"io_uring_setup gave fd {fd}")


def attack_unshare(q):
    """unshare(CLONE_NEWUSER)."""
    call("unshare", CLONE_NEWUSER)
    return escaped("unshare(CLONE_NEWUSER) succeeded")


def attack_setns(q):
    """setns() into our own network namespace, through /proc/self/ns/net."""
    try:
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    except OSError as exc:
        return contained("opening /proc/self/ns/net failed", exc, stage="open")
    try:
        call("setns", fd, 0)
    except OSError as exc:
        return contained("setns failed", exc, stage="setns")
    finally:
        close_quietly(fd)
    return escaped("setns succeeded", stage="setns")


@guarded_by_interlock
def attack_mount(q):
    """mount("none", "/tmp", "tmpfs")."""
    call("mount", b"none", b"/tmp", b"tmpfs", 0, None)
    try:
        call("umount2", b"/tmp", MNT_DETACH)
    except OSError:
        pass
    return escaped("mounted a tmpfs on /tmp (unmounted again)")


@guarded_by_interlock
def attack_pivot_root(q):
    """pivot_root("/tmp", "/tmp")."""
    syscall(SYS_PIVOT_ROOT, b"/tmp", b"/tmp")
    return escaped("pivot_root succeeded")


@guarded_by_interlock
def attack_chroot(q):
    """chroot("/tmp")."""
    call("chroot", b"/tmp")
    return escaped("chroot succeeded")


@guarded_by_interlock
def attack_ptrace(q):
    """PTRACE_ATTACH to pid 1 (detached again at once if it works)."""
    syscall(SYS_PTRACE, PTRACE_ATTACH, 1, 0, 0)
    try:
        os.waitpid(1, WALL)
    except OSError:
        pass
    try:
        syscall(SYS_PTRACE, PTRACE_DETACH, 1, 0, 0)
    except OSError:
        pass
    return escaped("attached to pid 1")


def attack_process_vm_writev(q):
    """process_vm_writev to pid 1, 8 bytes at remote address 0 (so that nothing can be written).

    EFAULT means the kernel got past its permission checks to pid 1's memory: ESCAPED.
    """
    need_ctypes()

    class IoVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    data = ctypes.create_string_buffer(8)
    local = IoVec(ctypes.addressof(data), 8)
    remote = IoVec(None, 8)
    try:
        n = syscall(SYS_PROCESS_VM_WRITEV, 1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    except OSError as exc:
        if exc.errno == E.EFAULT:
            return escaped("the permission checks passed (EFAULT at address 0)", exc)
        return contained("process_vm_writev failed", exc)
    return escaped(f"process_vm_writev wrote {n} bytes to pid 1")


def attack_tiocsti(q):
    """TIOCSTI on fd 0: the filter must say EPERM (ENOTTY would mean it let the ioctl through)."""
    fcntl.ioctl(0, TIOCSTI, b"x")
    return escaped("TIOCSTI succeeded on fd 0")


def attack_bpf(q):
    """bpf(BPF_MAP_CREATE, zeroed attr, 128)."""
    need_ctypes()
    attr = ctypes.create_string_buffer(128)
    fd = syscall(SYS_BPF, BPF_MAP_CREATE, attr, 128)
    close_quietly(fd)
    return escaped(f"bpf gave fd {fd}")


def attack_perf_event_open(q):
    """perf_event_open(attr{size=128}, pid 0, cpu -1, group -1, 0)."""
    need_ctypes()
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<I", attr, 4, 128)  # perf_event_attr.size
    fd = syscall(SYS_PERF_EVENT_OPEN, attr, 0, -1, -1, 0)
    close_quietly(fd)
    return escaped(f"perf_event_open gave fd {fd}")


def attack_keyctl(q):
    """keyctl(KEYCTL_GET_KEYRING_ID, session keyring, create)."""
    key = syscall(SYS_KEYCTL, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1)
    return escaped(f"keyctl gave keyring {key}")


def attack_userfaultfd(q):
    """userfaultfd(0)."""
    fd = syscall(SYS_USERFAULTFD, 0)
    close_quietly(fd)
    return escaped(f"userfaultfd gave fd {fd}")


# ---------------------------------------------------------------------------------------------
# Files


def extension_module_file():
    """A real shared library inside the sandbox: a CPython extension module's file."""
    import _ctypes

    path = getattr(_ctypes, "__file__", None)
    if path and os.path.isfile(path):
        return path
    for name in ("_struct", "_json", "math", "select", "array", "_posixsubprocess"):
        try:
            mod = __import__(name)
        except ImportError:
            continue
        path = getattr(mod, "__file__", None)
        if path and os.path.isfile(path):
            return path
    raise FileNotFoundError(E.ENOENT, "no extension module file found to copy")


def attack_load_so_from_tmp(q):
    """Copies an extension module to /tmp/evil.so (?dir=D: D/evil.so) and dlopens it (tmp and
    writable directories must be noexec)."""
    need_ctypes()
    src = extension_module_file()
    dst = os.path.join(q.get("dir", "/tmp"), "evil.so")
    try:
        with open(src, "rb") as f:
            data = f.read()
        with open(dst, "wb") as f:
            f.write(data)
        os.chmod(dst, 0o755)
    except OSError as exc:
        remove_quietly(dst)
        return contained(f"could not copy {src} to {dst}", exc, stage="copy")
    try:
        ctypes.CDLL(dst)
    except OSError as exc:
        return contained(f"dlopen of a copy of {src} failed", exc, stage="dlopen")
    finally:
        remove_quietly(dst)
    return escaped(f"loaded {dst} (a copy of {src})", stage="dlopen")


def attack_read_shadow(q):
    """Reads /etc/shadow (only its length is reported)."""
    with open("/etc/shadow", "rb") as f:
        data = f.read()
    return escaped(f"read {len(data)} bytes of /etc/shadow")


def attack_read_other_app(q):
    """Lists ?path=P (relative paths start at this app's directory) and reads P/app.py."""
    path = q.get("path")
    if not path:
        raise ValueError("missing ?path=")
    path = os.path.normpath(os.path.join(HERE, path))
    try:
        names = os.listdir(path)
    except OSError as exc:
        list_exc = exc
    else:
        return escaped(f"listed {path}: {sorted(names)[:20]}")
    target = os.path.join(path, q.get("file", "app.py"))
    try:
        with open(target, "rb") as f:
            data = f.read()
    except OSError as exc:
        return contained(f"listdir {path}: {describe(list_exc)}; open {target}: {describe(exc)}",
                         list_exc, open_errno=errno_of(exc))
    return escaped(f"read {len(data)} bytes of {target}")


def attack_read_proc1_root(q):
    """Walks /proc/1/root: lists it, reads /proc/1/root/etc/shadow."""
    try:
        seen = ",".join(sorted(os.listdir("/proc/1/root/"))[:40])
    except OSError as exc:
        seen = f"listdir failed ({describe(exc)})"
    try:
        with open("/proc/1/root/etc/shadow", "rb") as f:
            data = f.read()
    except OSError as exc:
        return contained(f"/proc/1/root: {seen}", exc)
    return escaped(f"read {len(data)} bytes of /proc/1/root/etc/shadow; /proc/1/root: {seen}")


def try_create_in(directory):
    """Creates (and removes) a file in `directory`; returns the OSError, or None if it worked."""
    name = os.path.join(directory, f"escape-{os.getpid()}-{time.monotonic_ns()}.txt")
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        return exc
    close_quietly(fd)
    remove_quietly(name)
    return None


def attack_write_code(q):
    """Opens this very file for appending (writes 0 bytes if that works); creates a file next to it."""
    try:
        fd = os.open(__file__, os.O_WRONLY | os.O_APPEND)
    except OSError as exc:
        code_exc = exc
    else:
        os.write(fd, b"")
        close_quietly(fd)
        return escaped(f"opened {__file__} for writing")
    create_exc = try_create_in(HERE)
    if create_exc is None:
        return escaped(f"created a file in {HERE}")
    return contained(f"append: {describe(code_exc)}; create: {describe(create_exc)}", code_exc,
                     create_errno=errno_of(create_exc))


def attack_write_site_packages(q):
    """Creates a file in flask's package directory (the venv)."""
    import flask

    directory = os.path.dirname(os.path.abspath(flask.__file__))
    exc = try_create_in(directory)
    if exc is None:
        return escaped(f"created a file in {directory}")
    return contained(f"create in {directory} failed", exc)


# ---------------------------------------------------------------------------------------------
# Resources


@guarded_by_interlock
def attack_memory_hog(q):
    """Keeps 1 MiB bytearrays, every page written, up to 2 GiB: the OOM killer should end it."""
    chunks = []
    try:
        for _ in range(2048):
            chunks.append(bytearray(b"\xa5") * MiB)
    except MemoryError as exc:
        n = len(chunks)
        chunks.clear()
        return contained(f"MemoryError after {n} MiB (not the cgroup OOM killer)", exc, mib=n)
    n = len(chunks)
    chunks.clear()
    return escaped(f"allocated and touched {n} MiB", mib=n)


def attack_memory_hold(q):
    """Holds ?mib=N MiB, every page written, for ?seconds=S (at most 60); always contained."""
    mib = min(int(q.get("mib", "1")), 1024)
    seconds = min(float(q.get("seconds", "1")), 60.0)
    held = bytearray(b"\xa5") * (mib * MiB)
    time.sleep(seconds)
    n = len(held) // MiB
    del held
    return contained(f"held {n} MiB for {seconds:.1f} s", mib=n)


def attack_cpu_spin(q):
    """Busy-loops ?seconds=S (default 2, at most 30) of wall time; always contained."""
    seconds = min(float(q.get("seconds", "2")), 30.0)
    start = time.monotonic()
    cpu_start = time.process_time()
    n = 0
    while time.monotonic() - start < seconds:
        n += 1
    wall = time.monotonic() - start
    cpu = time.process_time() - cpu_start
    return contained(f"{n} iterations in {wall:.2f} s of wall time, {cpu:.2f} s of CPU",
                     iterations=n, wall_s=f"{wall:.3f}", cpu_s=f"{cpu:.3f}")


@guarded_by_interlock
def attack_fill_tmp(q):
    """Writes 1 MiB chunks to /tmp/fill until a write fails (at most 512 MiB), then removes it."""
    try:
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an RLIMIT_FSIZE gives EFBIG
    except (ValueError, OSError, AttributeError):
        previous = None
    path = "/tmp/fill"
    chunk = b"\xa5" * MiB
    written = 0
    failure = None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while written < 512 * MiB:
            view = memoryview(chunk)
            while view:
                n = os.write(fd, view)
                written += n
                view = view[n:]
    except OSError as exc:
        failure = exc
    finally:
        close_quietly(fd)
        remove_quietly(path)
        if previous is not None:
            try:
                signal.signal(signal.SIGXFSZ, previous)
            except (ValueError, OSError):
                pass
    detail = f"wrote {written} bytes ({written / MiB:.2f} MiB)"
    if failure is None:
        return escaped(detail, written=written)
    return contained(detail, failure, written=written)


def attack_many_fds(q):
    """Opens /dev/null (or dups stderr if /dev/null is missing) until it fails, max 100000."""
    fds = []
    failure = None
    source = "/dev/null"
    try:
        try:
            while len(fds) < 100000:
                fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as exc:
            failure = exc
        if not fds and failure is not None and failure.errno != E.EMFILE:
            source, failure = "dup(2)", None
            try:
                while len(fds) < 100000:
                    fds.append(os.dup(2))
            except OSError as exc:
                failure = exc
    finally:
        count = len(fds)
        for fd in fds:
            close_quietly(fd)
    detail = f"opened {count} descriptors ({source}) before the failure"
    if failure is None:
        return escaped(f"opened {count} descriptors ({source})", count=count)
    return contained(detail, failure, count=count)


# ---------------------------------------------------------------------------------------------
# Network


def attack_connect_host(q):
    """TCP connect to 127.0.0.1:?port=N (loopback only, never another address), 2 s timeout."""
    port = int(q.get("port", ""))
    try:
        conn = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError as exc:
        return contained(f"connect to 127.0.0.1:{port} failed", exc)
    conn.close()
    return escaped(f"connected to 127.0.0.1:{port}")


def attack_tcp_in_sandbox(q):
    """Binds a TCP listener on the sandbox's own loopback and connects to it. The network
    namespace allows this (its loopback is the app's own); only Landlock's TCP rules refuse
    it, with EACCES: the proof that the Landlock layer is on."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        try:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
        except OSError as exc:
            return contained("bind to the sandbox's loopback failed", exc)
        port = server.getsockname()[1]
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError as exc:
            return contained(f"connect to the sandbox's own 127.0.0.1:{port} failed", exc)
        conn.close()
        return escaped(f"bound and connected to 127.0.0.1:{port} inside the sandbox")
    finally:
        server.close()


def attack_abstract_unix(q):
    """Connects to the abstract Unix socket "\\0" + ?name=N."""
    name = q.get("name", "")
    if not name:
        raise ValueError("missing ?name=")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(2)
        s.connect(b"\0" + name.encode())
    except OSError as exc:
        return contained(f"connect to abstract @{name} failed", exc)
    finally:
        s.close()
    return escaped(f"connected to abstract @{name}")


def attack_raw_socket(q):
    """socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.close()
    return escaped("created a raw ICMP socket")


def attack_netlink_socket(q):
    """socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)."""
    s = socket.socket(AF_NETLINK, socket.SOCK_RAW, 0)
    s.close()
    return escaped("created a netlink socket")


# ---------------------------------------------------------------------------------------------
# Signals and identity


@guarded_by_interlock
def attack_kill_all(q):
    """kill(-1, SIGKILL): every process this worker may signal."""
    os.kill(-1, signal.SIGKILL)
    return escaped("kill(-1, SIGKILL) succeeded")


@guarded_by_interlock
def attack_sethostname(q):
    """sethostname("evil")."""
    socket.sethostname("evil")
    return escaped("sethostname succeeded")


@guarded_by_interlock
def attack_settimeofday(q):
    """clock_settime(CLOCK_REALTIME, now): harmless if it wrongly succeeds."""
    time.clock_settime(time.CLOCK_REALTIME, time.time())
    return escaped("clock_settime(CLOCK_REALTIME) succeeded")


def attack_fds(q):
    """The descriptors this worker holds: only 0-2, its two pipes to the master (requests in,
    responses out), and the listing's."""
    names = os.listdir("/proc/self/fd")
    entries, pipes, sockets, gone, others = [], [], [], [], []
    for name in sorted(names, key=int):
        fd = int(name)
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            target = None
        entries.append(f"{fd}->{target if target is not None else '(closed: the listing)'}")
        if fd <= 2:
            continue
        if target is None:
            gone.append(fd)
        elif target.startswith("pipe:"):
            pipes.append(fd)
        elif target.startswith("socket:"):
            sockets.append(fd)
        else:
            others.append(fd)
    detail = ";".join(entries)
    if len(pipes) == 2 and not sockets and not others and len(gone) <= 1:
        return contained(detail, pipes=len(pipes), sockets=len(sockets))
    return escaped(detail, pipes=len(pipes), sockets=len(sockets))


def attack_seccomp_layer(q):
    """Syscalls that only seccomp answers with EPERM (see seccomp_probe.py): each must."""
    import seccomp_probe

    results = seccomp_probe.run()
    detail = seccomp_probe.render(results)
    not_eperm = [name for name, err in results.items() if err != E.EPERM]
    if not_eperm:
        return escaped(f"not refused by seccomp: {' '.join(not_eperm)}", results=detail)
    return contained("every call refused before its arguments were read", errno=E.EPERM,
                     results=detail)


def attack_self_check(q):
    """Seccomp, NoNewPrivs and capabilities from /proc/self/status."""
    with open("/proc/self/status") as f:
        status = f.read()
    fields = {}
    for line in status.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = " ".join(value.split())
    keys = ("Seccomp", "Seccomp_filters", "NoNewPrivs", "CapEff", "CapPrm", "CapInh", "CapAmb",
            "CapBnd", "Uid", "Gid")
    detail = "; ".join(f"{k}={fields.get(k, '')}" for k in keys)

    def zero(v):
        try:
            return int(v, 16) == 0
        except (TypeError, ValueError):
            return False

    ok = (fields.get("Seccomp") == "2" and fields.get("NoNewPrivs") == "1"
          and zero(fields.get("CapEff")))
    extra = dict(seccomp=fields.get("Seccomp", ""), no_new_privs=fields.get("NoNewPrivs", ""),
                 cap_eff=fields.get("CapEff", ""), cap_prm=fields.get("CapPrm", ""),
                 cap_bnd=fields.get("CapBnd", ""), uid=fields.get("Uid", ""))
    # The rlimits, soft and hard (-1: unlimited).
    import resource
    for name in ("CORE", "FSIZE", "NOFILE"):
        soft, hard = resource.getrlimit(getattr(resource, "RLIMIT_" + name))
        extra[name.lower() + "_soft"] = soft
        extra[name.lower() + "_hard"] = hard
    return contained(detail, **extra) if ok else escaped(detail, **extra)


# ---------------------------------------------------------------------------------------------
# Python guards (for an app whose guards are on)


def raw_fork_through(lib, read_errno):
    """SYS_fork through `lib.syscall`; returns (forked, result, errno)."""
    fn = lib.syscall
    fn.restype = ctypes.c_long
    result = fn(ctypes.c_long(SYS_FORK))
    err = read_errno()
    if result == 0:
        os._exit(0)
    if result > 0:
        child_exits_now(result)
        return True, result, None
    return False, result, err


def disarm_python_audit_hooks():
    """Rewrites every Python-level audit hook this code can reach: a function whose closure
    holds the tables it checks has them emptied and its flags turned off. How many it found.
    What the zygote made before forking sits in the collector's permanent generation
    (`gc.freeze`), which `gc.get_objects` does not list: unfreeze it first."""
    import gc

    gc.unfreeze()
    found = 0
    for obj in gc.get_objects():
        code = getattr(obj, "__code__", None)
        closure = getattr(obj, "__closure__", None)
        if code is None or not closure or code.co_argcount != 2:
            continue
        if code.co_varnames[:2] != ("event", "args"):
            continue
        found += 1
        for cell in closure:
            value = cell.cell_contents
            if isinstance(value, (dict, set, list)):
                value.clear()
            elif isinstance(value, bool):
                cell.cell_contents = not value
    return found


def attack_audit_tamper(q):
    """(a) subprocess.run: the guard; (b) _posixsubprocess.fork_exec: past the hook, the kernel;
    (c) SYS_fork through ctypes: past the hook, the kernel; (d) subprocess.run after rewriting
    every audit hook Python can reach: the guard again, or the kernel."""
    parts = {}

    def run_true():
        """subprocess.run(["true"]) as a part: (outcome, errno, text)."""
        try:
            done = subprocess.run(["true"])
        except Exception as exc:  # noqa: BLE001
            return "contained", errno_of(exc), describe(exc)
        return "ESCAPED", None, f"true ran, return code {done.returncode}"

    # (a) The audit hook refuses subprocess.Popen.
    parts["a"] = run_true()

    # (b) Straight to _posixsubprocess, which raises no audit event.
    try:
        ran, forked, err, error = fork_exec_sh()
    except Exception as exc:  # noqa: BLE001
        parts["b"] = ("contained", errno_of(exc), describe(exc))
        b_forked = 0
    else:
        parts["b"] = ("ESCAPED" if ran else "contained", err, error or "/bin/sh ran")
        b_forked = int(forked)

    # (c) A raw fork through ctypes: CDLL(None), or the handle ctypes made at import if a
    # fresh CDLL is refused.
    via = "CDLL(None)"
    try:
        need_ctypes()
        try:
            lib = ctypes.CDLL(None, use_errno=True)
            read_errno = ctypes.get_errno
        except Exception as exc:  # noqa: BLE001 - the guard refused the dlopen
            via = f"ctypes.pythonapi (CDLL(None) refused: {describe(exc)})"
            lib = ctypes.pythonapi
            loc = lib.__errno_location
            loc.restype = ctypes.POINTER(ctypes.c_int)
            read_errno = lambda: loc().contents.value  # noqa: E731
        forked, result, err = raw_fork_through(lib, read_errno)
        if forked:
            parts["c"] = ("ESCAPED", None, f"raw fork via {via} created pid {result}")
        else:
            parts["c"] = ("contained", err, f"raw fork via {via} returned {result}")
    except Exception as exc:  # noqa: BLE001
        parts["c"] = ("contained", errno_of(exc), f"via {via}: {describe(exc)}")

    # (d) Disarm the hooks from Python, then subprocess.run again.
    found = disarm_python_audit_hooks()
    parts["d"] = run_true()

    extra = {"d_hooks_rewritten": found}
    for key, (outcome, err, text) in parts.items():
        extra[f"{key}_outcome"] = outcome
        extra[f"{key}_errno"] = "" if err is None else err
        extra[f"{key}_error"] = text
    extra["b_forked"] = b_forked
    detail = " || ".join(f"({k}) {o} errno={e} {t}" for k, (o, e, t) in parts.items())
    if all(outcome == "contained" for outcome, _, _ in parts.values()):
        return contained(detail, **extra)
    return escaped(detail, **extra)


def attack_guards(q):
    """subprocess.run, os.system, a named library, a TCP connect, a TCP listener and a write to
    the app's own directory must each be refused by the guards (PermissionError naming the app
    and the sandbox policy), and a thread (RuntimeError naming limits.threads)."""
    port = int(q["port"])

    def named_library():
        need_ctypes()
        ctypes.CDLL("libc.so.6")

    def connect():
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

    def connect_disguised():
        # A socket whose `family` claims AF_UNIX: the guard reads the real one.
        class Disguised(socket.socket):
            family = property(lambda self: socket.AF_UNIX)

        with Disguised(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(("127.0.0.1", port))

    def thread():
        threading.Thread(target=lambda: None).start()

    def listen():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))

    def write_app_dir():
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "written"), "w") as f:
            f.write("x")

    def os_open_app_dir():
        os.close(os.open(os.path.abspath(__file__) + ".new", os.O_WRONLY | os.O_CREAT, 0o600))

    attempts = {
        "subprocess": lambda: subprocess.run(["true"]),
        "os_system": lambda: os.system("true"),
        "cdll": named_library,
        "connect": connect,
        "connect_disguised": connect_disguised,
        "thread": thread,
        "listen": listen,
        "write_app_dir": write_app_dir,
        "os_open_app_dir": os_open_app_dir,
    }
    results = {}
    raised = {}
    for key, fn in attempts.items():
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001
            results[key] = describe(exc)
            raised[key] = refused_by_guard(exc)
        else:
            results[key] = f"did not raise (returned {value!r})"
            raised[key] = None
    detail = " || ".join(f"{k}: {v}" for k, v in results.items())
    if all(v is not None for v in raised.values()):
        return contained(detail, **results)
    return escaped(detail, **results)


# ---------------------------------------------------------------------------------------------
def _thread_at_import():
    """Runs while the zygote imports the app: a thread started here would live in the process
    every worker is forked from."""
    try:
        t = threading.Thread(target=time.sleep, args=(0.01,), daemon=True)
        t.start()
        t.join()
    except Exception as exc:  # noqa: BLE001 - RuntimeError("can't start new thread") expected
        return contained("a thread at import time failed to start", exc)
    return escaped("a thread started in the zygote at import time")


_IMPORT_THREAD = _thread_at_import()


def _fork_at_import():
    """Runs while the zygote imports the app, whose filter allows the zygote's own fork: a
    process made here would escape the "no new processes" rule."""
    try:
        pid = os.fork()
    except Exception as exc:  # noqa: BLE001 - PermissionError (EPERM) expected
        return contained("os.fork at import time failed", exc)
    if pid == 0:
        os._exit(0)
    try:
        os.waitpid(pid, 0)
    except OSError:
        pass
    return escaped("os.fork made a process in the zygote at import time", pid=pid)


_IMPORT_FORK = _fork_at_import()


def attack_thread_at_import(q):
    """What happened to the thread started at import time, in the zygote."""
    return _IMPORT_THREAD


def attack_fork_at_import(q):
    """What happened to the fork tried at import time, in the zygote."""
    return _IMPORT_FORK


# ---------------------------------------------------------------------------------------------
# WSGI


def fill_tmp_until_full():
    """Writes 512 KiB files into /tmp until a write fails; removes them; returns the OSError."""
    paths = []
    chunk = b"\x5a" * (512 * 1024)
    try:
        for i in range(4096):
            path = f"/tmp/full-{i}"
            paths.append(path)
            with open(path, "wb") as f:
                f.write(chunk)
    except OSError as exc:
        return exc
    finally:
        for p in paths:
            remove_quietly(p)
    return None


def attack_limit_notes(q):
    """A file past limits.fsize_mb and a full /tmp: each OSError, formatted as a framework
    formats a logged exception (traceback.format_exception), carries warren's note naming the
    setting (the guarded app runs with fsize_mb = 1)."""
    results = {}
    try:
        with open("/tmp/big", "wb") as f:
            f.write(b"\x5a" * (2 * MiB))
    except OSError as exc:
        results["fsize"] = "".join(traceback.format_exception(exc))
    finally:
        remove_quietly("/tmp/big")
    exc = fill_tmp_until_full()
    if exc is not None:
        results["tmp"] = "".join(traceback.format_exception(exc))
    return contained("limits hit", **results)


ATTACKS = {
    name[len("attack_"):]: fn
    for name, fn in globals().items()
    if name.startswith("attack_") and callable(fn)
}


def reply(start_response, status, body):
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    name = path.strip("/")
    if name == "ok":
        return reply(start_response, "200 OK", b"ok")
    if name == "raise_full_tmp":
        # An OSError the app does not catch: the worker prints it (and answers 500).
        def body():
            raise fill_tmp_until_full() or RuntimeError("/tmp never filled")
            yield b""

        return body()
    attack = ATTACKS.get(name)
    if attack is None:
        body = ("unknown attack; routes: " + " ".join(sorted(ATTACKS)) + " ok\n").encode()
        return reply(start_response, "404 Not Found", body)
    query = {k: v[-1] for k, v in
             urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).items()}
    try:
        result = attack(query)
    except BaseException as exc:  # noqa: BLE001 - every failure is an answer
        result = contained(f"/{name} raised", exc)
    return reply(start_response, "200 OK", render(result))
