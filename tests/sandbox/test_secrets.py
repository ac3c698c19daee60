"""Secret brokers: TTL, revocation zeroes buffers, delivery inside the sandbox only."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cellmesh.sandbox import (
    CellBackend,
    CellSpec,
    EnvSecretBroker,
    FileSecretBroker,
    MemorySecretBroker,
    SandboxConfigError,
    SecretRef,
    SecretUnavailable,
    select_broker,
)

PY = sys.executable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_broker_resolve_ttl_and_revoke_zeroes() -> None:
    clock = Clock()
    broker = MemorySecretBroker(clock=clock)
    broker.put("db", b"hunter2")
    secret = broker.resolve("cell-a", SecretRef(name="DB", key="db", ttl=10))
    buf = secret.value
    assert bytes(buf) == b"hunter2"
    assert broker.held_for("cell-a") == ("db",)
    assert broker.held_for("cell-b") == ()
    assert broker.revoke_for_cell("cell-a") == 1
    assert secret.zeroed and bytes(buf) == b""
    assert broker.held_for("cell-a") == ()


def test_expired_secrets_are_zeroed_and_dropped() -> None:
    clock = Clock()
    broker = MemorySecretBroker(clock=clock)
    broker.put("k", b"value")
    secret = broker.resolve("c", SecretRef(name="K", key="k", ttl=5))
    clock.now += 5
    assert broker.held_for("c") == ()
    assert secret.zeroed


def test_repr_never_shows_the_value() -> None:
    broker = MemorySecretBroker()
    broker.put("k", b"do-not-print")
    secret = broker.resolve("c", SecretRef(name="K", key="k"))
    assert "do-not-print" not in repr(secret)
    assert "do-not-print" not in repr(broker)


def test_unknown_key_is_unavailable() -> None:
    with pytest.raises(SecretUnavailable):
        MemorySecretBroker().resolve("c", SecretRef(name="K", key="missing"))


def test_env_broker() -> None:
    broker = EnvSecretBroker(environ={"CELL_SECRET_API_KEY": "abc"})
    assert bytes(broker.resolve("c", SecretRef(name="A", key="api-key")).value) == b"abc"
    with pytest.raises(SecretUnavailable):
        broker.resolve("c", SecretRef(name="B", key="other"))
    assert broker.revoke_for_cell("c") == 1


def test_file_broker_requires_a_private_directory(tmp_path: Path) -> None:
    store = tmp_path / "secrets"
    store.mkdir(mode=0o700)
    (store / "token").write_bytes(b"t0k3n")
    broker = FileSecretBroker(directory=store)
    assert bytes(broker.resolve("c", SecretRef(name="T", key="token")).value) == b"t0k3n"
    store.chmod(0o755)
    with pytest.raises(SecretUnavailable):
        broker.resolve("c", SecretRef(name="T", key="token"))


def test_select_broker(tmp_path: Path) -> None:
    assert isinstance(select_broker({}), MemorySecretBroker)
    assert isinstance(select_broker({"CELL_SECRETS": "env"}), EnvSecretBroker)
    fb = select_broker({"CELL_SECRETS": "file", "CELL_SECRETS_DIR": str(tmp_path)})
    assert isinstance(fb, FileSecretBroker)
    with pytest.raises(SandboxConfigError) as info:
        select_broker({"CELL_SECRETS": "vault"})
    assert "memory, env, file" in str(info.value)
    with pytest.raises(SandboxConfigError):
        select_broker({"CELL_SECRETS": "file"})


def test_secrets_delivered_inside_and_revoked_at_teardown(
    real_backend: CellBackend, broker: MemorySecretBroker, tmp_path: Path
) -> None:
    broker.put("db", b"pw-in-env")
    broker.put("cert", b"pw-in-file")
    code = (
        "import os; p = os.environ['CELL_SECRET_FILE_CERT']; "
        "print(os.environ['DB_PASSWORD'], open(p).read(), p, oct(os.stat(p).st_mode & 0o777))"
    )
    real_backend.create(
        CellSpec(
            name="sec",
            argv=[PY, "-c", code],
            secrets=[
                SecretRef(name="DB_PASSWORD", key="db"),
                SecretRef(name="CERT", key="cert", deliver="file"),
            ],
        )
    )
    r, w = os.pipe()
    try:
        real_backend.spawn("sec", stdout=w)
        os.close(w)
        w = -1
        assert real_backend.wait("sec", timeout=60).reason == "exit"
        out = os.read(r, 4096).decode().split()
    finally:
        if w >= 0:
            os.close(w)
        os.close(r)
    assert out[:2] == ["pw-in-env", "pw-in-file"]
    if real_backend.name == "bwrap":
        assert out[2:] == ["/run/secrets/CERT", "0o400"]
    else:
        assert out[2].startswith("/proc/self/fd/")
    held = [broker.resolve("probe", SecretRef(name="X", key="db"))]
    broker.revoke_for_cell("probe")
    assert held[0].zeroed
    assert set(broker.held_for("sec")) == {"db", "cert"}
    assert real_backend.destroy("sec").secrets_revoked == 2
    assert broker.held_for("sec") == ()
    # Nothing about the secret reached the host disk under the cell's home.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"pw-in-file" not in path.read_bytes()
