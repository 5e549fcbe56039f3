"""The seeded traffic simulator: determinism, validity and bounded disorder."""

from __future__ import annotations

from models.simulator import SimConfig, SimEvent, simulate
from schemas.records import Chargeback, Transaction
from schemas.timefmt import parse_event_time

N = 3_000
# Slow traffic, so that chargebacks (2 to 20 minutes after their fraud) show up within N events.
SLOW = SimConfig(seed=5, cards=200, merchants=50, events_per_second=2.0)


def test_same_seed_gives_the_same_events() -> None:
    config = SimConfig(seed=3)
    assert list(simulate(config, N)) == list(simulate(config, N))


def test_another_seed_gives_other_events() -> None:
    first = [e.payload for e in simulate(SimConfig(seed=3), N)]
    second = [e.payload for e in simulate(SimConfig(seed=4), N)]
    assert first != second
    assert {p["event_id"] for p in first}.isdisjoint(p["event_id"] for p in second)


def test_yields_exactly_n_transactions() -> None:
    events = list(simulate(SLOW, N))
    assert sum(e.kind == "transaction" for e in events) == N
    assert events[-1].kind == "transaction"


def test_event_ids_are_unique() -> None:
    for config in (SimConfig(seed=3), SLOW):
        ids = [e.payload["event_id"] for e in simulate(config, N)]
        assert len(ids) == len(set(ids))


def test_every_payload_validates_against_the_contract() -> None:
    events = list(simulate(SLOW, N))
    kinds = {e.kind for e in events}
    assert kinds == {"transaction", "chargeback"}
    for event in events:
        if event.kind == "transaction":
            txn = Transaction.model_validate(event.payload)
            assert event.key == txn.card_id
            assert txn.event_time == event.event_time_ms
        else:
            cb = Chargeback.model_validate(event.payload)
            assert event.key == cb.merchant_id
            assert cb.event_time == event.event_time_ms


def test_payloads_survive_json_the_way_producers_send_them() -> None:
    for event in simulate(SimConfig(seed=3), 500):
        assert parse_event_time(event.payload["event_time"]) == event.event_time_ms


def test_chargebacks_follow_their_fraudulent_transaction() -> None:
    seen: dict[str, SimEvent] = {}
    chargebacks = 0
    for event in simulate(SLOW, N):
        if event.kind == "transaction":
            seen[event.payload["event_id"]] = event
            continue
        chargebacks += 1
        txn = seen[event.payload["txn_event_id"]]
        assert txn.fraud
        assert event.fraud
        assert event.payload["merchant_id"] == txn.payload["merchant_id"]
        assert event.payload["card_id"] == txn.payload["card_id"]
        assert txn.event_time_ms + 120_000 <= event.event_time_ms <= txn.event_time_ms + 1_200_000
    assert chargebacks > 0


def test_both_labels_occur() -> None:
    labels = [e.fraud for e in simulate(SimConfig(seed=3), N) if e.kind == "transaction"]
    assert any(labels)
    assert not all(labels)


def test_event_time_disorder_is_bounded_by_the_jitter() -> None:
    # Normal transactions are emitted up to max_jitter_ms after their event time and
    # fraud-episode events exactly at theirs, so nothing trails the running maximum
    # of event times by more than the jitter bound.
    for config in (
        SimConfig(seed=1),
        SimConfig(seed=2, max_jitter_ms=500),
        SimConfig(seed=3, max_jitter_ms=0),
        SLOW,
    ):
        events = list(simulate(config, N))
        running_max = events[0].event_time_ms
        worst = 0
        for event in events[1:]:
            worst = max(worst, running_max - event.event_time_ms)
            running_max = max(running_max, event.event_time_ms)
        assert worst <= config.max_jitter_ms, config


def test_some_disorder_exists_with_jitter() -> None:
    times = [e.event_time_ms for e in simulate(SimConfig(seed=1), N)]
    assert times != sorted(times)
    assert times[0] >= SimConfig().start_ms
