"""Offline replay of a record log through the same operators the live flow uses, in one process.

Used by training (features without a second implementation), by the parity and
property tests, and by anyone who wants to see what the flow would compute for
a log. Records are processed strictly in the given order, ``batch_size`` at a
time; results do not depend on the batch size. With ``flush``, every window
still open at the end is closed as if event time had moved on for good.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from flows.testing import ReplayRecord
from operators.card_features import CardConfig, CardFeatureEngine
from operators.decode import DeadLetters, DecodeConfig, PartitionDecoder
from operators.merchant_windows import MerchantConfig, MerchantWindowEngine
from operators.messages import CbEnvelope, Featured, OutMessage, RawRecord, Tick, TxnEnvelope
from operators.watermarks import MinWatermark, TimeConfig
from state.memory import MemoryStore
from state.store import StateStore

TOPICS = {"transaction": "transactions", "chargeback": "chargebacks"}
FLUSH_WATERMARK = 2**62
_CARDS = "cards"


@dataclass(frozen=True)
class FeatureRow:
    """What the flow would score for one transaction."""

    event_id: str
    card_id: str
    merchant_id: str
    event_time: int
    late: bool
    features: dict[str, float]


@dataclass(frozen=True)
class ReplayResult:
    """Scored rows in processing order; dead letters in input order; aggregates as emitted."""

    rows: list[FeatureRow]
    dead_letters: list[dict[str, Any]]
    window_aggregates: list[dict[str, Any]]
    featured: list[Featured]  # the rows as the scoring operator receives them


class _Pipeline:
    """The flow's operators for a single worker, wired in processing order."""

    def __init__(
        self, time: TimeConfig, store: StateStore, card_cache: int, merchant_cache: int
    ) -> None:
        self._time = time
        self._decode = DecodeConfig(
            dead_letter_topic="dead-letters", max_message_bytes=65536, time=time
        )
        self._decoders: dict[str, PartitionDecoder] = {}
        # An offline replay stamps dead letters with time 0: its outputs depend on the log alone.
        self._dead_letters = DeadLetters(self._decode.dead_letter_topic)
        self._cards = CardFeatureEngine(
            CardConfig(time=time, cache_cards=card_cache), store, self._txn_dead
        )
        self._card_wm = MinWatermark()
        self._merchants = MerchantWindowEngine(
            MerchantConfig(
                time=time, aggregates_topic="window-aggregates", cache_windows=merchant_cache
            ),
            store,
            self._cb_dead,
        )
        self._merchant_wm = MinWatermark()

    def run(
        self, chunk: list[ReplayRecord]
    ) -> tuple[list[Featured], list[OutMessage], list[OutMessage]]:
        dead: list[OutMessage] = []
        decoded: list[TxnEnvelope | CbEnvelope] = []
        for rec in chunk:
            raw = RawRecord(
                TOPICS[rec.kind], rec.partition, rec.offset, rec.key, rec.value, rec.timestamp_ms
            )
            batch = self._decoder(rec.kind, raw).decode([raw])
            decoded.extend(batch.txns)
            decoded.extend(batch.chargebacks)
            dead.extend(batch.dead)
        txns = [d for d in decoded if isinstance(d, TxnEnvelope)]
        card_out, card_dead = self._cards.process(txns, self._card_wm)
        dead.extend(card_dead)
        card_items = iter(card_out)
        ordered: list[Featured | CbEnvelope | Tick] = [
            next(card_items) if isinstance(d, TxnEnvelope) else d for d in decoded
        ]
        featured, cb_dead = self._merchants.process(ordered, self._merchant_wm, _CARDS)
        dead.extend(cb_dead)
        aggregates = self._merchants.advance(self._merchant_wm.current())
        self._cards.expire(self._card_wm.current())
        return featured, dead, aggregates

    def flush(self) -> list[OutMessage]:
        return self._merchants.advance(FLUSH_WATERMARK)

    def write_back(self) -> None:
        self._cards.flush()
        self._merchants.flush()

    def _decoder(
        self, kind: Literal["transaction", "chargeback"], raw: RawRecord
    ) -> PartitionDecoder:
        dec = self._decoders.get(raw.source)
        if dec is None:
            dec = PartitionDecoder(
                self._decode,
                source=raw.source,
                kind=kind,
                resume=None,
                dead_letters=self._dead_letters,
                wall_clock=None,
            )
            self._decoders[raw.source] = dec
        return dec

    def _txn_dead(self, env: TxnEnvelope, error: str) -> OutMessage:
        return self._dead_letters(env.raw, "duplicate", error)

    def _cb_dead(self, env: CbEnvelope, error: str) -> OutMessage:
        return self._dead_letters(env.raw, "timestamp", error)


def replay(
    records: Iterable[ReplayRecord],
    *,
    time: TimeConfig | None = None,
    store: StateStore | None = None,
    batch_size: int = 1,
    flush: bool = True,
    card_cache: int = 0,
    merchant_cache: int = 0,
) -> ReplayResult:
    """Run ``records`` through decode, card features and merchant windows; collect outputs.

    ``card_cache`` and ``merchant_cache`` are the engines' cache sizes (0: write
    through); cached cards and windows are written back to ``store`` at the end.
    """
    records = list(records)
    pipeline = _Pipeline(
        time or TimeConfig(),
        store if store is not None else MemoryStore(),
        card_cache,
        merchant_cache,
    )
    position = {(TOPICS[r.kind], r.partition, r.offset): i for i, r in enumerate(records)}
    rows: list[FeatureRow] = []
    featured_all: list[Featured] = []
    dead: list[dict[str, Any]] = []
    aggregates: list[dict[str, Any]] = []
    it = iter(records)
    while chunk := list(itertools.islice(it, batch_size)):
        featured, dead_out, agg_out = pipeline.run(chunk)
        rows.extend(_row(f) for f in featured)
        featured_all.extend(featured)
        dead.extend(json.loads(m.value) for m in dead_out)
        aggregates.extend(json.loads(m.value) for m in agg_out)
    if flush:
        aggregates.extend(json.loads(m.value) for m in pipeline.flush())
    pipeline.write_back()
    dead.sort(key=lambda d: position[(d["topic"], d["partition"], d["offset"])])
    return ReplayResult(rows, dead, aggregates, featured_all)


def _row(item: Featured) -> FeatureRow:
    txn = item.env.txn
    return FeatureRow(
        event_id=txn.event_id,
        card_id=txn.card_id,
        merchant_id=txn.merchant_id,
        event_time=txn.event_time,
        late=item.env.late,
        features=item.features,
    )
