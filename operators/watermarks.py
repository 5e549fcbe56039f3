"""Per-partition event-time watermarks, far-future rejection and lateness.

Time rules (``docs/semantics.md``): a partition's watermark is the largest
accepted event time minus the out-of-orderness bound. A record more than
``max_future_ms`` ahead of the watermark (or, for a partition's first record,
of its Kafka timestamp) is rejected and changes nothing, so it never makes the
following good records late. A transaction older than watermark minus allowed
lateness is late. State: one integer per partition, snapshotted with the
partition's offset, so a replay decides exactly as the first run did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

NO_WATERMARK = -(2**62)


@dataclass(frozen=True, kw_only=True)
class TimeConfig:
    """Event-time bounds, in milliseconds."""

    out_of_orderness_ms: int = 5_000
    allowed_lateness_ms: int = 60_000
    max_future_ms: int = 3_600_000
    idle_timeout_ms: int = 10_000

    def __post_init__(self) -> None:
        for name in ("out_of_orderness_ms", "allowed_lateness_ms", "max_future_ms"):
            if getattr(self, name) < 0:
                msg = f"{name} must not be negative"
                raise ValueError(msg)


Verdict = Literal["ok", "late", "future"]


class PartitionWatermark:
    """The watermark of one input partition.

    >>> wm = PartitionWatermark(TimeConfig(), None)
    >>> wm.observe(100_000, 100_000), wm.watermark
    ('ok', 95000)
    >>> wm.observe(30_000, 0)
    'late'
    >>> wm.observe(100_000 + 3_600_000, 0), wm.watermark
    ('future', 95000)
    """

    __slots__ = ("_bound", "_future", "_lateness", "_max")

    def __init__(self, config: TimeConfig, max_event_time: int | None) -> None:
        self._bound = config.out_of_orderness_ms
        self._lateness = config.allowed_lateness_ms
        self._future = config.max_future_ms
        self._max = max_event_time

    @property
    def watermark(self) -> int:
        """Current watermark; ``NO_WATERMARK`` before the first accepted record."""
        return NO_WATERMARK if self._max is None else self._max - self._bound

    def snapshot(self) -> int | None:
        """The state to resume from: the largest accepted event time."""
        return self._max

    def observe(self, event_time: int, kafka_ts: int) -> Verdict:
        """Judge one record and advance the watermark when it is accepted."""
        if self._max is None:
            if event_time > kafka_ts + self._future:
                return "future"
            self._max = event_time
        elif event_time > self._max - self._bound + self._future:
            return "future"
        elif event_time > self._max:
            self._max = event_time
        if event_time < self._max - self._bound - self._lateness:
            return "late"
        return "ok"


class MinWatermark:
    """An operator's watermark: the minimum over its inputs' watermarks.

    Idle inputs are left out, so an idle partition never stalls the others;
    when every input is idle the watermark stays at the largest one seen.

    >>> m = MinWatermark()
    >>> m.update("a", 10); m.update("b", 5); m.current()
    5
    >>> m.update("b", 5, idle=True); m.current()
    10
    """

    __slots__ = ("_idle", "_min", "_wms")

    def __init__(
        self,
        expected: tuple[str, ...] = (),
        resume: tuple[dict[str, int], set[str]] | None = None,
    ) -> None:
        self._wms: dict[str, int] = dict.fromkeys(expected, NO_WATERMARK)
        self._idle: set[str] = set()
        if resume:
            self._wms.update(resume[0])
            self._idle = set(resume[1])
        # current(), cached: operators ask once per record, and it moves only when the
        # slowest active input moves or an input turns idle or active.
        self._min: int | None = None

    def update(self, origin: str, watermark: int, *, idle: bool = False) -> None:
        """Record an input's newest watermark and whether it is idle."""
        wms = self._wms
        old = wms.get(origin)
        if old is None:
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
            self._idle.discard(origin)
            self._min = None

    def current(self) -> int:
        """Minimum over the active inputs; ``NO_WATERMARK`` before any input."""
        if self._min is not None:
            return self._min
        live = [w for o, w in self._wms.items() if o not in self._idle]
        if not live:
            return max(self._wms.values(), default=NO_WATERMARK)
        self._min = min(live)
        return self._min

    def all_idle(self) -> bool:
        """Whether every known input is idle."""
        return bool(self._wms) and self._idle >= set(self._wms)

    def snapshot(self) -> tuple[dict[str, int], set[str]]:
        """Copy of the state, for bytewax snapshots."""
        return dict(self._wms), set(self._idle)
