"""Figures of a benchmark run and how they are reported: JSON, a PNG chart, a text summary.

Pure code: phase results come in as frozen dataclasses, the report is a plain
JSON-ready dict whose ``definitions`` say what exactly each figure measures.

>>> percentile([1.0, 2.0, 3.0, 4.0], 50)
2.5
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.host import HostScaling
from benchmarks.host import line as host_line
from benchmarks.options import BenchConfig

# The performance issue's targets (benchmark figures, not timed tests).
TARGET_PIPELINE_2P_EPS = 50_000.0
TARGET_OVER_QUIX = 4.0
TARGET_P99_MS = 50.0
TARGET_RSS_MIB = 1024.0
TARGET_RSS_CARDS = 1_000_000
TARGET_COLD_START_S = 5.0

DEFINITIONS = {
    "events": (
        "N synthetic transactions from models.simulator (SimConfig(cards=...)), preloaded once "
        "with confluent-kafka into one input topic that every throughput phase reads from its "
        "beginning; the Kafka timestamp of each record is its event time; no chargebacks"
    ),
    "raw_events_per_s": (
        "events done / seconds from spawning the process(es) until the last output was on its "
        "topic (pipeline: all scores; passthrough: last copy acknowledged; quix: last input "
        "processed; kafka-streams: last input handed to the aggregation); includes interpreter "
        "or JVM start, imports, model load and cluster setup"
    ),
    "startup_s": (
        "seconds from spawning until the first output (pipeline: first score on the scores "
        "topic, polled every 50 ms; peers: first input record in hand)"
    ),
    "steady_events_per_s": (
        "startup excluded: events done after the first output / seconds from the first output "
        "to the last; the ratios use this figure (startup_separated false: every output came "
        "in one poll, so it equals the raw figure)"
    ),
    "pipeline": (
        "`streamscore run --until-eof` subprocess(es) over fresh output topics "
        "(STREAMSCORE_TOPICS__*), metrics off, own state dir; 2 processes form one bytewax "
        "cluster (-i/-a); completion = the scores topic's end offsets sum to the scores expected"
    ),
    "passthrough": (
        "the ceiling: one confluent-kafka consumer (assigned every partition) producing each "
        "record unchanged to another topic with the pipeline's producer settings, then flush"
    ),
    "quix": (
        "Quix Streams 3 Application in its own process: JSON values, per-card (message key) "
        "tumbling 5-minute window on the Kafka timestamp, 5 s grace, count + sum(amount), "
        "final() with closing_strategy='partition', closed windows produced to a topic; "
        "changelog topics off (StreamScore has none either); stops after N inputs"
    ),
    "kafka_streams": (
        "Kafka Streams (the broker's Kafka version, from Maven Central, built by "
        "scripts/kafka-streams-peer) in its own JVM (-Xmx1g, G1), one stream thread: the Quix "
        "job (per-card key, tumbling 5-minute window on the Kafka timestamp, 5 s grace, count + "
        "sum(amount) from the parsed JSON value) in a RocksDB window store without changelog, "
        "suppress(untilWindowCloses), closed windows produced as JSON; commit interval 5 s as "
        "Quix's; records counted as they enter the aggregation; stops after N inputs"
    ),
    "kafka_client": (
        "the Kafka client's CPU per record in its own process (python -m benchmarks.kafka_client,"
        " time.process_time(): librdkafka's threads included, the broker's not) over the same "
        "input: consume = one consumer per partition with the source's settings reading every "
        "record (key, value, offset, timestamp) in batches of up to 1,000; produce = as many "
        "records (the input's values and keys) with the sink's producer settings and error-only "
        "delivery reports, poll(0) every 1,000, then flush; share_of_pipeline_1p_cpu divides "
        "their sum by the 1-process pipeline's CPU us an event"
    ),
    "rss_phase": (
        "whole-pipeline peak RSS with many distinct cards: `streamscore run --until-eof` as 1 "
        "process (every card's state in one process) over a fresh input of --rss-events "
        "simulated transactions whose cards are --rss-cards distinct ids taken in turn (one "
        "transaction a card by default), measured as the other pipeline runs"
    ),
    "latency": (
        "`streamscore run` (tail mode) fed at the offered rate by a paced confluent-kafka "
        "producer (linger.ms=1) in the benchmark process; per transaction: time.perf_counter() "
        "when the benchmark's own consumer (fetch.wait.max.ms=5) received its score minus "
        "time.perf_counter() just before produce() of the input (the input's Kafka timestamp "
        "is set to that instant too); one clock, one process; warm-up excluded; includes both "
        "Kafka hops, the producer's linger and the consumer's fetch wait"
    ),
    "latency_runs": (
        "--latency-runs consecutive latency runs at --rate, each with fresh topics, state "
        "and pipeline processes; the p99 target holds only if it holds in every run; "
        "latency_cluster: one more run with --cluster-processes (a bytewax cluster) at "
        "--cluster-rate"
    ),
    "cold_start_s": (
        "the 1-process throughput run's startup_s: from spawning `streamscore run` to its "
        "first score on the scores topic, with the whole input waiting (interpreter start, "
        "imports, model load and any JIT compilation, broker connection, the first batch)"
    ),
    "latency_host_cores": (
        "host_cores: busy CPU seconds of the whole host (/proc/stat: all but idle and iowait) "
        "while the counted transactions were sent, over that time; other_cores: what the "
        "pipeline did not use of it (the broker, the benchmark's sender and reader, anything "
        "else on the host): a run on a host busy with other work is slower than the pipeline"
    ),
    "broker_round_trip": (
        "--latency-only first offers --rate to a fresh topic for --broker-warmup seconds with "
        "the latency run's producer and reads it back with its consumer, no pipeline between: "
        "the broker's share of the latency (both hops, linger and fetch wait) and the warm-up "
        "of a broker that has served nothing yet (the full bench's earlier phases warm it)"
    ),
    "latency_cpu": (
        "user + system CPU seconds of the latency run's pipeline processes (/proc/<pid>/stat) "
        "while the counted transactions were sent; pipeline_cores divides it by that time, "
        "cpu_us_per_event by the transactions sent: the load a step's fixed cost puts on the "
        "pipeline at a rate it keeps up with, where full batches amortise it"
    ),
    "host_cores": (
        "busy CPU seconds of the whole host (/proc/stat: all but idle and iowait) from spawn "
        "to the last output, over that time; other_cores is what the measured processes did "
        "not use of it (the broker, the benchmark's own reader): whether the host was the limit"
    ),
    "host_scaling": (
        "before the phases, with the broker idle: a fixed pure-Python workload (benchmarks.host) "
        "in one child process, then in 2 children from one start instant, 3 rounds alternated, "
        "medians; speedup = 2 x one child's wall time / the slower child's at once (2.0 on two "
        "free cores), cpu_inflation = a child's CPU seconds at once / alone: the ceiling on "
        "pipeline_2p_over_1p that the host sets, before any cost of the cluster itself"
    ),
    "peak_rss_mib": "VmHWM of each pipeline process from /proc/<pid>/status, polled every 0.1 s",
    "cpu_s": (
        "user + system CPU seconds of each process (/proc/<pid>/stat) from spawn to the last "
        "output, startup included; cpu_us_per_event divides their sum by the events done"
    ),
}


def _cores_beside(host_busy_s: float, cpu_s: float, seconds: float) -> float:
    """Cores the host kept busy over ``seconds`` beside the measured ``cpu_s``."""
    if not host_busy_s or seconds <= 0:
        return 0.0
    return round(max(0.0, host_busy_s - cpu_s) / seconds, 6)


@dataclass(frozen=True, kw_only=True)
class Throughput:
    """One throughput phase: how many events, how long, from spawn and from first output."""

    label: str
    processes: int
    expected: int
    done: int
    wall_s: float
    startup_s: float
    steady_events: int
    steady_s: float
    complete: bool
    peak_rss_mib: tuple[float, ...] = ()
    # CPU seconds (user + system) of each process from spawn to the last output.
    cpu_s: tuple[float, ...] = ()
    # False when every output showed up at once, so the startup-excluded figure
    # could not be told apart: it is then the raw one.
    startup_separated: bool = True
    # CPU seconds the whole host was busy over the same span (0.0: not measured).
    host_busy_s: float = 0.0

    @property
    def raw_events_per_s(self) -> float:
        """Events done per second from spawn to the last output."""
        return self.done / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def steady_events_per_s(self) -> float:
        """Events done per second from the first output to the last."""
        return self.steady_events / self.steady_s if self.steady_s > 0 else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        """CPU microseconds per event, all processes together, startup included."""
        return sum(self.cpu_s) / self.done * 1e6 if self.done else 0.0

    @property
    def host_cores(self) -> float:
        """Cores the whole host kept busy from spawn to the last output (0.0: not measured)."""
        return self.host_busy_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def other_cores(self) -> float:
        """Of :attr:`host_cores`, what the measured processes did not use: the broker, the rest.

        >>> Throughput(label="x", processes=1, expected=1, done=1, wall_s=10.0, startup_s=1.0,
        ...     steady_events=1, steady_s=9.0, complete=True, cpu_s=(12.0,),
        ...     host_busy_s=19.0).other_cores
        0.7
        """
        return _cores_beside(self.host_busy_s, sum(self.cpu_s), self.wall_s)


@dataclass(frozen=True, kw_only=True)
class Latency:
    """The fixed-rate run: what was offered, what came back, the latency percentiles."""

    processes: int
    offered_rate: float
    sent_rate: float
    warmup_s: float
    seconds: float
    sent: int
    received: int
    # True when some counted transactions were never scored: the percentiles then
    # describe only those that were, so the true ones are higher.
    lower_bounds: bool
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    peak_rss_mib: tuple[float, ...] = ()
    # CPU seconds of the pipeline processes while the counted transactions were sent.
    cpu_s: float = 0.0
    # CPU seconds the whole host was busy over the same span (0.0: not measured).
    host_busy_s: float = 0.0

    @property
    def pipeline_cores(self) -> float:
        """Cores the pipeline kept busy at the offered rate (0.0 when not measured)."""
        return self.cpu_s / self.seconds if self.seconds > 0 else 0.0

    @property
    def host_cores(self) -> float:
        """Cores the whole host kept busy while the counted transactions were sent."""
        return self.host_busy_s / self.seconds if self.seconds > 0 else 0.0

    @property
    def other_cores(self) -> float:
        """Of :attr:`host_cores`, what the pipeline did not use: broker, load generator, the rest.

        >>> Latency(processes=1, offered_rate=1.0, sent_rate=1.0, warmup_s=0.0, seconds=10.0,
        ...     sent=10, received=10, lower_bounds=False, p50_ms=1.0, p95_ms=1.0, p99_ms=1.0,
        ...     max_ms=1.0, mean_ms=1.0, cpu_s=6.0, host_busy_s=15.0).other_cores
        0.9
        """
        return _cores_beside(self.host_busy_s, self.cpu_s, self.seconds)

    @property
    def cpu_us_per_event(self) -> float:
        """The pipeline's CPU microseconds a transaction sent (0.0 when not measured)."""
        return self.cpu_s / self.sent * 1e6 if self.sent else 0.0


