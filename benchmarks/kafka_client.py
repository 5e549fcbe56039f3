"""The Kafka client's own cost per record, consume and produce apart, as the pipeline uses it.

    python -m benchmarks.kafka_client --bootstrap B --topic IN --out-topic OUT \\
        --partitions P --events N

Run by ``streamscore bench`` in its own process, over the preloaded input topic:

1. **consume**: one confluent-kafka consumer per partition, assigned from the
   beginning with the pipeline source's settings (``operators/kafka_io.py``),
   polled in turn for batches of up to 1,000 as the source does, each record's
   key, value, offset and timestamp read, until every partition's end;
2. **produce**: N records (the first 10,000 input values, over and over, with
   their keys) to ``OUT`` with the sink's producer settings and error-only
   delivery reports, in batches of 1,000 and a ``poll(0)`` after each, as the
   sink writes, then one flush.

Each step's CPU is this process's (``time.process_time()``: librdkafka's threads
included, the broker's not). Prints one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

KEPT_VALUES = 10_000
BATCH = 1000


def consume(bootstrap: str, topic: str, partitions: int, events: int) -> dict[str, Any]:
    """Read every partition of ``topic`` to its end; CPU and wall seconds, records read."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumers = []
    for p in range(partitions):
        c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "streamscore-bench-client",
                "enable.auto.commit": "false",
                "enable.partition.eof": "true",
                "fetch.wait.max.ms": "10",
            }
        )
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING)])
        consumers.append(c)
    kept: list[tuple[bytes | None, bytes | None]] = []
    done = 0
    open_parts = set(range(partitions))
    give_up = time.monotonic() + 300
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while open_parts and done < events:
        if time.monotonic() > give_up:
            msg = f"consume: {done:,} of {events:,} records in 300 s"
            raise RuntimeError(msg)
        for p in list(open_parts):
            for msg in consumers[p].consume(BATCH, 0.05):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        open_parts.discard(p)
                    continue
                key, value = msg.key(), msg.value()
                msg.offset()
                msg.timestamp()
                if len(kept) < KEPT_VALUES:
                    kept.append((key, value))
                done += 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    for c in consumers:
        c.close()
    return {"consumed": done, "consume_cpu_s": cpu, "consume_wall_s": wall, "kept": kept}


def produce(
    bootstrap: str, out_topic: str, records: Sequence[tuple[bytes | None, bytes | None]], n: int
) -> dict[str, Any]:
    """Produce ``n`` records cycled from ``records`` as the sink does, then flush."""
    from confluent_kafka import KafkaError, Message, Producer

    from operators.kafka_io import PRODUCER_SETTINGS

    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            **PRODUCER_SETTINGS,
            "on_delivery": on_delivery,
            "delivery.report.only.error": True,
        }
    )
    size = len(records)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    sent = 0
    while sent < n:
        end = min(n, sent + BATCH)
        for i in range(sent, end):
            key, value = records[i % size]
            while True:
                try:
                    producer.produce(out_topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
        sent = end
        producer.poll(0)
    while producer.flush(5.0) > 0:
        pass
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if failures:
        raise RuntimeError(f"{len(failures)} deliveries failed, the first: {failures[0]}")
    return {"produced": sent, "produce_cpu_s": cpu, "produce_wall_s": wall}


def main(argv: Sequence[str] | None = None) -> int:
    """Measure both steps and print their JSON result line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out-topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args(argv)
    read = consume(args.bootstrap, args.topic, args.partitions, args.events)
    kept = read.pop("kept")
    if not kept:
        raise SystemExit(f"kafka_client: no record on {args.topic}")
    print(f"  [kafka-client] consumed {read['consumed']:,} records", file=sys.stderr, flush=True)
    wrote = produce(args.bootstrap, args.out_topic, kept, read["consumed"])
    print(f"  [kafka-client] produced {wrote['produced']:,} records", file=sys.stderr, flush=True)
    print(json.dumps({**read, **wrote}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
