"""How many stopped dynamic children keep their log files.

A declared cell has one set of files (``<name>.log`` and its rotated ones,
``<name>.events.jsonl`` and its rotated ones), bounded by rotation. A parent
that starts and stops children under fresh names would add a set per name,
without end. So the root hands every dynamic child whose slot it dropped to
:class:`ChildLogs`, which keeps the files of the newest :data:`KEEP_CHILD_LOGS`
of them (``cellmesh logs p.child`` still works for a child that just
stopped) and deletes the files of older ones -- unless that name runs again
(a child restarted under the same name writes to the same files).

Replicas removed from their group (``cellmesh replicas`` shrinking, a failed
add undone) are handed over the same way, by file stem (``X..<id>``): ids
are never reused, so a group grown and shrunk again and again would
otherwise keep a set of files per id it ever had.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs

from ..sandbox._events import rotated_paths
from .logs import events_path, log_path

#: Stopped dynamic children whose log files are kept (the newest ones).
KEEP_CHILD_LOGS: Final = 64


def remove_logs(log_dir: Path, name: str) -> None:
    """Delete cell ``name``'s output and events files, the rotated ones included."""
    for path in (log_path(log_dir, name), events_path(log_dir, name)):
        for _, old in rotated_paths(path):
            old.unlink(missing_ok=True)
        path.unlink(missing_ok=True)


@attrs.define(eq=False)
class ChildLogs:
    """The stopped dynamic children whose log files are still kept (module doc)."""

    log_dir: Path
    #: Whether a name runs again (its files are in use then).
    running: Callable[[str], bool]
    keep: int = KEEP_CHILD_LOGS
    _stopped: collections.deque[str] = attrs.field(factory=collections.deque, init=False)

    def stopped(self, name: str) -> None:
        """Child ``name``'s slot is gone; delete the files of the oldest beyond :attr:`keep`."""
        if name in self._stopped:
            self._stopped.remove(name)
        self._stopped.append(name)
        while len(self._stopped) > self.keep:
            old = self._stopped.popleft()
            if not self.running(old):
                remove_logs(self.log_dir, old)


__all__ = ["KEEP_CHILD_LOGS", "ChildLogs", "remove_logs"]
