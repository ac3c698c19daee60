"""A small seccomp deny-list for bwrap cells, assembled as classic BPF.

Theory of operation. bwrap installs the program passed with ``--seccomp FD``
right before it execs the cell (after its own setup, so bwrap is never
filtered). The program:

1. kills the process if the syscall comes from a foreign ABI (for x86_64:
   ``AUDIT_ARCH_X86_64`` only, so the i386 table cannot be used to dodge the
   numbers below), and refuses x32 syscalls (``nr >= 0x40000000``) with EPERM;
2. lets ``socket`` and ``socketpair`` create only the address families a
   cell needs (an allow-list, :func:`allowed_families`): ``AF_UNIX`` always
   (membranes, umbilical, vesicles), ``AF_NETLINK`` with protocol
   ``NETLINK_ROUTE`` always (glibc's ``if_nameindex`` and ``getaddrinfo``
   read the interface list through it; without ``CAP_NET_ADMIN`` it can
   change nothing), and ``AF_INET``/``AF_INET6`` only for a cell with
   network (``allow_net``, or grants: the in-sandbox forwarder listens on
   loopback). Any other family -- ``AF_VSOCK``, ``AF_PACKET``, ``AF_ALG``,
   ``AF_BLUETOOTH``, other netlink protocols... -- answers
   ``EAFNOSUPPORT``;
3. answers EPERM to every syscall in :data:`DENIED` -- kernel keyrings,
   tracing and cross-process memory access, eBPF, perf, userfaultfd,
   io_uring (whose ``IORING_OP_SOCKET`` would dodge step 2), module and
   kexec loading, mounts and namespace changes, swap, reboot, quota, raw
   I/O ports, handle-based opens -- the interfaces a Python service never
   needs and that carry most kernel-escape history -- and System V IPC
   (``shm*``, ``sem*``, ``msg*``): the cell's own IPC namespace has the
   kernel's default, practically unlimited, ``shmall``, and no rlimit
   counts a detached segment (an audit held 2 GiB under a 256 MiB limit);
4. allows everything else.

It is a deny-list, not an allow-list: it narrows the kernel attack surface,
it does not define it. Only x86_64 has a table (verified against
``asm/unistd_64.h`` by the tests); on other architectures no filter is
installed and ``cellmesh sandbox check`` says so.
"""

from __future__ import annotations

import errno
import os
import platform
import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

_AUDIT_ARCH_X86_64: Final = 0xC000003E
_X32_SYSCALL_BIT: Final = 0x40000000

_BPF_LD_W_ABS: Final = 0x20
_BPF_JEQ_K: Final = 0x15
_BPF_JGE_K: Final = 0x35
_BPF_RET_K: Final = 0x06
_RET_KILL_PROCESS: Final = 0x80000000
_RET_ALLOW: Final = 0x7FFF0000
_RET_ERRNO: Final = 0x00050000
_OFFSET_NR: Final = 0
_OFFSET_ARCH: Final = 4
#: ``seccomp_data.args[i]`` (low 32 bits, little-endian): the kernel reads
#: ``domain`` and ``protocol`` as C ints, so the low word is what counts.
_OFFSET_ARG0: Final = 16
_OFFSET_ARG2: Final = 32
_NR_SOCKET: Final = 41
_NR_SOCKETPAIR: Final = 53
_AF_UNIX: Final = 1
_AF_INET: Final = 2
_AF_INET6: Final = 10
_AF_NETLINK: Final = 16
_NETLINK_ROUTE: Final = 0

