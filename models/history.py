"""Recorded history for training: transactions and chargebacks from Kafka, JSONL or the simulator.

Whatever the source, the result is one log of :class:`flows.testing.ReplayRecord`
in the order the live flow would have consumed it (by record timestamp,
each partition in offset order), which training runs through the serving
flow, plus every chargeback that may label a transaction. Chargebacks
arrive days after their transactions, so labels are read past the end of the
feature range: a transaction is labelled from chargebacks up to
``label_horizon_ms`` after it, and :attr:`Recorded.labels_through_ms` says how
far the labels were looked for (rows younger than that minus the horizon have
no final label yet and training leaves them out).

Kafka: the time range is on record timestamps (what ``offsets_for_times``
seeks by), ``[since, until)`` for both topics, and ``[since, until + horizon)``
for the chargebacks that only label. Each partition is read to its end offset
as of the start of the read, so a live topic does not keep the read going.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flows.testing import ReplayRecord
from models.simulator import SimEvent, to_replay_records
from operators.watermarks import TimeConfig
from schemas.errors import TrainingError
from schemas.settings import TopicNames
from schemas.timefmt import parse_event_time

Kind = Literal["transaction", "chargeback"]
# How far past the range a partition is read by default: the flow's default
# out-of-orderness and allowed lateness, the disorder its event times may have.
ORDER_SLACK_MS = TimeConfig().out_of_orderness_ms + TimeConfig().allowed_lateness_ms


@dataclass(frozen=True)
class Recorded:
    """A log to replay, the chargebacks that label it, and how far labels were looked for."""

    records: list[ReplayRecord]
    label_chargebacks: list[bytes]  # chargeback JSON values, inside the range or after it
    labels_through_ms: int
    source: str


def from_simulation(events: Iterable[SimEvent], source: str) -> Recorded:
    """A simulated log, labelled by its own chargebacks, through its last event."""
    records = to_replay_records(events)
    return Recorded(
        records,
        [r.value for r in records if r.kind == "chargeback"],
        max((r.timestamp_ms for r in records), default=0),
        source,
    )


def from_jsonl(transactions: Path, chargebacks: Path | None) -> Recorded:
    """Transactions and chargebacks as one JSON value a line, merged by event time.

    Each file's own order is kept (a line's place is its offset); a line whose
    event time cannot be read keeps the previous line's time and goes on to
    the decoder, which dead-letters it as the service would.
    """
    txns = list(_jsonl_records(transactions, "transaction"))
    cbs = list(_jsonl_records(chargebacks, "chargeback")) if chargebacks else []
    records = list(heapq.merge(txns, cbs, key=lambda r: r.timestamp_ms))
    if not txns:
        raise TrainingError(f"no transactions in {transactions}")
    source = f"jsonl:{transactions}" + (f",{chargebacks}" if chargebacks else "")
    return Recorded(
        records,
        [r.value for r in cbs],
        max(r.timestamp_ms for r in records),
        source,
    )


def _jsonl_records(path: Path, kind: Kind) -> Iterator[ReplayRecord]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise TrainingError(f"cannot read {path}: {exc.strerror}") from None
    last = 0
    offset = 0
    for line in lines:
        if not line.strip():
            continue
        key = None
        try:
            body = json.loads(line)
            last = parse_event_time(body["event_time"])
            key_field = "card_id" if kind == "transaction" else "merchant_id"
            key = str(body[key_field]).encode() if key_field in body else None
        except (ValueError, KeyError, TypeError):
            pass
        yield ReplayRecord(kind, 0, offset, key, line, last)
        offset += 1


def from_topics(
    bootstrap: str,
    topics: TopicNames,
    *,
    since_ms: int,
    until_ms: int,
    label_horizon_ms: int,
    consumer_config: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    slack_ms: int = ORDER_SLACK_MS,
) -> Recorded:
    """Read both input topics over ``[since, until)`` (chargebacks on to ``until + horizon``).

    Each partition is read on until a record ``slack_ms`` past its range (or its
    end): timestamps are event times, out of order by up to the flow's bounds.
    """
    if until_ms <= since_ms:
        raise TrainingError("--until must be after --since")
    txns, _ = _read_topic(
        bootstrap,
        topics.transactions,
        "transaction",
        since_ms,
        until_ms,
        consumer_config,
        timeout_s,
        slack_ms,
    )
    cbs, passed = _read_topic(
        bootstrap,
        topics.chargebacks,
        "chargeback",
        since_ms,
        until_ms + label_horizon_ms,
        consumer_config,
        timeout_s,
        slack_ms,
    )
    if not txns:
        raise TrainingError(f"no transactions in {topics.transactions} between --since and --until")
    in_range = [r for r in cbs if r.timestamp_ms < until_ms]
    records = list(heapq.merge(txns, in_range, key=lambda r: r.timestamp_ms))
    # Labels are complete as far as the chargeback topic has been written: through
    # until + horizon when a record at or past that was seen, else its newest record.
    newest_cb = max((r.timestamp_ms for r in cbs), default=until_ms)
    through = until_ms + label_horizon_ms if passed else max(newest_cb, until_ms)
    return Recorded(
        records,
        [r.value for r in cbs],
        through,
        f"kafka:{topics.transactions},{topics.chargebacks}@{bootstrap}",
    )


def _read_topic(
    bootstrap: str,
    topic: str,
    kind: Kind,
    since_ms: int,
    until_ms: int,
    consumer_config: dict[str, str] | None,
    timeout_s: float,
    slack_ms: int,
) -> tuple[list[ReplayRecord], bool]:
    """Records of ``topic`` with timestamp in ``[since, until)``, merged by timestamp.

    Also whether any partition holds a record at or past ``until``. A partition
    is read until a record ``slack_ms`` past ``until`` (or its end), so records
    a little out of timestamp order at the boundary are kept.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "streamscore-train",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **(consumer_config or {}),
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise TrainingError(f"topic {topic} does not exist on {bootstrap}")
        parts = sorted(meta.partitions)
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in parts], timeout=timeout_s
        )
        assign, ends = [], {}
        for tp in starts:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=timeout_s
            )
            start = tp.offset if tp.offset >= 0 else high
            if start < high:
                assign.append(TopicPartition(topic, tp.partition, start))
                ends[tp.partition] = high
        per_part: dict[int, list[ReplayRecord]] = {p: [] for p in ends}
        if assign:
            consumer.assign(assign)
        open_parts = set(ends)
        passed = False
        deadline = time.monotonic() + timeout_s
        while open_parts:
            if time.monotonic() > deadline:
                raise TrainingError(f"timed out reading {topic} from {bootstrap}")
            for msg in consumer.consume(num_messages=5_000, timeout=1.0):
                if msg.error() is not None:
                    raise TrainingError(f"reading {topic}: {msg.error()}")
                part, offset = msg.partition(), msg.offset()
                if part not in open_parts:
                    continue
                deadline = time.monotonic() + timeout_s
                ts = msg.timestamp()[1]
                if ts >= until_ms:
                    passed = True
                    if ts >= until_ms + slack_ms or offset >= ends[part] - 1:
                        open_parts.discard(part)
                    continue
                value = msg.value() or b""
                per_part[part].append(ReplayRecord(kind, part, offset, msg.key(), value, ts))
                if offset >= ends[part] - 1:
                    open_parts.discard(part)
    except KafkaException as exc:
        raise TrainingError(f"cannot read {topic} from {bootstrap}: {exc}") from None
    finally:
        consumer.close()
    return list(heapq.merge(*per_part.values(), key=lambda r: r.timestamp_ms)), passed