@dataclass(frozen=True, kw_only=True)
class KafkaClient:
    """The Kafka client's own cost: consuming the input, producing as many records."""

    consumed: int
    consume_cpu_s: float
    consume_wall_s: float
    produced: int
    produce_cpu_s: float
    produce_wall_s: float

    @property
    def consume_cpu_us(self) -> float:
        """CPU microseconds a record consumed."""
        return self.consume_cpu_s / self.consumed * 1e6 if self.consumed else 0.0

    @property
    def produce_cpu_us(self) -> float:
        """CPU microseconds a record produced (flush included)."""
        return self.produce_cpu_s / self.produced * 1e6 if self.produced else 0.0

    @property
    def cpu_us_per_record(self) -> float:
        """Consume plus produce: what one record in and one out cost the client."""
        return self.consume_cpu_us + self.produce_cpu_us


@dataclass(frozen=True, kw_only=True)
class CardsRss:
    """The whole pipeline's peak RSS with ``cards`` distinct cards (one process)."""

    cards: int
    run: Throughput

    @property
    def cards_done(self) -> int:
        """Distinct cards the pipeline scored (the cards are taken in turn)."""
        return min(self.cards, self.run.done)

    @property
    def peak_rss_mib(self) -> float:
        """The highest peak RSS of the run's processes, in MiB."""
        return max(self.run.peak_rss_mib, default=0.0)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating linearly between closest ranks.

    Same definition as numpy's default (``method="linear"``).
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def latency_from_samples(
    samples_s: Sequence[float],
    *,
    processes: int,
    offered_rate: float,
    sent: int,
    sent_seconds: float,
    warmup_s: float,
    peak_rss_mib: tuple[float, ...] = (),
    cpu_s: float = 0.0,
    host_busy_s: float = 0.0,
) -> Latency:
    """Summarise per-event latencies (seconds) into milliseconds."""
    if not samples_s:
        raise ValueError("no score came back in the latency run")
    ms = sorted(s * 1000 for s in samples_s)
    return Latency(
        processes=processes,
        offered_rate=offered_rate,
        sent_rate=sent / sent_seconds if sent_seconds > 0 else 0.0,
        warmup_s=warmup_s,
        seconds=sent_seconds,
        sent=sent,
        received=len(ms),
        lower_bounds=len(ms) < sent,
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        max_ms=ms[-1],
        mean_ms=sum(ms) / len(ms),
        peak_rss_mib=peak_rss_mib,
        cpu_s=cpu_s,
        host_busy_s=host_busy_s,
    )


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or None when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else None


