"""The ping protocol: the proteins both cells share (the seed's ``PingMsg``)."""

import cellmesh


@cellmesh.protein("ping.Ping")
class Ping:
    n: int


@cellmesh.protein("ping.Pong")
class Pong:
    n: int
