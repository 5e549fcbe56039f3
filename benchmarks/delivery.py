"""``streamscore bench-delivery``: at-least-once against exactly-once delivery, in one run.

Both modes run ``streamscore run`` with a recovery dir (exactly-once needs
one; at-least-once gets the same, so the difference is the transactions and
nothing else), each phase on fresh topics and state:

1. Throughput: ``--events`` simulated transactions are preloaded into one
   input topic; each mode runs ``--until-eof`` over it with ``--epoch-interval``
   1 s. Events/s from the first score to the last (the scores of the first
   fetch left out: with exactly-once that is a whole epoch), counted by a
   ``read_committed`` consumer of the scores topic (for at-least-once output it
   sees what any consumer sees); the end offsets cannot count, since
   transaction markers take offsets too.
2. Latency: for each mode, offered rate (``--rates``) and epoch length
   (``--epochs``), a pipeline in tail mode and the ingest-to-score latency of
   :mod:`benchmarks.latency`, with the score consumer at ``read_committed``:
   what a consumer that never deduplicates waits for.

Figures go to ``--out`` (JSON) and are printed; every phase's children,
topics and state are removed however the run ends.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from benchmarks.kafka_load import (
    BenchError,
    check_broker,
    create_topics,
    delete_topics,
    preload,
    preload_sim,
    transaction_payloads,
)
from benchmarks.latency import LatencyPlan, measure_latency, templates
from benchmarks.procs import Children, tail
from benchmarks.replay import pipeline_env
from models.simulator import SimConfig
from operators.exactly_once import commit_topic
from schemas.settings import TopicNames

MODES = ("at-least-once", "exactly-once")
DEFAULT_OUT = Path(".local/bench/delivery.json")
THROUGHPUT_EPOCH_S = 1.0
STOP_GRACE_S = 10.0
POLL_S = 0.05

Echo = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class DeliveryBenchConfig:
    """What one run measures."""

    bootstrap: str
    events: int = 100_000
    partitions: int = 2
    cards: int = 10_000
    seed: int = 7
    rates: tuple[float, ...] = (1_000.0, 10_000.0)
    epochs_s: tuple[float, ...] = (0.1, 0.5, 1.0)
    seconds: float = 5.0
    warmup_s: float = 2.0
    phase_timeout_s: float = 180.0
    out: Path = DEFAULT_OUT


@dataclass(frozen=True)
class ThroughputFigure:
    """One mode's run over the preloaded input."""

    mode: str
    events: int
    scored: int
    events_per_s: float  # scores after the first fetch, over the time from it to the last
    wall_s: float  # spawn to last score
    cpu_s: float


@dataclass(frozen=True)
class LatencyFigure:
    """One mode, offered rate and epoch length."""

    mode: str
    rate: float
    epoch_s: float
    sent: int
    received: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class DeliveryResults:
    """Everything one run measured."""

    config: DeliveryBenchConfig
    started_at: str
    throughput: list[ThroughputFigure] = field(default_factory=list)
    latency: list[LatencyFigure] = field(default_factory=list)


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0 for no samples.

    >>> percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5), percentile([1.0, 2.0], 0.99)
    (3.0, 2.0)
    """
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered))))
    return ordered[rank - 1]


class _CommittedCounter(threading.Thread):
    """Counts the records of a topic a ``read_committed`` consumer sees, and when."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        super().__init__(name="committed-counter", daemon=True)
        self.count = 0
        self.first_count = 0  # what the first fetch brought (exactly-once: a whole epoch)
        self.first: float | None = None
        self.last: float | None = None
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "streamscore-bench-delivery",
                "enable.auto.commit": "false",
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": "5",
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                got = [m for m in self._consumer.consume(10_000, 0.05) if m.error() is None]
                if got:
                    now = time.perf_counter()
                    if self.first is None:
                        self.first, self.first_count = now, len(got)
                    self.last = now
                    self.count += len(got)
        finally:
            self._consumer.close()

    def stop(self) -> None:
        """End the loop and close the consumer."""
        self._halt.set()
        self.join(timeout=10)


