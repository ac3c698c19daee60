"""The standby's go pipe and its switch to new code (cellmesh.actors._standby)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from cellmesh.actors._standby import Go, parse, wait_for_go, with_digest

TOKEN = "ab" * 16
DIGEST = "cd" * 32


@pytest.mark.parametrize(
    ("line", "go"),
    [
        ("g", Go()),
        (f"g {TOKEN}", Go(token=TOKEN)),
        (f"s {TOKEN} {DIGEST}", Go(swap=True, token=TOKEN, digest=DIGEST)),
        ("s " + TOKEN, None),
        ("g NOT-HEX", None),
        ("x", None),
        ("", None),
        (f"g {TOKEN} extra", None),
    ],
)
def test_standby_parse_accepts_only_our_commands(line: str, go: Go | None) -> None:
    assert parse(line) == go


def test_standby_with_digest_points_into_the_dna_directory() -> None:
    env = {"CELL_DNA_DIR": "/cell/dna", "X": "1"}
    assert with_digest(env, DIGEST) == {"CELL_DNA_DIR": f"/cell/dna/{DIGEST}", "X": "1"}
    assert with_digest(env, "") == env
    assert Go(digest=DIGEST).environ({}) == {}


def _go_through_pipe(data: bytes, close: bool = True) -> tuple[Go | None, list[str]]:
    read, write = os.pipe()
    os.write(write, data)
    if close:
        os.close(write)
    seen: list[str] = []

    def preload(env: Mapping[str, str]) -> None:
        seen.append(env["CELL_DNA_DIR"])

    try:
        return wait_for_go({"CELL_GO_FD": str(read), "CELL_DNA_DIR": "/d"}, preload), seen
    finally:
        if not close:
            os.close(write)


def test_standby_preloads_then_serves_the_preloaded_code() -> None:
    go, seen = _go_through_pipe(f"i {DIGEST}\ng {TOKEN}\n".encode(), close=False)
    assert go == Go(token=TOKEN, digest=DIGEST)
    assert seen == [f"/d/{DIGEST}"]


def test_standby_end_of_file_or_garbage_means_not_needed() -> None:
    assert _go_through_pipe(b"")[0] is None
    assert _go_through_pipe(f"i {DIGEST}\n".encode())[0] is None
    assert _go_through_pipe(b"rm -rf /\n")[0] is None


def test_standby_a_bare_g_still_starts() -> None:
    assert _go_through_pipe(b"g", close=False)[0] == Go()


def test_standby_command_from_a_reexec_comes_from_the_environment() -> None:
    assert wait_for_go({"CELL_GO": f"s {TOKEN} {DIGEST}"}, lambda env: None) == Go(
        swap=True, token=TOKEN, digest=DIGEST
    )


SWITCH = textwrap.dedent('''
    import sys, threading, time
    from pathlib import Path
    from cellmesh.actors._standby import forget_code
    from cellmesh.wire.proteins import PROTEINS
    old, new, thread = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    sys.path.insert(0, old)
    import cellcode
    assert PROTEINS.get("t.sb.State") is cellcode.State
    if thread:
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    ok = forget_code(old)
    print("forgot" if ok else "kept")
    if ok:
        assert "cellcode" not in sys.modules and "cellcode.helper" not in sys.modules
        assert PROTEINS.get("t.sb.State") is None and old not in sys.path
        sys.path.insert(0, new)
        import cellcode as fresh
        print(fresh.VERSION, PROTEINS.get("t.sb.Other") is fresh.Other)
''')


def _code(root: Path, version: str, protein: str) -> Path:
    pkg = root / version / "cellcode"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import cellmesh\nfrom . import helper\n"
        f"VERSION = {version!r}\n"
        f"@cellmesh.protein({protein!r})\nclass {protein.rsplit('.', 1)[1]}:\n    n: int\n"
    )
    (pkg / "helper.py").write_text("X = 1\n")
    return root / version


@pytest.mark.parametrize("thread", [False, True])
def test_standby_forgets_the_old_code_unless_it_left_a_thread(
    tmp_path: Path, thread: bool
) -> None:
    old = _code(tmp_path, "a", "t.sb.State")
    new = _code(tmp_path, "b", "t.sb.Other")
    out = subprocess.run(
        [sys.executable, "-c", SWITCH, str(old), str(new), "1" if thread else "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == (["kept"] if thread else ["forgot", "b", "True"])
