"""The exactly-once sink's fences, progress and settings, without a broker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from flows.cli import main as cli_main
from flows.dataflow import build_flow
from flows.main import load_models
from operators.exactly_once import Fences, SourceProgress
from operators.messages import OutMessage
from operators.metrics import ServiceMetrics
from schemas.errors import ConfigError
from schemas.settings import load_settings
from state.memory import MemoryStore


def _msg(origin: str, position: int) -> OutMessage:
    return OutMessage("t", None, b"{}", origin, position)


def test_fences_drop_only_what_was_committed_before_the_start() -> None:
    fences = Fences({"in#0": 10, "agg@m0": 600_000})
    kept = [
        m
        for m in (_msg("in#0", 3), _msg("in#0", 11), _msg("agg@m0", 600_000), _msg("in#1", 0))
        if fences.admit(m)
    ]
    assert [(m.origin, m.position) for m in kept] == [("in#0", 11), ("in#1", 0)]
    assert fences.dropped == 2
    # What this run commits is never dropped again by this run, even below a later position.
    assert fences.commit() == {"in#0": 11, "agg@m0": 600_000, "in#1": 0}
    assert fences.admit(_msg("in#1", 0))


def test_a_commit_record_holds_every_origin_and_the_open_transaction() -> None:
    fences = Fences({"a": 5})
    for position in (7, 6, 9, 8):  # an epoch's output arrives out of order across shards
        fences.admit(_msg("b", position))
    assert fences.marker() == {"a": 5, "b": 9}
    assert fences.commit() == {"a": 5, "b": 9}
    assert fences.marker() == {"a": 5, "b": 9}


def test_messages_without_an_origin_are_always_kept() -> None:
    fences = Fences({"": 100})
    assert fences.admit(OutMessage("t", None, b"{}"))
    assert fences.marker() == {"": 100}


def test_source_progress_ignores_partitions_not_read_yet() -> None:
    progress = SourceProgress()
    progress.record("transactions", 0, -2)
    progress.record("transactions", 1, 42)
    progress.record("transactions", 1, 43)
    assert progress.offsets() == {("transactions", 1): 43}


def test_exactly_once_without_recovery_is_a_config_error(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, delivery="exactly-once", metrics_port=0)
    metrics = ServiceMetrics.create(CollectorRegistry())
    with pytest.raises(ConfigError, match=r"STREAMSCORE_DELIVERY.*STREAMSCORE_RECOVERY_DIR"):
        build_flow(
            settings, models=load_models(settings, metrics), metrics=metrics, store=MemoryStore
        )


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"STREAMSCORE_DELIVERY": "twice"}, "STREAMSCORE_DELIVERY (--delivery)"),
        ({"STREAMSCORE_FLOW_NAME": "a b"}, "STREAMSCORE_FLOW_NAME (--flow-name)"),
    ],
)
def test_bad_delivery_settings_exit_2_naming_the_setting(
    env: dict[str, str],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in list(os.environ):
        if name.startswith("STREAMSCORE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli_main(["topics"]) == 2
    assert needle in capsys.readouterr().err
