"""Manifest reload decisions: the difference between the running manifest and the new one.

Theory of operation
-------------------
``cellmesh reload`` re-reads the manifest of a running root and applies the
difference (docs/swap.md). :func:`diff_manifests` is that difference as a
pure function: two validated :class:`~cellmesh.actors.manifest.Manifest`
values and the names of the cells whose code changed on disk in, a
:class:`ReloadPlan` out. The driver (:mod:`cellmesh.actors._reload`) applies
a plan in this order, so that what a step needs exists when it runs:

1. **stop** the cells that are gone (reverse manifest order);
2. **retune** supervisors whose intensity, period or backoff changed, and
   **update** in place the cells whose supervision settings changed
   (``restart``, ``shutdown``, ``start_timeout``, ``activation``, ``standby``);
3. **start** the new cells (manifest order), so a changed cell that now
   calls one finds its socket;
4. **swap** the cells whose code or sandbox changed (DNA content, ``dna``,
   ``entry``, ``calls``, ``env``, ``limits``, ``secrets``, ``data``,
   ``network``, ``max_children``, ``templates``): see
   :mod:`cellmesh.actors.swap`;
5. change the **replicas** count of replicated cells, one server at a time
   (``Root.change_replicas``, docs/root.md "Replicated cells").

What cannot change under a running root is **refused**, and a plan with a
refusal is applied not at all: a new or removed supervisor, another
strategy, template or restart type of a supervisor, a cell moved between
supervisors or children reordered, ``[root]`` keys other than
``restart_log``, ``swap_max_state`` and ``dna_cache_keep``, and any cell key this module does
not classify. A replicated cell changes only its ``replicas`` count live:
adding or removing one, making a cell replicated or not, and any other
change to one (its code included) are refused. Each refusal names the
manifest key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from .manifest import CellDecl, Manifest, SupervisorDecl

#: Cell keys whose change needs a new process (and sandbox): applied by a swap.
SWAP_FIELDS: Final = frozenset({
    "dna", "entry", "calls", "env", "limits", "secrets", "data", "network", "max_children",
    "templates",
})
#: Cell keys applied in place, without touching the process.
UPDATE_FIELDS: Final = frozenset({
    "restart", "shutdown", "start_timeout", "activation", "standby",
})
#: Keys that only describe the declaration itself.
_IDENTITY_FIELDS: Final = frozenset({"name", "is_template"})
#: ``[root]`` keys a reload applies.
ROOT_LIVE_FIELDS: Final = frozenset({"restart_log", "swap_max_state", "dna_cache_keep"})
#: Supervisor keys a reload applies.
SUPERVISOR_LIVE_FIELDS: Final = frozenset({"intensity", "period", "backoff"})


@attrs.frozen(kw_only=True)
class Change:
    """One changed entry: ``name`` and the keys that differ (sorted)."""

    name: str
    keys: tuple[str, ...]


@attrs.frozen(kw_only=True)
class ReloadPlan:
    """What a reload does (see the module docstring for the order)."""

    stop: tuple[str, ...] = ()
    retune: tuple[Change, ...] = ()
    update: tuple[Change, ...] = ()
    start: tuple[str, ...] = ()
    swap: tuple[Change, ...] = ()
    swap_templates: tuple[Change, ...] = ()
    root: tuple[str, ...] = ()
    #: Replicated cells whose ``replicas`` count changes, with the new count.
    replicas: tuple[tuple[str, int], ...] = ()
    #: Replicated cells whose code changed on disk: swapped one replica at a time.
    swap_groups: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing to do (and nothing refused)."""
        return not (self.stop or self.retune or self.update or self.start or self.swap
                    or self.swap_templates or self.root or self.replicas or self.swap_groups
                    or self.refused)

    def lines(self) -> list[str]:
        """One line per step, in the order they are applied."""
        out = [f"stop {name} (removed from the manifest)" for name in self.stop]
        out += [f"retune supervisor {c.name} ({', '.join(c.keys)})" for c in self.retune]
        out += [f"set {', '.join(c.keys)} of {c.name}" for c in self.update]
        out += [f"set [root] {key}" for key in self.root]
        out += [f"start {name} (new in the manifest)" for name in self.start]
        out += [f"swap {c.name} ({', '.join(c.keys)} changed)" for c in self.swap]
        for c in self.swap_templates:
            if set(c.keys) <= UPDATE_FIELDS:
                out.append(f"set {', '.join(c.keys)} of the running children of template "
                           f"{c.name}")
            else:
                out.append(f"swap the running children of template {c.name} "
                           f"({', '.join(c.keys)} changed)")
        out += [f"swap {name} one replica at a time (dna content changed)"
                for name in self.swap_groups]
        out += [f"change {name} to {count} replicas" for name, count in self.replicas]
        return out or ["nothing changed"]


