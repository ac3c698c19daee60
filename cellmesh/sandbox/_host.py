"""The host backend: no namespaces; fd, environment and resource hygiene only.

A cell runs as the caller's user in the host's mount, network, pid and user
namespaces: it sees the host filesystem and network with the caller's rights.
What it does get: exactly the declared environment, no inherited fds, stdin
at EOF, output to the log capture, its own session, a private runtime dir as
``HOME``/``TMPDIR``, the parent-death signal, cgroup leaves and rlimits.
File-delivered secrets are memfds passed after the caller's fds and named by
``CELL_SECRET_FILE_<NAME>=/proc/self/fd/<n>``. Chosen automatically, with one
warning, when bwrap cannot run here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs

from ._process import CellRecord, Command, ProcessBackend, runtime_env
from ._safedir import open_data_dir
from ._secrets import Secret
from ._spawn import FIRST_PASSED_FD


def default_path() -> str:
    """``PATH`` for a cell: this interpreter's bin dir first, then the system's."""
    return f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"


@attrs.define(eq=False)
class HostBackend(ProcessBackend):
    """Hygiene-only backend (see module doc)."""

    @property
    def name(self) -> str:
        """``"host"``."""
        return "host"

    def _command(
        self,
        rec: CellRecord,
        pass_fds: Sequence[int],
        secrets: Sequence[Secret],
        secret_fds: Sequence[int],
    ) -> Command:
        spec = rec.spec
        if spec.data_dir is not None:
            os.close(open_data_dir(spec.data_dir, owners=(os.getuid(),)))  # made and checked
        file_secrets = [s for s in secrets if s.ref.deliver == "file"]
        first = FIRST_PASSED_FD + len(pass_fds)
        env = runtime_env(
            spec,
            n_fds=len(pass_fds),
            home=str(rec.runtime_dir),
            cwd=str(rec.runtime_dir),
            socket_dir=str(self.paths.socket_dir),
            data_dir=None if spec.data_dir is None else str(spec.data_dir),
            dna_dir=None if spec.dna_dir is None else str(spec.dna_dir),
            path=default_path(),
            secrets=secrets,
            secret_files={
                s.ref.name: f"/proc/self/fd/{first + i}" for i, s in enumerate(file_secrets)
            },
        )
        return Command(argv=spec.argv, env=env, pass_fds=(*pass_fds, *secret_fds))


__all__ = ["HostBackend", "default_path"]
