"""The reload driver: apply the plan of :func:`cellmesh.actors.reload.diff_manifests` to a root.

Theory of operation
-------------------
:func:`reload_mesh` re-reads the root's manifest file (validated, DNA paths
checked), hashes the code of every running cell and template (in a thread)
to learn which changed on disk, asks the pure core for the plan and, unless
it refuses something (then nothing changes) or it is a dry run, has the
code of each new cell and new or changed template imported by a check
process (as ``up`` does; one that does not import refuses the reload, and
nothing changes), then applies the plan in the core's order: stop, retune
and update in place, start, swap. Each
step adds a line to the report; a step that fails (a new cell that does not
start, a swap that rolls back) is reported and the reload goes on with the
next one. The new manifest is the root's from the first step on, so cells
started and swapped later see it -- except what failed: a cell that did not
start is taken out of it again and a cell whose swap rolled back keeps its
old declaration (:meth:`Manifest.with_cell`), so the root's manifest says
what runs and the next reload retries them.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import attrs
import trio

from ..config import Paths
from ..errors import CellmeshError, ConfigError
from ._cells import CellSlot
from ._launch import Launcher
from ._swap import Swapper
from .control import (
    ReloadManifest,
    ReloadReport,
    RestartRecord,
    SwapReport,
    swap_times_problem,
)
from .dna import hash_path
from .errors import DnaError, RootRequestError
from .manifest import CellDecl, Manifest, load_manifest
from .policy import Restart
from .reload import UPDATE_FIELDS, ReloadPlan, diff_manifests, template_children
from .supervisor import Supervisor


class ReloadHost(Protocol):
    """What the reload needs from the root."""

    manifest: Manifest
    paths: Paths
    slots: dict[str, CellSlot]
    supervisors: dict[str, Supervisor]
    restart_log: collections.deque[RestartRecord]
    log: Callable[[str], None]

    async def start_declared(self, name: str, *, again: bool = False) -> None:
        """Bind and start manifest cell ``name`` under its supervisor (``again``: its
        slot exists, the cell ended and its supervisor forgot it)."""
        ...

    async def check_code(self, cells: Mapping[str, CellDecl],
                         templates: Mapping[str, CellDecl]) -> dict[str, str]:
        """Whether the code of these new cells and templates imports (problems by name)."""
        ...

    async def stop_declared(self, name: str) -> None:
        """Stop cell ``name`` for good and forget it."""
        ...

    async def change_replicas(self, name: str, count: int) -> str:
        """Bring replicated cell ``name`` to ``count`` replicas; say what was done."""
        ...

    async def swap_group(self, name: str, timeout: float, grace: float) -> SwapReport:
        """Swap replicated cell ``name`` to its new code, one replica at a time."""
        ...


def _load(path: Path, paths: Paths) -> Manifest:
    manifest = load_manifest(path)
    manifest.check_paths()
    manifest.check_sockets(paths)  # as `up` does: a name too long for a socket is refused
    return manifest


def _hashes(paths: dict[str, Path]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, path in paths.items():
        try:
            out[name] = hash_path(path)
        except DnaError:
            out[name] = None  # unreadable now: the swap will report why
    return out


async def _code_changed(host: ReloadHost, new: Manifest) -> list[str]:
    """Cells and templates whose DNA content on disk differs from what runs."""
    running = {name: slot.dna_digest for name, slot in host.slots.items() if slot.dna_digest}
    for slot in host.slots.values():  # a replicated cell runs as its replicas' slots
        if slot.replica is not None and slot.dna_digest:
            running[slot.replica.group] = slot.dna_digest
    paths = {name: decl.dna for name, decl in new.cells.items() if name in running}
    children = {
        t: template_children({n: s.decl for n, s in host.slots.items()}, t,
                             host.manifest.templates)
        for t in new.templates
    }
    paths.update({f"template:{t}": new.templates[t].dna for t, kids in children.items() if kids})
    hashes = await trio.to_thread.run_sync(_hashes, paths)
    changed = [n for n in new.cells if n in running and hashes.get(n) != running[n]]
    for template, kids in children.items():
        digest = hashes.get(f"template:{template}")
        if any(host.slots[k].dna_digest != digest for k in kids):
            changed.append(template)
    return changed


async def reload_mesh(
    host: ReloadHost, swapper: Swapper, launcher: Launcher, request: ReloadManifest
) -> ReloadReport:
    """Re-read ``host``'s manifest and apply the difference (see the module doc).

    Raises :class:`~cellmesh.errors.ConfigError` when the manifest is invalid
    and :class:`RootRequestError` when it cannot be read or asks for a change
    that cannot be made live (nothing is changed then).
    """
    problem = swap_times_problem(request.timeout, request.grace)
    if problem is not None:
        raise RootRequestError("reload", f"{' '.join(problem)} (nothing was changed)")
    try:
        new = await trio.to_thread.run_sync(_load, host.manifest.path, host.paths)
    except ConfigError as exc:  # stays a configuration error: the CLI exits 2, as `up`
        raise ConfigError(exc.source, f"{exc.problem} (nothing was changed)") from None
    except OSError as exc:
        raise RootRequestError("reload", f"{exc} (nothing was changed)") from None
    changed = await _code_changed(host, new)
    plan = diff_manifests(host.manifest, new, code_changed=changed)
    if plan.refused:
        raise RootRequestError(
            "reload", "refused, nothing was changed: " + "; ".join(plan.refused)
        )
    if request.dry_run:
        changes = plan.lines()
        would = [f"would {line}" for line in changes]
        if changes == ["nothing changed"]:
            would = ["nothing would change"]
        return ReloadReport(ok=True, lines=would, swaps=[])
    # As `up` does: the code of what is new must import (an on-demand cell's
    # too, or its first call would find out), else nothing changes.
    problems = await host.check_code(
        {name: new.cells[name] for name in plan.start},
        {name: t for name, t in new.templates.items()
         if host.manifest.templates.get(name) != t or name in changed},
    )
    if problems:
        raise RootRequestError("reload", "refused, nothing was changed: the code of "
                               + "; ".join(problems.values()))
    host.log(f"root: reloading {host.manifest.path}: " + "; ".join(plan.lines()))
    old = host.manifest
    host.manifest = new
    lines: list[str] = []
    ok = True
    for name in plan.stop:
        await host.stop_declared(name)
        lines.append(f"stopped {name} (removed from the manifest)")
    _retune(host, new, plan, lines)
    for name in _update(host, launcher, new, plan, lines):
        try:
            await host.start_declared(name, again=True)
        except CellmeshError as exc:
            ok = False
            lines.append(f"could not start {name} again (it ended; now permanent): {exc}")
        else:
            lines.append(f"started {name} again (it had ended; now permanent)")
    if "restart_log" in plan.root:
        host.restart_log = collections.deque(host.restart_log, maxlen=new.root.restart_log)
    if "swap_max_state" in plan.root:
        swapper.max_state = new.root.swap_max_state
    if "dna_cache_keep" in plan.root:
        launcher.pruner.keep = new.root.dna_cache_keep
        launcher.pruner.request()
    lines += [f"set [root] {key}" for key in plan.root]
    for name in plan.start:
        try:
            await host.start_declared(name)
        except CellmeshError as exc:
            ok = False
            # Not added: the next reload sees it as new again (and starts it).
            host.manifest = host.manifest.with_cell(name, None)
            lines.append(f"could not start {name} (not added; fix it and reload): {exc}")
        else:
            lines.append(f"started {name} (new in the manifest)")
    swaps: list[SwapReport] = []
    # (cell, its new declaration, its template or "", swap it?, keys set in place)
    targets: list[tuple[str, CellDecl, str, bool, tuple[str, ...]]] = [
        (c.name, new.cells[c.name], "", True, ()) for c in plan.swap
    ]
    for change in plan.swap_templates:
        kids = template_children({n: s.decl for n, s in host.slots.items()}, change.name,
                                 old.templates)
        in_place = tuple(k for k in change.keys if k in UPDATE_FIELDS)
        targets += [(kid, attrs.evolve(new.templates[change.name], name=kid), change.name,
                     len(in_place) < len(change.keys), in_place) for kid in kids]
    for name, decl, template, swap_it, in_place in targets:
        slot = host.slots.get(name)
        if slot is None:
            continue  # stopped meanwhile
        if swap_it:
            try:
                report = await swapper.swap(slot, timeout=request.timeout,
                                            grace=request.grace, decl=decl)
                swapped = _swapped(report, swaps, lines)
            except CellmeshError as exc:  # refused: a swap of it runs (the rest goes on)
                lines.append(f"could not swap {name}: {exc}")
                swapped = False
            if not swapped:
                ok = False
                # The old version runs on: so the manifest says, and the next reload retries.
                if template:
                    host.manifest = host.manifest.with_template(template, old.templates[template])
                elif name in old.cells:
                    host.manifest = host.manifest.with_cell(name, old.cells[name])
                continue
        if in_place:  # a template's restart, shutdown ...: its children's, as for a cell
            _set_in_place(host, launcher, slot, decl, in_place)
            lines.append(f"set {', '.join(in_place)} of {name}")
    for name in plan.swap_groups:
        try:
            report = await host.swap_group(name, request.timeout, request.grace)
            swapped = _swapped(report, swaps, lines, " (one replica at a time)")
        except CellmeshError as exc:
            lines.append(f"could not swap {name}: {exc}")
            swapped = False
        if not swapped:  # the old code runs on: so the manifest says (count aside)
            ok = False
            host.manifest = host.manifest.with_cell(
                name, attrs.evolve(old.cells[name], replicas=host.manifest.cells[name].replicas))
    for name, count in plan.replicas:
        try:
            lines.append(await host.change_replicas(name, count))
        except CellmeshError as exc:
            ok = False
            lines.append(f"could not change {name} to {count} replicas: {exc}")
            # The count in force is the old one: the next reload tries again.
            host.manifest = host.manifest.with_cell(
                name, attrs.evolve(host.manifest.cells[name], replicas=old.cells[name].replicas))
    return ReloadReport(ok=ok, lines=lines or ["nothing changed"], swaps=swaps)


def _swapped(report: SwapReport, swaps: list[SwapReport], lines: list[str],
             how: str = "") -> bool:
    """Keep ``report`` and its line; False when the swap did not end well."""
    swaps.append(report)
    if report.outcome in ("swapped", "unchanged", "retargeted"):
        lines.append(f"{report.outcome} {report.name}{how}")
        return True
    lines.append(f"swap of {report.name} {report.outcome.replace('_', ' ')}: {report.cause}")
    return False


def _retune(host: ReloadHost, new: Manifest, plan: ReloadPlan, lines: list[str]) -> None:
    for change in plan.retune:
        decl = new.top if change.name == new.top.name else new.supervisors[change.name]
        sup = host.supervisors.get(change.name)
        if sup is not None:
            sup.retune(intensity=decl.intensity, period=decl.period, backoff=decl.backoff)
        lines.append(f"retuned supervisor {change.name} ({', '.join(change.keys)})")


def _update(
    host: ReloadHost, launcher: Launcher, new: Manifest, plan: ReloadPlan, lines: list[str]
) -> list[str]:
    """Apply the in-place changes of cells; return the ended ones to start again."""
    ended: list[str] = []
    for change in plan.update:
        slot = host.slots.get(change.name)
        if slot is None:
            continue
        if _set_in_place(host, launcher, slot, new.cells[change.name], change.keys):
            ended.append(change.name)
        lines.append(f"set {', '.join(change.keys)} of {change.name}")
    return ended


def _set_in_place(host: ReloadHost, launcher: Launcher, slot: CellSlot, target: CellDecl,
                  keys: tuple[str, ...]) -> bool:
    """Give ``slot`` ``target``'s ``keys`` (UPDATE_FIELDS), its supervisor's spec too.

    Returns True when the cell has ended and its supervisor forgot it (a
    ``temporary`` cell that exited) while the new declaration makes it
    ``permanent``: the caller starts it again, so that what runs is what the
    manifest says.
    """
    slot.decl = attrs.evolve(slot.decl, **{k: getattr(target, k) for k in keys})
    sup = host.supervisors.get(slot.supervisor)
    if sup is not None and {"restart", "shutdown"} & set(keys):
        if any(c.child_id == slot.child_id for c in sup.which_children()):
            sup.update_child(slot.child_id, restart=target.restart, shutdown=target.shutdown)
        elif target.restart is Restart.PERMANENT:
            return True
    if "standby" in keys:
        instance = slot.instance
        if not target.standby:
            launcher.retire(slot)
        elif instance is not None and instance.state in ("starting", "running", "dormant"):
            launcher.ensure_standby(slot, busy=instance.cell_id or None)
    return False


__all__ = ["ReloadHost", "reload_mesh"]