def _changed(old: object, new: object, names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if getattr(old, n) != getattr(new, n))


def _cell_keys(old: CellDecl, new: CellDecl, code_changed: bool) -> list[str]:
    keys = _changed(old, new, (f.name for f in attrs.fields(CellDecl)))
    keys = [k for k in keys if k not in _IDENTITY_FIELDS]
    if code_changed and "dna" not in keys:
        keys.append("dna content")
    return keys


def _split(keys: list[str], where: str, refused: list[str]) -> tuple[list[str], list[str]]:
    """(keys for a swap, keys applied in place); unknown keys are refused."""
    swap = [k for k in keys if k in SWAP_FIELDS or k == "dna content"]
    update = [k for k in keys if k in UPDATE_FIELDS]
    refused += [f"{where}.{k}: cannot be changed while the mesh runs"
                for k in keys if k not in SWAP_FIELDS | UPDATE_FIELDS | {"dna content"}]
    return swap, update


def _supervisors(m: Manifest) -> dict[str, SupervisorDecl]:
    return {m.top.name: m.top, **m.supervisors}


def diff_manifests(
    old: Manifest, new: Manifest, *, code_changed: Iterable[str] = ()
) -> ReloadPlan:
    """The plan that turns a root running ``old`` into one running ``new``.

    ``code_changed`` names the cells and templates whose DNA content on disk
    differs from what runs (the driver hashes it; this function reads no
    file). Pure: no I/O, no clock.
    """
    code = frozenset(code_changed)
    refused: list[str] = []
    old_sups, new_sups = _supervisors(old), _supervisors(new)
    for name in sorted(set(old_sups) ^ set(new_sups)):
        verb = "added" if name in new_sups else "removed"
        refused.append(f"supervisors.{name}: a supervisor cannot be {verb} while the mesh "
                       "runs (cellmesh down, then up)")
    retune: list[Change] = []
    for name in sorted(old_sups.keys() & new_sups.keys()):
        before, after = old_sups[name], new_sups[name]
        key = "supervisor" if name == old.top.name else f"supervisors.{name}"
        for field in _changed(before, after, ("strategy", "template", "restart", "shutdown")):
            refused.append(f"{key}.{field}: cannot be changed while the mesh runs")
        live = _changed(before, after, SUPERVISOR_LIVE_FIELDS)
        if live:
            retune.append(Change(name=name, keys=tuple(live)))
        kept_before = [c for c in before.children if c in after.children]
        kept_after = [c for c in after.children if c in before.children]
        if kept_before != kept_after:
            refused.append(f"{key}.children: the order of running children cannot change")
    removed = [n for n in old.cells if n not in new.cells]
    added = [n for n in new.cells if n not in old.cells]
    for name in removed + added:
        if name in old.templates or name in new.templates:
            refused.append(f"cells.{name}: a name cannot move between cells and templates")
    for name in sorted(old.cells.keys() & new.cells.keys()):
        if old.parent_of(name) != new.parent_of(name):
            refused.append(f"cells.{name}: cannot move to another supervisor while it runs")
    for name in removed + added:
        decl = old.cells.get(name) or new.cells[name]
        if decl.replicated:
            verb = "removed" if name in removed else "added"
            refused.append(f"cells.{name}: a replicated cell cannot be {verb} while the mesh "
                           "runs (cellmesh down, then up)")
    swap: list[Change] = []
    update: list[Change] = []
    replicas: list[tuple[str, int]] = []
    swap_groups: list[str] = []
    for name in new.cells:
        if name not in old.cells:
            continue
        old_cell, new_cell = old.cells[name], new.cells[name]
        if old_cell.replicated or new_cell.replicated:
            keys = _cell_keys(old_cell, new_cell, name in code)
            replicas += _replicated(name, old_cell, new_cell, keys, refused)
            if "dna content" in keys and old_cell.replicated == new_cell.replicated:
                swap_groups.append(name)  # its new code, one replica at a time
            continue
        keys = _cell_keys(old.cells[name], new.cells[name], name in code)
        to_swap, in_place = _split(keys, f"cells.{name}", refused)
        if to_swap:
            swap.append(Change(name=name, keys=tuple(to_swap)))
        if in_place:
            update.append(Change(name=name, keys=tuple(in_place)))
    templates: list[Change] = []
    for name, decl in new.templates.items():
        was = old.templates.get(name)
        if was is None:
            continue  # a new template: cells may use it from now on
        keys = _cell_keys(was, decl, name in code)
        to_swap, in_place = _split(keys, f"templates.{name}", refused)
        if to_swap or in_place:
            templates.append(Change(name=name, keys=tuple(to_swap + in_place)))
    for name in old.templates:
        if name not in new.templates and any(
            name in c.templates for c in new.cells.values()
        ):
            refused.append(f"templates.{name}: removed but still named by a cell")
    root_keys = _changed(old.root, new.root, (f.name for f in attrs.fields(type(old.root))))
    refused += [f"root.{k}: cannot be changed while the mesh runs"
                for k in root_keys if k not in ROOT_LIVE_FIELDS]
    return ReloadPlan(
        stop=tuple(reversed(removed)), retune=tuple(retune), update=tuple(update),
        start=tuple(added), swap=tuple(swap), swap_templates=tuple(templates),
        root=tuple(k for k in root_keys if k in ROOT_LIVE_FIELDS), replicas=tuple(replicas),
        swap_groups=tuple(swap_groups),
        refused=tuple(refused),
    )


