"""``cellmesh up / status / kill / down`` as a user runs them: real processes, a private home."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CELLS = HERE.parent / "actors" / "rootcells.py"

MANIFEST = """
[supervisor]
intensity = 5
children = ["echo", "lazy"]

[cells.echo]
dna = "rootcells.py"
entry = "rootcells:Echoer"

[cells.lazy]
dna = "rootcells.py"
entry = "rootcells:Echoer"
activation = "on_demand"
"""


#: What the losing `up` of a race runs once its own check has passed.
RACED_UP = (
    "import sys; from pathlib import Path; from cellmesh.config import Paths; "
    "from cellmesh.cli._root import _background; "
    "sys.exit(_background(Path('cellmesh.toml').resolve(), Paths.from_env(), None))"
)


def mesh_home(cells: Path, manifest: str) -> Iterator[Path]:
    """A private CELL_HOME holding ``cells`` and ``manifest``; any root left is stopped."""
    path = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
    shutil.copy(cells, path / cells.name)
    (path / "cellmesh.toml").write_text(manifest)
    yield path
    # never leave a root behind, whatever the test did
    subprocess.run(
        [sys.executable, "-m", "cellmesh", "down", "--timeout", "2"], env=env_for(path),
        capture_output=True, timeout=120, check=False,
    )
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def home() -> Iterator[Path]:
    yield from mesh_home(CELLS, MANIFEST)


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELL_")}
    env.update(CELL_HOME=str(home), CELL_SANDBOX="host")
    return env


def cellmesh(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellmesh", *args], env=env_for(home), cwd=home,
        capture_output=True, text=True, timeout=180, check=False,
    )


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_up_status_kill_down_leaves_no_process(home: Path) -> None:
    up = cellmesh(home, "up")
    assert up.returncode == 0, up.stderr
    assert "root up (pid" in up.stdout and "2 cells" in up.stdout

    again = cellmesh(home, "up")
    assert again.returncode == 1
    assert "already running (pid" in again.stderr

    # Two `up` at once: both pass their own check, and the root started by the
    # one that loses the race finds the other running. It says so on the pipe
    # its `up` reads (it used to fail before reporting: "exited silently").
    raced = subprocess.run(
        [sys.executable, "-c", RACED_UP], env=env_for(home), cwd=home,
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert raced.returncode == 1, raced.stderr
    assert "the mesh did not start: a root is already running (pid" in raced.stderr
    assert "silently" not in raced.stderr

    status = cellmesh(home, "status", "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    cells = {c["name"]: c for c in doc["cells"]}
    assert cells["echo"]["state"] == "running" and cells["echo"]["pid"]
    assert cells["lazy"]["state"] == "dormant" and cells["lazy"]["pid"] is None
    root_pid = doc["root"]["pid"]
    echo_pid = cells["echo"]["pid"]

    table = cellmesh(home, "status")
    assert table.returncode == 0 and "echo" in table.stdout and "dormant" in table.stdout
    top = cellmesh(home, "top", "--once", "--interval", "0.2")
    assert top.returncode == 0, top.stderr
    assert "echo" in top.stdout and "lazy" in top.stdout
    assert "rates between the cells' last two reports" in top.stdout  # not over 0.2 s
    assert "quits" not in top.stdout  # one frame: no keys
    logs = cellmesh(home, "logs", "echo")
    assert logs.returncode == 0 and "event started" in logs.stdout

    killed = cellmesh(home, "kill", "echo")
    assert killed.returncode == 0, killed.stderr
    assert f"killed echo (pid {echo_pid})" in killed.stdout
    ghost = cellmesh(home, "kill", "ghost")
    assert ghost.returncode == 1
    assert ghost.stderr == "cellmesh: error: no cell named 'ghost' (cells: echo, lazy)\n"

    down = cellmesh(home, "down", "--timeout", "5")
    assert down.returncode == 0, down.stderr
    assert "root stopped" in down.stdout
    assert not alive(root_pid)
    assert not alive(echo_pid)
    leftovers = [
        pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
        if _environ_mentions(pid, str(home))
    ]
    assert leftovers == []
    assert not list((home / "run").glob("*.sock"))

    assert "no root is running" in cellmesh(home, "down").stdout
    nothing = cellmesh(home, "kill", "echo")
    assert nothing.returncode == 1 and "no root is running" in nothing.stderr


#: Holds as many control connections as the root serves, each asking for status now
#: and then (as many `cellmesh top` would), until killed; prints "holding N".
HOLDER = """
import sys, trio
from cellmesh.actors.control import StatusRequest
from cellmesh.cli._client import ask_root, open_root
from cellmesh.config import Paths

