"""The host backend: no namespaces; fd, environment and resource hygiene only.

A cell runs as the caller's user in the host's mount, network, pid and user
namespaces: it sees the host filesystem and network with the caller's rights.
What it does get: exactly the declared environment, no inherited fds, stdin
at EOF, output to the log capture, its own session, a private runtime dir as
``HOME``/``TMPDIR``, the parent-death signal, cgroup leaves and rlimits.
File-delivered secrets are memfds passed after the caller's fds and named by
``CELL_SECRET_FILE_<NAME>=/proc/self/fd/<n>``. Its ``CELL_SOCKET_DIR`` holds
only the sockets its bwrap sandbox would show (:func:`socket_view`): not a
boundary, but a cell calling one it may not call fails as in production.
Chosen automatically, with one warning, when bwrap cannot run here.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs

from ._process import CellRecord, Command, ProcessBackend, runtime_env
from ._safedir import open_data_dir
from ._secrets import Secret
from ._spawn import FIRST_PASSED_FD
from ._spec import CellSpec


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
            socket_dir=str(socket_view(rec.runtime_dir, spec)),
            data_dir=None if spec.data_dir is None else str(spec.data_dir),
            dna_dir=None if spec.dna_dir is None else str(spec.dna_dir),
            path=default_path(),
            secrets=secrets,
            secret_files={
                s.ref.name: f"/proc/self/fd/{first + i}" for i, s in enumerate(file_secrets)
            },
        )
        return Command(argv=spec.argv, env=env, pass_fds=(*pass_fds, *secret_fds))


def socket_view(runtime_dir: Path, spec: CellSpec) -> Path:
    """The cell's ``CELL_SOCKET_DIR``: the sockets it may reach, as bwrap shows them.

    Symlinks in ``<runtime_dir>/sockets``: its own socket, the granted ones
    (the cells its ``calls`` lists) and ``children`` (a live view of the
    sockets the root grants later: its dynamic children, template instances).
    A cell that looks up another cell there finds exactly what it would find
    in its bwrap sandbox, so a test under the host sandbox fails as production
    would on a cell missing from ``calls``. (Not a boundary: a host cell can
    still open any path it knows.) Rebuilt at every spawn.
    """
    view = runtime_dir / "sockets"
    if view.exists():
        shutil.rmtree(view)
    view.mkdir(mode=0o700)
    if spec.own_socket is not None:
        (view / f"{spec.name}.sock").symlink_to(spec.own_socket)
    for sock in spec.granted_sockets:
        link = view / sock.name
        if not link.is_symlink():
            link.symlink_to(sock)
    if spec.children_dir is not None:
        (view / "children").symlink_to(spec.children_dir, target_is_directory=True)
    return view


__all__ = ["HostBackend", "default_path", "socket_view"]