def _replicated(
    name: str, before: CellDecl, after: CellDecl, keys: list[str], refused: list[str]
) -> list[tuple[str, int]]:
    """A replicated cell's change: its new count, if only ``replicas`` changed (else refused)."""
    if before.replicated != after.replicated:
        refused.append(f"cells.{name}.replicas: a cell cannot become (or stop being) "
                       "replicated while the mesh runs (cellmesh down, then up)")
        return []
    others = [k for k in keys if k not in ("replicas", "dna content")]
    refused += [f"cells.{name}.{k}: a replicated cell's {k} cannot change while the mesh "
                "runs (cellmesh down, then up)" for k in others]
    if "replicas" in keys and not others:
        assert after.replicas is not None
        return [(name, after.replicas)]
    return []


def template_children(
    slots: Mapping[str, CellDecl], template: str, templates: Mapping[str, CellDecl]
) -> list[str]:
    """Names of running cells made from ``template`` (their declaration is the template's)."""
    decl = templates.get(template)
    if decl is None:
        return []
    return [name for name, d in slots.items() if attrs.evolve(d, name=decl.name) == decl]


__all__ = [
    "ROOT_LIVE_FIELDS",
    "SUPERVISOR_LIVE_FIELDS",
    "SWAP_FIELDS",
    "UPDATE_FIELDS",
    "Change",
    "ReloadPlan",
    "diff_manifests",
    "template_children",
]
