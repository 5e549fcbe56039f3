"""Drift kernels: the kept counts are a count of the window, the sums are numpy's bits.

The oracles are the monitor's former numpy formulas, kept here: a bincount of
``searchsorted`` bins over the window, ``np.sum`` of each signal's PSI terms,
the mean of the transposed window's rows, the maximum gap of a padded
cumulative sum.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from models.manifest import Manifest, read_manifest
from operators import drift_kernel
from operators.drift import DriftConfig, DriftMonitor, DriftSample, _Binned, _Layout
from operators.features import ALL_FEATURES

ARTIFACT = Path(__file__).resolve().parents[3] / "models" / "artifacts" / "fraud-gbt-1"


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return read_manifest(ARTIFACT)


def _window_counts(monitor: DriftMonitor) -> npt.NDArray[np.int64]:
    """A bincount over the window of each value's bin (``searchsorted``, right)."""
    window = monitor._values[: monitor._filled]
    counts = []
    for j, binned in enumerate(monitor._binned):
        bins = np.searchsorted(binned.edges, window[:, j], side="right")
        counts.append(np.bincount(bins, minlength=len(binned.cdf)))
    return np.concatenate(counts)


def _sample(
    manifest: Manifest, rng: np.random.Generator, n: int, version: str | None = None
) -> DriftSample:
    """``n`` rows of every feature: spread values, values on edges, NaN, infinities."""
    edges = np.concatenate([manifest.reference.features[f].edges for f in manifest.feature_names])
    values = rng.normal(0, 50, size=(n, len(ALL_FEATURES)))
    on_edge = rng.random(values.shape) < 0.3
    values[on_edge] = rng.choice(edges, size=int(on_edge.sum()))
    values[rng.random(values.shape) < 0.02] = np.nan
    values[rng.random(values.shape) < 0.01] = np.inf
    values[rng.random(values.shape) < 0.01] = -np.inf
    values[rng.random(values.shape) < 0.01] = -0.0
    # The amount's detector sums it exactly: an infinity of each sign would not add up.
    amount = ALL_FEATURES.index("txn_amount")
    values[~np.isfinite(values[:, amount]), amount] = np.nan
    scores = rng.random(n)
    scores[rng.random(n) < 0.05] = np.nan
    return DriftSample(
        version or manifest.model_version,
        ALL_FEATURES,
        values,
        scores,
        np.arange(n, dtype=np.int64),
    )


def test_kept_counts_equal_a_bincount_over_the_window(manifest: Manifest) -> None:
    """After pushes that wrap the ring, overrun it, follow a model change and a restore."""
    rng = np.random.default_rng(11)
    other = manifest.model_copy(update={"model_version": "other"})
    for window in (1, 7, 64, 300):
        config = DriftConfig(topic="drift", window_events=window, every_events=int(window * 1.7))
        monitor = DriftMonitor(config, manifest)
        current = manifest
        for step in range(40):
            if step == 20:  # a new model version resets the window and its counts
                current = other
            sample = _sample(current, rng, int(rng.integers(0, 3 * window)), current.model_version)
            monitor.observe(sample, current)
            assert monitor._filled <= window
            assert np.array_equal(monitor._counts, _window_counts(monitor)), (window, step)
            if rng.random() < 0.2:
                restored = pickle.loads(pickle.dumps(monitor))
                assert np.array_equal(restored._counts, monitor._counts)
                monitor = restored


def test_the_snapshot_holds_no_derived_state(manifest: Manifest) -> None:
    """The pickled state has the keys it had before the counts were kept (so either
    version restores the other's snapshots), and restoring rebuilds the counts."""
    monitor = DriftMonitor(DriftConfig(topic="drift", window_events=50), manifest)
    monitor.observe(_sample(manifest, np.random.default_rng(3), 80), manifest)
    state = monitor.__getstate__()
    assert "_counts" not in state and "_layout" not in state and "_bins" not in state
    assert set(state) == set(vars(monitor)) - {"_counts", "_layout"}
    restored = DriftMonitor.__new__(DriftMonitor)
    restored.__setstate__(dict(state))
    assert np.array_equal(restored._counts, monitor._counts)
    more = _sample(manifest, np.random.default_rng(4), 130)
    assert restored.observe(more, manifest) == monitor.observe(more, manifest)


