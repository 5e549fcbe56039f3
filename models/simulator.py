"""Seeded synthetic card traffic with fraud labels, for the demo, tests, training and benchmarks.

The same seed and parameters always give the same events in the same order.
Normal cards buy at a steady pace near home; compromised cards show patterns
that the contract's velocity features can see: bursts across many merchants,
card testing (tiny amounts, then a large one) and amount spikes. Fraudulent
transactions are followed, some minutes of event time later, by chargebacks.
Event times are slightly out of order (bounded jitter), as real producers are.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from flows.testing import ReplayRecord
from schemas.timefmt import format_ms

DEFAULT_START_MS = 1_795_392_000_000  # 2026-11-23T00:00:00Z
COUNTRIES = ("CZ", "DE", "AT", "PL", "SK", "FR", "NL", "US", "GB", "BR")
CURRENCIES = {"CZ": "CZK", "PL": "PLN", "US": "USD", "GB": "GBP", "BR": "BRL"}


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Shape of the simulated traffic."""

    seed: int = 7
    cards: int = 2_000
    merchants: int = 300
    events_per_second: float = 200.0
    start_ms: int = DEFAULT_START_MS
    fraud_share: float = 0.02
    chargeback_share: float = 0.8
    max_jitter_ms: int = 2_000


@dataclass(frozen=True)
class SimEvent:
    """One simulated record: its topic kind, Kafka key, JSON-ready payload and label."""

    kind: Literal["transaction", "chargeback"]
    key: str
    payload: dict[str, Any]
    fraud: bool
    event_time_ms: int
    scenario: str | None = None  # the fraud scenario of a fraudulent transaction


@dataclass
class _Card:
    card_id: str
    country: str
    log_amount: float
    device_id: str
    channel: str
    mean_gap_ms: float


@dataclass(order=True)
class _Pending:
    emit_at_ms: int
    seq: int
    event: SimEvent = field(compare=False)


def simulate(config: SimConfig, n: int) -> Iterator[SimEvent]:
    """Yield ``n`` transactions (plus their chargebacks) in roughly event-time order."""
    rng = random.Random(config.seed)
    cards = [_make_card(rng, i, config) for i in range(config.cards)]
    pending: list[_Pending] = []
    seq = 0
    now = config.start_ms
    produced = 0
    mean_step = 1000.0 / config.events_per_second

    def schedule(event: SimEvent, emit_at: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(pending, _Pending(emit_at, seq, event))

    while produced < n:
        now += max(1, round(rng.expovariate(1.0 / mean_step)))
        while pending and pending[0].emit_at_ms <= now:
            event = heapq.heappop(pending).event
            produced += event.kind == "transaction"
            yield event
            if produced >= n:
                return
        card = cards[rng.randrange(len(cards))]
        if rng.random() < config.fraud_share:
            for event in _fraud_episode(rng, card, now, config, produced + seq):
                schedule(event, event.event_time_ms)
            continue
        txn = _transaction(
            rng,
            card,
            now,
            config,
            amount=math.exp(rng.gauss(card.log_amount, 0.6)),
            merchant=_merchant(rng, config, card),
            fraud=False,
            event_no=produced + seq,
        )
        schedule(txn, now + rng.randrange(config.max_jitter_ms + 1))


def _make_card(rng: random.Random, i: int, config: SimConfig) -> _Card:
    return _Card(
        card_id=f"c-{i}",
        country=rng.choice(COUNTRIES[:7]),
        log_amount=rng.gauss(3.3, 0.7),
        device_id=f"d-{rng.randrange(10**6)}",
        channel=rng.choice(("pos", "pos", "ecom")),
        mean_gap_ms=config.cards * 1000.0 / config.events_per_second,
    )


def _merchant(rng: random.Random, config: SimConfig, card: _Card) -> str:
    # Each card mostly shops at a handful of merchants near home.
    base = int(card.card_id[2:])
    if rng.random() < 0.8:
        return f"m-{(base * 7 + rng.randrange(5)) % config.merchants}"
    return f"m-{rng.randrange(config.merchants)}"


def _fraud_episode(
    rng: random.Random, card: _Card, now: int, config: SimConfig, event_no: int
) -> list[SimEvent]:
    """A short run of fraudulent transactions on a compromised card, with chargebacks."""
    pattern = rng.choice(("burst", "card_testing", "spike"))
    country = rng.choice([c for c in COUNTRIES if c != card.country])
    events: list[SimEvent] = []
    t = now
    if pattern == "burst":
        amounts = [math.exp(rng.gauss(4.6, 0.5)) for _ in range(rng.randint(4, 12))]
    elif pattern == "card_testing":
        amounts = [round(rng.uniform(0.5, 2.0), 2) for _ in range(rng.randint(3, 8))]
        amounts.append(math.exp(rng.gauss(6.0, 0.4)))
    else:
        amounts = [math.exp(card.log_amount + rng.uniform(2.5, 4.0))]
    for k, amount in enumerate(amounts):
        t += rng.randint(5_000, 60_000) if pattern != "spike" else 0
        txn = _transaction(
            rng,
            card,
            t,
            config,
            amount=amount,
            merchant=f"m-{rng.randrange(config.merchants)}",
            fraud=True,
            event_no=f"{event_no}-f{k}",
            country=country,
            channel="ecom",
            device=f"d-x{rng.randrange(10**6)}" if rng.random() < 0.5 else None,
        )
        events.append(txn)
        if rng.random() < config.chargeback_share:
            cb_time = t + rng.randint(120_000, 1_200_000)
            events.append(
                SimEvent(
                    kind="chargeback",
                    key=txn.payload["merchant_id"],
                    payload={
                        "event_id": f"cb-{txn.payload['event_id']}",
                        "txn_event_id": txn.payload["event_id"],
                        "merchant_id": txn.payload["merchant_id"],
                        "card_id": card.card_id,
                        "event_time": format_ms(cb_time),
                    },
                    fraud=True,
                    event_time_ms=cb_time,
                )
            )
    return events


def _transaction(
    rng: random.Random,
    card: _Card,
    t: int,
    config: SimConfig,
    *,
    amount: float,
    merchant: str,
    fraud: bool,
    event_no: int | str,
    country: str | None = None,
    channel: str | None = None,
    device: str | None = None,
) -> SimEvent:
    country = country or card.country
    payload: dict[str, Any] = {
        "event_id": f"tx-{config.seed}-{event_no}",
        "card_id": card.card_id,
        "merchant_id": merchant,
        "amount": round(min(amount, 1e6), 2),
        "currency": CURRENCIES.get(country, "EUR"),
        "event_time": format_ms(t),
        "country": country,
        "channel": channel or card.channel,
    }
    if not fraud:
        payload["device_id"] = card.device_id
    elif device is not None:
        payload["device_id"] = device
    return SimEvent("transaction", card.card_id, payload, fraud, t)


def to_replay_records(events: Iterable[SimEvent]) -> list[ReplayRecord]:
    """The simulated log as one-partition topics, ingested at each event's own time."""
    offsets = {"transaction": 0, "chargeback": 0}
    out = []
    for event in events:
        value = json.dumps(event.payload, separators=(",", ":")).encode()
        offset = offsets[event.kind]
        offsets[event.kind] += 1
        out.append(
            ReplayRecord(event.kind, 0, offset, event.key.encode(), value, event.event_time_ms)
        )
    return out
