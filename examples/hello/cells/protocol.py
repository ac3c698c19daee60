"""The proteins (typed messages) the cells and the client exchange.

A request protein names its reply type (``cellmesh.Request[Reply]``), so
``await syn.fire(Greet("you"))`` is a ``Greeting`` to mypy, and a cell that
answers with anything else raises ``cellmesh.UnexpectedReply`` at the caller.
"""

from __future__ import annotations

import cellmesh


@cellmesh.protein("hello.Counted")
class Counted:
    """How many times a name has visited."""

    name: str
    visits: int


@cellmesh.protein("hello.Count")
class Count(cellmesh.Request[Counted]):
    """Count one more visit of ``name``."""

    name: str


@cellmesh.protein("hello.Greeting")
class Greeting:
    """A greeting for a visitor."""

    text: str
    visits: int


@cellmesh.protein("hello.Greet")
class Greet(cellmesh.Request[Greeting]):
    """Greet ``name``."""

    name: str
