"""``cellmesh sandbox ...``: inspect this host's isolation and run commands as cells run.

``check`` prints what isolation the host gives (bwrap, user namespaces,
cgroups, seccomp) and how each limit would be enforced. ``exec`` runs any
command through the same backend, profile, limits and hygiene as a cell, with
the terminal as its stdout/stderr, and exits with the command's status.
"""

from __future__ import annotations

import json as jsonlib
import os
import sys
from typing import Annotated

import cyclopts

from ..errors import ConfigError


def register(app: cyclopts.App) -> None:
    """Attach the ``sandbox`` command group to ``app``."""
    sandbox = cyclopts.App(
        name="sandbox", help="Inspect the cell sandbox and run commands exactly as cells run."
    )

    @sandbox.command(name="check")
    def _check(*, json: bool = False) -> int:
        """Report what isolation this host gives cells.

        Parameters
        ----------
        json
            Print one JSON document instead of the text report.
        """
        from ..sandbox import check_host

        report = check_host()
        if json:
            print(jsonlib.dumps(report.to_json(), indent=2, sort_keys=True))
        else:
            print("\n".join(report.lines()))
        return 0

    @sandbox.command(name="exec")
    def _exec(
        *cmd: Annotated[str, cyclopts.Parameter(allow_leading_hyphen=True)],
        allow_net: bool = False,
        grant: list[str] | None = None,
        mem: str | None = None,
        cpu: float | None = None,
        pids: int | None = None,
        nofile: int | None = None,
        env: list[str] | None = None,
        data: str | None = None,
        dna: str | None = None,
        backend: str | None = None,
    ) -> int:
        """Run CMD exactly as a cell would be run and exit with its status.

        Example: cellmesh sandbox exec --mem 256M -- python3 -c 'import os; print(os.listdir("/"))'

        Parameters
        ----------
        cmd
            The command and its arguments (put them after ``--``).
        allow_net
            Share the whole host network, unfiltered (cells have none unless granted).
        grant
            HOST:PORT the command may open TCP connections to, and nothing else
            (repeatable; bwrap only). Inside, connect to the same address for a
            127.x literal, to HOST by name otherwise ($CELL_NET_GRANTS lists them).
        mem
            Memory limit, e.g. 256M or 1G.
        cpu
            CPU limit in cores, e.g. 0.5.
        pids
            Maximum number of processes and threads.
        nofile
            Maximum number of open files.
        env
            KEY=VALUE to add to the declared environment (repeatable).
        data
            Existing host directory bound read-write at /cell/data.
        dna
            Existing host directory bound read-only at /cell/dna (the working
            directory).
        backend
            auto, bwrap, host or stub (default: $CELL_SANDBOX, else auto).
        """
        return run_exec(
            list(cmd),
            allow_net=allow_net,
            grant=grant or [],
            mem=mem,
            cpu=cpu,
            pids=pids,
            nofile=nofile,
            env=env or [],
            data=data,
            dna=dna,
            backend=backend,
        )

    app.command(sandbox)


def run_exec(
    cmd: list[str],
    *,
    allow_net: bool = False,
    grant: list[str] | None = None,
    mem: str | None = None,
    cpu: float | None = None,
    pids: int | None = None,
    nofile: int | None = None,
    env: list[str] | None = None,
    data: str | None = None,
    dna: str | None = None,
    backend: str | None = None,
) -> int:
    """Implementation of ``cellmesh sandbox exec`` (returns the exit code)."""
    from pathlib import Path

    from ..sandbox import CellSpec, Limits, NetGrant, WorkloadEnv, parse_size, select_backend

    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ConfigError("sandbox exec", "no command given (cellmesh sandbox exec -- CMD ...)")
    pairs = []
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("--env", f"{item!r} is not KEY=VALUE")
        pairs.append((key, value))
    for flag, dir_arg in (("--data", data), ("--dna", dna)):
        if dir_arg is not None and not os.path.isabs(dir_arg):
            raise ConfigError(flag, f"{dir_arg!r} must be an absolute path")
        if dir_arg is not None and not os.path.isdir(dir_arg):
            # (never created here: a typo must not make a directory on the host)
            raise ConfigError(flag, f"{dir_arg!r} is not an existing directory")
    limits = Limits(
        memory=None if mem is None else parse_size(mem, source="--mem"),
        cpu=cpu,
        pids=pids,
        open_files=nofile,
    )
    spec = CellSpec(
        name=f"exec-{os.getpid()}",
        argv=cmd,
        env=WorkloadEnv(items=pairs),
        limits=limits,
        allow_net=allow_net,
        net_grants=[NetGrant.parse(g, source="--grant") for g in grant or []],
        data_dir=None if data is None else Path(data),
        dna_dir=None if dna is None else Path(dna),
    )
    environ = dict(os.environ)
    if backend is not None:
        environ["CELL_SANDBOX"] = backend
    try:
        be = select_backend(environ)
    except ConfigError as exc:
        if backend is None or exc.source != "CELL_SANDBOX":
            raise
        raise ConfigError("--backend", exc.problem) from None  # the flag the user typed
    be.create(spec)
    try:
        be.spawn(spec.cell_id, stdout=sys.stdout.fileno(), stderr=sys.stderr.fileno())
        try:
            status = be.wait(spec.cell_id)
        except KeyboardInterrupt:
            be.destroy(spec.cell_id, grace=2.0)
            return 130
    finally:
        if spec.cell_id in be.tracked():
            be.destroy(spec.cell_id, grace=2.0)
    if status.reason != "exit":
        what = status.reason + (f" ({status.limit})" if status.limit else "")
        how = f"code {status.code}" if status.code is not None else f"signal {status.signal}"
        print(f"cellmesh: {be.name} cell ended: {what}, {how}", file=sys.stderr)
    if status.code is not None:
        return status.code
    return 128 + (status.signal or 0)
