"""Process facts from /proc: which processes are live (a zombie is not)."""

from __future__ import annotations

import os
import subprocess
import time

from cellmesh.actors._proc import is_live, parse_stat, scan


def test_is_live_a_running_process_a_zombie_and_no_process() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    quick = subprocess.Popen(["true"])
    try:
        assert is_live(os.getpid()) and is_live(sleeper.pid)
        deadline = time.monotonic() + 30
        while is_live(quick.pid):  # exits, and stays a zombie until reaped
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert os.path.exists(f"/proc/{quick.pid}")  # (what status used to check)
    finally:
        sleeper.kill()
        sleeper.wait()
        quick.wait()
    assert not is_live(quick.pid) and not is_live(2**22 + 1)


def test_scan_sees_this_process_and_parse_stat_reads_names_with_parentheses() -> None:
    me = scan()[os.getpid()]
    assert me.ppid == os.getppid() and me.rss > 0
    sample = parse_stat("42 (a) b (c)) S 7 " + " ".join(["0"] * 20) + " 3")
    assert sample is not None and sample.ppid == 7
    assert parse_stat("garbage") is None
