"""Per-partition event-time watermarks, far-future rejection and lateness.

Time rules (``docs/semantics.md``): a partition's watermark is the *second*
largest accepted event time minus the out-of-orderness bound, so it moves only
when two records agree: a single outlier, first in the partition or mid-stream,
can never make the following good records late (``watermark_agreement=1``
makes it the largest, for sources whose every record is trusted). A record is rejected as far
future when its event time is more than ``max_future_ms`` ahead of the
partition's watermark *and* of its own Kafka timestamp, or ahead of the wall
clock by that much (when a wall clock is given): a stale first record cannot
make live records "future", and a record stamped decades ahead cannot be
trusted even when its Kafka timestamp agrees. A rejected record changes
nothing. A transaction older than watermark minus allowed lateness is late.
State: the partition's two largest accepted event times, snapshotted with the
partition's offset, so a replay decides exactly as the first run did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any, Literal

import numpy as np

NO_WATERMARK = -(2**62)


@dataclass(frozen=True, kw_only=True)
class TimeConfig:
    """Event-time bounds, in milliseconds."""

    out_of_orderness_ms: int = 5_000
    allowed_lateness_ms: int = 60_000
    max_future_ms: int = 3_600_000
    idle_timeout_ms: int = 10_000
    # Accepted records that must reach a time before the partition's watermark
    # follows: 2 (the second largest time counts) or 1 (the largest counts).
    watermark_agreement: int = 2

    def __post_init__(self) -> None:
        for name in ("out_of_orderness_ms", "allowed_lateness_ms", "max_future_ms"):
            if getattr(self, name) < 0:
                msg = f"{name} must not be negative"
                raise ValueError(msg)
        if self.watermark_agreement not in (1, 2):
            msg = "watermark_agreement must be 1 or 2"
            raise ValueError(msg)


Verdict = Literal["ok", "late", "future"]
# The snapshot: the two largest accepted event times (None before any), or one
# integer from a snapshot that kept only the largest.
WatermarkState = tuple[int | None, int | None] | int | None


class PartitionWatermark:
    """The watermark of one input partition.

    >>> wm = PartitionWatermark(TimeConfig(), None)
    >>> wm.observe(100_000, 100_000), wm.watermark == NO_WATERMARK
    ('ok', True)
    >>> wm.observe(101_000, 101_000), wm.watermark
    ('ok', 95000)
    >>> wm.observe(30_000, 0)
    'late'

    One record far ahead (but within the bound of its Kafka timestamp) moves nothing:

    >>> wm.observe(101_000 + 3_000_000, 0), wm.watermark
    ('ok', 96000)
    >>> wm.observe(100_000 + 3_700_000, 0), wm.watermark
    ('future', 96000)
    """

    __slots__ = ("_bound", "_future", "_lateness", "_second", "_single", "_top")

    def __init__(self, config: TimeConfig, state: WatermarkState) -> None:
        self._bound = config.out_of_orderness_ms
        self._lateness = config.allowed_lateness_ms
        self._future = config.max_future_ms
        self._single = config.watermark_agreement == 1
        if isinstance(state, int):
            self._top: int | None = state
            self._second: int | None = state
        elif state is None:
            self._top = self._second = None
        else:
            self._top, self._second = state

    @property
    def watermark(self) -> int:
        """Current watermark; ``NO_WATERMARK`` before two records were accepted."""
        return NO_WATERMARK if self._second is None else self._second - self._bound

    def snapshot(self) -> tuple[int | None, int | None]:
        """The state to resume from: the two largest accepted event times."""
        return (self._top, self._second)

    def observe(self, event_time: int, kafka_ts: int, now_ms: int | None = None) -> Verdict:
        """Judge one record and move the watermark when it is accepted.

        ``now_ms`` is the wall clock, for the absolute far-future bound; None
        (offline replay of a log) leaves that bound out.
        """
        second = self._second
        limit = max(kafka_ts, NO_WATERMARK if second is None else second - self._bound)
        if event_time > limit + self._future or (
            now_ms is not None and event_time > now_ms + self._future
        ):
            return "future"
        top = self._top
        if top is None:
            self._top = event_time
        elif event_time > top:
            self._second, self._top = top, event_time
        elif second is None or event_time > second:
            self._second = event_time
        if self._single:
            self._second = self._top
        second = self._second
        if second is not None and event_time < second - self._bound - self._lateness:
            return "late"
        return "ok"

    def observe_many(
        self, event_times: Sequence[int], kafka_ts: Sequence[int], now_ms: int | None = None
    ) -> tuple[list[bool], list[int], list[int]]:
        """:meth:`observe` of each record of a batch in turn, in one loop.

        Returns, for the accepted records in order, whether each is late and
        the watermark right after it; and the positions of the records judged
        future (which change nothing).

        >>> wm = PartitionWatermark(TimeConfig(), None)
        >>> wm.observe_many([100_000, 101_000, 30_000, 3_900_000], [100_000, 101_000, 0, 0])
        ([False, False, True], [-4611686018427387904, 95000, 95000], [3])
        """
        bound, lateness, future, single = self._bound, self._lateness, self._future, self._single
        top, second = self._top, self._second
        wm = NO_WATERMARK if second is None else second - bound
        late_below = wm - lateness  # read only once ``second`` is set
        far = float("inf") if now_ms is None else now_ms + future
        late: list[bool] = []
        marks: list[int] = []
        futures: list[int] = []
        for i, t in enumerate(event_times):
            # observe's ``t > max(kafka_ts, watermark) + future``, or ahead of the wall clock.
            if (t > wm + future and t > kafka_ts[i] + future) or t > far:
                futures.append(i)
                continue
            if top is None:
                top = t
            elif t > top:
                second, top = top, t
            elif second is None or t > second:
                second = t
            elif not single:  # nothing moved
                late.append(t < late_below)
                marks.append(wm)
                continue
            if single:
                second = top
            if second is not None:
                wm = second - bound
                late_below = wm - lateness
            late.append(second is not None and t < late_below)
            marks.append(wm)
        self._top, self._second = top, second
        return late, marks, futures


class MinWatermark:
    """An operator's watermark: the minimum over its inputs' watermarks, never decreasing.

    Idle inputs are left out, so an idle partition never stalls the others;
    when every input is idle the watermark stays at the largest one seen. An
    input that joins late or turns active again below the others holds the
    watermark where it is rather than moving it back: windows closed and state
    purged at a watermark stay so.

    >>> m = MinWatermark(("a", "b"))
    >>> m.update("a", 10); m.update("b", 5); m.current()
    5
    >>> m.update("b", 5, idle=True); m.current()
    10
    >>> m.update("c", 3); m.current()
    10
    >>> m.update("a", 20); m.update("c", 20); m.update("b", 30); m.update("d", 0); m.current()
    20
    """

    __slots__ = ("_idle", "_min", "_reached", "_wms")

    def __init__(
        self,
        expected: tuple[str, ...] = (),
        resume: tuple[dict[str, int], set[str]]
        | tuple[dict[str, int], set[str], int]
        | None = None,
    ) -> None:
        self._wms: dict[str, int] = dict.fromkeys(expected, NO_WATERMARK)
        self._idle: set[str] = set()
        self._reached = NO_WATERMARK
        if resume:
            self._wms.update(resume[0])
            self._idle = set(resume[1])
            if len(resume) > 2:
                self._reached = resume[2]
        # current(), cached: operators ask once per record, and it moves only when the
        # slowest active input moves or an input turns idle or active.
        self._min: int | None = None

    def update(self, origin: str, watermark: int, *, idle: bool = False) -> None:
        """Record an input's newest watermark and whether it is idle."""
        wms = self._wms
        old = wms.get(origin)
        if old is None:
            if wms:
                self.current()  # what the others reached stands: a newcomer cannot lower it
            wms[origin] = max(watermark, NO_WATERMARK)
            self._min = None
        elif watermark > old:
            wms[origin] = watermark
            # Raising an input above the minimum leaves the minimum where it is.
            if self._min is not None and old <= self._min:
                self._min = None
        if idle:
            if origin not in self._idle:
                self._idle.add(origin)
                self._min = None
        elif origin in self._idle:
            self.current()  # likewise an input that turns active again
            self._idle.discard(origin)
            self._min = None

    def current(self) -> int:
        """Largest minimum over the active inputs so far; ``NO_WATERMARK`` before any.

        "So far" is over every update: an input that joins or turns active
        again below the others is folded in after what they had reached.
        """
        if self._min is not None:
            return self._min
        live = [w for o, w in self._wms.items() if o not in self._idle]
        lowest = min(live) if live else max(self._wms.values(), default=NO_WATERMARK)
        self._reached = max(self._reached, lowest)
        self._min = self._reached
        return self._min

    def advance(
        self,
        origins: Sequence[str],
        watermarks: Sequence[int] | np.ndarray[Any, np.dtype[np.int64]],
    ) -> np.ndarray[Any, np.dtype[np.int64]]:
        """:meth:`update` with each active input's watermark in turn; :meth:`current`
        after each.

        Computed per input over the whole sequence, not per update: a running
        maximum of each input's watermarks, their minimum over the inputs active
        by then, and its running maximum from where :meth:`current` stood.

        >>> m = MinWatermark(("a", "b"))
        >>> m.advance(["a", "b", "a", "b"], [10, 5, 20, 30]).tolist()[1:]
        [5, 5, 20]
        """
        if not origins:
            return np.empty(0, np.int64)
        reached = self.current()  # what every input reached before these
        # Each input's code: the index of its first row (one pass in C).
        codes: dict[str, int] = {}
        rows = np.fromiter(map(codes.setdefault, origins, count()), np.int64, len(origins))
        values = np.array(watermarks, np.int64)
        high = np.iinfo(np.int64).max
        lowest = np.full(len(rows), high, np.int64)
        wms, idle = self._wms, self._idle
        for origin, code in codes.items():
            mine = rows == code
            own = np.where(mine, values, NO_WATERMARK)
            # Its watermark after each row; before its first row it does not count
            # unless it is a known active input.
            own[0] = max(own[0], wms.get(origin, NO_WATERMARK))
            own = np.maximum.accumulate(own)
            if origin not in wms or origin in idle:
                own[: int(np.argmax(mine))] = high
            np.minimum(lowest, own, out=lowest)
            wms[origin] = max(int(own[-1]), NO_WATERMARK)
            idle.discard(origin)
        for origin, wm in wms.items():
            if origin not in codes and origin not in idle:
                np.minimum(lowest, wm, out=lowest)
        out = np.maximum.accumulate(np.maximum(lowest, reached))
        self._reached = self._min = int(out[-1])
        return out

    def all_idle(self) -> bool:
        """Whether every known input is idle."""
        return bool(self._wms) and self._idle >= set(self._wms)

    def snapshot(self) -> tuple[dict[str, int], set[str], int]:
        """Copy of the state, for bytewax snapshots."""
        return dict(self._wms), set(self._idle), self._reached