@dataclass(frozen=True, kw_only=True)
class Results:
    """Everything one run measured."""

    config: BenchConfig
    started_at: str
    preload_s: float
    passthrough: Throughput
    pipeline_1p: Throughput
    pipeline_2p: Throughput
    quix: Throughput
    kafka_streams: Throughput
    kafka_client: KafkaClient
    latency: Latency  # the first latency run at --rate
    # The whole-pipeline RSS phase; None when skipped (--rss-cards 0).
    rss: CardsRss | None = None
    # The further consecutive runs at --rate, and the cluster run (None when skipped).
    latency_more: tuple[Latency, ...] = ()
    latency_cluster: Latency | None = None
    # Two CPU-bound processes against one on this host; None when not measured.
    host: HostScaling | None = None

    @property
    def latency_runs(self) -> tuple[Latency, ...]:
        """Every latency run at --rate, in order."""
        return (self.latency, *self.latency_more)

    @property
    def throughputs(self) -> tuple[Throughput, ...]:
        """The throughput phases over the shared input, in the order they ran."""
        return (self.passthrough, self.pipeline_1p, self.pipeline_2p, self.quix, self.kafka_streams)


def ratios(results: Results, *, steady: bool = True) -> dict[str, float | None]:
    """Pipeline over passthrough (b/a), over Quix (b/c) and over Kafka Streams (b/d)."""

    def eps(t: Throughput) -> float:
        return t.steady_events_per_s if steady else t.raw_events_per_s

    a, b1, b2, c, d = (eps(t) for t in results.throughputs)
    return {
        "pipeline_2p_over_passthrough": ratio(b2, a),
        "pipeline_2p_over_quix": ratio(b2, c),
        "pipeline_2p_over_kafka_streams": ratio(b2, d),
        "pipeline_1p_over_passthrough": ratio(b1, a),
        "pipeline_1p_over_quix": ratio(b1, c),
        "pipeline_1p_over_kafka_streams": ratio(b1, d),
        "pipeline_2p_over_1p": ratio(b2, b1),
        "kafka_streams_over_quix": ratio(d, c),
    }


