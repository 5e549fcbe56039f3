"""The inference circuit breaker, driven by a fake clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from operators.breaker import BreakerConfig, BreakerState, CircuitBreaker

CONFIG = BreakerConfig(failure_threshold=3, slow_call_s=0.05, cooldown_s=10.0)
FAST = 0.01


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(CONFIG, clock)


def _state(breaker: CircuitBreaker) -> BreakerState:
    # A call, so mypy does not keep one assert's narrowing of the property past later calls.
    return breaker.state


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record_failure()


def _open(breaker: CircuitBreaker) -> None:
    _fail(breaker, CONFIG.failure_threshold)
    assert _state(breaker) == "open"


def test_defaults() -> None:
    config = BreakerConfig()
    assert (config.failure_threshold, config.slow_call_s, config.cooldown_s) == (5, 0.05, 10.0)


@pytest.mark.parametrize(
    ("field", "make"),
    [
        ("failure_threshold", lambda: BreakerConfig(failure_threshold=0)),
        ("slow_call_s", lambda: BreakerConfig(slow_call_s=0.0)),
        ("cooldown_s", lambda: BreakerConfig(cooldown_s=-1.0)),
    ],
)
def test_bad_config_names_the_field(field: str, make: Callable[[], BreakerConfig]) -> None:
    with pytest.raises(ValueError, match=field):
        make()


def test_starts_closed_and_allows(breaker: CircuitBreaker) -> None:
    assert _state(breaker) == "closed"
    assert breaker.opened_count == 0
    for _ in range(10):
        assert breaker.allow()
        breaker.record_success(FAST)
    assert _state(breaker) == "closed"


def test_opens_after_threshold_consecutive_failures(breaker: CircuitBreaker) -> None:
    _fail(breaker, CONFIG.failure_threshold - 1)
    assert _state(breaker) == "closed"
    assert breaker.allow()
    breaker.record_failure()
    assert _state(breaker) == "open"
    assert breaker.opened_count == 1
    assert not breaker.allow()


def test_a_success_between_failures_resets_the_count(breaker: CircuitBreaker) -> None:
    _fail(breaker, CONFIG.failure_threshold - 1)
    assert breaker.allow()
    breaker.record_success(FAST)
    _fail(breaker, CONFIG.failure_threshold - 1)
    assert _state(breaker) == "closed"
    assert breaker.opened_count == 0
    _fail(breaker, 1)
    assert _state(breaker) == "open"


def test_slow_calls_count_as_failures(breaker: CircuitBreaker) -> None:
    for _ in range(CONFIG.failure_threshold - 1):
        assert breaker.allow()
        breaker.record_success(CONFIG.slow_call_s * 2)
    assert _state(breaker) == "closed"
    assert breaker.allow()
    breaker.record_success(CONFIG.slow_call_s + 0.001)
    assert _state(breaker) == "open"


def test_slow_call_does_not_reset_the_count(breaker: CircuitBreaker) -> None:
    _fail(breaker, CONFIG.failure_threshold - 1)
    assert breaker.allow()
    breaker.record_success(1.0)
    assert _state(breaker) == "open"


def test_a_call_at_exactly_the_slow_limit_is_a_success(breaker: CircuitBreaker) -> None:
    _fail(breaker, CONFIG.failure_threshold - 1)
    assert breaker.allow()
    breaker.record_success(CONFIG.slow_call_s)
    _fail(breaker, CONFIG.failure_threshold - 1)
    assert _state(breaker) == "closed"


def test_stays_open_during_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    for _ in range(5):
        clock.advance(CONFIG.cooldown_s / 5 - 0.001)
        assert not breaker.allow()
        assert _state(breaker) == "open"


def test_results_while_open_change_nothing(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    clock.advance(CONFIG.cooldown_s - 1)
    breaker.record_success(FAST)
    breaker.record_failure()
    assert _state(breaker) == "open"
    assert breaker.opened_count == 1
    clock.advance(1)  # the cooldown still counts from the opening
    assert breaker.allow()


def test_half_open_allows_exactly_one_trial(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    clock.advance(CONFIG.cooldown_s)
    assert breaker.allow()
    assert _state(breaker) == "half_open"
    clock.advance(100.0)
    assert not breaker.allow()
    assert not breaker.allow()
    assert _state(breaker) == "half_open"


def test_trial_success_closes(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    clock.advance(CONFIG.cooldown_s)
    assert breaker.allow()
    breaker.record_success(FAST)
    assert _state(breaker) == "closed"
    assert breaker.allow()
    assert breaker.allow()
    # The failure count starts afresh after closing.
    _fail(breaker, CONFIG.failure_threshold - 1)
    assert _state(breaker) == "closed"
    assert breaker.opened_count == 1


def test_slow_trial_reopens(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    clock.advance(CONFIG.cooldown_s)
    assert breaker.allow()
    breaker.record_success(1.0)
    assert _state(breaker) == "open"
    assert breaker.opened_count == 2


def test_trial_failure_reopens_with_a_fresh_cooldown(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    _open(breaker)
    clock.advance(CONFIG.cooldown_s + 5)
    assert breaker.allow()
    breaker.record_failure()
    assert _state(breaker) == "open"
    assert breaker.opened_count == 2
    clock.advance(CONFIG.cooldown_s - 0.5)
    assert not breaker.allow()
    clock.advance(0.5)
    assert breaker.allow()
    assert _state(breaker) == "half_open"


def test_opened_count_counts_every_opening(breaker: CircuitBreaker, clock: FakeClock) -> None:
    for expected in (1, 2, 3):
        _open(breaker)
        assert breaker.opened_count == expected
        clock.advance(CONFIG.cooldown_s)
        assert breaker.allow()
        breaker.record_success(FAST)
        assert _state(breaker) == "closed"
    clock.advance(CONFIG.cooldown_s)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.opened_count == 3  # one failure in closed state does not open it


def test_reads_only_the_injected_clock(clock: FakeClock) -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, cooldown_s=0.0), clock)
    _fail(breaker, 1)
    assert _state(breaker) == "open"
    # With a zero cooldown and a clock that never moves, the trial is due at once.
    assert breaker.allow()
    assert _state(breaker) == "half_open"
