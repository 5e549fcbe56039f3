"""Online drift of every feature and of the score against the model's training reference.

Window: the last ``window_events`` scored transactions (a sliding count window,
in processing order). Every ``every_events`` transactions one Drift record per
signal goes to the ``drift`` topic: PSI and KS of the window against the
reference distribution in the active model's manifest (computed on the
manifest's quantile bins, so both are exact for those bins), the window's mean
and the reference mean. A feature drifts when PSI >= ``psi_threshold``. The
score also runs river's ADWIN, and the transaction amount (relative to its
reference mean) river's PageHinkley, each over means of ``chunk_events``
consecutive values (a mean
shift shows in chunk means at a fraction of the per-event cost); a detection
since the previous record flags drift too.

Warm-up: a feature computed over a window of event time (``card_count_24h``:
24 h) is not yet in its steady state until that much event time has passed
since the first event the monitor saw; until then it reads low against a
reference trained on steady state. So each signal has a warm-up length (its
longest window, :func:`warmup_ms`; the score takes the longest of all), and
while the oldest event in the drift window is younger than the first event
plus that length, the signal's records carry ``"warming_up": true`` and never
``"drift": true``; ADWIN sees only warm scores. Calendar features
(``txn_hour_utc``) follow the clock, not the traffic: a count window shorter
than a day always sees a few hours of it, so they are reported (detector
``none``) but never flagged.

Time rules: none of its own; ``window_start``/``window_end`` are the smallest
and largest event times in the window. State: the window (values and event
times), the counters, the river detectors and the first event time,
snapshotted by bytewax as one blob, so a restart resumes the same windows,
detectors and warm-up. A new active model version resets the window (the
reference changed), not the warm-up (the feature state did not).

The window's count of each signal's reference bins is kept as rows enter and
leave it (rebuilt from the values on restore, not snapshotted). An emission
computes the proportions and PSI terms over all signals at once, and each
signal's mean, PSI and KS in one kernel (:mod:`operators.drift_kernel`), each
figure exactly what the signal's own numpy computation gives.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import bytewax.operators as op
import numpy as np
import numpy.typing as npt
from bytewax.dataflow import Stream

from models.manifest import Distribution, Manifest
from operators import drift_kernel
from operators.internals import river_detectors
from operators.messages import OutMessage, json_value
from schemas.timefmt import format_ms

SCORE_SIGNAL = "score"
# Features that follow the wall clock: reported, never flagged.
CALENDAR_SIGNALS = frozenset({"txn_hour_utc"})
_MINUTE = 60_000
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
# Event time a feature needs before its window holds steady-state traffic.
_WARMUP_BY_SUFFIX = (("_1m", _MINUTE), ("_5m", 5 * _MINUTE), ("_1h", _HOUR), ("_24h", _DAY))
_WARMUP_BY_NAME = {
    # The previous 5-minute window is whole only 10 minutes after the start.
    "merchant_txn_count_prev_5m": 10 * _MINUTE,
    "merchant_chargeback_rate_prev_5m": 10 * _MINUTE,
    # These read the card's whole retained history (24 h).
    "card_amount_zscore": _DAY,
    "card_seconds_since_last": _DAY,
    "card_session_count": _DAY,
    "card_session_seconds": _DAY,
}
# The one key of the drift monitor's stateful step: every sample goes to one monitor.
DRIFT_KEY = "drift"
AMOUNT_SIGNAL = "txn_amount"
_EPS = 1e-4


@dataclass(frozen=True, kw_only=True)
class DriftConfig:
    """Window, cadence and thresholds."""

    topic: str
    window_events: int = 2_000
    every_events: int = 500
    psi_threshold: float = 0.25
    chunk_events: int = 50
    adwin_delta: float = 0.002
    page_hinkley_threshold: float = 50.0


def warmup_ms(signal: str) -> int:
    """Event time ``signal`` needs from a cold start to its steady state.

    >>> warmup_ms("card_count_1h"), warmup_ms("txn_amount"), warmup_ms("card_amount_zscore")
    (3600000, 0, 86400000)
    """
    if signal.startswith("txn_"):
        return 0
    if signal in _WARMUP_BY_NAME:
        return _WARMUP_BY_NAME[signal]
    for suffix, length in _WARMUP_BY_SUFFIX:
        if signal.endswith(suffix):
            return length
    return _DAY  # a feature of unknown shape: the longest history any feature keeps


@dataclass(frozen=True)
class DriftSample:
    """What scoring hands to drift for one batch: signal values, scores, event times."""

    model_version: str
    names: tuple[str, ...]
    values: npt.NDArray[np.float64]  # [n, len(names)]
    scores: npt.NDArray[np.float64]  # [n]
    event_times: npt.NDArray[np.int64]  # [n]


class DriftStat(NamedTuple):
    """One signal's statistics at one emission.

    A named tuple rather than a frozen dataclass: as immutable, and built in a
    third of the time (an emission builds one per signal).
    """

    signal: str
    kind: str
    window_start: int
    window_end: int
    n: int
    mean: float
    reference_mean: float
    psi: float
    ks: float
    detector: str
    drift: bool
    warming_up: bool = False


class DriftMonitor:
    """Sliding-window PSI/KS per signal plus ADWIN (score) and PageHinkley (amount)."""

    # Emissions so far, across model changes: a drift record's place in the flow's
    # drift output. A class default, so a monitor pickled without it resumes at 0.
    emitted: int = 0

    def __init__(self, config: DriftConfig, manifest: Manifest) -> None:
        self._config = config
        self._origin: int | None = None  # the first event time seen
        self._warm_from: int | None = None
        self._reset(manifest)

    def __getstate__(self) -> dict[str, object]:
        # The counts of the bins are a function of the window's values: rebuilt on
        # restore, not pickled.
        state = self.__dict__.copy()
        del state["_counts"], state["_layout"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        # Snapshots taken before warm-up tracking: treat their windows as warm.
        self.__dict__.update(state)
        if "_warmups" not in state:
            self._origin = -(2**62)
            self._warmups = np.zeros(len(self._signals), dtype=np.int64)
            self._warm_from = None
        layout = self._layout = _Layout.of(self._binned)
        # recount zeroes the counts before it counts the window into them.
        self._counts = np.empty(len(layout.floored), dtype=np.int64)
        drift_kernel.recount(
            self._values,
            self._filled,
            layout.edges,
            layout.bounds,
            layout.edge_bounds,
            self._counts,
        )

    def _reset(self, manifest: Manifest) -> None:
        config = self._config
        self.model_version = manifest.model_version
        self._signals = (*manifest.feature_names, SCORE_SIGNAL)
        refs = [manifest.reference.features[n] for n in manifest.feature_names]
        self._refs: list[Distribution] = [*refs, manifest.reference.score]
        self._binned = [_Binned.of(ref) for ref in self._refs]
        features = [warmup_ms(n) for n in manifest.feature_names]
        self._warmups = np.asarray([*features, max(features, default=0)], dtype=np.int64)
        # Event time from which the score is warm (ADWIN sees no earlier score).
        self._warm_from = None if self._origin is None else self._origin + int(self._warmups[-1])
        width = len(self._signals)
        self._values = np.zeros((config.window_events, width), dtype=np.float64)
        # The window's count of each reference bin of each signal, kept as rows enter
        # and leave it.
        self._layout = _Layout.of(self._binned)
        self._counts = np.zeros(len(self._layout.floored), dtype=np.int64)
        self._times = np.zeros(config.window_events, dtype=np.int64)
        self._filled: int = 0
        self._pos = 0
        self._since_emit = 0
        self._chunks: dict[str, list[float]] = {SCORE_SIGNAL: [], AMOUNT_SIGNAL: []}
        adwin, page_hinkley = river_detectors()
        self._adwin = adwin(delta=config.adwin_delta)
        self._ph = page_hinkley(threshold=config.page_hinkley_threshold)
        self._fired: set[str] = set()
        self._amount_col = (
            self._signals.index(AMOUNT_SIGNAL) if AMOUNT_SIGNAL in self._signals else None
        )
        self._amount_ref = (
            max(abs(self._refs[self._amount_col].mean), 1e-9)
            if self._amount_col is not None
            else 1.0
        )

    def observe(self, sample: DriftSample, manifest: Manifest) -> list[DriftStat]:
        """Add a batch; return the statistics of every emission that fell due in it."""
        if sample.model_version != self.model_version:
            self._reset(manifest)
        if self._origin is None and len(sample.event_times):
            self._origin = int(sample.event_times.min())
            self._warm_from = self._origin + int(self._warmups[-1])
        values = np.ascontiguousarray(sample.values, dtype=np.float64)
        scores = np.ascontiguousarray(sample.scores, dtype=np.float64)
        times = np.ascontiguousarray(sample.event_times, dtype=np.int64)
        cols = _columns(sample.names, self._signals)
        stats: list[DriftStat] = []
        start = 0
        while start < len(scores):
            take = min(len(scores) - start, self._config.every_events - self._since_emit)
            end = start + take
            self._push(values, cols, scores, times, start, end)
            start += take
            if self._since_emit >= self._config.every_events:
                stats.extend(self._emit())
        return stats

    def _push(
        self,
        values: npt.NDArray[np.float64],
        cols: npt.NDArray[np.int64],
        scores: npt.NDArray[np.float64],
        times: npt.NDArray[np.int64],
        lo: int,
        hi: int,
    ) -> None:
        """Rows ``lo`` to ``hi`` of a sample (signal ``j`` in ``values[:, cols[j]]``, the
        score in ``scores``) into the window and the detectors."""
        n = hi - lo
        if not n:
            return
        size = self._config.window_events
        self._since_emit += n
        # Into the ring buffer; rows that this same push would overwrite (beyond the
        # buffer's size) are not written at all.
        skip = max(0, n - size)
        layout = self._layout
        drift_kernel.enter(
            values,
            cols,
            scores,
            times,
            lo + skip,
            hi,
            layout.edges,
            layout.bounds,
            layout.edge_bounds,
            self._values,
            self._times,
            self._counts,
            (self._pos + skip) % size,
            self._filled,
        )
        self._filled = min(self._filled + n, size)
        self._pos = (self._pos + n) % size
        # The same values, in the same order, as chunking row by row gave the detectors.
        pushed = scores[lo:hi]
        if self._warm_from is not None:
            pushed = pushed[times[lo:hi] >= self._warm_from]
        self._chunk(SCORE_SIGNAL, pushed.tolist(), self._adwin)
        if self._amount_col is not None:
            # Relative to the reference mean, so the threshold does not depend on currency.
            amounts = values[lo:hi, cols[self._amount_col]] / self._amount_ref
            self._chunk(AMOUNT_SIGNAL, amounts.tolist(), self._ph)

    def _chunk(
        self,
        signal: str,
        values: list[float],
        detector: Any,  # river's ADWIN or PageHinkley
    ) -> None:
        chunk = self._chunks[signal]
        size = self._config.chunk_events
        start = 0
        while start < len(values):
            take = min(size - len(chunk), len(values) - start)
            chunk.extend(values[start : start + take])
            start += take
            if len(chunk) >= size:
                detector.update(math.fsum(chunk) / len(chunk))
                chunk.clear()
                if detector.drift_detected:
                    self._fired.add(signal)

    def _emit(self) -> list[DriftStat]:
        self._since_emit = 0
        self.emitted += 1
        means, psis, kss = self._layout.stats(self._values, self._filled, self._counts)
        times = self._times[: self._filled]
        first, last = int(times.min()), int(times.max())
        # Filled in event time since the first event: warm once the window's oldest
        # event is at least a signal's warm-up after it.
        filled = first - (self._origin if self._origin is not None else first)
        stats = []
        for i, (signal, ref) in enumerate(zip(self._signals, self._refs, strict=True)):
            psi, ks = psis[i], kss[i]
            warming = bool(filled < self._warmups[i])
            if signal in CALENDAR_SIGNALS:
                detector = "none"
            else:
                detector = {SCORE_SIGNAL: "adwin", AMOUNT_SIGNAL: "page_hinkley"}.get(signal, "psi")
            drifted = (
                not warming
                and detector != "none"
                and (psi >= self._config.psi_threshold or signal in self._fired)
            )
            stats.append(
                DriftStat(
                    signal=signal,
                    kind="score" if signal == SCORE_SIGNAL else "feature",
                    window_start=first,
                    window_end=last,
                    n=self._filled,
                    mean=means[i],
                    reference_mean=ref.mean,
                    psi=psi,
                    ks=ks,
                    detector=detector,
                    drift=drifted,
                    warming_up=warming,
                )
            )
        self._fired.clear()
        return stats


@dataclass(frozen=True)
class _Binned:
    """A reference distribution as arrays, converted once rather than per emission."""

    edges: npt.NDArray[np.float64]
    floored: npt.NDArray[np.float64]  # proportions, at least _EPS (for the log)
    cdf: npt.NDArray[np.float64]

    @classmethod
    def of(cls, ref: Distribution) -> _Binned:
        expected = np.asarray(ref.proportions, dtype=np.float64)
        return cls(
            np.asarray(ref.edges, dtype=np.float64), np.maximum(expected, _EPS), np.cumsum(expected)
        )


@dataclass(frozen=True)
class _Layout:
    """Every signal's reference bins side by side, as the kernels read them."""

    edges: npt.NDArray[np.float64]  # every signal's edges, concatenated
    edge_bounds: npt.NDArray[np.int64]  # signal j's edges: edge_bounds[j] to edge_bounds[j + 1]
    bounds: npt.NDArray[np.int64]  # signal j's bins: bounds[j] to bounds[j + 1]
    floored: npt.NDArray[np.float64]  # every signal's floored proportions, concatenated
    cdf: npt.NDArray[np.float64]  # every signal's cumulative proportions, concatenated
    # Scratch for :meth:`stats` (a layout belongs to one monitor).
    terms: npt.NDArray[np.float64]
    means: npt.NDArray[np.float64]
    psis: npt.NDArray[np.float64]
    kss: npt.NDArray[np.float64]

    @classmethod
    def of(cls, binned: list[_Binned]) -> _Layout:
        def concat(arrays: list[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
            return np.concatenate(arrays) if arrays else np.zeros(0)

        def bounds(sizes: list[int]) -> npt.NDArray[np.int64]:
            return np.cumsum([0, *sizes], dtype=np.int64)

        width = len(binned)
        floored = concat([b.floored for b in binned])
        return cls(
            edges=concat([b.edges for b in binned]),
            edge_bounds=bounds([len(b.edges) for b in binned]),
            bounds=bounds([len(b.cdf) for b in binned]),
            floored=floored,
            cdf=concat([b.cdf for b in binned]),
            terms=np.empty(len(floored)),
            means=np.empty(width),
            psis=np.empty(width),
            kss=np.empty(width),
        )

    def stats(
        self, ring: npt.NDArray[np.float64], filled: int, counts: npt.NDArray[np.int64]
    ) -> tuple[list[float], list[float], list[float]]:
        """Mean, PSI and KS of each signal's window (the ring's first ``filled`` rows, whose
        bins ``counts`` counts) against its reference.

        Exactly the per-signal formulas: the proportions, floored proportions and
        logarithms are the same elementwise operations over every signal at once;
        the kernel sums as numpy does (see :mod:`operators.drift_kernel`).
        """
        observed = counts / max(1, filled)
        o = np.maximum(observed, _EPS)
        logs = np.log(o / self.floored)
        drift_kernel.window_stats(
            ring,
            filled,
            observed,
            self.floored,
            o,
            logs,
            self.cdf,
            self.bounds,
            self.terms,
            self.means,
            self.psis,
            self.kss,
        )
        return self.means.tolist(), self.psis.tolist(), self.kss.tolist()


@lru_cache(maxsize=64)
def _columns(names: tuple[str, ...], signals: tuple[str, ...]) -> npt.NDArray[np.int64]:
    """Column of each signal but the last (the score) in ``names``; the score's is unused."""
    return np.asarray([*(names.index(s) for s in signals[:-1]), 0], dtype=np.int64)


def drift_records(
    config: DriftConfig, model_version: str, stats: list[DriftStat], emitted: int = 0
) -> list[OutMessage]:
    """The contract's Drift records, keyed by signal name; ``emitted`` places them in order."""
    out = []
    # Every record of one emission has the same window: each bound formatted once.
    bounds = {t for s in stats for t in (s.window_start, s.window_end)}
    formatted = {t: format_ms(t) for t in bounds}
    for s in stats:
        body = {
            "signal": s.signal,
            "kind": s.kind,
            "model_version": model_version,
            "window_start": formatted[s.window_start],
            "window_end": formatted[s.window_end],
            "n": s.n,
            "mean": s.mean,
            "reference_mean": s.reference_mean,
            "psi": s.psi,
            "ks": s.ks,
            "detector": s.detector,
            "drift": s.drift,
            "warming_up": s.warming_up,
        }
        out.append(
            OutMessage(config.topic, s.signal.encode(), json_value(body), config.topic, emitted)
        )
    return out


class _DriftLogic(op.StatefulBatchLogic[DriftSample, list[OutMessage], bytes]):
    def __init__(
        self,
        config: DriftConfig,
        manifest: Callable[[], Manifest],
        on_stats: Callable[[list[DriftStat]], None],
        resume: bytes | None,
    ) -> None:
        self._config = config
        self._manifest = manifest
        self._on_stats = on_stats
        self._monitor: DriftMonitor = (
            pickle.loads(resume) if resume else DriftMonitor(config, manifest())
        )

    def on_batch(self, values: list[DriftSample]) -> tuple[list[list[OutMessage]], bool]:
        out: list[OutMessage] = []
        for sample in values:
            stats = self._monitor.observe(sample, self._manifest())
            if stats:
                self._on_stats(stats)
                monitor = self._monitor
                out.extend(
                    drift_records(self._config, monitor.model_version, stats, monitor.emitted)
                )
        return ([out] if out else []), op.StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self._monitor)


def drift(
    step_id: str,
    up: Stream[tuple[str, DriftSample]],
    *,
    config: DriftConfig,
    manifest: Callable[[], Manifest],
    on_stats: Callable[[list[DriftStat]], None] = lambda _s: None,
) -> Stream[tuple[str, list[OutMessage]]]:
    """Samples of scored batches, keyed ``DRIFT_KEY`` -> Drift records.

    One monitor for the whole flow: scoring keys every sample alike, so no
    re-keying step costs a call per worker step.
    """
    drift_kernel.compile_kernels()  # now, so no sample waits for a compile
    return op.stateful_batch(
        f"{step_id}-monitor",
        up,
        lambda resume: _DriftLogic(config, manifest, on_stats, resume),
    )
