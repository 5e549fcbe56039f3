"""The golden inputs: 212,453 seeded records in three transaction and two chargeback partitions.

Simulated traffic (:mod:`models.simulator`, about 5.4 h of event time) laid
out as Kafka holds it: transactions keyed by card, chargebacks by merchant,
each partition's records at consecutive offsets with the event time as their
Kafka timestamp. Mixed in, at seeded places, are records that exercise every
rule of the decoder and the windows:

- rejected at decode: broken and non-UTF-8 JSON, a missing value, a key named
  twice, contract violations (transactions and chargebacks), oversize values,
  event times too far ahead of the watermark or of the clock, a record whose
  dead letter must be cut (``truncated``), binary keys (base64);
- rejected later: duplicate ``event_id`` on a card, chargebacks into closed
  merchant windows, and two offsets listed in a quarantine ledger;
- accepted: late transactions (scored with ``late: true``), transactions
  within the allowed lateness, a far-but-allowed outlier, the same
  ``event_id`` on another card, integer and offset event times, unknown
  fields, no key, integer amounts.

Everything is a pure function of the constants below and of the simulator.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.simulator import DEFAULT_START_MS, SimConfig, simulate
from schemas.timefmt import format_ms

TXN_TOPIC, CB_TOPIC = "transactions", "chargebacks"
TXN_PARTITIONS, CB_PARTITIONS = 3, 2
# Input partitions in a fixed order; a record's identity is its index here and its offset.
SOURCES = (
    *(f"{TXN_TOPIC}#{p}" for p in range(TXN_PARTITIONS)),
    *(f"{CB_TOPIC}#{p}" for p in range(CB_PARTITIONS)),
)
SIM = SimConfig(seed=23, cards=4_000, merchants=150, events_per_second=10.0)
TRANSACTIONS = 195_000
INJECT_SEED = 2323
# Of simulated transactions and of chargebacks, the share followed by one injected record.
INJECT_SHARE = 0.012
CB_INJECT_SHARE = 0.05
# The flow's clock: just after the last simulated event time (195,000 transactions at
# 10 a second of event time), so the clock's far-future bound matters at the end only.
NOW_MS = DEFAULT_START_MS + 19_600_000
HOUR_MS = 3_600_000
OVERSIZE = 70_000  # over the default max_message_bytes (64 KiB)
HUGE_KEY = 1_100_000  # over the producer's message limit: the dead letter is cut
# (partition of transactions, offset) of records a quarantine ledger names; both
# offsets lie well inside their partitions.
QUARANTINED = ((0, 1_000), (2, 30_000))


@dataclass(slots=True)
class Record:
    """One input record as Kafka holds it."""

    source: str
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass
class GoldenInputs:
    """The records per input partition, and what was injected where."""

    parts: dict[str, list[Record]]
    injected: Counter[str] = field(default_factory=Counter)

    def digest(self) -> str:
        """A hex digest of every record, to tell a fixture made from other inputs."""
        h = hashlib.blake2b(digest_size=16)
        for source in SOURCES:
            for r in self.parts[source]:
                h.update(repr((source, r.offset, r.key, r.value, r.timestamp_ms)).encode())
        return h.hexdigest()

    def count(self) -> int:
        """Records in all partitions."""
        return sum(len(records) for records in self.parts.values())


def _dumps(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


class _Builder:
    def __init__(self) -> None:
        self.parts: dict[str, list[Record]] = {s: [] for s in SOURCES}
        self.injected: Counter[str] = Counter()
        self.rng = random.Random(INJECT_SEED)
        # Recent accepted transactions per partition: (key, payload), for duplicates and
        # late copies; and the last Kafka timestamp per partition.
        self.recent: dict[str, list[tuple[bytes, dict[str, Any]]]] = {s: [] for s in SOURCES}
        self.last_ts: dict[str, int] = dict.fromkeys(SOURCES, SIM.start_ms)
        self.serial = 0

    def add(self, source: str, key: bytes | None, value: bytes | None, ts: int) -> None:
        records = self.parts[source]
        records.append(Record(source, len(records), key, value, ts))

    def txn(self, payload: dict[str, Any], ts: int, key: str | None = None) -> None:
        card = payload["card_id"]
        source = f"{TXN_TOPIC}#{zlib.crc32(card.encode()) % TXN_PARTITIONS}"
        k = (key if key is not None else card).encode()
        self.add(source, k, _dumps(payload), ts)
        self.last_ts[source] = max(self.last_ts[source], ts)
        recent = self.recent[source]
        recent.append((k, payload))
        if len(recent) > 500:
            del recent[:250]

    def cb(self, payload: dict[str, Any], ts: int) -> None:
        merchant = payload["merchant_id"]
        source = f"{CB_TOPIC}#{zlib.crc32(merchant.encode()) % CB_PARTITIONS}"
        self.add(source, merchant.encode(), _dumps(payload), ts)
        self.last_ts[source] = max(self.last_ts[source], ts)

    def fresh_id(self, what: str) -> str:
        self.serial += 1
        return f"golden-{what}-{self.serial}"


def _txn_injection(b: _Builder, base: dict[str, Any]) -> str:
    """Add one record derived from the simulated transaction ``base``; return its kind."""
    rng = b.rng
    source = f"{TXN_TOPIC}#{zlib.crc32(base['card_id'].encode()) % TXN_PARTITIONS}"
    now = b.last_ts[source]
    key = base["card_id"].encode()
    p = dict(base, event_id=b.fresh_id("tx"))
    raw = _dumps(p)

    def bad(value: bytes | None, k: bytes | None = key) -> None:
        b.add(source, k, value, now)

    kinds: list[tuple[str, Callable[[], None]]] = [
        ("json-truncated", lambda: bad(raw[: len(raw) // 2])),
        ("json-not-utf8", lambda: bad(b"\xff\xfe" + raw[2:])),
        ("json-no-value", lambda: bad(None)),
        ("json-array", lambda: bad(b"[" + raw + b"]")),
        ("json-empty", lambda: bad(b"")),
        ("json-duplicate-key", lambda: bad(raw[:-1] + b',"amount":1.5}')),
        ("json-duplicate-key-spaced", lambda: bad(raw[:-1] + b', "card_id" : "c-x"}')),
        ("schema-negative-amount", lambda: bad(_dumps({**p, "amount": -5}))),
        ("schema-string-amount", lambda: bad(_dumps({**p, "amount": str(p["amount"])}))),
        ("schema-inf-amount", lambda: bad(raw.replace(b'"amount":', b'"amount":1e999,"x":'))),
        ("schema-no-offset", lambda: bad(_dumps({**p, "event_time": p["event_time"][:-1]}))),
        ("schema-bad-time", lambda: bad(_dumps({**p, "event_time": "yesterday"}))),
        ("schema-missing", lambda: bad(_dumps({k: v for k, v in p.items() if k != "merchant_id"}))),
        ("schema-currency", lambda: bad(_dumps({**p, "currency": "eur"}))),
        ("schema-long-id", lambda: bad(_dumps({**p, "card_id": "c" * 129}))),
        ("schema-empty-id", lambda: bad(_dumps({**p, "event_id": ""}))),
        ("schema-many", lambda: bad(_dumps({**p, "amount": None, "currency": 7, "event_id": []}))),
        ("oversize", lambda: bad(raw[:-1] + b',"note":"' + b"x" * OVERSIZE + b'"}')),
        ("oversize-binary", lambda: bad(rng.randbytes(OVERSIZE))),
        ("truncated", lambda: bad(b"{" + b"k" * 1000, b"K" * HUGE_KEY)),
        ("key-binary", lambda: bad(b"{not json", b"\xff\x00" + key)),
        (
            "future-watermark",
            lambda: b.add(
                source, key, _dumps({**p, "event_time": format_ms(now + 2 * HOUR_MS)}), now
            ),
        ),
        (
            "future-clock",
            lambda: b.add(
                source,
                key,
                _dumps({**p, "event_time": format_ms(NOW_MS + 2 * HOUR_MS)}),
                NOW_MS + 2 * HOUR_MS,
            ),
        ),
        ("outlier-allowed", lambda: b.txn({**p, "event_time": format_ms(now + 10 * 60_000)}, now)),
        ("late", lambda: b.txn({**p, "event_time": format_ms(now - 3 * 60_000)}, now)),
        ("late-far", lambda: b.txn({**p, "event_time": format_ms(now - 2 * HOUR_MS)}, now)),
        ("within-lateness", lambda: b.txn({**p, "event_time": format_ms(now - 40_000)}, now)),
        ("int-time", lambda: b.txn({**p, "event_time": now - 1_000}, now)),
        ("offset-time", lambda: b.txn({**p, "event_time": _with_offset(now - 500)}, now)),
        ("micro-time", lambda: b.txn({**p, "event_time": format_ms(now)[:-1] + "456Z"}, now)),
        ("extra-fields", lambda: b.txn({**p, "note": "gift", "tags": [1, {"a": None}]}, now)),
        ("no-optional", lambda: b.txn({k: p[k] for k in _REQUIRED}, now)),
        ("int-amount", lambda: b.txn({**p, "amount": int(p["amount"]) + 1}, now)),
        ("zero-amount", lambda: b.txn({**p, "amount": 0.0}, now)),
        ("unicode-merchant", lambda: b.txn({**p, "merchant_id": "m-caf\u00e9-\u20ac"}, now)),
        ("no-key", lambda: _no_key(b, p, now)),
        ("same-id-other-card", lambda: _other_card(b, p, now)),
        ("duplicate-exact", lambda: _duplicate(b, source, now, change=False)),
        ("duplicate-changed", lambda: _duplicate(b, source, now, change=True)),
    ]
    # Fewer of some: records of a megabyte or so are costly to build and to cut, and two
    # accepted outliers close together move the watermark (and make what follows late).
    weights = [0.1 if name in _RARE else 1.0 for name, _ in kinds]
    name, make = rng.choices(kinds, weights)[0]
    make()
    return name


_RARE = frozenset({"oversize", "oversize-binary", "truncated", "outlier-allowed"})
_REQUIRED = ("event_id", "card_id", "merchant_id", "amount", "currency", "event_time")


def _with_offset(ms: int) -> str:
    # The same instant, written with a +02:00 offset.
    local = format_ms(ms + 2 * HOUR_MS)
    return local[:-1] + "+02:00"


def _no_key(b: _Builder, p: dict[str, Any], now: int) -> None:
    source = f"{TXN_TOPIC}#{zlib.crc32(p['card_id'].encode()) % TXN_PARTITIONS}"
    b.add(source, None, _dumps(p), now)


def _other_card(b: _Builder, p: dict[str, Any], now: int) -> None:
    # An event_id accepted on one card, then sent for another: two transactions.
    b.txn(p, now)
    other = f"c-{(int(p['card_id'][2:]) + 1) % SIM.cards}"
    b.txn({**p, "card_id": other}, now)


def _duplicate(b: _Builder, source: str, now: int, *, change: bool) -> None:
    recent = b.recent[source]
    if not recent:
        return
    key, payload = recent[b.rng.randrange(len(recent))]
    if change:
        payload = {**payload, "amount": round(payload["amount"] + 1.25, 2)}
    b.add(source, key, _dumps(payload), now)


def _cb_injection(b: _Builder, base: dict[str, Any], ts: int) -> str:
    """Add one record derived from the simulated chargeback ``base``; return its kind."""
    rng = b.rng
    source = f"{CB_TOPIC}#{zlib.crc32(base['merchant_id'].encode()) % CB_PARTITIONS}"
    now = b.last_ts[source]
    p = dict(base, event_id=b.fresh_id("cb"))
    key = p["merchant_id"].encode()
    kinds: list[tuple[str, Callable[[], None]]] = [
        ("cb-schema", lambda: b.add(source, key, _dumps({**p, "txn_event_id": None}), now)),
        ("cb-json", lambda: b.add(source, key, _dumps(p)[:-3], now)),
        # Hours behind: its window closed whichever partitions the merchant watermark waits for.
        ("cb-closed-window", lambda: b.cb({**p, "event_time": format_ms(ts - 6 * HOUR_MS)}, now)),
        ("cb-unknown-txn", lambda: b.cb({**p, "txn_event_id": "tx-nowhere"}, now)),
        ("cb-repeated", lambda: _twice(b.cb, p, now)),
        ("cb-int-time", lambda: b.cb({**p, "event_time": ts}, now)),
    ]
    name, make = kinds[rng.randrange(len(kinds))]
    make()
    return name


def _twice(add: Callable[[dict[str, Any], int], None], payload: dict[str, Any], ts: int) -> None:
    add(payload, ts)
    add(payload, ts)


def generate() -> GoldenInputs:
    """The golden inputs; the same records every call."""
    b = _Builder()
    for event in simulate(SIM, TRANSACTIONS):
        if event.kind == "transaction":
            b.txn(event.payload, event.event_time_ms)
            if b.rng.random() < INJECT_SHARE:
                b.injected[_txn_injection(b, event.payload)] += 1
        else:
            b.cb(event.payload, event.event_time_ms)
            if b.rng.random() < CB_INJECT_SHARE:
                b.injected[_cb_injection(b, event.payload, event.event_time_ms)] += 1
    return GoldenInputs(b.parts, b.injected)


def quarantine_ledger() -> dict[str, dict[str, Any]]:
    """The quarantine ledger (``<state dir>/quarantine.json``) the golden run starts with."""
    return {
        f"{TXN_TOPIC}#{p}@{offset}": {
            "crashes": 2,
            "step": "windows-cards",
            "error": f"RuntimeError: golden crash {i}",
        }
        for i, (p, offset) in enumerate(QUARANTINED)
    }
