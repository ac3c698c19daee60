"""What isolation this host gives cells: facts for ``cellmesh sandbox check``.

Every field is read from the running system (``/proc``, the cgroup
filesystems, a real bwrap probe), never assumed from the distribution.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path

import attrs

from ._bwrap import bwrap_version, find_bwrap, probe_bwrap
from ._limits import AS_HEADROOM, CgroupHost, plan_limits
from ._seccomp import DENIED, build_filter
from ._spec import Limits
from ._uids import default_uid_pool


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


@attrs.frozen(kw_only=True)
class HostReport:
    """The sandbox capabilities of this host (see :func:`check_host`)."""

    kernel: str
    euid: int
    bwrap_path: str | None
    bwrap_version: str | None
    bwrap_problem: str | None
    max_user_namespaces: int | None
    unprivileged_userns_clone: str | None
    cgroup2_mount: str | None
    cgroup2_root_controllers: tuple[str, ...]
    cgroup_parent: str | None
    cgroup_parent_problem: str | None
    cgroup_parent_controllers: tuple[str, ...]
    cgroup1_dirs: Mapping[str, str]
    seccomp_supported: bool
    seccomp_denied: int
    auto_backend: str
    cell_host_uid: int | None
    cell_uid_range: tuple[int, int] | None
    limit_mechanisms: Mapping[str, str]

    def to_json(self) -> dict[str, object]:
        """The report as a JSON-ready dict."""
        return attrs.asdict(self)

    def lines(self) -> list[str]:
        """Human-readable lines, one fact each."""

        def yes(flag: bool) -> str:
            return "yes" if flag else "no"

        userns = self.bwrap_problem is None
        return [
            f"kernel                 {self.kernel} (running as uid {self.euid})",
            f"bwrap                  {self.bwrap_version or 'not installed'}"
            + (f" at {self.bwrap_path}" if self.bwrap_path else ""),
            f"bwrap sandbox works    {yes(userns)}"
            + ("" if userns else f" -- {self.bwrap_problem}"),
            f"user namespaces        max_user_namespaces={self.max_user_namespaces}"
            + (
                f", unprivileged_userns_clone={self.unprivileged_userns_clone}"
                if self.unprivileged_userns_clone is not None
                else ""
            ),
            f"cgroup v2              {self.cgroup2_mount or 'not mounted'}; root controllers: "
            + (" ".join(self.cgroup2_root_controllers) or "none"),
            f"CELL_CGROUP_PARENT     {self.cgroup_parent or '-'}"
            + (
                f" (controllers for leaves: {' '.join(self.cgroup_parent_controllers) or 'none'})"
                if self.cgroup_parent
                else f" ({self.cgroup_parent_problem})"
            ),
            "cgroup v1 (hybrid)     "
            + (", ".join(f"{k} at {v}" for k, v in sorted(self.cgroup1_dirs.items())) or "none"),
            f"seccomp                kernel support: {yes(self.seccomp_supported)}; "
            + (
                f"bwrap cells get a {self.seccomp_denied}-syscall deny-list; socket families: "
                "unix, netlink (route only), inet/inet6 only with network"
                if self.seccomp_denied
                else f"no filter for {platform.machine()} (x86_64 only)"
            ),
            f"CELL_SANDBOX=auto      -> {self.auto_backend}"
            + (
                f"; cells run as host uids {self.cell_uid_range[0]}-{self.cell_uid_range[1]}, "
                "one per cell (CELL_UID_RANGE)"
                if self.cell_uid_range is not None
                else f"; cells run as host uid {self.cell_host_uid}"
                if self.cell_host_uid is not None
                else ""
            ),
            "network                none by default (own netns with lo only); grants open "
            "exactly the granted host:port (TCP, via a relay; bwrap); 'host' shares it all",
            "limits enforced by     "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.limit_mechanisms.items())),
            *self._memory_lines(),
        ]

    def _memory_lines(self) -> list[str]:
        """What a memory limit means under the mechanism this host gives it."""
        mechanism = self.limit_mechanisms.get("memory")
        if mechanism == "cgroup2":
            return ["memory limit           cgroup v2 memory.max (swap 0): every page the cell "
                    "charges, shared memory and memfds included"]
        if mechanism != "rlimit":
            return []
        return [
            "memory limit           per process: RLIMIT_DATA = limit (heap, private mappings, "
            f"thread stacks); RLIMIT_AS = limit + {AS_HEADROOM >> 20} MiB (MAP_SHARED, mapped "
            "memfds and vesicles count); RLIMIT_FSIZE = limit (no memfd or file grows past it)",
            "  not counted          kernel memory (socket and pipe buffers); pages of memfds "
            "written but never mapped, up to the limit per open file; a cell that forks holds "
            "up to the limit in each process (set CELL_CGROUP_PARENT with the memory "
            "controller for an exact limit)",
        ]


def check_host(env: Mapping[str, str] | None = None) -> HostReport:
    """Probe this host (runs one tiny bwrap sandbox when bwrap is installed)."""
    env = os.environ if env is None else env
    bwrap = find_bwrap()
    problem = probe_bwrap(bwrap)
    cg = CgroupHost.detect(env)
    cell_uid: int | None = os.geteuid()
    uid_range: tuple[int, int] | None = None
    pool = default_uid_pool(env)
    if problem is None and pool is not None:
        if probe_bwrap(bwrap, run_as=pool.first) is None:
            cell_uid, uid_range = None, (pool.first, pool.last)
        else:
            cell_uid = 0
    plan = plan_limits(Limits(memory=256 << 20, cpu=1.0, pids=64, open_files=256), cg)
    max_userns = _read("/proc/sys/user/max_user_namespaces")
    status = _read("/proc/self/status") or ""
    return HostReport(
        kernel=platform.release(),
        euid=os.geteuid(),
        bwrap_path=bwrap,
        bwrap_version=bwrap_version(bwrap),
        bwrap_problem=problem,
        max_user_namespaces=int(max_userns) if max_userns and max_userns.isdigit() else None,
        unprivileged_userns_clone=_read("/proc/sys/kernel/unprivileged_userns_clone"),
        cgroup2_mount=None if cg.v2_mount is None else str(cg.v2_mount),
        cgroup2_root_controllers=tuple(sorted(cg.v2_root_controllers)),
        cgroup_parent=None if cg.v2_parent is None else str(cg.v2_parent),
        cgroup_parent_problem=cg.v2_parent_problem,
        cgroup_parent_controllers=tuple(sorted(cg.v2_controllers)),
        cgroup1_dirs={k: str(v) for k, v in cg.v1_dirs.items()},
        seccomp_supported="Seccomp:" in status,
        seccomp_denied=len(DENIED) if build_filter() is not None else 0,
        auto_backend="bwrap" if problem is None else "host",
        cell_host_uid=cell_uid,
        cell_uid_range=uid_range,
        limit_mechanisms=plan.to_json(),
    )


__all__ = ["HostReport", "check_host"]