def peak_rss(results: Results) -> dict[str, float]:
    """Peak RSS per pipeline run in MiB (the 2-process run per process and summed)."""
    b1, b2 = results.pipeline_1p, results.pipeline_2p
    lat = [m for run in results.latency_runs for m in run.peak_rss_mib]
    out = {"pipeline_1p": max(b1.peak_rss_mib, default=0.0)}
    for i, mib in enumerate(b2.peak_rss_mib):
        out[f"pipeline_2p_process_{i}"] = mib
    out["pipeline_2p_total"] = sum(b2.peak_rss_mib)
    out["latency_run"] = max(lat, default=0.0)
    if results.latency_cluster is not None:
        lat.extend(results.latency_cluster.peak_rss_mib)
    runs = [*b1.peak_rss_mib, *b2.peak_rss_mib, *lat]
    if results.rss is not None:
        out["rss_phase"] = results.rss.peak_rss_mib
        runs.append(results.rss.peak_rss_mib)
    out["max_per_process"] = max(runs, default=0.0)
    return out


def kafka_client_json(client: KafkaClient, pipeline_1p: Throughput) -> dict[str, object]:
    """The client's figures per record, and their share of the 1-process pipeline's CPU."""
    out: dict[str, object] = asdict(client)
    out["consume_cpu_us_per_record"] = client.consume_cpu_us
    out["produce_cpu_us_per_record"] = client.produce_cpu_us
    out["cpu_us_per_record"] = client.cpu_us_per_record
    out["consume_records_per_s"] = ratio(client.consumed, client.consume_wall_s)
    out["produce_records_per_s"] = ratio(client.produced, client.produce_wall_s)
    out["share_of_pipeline_1p_cpu"] = ratio(client.cpu_us_per_record, pipeline_1p.cpu_us_per_event)
    return out


