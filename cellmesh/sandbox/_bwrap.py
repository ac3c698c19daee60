"""The bwrap backend: each cell in its own user, pid, ipc, uts, cgroup and network namespaces.

The profile (built by :func:`bwrap_argv`, one flag group per promise):

* namespaces: ``--unshare-user --unshare-pid --unshare-ipc --unshare-uts
  --unshare-cgroup`` and ``--unshare-net`` unless the spec grants the whole
  network (``allow_net``: then the host network is shared, unfiltered). With
  per-destination ``net_grants`` the cell keeps its own network namespace:
  the command becomes the egress shim, which listens on loopback for each
  grant and relays through a per-grant Unix socket bound at
  ``/run/egress/<i>.sock`` to the cell's host-side proxy, and a generated
  ``/etc/hosts`` + ``/etc/nsswitch.conf`` map granted names to loopback
  aliases (:mod:`cellmesh.sandbox._net`);
  ``--disable-userns`` so the cell cannot make nested user namespaces;
* identity: uid/gid 1000 inside, ``--cap-drop ALL``, hostname
  ``cell-<name>``. On the host the cell is the caller's uid -- except when
  the caller is root: then bwrap itself is started as ``nobody`` (65534), so
  the cell has no host root credentials at all (kuid 0 would still pass
  owner checks on root-owned files and be exempt from ``RLIMIT_NPROC``).
  The paths it binds are made reachable for that uid by bind mounts in a
  private mount namespace of the bwrap process (:meth:`BwrapBackend._stage`);
* lifetime: ``--die-with-parent`` (the sandbox is SIGKILLed when the spawning
  thread dies), ``--new-session`` (no terminal injection via TIOCSTI);
* filesystem: an empty root made read-only at the end (``--remount-ro /``);
  ``/usr`` and the ``/bin``, ``/lib*``, ``/sbin`` links read-only; of ``/etc``
  only the dynamic-linker and timezone files (plus resolver and CA files when
  the network is granted); the Python runtime (``sys.base_prefix``,
  ``sys.prefix``, the cellmesh package) read-only at their host paths; the
  DNA dir read-only at ``/cell/dna``; the data dir read-write at
  ``/cell/data``; a private size-capped tmpfs at ``/tmp`` (also ``HOME``);
  fresh ``/proc`` (of the cell's pid namespace) and a minimal, read-only
  ``/dev`` (the device nodes still work; no unbounded tmpfs); the
  cell's own socket and the sockets it is granted, each bound as a single
  file into ``/run/cell``; the directories of its dynamic children's and (for
  a replica) its group's peer sockets, read-only at ``/run/cell/children`` and
  ``/run/cell/peers``; file secrets copied from memfds into
  ``/run/secrets/<name>`` (mode 0400, in the sandbox's memory, never on disk).

On x86_64 a seccomp filter (:mod:`cellmesh.sandbox._seccomp`) is loaded
with ``--seccomp``: sockets only of the families a cell needs (unix,
netlink route, and IP only for a cell with network); keyrings, ptrace, eBPF,
perf, userfaultfd, io_uring, module/kexec loading, mount and namespace
syscalls answer EPERM. Together
with the dropped capabilities, ``no_new_privs`` (set by bwrap) and the
disabled nested user namespaces this narrows the kernel attack surface.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Final

import attrs

from ._backend import TeardownReport
from ._net import DEFAULT_MAX_CONNS, EGRESS_DIR_INSIDE, EgressMounts, EgressProxy, grants_env
from ._process import CellRecord, Command, ProcessBackend, process_state, runtime_env
from ._safedir import hand_over, open_data_dir
from ._seccomp import build_filter, filter_memfd
from ._secrets import Secret
from ._spawn import FIRST_PASSED_FD, Workload
from ._spec import CellSpec
from ._uids import UidPool
from .errors import BackendUnavailable, SandboxError

#: uid and gid of the cell inside its user namespace.
SANDBOX_UID: Final = 1000
#: How long to wait for a SIGSTOPped bwrap to actually stop.
_STOP_PATIENCE: Final = 2.0
#: Size of the private /tmp when the cell has no memory limit.
DEFAULT_TMPFS_BYTES: Final = 256 << 20
SOCKET_DIR_INSIDE: Final = "/run/cell"
#: Where a replica sees its group's peer sockets (``CellSpec.peers_dir``).
PEERS_DIR_INSIDE: Final = "/run/cell/peers"
SECRETS_DIR_INSIDE: Final = "/run/secrets"
DNA_DIR_INSIDE: Final = "/cell/dna"
DATA_DIR_INSIDE: Final = "/cell/data"

_ETC_BASE: Final = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
_ETC_NET: Final = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
)
_SYSTEM_LINKS: Final = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def find_bwrap() -> str | None:
    """The absolute path of ``bwrap`` on the system PATH, or None."""
    return shutil.which("bwrap", path=os.environ.get("PATH") or "/usr/bin:/bin")


def runtime_paths() -> list[Path]:
    """Host directories holding the Python runtime cells need (read-only inside)."""
    package = Path(__file__).resolve().parents[1]  # the cellmesh package directory
    candidates = [Path(sys.base_prefix), Path(sys.prefix), package]
    out: list[Path] = []
    for path in sorted({p.resolve() for p in candidates}, key=lambda p: len(p.parts)):
        if path.is_relative_to("/usr"):
            continue
        if any(path.is_relative_to(o) for o in out):
            continue
        out.append(path)
    return out


def _system_args(allow_net: bool) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for link in _SYSTEM_LINKS:
        path = Path(link)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), link]
        elif path.is_dir():
            args += ["--ro-bind", link, link]
    args += ["--dir", "/etc"]
    for etc in _ETC_BASE + (_ETC_NET if allow_net else ()):
        args += ["--ro-bind-try", etc, etc]
    return args


def bwrap_argv(
    bwrap: str,
    spec: CellSpec,
    *,
    n_pass_fds: int,
    file_secrets: Sequence[Secret],
    tmpfs_bytes: int,
    seccomp_fd: int | None = None,
    sources: Mapping[Path, Path] | None = None,
    egress: EgressMounts | None = None,
) -> list[str]:
    """The full bwrap command line for ``spec``.

    fd layout in bwrap: the caller's ``n_pass_fds`` from 3, then one memfd
    per file secret, then the seccomp program (``seccomp_fd``) if any.
    ``sources`` maps a host path to the (staged) path bwrap binds it from.
    ``egress`` (a cell with ``net_grants``): its files are bound and its
    shim command runs instead of ``spec.argv`` (which the shim then execs).
    """
    src = dict(sources or {})

    def at(path: Path) -> str:
        return str(src.get(path, path))

    args = [
        bwrap,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup",
    ]
    if not spec.allow_net:
        args.append("--unshare-net")
    args += [
        "--disable-userns",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        "--hostname", f"cell-{spec.name}",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
    ]  # fmt: skip
    args += _system_args(spec.allow_net)
    if egress is not None:
        args += ["--ro-bind", at(egress.hosts), "/etc/hosts"]
        args += ["--ro-bind", at(egress.nsswitch), "/etc/nsswitch.conf"]
    # The private /tmp first: bwrap mounts in argument order, so a runtime that
    # lives under /tmp (a checkout in /tmp) is bound on top of it, not hidden.
    args += ["--size", str(tmpfs_bytes), "--tmpfs", "/tmp"]
    for path in runtime_paths():
        args += ["--ro-bind", at(path), str(path)]
    args += ["--proc", "/proc", "--dev", "/dev"]
    if spec.dna_dir is not None:
        args += ["--ro-bind", at(spec.dna_dir), DNA_DIR_INSIDE]
    if spec.data_dir is not None:
        args += ["--bind", at(spec.data_dir), DATA_DIR_INSIDE]
    args += ["--dir", SOCKET_DIR_INSIDE]
    if spec.own_socket is not None:
        args += ["--bind", at(spec.own_socket), f"{SOCKET_DIR_INSIDE}/{spec.name}.sock"]
    for sock in spec.granted_sockets:
        args += ["--bind", at(sock), f"{SOCKET_DIR_INSIDE}/{sock.name}"]
    if spec.children_dir is not None:
        # A live view: sockets the root links in later appear inside.
        args += ["--ro-bind", at(spec.children_dir), f"{SOCKET_DIR_INSIDE}/children"]
    if spec.peers_dir is not None:
        # A live view too: a replica added later has its socket appear inside.
        args += ["--ro-bind", at(spec.peers_dir), PEERS_DIR_INSIDE]
    if egress is not None:
        args += ["--dir", EGRESS_DIR_INSIDE]
        for host_sock, inside in egress.sockets:
            args += ["--bind", at(host_sock), inside]
    if file_secrets:
        args += ["--dir", SECRETS_DIR_INSIDE]
    for i, secret in enumerate(file_secrets):
        fd = FIRST_PASSED_FD + n_pass_fds + i
        dest = f"{SECRETS_DIR_INSIDE}/{secret.ref.name}"
        args += ["--perms", "0400", "--ro-bind-data", str(fd), dest]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    args += ["--remount-ro", "/dev", "--remount-ro", "/"]
    args += ["--chdir", DNA_DIR_INSIDE if spec.dna_dir is not None else "/tmp"]
    args += ["--", *(egress.argv if egress is not None else spec.argv)]
    return args


def probe_bwrap(bwrap: str | None, run_as: int | None = None) -> str | None:
    """Try a minimal sandbox (as uid ``run_as`` if given); None if it works, else why not."""
    if bwrap is None:
        return "bwrap is not installed (apt-get install bubblewrap)"
    argv = [
        bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
        "--unshare-uts", "--unshare-cgroup", "--disable-userns", "--cap-drop", "ALL",
        *_system_args(False), "--proc", "/proc", "--dev", "/dev", "--", "/usr/bin/true",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            timeout=30,
            env={},
            check=False,
            cwd="/",
            user=run_as,
            group=run_as,
            extra_groups=None if run_as is None else [],
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not run: {exc}"
    if proc.returncode != 0:
        text = proc.stderr.decode(errors="replace").strip() or f"exit {proc.returncode}"
        return f"bwrap cannot create a sandbox here: {text}"
    return None


def bwrap_version(bwrap: str | None) -> str | None:
    """``bwrap --version`` output (e.g. ``bubblewrap 0.8.0``), or None."""
    if bwrap is None:
        return None
    try:
        out = subprocess.run([bwrap, "--version"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.decode(errors="replace").strip() or None


#: Host uid bwrap cells run as when the caller is root (``nobody``).
UNPRIVILEGED_UID: Final = 65534


def _check_reachable(directory: Path, uid: int) -> None:
    """SandboxError naming ``TMPDIR`` when ``uid`` cannot search every directory down
    to ``directory`` (where the cells' runtime dirs are made): bwrap, running as
    that uid, could not find the staged paths there."""
    path = directory.resolve()
    for part in (path, *path.parents):
        try:
            st = part.stat()
        except OSError:
            continue
        search = (0o100 if st.st_uid == uid else 0o010 if st.st_gid == uid else 0o001)
        if not st.st_mode & search:
            raise SandboxError(
                f"the cells' runtime dirs go to {directory} (TMPDIR), but {part} (mode "
                f"{stat.S_IMODE(st.st_mode):04o}) cannot be searched by uid {uid}, the uid "
                "bwrap runs cells as: set TMPDIR to a directory every user can reach, "
                "such as /tmp"
            )


@attrs.frozen
class _Owners:
    """The uids a bound data dir may belong to: ours, the cell's, or (when cells
    get a uid each) any uid of the pool, since a data dir goes to its cell's uid."""

    ours: int
    cell: int | None
    pool: UidPool | None

    def __contains__(self, uid: object) -> bool:
        return uid in (self.ours, self.cell) or (self.pool is not None and uid in self.pool)

    def __str__(self) -> str:
        named = [str(u) for u in (self.ours, self.cell) if u is not None]
        return " or ".join(named + ([str(self.pool)] if self.pool is not None else []))


