"""What a delivery report per message costs the sink's producer, against error-only reports.

Produces the same messages (600 B values, keys over 50,000 cards, batches of
1,000 handed over as the sink does, then one flush) to a fresh topic on the
real broker, with the sink's producer settings, in two modes, alternating for
``--rounds`` rounds:

- ``per-message``: a callback passed to every ``produce()``;
- ``error-only``: one config-level ``on_delivery`` with
  ``delivery.report.only.error``, as the sink does.

Prints each round's process CPU per message (librdkafka's threads included)
and the ratio of the two medians, measured in the same run.

    .venv/bin/python -m benchmarks.delivery_reports --messages 300000
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from benchmarks.kafka_load import create_topics, delete_topics
from operators.kafka_io import PRODUCER_SETTINGS

MODES = ("per-message", "error-only")


def cpu_us_per_message(bootstrap: str, topic: str, mode: str, messages: int) -> float:
    """Produce ``messages`` in ``mode`` and flush; process CPU microseconds per message."""
    failures: list[KafkaError] = []

    def report(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    config: dict[str, Any] = {"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS}
    if mode == "error-only":
        config.update({"on_delivery": report, "delivery.report.only.error": True})
    producer = Producer(config)
    value = b"x" * 600
    keys = [f"c-{i % 50_000}".encode() for i in range(messages)]
    started = time.process_time()
    for lo in range(0, messages, 1000):
        for key in keys[lo : lo + 1000]:
            if mode == "per-message":
                producer.produce(topic, value, key, on_delivery=report)
            else:
                producer.produce(topic, value, key)
        producer.poll(0)
    while producer.flush(5.0) > 0:
        pass
    spent = time.process_time() - started
    if failures:
        raise RuntimeError(f"{len(failures)} deliveries failed, the first: {failures[0]}")
    return spent / messages * 1e6


def main() -> None:
    """Parse the flags, run the rounds, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    topic = f"bench-reports-{uuid.uuid4().hex[:8]}"
    create_topics(args.bootstrap_servers, [topic], 2)
    figures: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for round_no in range(1, args.rounds + 1):
            for mode in MODES:
                us = cpu_us_per_message(args.bootstrap_servers, topic, mode, args.messages)
                figures[mode].append(us)
                print(f"round {round_no}: {mode:11s} {us:.2f} us CPU a message", flush=True)
    finally:
        delete_topics(args.bootstrap_servers, [topic])
    per, only = (statistics.median(figures[m]) for m in MODES)
    print(f"median: per-message {per:.2f} us, error-only {only:.2f} us ({per / only:.2f}x)")


if __name__ == "__main__":
    main()
