"""The merchant engine's compiled pass against a step-by-step reference of the window rules.

The reference applies each step in order, as the rules read (``docs/semantics.md``):
a row takes the watermark its sender reports, reads its previous window (zero where
none or purged as of the row), and counts in its own window unless late; a
chargeback counts in its window unless closed; a tick moves the watermark. The
engine numbers windows and runs rows between chargebacks and ticks in a kernel;
both must give the same features, dead letters, stored windows, close timers (in
the order the windows were created) and watermark.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from operators.columns import BLOCK_COLUMNS, MERCHANT_COLUMN
from operators.merchant_windows import (
    RETAIN_MS,
    WINDOW_MS,
    MerchantConfig,
    MerchantWindowEngine,
    amount_sum,
    exact_units,
    pack_window,
)
from operators.messages import CbEnvelope, FeatureBlock, OutMessage, RawRecord, Tick
from operators.watermarks import NO_WATERMARK, MinWatermark, TimeConfig
from schemas.records import Chargeback, Transaction
from state import keys
from state.memory import MemoryStore
from state.store import Ranges
from tests.unit.operators.blocks import TxnRecord, columns_of

T0 = 1_795_392_000_000 - 1_795_392_000_000 % WINDOW_MS
LATENESS = TimeConfig().allowed_lateness_ms
CLOSE = keys.shard_namespace(keys.CLOSE_TIMER, "")
Step = tuple[str, int | CbEnvelope | Tick]


class RecordingStore(MemoryStore):
    """A memory store that keeps each write's keys in the order given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[bytes]] = []

    def write(self, changes: Mapping[bytes, bytes | None], *, cleared: Ranges = ()) -> None:
        self.writes.append(list(changes))
        super().write(changes, cleared=cleared)


@dataclass
class Reference:
    """The window rules, a step at a time: windows by (merchant, start)."""

    windows: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    watermark: MinWatermark = field(default_factory=MinWatermark)

    def process(
        self, rows: list[TxnRecord], marks: list[int], steps: Sequence[Step]
    ) -> tuple[list[tuple[float, float]], list[str], list[bytes]]:
        """Each row's (count, rate), the dead letters' reasons, the close timers created."""
        features: list[tuple[float, float]] = []
        dead: list[str] = []
        timers: list[bytes] = []
        wm = self.watermark

        def count(merchant: str, start: int, txns: int, units: int, cbs: int) -> None:
            window = self.windows.get((merchant, start))
            if window is None:
                window = self.windows[merchant, start] = [0, 0, 0]
                timers.append(keys.timer_key(CLOSE, start + WINDOW_MS, merchant))
            window[0] += txns
            window[1] += units
            window[2] += cbs

        for origin, item in steps:
            if isinstance(item, Tick):
                wm.update(origin, item.watermark)
            elif isinstance(item, CbEnvelope):
                wm.update(item.raw.source, item.watermark)
                now = wm.current()
                start = item.cb.event_time - item.cb.event_time % WINDOW_MS
                if now != NO_WATERMARK and start + WINDOW_MS + LATENESS <= now:
                    dead.append(f"window of {start} closed")
                else:
                    count(item.cb.merchant_id, start, 0, 0, 1)
            else:
                rec = rows[item]
                wm.update(origin, marks[item])
                now = wm.current()
                txn = rec.txn
                start = txn.event_time - txn.event_time % WINDOW_MS
                prev = self.windows.get((txn.merchant_id, start - WINDOW_MS))
                purged = now != NO_WATERMARK and start <= now - LATENESS - RETAIN_MS
                if prev is None or purged:
                    features.append((0.0, 0.0))
                else:
                    features.append((float(prev[0]), prev[2] / max(1, prev[0])))
                if not rec.late:
                    count(txn.merchant_id, start, 1, exact_units(txn.amount), 0)
        return features, dead, timers

    def stored(self) -> dict[bytes, bytes]:
        """The windows as the engine stores them."""
        return {
            keys.window_key(m, s): pack_window((w[0], w[1], w[2]))
            for (m, s), w in self.windows.items()
        }


def _dead(env: CbEnvelope, error: str) -> OutMessage:
    start = env.cb.event_time - env.cb.event_time % WINDOW_MS
    return OutMessage("dead", None, f"window of {start} closed".encode(), "dead", 0)


@dataclass
class Batch:
    rows: list[TxnRecord]
    marks: list[int]
    steps: list[Step]

    def block(self) -> FeatureBlock:
        features = np.full((len(self.rows), len(BLOCK_COLUMNS)), np.nan)
        marks = np.array(self.marks, np.int64)
        return FeatureBlock(columns_of(self.rows), features, marks, [])


