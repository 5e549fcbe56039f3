"""Poison input on the real broker: no record stops the flow, and every record is accounted for.

Each test publishes records that once stopped the service (an event time just
after the epoch, a dead letter larger than the broker's limit, a stale or
far-future first record), or a seeded fuzz of thousands of bad records on both
input topics, runs the flow in this process to the end of the input, and reads
every output back with an independent kafka-python consumer. The accounting
is exact: every transaction offset is one score or one dead letter, every
chargeback offset is counted in a window or is one dead letter, and the
metrics equal that ledger.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from kafka import KafkaProducer
from prometheus_client import Counter as PromCounter

from schemas.records import DeadLetter, Transaction
from schemas.settings import Settings
from tests.conftest import ROOT
from tests.integration.crash_helpers import flow_env
from tests.integration.kafka_helpers import read_all, run_flow_to_end

pytestmark = pytest.mark.integration

HOUR = 3_600_000
YEAR_2099 = 4_070_908_800_000


def _now() -> int:
    return time.time_ns() // 1_000_000


def _txn(event_id: str, t: int, *, card: str = "c-1", merchant: str = "m-1") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "card_id": card,
        "merchant_id": merchant,
        "amount": 10.0,
        "currency": "EUR",
        "event_time": t,
    }


def _cb(event_id: str, t: int, *, merchant: str = "m-1") -> dict[str, Any]:
    return {"event_id": event_id, "txn_event_id": "tx-0", "merchant_id": merchant, "event_time": t}


@dataclass(frozen=True)
class Sent:
    """One published record: where it landed and what it was."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


_Out = tuple[str, bytes | None, bytes | None, int | None, int | None]


def _publish(settings: Settings, records: Sequence[_Out]) -> list[Sent]:
    """Publish (topic, key, value, partition, Kafka timestamp) in order; where each landed."""
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", max_request_size=4_000_000
    )
    try:
        futures = [
            (topic, value, producer.send(topic, key=k, value=value, partition=p, timestamp_ms=ts))
            for topic, k, value, p, ts in records
        ]
        producer.flush()
        out = []
        for topic, value, future in futures:
            md = future.get(timeout=30)
            out.append(Sent(topic, md.partition, md.offset, value))
        return out
    finally:
        producer.close()


def _total(counter: PromCounter, **labels: str) -> float:
    """Sum of a counter's ``_total`` samples whose labels include ``labels``."""
    return sum(
        s.value
        for metric in counter.collect()
        for s in metric.samples
        if s.name.endswith("_total") and labels.items() <= s.labels.items()
    )


def _outputs(settings: Settings) -> tuple[list[dict[str, Any]], list[DeadLetter]]:
    scores = read_all(settings.bootstrap_servers, settings.topics.scores)
    dead = [
        DeadLetter.model_validate({k: v for k, v in d.items() if k != "_key"})
        for d in read_all(settings.bootstrap_servers, settings.topics.dead_letters)
    ]
    return scores, dead


def test_event_times_just_after_the_epoch_are_scored(settings: Settings) -> None:
    topic = settings.topics.transactions
    times = [0, 1, 299_999, 300_000, 600_001]
    records = [
        (topic, b"c-1", json.dumps(_txn(f"tx-{i}", t)).encode(), 0, None)
        for i, t in enumerate(times)
    ]
    records.append((topic, b"c-1", json.dumps(_txn("tx-live", _now())).encode(), 0, None))
    _publish(settings, records)
    run_flow_to_end(settings)
    scores, dead = _outputs(settings)
    assert sorted(s["event_id"] for s in scores) == sorted(
        [f"tx-{i}" for i in range(len(times))] + ["tx-live"]
    )
    assert dead == []


def test_dead_letter_of_a_huge_key_is_cut_and_produced(settings: Settings) -> None:
    key = b"k" * 600_000  # the broker accepts it; its dead letter would carry it twice
    records = [
        (settings.topics.transactions, key, b"not json", 0, None),
        (settings.topics.chargebacks, key, b"not json", 0, None),
        (settings.topics.transactions, b"c-1", json.dumps(_txn("tx-1", _now())).encode(), 0, None),
    ]
    sent = _publish(settings, records)
    run_flow_to_end(settings)
    scores, dead = _outputs(settings)
    assert [s["event_id"] for s in scores] == ["tx-1"]
    assert sorted((d.topic, d.partition, d.offset) for d in dead) == sorted(
        (s.topic, s.partition, s.offset) for s in sent[:2]
    )
    for d in dead:
        assert d.reason == "json" and d.truncated
        assert d.key == "k" * 1024 and "600000 bytes" in d.error


def _live_records(
    settings: Settings, partition: int, start: int, count: int, prefix: str
) -> list[_Out]:
    topic = settings.topics.transactions
    now = _now()
    return [
        (
            topic,
            f"c-{i % 5}".encode(),
            json.dumps(_txn(f"{prefix}-{i}", now - 60_000 + i * 10, card=f"c-{i % 5}")).encode(),
            partition,
            now,
        )
        for i in range(start, start + count)
    ]


