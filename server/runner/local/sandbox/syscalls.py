"""The system calls a sandboxed task may not make: a seccomp filter that bwrap installs before
the task starts (`--seccomp FD`), kept by everything it starts.

Simulators read and write files, compute and talk to the server over TCP; none needs the kernel
keyrings, BPF, performance counters, userfaultfd, io_uring, modules, kexec, the kernel log,
process accounting or quotas, nor sockets of families other than Unix, IPv4, IPv6 and netlink
(glibc's address lookups use it), nor IPv4 and IPv6 protocols other than TCP, UDP and ICMP: the
kernel may load a module for another family or protocol on first use. Those are the parts of the
kernel a program that took over a simulator would turn to, so they answer EPERM (ENOSYS for
io_uring, which its library then does without; EAFNOSUPPORT for a socket family,
EPROTONOSUPPORT for a protocol). A 32-bit program is killed at its first system call (SIGSYS):
the filter is for this machine's own system calls. Built with libseccomp (the `pyseccomp`
binding); without libseccomp on the host there is no filter, which the start says (probe.py).
"""

import contextlib
import errno
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

DENIED = {
    **dict.fromkeys(("keyctl", "add_key", "request_key"), errno.EPERM),
    **dict.fromkeys(("bpf", "perf_event_open", "userfaultfd"), errno.EPERM),
    **dict.fromkeys(("io_uring_setup", "io_uring_enter", "io_uring_register"), errno.ENOSYS),
    **dict.fromkeys(("kexec_load", "kexec_file_load"), errno.EPERM),
    **dict.fromkeys(("init_module", "finit_module", "delete_module"), errno.EPERM),
    **dict.fromkeys(("syslog", "acct", "quotactl", "quotactl_fd"), errno.EPERM),
}
FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)
# Of IPv4 and IPv6: the default (0), ICMP (ping sockets), TCP, UDP, ICMPv6.
PROTOCOLS = (0, socket.IPPROTO_ICMP, socket.IPPROTO_TCP, socket.IPPROTO_UDP, socket.IPPROTO_ICMPV6)
# A family or protocol is an int: the kernel reads the lower 32 bits of its register.
INT = 0xFFFFFFFF


def program() -> bytes:
    """The filter as the BPF program bwrap reads; OSError (or ImportError, RuntimeError: no
    libseccomp here) when it cannot be made. A call this libseccomp does not know stays
    allowed, and is logged."""
    import pyseccomp as seccomp

    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    rules.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    arch, unknown = seccomp.system_arch(), []
    for name, code in DENIED.items():
        if seccomp.resolve_syscall(arch, name) < 0:
            unknown.append(name)
        else:
            rules.add_rule(seccomp.ERRNO(code), name)
    if unknown:
        log.warning("libseccomp here does not know %s: tasks may make them", ", ".join(unknown))
    for call in ("socket", "socketpair"):  # both make a socket of the family of their argument 0
        _refuse_others(seccomp, rules, errno.EAFNOSUPPORT, call, 0, FAMILIES)
    for family in (socket.AF_INET, socket.AF_INET6):
        inet = seccomp.Arg(0, seccomp.MASKED_EQ, INT, family)
        _refuse_others(seccomp, rules, errno.EPROTONOSUPPORT, "socket", 2, PROTOCOLS, inet)
    with tempfile.TemporaryFile() as file:
        rules.export_bpf(file)
        file.seek(0)
        return file.read()


def _refuse_others(
    seccomp: Any, rules: Any, code: int, call: str, arg: int, allowed: tuple[int, ...], *also: Any
) -> None:
    """Rules for `call` to answer `code` when its argument `arg` is none of `allowed` (and the
    comparisons `also` hold): one per value below the largest allowed, one for those above."""
    for value in sorted(set(range(max(allowed))) - set(allowed)):
        rules.add_rule(
            seccomp.ERRNO(code), call, *also, seccomp.Arg(arg, seccomp.MASKED_EQ, INT, value)
        )
    rules.add_rule(seccomp.ERRNO(code), call, *also, seccomp.Arg(arg, seccomp.GT, max(allowed)))


@contextlib.contextmanager
def descriptor(bpf: bytes | None) -> Iterator[tuple[int, ...]]:
    """A file descriptor to read `bpf` from, at its start, for one process to inherit (bwrap
    reads it to its end: each start gets its own), as the descriptors to pass; none for None."""
    if bpf is None:
        yield ()
        return
    fd = os.memfd_create("seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, bpf)
        os.lseek(fd, 0, os.SEEK_SET)
        yield (fd,)
    finally:
        os.close(fd)
