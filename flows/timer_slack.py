"""Coarse timers for bytewax's cluster main thread, which wakes every millisecond.

In a cluster (``bytewax.run.cli_main`` with addresses, or more than one worker
a process) bytewax runs each worker on a thread of its own, and the main
thread loops until they end: sleep 1 ms, take the GIL, check for signals
(``cluster_main``, ``src/run.rs`` of bytewax 0.21.1). That is about a
thousand wakeups a second, each taking the GIL from the worker that holds it:
a process's context switches tripled, and about 3% of two processes' CPU over
a run (docs/performance.md has the figures).

Linux lets a thread say how late its timers may fire, its timer slack
(``prctl(PR_SET_TIMERSLACK)``, 50 us by default). :func:`coarse_main_thread`
gives the main thread :data:`MAIN_THREAD_SLACK_NS` while bytewax runs, so its
1 ms sleep lasts up to that long and signals are still handled within it.

A thread starts with the slack of the thread that created it, so bytewax's
worker threads would inherit the coarse one, and a worker's own waits (its
park between steps, its Kafka clients' polls) would run late. Each worker
sets its own back first (:func:`restore_thread`, from :class:`FineTimers`,
the input step's ``list_parts``, which bytewax calls on every worker thread
before it creates anything else there). Off Linux nothing changes.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

# How late the main thread's timers may fire while bytewax runs a cluster.
MAIN_THREAD_SLACK_NS = 20_000_000
# prctl's option numbers (linux/prctl.h).
_PR_SET_TIMERSLACK = 29
_PR_GET_TIMERSLACK = 30


def _libc_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    return prctl


_prctl = _libc_prctl()
# The slack threads had before coarse_main_thread raised the main thread's; None outside it.
_fine_ns: int | None = None


def thread_slack_ns() -> int | None:
    """The calling thread's timer slack in nanoseconds; None where it cannot be read."""
    if _prctl is None:
        return None
    ns = int(_prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0))
    return ns if ns >= 0 else None


def _set_thread_slack(ns: int) -> None:
    if _prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_TIMERSLACK) failed")


@contextmanager
def coarse_main_thread(slack_ns: int = MAIN_THREAD_SLACK_NS) -> Iterator[None]:
    """The calling thread's timers may fire up to ``slack_ns`` late until the block ends.

    For the thread that calls bytewax's ``cli_main`` of a cluster; its slack is
    set back afterwards. Where the slack cannot be read (not Linux) it does nothing.
    """
    global _fine_ns
    before = thread_slack_ns()
    if before is None:
        yield
        return
    _fine_ns = before
    _set_thread_slack(slack_ns)
    try:
        yield
    finally:
        _set_thread_slack(before)
        _fine_ns = None


def restore_thread() -> None:
    """Give the calling thread the slack threads had before :func:`coarse_main_thread`.

    For threads created while it holds: they inherited the coarse slack. Does
    nothing outside it.
    """
    fine = _fine_ns
    if fine is not None and thread_slack_ns() != fine:
        _set_thread_slack(fine)


class FineTimers(FixedPartitionedSource[Any, Any]):
    """A source that sets back the timer slack of each worker thread that lists its partitions.

    bytewax builds the input step first on every worker thread, calling
    ``list_parts`` there, so the worker's slack is set back before the worker
    opens its Kafka clients or parks. Partitions are the wrapped source's own.
    """

    def __init__(self, inner: FixedPartitionedSource[Any, Any]):
        self._inner = inner

    def list_parts(self) -> list[str]:
        """The wrapped source's partitions, after the calling thread's slack is set back."""
        restore_thread()
        return self._inner.list_parts()

    def build_part(
        self, step_id: str, for_part: str, resume_state: Any
    ) -> StatefulSourcePartition[Any, Any]:
        """The wrapped source's partition, unchanged."""
        return self._inner.build_part(step_id, for_part, resume_state)