async def main():
    paths, held = Paths.from_env(), [0]
    async def one():
        async with open_root(paths) as syn:
            await ask_root(syn, StatusRequest())
            held[0] += 1
            while True:
                await trio.sleep(1)
                await ask_root(syn, StatusRequest())
    async with trio.open_nursery() as nursery:
        for _ in range(int(sys.argv[1])):
            nursery.start_soon(one)
        while held[0] < int(sys.argv[1]):
            await trio.sleep(0.05)
        print("holding", held[0], flush=True)
trio.run(main)
"""


def test_down_stops_a_root_whose_control_socket_is_full_gracefully(home: Path) -> None:
    """A scale audit: with the root's 64 control connections taken (64 dashboards),
    `down` could not deliver its request and SIGKILLed a healthy root: no cell
    ran on_stop, no last words. It sends SIGTERM instead: the same ordered stop."""
    up = cellmesh(home, "up")
    assert up.returncode == 0, up.stderr
    root_pid = json.loads(cellmesh(home, "status", "--json").stdout)["root"]["pid"]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "64"], env=env_for(home), cwd=home,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().startswith("holding 64")
        down = cellmesh(home, "down", "--timeout", "5")
    finally:
        holder.kill()
        holder.wait()
    assert down.returncode == 0, down.stderr
    assert "max_connections" in down.stderr and "stopping it with SIGTERM" in down.stderr
    assert f"root stopped (pid {root_pid})" in down.stdout, down.stdout
    assert not alive(root_pid)
    words = json.loads((home / "logs" / "root.last-words.json").read_text())
    assert words["clean"] is True, words


#: `up` in the background with a patience of 4 s (the default is 120 s).
PATIENT_UP = (
    "import sys; from pathlib import Path; from cellmesh.config import Paths; "
    "import cellmesh.cli._root as r; r.UP_PATIENCE = 4.0; "
    "sys.exit(r._background(Path('cellmesh.toml').resolve(), Paths.from_env(), None))"
)

SLOWISH = """
import trio
import cellmesh

class Slowish(cellmesh.Cell):
    async def on_start(self) -> None:
        print("starting", flush=True)
        await trio.sleep(1.0)
