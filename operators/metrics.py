"""Prometheus metrics of the service, registered on a registry the caller passes in.

No global registry: the entry point creates one, serves it, and hands it to
:func:`flows.dataflow.build_flow`; tests get fresh registries.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds; dense below 50 ms, the latency target.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)  # fmt: skip


@dataclass(frozen=True)
class ServiceMetrics:
    """The counters, gauges and histograms the operators update."""

    events_in: Counter
    scored: Counter
    dead_letters: Counter
    chargebacks: Counter
    late: Counter
    fallback: Counter
    window_aggregates: Counter
    model_load_failures: Counter
    e2e_latency: Histogram
    inference_latency: Histogram
    batch_size: Histogram
    consumer_lag: Gauge
    state_keys: Gauge
    model_info: Gauge
    breaker_open: Gauge
    drift_psi: Gauge
    drift_ks: Gauge
    drift_detected: Gauge
    drift_warming_up: Gauge
    decline_precision: Gauge
    decline_recall: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ServiceMetrics:
        """Register every metric on ``registry``."""

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        def latency(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, buckets=LATENCY_BUCKETS, registry=registry)

        return cls(
            events_in=counter("streamscore_events_in", "Records consumed", ("topic",)),
            scored=counter("streamscore_scored", "Transactions scored", ("model_version",)),
            dead_letters=counter("streamscore_dead_letters", "Records rejected", ("reason",)),
            chargebacks=counter(
                "streamscore_chargebacks",
                "Chargebacks counted in merchant windows (the others are dead letters)",
            ),
            late=counter("streamscore_late", "Late transactions (scored, state unchanged)"),
            fallback=counter("streamscore_fallback", "Transactions scored by the rules fallback"),
            window_aggregates=counter(
                "streamscore_window_aggregates", "Closed merchant windows published"
            ),
            model_load_failures=counter(
                "streamscore_model_load_failures",
                "New model versions refused (the old one kept serving)",
                ("reason",),
            ),
            e2e_latency=latency(
                "streamscore_e2e_latency_seconds",
                "From the record's Kafka timestamp to its score being handed to the producer",
            ),
            inference_latency=latency(
                "streamscore_inference_latency_seconds", "ONNX inference time of one batch"
            ),
            batch_size=Histogram(
                "streamscore_score_batch_size",
                "Transactions per inference batch",
                buckets=(1, 4, 16, 64, 256, 1024, 4096),
                registry=registry,
            ),
            consumer_lag=gauge(
                "streamscore_consumer_lag",
                "Records between the partition's end and the next offset to read",
                ("topic", "partition"),
            ),
            state_keys=gauge("streamscore_state_keys", "Estimated keys in this process's store"),
            model_info=gauge(
                "streamscore_model_info", "Models in service (1) by role", ("role", "model_version")
            ),
            breaker_open=gauge(
                "streamscore_breaker_open", "1 while a model's circuit breaker is open", ("role",)
            ),
            drift_psi=gauge("streamscore_drift_psi", "Population stability index", ("signal",)),
            drift_ks=gauge("streamscore_drift_ks", "Kolmogorov-Smirnov statistic", ("signal",)),
            drift_detected=gauge(
                "streamscore_drift_detected", "1 while drift is flagged", ("signal",)
            ),
            drift_warming_up=gauge(
                "streamscore_drift_warming_up",
                "1 while a signal's feature windows are still filling (no drift alarm)",
                ("signal",),
            ),
            decline_precision=gauge(
                "streamscore_decline_precision",
                "Declined transactions later chargebacked, of all declined (latest final window)",
            ),
            decline_recall=gauge(
                "streamscore_decline_recall",
                "Chargebacked transactions that were declined (latest final window)",
            ),
        )


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe(a)`` for each amount, with one update per bucket hit.

    prometheus-client has no batch observe, and a per-event ``observe`` (lock,
    linear bucket search) would add that cost to every scored event. This
    relies on the client's histogram internals (``_upper_bounds``,
    ``_buckets``, ``_sum``, as in the pinned 0.26); the unit test compares the
    exposition with per-amount ``observe``. The sum may differ from per-amount
    additions in the last bits of its float.
    """
    if not amounts:
        return
    bounds = histogram._upper_bounds
    hits = [0] * len(bounds)
    for amount in amounts:
        # observe() counts an amount in the first bucket with amount <= bound (none for NaN).
        i = bisect.bisect_left(bounds, amount)
        if i < len(bounds) and amount <= bounds[i]:
            hits[i] += 1
    histogram._raise_if_not_observable()  # type: ignore[no-untyped-call]
    histogram._sum.inc(sum(amounts))
    for bucket, n in zip(histogram._buckets, hits, strict=True):
        if n:
            bucket.inc(n)