@dataclass
class _Run:
    config: DeliveryBenchConfig
    children: Children
    say: Echo
    run_id: str = field(default_factory=lambda: f"delivery-{uuid.uuid4().hex[:8]}")
    topics: list[str] = field(default_factory=list)

    @property
    def work(self) -> Path:
        return self.config.out.parent / self.run_id

    def new_topics(self, names: list[str]) -> None:
        self.topics.extend(names)
        create_topics(self.config.bootstrap, names, self.config.partitions)

    def pipeline(
        self, label: str, mode: str, *, transactions: str
    ) -> tuple[TopicNames, dict[str, str]]:
        """Fresh output topics and the child env of one pipeline run in ``mode``."""
        outputs = {
            k: f"{self.run_id}-{label}-{k.replace('_', '-')}"
            for k in TopicNames.model_fields
            if k != "transactions"
        }
        names = TopicNames(transactions=transactions, **outputs)
        self.new_topics(list(outputs.values()))
        flow = f"{self.run_id}-{label}"
        self.topics.append(commit_topic(flow))
        env = pipeline_env(self.config.bootstrap, names, self.work / f"{label}-state")
        env.update({"STREAMSCORE_DELIVERY": mode, "STREAMSCORE_FLOW_NAME": flow})
        return names, env

    def argv(self, label: str, epoch_s: float, *extra: str) -> list[str]:
        recovery = self.work / f"{label}-recovery"
        return [
            *(sys.executable, "-m", "flows.cli", "run"),
            *("--recovery-dir", str(recovery), "--epoch-interval", str(epoch_s), *extra),
        ]


def run_delivery_bench(config: DeliveryBenchConfig, *, echo: Echo = print) -> DeliveryResults:
    """Run every phase; write the JSON, print the figures; return them."""
    check_broker(config.bootstrap)
    started = time.perf_counter()

    def say(text: str) -> None:
        echo(f"[{time.perf_counter() - started:7.1f} s] {text}")
        sys.stdout.flush()

    results = DeliveryResults(
        config=config, started_at=datetime.now(UTC).isoformat(timespec="seconds")
    )
    with Children() as children:
        run = _Run(config=config, children=children, say=say)
        try:
            _throughput_phases(run, results)
            _latency_phases(run, results)
        finally:
            children.close()
            if run.topics:
                delete_topics(config.bootstrap, run.topics)
            shutil.rmtree(run.work, ignore_errors=True)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.write_text(json.dumps(asdict(results), indent=2, default=str) + "\n")
    for line in summary_lines(results):
        say(line)
    say(f"figures: {config.out}")
    return results


def _throughput_phases(run: _Run, results: DeliveryResults) -> None:
    config = run.config
    transactions = f"{run.run_id}-transactions"
    run.new_topics([transactions])
    sim = preload_sim(
        seed=config.seed, cards=config.cards, events=config.events, now_ms=time.time_ns() // 10**6
    )
    expected = preload(config.bootstrap, transactions, transaction_payloads(sim, config.events))
    run.say(f"preload: {expected:,} transactions")
    for mode in MODES:
        label = f"throughput-{mode}"
        names, env = run.pipeline(label, mode, transactions=transactions)
        counter = _CommittedCounter(config.bootstrap, names.scores, config.partitions)
        counter.start()
        log = run.work / f"{label}.log"
        spawned = time.perf_counter()
        proc = run.children.spawn(
            run.argv(label, THROUGHPUT_EPOCH_S, "--until-eof"), env=env, log=log
        )
        try:
            while counter.count < expected:
                if proc.poll() not in (None, 0):
                    raise BenchError(f"{label}: exited with {proc.returncode}:\n" + tail(log))
                if time.perf_counter() - spawned > config.phase_timeout_s:
                    run.say(f"{label}: time limit reached at {counter.count:,} scores")
                    break
                time.sleep(POLL_S)
            cpu_s = run.children.cpu_s(proc)
            run.children.stop(proc, grace_s=STOP_GRACE_S)
        finally:
            counter.stop()
        first, last = counter.first or spawned, counter.last or spawned
        figure = ThroughputFigure(
            mode=mode,
            events=expected,
            scored=counter.count,
            events_per_s=(counter.count - counter.first_count) / (last - first)
            if last > first
            else 0.0,
            wall_s=last - spawned,
            cpu_s=cpu_s,
        )
        results.throughput.append(figure)
        run.say(
            f"{label}: {figure.scored:,} scores, {figure.events_per_s:,.0f} ev/s from the first "
            f"score, {figure.wall_s:.1f} s from spawn, CPU {figure.cpu_s:.1f} s"
        )


