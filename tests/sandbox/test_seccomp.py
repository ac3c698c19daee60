"""The seccomp deny-list: numbers match the kernel headers, and it holds inside bwrap."""

from __future__ import annotations

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


def test_program_shape() -> None:
    prog = build_filter("x86_64")
    assert prog is not None
    insns = [struct.unpack("<HBBI", prog[i : i + 8]) for i in range(0, len(prog), 8)]
    assert len(insns) == 4 + 1 + len(set(DENIED.values())) + 2
    assert insns[-2] == (0x06, 0, 0, 0x7FFF0000)  # allow
    assert insns[-1] == (0x06, 0, 0, 0x00050001)  # EPERM
    for index, (code, jt, _jf, _k) in enumerate(insns[4:-2], start=4):
        assert code in (0x15, 0x35)
        assert index + 1 + jt == len(insns) - 1  # every match jumps to EPERM
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
