"""The Kafka source partition's polling cadence: linger between partial polls, none in a backlog."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from operators.decode import DeadLetters, DecodeConfig, PartitionDecoder
from operators.kafka_io import IDLE_POLL, SourceConfig, _SourcePartition, next_tick

TOPIC = "transactions"
DEAD_TOPIC = "dead-letters"
NOW_MS = 1_795_428_001_000  # 2026-11-23T10:00:01.000Z


class _Msg:
    """What ``Consumer.consume`` returns for one record."""

    def __init__(self, offset: int) -> None:
        self._offset = offset
        self._value = json.dumps(
            {
                "event_id": f"e-{offset}",
                "card_id": "c-1",
                "merchant_id": "m-1",
                "amount": 1.5,
                "currency": "EUR",
                "event_time": "2026-11-23T10:00:00.123Z",
            }
        ).encode()

    def error(self) -> None:
        return None

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"c-1"

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, NOW_MS)


class _Consumer:
    """Before each poll the next of ``arrivals`` records arrive; a poll takes what it may."""

    def __init__(self, arrivals: list[int]) -> None:
        self._arrivals = arrivals
        self._waiting = 0
        self._offset = 0
        self.committed: list[int] = []

    def consume(self, num_messages: int, timeout: float) -> list[_Msg]:
        self._waiting += self._arrivals.pop(0) if self._arrivals else 0
        n = min(self._waiting, num_messages)
        msgs = [_Msg(self._offset + i) for i in range(n)]
        self._offset += n
        self._waiting -= n
        return msgs

    def get_watermark_offsets(self, _tp: Any, cached: bool = False) -> tuple[int, int]:
        return (0, self._offset + self._waiting)  # what has arrived, read or not

    def commit(self, *, offsets: list[Any], asynchronous: bool) -> None:
        self.committed.extend(tp.offset for tp in offsets)

    def close(self) -> None:
        pass


def _partition(
    arrivals: list[int], *, linger_ms: int, batch_size: int = 4, backlog_batch_size: int = 0
) -> _SourcePartition:
    decoder = PartitionDecoder(
        DecodeConfig(dead_letter_topic=DEAD_TOPIC, max_message_bytes=4096),
        source=f"{TOPIC}#0",
        kind="transaction",
        resume=None,
        dead_letters=DeadLetters(DEAD_TOPIC, now_ms=lambda: NOW_MS),
        wall_clock=lambda: NOW_MS,
    )
    config = SourceConfig(
        brokers=["127.0.0.1:1"],  # never contacted: the consumer is replaced below
        topics=[TOPIC],
        batch_size=batch_size,
        backlog_batch_size=backlog_batch_size,
        linger_ms=linger_ms,
    )
    part = _SourcePartition(config, TOPIC, 0, None, decoder, lambda _t, _p, _n: None)
    part._consumer.close()
    part._consumer = _Consumer(arrivals)
    return part


def test_next_tick_is_the_next_multiple_strictly_after_now() -> None:
    assert next_tick(100.0, 0.01).timestamp() == pytest.approx(100.01)
    assert next_tick(100.001, 0.01).timestamp() == pytest.approx(100.01)
    assert next_tick(100.0099, 0.01).timestamp() == pytest.approx(100.01)
    assert next_tick(100.01, 0.01).timestamp() == pytest.approx(100.02)
    assert next_tick(100.0, 0.01).tzinfo is UTC


def test_partitions_wake_at_the_same_instant() -> None:
    # Two partitions polled a few milliseconds apart within one tick wake together.
    assert next_tick(1_795_428_001.0012, 0.02) == next_tick(1_795_428_001.0187, 0.02)


def test_a_partial_poll_waits_for_the_next_tick() -> None:
    part = _partition([3], linger_ms=20)
    (batch,) = part.next_batch()
    assert batch.txns.event_id == ["e-0", "e-1", "e-2"]
    before = time.time()
    awake = part.next_awake()
    assert awake is not None
    assert before < awake.timestamp() <= before + 0.02 + 1e-3
    assert round(awake.timestamp() * 1000) % 20 == 0


def test_an_empty_poll_waits_for_the_next_tick() -> None:
    part = _partition([], linger_ms=20)
    assert part.next_batch() == []
    # The clock read before the call: a later one may already be past a 20 ms tick
    # on a loaded machine.
    before = datetime.now(UTC)
    awake = part.next_awake()
    assert awake is not None
    assert awake > before


def test_a_full_poll_polls_again_at_once() -> None:
    # A full batch means a backlog: no linger until the partition has caught up.
    part = _partition([9, 2], linger_ms=20)
    (first,) = part.next_batch()
    assert len(first.txns) == 4
    assert part.next_awake() is None
    (second,) = part.next_batch()
    assert len(second.txns) == 4
    assert part.next_awake() is None
    (third,) = part.next_batch()
    assert len(third.txns) == 3
    assert part.next_awake() is not None


def test_the_resume_offset_is_the_next_record_after_what_was_emitted() -> None:
    part = _partition([3, 0, 2], linger_ms=20)
    part.next_batch()
    part.next_batch()
    assert part.snapshot()[0] == 3
    part.next_batch()
    assert part.snapshot()[0] == 5
    assert part._consumer.committed == [3, 5]


def test_without_linger_data_polls_again_at_once_and_idle_waits_5_ms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    part = _partition([3], linger_ms=0)
    part.next_batch()
    assert part.next_awake() is None
    monkeypatch.setattr(part, "_idle", True)
    awake = part.next_awake()
    assert awake is not None
    assert awake - datetime.now(UTC) <= IDLE_POLL


def test_a_partition_far_behind_is_polled_in_backlog_batches() -> None:
    # 50 records arrive at once: the first poll takes a batch (the lag is known only
    # after a fetch), then backlog batches while at least 16 wait, then batches again.
    part = _partition([50], linger_ms=20, batch_size=4, backlog_batch_size=16)
    sizes = []
    while batch := part.next_batch():
        sizes.append(len(batch[0].txns))
    assert sizes == [4, 16, 16, 4, 4, 4, 2]
    assert part._next == 50


def test_without_a_backlog_size_every_poll_takes_a_batch() -> None:
    part = _partition([50], linger_ms=20, batch_size=4)
    sizes = []
    while batch := part.next_batch():
        sizes.append(len(batch[0].txns))
    assert sizes == [4] * 12 + [2]
