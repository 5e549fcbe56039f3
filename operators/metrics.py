"""Prometheus metrics of the service, registered on a registry the caller passes in.

No global registry: the entry point creates one, serves it, and hands it to
:func:`flows.dataflow.build_flow`; tests get fresh registries.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

# Seconds; dense below 50 ms, the latency target.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)


@dataclass(frozen=True)
class ServiceMetrics:
    """The counters and histograms the operators update."""

    events_in: Counter
    scored: Counter
    dead_letters: Counter
    e2e_latency: Histogram
    inference_latency: Histogram
    batch_size: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ServiceMetrics:
        """Register every metric on ``registry``."""
        return cls(
            events_in=Counter(
                "streamscore_events_in", "Records consumed", ["topic"], registry=registry
            ),
            scored=Counter(
                "streamscore_scored", "Transactions scored", ["model_version"], registry=registry
            ),
            dead_letters=Counter(
                "streamscore_dead_letters", "Records rejected", ["reason"], registry=registry
            ),
            e2e_latency=Histogram(
                "streamscore_e2e_latency_seconds",
                "From the record's Kafka timestamp to its score being handed to the producer",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            inference_latency=Histogram(
                "streamscore_inference_latency_seconds",
                "ONNX inference time of one batch",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            batch_size=Histogram(
                "streamscore_score_batch_size",
                "Transactions per inference batch",
                buckets=(1, 4, 16, 64, 256, 1024, 4096),
                registry=registry,
            ),
        )
