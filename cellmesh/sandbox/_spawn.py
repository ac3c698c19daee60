"""spawn_isolated_workload: the only sanctioned way to start a cell's OS process.

Theory of operation. A child is forked by :class:`subprocess.Popen` with:

1. **No ambient environment**: ``env`` is exactly the :class:`WorkloadEnv`
   given; nothing is inherited from the caller.
2. **Stdio replaced**: stdin is a fresh pipe (its write end is closed at once
   unless the caller asks to keep it, so the child reads EOF), stdout/stderr
   go to the caller's log capture fds (``/dev/null`` if none).
3. **Every fd above 2 closed at exec** except the ``pass_fds``, which appear in
   the child at the *stable* numbers 3, 4, ... in the order given.
4. A new session (no controlling terminal, its own process group), resource
   rlimits, cgroup membership and a parent-death signal are applied in the
   child between fork and exec, so no descendant ever runs outside them.

The pre-exec hook runs in the forked child and uses only async-signal-safe
calls (``dup2``, ``fcntl``, ``setrlimit``, ``open``/``write``, ``prctl``): no
locks, no allocation-heavy Python. Remapping fds safely: Popen's own error
pipe must not be overwritten; the caller-side "placeholders" keep every target
number occupied while Popen runs, and the hook refuses (and Popen reports) if
a target still turns out to be the error pipe, in which case the spawn is
retried once.

``die_with_parent`` uses ``PR_SET_PDEATHSIG``, which fires when the *thread*
that forked the child exits: call :func:`spawn_isolated_workload` from a
long-lived thread (the Trio thread itself, or a dedicated thread that lives as
long as the cells), never from a short-lived worker thread such as those of
``trio.to_thread``. The call returns once the child has exec'd: about 2 ms,
plus the pre-exec work (a cgroup v1 join waits for an RCU grace period, some
10-20 ms); the :class:`Workload` it returns is then waited on without
blocking (:meth:`Workload.wait_async`, a pidfd).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import resource
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs
import trio

from ._spec import WorkloadEnv
from .errors import SandboxConfigError, SpawnError

#: The first fd number passed fds get in the child (systemd's SD_LISTEN_FDS_START).
FIRST_PASSED_FD: Final = 3

_PR_SET_PDEATHSIG: Final = 1
_CLONE_NEWNS: Final = 0x00020000
_MS_BIND: Final = 4096
_MS_REC: Final = 16384
_MS_PRIVATE: Final = 1 << 18
#: libc, loaded once: ``prctl`` is called from the pre-exec hook.
_LIBC: Final = ctypes.CDLL(None, use_errno=True)


class _FdCollision(Exception):
    """Raised inside the pre-exec hook; never escapes spawn_isolated_workload."""


@attrs.define(eq=False)
class Workload:
    """A running (or finished) workload process started by spawn_isolated_workload.

    ``pid`` is the direct child; ``pidfd`` a Linux pidfd for it (readable when
    the process has exited: poll it from Trio with :meth:`wait_async`);
    ``stdin`` the write end of its stdin pipe if the caller kept it.
    """

    _popen: subprocess.Popen[bytes]
    pid: int
    pidfd: int | None
    stdin: int | None = None

    @property
    def returncode(self) -> int | None:
        """``Popen.returncode``: None while running, ``-signum`` if killed."""
        return self._popen.returncode

    def poll(self) -> int | None:
        """Reap without blocking; the raw return code, or None if still running."""
        return self._popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process exits (``subprocess.TimeoutExpired`` on timeout)."""
        return self._popen.wait(timeout)

    async def wait_async(self) -> int:
        """Wait from Trio without a thread: sleep on the pidfd, then reap."""
        if self.pidfd is not None and self._popen.returncode is None:
            await trio.lowlevel.wait_readable(self.pidfd)
        return self._popen.wait()

    def send_signal(self, signum: int) -> None:
        """Signal the process (via the pidfd, so a recycled pid is never hit)."""
        if self._popen.returncode is not None:
            return
        if self.pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signum)
        else:
            self._popen.send_signal(signum)

    def signal_group(self, signum: int) -> None:
        """Signal the workload's whole process group (it leads its own session)."""
        if self._popen.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def close(self) -> None:
        """Release the pidfd and the stdin pipe (the process is not touched)."""
        for fd in (self.pidfd, self.stdin):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.pidfd = None
        self.stdin = None


def _fd_is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return False
    return True


