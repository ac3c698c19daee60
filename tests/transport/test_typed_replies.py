"""Typed replies and typed remote errors over real sockets."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import cellmesh
from cellmesh import (
    NoReceptor,
    Receptors,
    RemoteCellError,
    RemoteProteinError,
    Request,
    Synapse,
    UnexpectedReply,
    open_membrane,
)
from cellmesh.errors import ErrorCode
from cellmesh.wire.proteins import ProteinRegistry


@cellmesh.protein("test.tr.Pong")
class Pong:
    n: int


@cellmesh.protein("test.tr.Ping")
class Ping(Request[Pong]):
    n: int


@cellmesh.protein("test.tr.Liar")
class Liar(Request[Pong]):
    """Its handler answers with the wrong protein."""

    n: int


@cellmesh.protein("test.tr.Unserved")
class Unserved:
    n: int


@pytest.fixture
async def sockdir() -> AsyncIterator[Path]:
    with tempfile.TemporaryDirectory(prefix="cm-") as path:
        receptors = Receptors()

        async def ping(msg: Ping) -> Pong:
            return Pong(msg.n + 1)

        async def liar(msg: Liar) -> Ping:
            return Ping(msg.n)

        receptors.add(Ping, ping)
        receptors.add(Liar, liar)
        async with open_membrane("svc", receptors, socket_dir=path):
            yield Path(path)


async def test_fire_checks_the_declared_reply_type(sockdir: Path) -> None:
    async with Synapse.grow("svc", socket_dir=sockdir) as syn:
        pong = await syn.fire(Ping(1))
        assert pong == Pong(2)
        with pytest.raises(UnexpectedReply) as info:
            await syn.fire(Liar(1))
        assert (info.value.cell, info.value.request, info.value.got) == (
            "svc", "test.tr.Liar", "test.tr.Ping"
        )
        assert await syn.fire(Ping(5)) == Pong(6)  # the connection is fine


async def test_fire_many_checks_every_reply_after_all_finish(sockdir: Path) -> None:
    async with Synapse.grow("svc", socket_dir=sockdir) as syn:
        assert await syn.fire_many([Ping(i) for i in range(300)]) == [
            Pong(i + 1) for i in range(300)
        ]
        with pytest.raises(UnexpectedReply):
            await syn.fire_many([Ping(1), Liar(2), Ping(3)])
        assert await syn.fire_many([Ping(7)]) == [Pong(8)]


async def test_no_receptor_and_unreadable_messages_are_typed_remote_errors(
    sockdir: Path,
) -> None:
    async with Synapse.grow("svc", socket_dir=sockdir) as syn:
        with pytest.raises(NoReceptor) as info:
            await syn.fire(Unserved(1))
        assert isinstance(info.value, RemoteCellError)
        assert info.value.code == ErrorCode.NO_HANDLER
        assert str(info.value) == "cell 'svc': no receptor for Unserved"
        assert "_dispatch" not in str(info.value)
    other = ProteinRegistry()

    @cellmesh.protein("test.tr.Stranger", registry=other)
    class Stranger:
        x: int

    async with Synapse.grow("svc", socket_dir=sockdir, registry=other) as syn:
        with pytest.raises(RemoteProteinError) as perr:
            await syn.fire(Stranger(1))
        assert perr.value.code == ErrorCode.UNKNOWN_PROTEIN
        assert str(perr.value).startswith(
            "cell 'svc' could not read the message: unknown protein 'test.tr.Stranger': "
            "the receiving process defines no protein of that wire name"
        )