def rss_target(rss: CardsRss | None, fallback_mib: float, fallback_cards: int) -> dict[str, object]:
    """The 1 GiB target: met only by a complete run with at least 1M distinct cards."""
    if rss is None:
        return {
            "target": TARGET_RSS_MIB,
            "measured": fallback_mib,
            "met": False,
            "note": (
                f"measured with {fallback_cards:,} distinct cards only; the target needs the "
                f"RSS phase with {TARGET_RSS_CARDS:,} (--rss-cards)"
            ),
        }
    at_scale = rss.run.complete and rss.cards_done >= TARGET_RSS_CARDS
    return {
        "target": TARGET_RSS_MIB,
        "measured": rss.peak_rss_mib,
        "met": at_scale and rss.peak_rss_mib < TARGET_RSS_MIB,
        "note": (
            f"whole pipeline, 1 process, {rss.cards_done:,} distinct cards"
            + ("" if at_scale else f" (the target needs {TARGET_RSS_CARDS:,}, all scored)")
        ),
    }


def rss_json(rss: CardsRss) -> dict[str, object]:
    """The RSS phase: its cards, its peak RSS, and the pipeline run behind it."""
    return {
        "cards": rss.cards,
        "cards_done": rss.cards_done,
        "peak_rss_mib": rss.peak_rss_mib,
        "run": _throughput_json(rss.run),
    }


def rss_line(rss: CardsRss) -> str:
    """The RSS phase on one line."""
    run = rss.run
    done = "" if run.complete else f"; INCOMPLETE: {run.done:,} of {run.expected:,} scored"
    return (
        f"whole-pipeline RSS with {rss.cards_done:,} distinct cards (1 process, {run.done:,} "
        f"transactions): peak {rss.peak_rss_mib:,.0f} MiB; {run.steady_events_per_s:,.0f} ev/s "
        f"startup excluded, {run.cpu_us_per_event:.1f} us CPU an event{done}"
    )


def kafka_client_line(client: KafkaClient, pipeline_1p: Throughput) -> str:
    """The Kafka client's cost on one line."""
    share = ratio(client.cpu_us_per_record, pipeline_1p.cpu_us_per_event)
    return (
        f"Kafka client CPU a record: consume {client.consume_cpu_us:.1f} us + produce "
        f"{client.produce_cpu_us:.1f} us = {client.cpu_us_per_record:.1f} us"
        + ("" if share is None else f" ({share:.0%} of the 1-process pipeline's CPU an event)")
    )


def targets(results: Results) -> dict[str, dict[str, object]]:
    """The issue's targets beside what this run measured."""
    eps_2p = results.pipeline_2p.steady_events_per_s
    over_quix = ratios(results)["pipeline_2p_over_quix"]
    rss = peak_rss(results)["max_per_process"]
    checked: dict[str, dict[str, object]] = {
        "pipeline_2p_events_per_s": {
            "target": TARGET_PIPELINE_2P_EPS,
            "measured": eps_2p,
            "met": eps_2p >= TARGET_PIPELINE_2P_EPS,
        },
        "pipeline_2p_over_quix": {
            "target": TARGET_OVER_QUIX,
            "measured": over_quix,
            "met": over_quix is not None and over_quix >= TARGET_OVER_QUIX,
        },
        "p99_ms_at_offered_rate": p99_target(results.latency_runs),
    }
    if results.latency_cluster is not None:
        checked["p99_ms_at_cluster_rate"] = p99_target([results.latency_cluster])
    checked["peak_rss_mib_per_process"] = rss_target(results.rss, rss, results.config.cards)
    cold = results.pipeline_1p.startup_s
    checked["cold_start_s"] = {
        "target": TARGET_COLD_START_S,
        "measured": cold,
        "met": cold < TARGET_COLD_START_S,
    }
    return checked