class Builder:
    """A batch's steps, written out in order."""

    def __init__(self) -> None:
        self.rows: list[TxnRecord] = []
        self.marks: list[int] = []
        self.steps: list[Step] = []
        self._n = 0

    def txn(
        self,
        t: int,
        *,
        merchant: str = "m1",
        amount: float = 1.0,
        late: bool = False,
        mark: int = NO_WATERMARK,
        origin: str = "c0",
    ) -> Builder:
        self._n += 1
        txn = Transaction(
            event_id=f"e{self._n}", card_id="c1", merchant_id=merchant, amount=amount,
            currency="EUR", event_time=t,
        )  # fmt: skip
        raw = RawRecord("transactions", 0, self._n, None, b"{}", t)
        self.steps.append((origin, len(self.rows)))
        self.rows.append(TxnRecord(txn, raw, late, mark))
        self.marks.append(mark)
        return self

    def cb(self, t: int, *, merchant: str = "m1", mark: int = NO_WATERMARK) -> Builder:
        self._n += 1
        cb = Chargeback(
            event_id=f"cb{self._n}", txn_event_id="e", merchant_id=merchant, event_time=t
        )
        raw = RawRecord("chargebacks", 0, self._n, None, b"{}", t)
        self.steps.append(("cb", CbEnvelope(cb, raw, mark)))
        return self

    def tick(self, mark: int, *, origin: str = "c0") -> Builder:
        self.steps.append((origin, Tick(mark)))
        return self

    def build(self) -> Batch:
        return Batch(self.rows, self.marks, self.steps)


def _check(batches: list[Batch], *, cache: int = 0) -> list[list[tuple[float, float]]]:
    """Every batch through the engine and the reference: the same in every respect."""
    store = RecordingStore()
    config = MerchantConfig(time=TimeConfig(), aggregates_topic="agg", cache_windows=cache)
    engine = MerchantWindowEngine(config, store, _dead)
    wm = MinWatermark()
    ref = Reference()
    features = []
    for batch in batches:
        block = batch.block()
        written = len(store.writes)
        dead = engine.process(block, batch.steps, wm)
        want, want_dead, want_timers = ref.process(batch.rows, batch.marks, batch.steps)
        got = block.features[:, MERCHANT_COLUMN : MERCHANT_COLUMN + 2].tolist()
        assert [tuple(g) for g in got] == want
        assert [d.value.decode() for d in dead if d.value] == want_dead
        timers = [k for w in store.writes[written:] for k in w if k.startswith(CLOSE)]
        assert timers == want_timers
        # The inputs' watermarks and the operator's; how far ``current()`` was last
        # asked (the snapshot's third part) may lag and is no rule.
        assert wm.snapshot()[:2] == ref.watermark.snapshot()[:2]
        assert wm.current() == ref.watermark.current()
        engine.flush()
        stored = {k: v for k, v in store.scan(keys.WINDOW, keys.WINDOW + b"\xff") if v}
        assert stored == ref.stored()
        features.append(want)
    return features


def test_a_window_read_before_and_after_rows_count_in_it() -> None:
    b = Builder()
    b.txn(T0 + 1).txn(T0 + 2)  # window 1
    b.txn(T0 + WINDOW_MS + 1)  # reads window 1: two rows so far
    b.txn(T0 + 3, late=True)  # late: not counted
    b.txn(T0 + 4).txn(T0 + 5)
    b.txn(T0 + WINDOW_MS + 2)  # four now
    (features,) = _check([b.build()])
    assert [f[0] for f in features] == [0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 4.0]


def test_chargebacks_and_ticks_mid_batch_apply_at_their_place() -> None:
    b = Builder()
    b.txn(T0 + 1, mark=T0).txn(T0 + WINDOW_MS, mark=T0)
    b.cb(T0 + 7, mark=T0)  # counts in window 1 from here on
    b.txn(T0 + WINDOW_MS + 1, mark=T0)
    b.tick(T0 + 2 * WINDOW_MS, origin="c0")
    b.cb(T0 + 8, merchant="m2", mark=T0 + WINDOW_MS)  # a window only a chargeback created
    b.txn(T0 + WINDOW_MS + 5, merchant="m2", mark=T0 + 2 * WINDOW_MS)
    b.cb(T0 - 10 * WINDOW_MS, mark=T0 + 2 * WINDOW_MS)  # closed: a dead letter
    b.txn(T0 + WINDOW_MS + 2, mark=T0 + 2 * WINDOW_MS)
    (features,) = _check([b.build()])
    assert features == [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 1.0)]