def default_host_uid() -> int | None:
    """The host uid cells run as: :data:`UNPRIVILEGED_UID` when we are root, else ours."""
    return UNPRIVILEGED_UID if os.geteuid() == 0 else None


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` (depth-first) from ``/proc/<pid>/task/*/children``."""
    out: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                text = Path(f"/proc/{current}/task/{tid}/children").read_text()
            except OSError:
                continue
            for child in text.split():
                out.append(int(child))
                stack.append(int(child))
    return out


@attrs.define(eq=False)
class BwrapBackend(ProcessBackend):
    """bubblewrap backend (see module doc). Construct via ``select_backend``.

    ``max_egress_conns`` bounds the connections each cell's egress proxy
    relays (or is setting up) at once; the proxy of a cell with grants lives
    from its first spawn until ``destroy``.

    The host uid a cell runs as: with ``uids`` (what ``select_backend`` gives
    a root running as root), one uid of that pool per cell (see
    :mod:`cellmesh.sandbox._uids`); else ``host_uid`` for every cell; else
    (None) the caller's own.
    """

    enforces_net_grants: ClassVar[bool] = True

    bwrap: str = "/usr/bin/bwrap"
    seccomp: bool = True
    host_uid: int | None = attrs.field(factory=default_host_uid)
    max_egress_conns: int = DEFAULT_MAX_CONNS
    uids: UidPool | None = None
    _proxies: dict[str, EgressProxy] = attrs.field(factory=dict, init=False)

    @property
    def name(self) -> str:
        """``"bwrap"``."""
        return "bwrap"

    def _command(
        self,
        rec: CellRecord,
        pass_fds: Sequence[int],
        secrets: Sequence[Secret],
        secret_fds: Sequence[int],
    ) -> Command:
        spec = rec.spec
        uid = self._cell_uid(rec)
        data: os.stat_result | None = None
        if spec.data_dir is not None:
            # Made, opened and handed over without following a symlink; the
            # staged bind re-opens it O_NOFOLLOW and must find this very inode.
            data_fd = open_data_dir(spec.data_dir, owners=self._owners(uid))
            try:
                if uid is not None and os.fstat(data_fd).st_uid != uid:
                    try:
                        hand_over(data_fd, uid)
                    except OSError as exc:  # a read-only mount, a file we may not chown
                        raise SandboxError(
                            f"the data dir {spec.data_dir} cannot be handed to the cell's uid "
                            f"{uid}: {exc.strerror or exc}"
                            + (f" ({exc.filename})" if exc.filename else "")
                        ) from None
                data = os.fstat(data_fd)
            finally:
                os.close(data_fd)
        egress = self._egress(rec, uid)
        extra = egress.host_paths() if egress is not None else []
        binds, sources = self._stage(rec, uid, extra) if uid is not None else ((), {})
        pinned = (
            {spec.data_dir: (data.st_dev, data.st_ino)}
            if data is not None and spec.data_dir is not None and binds else {}
        )
        if not Path(self.bwrap).exists():
            raise BackendUnavailable("bwrap", f"{self.bwrap} no longer exists")
        file_secrets = [s for s in secrets if s.ref.deliver == "file"]
        env = runtime_env(
            spec,
            n_fds=len(pass_fds),
            home="/tmp",
            cwd=DNA_DIR_INSIDE if spec.dna_dir is not None else "/tmp",
            socket_dir=SOCKET_DIR_INSIDE,
            data_dir=None if spec.data_dir is None else DATA_DIR_INSIDE,
            dna_dir=None if spec.dna_dir is None else DNA_DIR_INSIDE,
            path=f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin",
            secrets=secrets,
            secret_files={s.ref.name: f"{SECRETS_DIR_INSIDE}/{s.ref.name}" for s in file_secrets},
        )
        if egress is not None:
            env = env.with_var("CELL_NET_GRANTS", grants_env(self._proxies[spec.cell_id].routes))
        # IP sockets only for a cell with network (the grant forwarder listens on loopback).
        inet = spec.allow_net or bool(spec.net_grants)
        program = build_filter(inet=inet) if self.seccomp else None
        owned = (filter_memfd(program),) if program is not None else ()
        argv = bwrap_argv(
            self.bwrap,
            spec,
            n_pass_fds=len(pass_fds),
            file_secrets=file_secrets,
            tmpfs_bytes=spec.limits.memory or DEFAULT_TMPFS_BYTES,
            seccomp_fd=FIRST_PASSED_FD + len(pass_fds) + len(secret_fds) if owned else None,
            sources=sources,
            egress=egress,
        )
        return Command(
            argv=tuple(argv),
            env=env,
            pass_fds=(*pass_fds, *secret_fds, *owned),
            signal_as_code_offset=True,
            owned_fds=owned,
            private_binds=binds,
            run_as=uid,
            pinned_sources=pinned,
        )

    def _cell_uid(self, rec: CellRecord) -> int | None:
        """The host uid ``rec``'s processes run as (see the class doc).

        A pool's uid is keyed by the cell's data dir when it has one (every
        process that writes there must own it), else by its runtime dir's
        parent and log name (one per slot: its two backend ids share it).
        """
        if self.uids is None:
            return self.host_uid
        spec = rec.spec
        key = (
            f"data:{spec.data_dir}" if spec.data_dir is not None
            else f"cell:{rec.runtime_dir.parent}/{spec.log_name}"
        )
        return self.uids.acquire(key, spec.cell_id)

    def _owners(self, uid: int | None) -> _Owners:
        """Who may own a data dir we bind: us, the cell's uid, any uid we give cells."""
        return _Owners(os.getuid(), uid, self.uids)

    def _egress(self, rec: CellRecord, uid: int | None) -> EgressMounts | None:
        """The cell's egress mounts (its proxy is started at the first spawn), or None."""
        spec = rec.spec
        if not spec.net_grants:
            return None
        proxy = self._proxies.get(spec.cell_id)
        if proxy is None:
            proxy = EgressProxy.open(
                cell_id=spec.cell_id,
                net_dir=rec.runtime_dir / "net",
                grants=spec.net_grants,
                owner_uid=uid,
                max_conns=self.max_egress_conns,
            )
            self._proxies[spec.cell_id] = proxy
        return proxy.mounts(spec.argv, sys.executable)

    def _teardown(self, rec: CellRecord, *, clean: bool) -> TeardownReport:
        """Stop the cell's egress proxy (if any), then the shared teardown."""
        proxy = self._proxies.pop(rec.spec.cell_id, None)
        try:
            if proxy is not None:
                proxy.close()
        finally:
            try:
                report = super()._teardown(rec, clean=clean)
            finally:
                if self.uids is not None:  # its processes are gone: the uid may be reused
                    self.uids.release(rec.spec.cell_id)
        return report

    def _stage(
        self, rec: CellRecord, uid: int, extra: Sequence[Path] = ()
    ) -> tuple[tuple[tuple[Path, Path], ...], dict[Path, Path]]:
        """Make every bound host path reachable by the cell's unprivileged ``uid``.

        Each source gets an empty stand-in under ``<runtime_dir>/stage``; the
        spawned child bind-mounts the source onto it in a private mount
        namespace (see ``spawn_isolated_workload``), and bwrap binds from the
        stand-in. So the runtime under ``/root/.pyenv`` (``/root`` is 0700)
        or a DNA dir under ``~/.cell`` is usable without opening any host
        directory to other users. (The data dir was handed to ``uid``
        by :meth:`_command`, through a descriptor; its bind is pinned to
        that inode.) ``extra``
        paths (the egress sockets and files in the 0700 ``net`` dir) are staged
        the same way.
        """
        spec = rec.spec
        _check_reachable(rec.runtime_dir.parent, uid)
        os.chmod(rec.runtime_dir, 0o711)
        stage = rec.runtime_dir / "stage"
        stage.mkdir(mode=0o755, exist_ok=True)
        wanted: list[Path] = [*runtime_paths()]
        wanted += [p for p in (spec.dna_dir, spec.data_dir, spec.own_socket) if p is not None]
        wanted += list(spec.granted_sockets)
        wanted += [p for p in (spec.children_dir, spec.peers_dir) if p is not None]
        wanted += list(extra)
        binds: list[tuple[Path, Path]] = []
        sources: dict[Path, Path] = {}
        for i, path in enumerate(wanted):
            stand_in = stage / str(i)
            if path.is_dir():
                stand_in.mkdir(mode=0o755, exist_ok=True)
            else:
                stand_in.touch(mode=0o644, exist_ok=True)
            binds.append((path, stand_in))
            sources[path] = stand_in
        return tuple(binds), sources

    def _terminate(self, wl: Workload) -> None:
        """SIGTERM the workload inside the sandbox (not bwrap's own processes).

        Only processes that have exec'd away from bwrap are signalled: a
        child still running bwrap code may have SIGTERM blocked or ignored,
        which would survive into the workload and swallow the request. Before
        the workload exists (the sandbox is still being set up) there is
        nothing to ask politely: the sandbox is taken down at once.
        """
        try:
            bw = os.stat(self.bwrap)
        except OSError:
            bw = None
        init = set(_children(wl.pid))
        sent = False
        for pid in descendants(wl.pid):
            if pid in init:
                continue
            try:
                exe = os.stat(f"/proc/{pid}/exe")
            except OSError:
                continue
            if bw is not None and (exe.st_dev, exe.st_ino) == (bw.st_dev, bw.st_ino):
                continue  # not yet the workload
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            sent = True
        if not sent:
            _freeze_and_kill(wl)

    def _kill(self, rec: CellRecord, wl: Workload) -> None:
        self._kill_nowait(rec, wl)
        try:
            wl.wait(_STOP_PATIENCE)
        except subprocess.TimeoutExpired:
            wl.send_signal(signal.SIGKILL)

    def _kill_nowait(self, rec: CellRecord, wl: Workload) -> None:
        # Everything inside dies now; bwrap, continued, reaps it and exits by
        # itself (the caller's wait on the pidfd sees that).
        _freeze_and_kill(wl)
        rec.leaves.kill_all()


def _freeze_and_kill(wl: Workload) -> None:
    """Kill a bwrap sandbox without leaving any part of it behind.

    Killing only the outer bwrap can orphan the sandbox while it is being set
    up (its init has not yet armed its own parent-death signal). So: stop the
    outer bwrap (a stopped process cannot fork), SIGKILL every descendant --
    killing the namespace's init kills everything in the pid namespace --
    then let bwrap continue: it reaps its child and exits by itself, so no
    zombie is left for the host's init (the caller escalates to SIGKILL of
    bwrap if it does not). If bwrap had no child yet, it is simply killed.
    """
    wl.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + _STOP_PATIENCE
    while time.monotonic() < deadline and process_state(wl.pid) not in ("T", "t", "Z", "X", ""):
        time.sleep(0.001)
    inside = descendants(wl.pid)
    for pid in inside:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # No sandbox yet: bwrap is stopped before its clone, nothing can be orphaned.
    wl.send_signal(signal.SIGCONT if inside else signal.SIGKILL)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return out


__all__ = [
    "BwrapBackend",
    "DATA_DIR_INSIDE",
    "DNA_DIR_INSIDE",
    "PEERS_DIR_INSIDE",
    "SANDBOX_UID",
    "SECRETS_DIR_INSIDE",
    "SOCKET_DIR_INSIDE",
    "bwrap_argv",
    "UNPRIVILEGED_UID",
    "bwrap_version",
    "default_host_uid",
    "descendants",
    "find_bwrap",
    "probe_bwrap",
    "runtime_paths",
]
