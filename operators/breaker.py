"""A circuit breaker around model inference, so a failing or slow model falls back to rules.

Time rules: processing time only, read from the injected clock (monotonic
seconds); event time plays no part, and nothing here calls :mod:`time`.

State rules, per breaker (one per scoring step in a worker, in memory, never
checkpointed: a restarted process starts ``closed``)::

    closed ──(failure_threshold consecutive failures)──► open
    open ──(allow() once cooldown_s has passed since it opened)──► half_open
    half_open ──(the trial call succeeds)──► closed
    half_open ──(the trial call fails)──► open (cooldown starts again)

- ``closed``: every call is allowed. A success resets the count of
  consecutive failures; a success slower than ``slow_call_s`` counts as a failure.
- ``open``: no call is allowed until ``cooldown_s`` has passed since it opened;
  the move to ``half_open`` happens in :meth:`CircuitBreaker.allow`, which
  then allows that call as the one trial.
- ``half_open``: further calls are refused while the trial is outstanding.
- Results recorded while ``open`` (there is no outstanding call then) change nothing.

Callers pair each allowed call with exactly one ``record_success`` or
``record_failure``; a breaker is not shared between threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, kw_only=True)
class BreakerConfig:
    """When the breaker opens and how long it stays open."""

    failure_threshold: int = 5
    slow_call_s: float = 0.05
    cooldown_s: float = 10.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if not self.slow_call_s > 0:
            raise ValueError("slow_call_s must be positive")
        if not self.cooldown_s >= 0:
            raise ValueError("cooldown_s must not be negative")


class CircuitBreaker:
    """Decides whether the next model call may run, from the outcomes of earlier ones."""

    def __init__(self, config: BreakerConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trial_out = False
        self._opened_count = 0

    @property
    def state(self) -> BreakerState:
        """The current state (``open`` stays ``open`` until :meth:`allow` is asked)."""
        return self._state

    @property
    def opened_count(self) -> int:
        """How many times the breaker has opened, reopenings from ``half_open`` included."""
        return self._opened_count

    def allow(self) -> bool:
        """Whether the next call may go to the model."""
        if self._state == "closed":
            return True
        if self._state == "open":
            if self._clock() - self._opened_at < self._config.cooldown_s:
                return False
            self._state = "half_open"
        if self._trial_out:
            return False
        self._trial_out = True
        return True

    def record_success(self, duration_s: float) -> None:
        """Record a call that returned after ``duration_s`` seconds; too slow is a failure."""
        if duration_s > self._config.slow_call_s:
            self.record_failure()
        elif self._state == "closed":
            self._failures = 0
        elif self._state == "half_open":
            self._state = "closed"
            self._failures = 0
            self._trial_out = False

    def record_failure(self) -> None:
        """Record a call that failed (raised, timed out or was too slow)."""
        if self._state == "closed":
            self._failures += 1
            if self._failures >= self._config.failure_threshold:
                self._open()
        elif self._state == "half_open":
            self._open()

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self._opened_count += 1
        self._trial_out = False
