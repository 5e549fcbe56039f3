"""The stage profile runs the real flow in process and accounts for its CPU by stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.stages import ENGINE, OTHER, STAGES, main, profile, render, simulated_partitions


def test_simulated_partitions_hold_every_record_once_in_offset_order() -> None:
    parts = simulated_partitions(2_000, 200, 3)
    assert sum(len(r) for r in parts.values()) == 2_000
    for name, records in parts.items():
        topic, _, partition = name.rpartition("#")
        assert all(r.topic == topic and r.partition == int(partition) for r in records)
        assert [r.offset for r in records] == list(range(len(records)))


def test_every_transaction_is_scored_and_the_stages_add_up_to_the_run() -> None:
    result = profile(3_000, 300, 2, 500)
    assert result["outputs"]["scores"] == result["transactions"] > 0
    stages = result["stages_cpu_s"]
    assert list(stages) == [*(name for name, _ in STAGES), OTHER, ENGINE]
    # The flow's own stages all ran, and nothing is counted twice.
    for name in ("decode", "card windows", "merchant windows", "scoring", "quality"):
        assert stages[name] > 0, name
    assert sum(stages.values()) == pytest.approx(max(result["cpu_s"], sum(stages.values())))
    assert "scoring" in render(result)


def test_main_writes_the_figures_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "stages.json"
    assert main(["--events", "1500", "--cards", "150", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["transactions"] == figures["outputs"]["scores"]
    assert "us an event" in capsys.readouterr().out