def test_no_single_stale_future_or_outlying_record_makes_good_events_late(
    settings: Settings,
) -> None:
    topic = settings.topics.transactions
    now = _now()
    stale = (topic, b"c-9", json.dumps(_txn("stale", now - 2 * HOUR, card="c-9")).encode())
    future = (topic, b"c-9", json.dumps(_txn("future", YEAR_2099, card="c-9")).encode())
    outlier = (topic, b"c-9", json.dumps(_txn("outlier", now + 50 * 60_000, card="c-9")).encode())
    far = (topic, b"c-9", json.dumps(_txn("far", now + 2 * HOUR, card="c-9")).encode())
    records = [
        # partition 0: a stale first record, stamped stale by the producer as well
        (*stale, 0, now - 2 * HOUR),
        *_live_records(settings, 0, 0, 20, "p0"),
        # mid-stream: one outlier 50 min ahead (within the bound), one 2 h ahead
        (*outlier, 0, now),
        (*far, 0, now),
        *_live_records(settings, 0, 20, 20, "p0"),
        # partition 1: a first record stamped 2099 in both its event time and its Kafka time
        (*future, 1, YEAR_2099),
        *_live_records(settings, 1, 0, 20, "p1"),
    ]
    _publish(settings, records)
    run_flow_to_end(settings)
    scores, dead = _outputs(settings)
    assert sorted((d.reason, json.loads(d.payload)["event_id"]) for d in dead) == [
        ("timestamp", "far"),
        ("timestamp", "future"),
    ]
    by_id = {s["event_id"]: s for s in scores}
    good = [k for k in by_id if k.startswith(("p0-", "p1-"))]
    assert len(good) == 60
    assert [k for k in good if by_id[k]["late"]] == []
    assert not by_id["stale"]["late"] and not by_id["outlier"]["late"]


def _mutations(rng: random.Random, now: int) -> Iterator[tuple[str, bytes | None, bytes | None]]:
    """Endless (kind, key, value): valid records, mutated ones, random JSON and random bytes."""
    valid_ids: list[tuple[str, str]] = []
    while True:
        roll = rng.random()
        kind = "transaction" if rng.random() < 0.8 else "chargeback"
        card = f"c-{rng.randrange(30)}"
        merchant = f"m-{rng.randrange(8)}"
        t = now - rng.randrange(0, 30 * 60_000)
        body: Any = (
            _txn(f"tx-{rng.randrange(10**9)}", t, card=card, merchant=merchant)
            if kind == "transaction"
            else _cb(f"cb-{rng.randrange(10**9)}", t, merchant=merchant)
        )
        key: bytes | None = card.encode() if kind == "transaction" else merchant.encode()
        if roll < 0.35:
            if kind == "transaction":
                valid_ids.append((body["event_id"], card))
            yield kind, key, json.dumps(body).encode()
            continue
        if roll < 0.42 and valid_ids and kind == "transaction":  # a duplicate
            event_id, dup_card = rng.choice(valid_ids)
            body.update(event_id=event_id, card_id=dup_card)
            yield kind, dup_card.encode(), json.dumps(body).encode()
            continue
        if roll < 0.75:  # one field mutated, dropped or duplicated
            field = rng.choice(sorted(body))
            choice = rng.randrange(7)
            if choice == 0:
                del body[field]
            elif choice == 1:
                body[field] = rng.choice(
                    [None, True, -1, 0, 1e308, "", "x" * 200, [], {}, "\ud800", "NaN", 2**70]
                )
            elif choice == 2:
                body["event_time"] = rng.choice(
                    [0, 1, 299_999, -1, YEAR_2099, now + 2 * HOUR, now - 40 * 86_400_000]
                )
            elif choice == 3:
                body["event_time"] = rng.choice(
                    ["2026-11-23T10:00:00", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "x"]
                )
            elif choice == 4:
                text = json.dumps(body)
                yield kind, key, (text[:-1] + f', "{field}": 1}}').encode()
                continue
            elif choice == 5:
                key = rng.choice([None, b"\xff\xfe", rng.randbytes(rng.randrange(1, 40_000))])
            else:
                body[field] = '\x00\u2028"\\' * rng.randrange(1, 50)
            yield kind, key, json.dumps(body).encode()
            continue
        if roll < 0.88:  # random JSON
            value: Any = rng.choice(
                [[], {}, 1, "s", None, [body], {"event_id": 1}, {"a": {"b": [1, 2, {"c": None}]}}]
            )
            yield kind, key, json.dumps(value).encode()
            continue
        if roll < 0.9:  # over the size limit
            yield kind, key, json.dumps({**body, "pad": "x" * 70_000}).encode()
            continue
        yield kind, key, rng.choice([None, b"", rng.randbytes(rng.randrange(1, 300))])