def p99_target(runs: Sequence[Latency]) -> dict[str, object]:
    """The p99 target beside what latency runs measured: met only if met in every run."""
    worst = max(runs, key=lambda lat: lat.p99_ms)
    out: dict[str, object] = {
        "target": TARGET_P99_MS,
        "measured": worst.p99_ms,
        "met": all(lat.p99_ms < TARGET_P99_MS and not lat.lower_bounds for lat in runs),
    }
    if len(runs) > 1:
        each = ", ".join(f"{lat.p99_ms:,.1f}" for lat in runs)
        out["note"] = f"worst of {len(runs)} runs at {worst.offered_rate:,.0f} ev/s: {each} ms"
    else:
        out["note"] = f"{worst.processes} process(es) at {worst.offered_rate:,.0f} ev/s"
    return out


def _throughput_json(t: Throughput) -> dict[str, object]:
    out: dict[str, object] = asdict(t)
    out["peak_rss_mib"] = list(t.peak_rss_mib)
    out["cpu_s"] = list(t.cpu_s)
    out["cpu_us_per_event"] = t.cpu_us_per_event
    out["host_cores"] = t.host_cores
    out["other_cores"] = t.other_cores
    out["raw_events_per_s"] = t.raw_events_per_s
    out["steady_events_per_s"] = t.steady_events_per_s
    return out


def _latency_json(lat: Latency) -> dict[str, object]:
    out: dict[str, object] = asdict(lat)
    out["peak_rss_mib"] = list(lat.peak_rss_mib)
    out["pipeline_cores"] = lat.pipeline_cores
    out["cpu_us_per_event"] = lat.cpu_us_per_event
    out["host_cores"] = lat.host_cores
    out["other_cores"] = lat.other_cores
    return out


def _run_json(benchmark: str, started_at: str, config: BenchConfig) -> dict[str, object]:
    """What every report opens with: what ran, when, where, with which settings."""
    return {
        "benchmark": benchmark,
        "started_at": started_at,
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },
        "config": {
            "bootstrap": config.bootstrap,
            "events": config.events,
            "partitions": config.partitions,
            "cards": config.cards,
            "seed": config.seed,
            "offered_rate": config.rate,
            "latency_seconds": config.latency_seconds,
            "latency_warmup_s": config.latency_warmup_s,
            "latency_processes": config.latency_processes,
            "latency_runs": config.latency_runs,
            "broker_warmup_s": config.broker_warmup_s if config.latency_only else 0.0,
            "cluster_rate": config.cluster_rate,
            "cluster_processes": config.cluster_processes,
            "phase_timeout_s": config.phase_timeout_s,
            "latency_only": config.latency_only,
            "rss_cards": config.rss_cards,
            "rss_events": config.rss_transactions if config.rss_cards else 0,
            "rss_timeout_s": config.rss_timeout_s,
            "rss_only": config.rss_only,
        },
    }


def build_report(results: Results) -> dict[str, object]:
    """Every figure of the run, its ratios and the targets, as a JSON-ready dict."""
    return {
        **_run_json(
            "streamscore bench (replay on the real broker)", results.started_at, results.config
        ),
        "definitions": DEFINITIONS,
        "preload_s": results.preload_s,
        "throughput": {t.label: _throughput_json(t) for t in results.throughputs},
        "ratios": ratios(results),
        "ratios_raw": ratios(results, steady=False),
        "latency": _latency_json(results.latency),
        "latency_runs": [_latency_json(lat) for lat in results.latency_runs],
        "latency_cluster": (
            None if results.latency_cluster is None else _latency_json(results.latency_cluster)
        ),
        "kafka_client": kafka_client_json(results.kafka_client, results.pipeline_1p),
        "rss_phase": None if results.rss is None else rss_json(results.rss),
        "peak_rss_mib": peak_rss(results),
        "host_scaling": None if results.host is None else host_json(results.host),
        "targets": targets(results),
    }


def host_json(host: HostScaling) -> dict[str, object]:
    """The host scaling figures with their two ratios."""
    return {**asdict(host), "speedup": host.speedup, "cpu_inflation": host.cpu_inflation}


