"""Choose and build a backend from ``CELL_SANDBOX`` (auto|bwrap|host|stub).

When the caller is root, bwrap cells run as the unprivileged host uid
``nobody`` (see :class:`~cellmesh.sandbox.BwrapBackend`); if bwrap cannot
run as that uid here, they keep uid 0 and one warning says so.

``auto`` (the default) probes bwrap once; when bwrap is missing or cannot
create a user namespace here it falls back to the host backend and issues one
:class:`SandboxDowngradeWarning` naming the reason. ``bwrap`` never falls back:
it raises :class:`~cellmesh.sandbox.errors.BackendUnavailable`. Any other value
is a :class:`~cellmesh.sandbox.errors.SandboxConfigError` listing the valid ones.
So is a ``CELL_CGROUP_PARENT`` that is set but cannot be used (limits asked
for by name never fall back to weaker ones in silence).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Final

from ..config import Paths
from ._backend import CellBackend
from ._bwrap import BwrapBackend, find_bwrap, probe_bwrap
from ._events import EventSink, JsonlEventLog, MemoryEventLog
from ._host import HostBackend
from ._limits import CgroupHost
from ._secrets import SecretBroker, select_broker
from ._stub import StubBackend
from ._uids import default_uid_pool
from .errors import BackendUnavailable, SandboxConfigError

BACKEND_NAMES: Final = ("auto", "bwrap", "host", "stub")


class SandboxDowngradeWarning(UserWarning):
    """Isolation is weaker than the default: host backend, or bwrap cells keeping uid 0."""


def select_backend(
    env: Mapping[str, str] | None = None,
    *,
    paths: Paths | None = None,
    events: EventSink | None = None,
    broker: SecretBroker | None = None,
) -> CellBackend:
    """Build the backend ``CELL_SANDBOX`` names (see module doc).

    ``paths`` defaults to ``Paths.from_env(env)``, ``events`` to a
    :class:`JsonlEventLog` under ``paths.log_dir``, ``broker`` to the one
    ``CELL_SECRETS`` names.
    """
    env = os.environ if env is None else env
    choice = env.get("CELL_SANDBOX", "") or "auto"
    if choice not in BACKEND_NAMES:
        raise SandboxConfigError(
            "CELL_SANDBOX", f"{choice!r} is not one of {', '.join(BACKEND_NAMES)}"
        )
    broker = broker if broker is not None else select_broker(env)
    if choice == "stub":
        return StubBackend(events=events if events is not None else MemoryEventLog(), broker=broker)
    paths = paths if paths is not None else Paths.from_env(env)
    events = events if events is not None else JsonlEventLog.for_paths(paths)
    cgroups = CgroupHost.detect(env)
    if env.get("CELL_CGROUP_PARENT") and cgroups.v2_parent is None:
        # Asked for by name and not usable: not a silent fallback to weaker limits.
        raise SandboxConfigError(
            "CELL_CGROUP_PARENT",
            f"cannot be used: {cgroups.v2_parent_problem}; unset it to let per-cell "
            "limits use cgroup v1 or rlimits (`cellmesh sandbox check` shows what applies)",
        )
    if choice in ("auto", "bwrap"):
        bwrap = find_bwrap()
        problem = probe_bwrap(bwrap)
        if problem is None and bwrap is not None:
            uids = default_uid_pool(env)
            if uids is not None and (why := probe_bwrap(bwrap, run_as=uids.first)):
                warnings.warn(
                    f"bwrap cannot run as the unprivileged uid {uids.first} here ({why}); "
                    "cells keep the caller's host uid (root), with all capabilities dropped. "
                    "See docs/security.md.",
                    SandboxDowngradeWarning,
                    stacklevel=2,
                )
                uids = None
            return BwrapBackend(
                paths, events, broker, cgroups, bwrap=bwrap, host_uid=None, uids=uids
            )
        if choice == "bwrap":
            raise BackendUnavailable("bwrap", problem or "not found")
        warnings.warn(
            f"CELL_SANDBOX=auto: {problem}; cells run under the host backend "
            "(fd/env/resource hygiene only, no namespaces). See docs/security.md.",
            SandboxDowngradeWarning,
            stacklevel=2,
        )
    return HostBackend(paths, events, broker, cgroups)


__all__ = ["BACKEND_NAMES", "SandboxDowngradeWarning", "select_backend"]
