"""Watermarks kept incrementally agree with their definitions.

``MinWatermark``: the largest of the minimums over the active inputs after each
update so far (the watermark never moves back). ``PartitionWatermark.observe_many``:
``observe`` of each record in turn.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from operators.watermarks import (
    NO_WATERMARK,
    MinWatermark,
    PartitionWatermark,
    TimeConfig,
    WatermarkState,
)

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(min_value=-5, max_value=30),
        st.booleans(),
        st.booleans(),  # ask for current() after this update
    ),
    max_size=60,
)


def _reference(wms: dict[str, int], idle: set[str]) -> int:
    live = [w for o, w in wms.items() if o not in idle]
    return min(live) if live else max(wms.values(), default=NO_WATERMARK)


@given(st.sets(st.sampled_from(["a", "b", "c"])), _OPS)
def test_current_is_the_minimum_over_active_inputs(
    expected: set[str], ops: list[tuple[str, int, bool, bool]]
) -> None:
    m = MinWatermark(tuple(sorted(expected)))
    wms = dict.fromkeys(sorted(expected), NO_WATERMARK)
    idle: set[str] = set()
    reached = NO_WATERMARK
    for origin, wm, is_idle, ask in ops:
        if wms:
            reached = max(reached, _reference(wms, idle))
        m.update(origin, wm, idle=is_idle)
        wms[origin] = max(wm, wms.get(origin, NO_WATERMARK))
        if is_idle:
            idle.add(origin)
        else:
            idle.discard(origin)
        reached = max(reached, _reference(wms, idle))
        if ask:
            assert m.current() == reached
    reached = max(reached, _reference(wms, idle))
    assert m.current() == reached
    assert m.snapshot() == (wms, idle, reached)


@given(
    st.sets(st.sampled_from(["a", "b", "c"])),
    _OPS,
    st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(-5, 30)), max_size=30),
)
def test_advance_is_update_then_current_per_row(
    expected: set[str], before: list[tuple[str, int, bool, bool]], rows: list[tuple[str, int]]
) -> None:
    # Any state first (idle inputs, newcomers, an asked or unasked current()), then rows.
    one, many = MinWatermark(tuple(sorted(expected))), MinWatermark(tuple(sorted(expected)))
    for origin, wm, is_idle, ask in before:
        for m in (one, many):
            m.update(origin, wm, idle=is_idle)
            if ask:
                m.current()
    currents = []
    for origin, wm in rows:
        one.update(origin, wm)
        currents.append(one.current())
    got = many.advance([o for o, _ in rows], [w for _, w in rows])
    assert got.tolist() == currents
    assert many.current() == one.current()
    assert many.snapshot() == one.snapshot()


_CONFIGS = st.builds(
    TimeConfig,
    out_of_orderness_ms=st.sampled_from([0, 5, 50]),
    allowed_lateness_ms=st.sampled_from([0, 10, 100]),
    max_future_ms=st.sampled_from([0, 20, 200, 10**6]),
    watermark_agreement=st.sampled_from([1, 2]),
)
_STATES = st.one_of(
    st.none(),
    st.integers(0, 1000),
    st.tuples(st.integers(0, 1000) | st.none(), st.integers(0, 1000) | st.none()),
)


@given(
    _CONFIGS,
    _STATES,
    st.lists(st.tuples(st.integers(0, 1000), st.integers(-1, 1000)), max_size=40),
    st.none() | st.integers(0, 1000),
)
def test_observe_many_is_observe_of_each_record_in_turn(
    config: TimeConfig,
    state: WatermarkState,
    records: list[tuple[int, int]],
    now_ms: int | None,
) -> None:
    one, many = PartitionWatermark(config, state), PartitionWatermark(config, state)
    late, marks, future = [], [], []
    for i, (event_time, kafka_ts) in enumerate(records):
        verdict = one.observe(event_time, kafka_ts, now_ms)
        if verdict == "future":
            future.append(i)
        else:
            late.append(verdict == "late")
            marks.append(one.watermark)
    times, stamps = [t for t, _ in records], [k for _, k in records]
    assert many.observe_many(times, stamps, now_ms) == (late, marks, future)
    assert many.snapshot() == one.snapshot() and many.watermark == one.watermark
