"""Resource limits: detect what this host can enforce, and enforce it per cell.

Theory of operation. :class:`CgroupHost` is a snapshot of the cgroup setup
(read from ``/proc/self/mountinfo`` and ``/proc/self/cgroup``, never assumed).
For each limit of a cell, :func:`plan_limits` picks the strongest mechanism
available, in this order:

* ``cgroup2`` -- a leaf ``<CELL_CGROUP_PARENT>/cellmesh_<owner>_<name>_<uuid>`` when
  that parent is set, is a cgroup v2 directory we can write, and the
  controller (memory, cpu, pids) is enabled (or can be enabled) for children;
* ``cgroup1`` -- on a v1/v2 hybrid host, a leaf under this process's own
  cgroup in the v1 ``pids`` or ``cpu`` hierarchy when we can write there
  (the v1 memory hierarchy is never used: see docs/security.md);
* ``rlimit`` -- for memory, ``RLIMIT_DATA`` (the heap and private
  mappings) *and* a backstop for what it does not count: ``RLIMIT_AS`` at
  the limit plus :data:`AS_HEADROOM` (shared mappings -- ``MAP_SHARED``
  anonymous memory, mapped memfds -- count there) and ``RLIMIT_FSIZE`` at
  the limit (no one file, memfds included, grows past it); with
  :data:`ARENA_ENV` in the cell's environment so glibc's per-thread malloc
  arenas (64 MiB of address space each) do not eat that headroom. For open
  files, ``RLIMIT_NOFILE``;
* ``none`` -- reported as such (``cpu`` and ``pids`` have no sound rlimit:
  ``RLIMIT_NPROC`` counts every process of the host uid and is ignored for
  root, so it is not used).

Leaves are created before spawn (the child joins them between fork and exec)
and removed at destroy, after every process in them is dead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import signal
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final, Literal

import attrs

from ._spec import Limits
from .errors import SandboxConfigError, SandboxError

Mechanism = Literal["cgroup2", "cgroup1", "rlimit", "none"]

_SANITIZE_RE: Final = re.compile(r"[^A-Za-z0-9_-]")
_CPU_PERIOD_US: Final = 100_000
_V2_CONTROLLERS: Final = ("memory", "cpu", "pids")
_V1_CONTROLLERS: Final = ("pids", "cpu")
_RMDIR_PATIENCE: Final = 2.0

#: Address space a cell gets beyond its memory limit under the rlimit
#: fallback: the interpreter's code and libraries (mapped, but not counted
#: by RLIMIT_DATA), a malloc arena reservation, a little shared memory.
#: With it a cell reaches exactly the private memory RLIMIT_DATA allows;
#: everything it maps beyond (MAP_SHARED, memfds, received vesicles) comes
#: out of the same budget. Measured by scripts/measure_memory_backstop.py
#: (docs/security.md, Denial of service).
AS_HEADROOM: Final = 64 << 20
#: Set in a cell's environment when its memory is an rlimit (see the module doc).
ARENA_ENV: Final = ("MALLOC_ARENA_MAX", "2")


def sanitize_name(name: str) -> str:
    """Map a cell name onto ``[A-Za-z0-9_-]`` for use in a cgroup leaf name."""
    return _SANITIZE_RE.sub("_", name)[:48] or "cell"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@attrs.frozen(kw_only=True)
class CgroupHost:
    """What the host's cgroups offer this process (a snapshot).

    ``v2_mount`` the cgroup2 mount point (or None); ``v2_parent`` the usable
    ``CELL_CGROUP_PARENT`` (or None, with ``v2_parent_problem`` saying why);
    ``v2_controllers`` the controllers available to leaves under it;
    ``v1_dirs`` maps a v1 controller to this process's own writable cgroup
    directory in that hierarchy.
    """

    v2_mount: Path | None
    v2_parent: Path | None
    v2_parent_problem: str | None
    v2_controllers: frozenset[str]
    v2_root_controllers: frozenset[str]
    v1_dirs: Mapping[str, Path]

    @classmethod
    def detect(cls, env: Mapping[str, str] | None = None) -> CgroupHost:
        """Read the cgroup layout; ``env`` supplies ``CELL_CGROUP_PARENT``."""
        env = os.environ if env is None else env
        v2_mount: Path | None = None
        v1_mounts: dict[str, Path] = {}
        for line in _read(Path("/proc/self/mountinfo")).splitlines():
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            mount_point = Path(fields[4].replace("\\040", " "))
            if rfields[0] == "cgroup2" and v2_mount is None:
                v2_mount = mount_point
            elif rfields[0] == "cgroup":
                for opt in rfields[2].split(","):
                    if opt in _V1_CONTROLLERS or opt == "memory":
                        v1_mounts.setdefault(opt, mount_point)
        v1_dirs: dict[str, Path] = {}
        if os.geteuid() == 0:
            for line in _read(Path("/proc/self/cgroup")).splitlines():
                parts = line.split(":", 2)
                if len(parts) != 3:
                    continue
                for ctrl in parts[1].split(","):
                    if ctrl in _V1_CONTROLLERS and ctrl in v1_mounts:
                        own = v1_mounts[ctrl] / parts[2].lstrip("/")
                        if os.access(own, os.W_OK) and (own / "cgroup.procs").exists():
                            v1_dirs[ctrl] = own
        root_ctrls = (
            frozenset(_read(v2_mount / "cgroup.controllers").split()) if v2_mount else frozenset()
        )
        parent, problem, ctrls = cls._v2_parent(env, v2_mount)
        return cls(
            v2_mount=v2_mount,
            v2_parent=parent,
            v2_parent_problem=problem,
            v2_controllers=ctrls,
            v2_root_controllers=root_ctrls,
            v1_dirs=v1_dirs,
        )

    @staticmethod
    def _v2_parent(
        env: Mapping[str, str], v2_mount: Path | None
    ) -> tuple[Path | None, str | None, frozenset[str]]:
        raw = env.get("CELL_CGROUP_PARENT", "")
        if not raw:
            return None, "CELL_CGROUP_PARENT is not set", frozenset()
        if "\0" in raw or not raw.startswith("/"):
            raise SandboxConfigError("CELL_CGROUP_PARENT", f"{raw!r} must be an absolute path")
        parent = Path(raw)
        if v2_mount is None:
            return None, "no cgroup2 filesystem is mounted", frozenset()
        try:
            parent.resolve().relative_to(v2_mount.resolve())
        except ValueError:
            return None, f"{parent} is not under the cgroup2 mount {v2_mount}", frozenset()
        if not (parent / "cgroup.controllers").exists():
            return None, f"{parent} is not a cgroup2 directory", frozenset()
        if not os.access(parent, os.W_OK):
            return None, f"{parent} is not writable by us", frozenset()
        available = set(_read(parent / "cgroup.controllers").split())
        enabled = set(_read(parent / "cgroup.subtree_control").split())
        for ctrl in _V2_CONTROLLERS:
            if ctrl in available and ctrl not in enabled:
                with contextlib.suppress(OSError):
                    (parent / "cgroup.subtree_control").write_text(f"+{ctrl}")
        enabled = set(_read(parent / "cgroup.subtree_control").split())
        return parent, None, frozenset(enabled & set(_V2_CONTROLLERS))


@attrs.frozen(kw_only=True)
class LimitPlan:
    """How each limit of one cell is enforced, and the settings to apply."""

    mechanisms: Mapping[str, Mechanism]
    rlimits: Mapping[int, int]
    v2_files: Mapping[str, str]
    v1_files: Mapping[str, Mapping[str, str]]

    def to_json(self) -> dict[str, str]:
        """``{"memory": "cgroup2", ...}`` for reports and events."""
        return dict(self.mechanisms)


def plan_limits(limits: Limits, host: CgroupHost) -> LimitPlan:
    """Choose the mechanism for every limit in ``limits`` (see module doc)."""
    mech: dict[str, Mechanism] = {}
    rlimits: dict[int, int] = {}
    v2: dict[str, str] = {}
    v1: dict[str, dict[str, str]] = {}
    v2_ok = host.v2_parent is not None
    if limits.memory is not None:
        if v2_ok and "memory" in host.v2_controllers:
            mech["memory"] = "cgroup2"
            v2["memory.max"] = str(limits.memory)
            v2["memory.swap.max"] = "0"
        else:
            mech["memory"] = "rlimit"
            rlimits[resource.RLIMIT_DATA] = limits.memory
            rlimits[resource.RLIMIT_AS] = limits.memory + AS_HEADROOM
            rlimits[resource.RLIMIT_FSIZE] = limits.memory
    if limits.cpu is not None:
        quota = max(1000, int(limits.cpu * _CPU_PERIOD_US))
        if v2_ok and "cpu" in host.v2_controllers:
            mech["cpu"] = "cgroup2"
            v2["cpu.max"] = f"{quota} {_CPU_PERIOD_US}"
        elif "cpu" in host.v1_dirs:
            mech["cpu"] = "cgroup1"
            v1["cpu"] = {"cpu.cfs_period_us": str(_CPU_PERIOD_US), "cpu.cfs_quota_us": str(quota)}
        else:
            mech["cpu"] = "none"
    if limits.pids is not None:
        if v2_ok and "pids" in host.v2_controllers:
            mech["pids"] = "cgroup2"
            v2["pids.max"] = str(limits.pids)
        elif "pids" in host.v1_dirs:
            mech["pids"] = "cgroup1"
            v1["pids"] = {"pids.max": str(limits.pids)}
        else:
            mech["pids"] = "none"
    if limits.open_files is not None:
        mech["open_files"] = "rlimit"
        rlimits[resource.RLIMIT_NOFILE] = limits.open_files
    return LimitPlan(mechanisms=mech, rlimits=rlimits, v2_files=v2, v1_files=v1)


@attrs.define(eq=False)
class CgroupLeaves:
    """The cgroup leaves of one cell: made at create, joined at spawn, removed at destroy."""

    v2: Path | None = None
    v1: dict[str, Path] = attrs.Factory(dict)

    @classmethod
    def create(cls, name: str, host: CgroupHost, plan: LimitPlan, owner: str) -> CgroupLeaves:
        """Make the leaves ``plan`` needs (a v2 leaf whenever the parent is usable),
        named ``cellmesh_<owner>_<name>_<uuid>`` (``owner``: the root's
        :attr:`~cellmesh.config.Paths.owner_tag`, for :func:`sweep_stale_leaves`)."""
        leaf_name = f"cellmesh_{owner}_{sanitize_name(name)}_{uuid.uuid4().hex}"
        leaves = cls()
        try:
            if host.v2_parent is not None:
                leaves.v2 = host.v2_parent / leaf_name
                leaves.v2.mkdir()
                for fname, value in plan.v2_files.items():
                    if fname == "memory.swap.max" and not (leaves.v2 / fname).exists():
                        continue
                    (leaves.v2 / fname).write_text(value)
            for ctrl, files in plan.v1_files.items():
                path = host.v1_dirs[ctrl] / leaf_name
                path.mkdir()
                leaves.v1[ctrl] = path
                for fname, value in files.items():
                    (path / fname).write_text(value)
        except OSError as exc:
            leaves.remove()
            raise SandboxError(f"could not set up cgroup leaf {leaf_name}: {exc}") from exc
        return leaves

    @property
    def procs_files(self) -> list[Path]:
        """The ``cgroup.procs`` files a new process writes itself into."""
        out = [p / "cgroup.procs" for p in self.v1.values()]
        if self.v2 is not None:
            out.append(self.v2 / "cgroup.procs")
        return out

    @property
    def paths(self) -> list[Path]:
        """Every leaf directory (v2 first)."""
        return ([self.v2] if self.v2 is not None else []) + list(self.v1.values())

    def oom_kills(self) -> int:
        """The v2 leaf's ``memory.events`` ``oom_kill`` count (0 if none or unknown)."""
        if self.v2 is None:
            return 0
        for line in _read(self.v2 / "memory.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def kill_all(self) -> None:
        """SIGKILL every process still in the leaves (``cgroup.kill`` where available)."""
        for path in self.paths:
            kill_file = path / "cgroup.kill"
            if kill_file.exists():
                with contextlib.suppress(OSError):
                    kill_file.write_text("1")
            for pid in _read(path / "cgroup.procs").split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)

    def remove(self) -> list[str]:
        """Remove every leaf directory; return the paths removed."""
        removed: list[str] = []
        for path in self.paths:
            # A killed process leaves the cgroup a moment after it is reaped:
            # retry EBUSY for a bounded time, then report the failure.
            deadline = time.monotonic() + _RMDIR_PATIENCE
            while True:
                try:
                    path.rmdir()
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise SandboxError(f"could not remove cgroup leaf {path}: {exc}") from exc
                    self.kill_all()
                    time.sleep(0.002)
                else:
                    removed.append(str(path))
                    break
        self.v2 = None
        self.v1 = {}
        return removed