def test_a_previous_window_is_purged_from_the_row_whose_watermark_reaches_it() -> None:
    # The horizon, wm - lateness - RETAIN_MS, lands on the window start of the late rows.
    late_start = T0 + 3 * WINDOW_MS
    wm = late_start + LATENESS + RETAIN_MS
    old = Builder()
    old.txn(late_start - WINDOW_MS + 1).txn(T0 + 3 * WINDOW_MS + WINDOW_MS + 1)
    b = Builder()
    b.txn(late_start + 1, late=True, mark=wm - 1)  # horizon just below: still read
    b.txn(late_start + WINDOW_MS + 1, late=True, mark=wm - 1)
    b.txn(late_start + 2, late=True, mark=wm)  # on the horizon: purged
    b.txn(late_start + WINDOW_MS + 2, late=True, mark=wm)  # a window later: still read
    b.tick(wm + WINDOW_MS)
    b.txn(late_start + WINDOW_MS + 3, late=True, mark=wm)  # the tick's watermark stands
    _, features = _check([old.build(), b.build()])
    assert features == [(1.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)]


def test_new_windows_get_close_timers_in_the_order_first_counted() -> None:
    b = Builder()
    b.txn(T0 + 1, merchant="m3", late=True)  # late: creates nothing
    b.txn(T0 + 2 * WINDOW_MS, merchant="m2")
    b.cb(T0, merchant="m9")
    b.txn(T0 + 1, merchant="m3")
    b.txn(T0 + 5, merchant="m1")
    _check([b.build()])


@pytest.mark.parametrize("cache", [0, 3, 1000])
@pytest.mark.parametrize("seed", range(12))
def test_random_batches_match_the_reference(seed: int, cache: int) -> None:
    rng = random.Random(seed)
    batches = []
    mark = T0
    for _ in range(6):
        b = Builder()
        for _ in range(rng.randrange(0, 60)):
            r = rng.random()
            if r < 0.06:
                b.cb(mark + rng.randrange(-8, 2) * WINDOW_MS, merchant=f"m{rng.randrange(4)}",
                     mark=mark)  # fmt: skip
            elif r < 0.1:
                mark += rng.randrange(3) * WINDOW_MS
                b.tick(mark, origin=rng.choice(("c0", "c1")))
            else:
                if rng.random() < 0.2:
                    mark += rng.randrange(2 * WINDOW_MS)
                if rng.random() < 0.03:
                    mark += RETAIN_MS  # far ahead: some previous windows purged
                late = rng.random() < 0.15
                back = rng.randrange(-3 * WINDOW_MS, WINDOW_MS)
                t = mark + back - (RETAIN_MS + LATENESS if late and rng.random() < 0.5 else 0)
                amount = rng.choice((0.0, 0.1, 0.2, 0.3, 12.34, 1e9, 5e-324, 1e-310, 7.5))
                b.txn(max(t, 0), merchant=f"m{rng.randrange(4)}", amount=amount, late=late,
                      mark=mark, origin=rng.choice(("c0", "c1")))  # fmt: skip
        batches.append(b.build())
    _check(batches, cache=cache)


@pytest.mark.parametrize(
    "amounts",
    [
        [0.1, 0.2, 0.3],
        [1e9, 1e-3, 0.07, 99.99, 0.0],
        [5e-324, 1e-310, 2.2250738585072014e-308, 1.0],  # subnormal: the slower exact path
        [0.1] * 3000,
    ],
)
def test_window_sums_are_exact(amounts: list[float]) -> None:
    b = Builder()
    for i, amount in enumerate(amounts):
        b.txn(T0 + i % WINDOW_MS, amount=amount, merchant=f"m{i % 2}")
    _check([b.build()])
    store = MemoryStore()
    config = MerchantConfig(time=TimeConfig(), aggregates_topic="agg")
    engine = MerchantWindowEngine(config, store, _dead)
    batch = b.build()
    engine.process(batch.block(), batch.steps, MinWatermark())
    aggregates = engine.advance(T0 + WINDOW_MS + LATENESS)
    sums = {a.key: json.loads(a.value or b"")["amount_sum"] for a in aggregates}
    for m in ("m0", "m1"):
        mine = amounts[int(m[1]) :: 2]
        if mine:
            assert sums[m.encode()] == math.fsum(mine)
            assert amount_sum(sum(map(exact_units, mine))) == math.fsum(mine)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_an_amount_without_exact_units_blames_its_record(bad: float) -> None:
    # The contract keeps such amounts out at decode; the engine still names the record.
    batch = Builder().txn(T0 + 1).txn(T0 + 2, late=True).txn(T0 + 3).txn(T0 + 4).build()
    block = batch.block()
    block.txns.amount[1] = block.txns.amount[3] = bad
    engine = MerchantWindowEngine(
        MerchantConfig(time=TimeConfig(), aggregates_topic="agg"), MemoryStore(), _dead
    )
    with pytest.raises((ValueError, OverflowError)):
        engine.process(block, batch.steps, MinWatermark())
    assert engine.at is batch.rows[3].raw  # the late one is not counted, so not converted
