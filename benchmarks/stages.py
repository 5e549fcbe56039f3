"""Where the pipeline's CPU goes: each stage's CPU per event, in one process, without Kafka.

Builds the real flow (``flows.dataflow.build_flow``: decode, card and merchant
windows in RocksDB, ONNX scoring, drift, quality) with the Kafka source and
sink swapped for :mod:`flows.testing`'s in-memory ones over simulated records
(every partition polled for its next batch in turn, as Kafka's are), runs it to the
end of its input in this process, and times every function the flow hands
to bytewax (each stateful logic's methods, each mapper and predicate, the
decoder, the sink) with the process CPU clock, by step. What is left of the
run's CPU is bytewax itself: its operators, routing and the shims around
those functions. Prints a table and, with ``--json``, the figures as JSON.

Kafka's own cost (consume, produce, the broker) is what ``streamscore
bench`` adds on top; the passthrough phase there measures it.

    .venv/bin/python -m benchmarks.stages --events 200000 --cards 20000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bytewax.operators as op
import orjson
from bytewax.testing import run_main

from benchmarks.kafka_load import preload_sim
from flows.dataflow import build_flow
from flows.testing import LogSource, MemorySink, MemorySinkPartition, ReplayRecord
from models.simulator import simulate
from operators.decode import PartitionDecoder
from operators.kafka_io import DecoderFactory
from operators.messages import OutMessage
from operators.watermarks import WatermarkState

if TYPE_CHECKING:
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink

    from schemas.settings import Settings

NOW_MS = 1_795_392_000_000
TXN_TOPIC, CB_TOPIC = "transactions", "chargebacks"
# Which stage each step of the flow belongs to, by the start of its step id.
STAGES = (
    ("decode", ("decode",)),
    ("card windows", ("windows-cards",)),
    ("merchant windows", ("windows-merchants",)),
    ("scoring", ("score",)),
    ("drift", ("drift",)),
    ("quality", ("quality",)),
    ("sink", ("sink",)),
)
OTHER = "routing, filters, maps"
ENGINE = "bytewax engine"


class StageClock:
    """Process CPU seconds spent in the flow's own functions, per step id."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, step: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, timed under ``step``."""
        clock = time.process_time
        seconds = self.seconds

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[step] += clock() - start

        return timed

    def by_stage(self, total: float) -> dict[str, float]:
        """Seconds per stage; what no step accounts for is the engine's."""
        out: dict[str, float] = {name: 0.0 for name, _ in STAGES}
        out[OTHER] = 0.0
        for step, sec in self.seconds.items():
            name = next((n for n, prefixes in STAGES if step.startswith(prefixes)), OTHER)
            out[name] += sec
        out[ENGINE] = max(0.0, total - sum(out.values()))
        return out


class _TimedLogic(op.StatefulBatchLogic[Any, Any, Any]):
    """A stateful logic whose every call is timed."""

    def __init__(
        self, inner: op.StatefulBatchLogic[Any, Any, Any], clock: StageClock, step: str
    ) -> None:
        self._on_batch = clock.wrap(step, inner.on_batch)
        self._on_notify = clock.wrap(step, inner.on_notify)
        self._on_eof = clock.wrap(step, inner.on_eof)
        self._notify_at = clock.wrap(step, inner.notify_at)
        self._snapshot = clock.wrap(step, inner.snapshot)

    def on_batch(self, values: list[Any]) -> tuple[Any, bool]:
        return self._on_batch(values)  # type: ignore[no-any-return]

    def on_notify(self) -> tuple[Any, bool]:
        return self._on_notify()  # type: ignore[no-any-return]

    def on_eof(self) -> tuple[Any, bool]:
        return self._on_eof()  # type: ignore[no-any-return]

    def notify_at(self) -> Any:
        return self._notify_at()

    def snapshot(self) -> Any:
        return self._snapshot()


@contextmanager
def timed_operators(clock: StageClock) -> Iterator[None]:
    """Within the block, the bytewax operators the flow uses time the functions given to them."""
    saved: dict[str, Any] = {}

    def patch(name: str) -> None:
        original = getattr(op, name)
        saved[name] = original

        # Every operator patched here is called as (step_id, up, function, ...).
        def timed_op(step_id: str, up: Any, fn: Any, *rest: Any) -> Any:
            if name == "stateful_batch":
                timed = lambda resume: _TimedLogic(fn(resume), clock, step_id)  # noqa: E731
            else:
                timed = clock.wrap(step_id, fn)
            return original(step_id, up, timed, *rest)

        setattr(op, name, timed_op)

    for name in (
        *("map", "filter", "filter_map", "filter_map_value", "flat_map", "flat_map_batch"),
        *("inspect", "key_on", "branch", "stateful_batch"),
    ):
        patch(name)
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(op, name, original)


def timed_decoders(decoder: DecoderFactory, clock: StageClock) -> DecoderFactory:
    """``decoder``, whose decoders time their batches under ``decode``."""

    def build(source: str, topic: str, resume: WatermarkState) -> PartitionDecoder:
        dec = decoder(source, topic, resume)
        dec.decode = clock.wrap("decode", dec.decode)  # type: ignore[method-assign]
        dec.idle = clock.wrap("decode", dec.idle)  # type: ignore[method-assign]
        return dec

    return build


