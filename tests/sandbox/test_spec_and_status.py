"""Values (WorkloadEnv, Limits, SecretRef, CellSpec), backend selection and exit classification."""

from __future__ import annotations

import signal
import warnings
from pathlib import Path

import pytest

from cellmesh.errors import ConfigError
from cellmesh.sandbox import (
    BACKEND_NAMES,
    BackendUnavailable,
    CellSpec,
    ExitStatus,
    Limits,
    SandboxConfigError,
    SandboxDowngradeWarning,
    SecretRef,
    StubBackend,
    WorkloadEnv,
    parse_size,
    select_backend,
)
from cellmesh.sandbox._status import LimitEvidence, classify_exit


@pytest.mark.parametrize(
    ("key", "value"),
    [("", "x"), ("A=B", "x"), ("A\0B", "x"), ("A", "x\0y")],
)
def test_workload_env_rejects_bad_entries(key: str, value: str) -> None:
    with pytest.raises(SandboxConfigError):
        WorkloadEnv(items={key: value})
    with pytest.raises(SandboxConfigError):
        WorkloadEnv().with_var(key, value)


def test_workload_env_is_an_immutable_exact_set() -> None:
    env = WorkloadEnv(items={"A": "1"})
    grown = env.with_var("B", "2").with_var("A", "3")
    assert env.as_dict() == {"A": "1"}
    assert grown.as_dict() == {"A": "3", "B": "2"}
    assert len(grown) == 2
    assert dict(iter(grown)) == {"A": "3", "B": "2"}
    with pytest.raises(SandboxConfigError):
        WorkloadEnv(items=[("A", "1"), ("A", "2")])
    assert isinstance(SandboxConfigError("x", "y"), ConfigError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("256M", 256 << 20), ("1G", 1 << 30), ("64k", 64 << 10), ("4096", 4096), ("1.5G", 3 << 29)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "-1M", "0", "12Q", "1e9"])
def test_parse_size_rejects_garbage(text: str) -> None:
    with pytest.raises(SandboxConfigError):
        parse_size(text)


@pytest.mark.parametrize(
    "kw", [{"memory": 0}, {"memory": -5}, {"pids": 1.5}, {"cpu": 0}, {"open_files": True}]
)
def test_limits_reject_non_positive(kw: dict[str, object]) -> None:
    with pytest.raises(SandboxConfigError):
        Limits(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "said"),
    [
        ({"cpu": 1e308}, "limits.cpu: cpu = 1e+308 is more than any host applies"),
        ({"cpu": float("nan")}, "limits.cpu: cpu is not a number"),
        ({"cpu": 1e-300}, "limits.cpu: cpu = 1e-300 is less than the cgroup CPU controller"),
        ({"pids": 10**17}, "limits.pids: pids = 100000000000000000 is more"),
        ({"open_files": 10**10}, "limits.open_files: open_files = 10000000000 is more"),
        ({"memory": 1 << 60}, "limits.memory: memory = 1152921504606846976 is more"),
    ],
)
def test_limits_reject_what_no_kernel_applies(kw: dict[str, object], said: str) -> None:
    with pytest.raises(SandboxConfigError) as info:
        Limits(**kw)  # type: ignore[arg-type]
    assert str(info.value).startswith(said)
    Limits(memory=1 << 50, cpu=4096, pids=4_194_304, open_files=1 << 20)  # the maxima pass


@pytest.mark.parametrize(
    "kw",
    [
        {"name": "bad-name", "key": "k"},
        {"name": "OK", "key": ""},
        {"name": "OK", "key": "a/b"},
        {"name": "OK", "key": "k", "deliver": "disk"},
        {"name": "OK", "key": "k", "ttl": 0},
    ],
)
def test_secret_ref_validation(kw: dict[str, object]) -> None:
    with pytest.raises(SandboxConfigError):
        SecretRef(**kw)  # type: ignore[arg-type]


def test_cell_spec_requires_absolute_paths_and_unique_secret_names() -> None:
    with pytest.raises(SandboxConfigError):
        CellSpec(name="a", argv=["x"], data_dir="relative/dir")
    ref = SecretRef(name="TOKEN", key="k")
    with pytest.raises(SandboxConfigError):
        CellSpec(name="a", argv=["x"], secrets=[ref, ref])
    assert CellSpec(name="a", argv=["x"]).cell_id == "a"


def test_select_backend_rejects_unknown_value_listing_valid_ones() -> None:
    with pytest.raises(SandboxConfigError) as info:
        select_backend({"CELL_SANDBOX": "docker"})
    for name in BACKEND_NAMES:
        assert name in str(info.value)


def test_select_backend_stub_and_host() -> None:
    assert isinstance(select_backend({"CELL_SANDBOX": "stub"}), StubBackend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        be = select_backend({"CELL_SANDBOX": "host", "CELL_HOME": "/nonexistent-cellhome"})
    assert be.name == "host"


def test_select_backend_refuses_a_cgroup_parent_it_cannot_use(tmp_path: Path) -> None:
    """Set by name and unusable: an error naming the variable and why, not limits
    that silently fall back to rlimits (an audit found the fallback silent)."""
    for parent in ("/nonexistent/cellmesh-x", str(tmp_path)):
        env = {"CELL_SANDBOX": "host", "CELL_HOME": str(tmp_path / "home"),
               "CELL_CGROUP_PARENT": parent}
        with pytest.raises(SandboxConfigError) as info:
            select_backend(env)
        text = str(info.value)
        assert "CELL_CGROUP_PARENT" in text and "cannot be used" in text, text
        assert parent in text or "cgroup2" in text, text


def test_classify_exit() -> None:
    none = LimitEvidence()
    assert classify_exit(0, stopped_by_us=False, evidence=none) == ExitStatus(
        code=0, signal=None, reason="exit"
    )
    assert classify_exit(2, stopped_by_us=False, evidence=none).reason == "crash"
    killed = classify_exit(-signal.SIGSEGV, stopped_by_us=False, evidence=none)
    assert (killed.signal, killed.reason) == (signal.SIGSEGV, "crash")
    stop = classify_exit(-signal.SIGTERM, stopped_by_us=True, evidence=none)
    assert stop.reason == "stop"
    oom = classify_exit(-9, stopped_by_us=True, evidence=LimitEvidence(oom_killed=True))
    assert (oom.reason, oom.limit) == ("limit", "memory")
    rl = LimitEvidence(memory_rlimit=True)
    assert classify_exit(-signal.SIGKILL, stopped_by_us=False, evidence=rl).reason == "limit"
    assert classify_exit(137, stopped_by_us=False, evidence=rl).reason == "limit"
    assert classify_exit(1, stopped_by_us=False, evidence=rl).reason == "crash"
    # bwrap reports a signal death of the workload as 128 + signum.
    via_bwrap = classify_exit(
        128 + 11, stopped_by_us=False, evidence=none, signal_as_code_offset=True
    )
    assert (via_bwrap.code, via_bwrap.signal, via_bwrap.reason) == (None, 11, "crash")
    assert via_bwrap.to_json()["signal_name"] == "SIGSEGV"


def test_auto_falls_back_to_host_with_one_warning_when_bwrap_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on this PATH
    env = {"CELL_HOME": str(tmp_path / "home")}
    with pytest.warns(SandboxDowngradeWarning, match="bwrap is not installed") as record:
        backend = select_backend(env)
    assert backend.name == "host"
    assert len(record) == 1
    with pytest.raises(BackendUnavailable):
        select_backend({**env, "CELL_SANDBOX": "bwrap"})