def test_fuzzed_input_never_stops_the_flow_and_is_accounted_for_exactly(
    settings: Settings,
) -> None:
    rng = random.Random(22)
    now = _now()
    topics = {
        "transaction": settings.topics.transactions,
        "chargeback": settings.topics.chargebacks,
    }
    gen = _mutations(rng, now)
    records: list[_Out] = []
    for _ in range(3_000):
        kind, key, value = next(gen)
        ts = now - rng.choice([0, 0, 0, 1_000, 2 * HOUR, 30 * 86_400_000])
        records.append((topics[kind], key, value, None, ts))
    sent = _publish(settings, records)

    _, metrics = run_flow_to_end(settings)  # returns: the flow was not stopped by any record
    scores, dead = _outputs(settings)

    coordinates = [(d.topic, d.partition, d.offset) for d in dead]
    assert len(set(coordinates)) == len(coordinates), "one dead letter per record at most"
    dead_at = set(coordinates)
    txns = [s for s in sent if s.topic == settings.topics.transactions]
    cbs = [s for s in sent if s.topic == settings.topics.chargebacks]
    # Every transaction offset is one score or one dead letter, and the scores are exactly
    # those of the records that were not dead letters.
    expected: Counter[tuple[str, str]] = Counter()
    for s in txns:
        if (s.topic, s.partition, s.offset) not in dead_at:
            assert s.value is not None
            txn = Transaction.model_validate_json(s.value)
            expected[(txn.card_id, txn.event_id)] += 1
    assert Counter((s["card_id"], s["event_id"]) for s in scores) == expected
    txn_dead = sum(1 for d in dead if d.topic == settings.topics.transactions)
    assert len(scores) + txn_dead == len(txns)
    cb_dead = sum(1 for d in dead if d.topic == settings.topics.chargebacks)
    # Every reason the fuzz can reach appears, so the ledger below covers them all.
    reasons = Counter(d.reason for d in dead)
    assert set(reasons) >= {"json", "schema", "timestamp", "oversize", "duplicate"}
    assert all(d.received_at > "2026" for d in dead)

    # The metrics equal the ledger: consumed = scored + counted chargebacks + dead letters.
    assert _total(metrics.events_in) == len(sent)
    assert _total(metrics.events_in, topic=settings.topics.transactions) == len(txns)
    assert _total(metrics.scored) == len(scores)
    assert _total(metrics.chargebacks) == len(cbs) - cb_dead
    for reason, n in reasons.items():
        assert _total(metrics.dead_letters, reason=reason) == n, reason
    assert _total(metrics.dead_letters) == len(dead)
    assert _total(metrics.events_in) == (
        _total(metrics.scored) + _total(metrics.chargebacks) + _total(metrics.dead_letters)
    )


# A bug that only one record triggers, injected into the card stage of a real `streamscore run`.
_INJECT_BUG = """
import sys
import operators.card_kernel as kernel
step = kernel.card_step
def buggy(buf, out, row, t, amount, *args):
    if amount == 666.0:  # the poison record's amount
        raise RuntimeError("injected bug")
    return step(buf, out, row, t, amount, *args)
kernel.card_step = buggy
run = kernel.card_run
def buggy_run(cards, rows, amounts, *args):
    # The real kernel up to the poison row, which then raises as a bug would.
    start = args[-1]
    poison = [i for i in range(start, len(amounts)) if amounts[i] == 666.0]
    if not poison:
        return run(cards, rows, amounts, *args)
    done = run(cards, rows[: poison[0]], amounts[: poison[0]], *args)
    if done < poison[0]:
        return done
    raise RuntimeError("injected bug")
kernel.card_run = buggy_run
from flows.cli import main
sys.exit(main(["run", "--until-eof"]))
"""


def _poisoned(event_id: str, t: int) -> dict[str, Any]:
    return {**_txn(event_id, t), "amount": 666.0} if event_id == "poison" else _txn(event_id, t)


def test_a_record_that_crashes_a_step_is_quarantined_after_two_crashes(
    settings: Settings,
) -> None:
    now = _now()
    topic = settings.topics.transactions
    ids = [f"tx-{i}" for i in range(5)] + ["poison"] + [f"tx-{i}" for i in range(5, 10)]
    sent = _publish(
        settings,
        [
            (topic, b"c-1", json.dumps(_poisoned(i, now - 1_000 + n)).encode(), 0, now)
            for n, i in enumerate(ids)
        ],
    )
    env = {**flow_env(settings), "STREAMSCORE_METRICS_PORT": "0"}
    runs = []
    for _ in range(3):
        runs.append(
            subprocess.run(
                [sys.executable, "-c", _INJECT_BUG],
                env=env,
                cwd=ROOT,
                capture_output=True,
                timeout=180,
                check=False,
            )
        )
    assert [r.returncode for r in runs] == [1, 1, 0], [r.stderr[-2000:] for r in runs]
    where = f"{topic}#0@{sent[5].offset}"
    for crash, run in enumerate(runs[:2], start=1):
        err = run.stderr.decode()
        assert where in err and "RuntimeError: injected bug" in err and f"crash {crash}" in err
    ledger = json.loads((settings.state_dir / "quarantine.json").read_text())
    assert ledger[where]["crashes"] == 2
    scores, dead = _outputs(settings)
    assert {s["event_id"] for s in scores} == set(ids) - {"poison"}
    (letter,) = dead
    assert (letter.reason, letter.offset) == ("quarantined", sent[5].offset)
    assert "RuntimeError: injected bug" in letter.error
