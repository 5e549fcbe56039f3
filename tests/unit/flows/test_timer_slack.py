"""A cluster's main thread runs with coarse timers; its worker threads with the fine ones."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.run import cli_main
from bytewax.testing import TestingSink
from prometheus_client import CollectorRegistry

from flows.dataflow import build_flow
from flows.main import load_models
from flows.timer_slack import (
    MAIN_THREAD_SLACK_NS,
    FineTimers,
    coarse_main_thread,
    restore_thread,
    thread_slack_ns,
)
from operators.metrics import ServiceMetrics
from schemas.settings import load_settings
from state.memory import MemoryStore

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


def _in_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` on a new thread (a thread's slack is its own: the test's stays as it is)."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def _restored() -> int | None:
    restore_thread()
    return thread_slack_ns()


@linux_only
def test_coarse_main_thread_holds_for_its_block_and_is_set_back() -> None:
    def run() -> tuple[int | None, ...]:
        before = thread_slack_ns()
        with coarse_main_thread(7_000_000):
            inside = thread_slack_ns()
            inherited = _in_thread(thread_slack_ns)  # a thread created meanwhile
            set_back = _in_thread(_restored)
        restore_thread()  # outside the block: nothing to do
        return before, inside, inherited, set_back, thread_slack_ns()

    before, inside, inherited, set_back, after = _in_thread(run)
    assert before is not None and before != 7_000_000
    assert inside == inherited == 7_000_000
    assert set_back == after == before


class _SlackPartition(StatefulSourcePartition[int | None, None]):
    """Emits, once, the timer slack of the thread that polls it."""

    def __init__(self) -> None:
        self._done = False

    def next_batch(self) -> Iterable[int | None]:
        if self._done:
            raise StopIteration
        self._done = True
        return [thread_slack_ns()]

    def snapshot(self) -> None:
        return None


class _SlackSource(FixedPartitionedSource[int | None, None]):
    def list_parts(self) -> list[str]:
        return [f"p{i}" for i in range(8)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _SlackPartition:
        return _SlackPartition()


def _workers_slack(source: FixedPartitionedSource[Any, Any]) -> list[int | None]:
    """Each partition's worker thread's slack, in a bytewax cluster of 2 workers."""
    seen: list[int | None] = []
    flow = Dataflow("slack")
    op.output("out", op.input("in", flow, source), TestingSink(seen))

    def run() -> None:
        with coarse_main_thread():
            cli_main(flow, workers_per_process=2)  # type: ignore[no-untyped-call]

    _in_thread(run)
    return seen


@linux_only
def test_cluster_workers_run_with_fine_timers_under_a_coarse_main_thread() -> None:
    fine = thread_slack_ns()
    # Unwrapped, bytewax's worker threads inherit the main thread's coarse slack ...
    assert _workers_slack(_SlackSource()) == [MAIN_THREAD_SLACK_NS] * 8
    # ... and the flow's source wrapper sets each worker's back before it polls.
    assert _workers_slack(FineTimers(_SlackSource())) == [fine] * 8


def test_the_flows_input_sets_worker_timers_back(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, metrics_port=0)
    metrics = ServiceMetrics.create(CollectorRegistry())
    flow = build_flow(
        settings,
        models=load_models(settings, metrics),
        metrics=metrics,
        store=MemoryStore,
        make_source=lambda decoder: _SlackSource(),
    )
    (source,) = (getattr(step, "source", None) for step in flow.substeps if step.step_name == "in")
    assert isinstance(source, FineTimers)
