"""``cellmesh up``, ``down`` and ``kill``: start, stop and poke the root daemon.

``up`` starts the root in the background by default: it re-runs itself as
``cellmesh up --foreground`` in a new session (output to
``$CELL_HOME/logs/root.log``) and waits on a pipe until the child reports
"up" or why it failed, so the command's exit status is the start's outcome.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Final

import cyclopts
import trio

from .._util import innermost, open_service_nursery
from ..actors._metrics import parse_address
from ..actors._proc import is_stopped, scan, tree
from ..actors._rootlock import RootLock, read_root_pid, root_is_running
from ..actors._rootlog import StderrLog
from ..actors._rootstart import sweep_run_dirs
from ..actors._statusnotes import slots_text
from ..actors._tasks import Stall
from ..actors.control import Ack, KillCell, StatusReply, StatusRequest, StopMesh
from ..actors.errors import (
    CellsCannotStart,
    RootAlreadyRunning,
    RootNotRunning,
    RootUnreachable,
    SupervisorEscalation,
)
from ..actors.exitcause import clean
from ..actors.lastwords import owners_stop_reason, without_cancelled
from ..actors.logs import read_log
from ..actors.manifest import load_manifest
from ..actors.policy import FAILED_TO_START
from ..config import Paths, check_seconds, ensure_home
from ..errors import CellmeshError, ConfigError
from ..sandbox import CgroupHost, SandboxError, sweep_leftovers
from ._client import control_call, last_words_of
from ._replicas import check_target

#: How long `up` waits for the background root to report while neither the root nor
#: its cells write anything (their output and lifecycle events in the log directory).
UP_PATIENCE = 120.0


def _check_not_running(paths: Paths) -> None:
    if root_is_running(paths):
        raise RootAlreadyRunning(read_root_pid(paths), str(paths.socket_dir),
                                 stopping=trio.run(_is_stopping, paths))


async def _is_stopping(paths: Paths) -> bool:
    """Whether the running root says it is stopping (False when it does not answer soon)."""
    with trio.move_on_after(2.0):
        with contextlib.suppress(CellmeshError, OSError):
            reply = await control_call(paths, StatusRequest())
            return isinstance(reply, StatusReply) and reply.stopping
    return False


def up(
    *,
    file: Annotated[Path, cyclopts.Parameter(name=["--file", "-f"])] = Path("cellmesh.toml"),
    foreground: bool = False,
    metrics: str | None = None,
    ready_fd: Annotated[int | None, cyclopts.Parameter(show=False)] = None,
) -> int:
    """Start the root daemon for a manifest.

    Before any cell serves, every declared cell (on-demand ones too) must
    import its code: otherwise nothing starts and each failing cell is named
    by its manifest key.

    Parameters
    ----------
    file
        The manifest (default ./cellmesh.toml); see docs/manifest.md.
    foreground
        Run in this process until SIGTERM/SIGINT instead of in the background.
    metrics
        Serve Prometheus metrics at http://HOST:PORT/metrics from the root
        (e.g. 127.0.0.1:9464; port 0 picks a free one). See docs/root.md.
    """
    try:
        address = None if metrics is None else parse_address(metrics)
        manifest = load_manifest(file)
        manifest.check_paths()
        paths = Paths.from_env()
        _check_not_running(paths)
    except Exception as exc:
        if ready_fd is not None:  # the root `up` started: say why on the pipe it reads
            prefix = CONFIG_FAILURE if isinstance(exc, ConfigError) else "failed: "
            with contextlib.suppress(OSError):
                os.write(ready_fd, (prefix + str(exc)).encode())
        raise
    if foreground:
        return trio.run(_foreground, manifest, paths, ready_fd, address)
    return _background(file.resolve(), paths, metrics)


def _background(file: Path, paths: Paths, metrics: str | None) -> int:
    ensure_home(paths)  # as the root will: a CELL_HOME that cannot be is a ConfigError here
    log_path = paths.log_dir / "root.log"
    read_end, write_end = os.pipe()
    with open(log_path, "ab") as log:
        os.set_inheritable(write_end, True)
        child = subprocess.Popen(
            [sys.executable, "-m", "cellmesh", "up", "--foreground", "--file", str(file),
             "--ready-fd", str(write_end), *(["--metrics", metrics] if metrics else [])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=[write_end],
            start_new_session=True,
        )
    os.close(write_end)
    report = b""
    silent = False  # no report, and no sign of progress, within UP_PATIENCE: stuck
    deadline = time.monotonic() + UP_PATIENCE
    seen = _activity(paths.log_dir)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                report += (f"no report from the root, and no new output from it or its "
                           f"cells, for {UP_PATIENCE:g} s").encode()
                silent = True
                break
            if not select.select([read_end], [], [], min(left, 1.0))[0]:
                # A mesh of many cells starts them one after the other: while they
                # write (their events, their output), the start is progressing.
                if (now := _activity(paths.log_dir)) != seen:
                    seen = now
                    deadline = time.monotonic() + UP_PATIENCE
                continue
            chunk = os.read(read_end, 4096)
            if not chunk:
                break
            report += chunk
    except KeyboardInterrupt:
        return _abort_start(child, paths)
    finally:
        os.close(read_end)
    text = report.decode("utf-8", "replace").strip()
    if text.startswith("up"):
        print(f"cellmesh: root {text} (log: {log_path})")
        return 0
    if silent:
        with contextlib.suppress(ProcessLookupError):
            child.terminate()  # its graceful stop: it abandons the start
    # A root reports a failed start once it has cleaned up, and then exits: wait
    # for that (killing it now would leave its cells' sandboxes and no last words).
    _reap(child, paths)
    config = text.startswith(CONFIG_FAILURE)
    text = text.removeprefix(CONFIG_FAILURE).removeprefix("failed: ")
    print(f"cellmesh: error: the mesh did not start: {text or 'the root exited silently'}",
          file=sys.stderr)
    print(f"cellmesh: the root's log: {log_path}", file=sys.stderr)
    return 2 if config else 1


def _activity(log_dir: Path) -> tuple[int, int]:
    """A summary of the root's and its cells' output so far: the number of files in
    ``log_dir`` and their newest modification time (ns); it changes as they write."""
    count, newest = 0, 0
    with contextlib.suppress(OSError):
        with os.scandir(log_dir) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime_ns)
                    count += 1
    return count, newest


def _reap(child: subprocess.Popen[bytes], paths: Paths) -> bool:
    """Wait until ``child``, a root that stops, has exited: it destroys its cells'
    sandboxes and writes its last words first. After :data:`ABORT_PATIENCE`
    seconds, or on Ctrl-C, SIGKILL it and remove what its cells left.

    True when it exited by itself.
    """
    try:
        child.wait(ABORT_PATIENCE)
        return True
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        child.kill()
        child.wait()
        _sweep_after_kill(paths)
        return False


def _abort_start(child: subprocess.Popen[bytes], paths: Paths) -> int:
    """Ctrl-C while ``up`` waited: stop the root it was starting (SIGTERM, its
    graceful stop; SIGKILL after :data:`ABORT_PATIENCE` or a second Ctrl-C)."""
    print(f"\ncellmesh: interrupted: stopping the root it was starting (pid {child.pid})",
          file=sys.stderr, flush=True)
    with contextlib.suppress(ProcessLookupError):
        child.terminate()
    _reap(child, paths)
    print("cellmesh: the mesh was not started (`cellmesh status` shows no root)", file=sys.stderr)
    return 130


#: Seconds ``up`` gives the root it started to stop -- interrupted, or after the root
#: reported a failed start -- before killing it.
ABORT_PATIENCE: Final = 30.0
#: How the root reports a start that failed on bad configuration (``up`` exits 2).
CONFIG_FAILURE: Final = "failed (configuration): "
#: Output lines of a failed cell shown by a failed ``up``.
TAIL_LINES: Final = 6
#: At most this many failed cells get their output shown.
TAIL_CELLS: Final = 3


def start_failure(exc: BaseException, paths: Paths, since: float | None = None) -> str:
    """Why the mesh did not start, with the last output lines of the cells at fault.

    ``since`` (Unix time): show only lines written from then on, so a log left by
    an earlier mesh in the same home is not taken for this start's output.
    The ``Cancelled`` of the tasks the failure ended are left out.
    """
    exc = innermost(without_cancelled(exc) or exc)
    if isinstance(exc, CellsCannotStart):
        text, cells = str(exc), exc.cells
    elif isinstance(exc, SupervisorEscalation) and exc.reason == FAILED_TO_START:
        text, cells = exc.detail or str(exc), [exc.child_id]
    else:
        text, cells = str(exc), []
    for name in cells[:TAIL_CELLS]:
        try:
            records = read_log(paths.log_dir, name).records
        except (OSError, ConfigError):
            continue
        lines = [
            r.text for r in records
            if r.event is None and (since is None or (r.ts is not None and r.ts >= since))
        ][-TAIL_LINES:]
        if lines:
            text += f"\n  the last lines of `cellmesh logs {name}`:"
            text += "".join(f"\n    {clean(line, 300)}" for line in lines)
    return text


async def _foreground(
    manifest: Any, paths: Paths, ready_fd: int | None, metrics: tuple[str, int] | None
) -> int:
    """Run the root in this process until it stops; the exit status.

    0 after a stop asked for once the mesh was up (``down``, a signal); 1 when
    the mesh did not start (2 for configuration found bad only then); 128 + the
    signal's number (SIGINT 130, SIGTERM 143, SIGHUP 129) when a signal made
    it abandon its start. With ``ready_fd`` (``up`` in the background) it
    reports "up ..." or why it did not start on that pipe -- a failure only
    once the root has cleaned up (its cells' sandboxes destroyed, its last
    words written): ``up`` waits for this process to exit after that.
    """
    from ..actors.root import Root, serve_root

    say = StderrLog()  # root.log: a full disk loses these lines, not the exit status

    def report(text: str) -> None:
        nonlocal ready_fd
        if ready_fd is not None:
            try:
                os.write(ready_fd, text.encode())
                os.close(ready_fd)
            except OSError:
                pass
            ready_fd = None

    code = 0
    abandoned: list[signal.Signals] = []  # the signal that made it abandon its start
    started = time.time() - 1.0  # (log stamps are the cells' clocks: a second of slack)
    with (
        owners_stop_reason() as stop_reason,
        trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals,
    ):
        try:
            async with open_service_nursery() as nursery:

                async def run_root(task_status: trio.TaskStatus[Root]) -> None:
                    try:
                        await serve_root(manifest, paths=paths, metrics=metrics,
                                         task_status=task_status)
                    finally:
                        nursery.cancel_scope.cancel()

                started_root: list[Root] = []

                async def on_signals() -> None:
                    asked = 0
                    async for signum in signals:
                        asked += 1
                        sig = signal.Signals(signum)
                        if not started_root:  # still starting: abandon the start
                            if not abandoned:  # (the root cleans up whatever comes next)
                                say(f"cellmesh: root: {sig.name} before the mesh was up: "
                                    "stopping")
                                abandoned.append(sig)
                                stop_reason.text = f"{sig.name} before the mesh was up"
                                nursery.cancel_scope.cancel()
                            continue
                        say(f"cellmesh: root: {sig.name}: stopping"
                            + (" (forced)" if asked > 1 else ""))
                        started_root[0].request_stop(10.0 if asked == 1 else 0.0)

                nursery.start_soon(on_signals)
                root: Root = await nursery.start(run_root)
                if not abandoned:  # (else the stop is under way: its start does not count)
                    started_root.append(root)
                    text = (f"up (pid {os.getpid()}): {slots_text(root.slots.values())}, "
                            f"sandbox {root.backend.name}, control {paths.umbilical}")
                    if root.metrics_address is not None:
                        host, port = root.metrics_address
                        host = f"[{host}]" if ":" in host else host
                        text += f", metrics http://{host}:{port}/metrics"
                    say(f"cellmesh: root {text}")
                    report(text)
        except BaseException as exc:
            failure = without_cancelled(exc)  # (the Cancelled of the tasks it ended)
            if not isinstance(failure, Exception):
                raise  # a cancellation or an interrupt, not a failure: as it is
            # The root has cleaned up (serve_root returned): the log line first, so
            # root.log holds the cause by the time `up` prints it.
            cause = innermost(failure)
            say(f"cellmesh: root: {cause}")
            config = isinstance(cause, ConfigError)  # (a symlink in a cell's code, ...)
            prefix = CONFIG_FAILURE if config else "failed: "
            report(prefix + start_failure(failure, paths, since=started))
            code = 2 if config else 1
    if abandoned and code == 0:
        # Only now: the root has destroyed its cells' sandboxes and written its last words.
        report(f"failed: stopped by {abandoned[0].name} before the mesh was up")
        code = 128 + abandoned[0].value
    say("cellmesh: root: stopped")
    return code


def down(*, timeout: float = 10.0) -> int:
    """Stop the mesh: every cell in reverse start order, then the root.

    Parameters
    ----------
    timeout
        Seconds in which no cell stops before what is left is killed (a mesh of
        many cells may take longer in all: each cell that stops restarts it).
    """
    timeout = check_seconds("--timeout", timeout)
    paths = Paths.from_env()
    pid = read_root_pid(paths)
    if not root_is_running(paths):
        print("cellmesh: no root is running")
        words = last_words_of(paths)
        if words:
            print(f"cellmesh: {words}")
        return 0
    hung = trio.run(_ask_to_stop, paths, timeout)
    forced = False
    if hung is not None:
        if pid is None:
            raise hung
        if is_stopped(pid):  # (SIGSTOP: a SIGTERM would wait for a SIGCONT)
            print(f"cellmesh: {hung}; it is stopped: killing it", file=sys.stderr)
            forced = True
        else:  # busy (its control socket full, say): SIGTERM stops it as `down` would
            print(f"cellmesh: {hung}: stopping it with SIGTERM", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    if pid is not None and not forced and not _wait_stopping(pid, timeout + 10.0):
        print(f"cellmesh: the root (pid {pid}) stopped no cell for {timeout + 10.0:g} s: "
              "killing it", file=sys.stderr)
        forced = True
    if pid is not None and forced:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # its cells die with it (parent-death signal)
        _wait_exit(pid, 10.0)
    print(f"cellmesh: root {'killed' if forced else 'stopped'}"
          + (f" (pid {pid})" if pid is not None else ""))
    if forced:  # it could not remove its cells' cgroup leaves and runtime dirs
        _sweep_after_kill(paths)
    return 0


def _sweep_after_kill(paths: Paths) -> None:
    """Remove what the killed root's cells left on the host (under its lock, so
    never while a new root of this socket dir runs)."""
    try:
        lock = RootLock.acquire(paths)
    except (RootAlreadyRunning, OSError):
        return  # a new root already owns it: it sweeps as it starts
    try:
        removed = sweep_leftovers(paths, CgroupHost.detect(os.environ))
        removed += sweep_run_dirs(paths.socket_dir)
    except (SandboxError, ConfigError, OSError) as exc:
        print(f"cellmesh: could not remove what its cells left: {exc}", file=sys.stderr)
        return
    finally:
        lock.release()
    if removed:
        print(f"cellmesh: removed {len(removed)} cgroup leaves, runtime dirs and per-cell "
              "socket dir entries its cells left")


async def _ask_to_stop(paths: Paths, timeout: float) -> RootUnreachable | None:
    """Send ``StopMesh``; the error when the root runs but does not take it (it
    hangs: stopped, or stuck), None once asked (or once it is gone).

    A root that stays stopped (SIGSTOP, state ``T``) for ``timeout`` s is given up
    on then: it cannot answer before a SIGCONT (it waited ``timeout`` + 10 s)."""
    pid = read_root_pid(paths)
    outcome: list[RootUnreachable | None] = []

    async def ask(cancel: trio.CancelScope) -> None:
        try:
            with trio.fail_after(timeout + 10.0):
                await control_call(paths, StopMesh(timeout=timeout))
        except RootUnreachable as exc:
            outcome.append(exc)
        except RootNotRunning:
            outcome.append(None)  # it went away meanwhile: nothing left to stop
        except trio.TooSlowError:
            outcome.append(RootUnreachable(
                str(paths.umbilical), pid, f"no answer to the stop request within "
                f"{timeout + 10.0:g} s"))
        else:
            outcome.append(None)
        cancel.cancel()

    async def watch_stopped(cancel: trio.CancelScope) -> None:
        assert pid is not None
        since: float | None = None
        while True:
            await trio.sleep(_STOPPED_POLL)
            if not is_stopped(pid):
                since = None
            elif since is None:
                since = trio.current_time()
            elif trio.current_time() - since >= timeout:
                outcome.append(RootUnreachable(
                    str(paths.umbilical), pid, f"no answer to the stop request: the process "
                    f"has been stopped (SIGSTOP) for {timeout:g} s"))
                cancel.cancel()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, nursery.cancel_scope)
        if pid is not None:
            nursery.start_soon(watch_stopped, nursery.cancel_scope)
    return outcome[0] if outcome else None


#: How often ``down`` looks whether the root it waits for is stopped (SIGSTOP).
_STOPPED_POLL: Final = 0.1


def _wait_stopping(pid: int, timeout: float, *, poll: float = 0.25) -> bool:
    """Wait until the root ``pid`` has exited, as long as its process tree keeps
    shrinking (its cells exit one after the other); False once it has not for
    ``timeout`` seconds (the tree is read every ``poll`` s)."""
    stall = Stall(timeout, len(tree(pid, scan())), time.monotonic())
    while not _wait_exit(pid, min(poll, timeout)):
        now = len(tree(pid, scan()))
        if not now:
            return True  # gone meanwhile
        if stall.stuck(now, time.monotonic()):
            return False
    return True


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait (on a pidfd) until ``pid`` has exited; False after ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def kill(name: str, /) -> int:
    """SIGKILL a cell's process (to exercise restarts); its supervisor reacts.

    Parameters
    ----------
    name
        The cell to kill; one replica of a replicated cell as NAME/ID (ledger/1).
    """
    check_target(name)
    reply = trio.run(control_call, Paths.from_env(), KillCell(name=name))
    if not isinstance(reply, Ack):
        raise ConfigError("kill", f"unexpected reply {reply!r}")
    print(f"cellmesh: {reply.text}")
    return 0


def register(app: cyclopts.App) -> None:
    """Add ``up``, ``down`` and ``kill`` to ``app``."""
    app.command(up)
    app.command(down)
    app.command(kill)


__all__ = ["register"]