"""


def test_up_waits_as_long_as_the_start_progresses_and_no_longer(home: Path) -> None:
    """A scale audit: `up` gave up after a fixed 120 s on a mesh of 70 cells that
    was starting fine, one cell after the other, and tore it down. It waits as long
    as the root or its cells write something; a start with no sign of life for its
    patience still fails, saying so."""
    (home / "slowish.py").write_text(SLOWISH)
    cells = "".join(
        f'[cells.s{i}]\ndna = "slowish.py"\nentry = "slowish:Slowish"\n' for i in range(5)
    )
    (home / "cellmesh.toml").write_text(cells)
    up = subprocess.run([sys.executable, "-c", PATIENT_UP], env=env_for(home), cwd=home,
                        capture_output=True, text=True, timeout=180, check=False)
    assert up.returncode == 0, up.stderr  # 5 cells x 1 s: longer than 4 s in all
    assert "5 cells" in up.stdout
    assert cellmesh(home, "down").returncode == 0
    (home / "cellmesh.toml").write_text(
        '[cells.slow]\ndna = "rootcells.py"\nentry = "rootcells:SlowStarter"\n'
    )
    stuck = subprocess.run([sys.executable, "-c", PATIENT_UP], env=env_for(home), cwd=home,
                           capture_output=True, text=True, timeout=180, check=False)
    assert stuck.returncode == 1
    assert "no new output from it or its cells, for 4 s" in stuck.stderr, stuck.stderr


def test_down_kills_a_root_that_does_not_answer(home: Path) -> None:
    """docs/root.md: "if the root itself hangs, [down] SIGKILLs it" -- also when it
    hangs before it took the stop request (it used to give up with an error and
    leave the root and its cells running). A stopped root is given up on once it has
    been stopped for ``--timeout``: it cannot answer."""
    up = cellmesh(home, "up")
    assert up.returncode == 0, up.stderr
    doc = json.loads(cellmesh(home, "status", "--json").stdout)
    root_pid, echo_pid = doc["root"]["pid"], doc["cells"][0]["pid"]
    os.kill(root_pid, signal.SIGSTOP)
    try:
        down = cellmesh(home, "down", "--timeout", "1")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(root_pid, signal.SIGCONT)
    assert down.returncode == 0, down.stderr
    assert f"the root (pid {root_pid}) is running but did not serve this request" in down.stderr
    # given up on once stopped for --timeout (it waited --timeout + 10 s for the answer)
    assert "has been stopped (SIGSTOP) for 1 s" in down.stderr
    assert "killing it" in down.stderr and f"root killed (pid {root_pid})" in down.stdout
    assert not alive(root_pid)
    # what the killed root's cells left is removed (docs/security.md)
    assert "runtime dirs and per-cell socket dir entries its cells left" in down.stdout
    assert not _runtime_dirs(home)
    deadline = time.monotonic() + 10
    while alive(echo_pid) and time.monotonic() < deadline:  # the parent-death signal
        time.sleep(0.05)
    assert not alive(echo_pid)


def _runtime_dirs(home: Path) -> set[Path]:
    """The cells' runtime dirs of ``home``'s root, under the temp dir."""
    from cellmesh.config import Paths

    tag = Paths.from_env(env_for(home)).owner_tag
    return set(Path(tempfile.gettempdir()).glob(f"cellmesh-{tag}-*"))


def test_a_root_killed_outright_leaves_nothing_past_the_next_up_or_down(home: Path) -> None:
    """docs/security.md: a root starting after a crash removes what its predecessor's
    cells left (runtime dirs, cgroup leaves, the socket dir's per-cell directories)."""
    assert cellmesh(home, "up").returncode == 0
    doc = json.loads(cellmesh(home, "status", "--json").stdout)
    root_pid, echo_pid = doc["root"]["pid"], doc["cells"][0]["pid"]
    left = _runtime_dirs(home)
    assert left  # the running echo has one
    os.kill(root_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (alive(root_pid) or alive(echo_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(echo_pid)  # the parent-death signal
    assert all(path.is_dir() for path in left)  # nobody removed them
    # The socket dir's per-cell directories stay too: those of a cell no longer
    # declared stayed for good (.dna/<cell>/ holds hard links: its disk space).
    run = home / "run"
    assert (run / ".dna" / "echo").is_dir()
    gone = run / ".dna" / "gone" / ("0" * 64)
    gone.mkdir(parents=True)
    (gone / "code.py").write_text("x = 1\n")
    (run / ".umbilical" / "gone").mkdir()
    (run / "mine.sock").write_text("")  # not the root's: a user's membrane may share the dir
    up = cellmesh(home, "up")
    assert up.returncode == 0, up.stderr
    assert not any(path.exists() for path in left)
    log = (home / "logs" / "root.log").read_text()
    assert "leftovers of a previous root" in log
    assert not (run / ".dna" / "gone").exists() and not (run / ".umbilical" / "gone").exists()
    assert (run / ".dna" / "echo").is_dir() and (run / "mine.sock").exists()
    # (down, when it has to kill the root, cleans up too: the test below)


def _environ_mentions(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def test_up_reports_a_bad_manifest_precisely(home: Path) -> None:
    (home / "cellmesh.toml").write_text('[cells.echo]\ndna = "rootcells.py"\nrestart = "forever"\n')
    bad = cellmesh(home, "up")
    assert bad.returncode == 2
    assert "cellmesh.toml: cells.echo.restart: expected one of" in bad.stderr
    missing = cellmesh(home, "up", "-f", "nope.toml")
    assert missing.returncode == 2 and "nope.toml" in missing.stderr


def test_up_names_a_cell_home_that_cannot_be_made_and_exits_2(home: Path) -> None:
    (home / "afile").write_text("x")
    env = {**env_for(home), "CELL_HOME": str(home / "afile")}
    for cell_home, why in ((home / "afile", "is not a directory"),
                           (home / "afile" / "sub", "cannot be created: Not a directory"),
                           (Path("/proc/cellmesh-home"), "cannot be created")):
        env["CELL_HOME"] = str(cell_home)
        bad = subprocess.run(
            [sys.executable, "-m", "cellmesh", "up"], env=env, cwd=home,
            capture_output=True, text=True, timeout=180, check=False,
        )
        assert bad.returncode == 2, bad.stderr
        assert bad.stderr.startswith(f"cellmesh: error: {cell_home}: {why}"), bad.stderr
        assert "Traceback" not in bad.stderr


def test_up_names_a_symlink_in_a_cells_code_and_exits_2(home: Path) -> None:
    """Bad configuration found only as the root starts (a cell's code dir holding a
    symlink) is named, not hidden in Trio's exception group, and exits 2 as a bad
    manifest does."""
    code = home / "code"
    code.mkdir()
    shutil.copy(CELLS, code / "rootcells.py")
    (code / "__init__.py").write_text("")
    (code / "pw.txt").symlink_to("/etc/passwd")
    (home / "cellmesh.toml").write_text(
        '[cells.echo]\ndna = "code"\nentry = "code.rootcells:Echoer"\n'
    )
    failed = cellmesh(home, "up")
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.splitlines()[0] == (
        f"cellmesh: error: the mesh did not start: {code}/pw.txt: is a symlink; "
        "cell code must be plain files"
    )
    assert "no root is running" in cellmesh(home, "down").stdout


def test_up_reports_a_mesh_that_cannot_start(home: Path) -> None:
    (home / "cellmesh.toml").write_text(
        '[cells.doomed]\ndna = "rootcells.py"\nentry = "rootcells:Crasher"\n'
    )
    failed = cellmesh(home, "up")
    assert failed.returncode == 1
    lines = failed.stderr.splitlines()
    assert lines[0] == (
        "cellmesh: error: the mesh did not start: child 'doomed': failed to start: exited "
        "before it was ready: exit code 1: RuntimeError in on_start: this cell never starts "
        "(see `cellmesh logs doomed`)"
    )
    assert lines[1] == "  the last lines of `cellmesh logs doomed`:"
    assert lines[-2] == "    RuntimeError: this cell never starts"
    assert lines[-1].startswith("cellmesh: the root's log: ")
    assert "no root is running" in cellmesh(home, "down").stdout
    status = cellmesh(home, "status")
    assert status.returncode == 1
    assert status.stderr.splitlines()[1].startswith("the last root (pid ")
    assert "child 'doomed'" in status.stderr


def test_up_names_the_network_key_a_host_sandbox_cannot_honour(home: Path) -> None:
    """Destinations in ``network`` need bwrap's network namespace: under the host
    sandbox ``up`` refuses, naming the cell's manifest key (not an internal name)."""
    (home / "cellmesh.toml").write_text(
        '[cells.echo]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
        'network = ["127.0.0.1:5432"]\n'
    )
    failed = cellmesh(home, "up")  # env_for: CELL_SANDBOX=host
    assert failed.returncode == 2, failed.stderr  # a configuration that cannot run here
    first = failed.stderr.splitlines()[0]
    assert first.startswith("cellmesh: error: the mesh did not start: cells.echo.network: "
                            "lists destinations, which only the bwrap sandbox"), first
    assert "runs the host sandbox" in first and "net_grants" not in failed.stderr
    assert "no root is running" in cellmesh(home, "down").stdout


def test_the_root_log_says_when_cell_sandbox_overrides_the_manifest(home: Path) -> None:
    """docs/manifest.md: CELL_SANDBOX takes precedence over ``[root] sandbox``, and
    the root's log says so (a manifest's choice is never dropped silently)."""
    (home / "cellmesh.toml").write_text(
        '[root]\nsandbox = "auto"\n\n'
        '[cells.echo]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n'
    )
    up = cellmesh(home, "up")  # env_for: CELL_SANDBOX=host
    assert up.returncode == 0, up.stderr
    assert "sandbox host" in up.stdout
    log = (home / "logs" / "root.log").read_text()
    assert "CELL_SANDBOX=host takes precedence over the manifest's [root] sandbox = 'auto'" in log
    assert cellmesh(home, "down").returncode == 0


def test_ctrl_c_on_up_stops_the_root_it_was_starting(home: Path) -> None:
    """Ctrl-C while ``up`` waits for a slow start stops that root (it used to go
    on starting in the background, silently)."""
    (home / "cellmesh.toml").write_text(
        '[cells.slow]\ndna = "rootcells.py"\nentry = "rootcells:SlowStarter"\n'
        "start_timeout = 120\n"
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "cellmesh", "up"], env=env_for(home), cwd=home,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(  # the slow cell's process is up
        _environ_mentions(pid, "CELL_ENTRY=rootcells:SlowStarter")
        and _environ_mentions(pid, str(home))  # (ours: other tests may run one at once)
        for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
    ):
        time.sleep(0.05)
    up.send_signal(signal.SIGINT)
    out, err = up.communicate(timeout=120)
    assert up.returncode == 130, out + err
    assert "interrupted: stopping the root it was starting" in err
    assert "no root is running" in cellmesh(home, "down").stdout
    assert [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if _environ_mentions(pid, str(home))] == []


def test_up_checks_every_entry_before_starting_anything(home: Path) -> None:
    (home / "cellmesh.toml").write_text(
        '[cells.echo]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n\n'
        '[cells.cache]\ndna = "rootcells.py"\nentry = "rootcells.nosuch:X"\n'
        'activation = "on_demand"\n'
    )
    # What an earlier mesh in this home left in the log is not this start's output.
    (home / "logs").mkdir(exist_ok=True)
    (home / "logs" / "cache.log").write_text(
        "2020-01-02T03:04:05.000000Z an earlier mesh's cache said this\n"
    )
    failed = cellmesh(home, "up")
    assert failed.returncode == 1
    assert "an earlier mesh" not in failed.stderr, failed.stderr
    assert failed.stderr.splitlines()[:2] == [
        "cellmesh: error: the mesh did not start: 1 cell cannot start:",
        "  cells.cache.entry: module 'rootcells.nosuch' not found in the cell's code "
        + failed.stderr.splitlines()[1].split("the cell's code ", 1)[1],
    ]
    assert "no root is running" in cellmesh(home, "down").stdout
    assert [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if _environ_mentions(pid, str(home))] == []


SLOW_MANIFEST = (
    '[cells.echo]\ndna = "rootcells.py"\nentry = "rootcells:Echoer"\n\n'
    '[cells.slow]\ndna = "rootcells.py"\nentry = "rootcells:SlowStarter"\n'
    "start_timeout = 120\n"
)


def _root_starting(home: Path) -> int:
    """Wait until ``home``'s root runs the slow cell's ``on_start`` (its mesh is not up);
    the root's pid."""
    from cellmesh.actors._rootlock import read_root_pid
    from cellmesh.config import Paths
    from cellmesh.sandbox import read_events

    events = home / "logs" / "echo.events.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # echo is ready: the supervisor starts slow next
        if events.exists() and any(e.get("event") == "ready" for e in read_events(events)):
            break
        time.sleep(0.05)
    while time.monotonic() < deadline and not any(  # the slow cell's process is up
        _environ_mentions(pid, "CELL_ENTRY=rootcells:SlowStarter")
        and _environ_mentions(pid, str(home))  # (ours: other tests may run one at once)
        and _environ_mentions(pid, str(home))
        for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
    ):
        time.sleep(0.05)
    pid = read_root_pid(Paths.from_env(env_for(home)))
    assert pid is not None and time.monotonic() < deadline
    return pid


def _last_words(home: Path) -> tuple[object, ...]:
    from cellmesh.actors.lastwords import read_last_words
    from cellmesh.config import Paths

    words = read_last_words(Paths.from_env(env_for(home)))
    assert words is not None
    return words.pid, words.state, words.clean, words.reason


def test_sigterm_to_a_starting_background_root_lets_it_clean_up(home: Path) -> None:
    """docs/root.md: a root given SIGTERM before its mesh is up abandons its start, and when
    it ends it writes its last words and destroys every sandbox. `up` used to SIGKILL it
    the moment it read the root's report, mid-cleanup: no last words (`status` named the
    root before it), the cells' runtime dirs left for the next root to sweep."""
    (home / "cellmesh.toml").write_text(SLOW_MANIFEST)
    up = subprocess.Popen(
        [sys.executable, "-m", "cellmesh", "up"], env=env_for(home), cwd=home,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    root_pid = _root_starting(home)
    assert _runtime_dirs(home)  # the cells' own
    os.kill(root_pid, signal.SIGTERM)
    out, err = up.communicate(timeout=120)
    assert up.returncode == 1, out + err
    assert "the mesh did not start: stopped by SIGTERM before the mesh was up" in err, err
    assert not alive(root_pid)
    assert _last_words(home) == (root_pid, "stopped", True, "SIGTERM before the mesh was up")
    assert _runtime_dirs(home) == set()
    assert "cellmesh: root: stopped" in (home / "logs" / "root.log").read_text()
    status = cellmesh(home, "status")
    said = status.stderr.splitlines()[1]
    assert said.startswith(f"the last root (pid {root_pid}) stopped "), status.stderr
    assert said.endswith(" ago on request (SIGTERM before the mesh was up)"), status.stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_a_starting_foreground_root_is_a_clean_stop_and_a_failed_start(
    home: Path, sig: signal.Signals, code: int
) -> None:
    """A foreground root given SIGTERM or SIGINT before its mesh is up exits 128 + the
    signal (it exited 0, the mesh never started), and its last words say a clean stop
    and why, not "BaseExceptionGroup: Exceptions from Trio nursery (14 sub-exceptions)"."""
    (home / "cellmesh.toml").write_text(SLOW_MANIFEST)
    root = subprocess.Popen(
        [sys.executable, "-m", "cellmesh", "up", "--foreground"], env=env_for(home), cwd=home,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert _root_starting(home) == root.pid
    root.send_signal(sig)
    out, err = root.communicate(timeout=120)
    assert root.returncode == code, out + err
    assert f"cellmesh: root: {sig.name} before the mesh was up: stopping" in err
    assert err.rstrip().endswith("cellmesh: root: stopped")
    assert _last_words(home) == (root.pid, "stopped", True, f"{sig.name} before the mesh was up")
    assert _runtime_dirs(home) == set()
    status = cellmesh(home, "status")
    assert f"on request ({sig.name} before the mesh was up)" in status.stderr, status.stderr
    assert "Trio nursery" not in status.stderr


def test_ctrl_c_on_up_leaves_last_words_of_a_clean_stop(home: Path) -> None:
    """Ctrl-C on a background `up` stops the root it was starting (SIGTERM): its last words
    are a clean stop saying so, not an unclean end "BaseExceptionGroup: Exceptions from
    Trio nursery (10 sub-exceptions)" that `status` then showed."""
    (home / "cellmesh.toml").write_text(SLOW_MANIFEST)
    up = subprocess.Popen(
        [sys.executable, "-m", "cellmesh", "up"], env=env_for(home), cwd=home,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    root_pid = _root_starting(home)
    up.send_signal(signal.SIGINT)
    out, err = up.communicate(timeout=120)
    assert up.returncode == 130, out + err
    assert _last_words(home) == (root_pid, "stopped", True, "SIGTERM before the mesh was up")
    assert _runtime_dirs(home) == set()
    status = cellmesh(home, "status")
    assert status.stderr.splitlines()[1].endswith(
        " ago on request (SIGTERM before the mesh was up)"), status.stderr


def test_up_while_a_down_is_in_progress_says_the_root_is_stopping(home: Path) -> None:
    """An operator restarting a mesh runs `up` while `down` still waits for a cell that
    is slow to stop: `up` says that the root is stopping (it said only "already running")."""
    (home / "cellmesh.toml").write_text(
        '[cells.stubborn]\ndna = "rootcells.py"\nentry = "rootcells:Stubborn"\n'
        'shutdown = 3000\n'
    )
    assert cellmesh(home, "up").returncode == 0
    down = subprocess.Popen(
        [sys.executable, "-m", "cellmesh", "down"], env=env_for(home), cwd=home,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        done = cellmesh(home, "status", "--json")
        if done.returncode == 0 and json.loads(done.stdout)["root"]["stopping"]:
            break
        assert time.monotonic() < deadline, done.stdout + done.stderr
        time.sleep(0.1)
    again = cellmesh(home, "up")
    assert again.returncode == 1
    assert "a root is already running (pid" in again.stderr
    assert "it is stopping: run `cellmesh up` again once it has ended" in again.stderr
    out, err = down.communicate(timeout=60)
    assert down.returncode == 0 and "root stopped" in out, out + err
