"""The supervision tree a manifest declares, as supervisor specs (pure: no I/O).

:func:`supervisor_spec` turns a manifest supervisor into the
:class:`~cellmesh.actors.policy.SupervisorSpec` its :class:`Supervisor` runs:
cells are workers (a replicated cell is one child, its group's supervisor),
nested supervisors are supervisor children, a ``simple_one_for_one`` has
its template as the child spec. The top one's first child is the hidden
``~dynamic`` supervisor (:func:`dynamic_spec`), in every mesh: it runs before
any cell starts, so a cell may start children in ``on_start``, and a reload
may add the first cell with children. :func:`placed_before` says where a
cell a reload adds goes among its running siblings.
"""

from __future__ import annotations

from collections.abc import Collection

from ._dynamic import DYNAMIC
from .manifest import Manifest, SupervisorDecl
from .policy import ChildKind, ChildSpec, Strategy, SupervisorSpec


def supervisor_spec(manifest: Manifest, decl: SupervisorDecl, *,
                    top: bool = False) -> SupervisorSpec:
    """The spec of manifest supervisor ``decl`` (``top``: the top one, with ``~dynamic``)."""
    children: list[ChildSpec] = []
    if top:
        children.append(ChildSpec(id=DYNAMIC, kind=ChildKind.SUPERVISOR, args=("dynamic",)))
    if decl.strategy is Strategy.SIMPLE_ONE_FOR_ONE:
        assert decl.template is not None
        tmpl = manifest.templates[decl.template]
        children.append(ChildSpec(
            id=decl.template, restart=tmpl.restart, shutdown=tmpl.shutdown,
            args=("template", decl.name, decl.template),
        ))
    for child in decl.children:
        if child in manifest.cells:
            cell = manifest.cells[child]
            group = cell.replicated  # replicas: the group is one child, a supervisor
            children.append(ChildSpec(
                id=child, restart=cell.restart, shutdown=None if group else cell.shutdown,
                kind=ChildKind.SUPERVISOR if group else ChildKind.WORKER,
                args=("group" if group else "cell", child),
            ))
        else:
            sup = manifest.supervisors[child]
            children.append(ChildSpec(
                id=child, restart=sup.restart, shutdown=sup.shutdown,
                kind=ChildKind.SUPERVISOR, args=("supervisor", child),
            ))
    return SupervisorSpec(
        strategy=decl.strategy, intensity=decl.intensity, period=decl.period,
        children=tuple(children), backoff=decl.backoff,
    )


def dynamic_spec() -> SupervisorSpec:
    """``~dynamic``: its children are independent of each other, each one's own restart
    type applies; a generous window, so one crashing template does not take the
    mesh's other dynamic children with it."""
    return SupervisorSpec(strategy=Strategy.ONE_FOR_ONE, intensity=10, period=10.0)


def placed_before(manifest: Manifest, name: str, running: Collection[str]) -> str | None:
    """The running sibling cell ``name`` goes before: the first one after it in its
    supervisor's manifest children that ``running`` holds (None: it goes last)."""
    parent = manifest.parent_of(name)
    siblings = (manifest.top if parent == manifest.top.name
                else manifest.supervisors[parent]).children
    later = siblings[siblings.index(name) + 1:] if name in siblings else ()
    return next((c for c in later if c in running), None)


__all__ = ["dynamic_spec", "placed_before", "supervisor_spec"]