def _occupy(targets: Sequence[int]) -> list[int]:
    """Open /dev/null on every target number that is free; return what we opened."""
    opened: list[int] = []
    extras: list[int] = []
    try:
        for target in targets:
            while not _fd_is_open(target):
                fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                (opened if fd in targets else extras).append(fd)
                if fd > target:  # target was freed and reused concurrently: give up on it
                    break
    finally:
        for fd in extras:
            os.close(fd)
    return opened


def _make_preexec(
    fd_map: Sequence[tuple[int, int]],
    *,
    rlimits: Sequence[tuple[int, int]],
    cgroup_procs: Sequence[bytes],
    pdeathsig_parent: int | None,
    private_binds: Sequence[tuple[bytes, bytes, tuple[int, int] | None]],
    run_as: int | None,
) -> Callable[[], None]:
    prctl = _LIBC.prctl if pdeathsig_parent is not None else None
    unshare, mount = _LIBC.unshare, _LIBC.mount
    high = max([FIRST_PASSED_FD, *(s for s, _ in fd_map), *(t for _, t in fd_map)]) + 1

    def check(ret: int, what: str) -> None:
        if ret != 0:
            raise OSError(ctypes.get_errno(), what)

    def preexec() -> None:
        # Popen made every pass_fds target inheritable except its own error
        # pipe; a target still close-on-exec is that pipe: refuse, never clobber.
        for _src, target in fd_map:
            if fcntl.fcntl(target, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                raise _FdCollision(target)
        for path in cgroup_procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        if private_binds:
            # A private mount namespace for this child only: the binds never
            # reach the host's mount table and vanish with the process.
            check(unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
            check(mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
            for src, dst, pin in private_binds:
                if pin is None:
                    check(mount(src, dst, None, _MS_BIND | _MS_REC, None), "bind " + dst.decode())
                    continue
                # Pinned: never through a symlink, and only the inode checked.
                fd = os.open(src, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    st = os.fstat(fd)
                    if (st.st_dev, st.st_ino) != pin:
                        raise OSError(errno.ESTALE, "bind source changed: " + src.decode())
                    proc = b"/proc/self/fd/" + str(fd).encode()
                    check(mount(proc, dst, None, _MS_BIND | _MS_REC, None), "bind " + dst.decode())
                finally:
                    os.close(fd)
        # A limit above this process's hard limit is raised while we may (root,
        # before the uid drop): the soft limit stays, so the F_DUPFD below works.
        for res, value in rlimits:
            soft, hard = resource.getrlimit(res)
            if hard != resource.RLIM_INFINITY and value > hard:
                resource.setrlimit(res, (soft, value))
        if run_as is not None:
            os.setgroups([])
            os.setresgid(run_as, run_as, run_as)
            os.setresuid(run_as, run_as, run_as)
        if prctl is not None:  # after any uid change: a credential change clears it
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != pdeathsig_parent:
                os._exit(127)
        moved = [fcntl.fcntl(src, fcntl.F_DUPFD, high) for src, _ in fd_map]
        for tmp, (_src, target) in zip(moved, fd_map, strict=True):
            os.dup2(tmp, target, inheritable=True)
        # The high copies are closed by Popen's close_fds pass that follows.
        # Limits last: F_DUPFD above an RLIMIT_NOFILE lower than ``high`` fails
        # (a root with many open descriptors spawning a cell with a small
        # open_files limit); lowering a limit needs no privilege.
        for res, value in rlimits:
            resource.setrlimit(res, (value, value))

    return preexec


_RLIMIT_NAMES: Final = {
    resource.RLIMIT_NOFILE: "open_files", resource.RLIMIT_DATA: "memory",
    resource.RLIMIT_AS: "memory", resource.RLIMIT_FSIZE: "memory",
}


#: The capability that lets a process raise a hard limit (bit of ``CapEff``).
_CAP_SYS_RESOURCE: Final = 24


def may_raise_limits() -> bool:
    """Whether this process may raise a hard resource limit (``CAP_SYS_RESOURCE``: root
    usually has it; a container's root often does not)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def _check_raisable(rlimits: Sequence[tuple[int, int]]) -> None:
    """SandboxConfigError naming the limit when one is above this process's hard limit
    and it may not raise it: the child's setrlimit would fail without a word
    ("Exception occurred in preexec_fn")."""
    over = [(res, value, resource.getrlimit(res)[1]) for res, value in rlimits]
    over = [o for o in over if o[2] != resource.RLIM_INFINITY and o[1] > o[2]]
    if not over or may_raise_limits():
        return  # (raised in the child, before it drops to its uid)
    res, value, hard = over[0]
    raise SandboxConfigError(
        _RLIMIT_NAMES.get(res, f"rlimit {res}"),
        f"{value} is above this process's hard limit ({hard}), which it may not raise "
        "(no CAP_SYS_RESOURCE): lower the cell's limit or raise the root's (ulimit -H)",
    )


def spawn_isolated_workload(
    argv: Sequence[str],
    env: WorkloadEnv,
    *,
    pass_fds: Sequence[int] = (),
    stdout: int | None = None,
    stderr: int | None = None,
    keep_stdin: bool = False,
    rlimits: Mapping[int, int] | None = None,
    cgroup_procs: Sequence[Path] = (),
    die_with_parent: bool = True,
    cwd: Path | None = None,
    private_binds: Sequence[tuple[Path, Path]] = (),
    pinned: Mapping[Path, tuple[int, int]] | None = None,
    run_as: int | None = None,
) -> Workload:
    """Start ``argv`` with exactly ``env``, the fd hygiene above, and the given limits.

    ``pass_fds[i]`` is visible in the child as fd ``3 + i``; every other fd
    above 2 is closed at exec. ``stdout``/``stderr`` are fds of the caller's
    log capture (``stderr`` defaults to ``stdout``; both default to
    /dev/null). ``rlimits`` maps ``resource.RLIMIT_*`` to a value applied as
    both soft and hard limit. ``cgroup_procs`` are ``cgroup.procs`` files the
    child joins before exec. ``private_binds`` (root only) are bind mounts
    made in a private mount namespace of the child, so a ``run_as`` uid can
    reach paths whose ancestors it could not traverse; a source in ``pinned``
    is opened with ``O_NOFOLLOW`` there and bound only if it is still the
    (device, inode) given; ``run_as`` (root only)
    drops the child to that uid/gid with no supplementary groups before exec.
    Raises :class:`SandboxConfigError` for an empty
    argv or a bad fd, :class:`SpawnError` if the kernel refuses.
    """
    argv = list(argv)
    if not argv or not argv[0]:
        raise SandboxConfigError("argv", "is empty: there is nothing to run")
    if any("\0" in a for a in argv):
        raise SandboxConfigError("argv", "an argument contains NUL")
    for fd in pass_fds:
        if fd < 0 or not _fd_is_open(fd):
            raise SandboxConfigError("pass_fds", f"fd {fd} is not open")
    targets = [FIRST_PASSED_FD + i for i in range(len(pass_fds))]
    fd_map = list(zip(pass_fds, targets, strict=True))
    rl = sorted((rlimits or {}).items())
    _check_raisable(rl)
    procs = [os.fsencode(p) for p in cgroup_procs]
    pins = pinned or {}
    binds = [
        (os.fsencode(src), os.fsencode(dst), pins.get(src)) for src, dst in private_binds
    ]
    for attempt in (1, 2):
        preexec = _make_preexec(
            fd_map,
            rlimits=rl,
            cgroup_procs=procs,
            pdeathsig_parent=os.getpid() if die_with_parent else None,
            private_binds=binds,
            run_as=run_as,
        )
        placeholders = _occupy(targets)
        try:
            popen = subprocess.Popen(
                argv,
                env=env.as_dict(),
                stdin=subprocess.PIPE,
                stdout=stdout if stdout is not None else subprocess.DEVNULL,
                stderr=stderr
                if stderr is not None
                else (stdout if stdout is not None else subprocess.DEVNULL),
                pass_fds=targets,
                close_fds=True,
                start_new_session=True,
                preexec_fn=preexec,  # noqa: PLW1509 - async-signal-safe hook, see module doc
                cwd=cwd,
            )
        except subprocess.SubprocessError as exc:
            # Popen raises SubprocessError only when the pre-exec hook failed;
            # the likely cause is an fd collision (see module doc): retry once.
            if attempt == 1:
                continue
            raise SpawnError(argv[0], f"pre-exec setup failed: {exc}") from exc
        except OSError as exc:
            raise SpawnError(argv[0], os.strerror(exc.errno or errno.EIO)) from exc
        finally:
            for fd in placeholders:
                os.close(fd)
        break
    else:  # pragma: no cover - the loop always breaks or raises
        raise SpawnError(argv[0], "fd collision persisted")
    assert popen.stdin is not None
    stdin_fd: int | None = None
    if keep_stdin:
        stdin_fd = os.dup(popen.stdin.fileno())
    popen.stdin.close()
    try:
        pidfd: int | None = os.pidfd_open(popen.pid)
    except OSError:
        pidfd = None
    return Workload(popen, popen.pid, pidfd, stdin_fd)


__all__ = ["FIRST_PASSED_FD", "Workload", "spawn_isolated_workload"]
