"""Ingest-to-score latency at a fixed offered rate, against a running ``streamscore run``.

What is measured, per transaction: ``time.perf_counter()`` when this
process's own consumer received the transaction's score from the scores topic,
minus ``time.perf_counter()`` just before ``produce()`` of the transaction.
One clock in one process, so no clock skew; the input's Kafka timestamp (and
its ``event_time``) is set to the same instant in wall-clock milliseconds. The
broker does not stamp LogAppendTime, so the score's own Kafka timestamp is not
used. The figure includes the producer's ``linger.ms`` (1), both Kafka hops and
the consumer's fetch wait (``fetch.wait.max.ms`` 5).

Transactions are pre-generated from the simulator before the clock starts (so
the load generator stays cheap); each gets ``event_id`` ``L<seq>`` so a score
finds its send time by index. Phases: probe once every 0.2 s until the first
score is back (the pipeline is up), then ``warmup_s`` at the offered rate (not
counted), then ``seconds`` at the offered rate (counted), then wait up to
``drain_s`` for the remaining scores.

:func:`broker_round_trip` offers the same transactions to a topic and reads
them back with the same consumer, no pipeline between: the broker's own part
of the figure, and a warm-up of a broker that has served nothing yet (a JVM
compiles its hot paths in the first tens of seconds under load).
"""

from __future__ import annotations

import json
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from benchmarks.kafka_load import BenchError
from models.simulator import SimConfig, simulate
from schemas.timefmt import format_ms

PROBE_EVERY_S = 0.2
PROGRESS_EVERY_S = 2.0
_TIME_MARK = "\x00event-time\x00"
_TIME_MARK_JSON = json.dumps(_TIME_MARK).encode()


@dataclass(frozen=True, kw_only=True)
class LatencyPlan:
    """Offered rate and how long each phase lasts."""

    rate: float
    warmup_s: float
    seconds: float
    ready_timeout_s: float = 90.0
    drain_s: float = 15.0

    @property
    def probes(self) -> int:
        """Most probe transactions the readiness phase may send."""
        return int(self.ready_timeout_s / PROBE_EVERY_S) + 1

    @property
    def total(self) -> int:
        """Transactions to pre-generate: probes, warm-up and measured."""
        return self.probes + round(self.rate * self.warmup_s) + round(self.rate * self.seconds)


@dataclass(frozen=True)
class Template:
    """A transaction ready to send: key, and its JSON split where the event time goes."""

    key: bytes
    head: bytes
    tail: bytes

    def value(self, event_time_ms: int) -> bytes:
        """The JSON value with ``event_time`` set."""
        return self.head + b'"' + format_ms(event_time_ms).encode() + b'"' + self.tail


def templates(sim: SimConfig, n: int) -> list[Template]:
    """``n`` simulated transactions with ``event_id`` ``L0``, ``L1``, ... in order."""
    out: list[Template] = []
    for event in simulate(sim, n):
        if event.kind != "transaction":
            continue
        payload = {**event.payload, "event_id": f"L{len(out)}", "event_time": _TIME_MARK}
        head, _, tail = (
            json.dumps(payload, separators=(",", ":")).encode().partition(_TIME_MARK_JSON)
        )
        out.append(Template(event.key.encode(), head, tail))
    return out


def score_seq(value: bytes) -> int | None:
    """The ``<seq>`` of a score whose ``event_id`` is ``L<seq>``; None for any other record.

    >>> score_seq(b'{"event_id": "L42", "card_id": "c-1"}')
    42
    >>> score_seq(b'{"event_id":"tx-7-1"}') is None
    True
    """
    at = value.find(b'"event_id"')
    if at < 0:
        return None
    start = value.find(b'"', at + 10)
    end = value.find(b'"', start + 1)
    if start < 0 or end < 0 or value[start + 1 : start + 2] != b"L":
        return None
    digits = value[start + 2 : end]
    return int(digits) if digits.isdigit() else None