def build_latency_report(
    config: BenchConfig,
    started_at: str,
    runs: Sequence[Latency],
    broker: Latency | None = None,
) -> dict[str, object]:
    """The figures of a ``--latency-only`` run and its p99 target, as a JSON-ready dict.

    ``broker`` is the broker round trip that warmed the broker up, when one ran.
    """
    return {
        **_run_json("streamscore bench --latency-only (on the real broker)", started_at, config),
        "definitions": {
            k: DEFINITIONS[k] for k in DEFINITIONS if "latency" in k or k == "broker_round_trip"
        },
        "broker_round_trip": None if broker is None else _latency_json(broker),
        "latency": _latency_json(runs[0]),
        "latency_runs": [_latency_json(lat) for lat in runs],
        "targets": {"p99_ms_at_offered_rate": p99_target(runs)},
    }


def build_rss_report(config: BenchConfig, started_at: str, rss: CardsRss) -> dict[str, object]:
    """The figures of an ``--rss-only`` run and its RSS target, as a JSON-ready dict."""
    return {
        **_run_json("streamscore bench --rss-only (on the real broker)", started_at, config),
        "definitions": {k: DEFINITIONS[k] for k in ("rss_phase", "peak_rss_mib", "cpu_s")},
        "rss_phase": rss_json(rss),
        "targets": {"peak_rss_mib_per_process": rss_target(rss, 0.0, 0)},
    }


def write_json(report: dict[str, object], path: Path) -> Path:
    """Write the report as indented JSON (parent folders created); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
    return path


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def summary_lines(results: Results) -> list[str]:
    """The figures as a few human-readable lines."""
    header = f"{'throughput, events/s':<34}{'raw (from spawn)':>18}{'startup-excluded':>18}"
    lines = [header + "   startup  CPU us/event  host cores (others)"]
    for t in results.throughputs:
        done = "" if t.complete else f"  INCOMPLETE: {t.done:,} of {t.expected:,}"
        host = f"{t.host_cores:6.2f} ({t.other_cores:.2f})" if t.host_busy_s else f"{'-':>6}"
        lines.append(
            f"  {t.label:<32}{t.raw_events_per_s:>18,.0f}{t.steady_events_per_s:>18,.0f}"
            f"  {t.startup_s:6.2f} s  {t.cpu_us_per_event:12.1f}  {host}{done}"
        )
    lines.append(
        "ratios (startup-excluded): "
        + ", ".join(f"{k} {_fmt_ratio(v)}" for k, v in ratios(results).items())
    )
    if results.host is not None:
        lines.append(host_line(results.host))
    lines.append(kafka_client_line(results.kafka_client, results.pipeline_1p))
    lines.extend(latency_line(lat) for lat in results.latency_runs)
    if results.latency_cluster is not None:
        lines.append(latency_line(results.latency_cluster))
    if results.rss is not None:
        lines.append(rss_line(results.rss))
    rss = peak_rss(results)
    lines.append(
        f"peak RSS (VmHWM): 1 process {rss['pipeline_1p']:.0f} MiB; 2 processes "
        + " + ".join(f"{v:.0f}" for v in results.pipeline_2p.peak_rss_mib)
        + f" MiB; latency run {rss['latency_run']:.0f} MiB"
    )
    lines.extend(target_lines(targets(results)))
    return lines


def latency_line(lat: Latency) -> str:
    """The latency phase's figures on one line."""
    return (
        f"latency at {lat.offered_rate:,.0f} ev/s offered ({lat.sent_rate:,.0f} sent, "
        f"{lat.processes} process(es), {lat.seconds:.0f} s measured): p50 {lat.p50_ms:.1f} ms, "
        f"p95 {lat.p95_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms, max {lat.max_ms:.1f} ms; "
        f"{lat.received:,} of {lat.sent:,} scored"
        + (
            " (the rest not within the drain time: true percentiles are higher)"
            if lat.lower_bounds
            else ""
        )
        + (
            f"; pipeline CPU {lat.pipeline_cores:.2f} cores "
            f"({lat.cpu_us_per_event:.0f} us an event)"
            if lat.cpu_s > 0
            else ""
        )
        + (
            f"; host {lat.host_cores:.2f} cores busy ({lat.other_cores:.2f} besides the pipeline)"
            if lat.host_busy_s > 0
            else ""
        )
    )


