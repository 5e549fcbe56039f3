"""Host scaling: one CPU-bound child against two at once, and how the report shows it."""

from __future__ import annotations

import json

import pytest

from benchmarks import host
from benchmarks.host import HostScaling
from benchmarks.report import build_report, summary_lines
from tests.unit.benchmarks.test_replay import _results


def test_a_small_measurement_times_each_child_alone_and_together() -> None:
    measured = host.measure(2, work=20_000, rounds=2)
    assert (measured.processes, measured.work, measured.rounds) == (2, 20_000, 2)
    for seconds in (
        measured.solo_wall_s,
        measured.solo_cpu_s,
        measured.together_wall_s,
        measured.together_cpu_s,
    ):
        assert 0 < seconds < 60
    assert measured.speedup > 0
    assert measured.cpu_inflation > 0


def test_fewer_than_two_processes_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        host.measure(1)


def test_the_workload_is_the_same_work_every_time() -> None:
    assert host.workload(10_000) == host.workload(10_000)
    assert host.workload(10_000) != host.workload(10_001)


def test_the_report_carries_the_host_figures_and_their_line() -> None:
    scaling = HostScaling(2, 4_000_000, 3, 1.0, 0.95, 1.6, 1.5)
    report = build_report(_results(host=scaling))
    got = json.loads(json.dumps(report))["host_scaling"]
    assert got["speedup"] == pytest.approx(1.25)
    assert got["cpu_inflation"] == pytest.approx(1.5 / 0.95)
    assert got["solo_wall_s"] == 1.0
    summary = "\n".join(summary_lines(_results(host=scaling)))
    assert "2 CPU-bound Python processes at once did 1.25x the work of one" in summary
    assert build_report(_results())["host_scaling"] is None
    assert "CPU-bound" not in "\n".join(summary_lines(_results()))
