"""A brute-force reference ("oracle") for the feature, lateness and window semantics.

Written only from ``docs/contract.md`` ("Feature semantics", "Time, lateness and
order") and ``docs/semantics.md``, never from the implementation. It keeps plain
lists of everything that happened and recomputes every feature by scanning them,
so it is slow but easy to check against the text.

Scope (where the texts are unambiguous; the generators in the tests respect it):

* Partition identity is ``(kind, partition)``; the merchant watermark is the
  minimum over every partition that has a watermark (transactions and
  chargebacks), the card watermark the minimum over transaction partitions.
  A partition's watermark is its ``watermark_agreement``-th largest accepted
  event time minus the bound (that many records must agree); it takes part
  in a minimum from its first accepted record on, with no watermark (below
  every time) until then.
  Retention and closing are irreversible, so both use the largest such
  minimum reached so far.
* The first record of the whole sequence is expected to be a transaction that
  passes the far-future check, so no window can close before the transaction
  partition exists (otherwise a first transaction could land in a window the
  chargebacks alone had closed, which the texts do not cover).
* Window aggregates are given as the final set after a flush to +infinity,
  not with their emission time.

Where the text leaves a value open (a late transaction whose previous tumbling
window is deleted exactly at the boundary "watermark passes end + L + T"), the
feature is listed in ``OracleRow.ambiguous`` and should not be compared.

Readings taken literally (each is a sentence of docs/semantics.md):

* Duplicates look at retained accepted transactions (event time ``>= H``).
* Seen events are those with event time ``>= H``.
* Sessions: sessions are split over every accepted event of the card; a session
  whose end is ``>= H`` is retained whole (even its events below ``H``), one whose
  end is below ``H`` is gone.
* ``card_amount_zscore`` uses exact arithmetic, so ``std == 0`` means equal amounts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, Protocol

from operators.watermarks import TimeConfig

SECOND = 1_000
NEG = -(2**62)  # no watermark yet: below every event time
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

SESSION_GAP_MS = 30 * MINUTE  # G
TUMBLING_MS = 5 * MINUTE  # T
LONGEST_WINDOW_MS = DAY  # W

SLIDING_WINDOWS: dict[str, int] = {"1m": MINUTE, "5m": 5 * MINUTE, "1h": HOUR, "24h": DAY}

FEATURE_NAMES: tuple[str, ...] = (
    "card_count_1m",
    "card_count_5m",
    "card_count_1h",
    "card_count_24h",
    "card_amount_1m",
    "card_amount_5m",
    "card_amount_1h",
    "card_amount_24h",
    "card_distinct_merchants_1h",
    "card_seconds_since_last",
    "card_amount_zscore",
    "card_session_count",
    "card_session_seconds",
    "merchant_txn_count_prev_5m",
    "merchant_chargeback_rate_prev_5m",
)

Kind = Literal["transaction", "chargeback"]
Reason = Literal["timestamp", "duplicate"]


class RecordLike(Protocol):
    """What the oracle reads from an input record (``ReplayRecord`` fits)."""

    @property
    def kind(self) -> Kind: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes: ...
    @property
    def timestamp_ms(self) -> int: ...


@dataclass(frozen=True)
class Record:
    """A plain input record, structurally the same as ``flows.testing.ReplayRecord``."""

    kind: Kind
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


@dataclass(frozen=True)
class OracleRow:
    event_id: str
    card_id: str
    merchant_id: str
    event_time: int
    late: bool
    features: dict[str, float]
    ambiguous: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class OracleDeadLetter:
    kind: Kind
    partition: int
    offset: int
    event_id: str
    reason: Reason


@dataclass(frozen=True)
class OracleWindow:
    merchant_id: str
    window_start_ms: int
    txn_count: int
    amount_sum: float
    chargeback_count: int
    chargeback_rate: float


@dataclass(frozen=True)
class OracleResult:
    rows: list[OracleRow]
    dead_letters: list[OracleDeadLetter]
    windows: list[OracleWindow]  # sorted by (merchant_id, window_start_ms)


@dataclass(frozen=True)
class _Txn:
    event_id: str
    card_id: str
    merchant_id: str
    amount: float
    t: int


@dataclass(frozen=True)
class _Chargeback:
    merchant_id: str
    t: int


def window_start(t: int) -> int:
    """Start of the epoch-aligned tumbling window containing ``t``."""
    return (t // TUMBLING_MS) * TUMBLING_MS


def split_sessions(times: Sequence[int]) -> list[list[int]]:
    """Sort ``times`` and split where consecutive times differ by more than G."""
    sessions: list[list[int]] = []
    for t in sorted(times):
        if sessions and t - sessions[-1][-1] <= SESSION_GAP_MS:
            sessions[-1].append(t)
        else:
            sessions.append([t])
    return sessions


def zscore(amount: float, earlier: Sequence[float]) -> float:
    """``(amount - mean) / std`` (population), exact arithmetic; 0 if n < 2 or std == 0."""
    if len(earlier) < 2:
        return 0.0
    xs = [Fraction(x) for x in earlier]
    mean = sum(xs, Fraction(0)) / len(xs)
    var = sum(((x - mean) ** 2 for x in xs), Fraction(0)) / len(xs)
    if var == 0:
        return 0.0
    return float(Fraction(amount) - mean) / math.sqrt(var)


def oracle(records: Sequence[RecordLike], time: TimeConfig) -> OracleResult:
    """Replay ``records`` in order (one worker) and flush all windows at the end."""
    b = time.out_of_orderness_ms
    lateness = time.allowed_lateness_ms
    future = time.max_future_ms

    # Per partition, its largest accepted event times (as many as must agree), descending.
    agree = time.watermark_agreement
    part_top: dict[tuple[Kind, int], list[int]] = {}
    merchant_wm_reached = NEG  # largest merchant watermark so far
    card_wm_reached = NEG  # largest card watermark so far
    accepted: list[_Txn] = []  # every accepted transaction, in processing order
    counted_cbs: list[_Chargeback] = []  # every chargeback counted in a window

    rows: list[OracleRow] = []
    dead: list[OracleDeadLetter] = []

    def wm_of(top: list[int]) -> int:
        """A partition's watermark: the time ``agree`` records reached, minus the bound."""
        return NEG if len(top) < agree else top[agree - 1] - b

    for rec in records:
        payload = json.loads(rec.value)
        t = int(payload["event_time"])
        event_id = str(payload["event_id"])
        pid = (rec.kind, rec.partition)

        # 1. far future: ahead of both the partition's watermark and the record's Kafka
        # timestamp (no wall clock here: the implementation replays without one)
        top = part_top.get(pid, [])
        if t > max(rec.timestamp_ms, wm_of(top)) + future:
            dead.append(
                OracleDeadLetter(rec.kind, rec.partition, rec.offset, event_id, "timestamp")
            )
            continue
        # 2. advance the partition's largest times
        part_top[pid] = sorted([*top, t], reverse=True)[:agree]
        wm_partition = wm_of(part_top[pid])
        # A partition takes part in a minimum from its first accepted record on.
        merchant_wm = min(wm_of(x) for x in part_top.values())
        merchant_wm_reached = max(merchant_wm_reached, merchant_wm)
        txn_wms = [wm_of(x) for (kind, _), x in part_top.items() if kind == "transaction"]
        if txn_wms:
            card_wm_reached = max(card_wm_reached, min(txn_wms))

        if rec.kind == "chargeback":
            merchant_id = str(payload["merchant_id"])
            end = window_start(t) + TUMBLING_MS
            if merchant_wm_reached >= end + lateness:  # the window has closed
                dead.append(
                    OracleDeadLetter(rec.kind, rec.partition, rec.offset, event_id, "timestamp")
                )
            else:
                counted_cbs.append(_Chargeback(merchant_id, t))
            continue

        card_id = str(payload["card_id"])
        merchant_id = str(payload["merchant_id"])
        amount = float(payload["amount"])
        e = _Txn(event_id, card_id, merchant_id, amount, t)

        # 3. late
        late = t < wm_partition - lateness

        # retention horizon H (semantics.md "Card features")
        horizon = card_wm_reached - lateness - LONGEST_WINDOW_MS
        # duplicates: a retained accepted transaction, same card and id, |t1 - t2| <= 24 h
        if any(
            a.card_id == card_id and a.event_id == event_id and abs(a.t - t) <= DAY
            for a in accepted
            if a.t >= horizon
        ):
            dead.append(
                OracleDeadLetter(rec.kind, rec.partition, rec.offset, event_id, "duplicate")
            )
            continue

        features: dict[str, float] = {}
        ambiguous: set[str] = set()

        # card features: earlier seen = accepted events of the card, retained (>= H)
        earlier = [a for a in accepted if a.card_id == card_id and a.t >= horizon]
        seen = [*earlier, e]
        for name, width in SLIDING_WINDOWS.items():
            inside = [s for s in seen if t - width < s.t <= t]
            features[f"card_count_{name}"] = float(len(inside))
            features[f"card_amount_{name}"] = math.fsum(s.amount for s in inside)
        features["card_distinct_merchants_1h"] = float(
            len({s.merchant_id for s in seen if t - HOUR < s.t <= t})
        )
        before = [s.t for s in earlier if s.t <= t]
        features["card_seconds_since_last"] = (t - max(before)) / 1000 if before else -1.0
        features["card_amount_zscore"] = zscore(
            amount, [s.amount for s in earlier if t - DAY < s.t <= t]
        )

        # sessions: every event of a retained session (its end >= H), plus e
        card_history = sorted(a.t for a in accepted if a.card_id == card_id)
        session_times = [x for s in split_sessions(card_history) if s[-1] >= horizon for x in s]
        mine = next(s for s in split_sessions([*session_times, t]) if s[0] <= t <= s[-1])
        features["card_session_count"] = float(len(mine))
        features["card_session_seconds"] = (mine[-1] - mine[0]) / 1000

        # merchant features: the window just before the one containing t
        prev_end = window_start(t)
        prev_start = prev_end - TUMBLING_MS
        deleted_at = prev_end + lateness + TUMBLING_MS + LONGEST_WINDOW_MS
        readable = merchant_wm_reached < deleted_at  # "passes" read as ">="
        if merchant_wm_reached == deleted_at:
            ambiguous |= {"merchant_txn_count_prev_5m", "merchant_chargeback_rate_prev_5m"}
        if readable:
            n_txn = sum(
                1 for a in accepted if a.merchant_id == merchant_id and prev_start <= a.t < prev_end
            )
            n_cb = sum(
                1
                for c in counted_cbs
                if c.merchant_id == merchant_id and prev_start <= c.t < prev_end
            )
        else:
            n_txn = n_cb = 0
        features["merchant_txn_count_prev_5m"] = float(n_txn)
        features["merchant_chargeback_rate_prev_5m"] = n_cb / max(1, n_txn)

        rows.append(
            OracleRow(event_id, card_id, merchant_id, t, late, features, frozenset(ambiguous))
        )
        if not late:
            accepted.append(e)

    # flush: every window with activity emits once
    keys = sorted(
        {(a.merchant_id, window_start(a.t)) for a in accepted}
        | {(c.merchant_id, window_start(c.t)) for c in counted_cbs}
    )
    windows: list[OracleWindow] = []
    for merchant_id, start in keys:
        txns = [a for a in accepted if a.merchant_id == merchant_id and window_start(a.t) == start]
        n_cb = sum(
            1 for c in counted_cbs if c.merchant_id == merchant_id and window_start(c.t) == start
        )
        windows.append(
            OracleWindow(
                merchant_id=merchant_id,
                window_start_ms=start,
                txn_count=len(txns),
                amount_sum=math.fsum(a.amount for a in txns),
                chargeback_count=n_cb,
                chargeback_rate=n_cb / max(1, len(txns)),
            )
        )
    return OracleResult(rows, dead, windows)
