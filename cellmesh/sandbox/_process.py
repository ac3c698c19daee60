"""ProcessBackend: the lifecycle shared by the backends that start real processes.

The host and bwrap backends differ only in how a :class:`CellSpec` becomes a
command line, an environment and a set of passed fds (:meth:`_command`); the
rest -- tracking, cgroup leaves, log capture, secret resolution and revocation,
exit classification, lifecycle events, teardown -- lives here once.

Ordering duties: secrets are resolved *before* the fork and the parent's
memfd copies are closed right after it; the ``exited`` event is written once,
by whichever of ``wait``/``destroy`` reaps the process first; ``destroy``
kills, reaps, *then* removes cgroup leaves (a leaf with live members cannot
be removed) and revokes secrets last-but-never-skipped (in a ``finally``).
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Final

import attrs
import trio

from ..config import Paths, check_cell_name
from ._backend import CellHandle, SpawnedCell, TeardownReport
from ._events import EventSink
from ._limits import (
    ARENA_ENV,
    CgroupHost,
    CgroupLeaves,
    LimitPlan,
    plan_limits,
    sweep_stale_leaves,
)
from ._secrets import Secret, SecretBroker
from ._spawn import FIRST_PASSED_FD, Workload, spawn_isolated_workload
from ._spec import CellSpec, WorkloadEnv
from ._status import ExitStatus, LimitEvidence, classify_exit
from .errors import (
    CellRunning,
    DuplicateCell,
    SandboxConfigError,
    SandboxError,
    SpawnError,
    UnknownCell,
)

_KILL_PATIENCE: Final = 10.0


@attrs.frozen(kw_only=True)
class Command:
    """What a backend runs for one spawn: argv, exact env, fds (caller's first).

    ``owned_fds`` were opened by the backend for this spawn only (e.g. a
    seccomp program); they are closed right after the fork.
    ``pinned_sources`` maps a private bind's source to the (device, inode) it
    must still be when the child mounts it (opened there with ``O_NOFOLLOW``).
    """

    argv: tuple[str, ...]
    env: WorkloadEnv
    pass_fds: tuple[int, ...]
    signal_as_code_offset: bool = False
    owned_fds: tuple[int, ...] = ()
    pinned_sources: Mapping[Path, tuple[int, int]] = attrs.field(factory=dict)
    private_binds: tuple[tuple[Path, Path], ...] = ()
    run_as: int | None = None


@attrs.define(eq=False)
class CellRecord:
    spec: CellSpec
    handle: CellHandle
    plan: LimitPlan
    leaves: CgroupLeaves
    runtime_dir: Path
    workload: Workload | None = None
    stopped_by_us: bool = False
    killed_as_crash: bool = False
    crash_detail: str = ""
    status: ExitStatus | None = None
    reported: bool = False
    signal_offset: bool = False


def secret_memfd(secret: Secret) -> int:
    """Write ``secret`` into a sealed-size memfd positioned at 0 (anonymous memory only)."""
    fd = os.memfd_create(f"secret-{secret.ref.name}", os.MFD_CLOEXEC)
    try:
        view = memoryview(secret.value)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def sweep_leftovers(paths: Paths, cgroups: CgroupHost, keep: Sequence[Path] = ()) -> list[str]:
    """Kill and remove the host-wide traces that cells of ``paths``'s socket dir
    left when their root died outright: cgroup leaves (and any process still in
    them) and runtime dirs under the temp dir, both named with
    :attr:`Paths.owner_tag`, except those in ``keep``. Call it only while
    holding that socket dir's root lock (no root of it runs, so none of these is
    live). Returns the paths removed."""
    owner = paths.owner_tag
    kept = set(keep)
    removed = sweep_stale_leaves(cgroups, kept, owner=owner)
    try:
        entries = list(Path(tempfile.gettempdir()).iterdir())
    except OSError:
        return removed
    uid = os.geteuid()
    for path in entries:
        if not path.name.startswith(f"cellmesh-{owner}-") or path in kept:
            continue
        try:
            st = path.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            continue  # a symlink or another user's: not ours to remove
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed


@attrs.define(eq=False)
class ProcessBackend(abc.ABC):
    """Shared lifecycle of the host and bwrap backends (subclasses give :meth:`_command`)."""

    paths: Paths
    events: EventSink
    broker: SecretBroker
    cgroups: CgroupHost
    _cells: dict[str, CellRecord] = attrs.field(factory=dict, init=False)
    #: Whether the backend can confine a cell to its ``net_grants`` (own netns).
    enforces_net_grants: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The backend's name."""

    # ----------------------------------------------------------------- hooks

    @abc.abstractmethod
    def _command(
        self,
        rec: CellRecord,
        pass_fds: Sequence[int],
        secrets: Sequence[Secret],
        secret_fds: Sequence[int],
    ) -> Command:
        """How to start ``rec``'s process (the backend's isolation goes here)."""

    # -------------------------------------------------------------- contract

    def create(self, spec: CellSpec) -> CellHandle:
        """Register ``spec`` (see :mod:`cellmesh.sandbox._backend` for the contract)."""
        if not spec.cell_id:
            raise SandboxConfigError("cell id", "is empty")
        check_cell_name(spec.cell_id, source="cell id")
        check_cell_name(spec.name, source="cell name")
        check_cell_name(spec.log_name, source="log name")
        if spec.cell_id in self._cells:
            raise DuplicateCell(spec.cell_id)
        if not spec.argv or not spec.argv[0]:
            raise SandboxConfigError("argv", "is empty: there is nothing to run")
        if spec.net_grants and not self.enforces_net_grants:
            raise SandboxConfigError(
                "net_grants",
                f"the {self.name} backend has no network namespace and cannot limit a cell to "
                "granted destinations; use the bwrap backend, or allow_net for the whole network",
            )
        for sock in (spec.own_socket, *spec.granted_sockets):
            if sock is not None and not _is_socket(sock):
                raise SandboxConfigError("cell spec", f"{sock} is not a socket file")
        if spec.dna_dir is not None and not spec.dna_dir.is_dir():
            raise SandboxConfigError("dna_dir", f"{spec.dna_dir} is not a directory")
        if spec.data_dir is not None and spec.data_dir.exists() and not spec.data_dir.is_dir():
            raise SandboxConfigError("data_dir", f"{spec.data_dir} is not a directory")
        plan = plan_limits(spec.limits, self.cgroups)
        owner = self.paths.owner_tag
        leaves = CgroupLeaves.create(spec.name, self.cgroups, plan, owner)
        try:
            runtime_dir = Path(tempfile.mkdtemp(prefix=f"cellmesh-{owner}-{spec.cell_id}-"))
        except OSError as exc:
            leaves.remove()
            raise SandboxError(f"could not make a runtime dir: {exc}") from exc
        handle = CellHandle(
            cell_id=spec.cell_id,
            name=spec.name,
            backend=self.name,
            cgroup_paths=tuple(leaves.paths),
            runtime_dir=runtime_dir,
            limits=plan.to_json(),
        )
        self._cells[spec.cell_id] = CellRecord(spec, handle, plan, leaves, runtime_dir)
        return handle

    def tracked(self) -> Mapping[str, CellHandle]:
        """Live cells: id -> handle (a snapshot)."""
        return {cid: rec.handle for cid, rec in self._cells.items()}

    def sweep_stale(self) -> list[str]:
        """Kill and remove what an earlier backend of the same socket dir left behind
        (see the contract and :func:`sweep_leftovers`), keeping the traces of the
        cells this backend tracks."""
        return sweep_leftovers(
            self.paths, self.cgroups,
            keep=[path for rec in self._cells.values() for path in rec.leaves.paths]
            + [rec.runtime_dir for rec in self._cells.values()],
        )

    def spawn(
        self,
        cell_id: str,
        *,
        pass_fds: Sequence[int] = (),
        stdout: int | None = None,
        stderr: int | None = None,
        keep_stdin: bool = False,
    ) -> SpawnedCell:
        """Start the cell's process (see the contract); output defaults to its log file."""
        rec = self._get(cell_id)
        if rec.workload is not None and rec.workload.poll() is None:
            raise CellRunning(cell_id, rec.workload.pid)
        self._reap_report(rec)
        if rec.workload is not None:
            rec.workload.close()
        spec = rec.spec
        # Each process gets freshly resolved secrets; what the previous one
        # was given is revoked (zeroed) first, so rows never pile up.
        self.broker.revoke_for_cell(spec.cell_id)
        secrets = [self.broker.resolve(spec.cell_id, ref) for ref in spec.secrets]
        secret_fds: list[int] = []
        log_fd: int | None = None
        cmd: Command | None = None
        try:
            secret_fds = [secret_memfd(s) for s in secrets if s.ref.deliver == "file"]
            cmd = self._command(rec, pass_fds, secrets, secret_fds)
            if rec.plan.mechanisms.get("memory") == "rlimit" and ARENA_ENV[0] not in dict(
                spec.env.items
            ):
                cmd = attrs.evolve(cmd, env=cmd.env.with_var(*ARENA_ENV))
            if stdout is None:
                log_path = self.paths.log_dir / f"{spec.log_name}.log"
                try:
                    self.paths.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                    log_fd = os.open(
                        log_path,
                        os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                        0o600,
                    )
                except OSError as exc:
                    raise SpawnError(
                        spec.argv[0], f"cannot open the log {log_path}: {exc}"
                    ) from exc
            workload = spawn_isolated_workload(
                cmd.argv,
                cmd.env,
                pass_fds=cmd.pass_fds,
                stdout=stdout if stdout is not None else log_fd,
                stderr=stderr if stderr is not None else (stdout if stdout is not None else log_fd),
                keep_stdin=keep_stdin,
                rlimits=rec.plan.rlimits,
                cgroup_procs=rec.leaves.procs_files,
                cwd=rec.runtime_dir,
                private_binds=cmd.private_binds,
                pinned=cmd.pinned_sources,
                run_as=cmd.run_as,
            )
        finally:
            for fd in (*secret_fds, *(cmd.owned_fds if cmd is not None else ())):
                os.close(fd)
            if log_fd is not None:
                os.close(log_fd)
        rec.workload = workload
        rec.stopped_by_us = False
        rec.killed_as_crash = False
        rec.status = None
        rec.reported = False
        rec.signal_offset = cmd.signal_as_code_offset
        self.events.emit(
            spec.log_name,
            "started",
            {
                "cell_id": spec.cell_id,
                "backend": self.name,
                "pid": workload.pid,
                "argv": list(spec.argv),
                "limits": rec.plan.to_json(),
                "allow_net": spec.allow_net,
                "net_grants": [str(g) for g in spec.net_grants],
            },
        )
        return SpawnedCell(
            cell_id=cell_id, pid=workload.pid, pidfd=workload.pidfd, stdin=workload.stdin
        )

    def wait(self, cell_id: str, timeout: float | None = None) -> ExitStatus:
        """Block until the cell's process exits; the classified status."""
        rec = self._get(cell_id)
        if rec.workload is None:
            raise SandboxError(f"cell {cell_id!r} has not been spawned")
        try:
            rec.workload.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"cell {cell_id!r} still running after {timeout}s") from exc
        status = self._reap_report(rec)
        assert status is not None
        return status

    async def wait_async(self, cell_id: str) -> ExitStatus:
        """Wait from Trio (sleeps on the pidfd), then classify and report."""
        rec = self._get(cell_id)
        if rec.workload is None:
            raise SandboxError(f"cell {cell_id!r} has not been spawned")
        await rec.workload.wait_async()
        status = self._reap_report(rec)
        assert status is not None
        return status

    def destroy(self, cell_id: str, *, grace: float = 5.0) -> TeardownReport:
        """Stop, reap, revoke, and remove every host-side trace of ``cell_id``.

        Blocks up to ``grace`` seconds while the cell handles SIGTERM; from
        Trio use :meth:`destroy_async`, which waits without blocking.
        """
        rec = self._get(cell_id)
        clean = True
        try:
            wl = rec.workload
            if wl is not None and wl.poll() is None:
                rec.stopped_by_us = True
                self._terminate(wl)
                try:
                    wl.wait(grace)
                except subprocess.TimeoutExpired:
                    clean = False
                    self._kill(rec, wl)
                    try:
                        wl.wait(_KILL_PATIENCE)
                    except subprocess.TimeoutExpired as exc:
                        raise SandboxError(f"pid {wl.pid} survived SIGKILL") from exc
        except BaseException:
            self._teardown(rec, clean=False)
            raise
        return self._teardown(rec, clean=clean)

    async def destroy_async(self, cell_id: str, *, grace: float = 5.0) -> TeardownReport:
        """:meth:`destroy` for Trio: SIGTERM, sleep on the pidfd up to ``grace``, then kill.

        If cancelled while waiting, the cell is killed and torn down before the
        cancellation propagates (teardown never leaves a half-tracked cell).
        """
        rec = self._get(cell_id)
        wl = rec.workload
        try:
            clean = await self._stop_async(rec, grace)
        except BaseException:
            if wl is not None and wl.poll() is None:
                self._kill(rec, wl)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    wl.wait(_KILL_PATIENCE)
            self._teardown(rec, clean=False)
            raise
        return self._teardown(rec, clean=clean)

    async def _stop_async(self, rec: CellRecord, grace: float) -> bool:
        """Stop the running process, if any; True when SIGTERM sufficed."""
        wl = rec.workload
        if wl is None or wl.poll() is not None:
            return True
        rec.stopped_by_us = True
        self._terminate(wl)
        with trio.move_on_after(grace):
            await wl.wait_async()
        if wl.poll() is not None:
            return True
        self._kill(rec, wl)
        with trio.move_on_after(_KILL_PATIENCE):
            await wl.wait_async()
        if wl.poll() is None:
            raise SandboxError(f"pid {wl.pid} survived SIGKILL")
        return False

    def _teardown(self, rec: CellRecord, *, clean: bool) -> TeardownReport:
        """Reap, remove host-side traces, revoke secrets, untrack; emit ``destroyed``."""
        cell_id = rec.spec.cell_id
        revoked = 0
        removed: list[str] = []
        try:
            self._reap_report(rec)
            rec.leaves.kill_all()
            removed += rec.leaves.remove()
            if rec.runtime_dir.exists():
                shutil.rmtree(rec.runtime_dir, ignore_errors=True)
                removed.append(str(rec.runtime_dir))
            sock = rec.spec.own_socket
            shared = any(
                r.spec.own_socket == sock for cid, r in self._cells.items() if cid != cell_id
            )
            if sock is not None and not shared and _is_socket(sock):
                sock.unlink()
                removed.append(str(sock))
        finally:
            revoked = self.broker.revoke_for_cell(cell_id)
            if rec.workload is not None:
                rec.workload.close()
            self._cells.pop(cell_id, None)
        self.events.emit(
            rec.spec.log_name,
            "destroyed",
            {
                "cell_id": cell_id,
                "backend": self.name,
                "clean": clean,
                "removed": removed,
                "secrets_revoked": revoked,
            },
        )
        return TeardownReport(
            cell_id=cell_id,
            clean=clean,
            exit=rec.status,
            removed=tuple(removed),
            secrets_revoked=revoked,
            tracked_after=len(self._cells),
        )

    # ------------------------------------------------------------- internals

    def terminate(self, cell_id: str) -> None:
        """Ask the running process to stop (SIGTERM to the workload); no-op when it is not running.

        Never blocks; the exit (seen by :meth:`wait_async`) is classified ``stop``.
        """
        rec = self._get(cell_id)
        wl = rec.workload
        if wl is not None and wl.poll() is None:
            rec.stopped_by_us = True
            self._terminate(wl)

    def kill(self, cell_id: str, *, as_crash: bool = False, why: str = "killed on request") -> None:
        """SIGKILL the running process and everything it started; no-op when it is not running.

        The exit is classified ``stop``, or ``crash`` with ``as_crash`` (an
        operator's ``cellmesh kill``, which exists to exercise restarts, or a
        link firing), its detail ``why``.
        Never blocks for long: the kill is sent, the reaping is :meth:`wait_async`'s.
        """
        rec = self._get(cell_id)
        wl = rec.workload
        if wl is not None and wl.poll() is None:
            if as_crash:
                rec.killed_as_crash = True
                rec.crash_detail = why
            else:
                rec.stopped_by_us = True
            self._kill_nowait(rec, wl)

    def process_id(self, cell_id: str) -> int | None:
        """The pid of the cell's running process (bwrap's, for the bwrap backend), or None."""
        wl = self._get(cell_id).workload
        return wl.pid if wl is not None and wl.poll() is None else None

    def _get(self, cell_id: str) -> CellRecord:
        rec = self._cells.get(cell_id)
        if rec is None:
            raise UnknownCell(cell_id)
        return rec

    def _terminate(self, wl: Workload) -> None:
        """Ask politely: SIGTERM to the workload's process group."""
        wl.signal_group(signal.SIGTERM)

    def _kill(self, rec: CellRecord, wl: Workload) -> None:
        wl.signal_group(signal.SIGKILL)
        wl.send_signal(signal.SIGKILL)
        rec.leaves.kill_all()

    def _kill_nowait(self, rec: CellRecord, wl: Workload) -> None:
        """:meth:`_kill` without waiting for the process to go (the pidfd says when)."""
        self._kill(rec, wl)

    def _reap_report(self, rec: CellRecord) -> ExitStatus | None:
        wl = rec.workload
        if wl is None or rec.reported:
            return rec.status
        raw = wl.poll()
        if raw is None:
            return None
        mechs = rec.plan.mechanisms
        evidence = LimitEvidence(
            oom_killed=rec.leaves.oom_kills() > 0,
            memory_rlimit=mechs.get("memory") == "rlimit",
        )
        status = classify_exit(
            raw,
            stopped_by_us=rec.stopped_by_us,
            evidence=evidence,
            signal_as_code_offset=rec.signal_offset,
        )
        if rec.killed_as_crash and status.reason != "stop":
            status = ExitStatus(
                code=status.code, signal=status.signal, reason="crash", detail=rec.crash_detail
            )
        rec.status = status
        rec.reported = True
        self.events.emit(
            rec.spec.log_name,
            "exited",
            {"cell_id": rec.spec.cell_id, "backend": self.name, "pid": wl.pid, **status.to_json()},
        )
        return status


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def runtime_env(
    rec_spec: CellSpec,
    *,
    n_fds: int,
    home: str,
    cwd: str,
    socket_dir: str,
    data_dir: str | None,
    dna_dir: str | None,
    path: str,
    secrets: Sequence[Secret],
    secret_files: Mapping[str, str],
) -> WorkloadEnv:
    """The declared env plus the documented runtime variables (runtime wins).

    ``CELL_NAME``, ``HOME``/``TMPDIR``, ``PWD`` (the working directory, which
    bwrap would set anyway), ``PATH`` (unless declared),
    ``CELL_SOCKET_DIR``, ``CELL_LISTEN_FDS`` (count of fds from 3), and when
    present ``CELL_DATA_DIR``, ``CELL_DNA_DIR``, env-delivered secrets by
    name and ``CELL_SECRET_FILE_<NAME>`` for file-delivered ones. A cell
    limited to less than one CPU gets ``CELL_SPIN_US=0`` unless its env
    declares it: polling before sleeping would spend the quota it is
    throttled on.
    """
    extra: dict[str, str] = {
        "CELL_NAME": rec_spec.name,
        "HOME": home,
        "TMPDIR": home,
        "PWD": cwd,
        "CELL_SOCKET_DIR": socket_dir,
    }
    declared = dict(rec_spec.env.items)
    if "PATH" not in declared:
        extra["PATH"] = path
    cpu = rec_spec.limits.cpu
    if cpu is not None and cpu < 1 and "CELL_SPIN_US" not in declared:
        extra["CELL_SPIN_US"] = "0"
    if n_fds:
        extra["CELL_LISTEN_FDS"] = str(n_fds)
        extra["CELL_LISTEN_FDS_START"] = str(FIRST_PASSED_FD)
    if data_dir is not None:
        extra["CELL_DATA_DIR"] = data_dir
    if dna_dir is not None:
        extra["CELL_DNA_DIR"] = dna_dir
    for secret in secrets:
        if secret.ref.deliver == "env":
            extra[secret.ref.name] = secret.value.decode("utf-8", "surrogateescape")
    for name, fpath in secret_files.items():
        extra[f"CELL_SECRET_FILE_{name}"] = fpath
    return rec_spec.env.merged(extra)


def process_state(pid: int) -> str:
    """The one-letter state of ``pid`` from /proc (``R``, ``S``, ``T``, ``Z`` ...; "" if
    it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def wait_gone(pid: int, timeout: float) -> bool:
    """Poll (bounded) until ``pid`` no longer exists or is a zombie; True if gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_state(pid) in ("", "Z", "X"):
            return True
        time.sleep(0.005)
    return False


__all__ = ["Command", "ProcessBackend", "runtime_env", "secret_memfd", "wait_gone"]
