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

Time rules: none of its own; ``window_start``/``window_end`` are the smallest
and largest event times in the window. State: the window (values and event
times), the counters and the river detectors, snapshotted by bytewax as one
blob, so a restart resumes the same windows and detectors. A new active model
version resets the window: the reference changed.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass

import bytewax.operators as op
import numpy as np
import numpy.typing as npt
from bytewax.dataflow import Stream
from river import drift as river_drift

from models.manifest import Distribution, Manifest
from operators.messages import OutMessage
from schemas.timefmt import format_ms

SCORE_SIGNAL = "score"
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


@dataclass(frozen=True)
class DriftSample:
    """What scoring hands to drift for one batch: signal values, scores, event times."""

    model_version: str
    names: tuple[str, ...]
    values: npt.NDArray[np.float64]  # [n, len(names)]
    scores: npt.NDArray[np.float64]  # [n]
    event_times: npt.NDArray[np.int64]  # [n]


@dataclass(frozen=True)
class DriftStat:
    """One signal's statistics at one emission."""

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


class DriftMonitor:
    """Sliding-window PSI/KS per signal plus ADWIN (score) and PageHinkley (amount)."""

    # Emissions so far, across model changes: a drift record's place in the flow's
    # drift output. A class default, so a monitor pickled without it resumes at 0.
    emitted: int = 0

    def __init__(self, config: DriftConfig, manifest: Manifest) -> None:
        self._config = config
        self._reset(manifest)

    def _reset(self, manifest: Manifest) -> None:
        config = self._config
        self.model_version = manifest.model_version
        self._signals = (*manifest.feature_names, SCORE_SIGNAL)
        refs = [manifest.reference.features[n] for n in manifest.feature_names]
        self._refs: list[Distribution] = [*refs, manifest.reference.score]
        self._binned = [_Binned.of(ref) for ref in self._refs]
        width = len(self._signals)
        self._values = np.zeros((config.window_events, width), dtype=np.float64)
        self._times = np.zeros(config.window_events, dtype=np.int64)
        self._filled = 0
        self._pos = 0
        self._since_emit = 0
        self._chunks: dict[str, list[float]] = {SCORE_SIGNAL: [], AMOUNT_SIGNAL: []}
        self._adwin = river_drift.ADWIN(delta=config.adwin_delta)  # type: ignore[no-untyped-call]
        self._ph = river_drift.PageHinkley(threshold=config.page_hinkley_threshold)
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
        cols = [sample.names.index(s) for s in self._signals[:-1]]
        rows = np.column_stack([sample.values[:, cols], sample.scores])
        stats: list[DriftStat] = []
        start = 0
        while start < len(rows):
            take = min(len(rows) - start, self._config.every_events - self._since_emit)
            self._push(rows[start : start + take], sample.event_times[start : start + take])
            start += take
            if self._since_emit >= self._config.every_events:
                stats.extend(self._emit())
        return stats

    def _push(self, rows: npt.NDArray[np.float64], times: npt.NDArray[np.int64]) -> None:
        n = len(rows)
        if not n:
            return
        size = self._config.window_events
        self._since_emit += n
        self._filled = min(self._filled + n, size)
        # Into the ring buffer in at most two slices; rows that this same push would
        # overwrite (beyond the buffer's size) are not written at all.
        skip = max(0, n - size)
        pos = (self._pos + skip) % size
        self._pos = (self._pos + n) % size
        kept, kept_times = rows[skip:], times[skip:]
        first = min(len(kept), size - pos)
        self._values[pos : pos + first] = kept[:first]
        self._times[pos : pos + first] = kept_times[:first]
        self._values[: len(kept) - first] = kept[first:]
        self._times[: len(kept) - first] = kept_times[first:]
        # The same values, in the same order, as chunking row by row gave the detectors.
        self._chunk(SCORE_SIGNAL, rows[:, -1].tolist(), self._adwin)
        if self._amount_col is not None:
            # Relative to the reference mean, so the threshold does not depend on currency.
            ref = self._amount_ref
            amounts = [a / ref for a in rows[:, self._amount_col].tolist()]
            self._chunk(AMOUNT_SIGNAL, amounts, self._ph)

    def _chunk(
        self,
        signal: str,
        values: list[float],
        detector: river_drift.ADWIN | river_drift.PageHinkley,
    ) -> None:
        chunk = self._chunks[signal]
        size = self._config.chunk_events
        start = 0
        while start < len(values):
            take = min(size - len(chunk), len(values) - start)
            chunk.extend(values[start : start + take])
            start += take
            if len(chunk) >= size:
                detector.update(math.fsum(chunk) / len(chunk))  # type: ignore[no-untyped-call]
                chunk.clear()
                if detector.drift_detected:
                    self._fired.add(signal)

    def _emit(self) -> list[DriftStat]:
        self._since_emit = 0
        self.emitted += 1
        # One contiguous row per signal: a strided column is slower to search and sum.
        columns = np.ascontiguousarray(self._values[: self._filled].T)
        times = self._times[: self._filled]
        first, last = int(times.min()), int(times.max())
        stats = []
        for i, (signal, ref) in enumerate(zip(self._signals, self._refs, strict=True)):
            values = columns[i]
            psi, ks = _psi_ks(values, self._binned[i])
            detector = {SCORE_SIGNAL: "adwin", AMOUNT_SIGNAL: "page_hinkley"}.get(signal, "psi")
            drifted = psi >= self._config.psi_threshold or signal in self._fired
            stats.append(
                DriftStat(
                    signal=signal,
                    kind="score" if signal == SCORE_SIGNAL else "feature",
                    window_start=first,
                    window_end=last,
                    n=len(values),
                    mean=float(values.mean()),
                    reference_mean=ref.mean,
                    psi=psi,
                    ks=ks,
                    detector=detector,
                    drift=drifted,
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


def _psi_ks(values: npt.NDArray[np.float64], ref: _Binned) -> tuple[float, float]:
    """PSI and KS of ``values`` against a binned reference (same bins as training)."""
    counts = np.bincount(np.searchsorted(ref.edges, values, side="right"), minlength=len(ref.cdf))
    observed = counts / max(1, len(values))
    o, e = np.maximum(observed, _EPS), ref.floored
    psi = float(np.sum((o - e) * np.log(o / e)))
    ks = float(np.max(np.abs(np.cumsum(observed) - ref.cdf)))
    return psi, ks


def drift_records(
    config: DriftConfig, model_version: str, stats: list[DriftStat], emitted: int = 0
) -> list[OutMessage]:
    """The contract's Drift records, keyed by signal name; ``emitted`` places them in order."""
    out = []
    for s in stats:
        body = {
            "signal": s.signal,
            "kind": s.kind,
            "model_version": model_version,
            "window_start": format_ms(s.window_start),
            "window_end": format_ms(s.window_end),
            "n": s.n,
            "mean": s.mean,
            "reference_mean": s.reference_mean,
            "psi": s.psi,
            "ks": s.ks,
            "detector": s.detector,
            "drift": s.drift,
        }
        out.append(
            OutMessage(
                config.topic, s.signal.encode(), json.dumps(body).encode(), config.topic, emitted
            )
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
    return op.stateful_batch(
        f"{step_id}-monitor",
        up,
        lambda resume: _DriftLogic(config, manifest, on_stats, resume),
    )
