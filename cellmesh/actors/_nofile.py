"""The root's own descriptor limit, sized for its mesh.

The root holds about ten descriptors per cell (with its standby: pipes,
sockets, pidfds) besides its clients' connections. Under the usual soft
limit of 1024 (systemd's ``LimitNOFILE=1024:524288``, a login shell) a mesh
of about 100 cells left it no descriptor to restart a cell with, and the
failed restarts made the supervisor give up: one crash stopped the mesh.
So the root raises its soft limit to its hard limit at start (any process
may), and says so when even that is short for the manifest.
"""

from __future__ import annotations

import resource
from typing import Final

from .manifest import Manifest

__all__ = ["PER_CELL", "descriptors_needed", "raise_open_files"]

#: Descriptors the root counts per cell, replica or dynamic child (about 10 in use).
PER_CELL: Final = 12
#: For the root itself, its control clients and its metrics endpoint.
MARGIN: Final = 512
#: The soft limit aimed at when the hard one is unlimited (Linux's default nr_open).
_UNLIMITED_TARGET: Final = 1 << 20


def descriptors_needed(manifest: Manifest) -> int:
    """What the root may hold for ``manifest``: its cells and replicas, the children
    their ``max_children`` allow, and :data:`MARGIN`."""
    cells = sum((d.replicas or 1) + d.max_children for d in manifest.cells.values())
    return cells * PER_CELL + MARGIN


def raise_open_files(manifest: Manifest) -> str | None:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; a warning when
    the result is still below :func:`descriptors_needed` (None when it is enough)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # (a hard limit above what the kernel allows: keep the soft one)
    need = descriptors_needed(manifest)
    if soft != resource.RLIM_INFINITY and soft < need:
        return (f"root: the open-files limit is {soft} descriptors (hard limit {hard}); "
                f"this manifest may need about {need} (about {PER_CELL} per cell, replica "
                "and dynamic child): raise the hard limit (ulimit -Hn, systemd LimitNOFILE) "
                "or the root may fail to restart cells")
    return None
