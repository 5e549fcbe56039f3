"""Seeded card traffic shaped like a card issuer's: weeks of event time, rare fraud, late labels.

Each card transacts a few times a day (a per-card rate drawn around
``txns_per_card_day``), mostly at its home merchants (at their terminals for
card-present payments, from its own device online), with daily and weekly
cycles. Fraud is about ``fraud_share`` of the transactions, in three scenarios
the contract's features can see:

- ``burst``: a stolen card is used online at several merchants within minutes,
  from another country and another device or none;
- ``card_testing``: tiny online amounts a minute apart, then one or two large ones;
- ``compromised_merchant``: a merchant is breached for a few days and runs
  fraudulent card-not-present payments on many cards; their chargebacks land on
  that merchant days later, so its chargeback rate rises.

Most fraudulent transactions get a chargeback ``chargeback_delay_days``
(median) later, never sooner than half a day nor later than
``max_chargeback_delay_days``. Events come out in emission order: event time
plus a bounded producer jitter for transactions. Nothing past the end of the
period is emitted (chargebacks not yet filed are simply not in the log, as in
a recording). The same config always gives the same events.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from models.simulator import COUNTRIES, CURRENCIES, DEFAULT_START_MS, SimEvent
from schemas.timefmt import format_ms

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# Relative transaction rate by hour of day (UTC): quiet nights, a noon and an evening peak.
DAILY = (0.2, 0.12, 0.08, 0.08, 0.12, 0.3, 0.6, 0.9, 1.1, 1.2, 1.3, 1.45,
         1.5, 1.4, 1.3, 1.3, 1.35, 1.45, 1.5, 1.4, 1.2, 0.9, 0.6, 0.35)  # fmt: skip
# Relative rate by weekday, Monday first: busier Fridays and Saturdays, quiet Sundays.
WEEKLY = (0.95, 0.95, 1.0, 1.0, 1.1, 1.15, 0.85)
Scenario = Literal["burst", "card_testing", "compromised_merchant"]
SCENARIOS: tuple[Scenario, ...] = ("burst", "card_testing", "compromised_merchant")


@dataclass(frozen=True, kw_only=True)
class RealisticConfig:
    """Shape of the realistic traffic."""

    seed: int = 7
    cards: int = 4_000
    merchants: int = 800
    txns_per_card_day: float = 3.0
    days: float = 42.0
    start_ms: int = DEFAULT_START_MS
    daily_cycle: bool = True
    weekly_cycle: bool = True
    fraud_share: float = 0.002
    # Share of the fraudulent transactions each scenario makes up.
    scenario_weights: tuple[float, float, float] = (0.4, 0.3, 0.3)
    # Merchant breaches: one per ``days_per_breach`` (at least one), each lasting
    # ``compromise_days``; their share of the fraud sets how busy a breach is.
    days_per_breach: float = 14.0
    compromise_days: tuple[float, float] = (2.0, 4.0)
    chargeback_share: float = 0.9
    chargeback_delay_days: float = 3.0
    max_chargeback_delay_days: float = 14.0
    max_jitter_ms: int = 2_000

    def __post_init__(self) -> None:
        if self.cards < 1 or self.merchants < 2:
            raise ValueError("need at least 1 card and 2 merchants")
        if self.txns_per_card_day <= 0 or self.days <= 0:
            raise ValueError("txns_per_card_day and days must be positive")
        if not 0 <= self.fraud_share < 0.5 or not 0 <= self.chargeback_share <= 1:
            raise ValueError("fraud_share must be in [0, 0.5), chargeback_share in [0, 1]")

    @property
    def breaches(self) -> int:
        """How many merchants are breached in the period."""
        if self.fraud_share == 0 or self.scenario_weights[2] == 0:
            return 0
        return max(1, round(self.days / self.days_per_breach))

    @property
    def breach_txns_per_hour(self) -> float:
        """Fraudulent transactions an hour at a breached merchant."""
        if not self.breaches:
            return 0.0
        hours = sum(self.compromise_days) / 2 * 24
        expected = self.cards * self.txns_per_card_day * self.days * self.fraud_share
        return expected * self.scenario_weights[2] / (self.breaches * hours)

    @property
    def end_ms(self) -> int:
        """The end of the simulated period (exclusive)."""
        return self.start_ms + round(self.days * DAY_MS)


@dataclass
class _Card:
    card_id: str
    country: str
    log_amount: float
    device_id: str
    ecom_share: float
    homes: list[int]


@dataclass
class _Merchant:
    merchant_id: str
    log_price: float  # added to a card's log amount
    terminals: int


@dataclass(order=True)
class _Pending:
    emit_at_ms: int
    seq: int
    event: SimEvent = field(compare=False)


def activity(config: RealisticConfig, t: int) -> float:
    """The relative transaction rate at event time ``t`` (1.0 on average over a week)."""
    factor = 1.0
    if config.daily_cycle:
        factor *= DAILY[(t // HOUR_MS) % 24] / _DAILY_MEAN
    if config.weekly_cycle:
        factor *= WEEKLY[(t // DAY_MS + 3) % 7] / _WEEKLY_MEAN  # 1970-01-01 was a Thursday
    return factor


_DAILY_MEAN = sum(DAILY) / len(DAILY)
_WEEKLY_MEAN = sum(WEEKLY) / len(WEEKLY)


class _Generator:
    def __init__(self, config: RealisticConfig) -> None:
        self.config = config
        self.rng = rng = random.Random(config.seed)
        # Merchant popularity follows a long tail; card homes are drawn by popularity.
        self.merchants = [
            _Merchant(f"m-{i}", rng.gauss(0.0, 0.4), rng.randint(1, 4))
            for i in range(config.merchants)
        ]
        popularity = [1.0 / (i + 1) ** 0.8 for i in range(config.merchants)]
        self.merchant_cum = list(itertools.accumulate(popularity))
        self.cards = [self._card(i) for i in range(config.cards)]
        rates = [rng.gammavariate(2.0, 0.5) for _ in self.cards]  # mean 1
        self.card_cum = list(itertools.accumulate(rates))
        self.pending: list[_Pending] = []
        self.seq = 0
        self.txn_no = 0

    def _card(self, i: int) -> _Card:
        rng = self.rng
        homes = [self._popular_merchant() for _ in range(rng.randint(3, 6))]
        return _Card(
            card_id=f"c-{i}",
            country=rng.choice(COUNTRIES[:7]),
            log_amount=rng.gauss(3.2, 0.6),
            device_id=f"d-{i}-{rng.randrange(10**6)}",
            ecom_share=rng.uniform(0.1, 0.5),
            homes=homes,
        )

    def _popular_merchant(self) -> int:
        x = self.rng.random() * self.merchant_cum[-1]
        return bisect.bisect_right(self.merchant_cum, x)

    def schedule(self, event: SimEvent, jitter: bool) -> None:
        delay = self.rng.randrange(self.config.max_jitter_ms + 1) if jitter else 0
        self.seq += 1
        heapq.heappush(self.pending, _Pending(event.event_time_ms + delay, self.seq, event))

    def legit(self, t: int) -> None:
        rng, config = self.rng, self.config
        x = rng.random() * self.card_cum[-1]
        card = self.cards[bisect.bisect_right(self.card_cum, x)]
        idx = rng.choice(card.homes) if rng.random() < 0.85 else self._popular_merchant()
        merchant = self.merchants[idx]
        ecom = rng.random() < card.ecom_share
        if ecom:
            device: str | None = card.device_id if rng.random() < 0.95 else None
        else:
            device = f"t-{idx}-{rng.randrange(merchant.terminals)}"
        country = card.country if rng.random() < 0.97 else rng.choice(COUNTRIES)
        amount = math.exp(rng.gauss(card.log_amount + merchant.log_price, 0.6))
        self.txn_no += 1
        event = _transaction(
            f"tx-{config.seed}-{self.txn_no}",
            card.card_id,
            merchant.merchant_id,
            amount,
            t,
            country=country,
            channel="ecom" if ecom else "pos",
            device=device,
            fraud=False,
        )
        self.schedule(event, jitter=True)

    def fraud(self, scenario: Scenario, t: int, episode: int) -> None:
        """Schedule every transaction of one fraud episode starting at ``t``, with chargebacks."""
        rng = self.rng
        plan: list[tuple[int, _Card, int, float]] = []  # time, card, merchant, amount
        if scenario == "compromised_merchant":
            idx = rng.randrange(len(self.merchants))
            hours = rng.uniform(*self.config.compromise_days) * 24
            n = max(1, round(rng.gauss(1.0, 0.1) * hours * self.config.breach_txns_per_hour))
            for _ in range(n):
                victim = self.cards[rng.randrange(len(self.cards))]
                at = t + round(rng.uniform(0, hours) * HOUR_MS)
                plan.append((at, victim, idx, math.exp(rng.gauss(5.0, 0.5))))
        else:
            victim = self.cards[rng.randrange(len(self.cards))]
            at = t
            if scenario == "burst":
                for _ in range(rng.randint(3, 10)):
                    at += rng.randint(30_000, 600_000)
                    amount = math.exp(rng.gauss(victim.log_amount + 1.5, 0.5))
                    plan.append((at, victim, self._popular_merchant(), amount))
            else:
                testers = [self._popular_merchant() for _ in range(2)]
                for _ in range(rng.randint(3, 8)):
                    at += rng.randint(10_000, 90_000)
                    plan.append((at, victim, rng.choice(testers), rng.uniform(0.5, 2.0)))
                for _ in range(rng.randint(1, 2)):
                    at += rng.randint(600_000, 7_200_000)
                    amount = math.exp(rng.gauss(6.0, 0.4))
                    plan.append((at, victim, self._popular_merchant(), amount))
        country = rng.choice(COUNTRIES)
        for k, (at, card, idx, amount) in enumerate(sorted(plan, key=lambda p: p[0])):
            foreign = rng.random() < 0.7
            event = _transaction(
                f"tx-{self.config.seed}-f{episode}-{k}",
                card.card_id,
                self.merchants[idx].merchant_id,
                amount,
                at,
                country=country if foreign else card.country,
                channel="ecom",
                device=f"d-x{rng.randrange(10**6)}" if rng.random() < 0.5 else None,
                fraud=True,
                scenario=scenario,
            )
            self.schedule(event, jitter=True)
            if rng.random() < self.config.chargeback_share:
                self.schedule(self._chargeback(event), jitter=False)

    def _chargeback(self, txn: SimEvent) -> SimEvent:
        config = self.config
        days = math.exp(self.rng.gauss(math.log(config.chargeback_delay_days), 0.6))
        days = min(max(days, 0.5), config.max_chargeback_delay_days)
        at = txn.event_time_ms + round(days * DAY_MS)
        payload = {
            "event_id": f"cb-{txn.payload['event_id']}",
            "txn_event_id": txn.payload["event_id"],
            "merchant_id": txn.payload["merchant_id"],
            "card_id": txn.payload["card_id"],
            "event_time": format_ms(at),
        }
        return SimEvent("chargeback", txn.payload["merchant_id"], payload, True, at)


def episode_plan(config: RealisticConfig) -> list[tuple[int, Scenario]]:
    """Start times and scenarios of every fraud episode, sorted by time.

    Episode counts follow from ``fraud_share``: each scenario's share of the
    expected fraudulent transactions, divided by its mean transactions an
    episode; breaches are :attr:`RealisticConfig.breaches`, sized to their share.
    """
    rng = random.Random(config.seed * 7919 + 1)
    expected_txns = config.cards * config.txns_per_card_day * config.days
    per_episode = {"burst": 6.5, "card_testing": 7.0}
    plan: list[tuple[int, Scenario]] = []
    span = config.end_ms - config.start_ms
    for scenario, weight in zip(SCENARIOS, config.scenario_weights, strict=True):
        if scenario == "compromised_merchant":
            # Breaches start early enough that their chargebacks can land within the period.
            room = max(1, span // 2)
            plan.extend(
                (config.start_ms + rng.randrange(room), scenario) for _ in range(config.breaches)
            )
            continue
        mean = config.fraud_share * expected_txns * weight / per_episode[scenario]
        count = math.floor(mean) + (rng.random() < mean - math.floor(mean))
        plan.extend((config.start_ms + rng.randrange(span), scenario) for _ in range(count))
    return sorted(plan)


def simulate_realistic(config: RealisticConfig) -> Iterator[SimEvent]:
    """Yield every transaction and chargeback of the period, in emission order."""
    gen = _Generator(config)
    rng = random.Random(config.seed * 31 + 5)
    episodes = episode_plan(config)
    next_episode = 0
    peak = max(activity(config, h * HOUR_MS + d * DAY_MS) for h in range(24) for d in range(7))
    # Transactions per millisecond over all cards at the busiest hour: candidate times
    # come from that rate and are kept with probability activity / peak (thinning).
    per_ms = config.cards * config.txns_per_card_day / DAY_MS
    now = config.start_ms
    end = config.end_ms
    while True:
        now += max(1, round(rng.expovariate(per_ms * peak)))
        while next_episode < len(episodes) and episodes[next_episode][0] <= min(now, end):
            start, scenario = episodes[next_episode]
            gen.fraud(scenario, start, next_episode)
            next_episode += 1
        while gen.pending and gen.pending[0].emit_at_ms <= min(now, end):
            event = heapq.heappop(gen.pending).event
            if event.event_time_ms < end:
                yield event
        if now >= end:
            return
        if rng.random() * peak < activity(config, now):
            gen.legit(now)


def _transaction(
    event_id: str,
    card_id: str,
    merchant_id: str,
    amount: float,
    t: int,
    *,
    country: str,
    channel: str,
    device: str | None,
    fraud: bool,
    scenario: Scenario | None = None,
) -> SimEvent:
    payload: dict[str, Any] = {
        "event_id": event_id,
        "card_id": card_id,
        "merchant_id": merchant_id,
        "amount": round(min(amount, 1e6), 2),
        "currency": CURRENCIES.get(country, "EUR"),
        "event_time": format_ms(t),
        "country": country,
        "channel": channel,
    }
    if device is not None:
        payload["device_id"] = device
    return SimEvent("transaction", card_id, payload, fraud, t, scenario)
