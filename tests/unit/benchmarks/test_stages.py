"""The stage profile runs the real flow in process and accounts for its CPU by stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.stages import ENGINE, OTHER, STAGES, main, profile, render, simulated_log


def test_simulated_log_holds_every_record_once_in_offset_order() -> None:
    log = simulated_log(2_000, 200, 3)
    assert len(log) == 2_000
    parts: dict[tuple[str, int], list[int]] = {}
    for r in log:
        parts.setdefault((r.kind, r.partition), []).append(r.offset)
    assert {p for _kind, p in parts} == {0, 1, 2}
    for offsets in parts.values():
        assert offsets == list(range(len(offsets)))


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