def _latency_phases(run: _Run, results: DeliveryResults) -> None:
    config = run.config
    plan_of = {
        r: LatencyPlan(rate=r, warmup_s=config.warmup_s, seconds=config.seconds)
        for r in config.rates
    }
    for mode in MODES:
        for epoch_s in config.epochs_s:
            for rate in config.rates:
                label = f"latency-{mode}-{epoch_s:g}s-{rate:g}"
                plan = plan_of[rate]
                transactions = f"{run.run_id}-{label}-transactions"
                run.new_topics([transactions])
                names, env = run.pipeline(label, mode, transactions=transactions)
                log = run.work / f"{label}.log"
                proc = run.children.spawn(run.argv(label, epoch_s), env=env, log=log)
                sim = SimConfig(seed=config.seed + 1, cards=config.cards, events_per_second=rate)
                items = templates(sim, plan.total)

                samples = measure_latency(
                    bootstrap=config.bootstrap,
                    transactions=transactions,
                    scores=names.scores,
                    partitions=config.partitions,
                    plan=plan,
                    items=items,
                    say=lambda _text: None,
                    check_alive=_alive_check(proc, log, label),
                    isolation="read_committed",
                )
                run.children.stop(proc, grace_s=STOP_GRACE_S)
                ms = [s * 1000 for s in samples.samples_s]
                figure = LatencyFigure(
                    mode=mode,
                    rate=rate,
                    epoch_s=epoch_s,
                    sent=samples.sent,
                    received=len(ms),
                    p50_ms=percentile(ms, 0.5),
                    p99_ms=percentile(ms, 0.99),
                    max_ms=max(ms, default=0.0),
                )
                results.latency.append(figure)
                run.say(_latency_line(figure))


def _alive_check(proc: subprocess.Popen[bytes], log: Path, label: str) -> Callable[[], None]:
    def check() -> None:
        if proc.poll() is not None:
            raise BenchError(f"{label}: the pipeline exited:\n" + tail(log))

    return check


def _latency_line(f: LatencyFigure) -> str:
    return (
        f"{f.mode:>13}, {f.epoch_s:g} s epochs, {f.rate:>6,.0f} ev/s offered: "
        f"p50 {f.p50_ms:7.1f} ms, p99 {f.p99_ms:7.1f} ms, max {f.max_ms:7.1f} ms "
        f"({f.received:,} of {f.sent:,} scored)"
    )


def summary_lines(results: DeliveryResults) -> list[str]:
    """The figures as printable lines."""
    lines = ["throughput (read_committed count, 1 s epochs, recovery on in both modes):"]
    lines += [
        f"  {t.mode:>13}: {t.events_per_s:,.0f} ev/s ({t.scored:,} of {t.events:,} scored, "
        f"CPU {t.cpu_s:.1f} s)"
        for t in results.throughput
    ]
    lines.append("ingest-to-score latency seen by a read_committed consumer:")
    lines += [f"  {_latency_line(f)}" for f in results.latency]
    return lines


def _floats(text: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in text.split(",") if v.strip())
    if not values or any(v <= 0 for v in values):
        msg = f"expected positive numbers separated by commas, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags (defaults: a run of a few minutes)."""
    d = DeliveryBenchConfig(bootstrap="")
    parser.add_argument("--events", type=int, default=d.events, help="preloaded transactions")
    parser.add_argument("--partitions", type=int, default=d.partitions)
    parser.add_argument("--cards", type=int, default=d.cards)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--rates", type=_floats, default=d.rates, help="offered events/s, comma-separated"
    )
    parser.add_argument(
        "--epochs", type=_floats, default=d.epochs_s, help="epoch lengths in s, comma-separated"
    )
    parser.add_argument("--seconds", type=float, default=d.seconds, help="measured s per point")
    parser.add_argument("--warmup", type=float, default=d.warmup_s, help="warm-up s per point")
    parser.add_argument("--phase-timeout", type=float, default=d.phase_timeout_s)
    parser.add_argument("--out", type=Path, default=d.out, help="JSON result")


def config_from_args(args: argparse.Namespace, *, bootstrap: str) -> DeliveryBenchConfig:
    """The config the parsed flags describe."""
    return DeliveryBenchConfig(
        bootstrap=bootstrap,
        events=args.events,
        partitions=args.partitions,
        cards=args.cards,
        seed=args.seed,
        rates=args.rates,
        epochs_s=args.epochs,
        seconds=args.seconds,
        warmup_s=args.warmup,
        phase_timeout_s=args.phase_timeout,
        out=args.out,
    )