def _old_statistics(
    ring: npt.NDArray[np.float64], filled: int, binned: list[_Binned]
) -> tuple[list[float], list[float], list[float]]:
    """The monitor's former numpy computation of every signal's mean, PSI and KS."""
    sizes = [len(b.cdf) for b in binned]
    offsets = np.cumsum([0, *sizes[:-1]], dtype=np.intp)
    floored = np.concatenate([b.floored for b in binned])
    cdf = np.zeros((len(binned), max(sizes)))
    tail = np.ones(cdf.shape, dtype=bool)
    for i, b in enumerate(binned):
        cdf[i, : len(b.cdf)] = b.cdf
        tail[i, : len(b.cdf)] = False
    window = ring[:filled]
    bins = np.column_stack(
        [np.searchsorted(b.edges, window[:, i], side="right") for i, b in enumerate(binned)]
    )
    means = np.ascontiguousarray(window.T).mean(axis=1).tolist()
    counts = np.bincount((bins + offsets).ravel(), minlength=len(floored))
    observed = counts / max(1, filled)
    o, e = np.maximum(observed, 1e-4), floored
    terms = (o - e) * np.log(o / e)
    ends = [*offsets[1:].tolist(), len(terms)]
    psis = [float(np.sum(terms[a:b])) for a, b in zip(offsets.tolist(), ends, strict=True)]
    rows = np.zeros(cdf.shape)
    rows[~tail] = observed
    gaps = np.abs(np.cumsum(rows, axis=1) - cdf)
    gaps[tail] = 0.0
    return means, psis, gaps.max(axis=1, initial=0.0).tolist()


def _random_binned(rng: np.random.Generator, edges: int) -> _Binned:
    """A reference of ``edges`` sorted edges and random proportions (some below the floor)."""
    proportions = rng.dirichlet(np.full(edges + 1, 0.3))
    return _Binned(
        np.sort(rng.normal(0, 1, edges)),
        np.maximum(proportions, 1e-4),
        np.cumsum(proportions),
    )


def test_statistics_are_the_bits_of_the_numpy_formulas() -> None:
    """Windows of 1 to 2,100 rows and references of 0 to 400 edges: numpy's pairwise
    summation splits at 8 and 128 values, so these lengths cross every branch of it."""
    rng = np.random.default_rng(17)
    lengths = [*range(1, 40), 127, 128, 129, 255, 256, 257, 1000, 2000, 2047, 2100]
    for trial in range(60):
        sizes = [int(s) for s in rng.choice([0, 1, 6, 7, 8, 9, 126, 127, 128, 200, 400], 5)]
        binned = [_random_binned(rng, s) for s in sizes]
        layout = _Layout.of(binned)
        filled = lengths[trial % len(lengths)]
        size = filled + int(rng.integers(0, 5))
        # Mixed magnitudes and signs, so the order of the additions shows in the bits.
        ring = rng.normal(0, 1, (size, len(binned))) * 10.0 ** rng.integers(-8, 9, (size, 1))
        ring[rng.random(ring.shape) < 0.05] = -0.0
        counts = np.zeros(len(layout.floored), dtype=np.int64)
        drift_kernel.recount(
            ring, filled, layout.edges, layout.bounds, layout.edge_bounds, counts
        )  # fmt: skip
        got = layout.stats(ring, filled, counts)
        want = _old_statistics(ring, filled, binned)
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(np.array(g), np.array(w)), (trial, sizes, filled)
            assert np.array_equal(np.signbit(g), np.signbit(w)), (trial, sizes, filled)
