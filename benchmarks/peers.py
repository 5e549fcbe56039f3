"""The peers the pipeline is compared with, each run as its own process (no shared GIL).

    python -m benchmarks.peers passthrough --bootstrap B --topic IN --out-topic OUT --events N
    python -m benchmarks.peers quix --bootstrap B --topic IN --out-topic OUT --events N \\
        --group G --state-dir DIR

Each reads ``IN`` from the beginning until it has handled N records (or
``--max-seconds`` passed: then it reports what it did), prints
progress to stderr and, last, one JSON line to stdout: ``first`` and ``last``
(``time.time()`` of the first record in hand and of the N-th one done),
``events`` and ``steady_events`` (those done after ``first``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

PROGRESS_EVERY_S = 2.0
STALL_S = 30.0


def _progress(label: str, done: int, total: int, started: float) -> None:
    rate = done / max(1e-9, time.time() - started)
    print(f"  [{label}] {done:,}/{total:,} events, {rate:,.0f} ev/s", file=sys.stderr, flush=True)


def passthrough(
    bootstrap: str, topic: str, out_topic: str, events: int, max_seconds: float
) -> dict[str, Any]:
    """Consume every partition of ``topic`` and produce each record unchanged to ``out_topic``."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "streamscore-bench-passthrough",
            "enable.auto.commit": "false",
            "fetch.wait.max.ms": "10",
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(parts)])
    # The pipeline sink's producer settings (operators/kafka_io.py).
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": "true",
            "acks": "all",
            "linger.ms": "2",
            "queue.buffering.max.messages": "500000",
        }
    )
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    done = 0
    first = 0.0
    next_report = time.time() + PROGRESS_EVERY_S
    give_up = time.time() + max_seconds
    while done < events and time.time() < give_up:
        msgs = consumer.consume(1000, 0.1)
        if msgs and not first:
            first = time.time()
        for msg in msgs:
            if msg.error() is not None:
                continue
            while True:
                try:
                    producer.produce(out_topic, msg.value(), msg.key(), on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            done += 1
        producer.poll(0)
        if time.time() >= next_report:
            next_report += PROGRESS_EVERY_S
            _progress("passthrough", done, events, first or time.time())
    while producer.flush(5.0) > 0:
        pass
    last = time.time()
    consumer.close()
    if failures:
        raise RuntimeError(f"passthrough delivery failed: {failures[0]}")
    return {"first": first, "last": last, "events": done, "steady_events": done}


def quix(
    bootstrap: str,
    topic: str,
    out_topic: str,
    events: int,
    max_seconds: float,
    *,
    group: str,
    state_dir: Path,
) -> dict[str, Any]:
    """Per-card tumbling 5-minute count + sum(amount) in Quix Streams; stop after N inputs."""
    from quixstreams import Application
    from quixstreams.dataframe.windows import Count, Sum

    counter = _Counter("quix", events, give_up=time.time() + max_seconds)
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        use_changelog_topics=False,
        loglevel="WARNING",
        on_message_processed=counter.processed,
    )
    counter.stop = app.stop
    source = app.topic(topic, value_deserializer="json")
    sink = app.topic(out_topic, value_serializer="json")
    sdf = app.dataframe(source)
    sdf = (
        sdf.tumbling_window(
            duration_ms=timedelta(minutes=5),
            grace_ms=timedelta(seconds=5),
            on_late=lambda *_args, **_kw: False,
        )
        .agg(count=Count(), amount_sum=Sum("amount"))
        .final(closing_strategy="partition")
    )
    sdf.to_topic(sink)
    app.run(timeout=STALL_S)  # stops early if no record arrives for that long
    # The first record's own processing is not in the steady span.
    return {
        "first": counter.first,
        "last": counter.last,
        "events": counter.done,
        "steady_events": max(0, counter.done - 1),
    }


class _Counter:
    """Counts records Quix has fully processed; stops the app at the N-th."""

    def __init__(self, label: str, events: int, *, give_up: float) -> None:
        self.label = label
        self.events = events
        self.done = 0
        self.first = 0.0
        self.last = 0.0
        self.stop: Callable[[], None] = lambda: None
        self._next_report = time.time() + PROGRESS_EVERY_S
        self._give_up = give_up

    def processed(self, _topic: str, _partition: int, _offset: int) -> None:
        self.done += 1
        now = time.time()
        if self.done == 1:
            self.first = now
        if self.done >= self.events or now >= self._give_up:
            if not self.last:
                self.last = now
                self.stop()
        elif now >= self._next_report:
            self._next_report += PROGRESS_EVERY_S
            _progress(self.label, self.done, self.events, self.first)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one peer and print its JSON result line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("peer", choices=("passthrough", "quix"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out-topic", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--group", default="streamscore-bench-quix")
    parser.add_argument("--state-dir", type=Path, default=Path(".local/bench/quix-state"))
    args = parser.parse_args(argv)
    if args.peer == "passthrough":
        result = passthrough(
            args.bootstrap, args.topic, args.out_topic, args.events, args.max_seconds
        )
    else:
        result = quix(
            args.bootstrap,
            args.topic,
            args.out_topic,
            args.events,
            args.max_seconds,
            group=args.group,
            state_dir=args.state_dir,
        )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
