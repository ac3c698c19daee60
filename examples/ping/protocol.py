"""The ping protocol: the proteins both cells share (the seed's ``PingMsg``).

``Ping`` is a request whose reply is a ``Pong``: to mypy, ``await
syn.fire(Ping(1))`` is a ``Pong``; at run time another reply raises
``cellmesh.UnexpectedReply``.
"""

import cellmesh


@cellmesh.protein("ping.Pong")
class Pong:
    n: int


@cellmesh.protein("ping.Ping")
class Ping(cellmesh.Request[Pong]):
    n: int