class ScoreReceiver(threading.Thread):
    """Reads the scores topic from the start; notes when each ``L<seq>`` score arrived."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        total: int,
        *,
        isolation: str = "read_uncommitted",
    ) -> None:
        super().__init__(name="score-receiver", daemon=True)
        self.received_at = array("d", bytes(8 * total))
        self.received = 0
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "streamscore-bench-latency",
                "enable.auto.commit": "false",
                "fetch.wait.max.ms": "5",
                "fetch.min.bytes": "1",
                # read_committed: a score counts once its transaction commits (exactly-once).
                "isolation.level": isolation,
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self._halt = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                first = self._consumer.poll(0.05)
                if first is None:
                    continue
                now = time.perf_counter()
                self._note(first.value(), now)
                # Whatever else is already fetched, without waiting for more.
                rest = self._consumer.consume(10_000, 0)
                now = time.perf_counter()
                for msg in rest:
                    self._note(msg.value(), now)
        except Exception as exc:  # reported by measure_latency, never lost
            self.error = repr(exc)
        finally:
            self._consumer.close()

    def _note(self, value: bytes | None, now: float) -> None:
        seq = score_seq(value) if value else None
        if seq is not None and seq < len(self.received_at) and not self.received_at[seq]:
            self.received_at[seq] = now
            self.received += 1

    def stop(self) -> None:
        """End the loop and close the consumer."""
        self._halt.set()
        self.join(timeout=10)


class _Sender:
    def __init__(self, bootstrap: str, topic: str, items: list[Template]) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": "true",
                "linger.ms": "1",
            }
        )
        self._topic = topic
        self._items = items
        self.sent_at = array("d", bytes(8 * len(items)))
        self.next = 0

    def send_one(self) -> None:
        if self.next >= len(self._items):
            raise BenchError("latency run: ran out of pre-generated transactions")
        item = self._items[self.next]
        wall_ms = time.time_ns() // 1_000_000
        value = item.value(wall_ms)
        self.sent_at[self.next] = time.perf_counter()
        while True:
            try:
                self._producer.produce(self._topic, value, item.key, timestamp=wall_ms)
                break
            except BufferError:
                self._producer.poll(0.01)
        self.next += 1

    def poll(self) -> None:
        self._producer.poll(0)

    def close(self) -> None:
        self._producer.flush(10)


@dataclass(frozen=True)
class LatencySamples:
    """Latencies of the counted transactions and how many were sent in how long."""

    samples_s: list[float]
    sent: int
    sent_seconds: float
    # CPU seconds the pipeline spent while the counted transactions were sent.
    cpu_s: float = 0.0
    # CPU seconds the whole host was busy over the same span (0.0: not measured).
    host_busy_s: float = 0.0


def measure_latency(
    *,
    bootstrap: str,
    transactions: str,
    scores: str,
    partitions: int,
    plan: LatencyPlan,
    items: list[Template],
    say: Callable[[str], None],
    check_alive: Callable[[], None],
    cpu_s: Callable[[], float] = lambda: 0.0,
    host_busy_s: Callable[[], float] = lambda: 0.0,
    isolation: str = "read_uncommitted",
) -> LatencySamples:
    """Offer ``items`` to a running pipeline as ``plan`` says; the counted latencies.

    ``cpu_s`` reads the pipeline's CPU seconds so far and ``host_busy_s`` the
    whole host's; what each spent while the counted transactions were sent is
    returned with them. ``isolation`` is the score consumer's
    ``isolation.level`` (``read_committed`` for exactly-once output).
    """
    receiver = ScoreReceiver(bootstrap, scores, partitions, len(items), isolation=isolation)
    sender = _Sender(bootstrap, transactions, items)
    receiver.start()
    try:
        deadline = time.monotonic() + plan.ready_timeout_s
        while receiver.received == 0:
            check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"latency run: no score within {plan.ready_timeout_s:.0f} s")
            sender.send_one()
            sender.poll()
            time.sleep(PROBE_EVERY_S)
        say(f"latency: pipeline answers; warming up {plan.warmup_s:.0f} s at {plan.rate:,.0f} ev/s")
        _paced(sender, receiver, plan.rate, plan.warmup_s, "warm-up", say, check_alive)
        first = sender.next
        say(f"latency: measuring {plan.seconds:.0f} s at {plan.rate:,.0f} ev/s")
        cpu_before, host_before = cpu_s(), host_busy_s()
        sent_seconds = _paced(
            sender, receiver, plan.rate, plan.seconds, "measured", say, check_alive
        )
        cpu_spent, host_spent = cpu_s() - cpu_before, host_busy_s() - host_before
        end = _drain(sender, receiver, plan.drain_s, check_alive, "latency run: score consumer")
    finally:
        receiver.stop()
    samples = _samples(sender, receiver, first, end)
    return LatencySamples(samples, end - first, sent_seconds, cpu_spent, host_spent)


def broker_round_trip(
    *,
    bootstrap: str,
    topic: str,
    partitions: int,
    rate: float,
    seconds: float,
    items: list[Template],
    say: Callable[[str], None],
) -> LatencySamples:
    """Offer ``items`` to ``topic`` at ``rate`` for ``seconds`` and read them back from it.

    The same producer and consumer as :func:`measure_latency`, with nothing
    between them: each sample is one transaction's trip through the broker.
    """
    receiver = ScoreReceiver(bootstrap, topic, partitions, len(items))
    sender = _Sender(bootstrap, topic, items)
    receiver.start()
    try:
        sent_seconds = _paced(sender, receiver, rate, seconds, "broker", say, lambda: None)
        end = _drain(sender, receiver, 15.0, lambda: None, "broker round trip: consumer")
    finally:
        receiver.stop()
    return LatencySamples(_samples(sender, receiver, 0, end), end, sent_seconds)


def _drain(
    sender: _Sender,
    receiver: ScoreReceiver,
    drain_s: float,
    check_alive: Callable[[], None],
    reader: str,
) -> int:
    """Stop sending and wait up to ``drain_s`` for what was sent; return how many were sent."""
    end = sender.next
    sender.close()
    deadline = time.monotonic() + drain_s
    while receiver.received < end and time.monotonic() < deadline:
        check_alive()
        time.sleep(0.05)
    if receiver.error is not None:
        raise BenchError(f"{reader} failed: {receiver.error}")
    return end


def _samples(sender: _Sender, receiver: ScoreReceiver, first: int, end: int) -> list[float]:
    """Seconds from send to receipt of items ``first`` to ``end`` that came back."""
    got, sent_at = receiver.received_at, sender.sent_at
    return [got[i] - sent_at[i] for i in range(first, end) if got[i]]


def _paced(
    sender: _Sender,
    receiver: ScoreReceiver,
    rate: float,
    seconds: float,
    phase: str,
    say: Callable[[str], None],
    check_alive: Callable[[], None],
) -> float:
    """Send ``rate * seconds`` transactions evenly; return how long it took."""
    total = round(rate * seconds)
    started = time.perf_counter()
    next_report = started + PROGRESS_EVERY_S
    sent = 0
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - started) * rate) + 1)
        while sent < due:
            sender.send_one()
            sent += 1
        sender.poll()
        if now >= next_report:
            next_report += PROGRESS_EVERY_S
            check_alive()
            backlog = sender.next - receiver.received
            say(
                f"latency ({phase}): {sent:,}/{total:,} sent, "
                f"{receiver.received:,} back, {backlog:,} not yet"
            )
        time.sleep(0.0005)
    return time.perf_counter() - started
