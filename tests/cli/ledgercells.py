"""DNA for the ledger CLI tests: the ledger comes with cellmesh; ``Plain`` is not a ledger."""

from __future__ import annotations

import cellmesh


@cellmesh.protein("tests.cli.Hello")
class Hello:
    text: str


class Plain(cellmesh.Cell):
    """A cell that is not a ledger (the CLI must say so)."""

    @cellmesh.receptor
    async def hello(self, msg: Hello) -> Hello:
        return msg
