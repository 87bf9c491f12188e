"""The system calls a sandboxed task may not make: a seccomp filter that bwrap installs before
the task starts (`--seccomp FD`), kept by everything it starts.

Simulators read and write files, compute and talk to the server over TCP; none needs the kernel
keyrings, BPF, performance counters, userfaultfd, io_uring, modules, kexec, the kernel log,
process accounting or quotas, nor sockets of families other than Unix, IPv4, IPv6 and netlink
(glibc's address lookups use it); each other family may load a kernel module on first use.
Those are the parts of the kernel a program that took over a simulator would turn to, so they
answer EPERM (ENOSYS for io_uring, which its library then does without; EAFNOSUPPORT for a
socket family). Built with libseccomp (the `pyseccomp` binding); without libseccomp on the host
there is no filter, which the start says (probe.py).
"""

import contextlib
import errno
import os
import socket
import tempfile
from collections.abc import Iterator

DENIED = {
    **dict.fromkeys(("keyctl", "add_key", "request_key"), errno.EPERM),
    **dict.fromkeys(("bpf", "perf_event_open", "userfaultfd"), errno.EPERM),
    **dict.fromkeys(("io_uring_setup", "io_uring_enter", "io_uring_register"), errno.ENOSYS),
    **dict.fromkeys(("kexec_load", "kexec_file_load"), errno.EPERM),
    **dict.fromkeys(("init_module", "finit_module", "delete_module"), errno.EPERM),
    **dict.fromkeys(("syslog", "acct", "quotactl"), errno.EPERM),
}
FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)
INT = 0xFFFFFFFF  # socket()'s family is an int: the kernel reads the lower 32 bits of its register


def program() -> bytes:
    """The filter as the BPF program bwrap reads; OSError (or ImportError, RuntimeError: no
    libseccomp here) when it cannot be made."""
    import pyseccomp as seccomp

    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for name, code in DENIED.items():
        rules.add_rule(seccomp.ERRNO(code), name)
    refused = seccomp.ERRNO(errno.EAFNOSUPPORT)
    top = max(FAMILIES)
    for family in sorted(set(range(top)) - set(FAMILIES)):
        rules.add_rule(refused, "socket", seccomp.Arg(0, seccomp.MASKED_EQ, INT, family))
    rules.add_rule(refused, "socket", seccomp.Arg(0, seccomp.GT, top))
    with tempfile.TemporaryFile() as file:
        rules.export_bpf(file)
        file.seek(0)
        return file.read()


@contextlib.contextmanager
def descriptor(bpf: bytes | None) -> Iterator[int | None]:
    """A file descriptor to read `bpf` from, at its start, for one process to inherit (bwrap
    reads it to its end: each start gets its own); None for None."""
    if bpf is None:
        yield None
        return
    fd = os.memfd_create("seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, bpf)
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        os.close(fd)