def broker_line(trip: Latency) -> str:
    """The broker round trip's figures on one line."""
    return (
        f"broker round trip at {trip.offered_rate:,.0f} ev/s for {trip.seconds:.0f} s "
        f"(producer -> broker -> consumer, no pipeline; before the latency runs): "
        f"p50 {trip.p50_ms:.1f} ms, p99 {trip.p99_ms:.1f} ms, max {trip.max_ms:.1f} ms; "
        f"{trip.received:,} of {trip.sent:,} back"
    )


def target_lines(checked: dict[str, dict[str, object]]) -> list[str]:
    """One line per target: what it asks, what was measured, met or not."""
    lines = []
    for name, target in checked.items():
        measured = target["measured"]
        shown = "n/a" if not isinstance(measured, float) else f"{measured:,.2f}"
        verdict = "met" if target["met"] else "NOT met"
        note = f" ({target['note']})" if "note" in target else ""
        lines.append(f"target {name}: {target['target']:,} -> measured {shown}: {verdict}{note}")
    return lines


def _short_count(n: int) -> str:
    """A count for a chart label.

    >>> [_short_count(n) for n in (2_000, 2_500, 1_000_000, 1_500_000)]
    ['2k', '2,500', '1M', '1.5M']
    """
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1_000_000:g}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000:,}k"
    return f"{n:,}"


def write_chart(results: Results, path: Path) -> Path:
    """A PNG with three panels: events/s, latency percentiles, peak RSS; return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l, ax_r) = plt.subplots(
        1, 3, figsize=(15, 5), gridspec_kw={"width_ratios": [3, 1.4, 1.4]}
    )
    phases = results.throughputs
    x = list(range(len(phases)))
    width = 0.4
    steady = [t.steady_events_per_s for t in phases]
    ax_t.bar(
        [i - width / 2 for i in x],
        [t.raw_events_per_s for t in phases],
        width,
        label="raw (from spawn)",
    )
    ax_t.bar([i + width / 2 for i in x], steady, width, label="startup excluded")
    ax_t.axhline(TARGET_PIPELINE_2P_EPS, color="grey", linestyle="--", label="target, 2 proc.")
    ax_t.set_xticks(x, [t.label for t in phases], rotation=10)
    ax_t.set_yscale("log")
    ax_t.set_ylabel("events/s (log scale)")
    ax_t.set_title(f"throughput, {results.config.events:,} events")
    ax_t.legend(fontsize="small")
    for i, value in enumerate(steady):
        ax_t.annotate(f"{value:,.0f}", (i + width / 2, value), ha="center", va="bottom", fontsize=7)
    lat = max(results.latency_runs, key=lambda run: run.p99_ms)
    ax_l.bar(["p50", "p95", "p99"], [lat.p50_ms, lat.p95_ms, lat.p99_ms], color="tab:orange")
    ax_l.axhline(TARGET_P99_MS, color="grey", linestyle="--", label="p99 target")
    ax_l.set_ylabel("ms")
    title = f"ingest to score at {lat.offered_rate:,.0f} ev/s"
    if len(results.latency_runs) > 1:
        title += f"\n(worst p99 of {len(results.latency_runs)} runs)"
    if lat.lower_bounds:
        title += f"\n(only {lat.received:,} of {lat.sent:,} scored: lower bounds)"
    ax_l.set_title(title)
    ax_l.legend(fontsize="small")
    b2 = results.pipeline_2p.peak_rss_mib
    rss_labels = ["1 proc.", *(f"2 proc.\n#{i}" for i in range(len(b2))), "latency\nrun"]
    rss_values = [
        max(results.pipeline_1p.peak_rss_mib, default=0.0),
        *b2,
        peak_rss(results)["latency_run"],
    ]
    if results.rss is not None:
        rss_labels.append(f"{_short_count(results.rss.cards_done)}\ncards")
        rss_values.append(results.rss.peak_rss_mib)
    ax_r.bar(rss_labels, rss_values, color="tab:green")
    ax_r.axhline(TARGET_RSS_MIB, color="grey", linestyle="--", label="1 GiB")
    ax_r.set_ylabel("MiB")
    ax_r.set_title("peak RSS per pipeline process")
    ax_r.legend(fontsize="small")
    fig.suptitle(f"StreamScore replay benchmark, {results.started_at}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