#: Denied syscalls and their x86_64 numbers (read-only).
DENIED: Final[Mapping[str, int]] = MappingProxyType(
    {
        "acct": 163,
        "add_key": 248,
        "bpf": 321,
        "delete_module": 176,
        "finit_module": 313,
        "fsconfig": 431,
        "fsmount": 432,
        "fsopen": 430,
        "fspick": 433,
        "init_module": 175,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "io_uring_setup": 425,
        "ioperm": 173,
        "iopl": 172,
        "kexec_file_load": 320,
        "kexec_load": 246,
        "keyctl": 250,
        "lookup_dcookie": 212,
        "mount": 165,
        "mount_setattr": 442,
        "move_mount": 429,
        "msgctl": 71,
        "msgget": 68,
        "msgrcv": 70,
        "msgsnd": 69,
        "name_to_handle_at": 303,
        "open_by_handle_at": 304,
        "open_tree": 428,
        "perf_event_open": 298,
        "pivot_root": 155,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "ptrace": 101,
        "quotactl": 179,
        "reboot": 169,
        "request_key": 249,
        "semctl": 66,
        "semget": 64,
        "semop": 65,
        "semtimedop": 220,
        "setns": 308,
        "shmat": 30,
        "shmctl": 31,
        "shmdt": 67,
        "shmget": 29,
        "swapoff": 168,
        "swapon": 167,
        "syslog": 103,
        "umount2": 166,
        "unshare": 272,
        "userfaultfd": 323,
        "vhangup": 153,
    }
)


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def allowed_families(*, inet: bool) -> dict[str, int]:
    """The socket families a cell may create (name -> number); netlink only as ROUTE."""
    families = {"AF_UNIX": _AF_UNIX, "AF_NETLINK": _AF_NETLINK}
    if inet:
        families |= {"AF_INET": _AF_INET, "AF_INET6": _AF_INET6}
    return families


def build_filter(machine: str | None = None, *, inet: bool = True) -> bytes | None:
    """The BPF program for ``machine`` (default: this host), or None if unsupported.

    ``inet``: the cell may create ``AF_INET``/``AF_INET6`` sockets (it has
    network: ``allow_net`` or grants).
    """
    machine = platform.machine() if machine is None else machine
    if machine != "x86_64":
        return None
    numbers = sorted(set(DENIED.values()))
    families = sorted(set(allowed_families(inet=inet).values()) - {_AF_NETLINK})
    prog = [
        _insn(_BPF_LD_W_ABS, 0, 0, _OFFSET_ARCH),
        _insn(_BPF_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64),
        _insn(_BPF_RET_K, 0, 0, _RET_KILL_PROCESS),
        _insn(_BPF_LD_W_ABS, 0, 0, _OFFSET_NR),
    ]
    # Layout after the header: [socket? socketpair?] [x32 check] [one JEQ per
    # number] [ALLOW] [EPERM] [family checks ...].
    n_checks = 1 + len(numbers)
    to_family = 2 + n_checks + 2  # from the first socket check: past all of it
    prog.append(_insn(_BPF_JEQ_K, to_family - 1, 0, _NR_SOCKET))
    prog.append(_insn(_BPF_JEQ_K, to_family - 2, 0, _NR_SOCKETPAIR))
    for i in range(n_checks):
        to_errno = n_checks - i  # skip the remaining checks and ALLOW
        if i == 0:
            prog.append(_insn(_BPF_JGE_K, to_errno, 0, _X32_SYSCALL_BIT))
        else:
            prog.append(_insn(_BPF_JEQ_K, to_errno, 0, numbers[i - 1]))
    prog.append(_insn(_BPF_RET_K, 0, 0, _RET_ALLOW))
    prog.append(_insn(_BPF_RET_K, 0, 0, _RET_ERRNO | errno.EPERM))
    # Family checks: [LD domain] [JEQ each allowed -> ALLOW] [JEQ NETLINK -> proto]
    # [EAFNOSUPPORT] [LD protocol] [JEQ ROUTE -> ALLOW] [EAFNOSUPPORT] [ALLOW]
    n_fam = len(families)
    prog.append(_insn(_BPF_LD_W_ABS, 0, 0, _OFFSET_ARG0))
    for i, family in enumerate(families):
        prog.append(_insn(_BPF_JEQ_K, (n_fam - i) + 4, 0, family))  # to the final ALLOW
    prog.append(_insn(_BPF_JEQ_K, 1, 0, _AF_NETLINK))
    prog.append(_insn(_BPF_RET_K, 0, 0, _RET_ERRNO | errno.EAFNOSUPPORT))
    prog.append(_insn(_BPF_LD_W_ABS, 0, 0, _OFFSET_ARG2))
    prog.append(_insn(_BPF_JEQ_K, 1, 0, _NETLINK_ROUTE))
    prog.append(_insn(_BPF_RET_K, 0, 0, _RET_ERRNO | errno.EAFNOSUPPORT))
    prog.append(_insn(_BPF_RET_K, 0, 0, _RET_ALLOW))
    return b"".join(prog)


def filter_memfd(program: bytes) -> int:
    """The program in a memfd positioned at 0, for ``bwrap --seccomp FD``."""
    fd = os.memfd_create("cellmesh-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


__all__ = ["DENIED", "allowed_families", "build_filter", "filter_memfd"]
