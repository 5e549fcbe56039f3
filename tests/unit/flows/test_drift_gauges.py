"""The drift gauges show each signal's latest emission, however often its children are reused."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from flows.dataflow import _Parts
from flows.main import load_models
from operators.drift import DriftStat
from operators.metrics import ServiceMetrics
from schemas.settings import Settings


def _stat(signal: str, psi: float, ks: float, *, drift: bool, warming_up: bool) -> DriftStat:
    return DriftStat(
        signal=signal,
        kind="feature",
        window_start=0,
        window_end=1,
        n=2,
        mean=0.5,
        reference_mean=0.5,
        psi=psi,
        ks=ks,
        detector="psi",
        drift=drift,
        warming_up=warming_up,
    )


def test_each_emission_sets_every_gauge_of_its_signals(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = ServiceMetrics.create(registry)
    settings = Settings(state_dir=tmp_path, metrics_port=0)
    parts = _Parts(
        settings, models=load_models(settings, metrics), metrics=metrics, clock=lambda: 0
    )

    def gauges(signal: str) -> tuple[float | None, ...]:
        names = ("psi", "ks", "detected", "warming_up")
        labels = {"signal": signal}
        return tuple(registry.get_sample_value(f"streamscore_drift_{n}", labels) for n in names)

    parts.drift_gauges(
        [
            _stat("a", 0.1, 0.2, drift=False, warming_up=True),
            _stat("b", 0.3, 0.4, drift=True, warming_up=False),
        ]
    )
    assert gauges("a") == (0.1, 0.2, 0.0, 1.0)
    assert gauges("b") == (0.3, 0.4, 1.0, 0.0)
    parts.drift_gauges(
        [
            _stat("a", 0.5, 0.6, drift=True, warming_up=False),
            _stat("c", 0.7, 0.8, drift=False, warming_up=False),
        ]
    )
    assert gauges("a") == (0.5, 0.6, 1.0, 0.0)
    assert gauges("b") == (0.3, 0.4, 1.0, 0.0)
    assert gauges("c") == (0.7, 0.8, 0.0, 0.0)