def sweep_stale_leaves(
    host: CgroupHost, keep: Iterable[Path] = (), *, owner: str | None = None
) -> list[str]:
    """Kill the processes in, and remove, every ``cellmesh_*`` leaf not in ``keep``
    (with ``owner``: only the leaves named ``cellmesh_<owner>_*``).

    For a root daemon starting after a crash: sandboxes its predecessor left
    behind (for instance one whose parent died during sandbox setup) are found
    by their leaves. Without ``owner``, call it only when this process is the
    sole user of ``CELL_CGROUP_PARENT`` and of its v1 cgroups: it does not
    know whose cells other leaves hold. Returns the leaf paths removed.
    """
    kept = {Path(p) for p in keep}
    prefix = "cellmesh_" if owner is None else f"cellmesh_{owner}_"
    parents = ([host.v2_parent] if host.v2_parent is not None else []) + list(host.v1_dirs.values())
    removed: list[str] = []
    for parent in parents:
        try:
            children = sorted(parent.iterdir())
        except OSError:
            continue
        for leaf in children:
            if not leaf.name.startswith(prefix) or not leaf.is_dir() or leaf in kept:
                continue
            stale = (
                CgroupLeaves(v2=leaf)
                if parent == host.v2_parent
                else CgroupLeaves(v1={"stale": leaf})
            )
            stale.kill_all()
            removed += stale.remove()
    return removed


__all__ = [
    "CgroupHost",
    "CgroupLeaves",
    "LimitPlan",
    "Mechanism",
    "plan_limits",
    "sanitize_name",
    "sweep_stale_leaves",
]
