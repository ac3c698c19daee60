"""The seccomp deny-list: numbers match the kernel headers, and it holds inside bwrap."""

from __future__ import annotations

import errno
import platform
import re
import struct
from pathlib import Path

import pytest

from cellmesh.sandbox import CellBackend
from cellmesh.sandbox._seccomp import DENIED, build_filter

from .test_escape import run_probe

HEADER = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")


def test_numbers_match_the_x86_64_headers() -> None:
    if not HEADER.exists():
        pytest.skip(f"{HEADER} not installed (linux-libc-dev)")
    table = dict(re.findall(r"#define __NR_(\w+) (\d+)", HEADER.read_text()))
    assert {name: int(table[name]) for name in DENIED} == dict(DENIED)


def run_bpf(prog: bytes, *, nr: int, args: tuple[int, ...] = (), arch: int = 0xC000003E) -> int:
    """Evaluate a classic-BPF seccomp program on one syscall (the few opcodes we emit)."""
    data = struct.pack("<iI", nr, arch) + struct.pack("<Q", 0) + b"".join(
        struct.pack("<Q", a) for a in (*args, 0, 0, 0, 0, 0, 0)[:6]
    )
    insns = [struct.unpack("<HBBI", prog[i : i + 8]) for i in range(0, len(prog), 8)]
    acc = pc = 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x06:  # ret k
            return k
        elif code == 0x15:  # jeq k
            pc += jt if acc == k else jf
        elif code == 0x35:  # jge k
            pc += jt if acc >= k else jf
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


ALLOW, EPERM, EAFNOSUPPORT = 0x7FFF0000, 0x00050001, 0x00050000 | 97


@pytest.mark.parametrize("inet", [False, True])
def test_program_decides_every_case(inet: bool) -> None:
    prog = build_filter("x86_64", inet=inet)
    assert prog is not None
    for nr in DENIED.values():
        assert run_bpf(prog, nr=nr) == EPERM
    assert run_bpf(prog, nr=39) == ALLOW  # getpid
    assert run_bpf(prog, nr=0x40000000 + 39) == EPERM  # x32
    assert run_bpf(prog, nr=39, arch=0x40000003) == 0x80000000  # i386: killed
    for socket_nr in (41, 53):  # socket, socketpair
        assert run_bpf(prog, nr=socket_nr, args=(1, 1, 0)) == ALLOW  # AF_UNIX
        assert run_bpf(prog, nr=socket_nr, args=(16, 3, 0)) == ALLOW  # NETLINK_ROUTE
        assert run_bpf(prog, nr=socket_nr, args=(16, 3, 9)) == EAFNOSUPPORT  # NETLINK_AUDIT
        for family in (2, 10):  # AF_INET, AF_INET6
            assert run_bpf(prog, nr=socket_nr, args=(family, 1, 0)) == (
                ALLOW if inet else EAFNOSUPPORT
            )
        for family in (40, 17, 38, 31, 0, 46):  # VSOCK, PACKET, ALG, BLUETOOTH, UNSPEC, MAX
            assert run_bpf(prog, nr=socket_nr, args=(family, 1, 0)) == EAFNOSUPPORT
    # Only the low word of the domain counts, as for the kernel's int.
    assert run_bpf(prog, nr=41, args=((1 << 32) | 1, 1, 0)) == ALLOW
    assert build_filter("aarch64") is None


def test_denied_syscalls_fail_inside_bwrap(bwrap_backend: CellBackend) -> None:
    if platform.machine() != "x86_64":
        pytest.skip("the deny-list exists for x86_64 only")
    code = f"""
    import ctypes, json, os
    libc = ctypes.CDLL(None, use_errno=True)
    out = {{}}
    for name, nr in {sorted(DENIED.items())!r}:
        ctypes.set_errno(0)
        ret = libc.syscall(nr, 0, 0, 0, 0, 0)
        out[name] = ctypes.get_errno() if ret == -1 else 0
    out["getpid"] = libc.syscall(39)
    status = open("/proc/self/status").read()
    out["mode"] = status.split("Seccomp:")[1].split()[0]
    print(json.dumps(out))
    """
    status, out = run_probe(bwrap_backend, "seccomp", code)
    assert status.reason == "exit"
    assert out.pop("mode") == "2"
    assert out.pop("getpid") == 2  # type: ignore[comparison-overlap]  # allowed, pid 2 in its ns
    assert out == dict.fromkeys(DENIED, 1)  # EPERM for every denied syscall


FAMILIES = """
import json, socket
out = {}
for name in ("AF_UNIX", "AF_INET", "AF_INET6", "AF_VSOCK", "AF_PACKET", "AF_ALG", "AF_NETLINK"):
    family = getattr(socket, name)
    proto = 0
    try:
        socket.socket(family, socket.SOCK_DGRAM if name == "AF_NETLINK" else (
            socket.SOCK_RAW if name == "AF_PACKET" else socket.SOCK_SEQPACKET if name == "AF_ALG"
            else socket.SOCK_STREAM), proto).close()
        out[name] = 0
    except OSError as e:
        out[name] = e.errno
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 9).close()  # NETLINK_AUDIT
    out["NETLINK_AUDIT"] = 0
except OSError as e:
    out["NETLINK_AUDIT"] = e.errno
out["if_nameindex"] = [n for _, n in socket.if_nameindex()]
print(json.dumps(out))
"""


@pytest.mark.parametrize("network", ["none", "host"])
def test_only_the_socket_families_a_cell_needs_inside_bwrap(
    bwrap_backend: CellBackend, network: str
) -> None:
    if platform.machine() != "x86_64":
        pytest.skip("the filter exists for x86_64 only")
    status, out = run_probe(bwrap_backend, f"fam-{network}", FAMILIES, allow_net=network == "host")
    assert status.reason == "exit"
    refused = errno.EAFNOSUPPORT
    assert out["AF_UNIX"] == 0
    assert out["AF_NETLINK"] == 0  # NETLINK_ROUTE: glibc's interface list
    assert out["if_nameindex"]  # still works
    for name in ("AF_VSOCK", "AF_PACKET", "AF_ALG", "NETLINK_AUDIT"):
        assert out[name] == refused, name
    for name in ("AF_INET", "AF_INET6"):
        assert out[name] == (0 if network == "host" else refused), name