class TimedSink(MemorySink):
    """A :class:`MemorySink` that counts (keeps nothing) and times its writes under ``sink``."""

    def __init__(self, clock: StageClock) -> None:
        super().__init__(keep=False)
        self._clock = clock

    def build(self, step_id: str, worker_index: int, worker_count: int) -> MemorySinkPartition:
        part = super().build(step_id, worker_index, worker_count)
        part.write_batch = self._clock.wrap("sink", part.write_batch)  # type: ignore[method-assign]
        return part


def simulated_log(events: int, cards: int, partitions: int) -> list[ReplayRecord]:
    """The simulator's records as Kafka would hold them (transactions keyed by card)."""
    sim = preload_sim(seed=7, cards=cards, events=events, now_ms=NOW_MS)
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    log = []
    for ev in simulate(sim, events):
        key = ev.key.encode()
        partition = zlib.crc32(key) % partitions if ev.kind == "transaction" else 0
        offset = offsets[ev.kind, partition]
        offsets[ev.kind, partition] = offset + 1
        value = orjson.dumps(ev.payload)
        log.append(ReplayRecord(ev.kind, partition, offset, key, value, ev.event_time_ms))
    return log


def memory_flow(
    base: Settings,
    log: list[ReplayRecord],
    state_dir: Path,
    *,
    batch: int,
    clock: StageClock,
    sink: DynamicSink[tuple[str, list[OutMessage]]],
) -> Dataflow:
    """The real flow over ``log`` (:class:`flows.testing.LogSource`, polled by partition).

    Into ``sink``, with state under ``state_dir``. ``base``'s other settings
    (shards, windows, model paths) apply; there is no recovery and no metrics
    endpoint.
    """
    from prometheus_client import CollectorRegistry

    from flows.main import load_models
    from operators.metrics import ServiceMetrics
    from state.rocksdb import ProcessStore

    settings = base.model_copy(
        update={
            "state_dir": state_dir,
            "metrics_port": 0,
            "recovery_dir": None,
            "topics": base.topics.model_copy(
                update={"transactions": TXN_TOPIC, "chargebacks": CB_TOPIC}
            ),
        }
    )
    metrics = ServiceMetrics.create(CollectorRegistry())
    return build_flow(
        settings,
        models=load_models(settings, metrics),
        metrics=metrics,
        store=ProcessStore(state_dir, 0, fresh=True),
        stop_at_eof=True,
        make_source=lambda decoder: LogSource(
            log,
            timed_decoders(decoder, clock),
            topics={"transaction": TXN_TOPIC, "chargeback": CB_TOPIC},
            batch_size=batch,
            flush=False,
            polls="partitions",
        ),
        sink=sink,
    )


def profile(events: int, cards: int, partitions: int, batch: int) -> dict[str, Any]:
    """Run the flow over simulated records; CPU seconds and us an event per stage."""
    from flows.main import Tenure, tune_gc
    from flows.malloc import tune_malloc
    from schemas.settings import load_settings

    tune_malloc()  # the service's allocator settings, as start_service sets them
    log = simulated_log(events, cards, partitions)
    transactions = sum(r.kind == "transaction" for r in log)
    clock = StageClock()
    with tempfile.TemporaryDirectory(prefix="streamscore-stages-") as tmp:
        sink = TimedSink(clock)
        with timed_operators(clock):
            # The environment's settings apply, as they would to `streamscore run`.
            flow = memory_flow(load_settings(), log, Path(tmp), batch=batch, clock=clock, sink=sink)
        tune_gc()  # the service's collector settings, as start_service sets them
        tenure = Tenure().start()
        start = time.process_time()
        try:
            run_main(flow)  # type: ignore[no-untyped-call]
        finally:
            tenure.stop()
        total = time.process_time() - start
    stages = clock.by_stage(total)
    return {
        "events": len(log),
        "transactions": transactions,
        "cards": cards,
        "partitions": partitions,
        "batch": batch,
        "cpu_s": total,
        "us_per_event": 1e6 * total / max(1, transactions),
        "stages_cpu_s": stages,
        "stages_us_per_event": {k: 1e6 * v / max(1, transactions) for k, v in stages.items()},
        "outputs": dict(sink.counts),
    }


def render(result: dict[str, Any]) -> str:
    """The figures as a table."""
    total = result["cpu_s"]
    lines = [
        f"{result['transactions']:,} transactions, {result['cards']:,} cards, "
        f"{result['partitions']} partitions, batches of {result['batch']}: "
        f"{total:.2f} s CPU, {result['us_per_event']:.1f} us an event",
        f"{'stage':<24}{'CPU s':>8}{'us/event':>10}{'share':>8}",
    ]
    for name, sec in result["stages_cpu_s"].items():
        us = result["stages_us_per_event"][name]
        lines.append(f"{name:<24}{sec:>8.2f}{us:>10.1f}{100 * sec / total:>7.1f}%")
    lines.append(f"outputs: {result['outputs']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--cards", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=2, help="transaction partitions")
    parser.add_argument("--batch", type=int, default=1000, help="records per source batch")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = profile(args.events, args.cards, args.partitions, args.batch)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
