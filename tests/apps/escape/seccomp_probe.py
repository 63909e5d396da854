"""Which layer refuses a system call: seccomp, or something else.

Seccomp and a missing capability both answer EPERM, so a refused `mount` alone does not say
which layer stopped it. Each call below is made with arguments that every other check of the
kernel rejects with another errno (a path that does not exist, a pid that does not exist, a bad
descriptor, an unknown command, a NULL pointer), and that the kernel looks at before it checks
any capability. Without a seccomp filter each call therefore fails with that other errno (or
succeeds harmlessly); inside warren's filter, which refuses the syscall before the kernel reads
an argument, each fails with EPERM.

`python3 seccomp_probe.py` prints the same report unconfined: the escape suite runs it outside
the sandbox to show that on this kernel none of these calls answers EPERM by itself.
"""

import ctypes
import os
import sys

# x86_64 syscall numbers.
SYS_IOCTL = 16
SYS_PTRACE = 101
SYS_EXECVE = 59
SYS_CHROOT = 161
SYS_MOUNT = 165
SYS_UMOUNT2 = 166
SYS_KEYCTL = 250
SYS_PERF_EVENT_OPEN = 298
SYS_SETNS = 308
SYS_PROCESS_VM_READV = 310
SYS_PROCESS_VM_WRITEV = 311
SYS_BPF = 321
SYS_EXECVEAT = 322
SYS_USERFAULTFD = 323
SYS_MEMFD_CREATE = 319
SYS_UNSHARE = 272

PTRACE_ATTACH = 16
TIOCSTI = 0x5412
AT_EMPTY_PATH = 0x1000
UFFD_USER_MODE_ONLY = 1
MISSING = b"/nonexistent-warren-probe"
NO_PID = 0x3FFFFFF0  # above pid_max's ceiling (4194304): no process has it

# name -> (syscall number, arguments, what answers without seccomp)
CALLS = {
    "mount": (SYS_MOUNT, (b"none", MISSING, b"tmpfs", 0, None), "ENOENT: the target is looked up first"),
    "umount2": (SYS_UMOUNT2, (MISSING, 0), "ENOENT: the path is looked up first"),
    "chroot": (SYS_CHROOT, (MISSING,), "ENOENT: the path is looked up first"),
    "ptrace": (SYS_PTRACE, (PTRACE_ATTACH, NO_PID, 0, 0), "ESRCH: no such process"),
    "process_vm_readv": (SYS_PROCESS_VM_READV, (NO_PID, None, 0, None, 0, 1), "EINVAL: flags"),
    "process_vm_writev": (SYS_PROCESS_VM_WRITEV, (NO_PID, None, 0, None, 0, 1), "EINVAL: flags"),
    "setns": (SYS_SETNS, (-1, 0), "EBADF: no such descriptor"),
    "unshare": (SYS_UNSHARE, (0x1,), "EINVAL: not a namespace flag"),
    "keyctl": (SYS_KEYCTL, (0x7FFF,), "EOPNOTSUPP: no such operation"),
    "perf_event_open": (SYS_PERF_EVENT_OPEN, (None, 0, -1, -1, 0), "EFAULT: the attributes are read first"),
    "bpf": (SYS_BPF, (0x7FFF, None, 0), "EINVAL: no such command"),
    "userfaultfd": (SYS_USERFAULTFD, (UFFD_USER_MODE_ONLY | 0x4000,), "EINVAL: flags"),
    "memfd_create": (SYS_MEMFD_CREATE, (None, 0), "EFAULT: the name is read first"),
    "execve": (SYS_EXECVE, (MISSING, None, None), "ENOENT: no such file"),
    "execveat": (SYS_EXECVEAT, (-1, b"", None, None, AT_EMPTY_PATH), "EBADF: no such descriptor"),
    "ioctl_tiocsti": (SYS_IOCTL, (-1, TIOCSTI, None), "EBADF: no such descriptor"),
}


def _arg(a):
    if a is None:
        return ctypes.c_void_p(None)
    if isinstance(a, bytes):
        return ctypes.c_char_p(a)
    return ctypes.c_long(a)


def run():
    """{name: errno} for every call (0 when it succeeded)."""
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    results = {}
    for name, (nr, args, _) in CALLS.items():
        ctypes.set_errno(0)
        ret = syscall(ctypes.c_long(nr), *map(_arg, args))
        results[name] = ctypes.get_errno() if ret == -1 else 0
    return results


def render(results):
    return " ".join(f"{name}:{err}" for name, err in results.items())


if __name__ == "__main__":
    print(render(run()))
    sys.stdout.flush()
    os._exit(0)
