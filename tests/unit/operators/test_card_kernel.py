"""The numba card kernel against the pure-Python engine it replaced (``card_reference.py``).

Sums are checked against ``math.fsum`` bit for bit; whole engines are run side
by side over randomized cards (ties on time, equal, huge and tiny amounts, late
events, duplicates, sessions that merge across gaps, more than 32 merchants an
hour, expiry) and must give the same features (same bits, same key order), the
same dead letters and the same stored state.
"""

from __future__ import annotations

import math
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pytest

import operators.card_features as card_features
from operators.card_features import CardConfig, CardFeatureEngine
from operators.card_kernel import OUTPUT, PARTIALS, fsum_range
from operators.messages import FeatureBlock, OutMessage, RawRecord, Tick
from operators.numba_cache import jit
from operators.watermarks import NO_WATERMARK, MinWatermark, TimeConfig
from schemas.records import Transaction
from state import keys
from state.memory import MemoryStore
from tests.unit.operators.blocks import TxnRecord, columns_of
from tests.unit.operators.card_reference import Featured, ReferenceCardEngine

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_795_392_000_000
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# Steps between a card's events, clustered on every edge the features have.
STEPS = (
    0,
    1,
    MINUTE - 1,
    MINUTE,
    MINUTE + 1,
    5 * MINUTE,
    5 * MINUTE + 1,
    30 * MINUTE,
    30 * MINUTE + 1,
    HOUR,
    HOUR + 1,
    DAY - 1,
    DAY,
    DAY + 1,
    DAY + 2 * MINUTE,
)
AMOUNTS = (0.0, -0.0, 0.1, 0.2, 0.3, 1.0, 12.5, 1e9, 999_999_999.99, 5e-324, 1e-300, 2.5e-16)


def _bits(values: list[float]) -> list[str]:
    return [v.hex() for v in values]


@pytest.mark.parametrize("seed", range(300))
def test_window_sums_are_fsum_bit_for_bit(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randrange(0, 80)
    kind = seed % 4
    if kind == 0:
        values = [rng.choice(AMOUNTS) for _ in range(n)]
    elif kind == 1:
        values = [round(rng.uniform(0, 1000), 2) for _ in range(n)]
    elif kind == 2:
        values = [rng.random() * 10.0 ** rng.randrange(-320, 10) for _ in range(n)]
    else:  # squared deviations, as the z-score sums them
        mean = rng.uniform(0, 1e6)
        values = [(d := rng.uniform(0, 1e9) - mean) * d for _ in range(n)]
    lo = rng.randrange(0, n + 1)
    got = fsum_range(np.array(values, np.float64), lo, n, np.empty(PARTIALS))
    assert got.hex() == math.fsum(values[lo:]).hex()


@dataclass
class _Scenario:
    batches: list[list[TxnRecord]]
    expire_every: int


def _scenario(rng: random.Random) -> _Scenario:
    cards = [f"c{i}" for i in range(rng.randrange(1, 5))]
    dense = rng.random() < 0.3  # bursts: more than 32 events, and merchants, an hour
    merchants = [f"m{i}" for i in range(60 if dense else rng.choice((1, 3)))]
    clock = dict.fromkeys(cards, T0)
    accepted: list[tuple[str, str]] = []  # (card, event id), to send again as duplicates
    sources = ("transactions#0", "transactions#1")[: rng.randrange(1, 3)]
    top = T0
    envs: list[TxnRecord] = []
    for i in range(rng.randrange(1, 400)):
        card = rng.choice(cards)
        roll = rng.random()
        if roll < 0.1:
            t = clock[card]  # a tie on time
        elif roll < 0.25:
            t = clock[card] - rng.choice(STEPS)  # back in time: within lateness or late
        elif roll < 0.3:
            t = clock[card] + rng.randrange(0, 3 * DAY)
        elif dense:
            t = clock[card] + rng.randrange(0, MINUTE // 2)
        else:
            t = clock[card] + rng.choice(STEPS[:12])
        t = max(t, T0 - 2 * DAY)
        clock[card] = max(clock[card], t)
        top = max(top, t)
        wm = top - 5_000 if i else NO_WATERMARK
        late = wm != NO_WATERMARK and t < wm - 60_000
        event_id = f"e{i}"
        if accepted and rng.random() < 0.08:
            card, event_id = rng.choice(accepted)
        elif not late:
            accepted.append((card, event_id))
        amount = rng.choice(AMOUNTS) if rng.random() < 0.6 else round(rng.uniform(0, 500), 2)
        txn = Transaction(
            event_id=event_id,
            card_id=card,
            merchant_id=rng.choice(merchants),
            amount=amount,
            currency="EUR",
            event_time=t,
        )
        source = rng.choice(sources)
        topic, partition = source.split("#")
        raw = RawRecord(topic, int(partition), i, card.encode(), None, t)
        envs.append(TxnRecord(txn, raw, late, wm))
    batches = []
    while envs:
        size = rng.randrange(1, 60)
        batches.append(envs[:size])
        envs = envs[size:]
    return _Scenario(batches, rng.randrange(1, 5))


def _dead(raw: RawRecord, error: str) -> OutMessage:
    return OutMessage("dead-letters", raw.key, error.encode(), raw.source, raw.offset)


def _stored(store: MemoryStore) -> dict[bytes, object]:
    return {
        key: msgspec.msgpack.decode(value) if key.startswith(keys.CARD) else value
        for key, value in store.scan(b"", b"\xff" * 8)
    }


def _outputs(items: list[Featured | Tick]) -> list[object]:
    return [
        (i.event_id, i.watermark, list(i.features), _bits(list(i.features.values())))
        if isinstance(i, Featured)
        else ("tick", i.watermark)
        for i in items
    ]


def _items(block: FeatureBlock) -> list[Featured | Tick]:
    """The engine's block as the reference's items: each row's card columns, ticks in place."""
    items: list[Featured | Tick] = []
    ticks = list(block.ticks)
    rows = block.features[:, : len(OUTPUT)].tolist()
    marks = block.watermarks.tolist()
    columns = zip(block.txns.event_id, rows, marks, strict=True)
    for r, (event_id, values, wm) in enumerate(columns):
        while ticks and ticks[0][0] <= r:
            items.append(Tick(ticks.pop(0)[1]))
        items.append(Featured(event_id, dict(zip(OUTPUT, values, strict=True)), wm))
    items.extend(Tick(wm) for _, wm in ticks)
    return items


def _run_both(scenario: _Scenario, cache: int, *, stored_midway: bool = True) -> None:
    """Both engines over ``scenario``: equal outputs, expiries and (flushed) state.

    ``stored_midway``: compare the stores, and how many cards each expiry deleted,
    along the way too (they differ when one engine writes cached cards back earlier
    than the other: an entry written back is deleted and counted at its expiry).
    """
    config = CardConfig(time=TimeConfig(), cache_cards=cache)
    stores = MemoryStore(), MemoryStore()
    engine = CardFeatureEngine(config, stores[0], _dead, shard="s")
    reference = ReferenceCardEngine(config, stores[1], _dead, shard="s")
    marks = MinWatermark(), MinWatermark()
    for n, batch in enumerate(scenario.batches):
        got, got_dead = engine.process(columns_of(batch), marks[0])
        want, want_dead = reference.process(batch, marks[1])
        assert _outputs(_items(got)) == _outputs(want)
        assert [(d.key, d.value) for d in got_dead] == [(d.key, d.value) for d in want_dead]
        if n % scenario.expire_every == 0:
            wm = marks[0].current()
            expired = [engine.expire(wm), reference.expire(wm)]
            if stored_midway:
                assert expired[0] == expired[1]
                assert _stored(stores[0]) == _stored(stores[1])
    engine.flush()
    reference.flush()
    assert _stored(stores[0]) == _stored(stores[1])


@pytest.mark.parametrize("cache", [0, 1, 1000])
@pytest.mark.parametrize("seed", range(40))
def test_engine_equals_the_pure_python_engine(seed: int, cache: int) -> None:
    _run_both(_scenario(random.Random(seed)), cache)


def test_scenarios_reach_every_path() -> None:
    # The randomized scenarios above are only worth as much as what they exercise.
    rows: list[dict[str, float]] = []
    dead = 0
    for seed in range(40):
        config = CardConfig(time=TimeConfig(), cache_cards=1000)
        engine = CardFeatureEngine(config, MemoryStore(), _dead)
        wm = MinWatermark()
        for batch in _scenario(random.Random(seed)).batches:
            block, dups = engine.process(columns_of(batch), wm)
            rows += [i.features for i in _items(block) if isinstance(i, Featured)]
            dead += len(dups)
    assert dead > 0
    assert any(r["card_distinct_merchants_1h"] > 33 for r in rows)
    assert any(r["card_amount_zscore"] != 0 for r in rows)
    assert any(r["card_session_count"] > 3 for r in rows)
    assert any(r["card_seconds_since_last"] == 0 for r in rows)  # ties
    assert any(r["card_seconds_since_last"] == -1 for r in rows)


def test_merchant_codes_start_afresh_without_changing_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Starting afresh writes every cached card back, which the reference does only at the end.
    monkeypatch.setattr(card_features, "MERCHANT_CODES_MAX", 5)
    for seed in range(10):
        _run_both(_scenario(random.Random(1000 + seed)), 1000, stored_midway=False)


def _kernel_and_reference() -> tuple[
    tuple[MemoryStore, MemoryStore], tuple[CardFeatureEngine, ReferenceCardEngine]
]:
    """The kernel engine and the reference engine, each on a store of its own."""
    stores = MemoryStore(), MemoryStore()
    config = CardConfig(time=TimeConfig(), cache_cards=10)
    return stores, (
        CardFeatureEngine(config, stores[0], _dead),
        ReferenceCardEngine(config, stores[1], _dead),
    )


def test_a_full_buffer_grows() -> None:
    # 200 events of one card within a day: the buffer starts with room for 4.
    stores, engines = _kernel_and_reference()
    batch = []
    for i in range(200):
        t = T0 + i * 7 * MINUTE
        txn = Transaction(
            event_id=f"e{i}",
            card_id="c",
            merchant_id=f"m{i % 50}",
            amount=float(i % 7),
            currency="EUR",
            event_time=t,
        )
        batch.append(TxnRecord(txn, RawRecord("transactions", 0, i, b"c", None, t), False, t))
    block, _ = engines[0].process(columns_of(batch), MinWatermark())
    want, _ = engines[1].process(batch, MinWatermark())
    got = _items(block)
    assert _outputs(got) == _outputs(want)
    assert [i.features["card_count_24h"] for i in got if isinstance(i, Featured)][-1] == 200.0
    for engine in engines:
        engine.flush()
    assert _stored(stores[0]) == _stored(stores[1])


def test_repeated_ids_in_one_batch_match_the_reference() -> None:
    # The kernel leaves a row whose id its card holds to Python: a duplicate within
    # the batch, an id another card holds, an id back after more than a day (no
    # duplicate), and a late repeat of an id that was never accepted.
    stores, engines = _kernel_and_reference()
    plan = [
        ("a", "x", 0, False),
        ("a", "x", MINUTE, False),  # duplicate within the batch
        ("b", "x", 2 * MINUTE, False),  # the same id on another card
        ("c", "z", 2 * MINUTE, True),  # late: scored, not accepted
        ("c", "z", 3 * MINUTE, False),  # so this is no duplicate
        ("a", "y", 3 * MINUTE, False),
        ("a", "x", DAY + 2 * MINUTE, False),  # more than a day after: accepted again
        ("a", "x", DAY + 3 * MINUTE, False),  # now a duplicate of that one
    ]
    batch = []
    for i, (card, event_id, dt, late) in enumerate(plan):
        t = T0 + dt
        txn = Transaction(
            event_id=event_id,
            card_id=card,
            merchant_id=f"m{i}",
            amount=float(i),
            currency="EUR",
            event_time=t,
        )
        raw = RawRecord("transactions", 0, i, b"k", None, t)
        batch.append(TxnRecord(txn, raw, late, t))
    block, got_dead = engines[0].process(columns_of(batch), MinWatermark())
    want, want_dead = engines[1].process(batch, MinWatermark())
    assert _outputs(_items(block)) == _outputs(want)
    assert [d.position for d in got_dead] == [d.position for d in want_dead] == [1, 7]
    for engine in engines:
        engine.flush()
    assert _stored(stores[0]) == _stored(stores[1])


def test_features_keep_their_names_and_order() -> None:
    assert set(OUTPUT) == set(card_features.CARD_FEATURES)
    assert len(OUTPUT) == len(card_features.CARD_FEATURES)


_COMPILE = """
from operators import card_kernel
card_kernel.compile_kernels()
stats = card_kernel.card_step.stats
print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


def test_kernels_load_from_a_cache_in_a_fresh_process(tmp_path: Path) -> None:
    # One process compiles and writes the cache under NUMBA_CACHE_DIR (where a read-only
    # install points it); the next process loads the kernels from there.
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}

    def hits_and_misses() -> str:
        done = subprocess.run(
            [sys.executable, "-c", _COMPILE], env=env, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    assert hits_and_misses() == "0 1"
    assert hits_and_misses() == "1 0"


def test_kernels_compile_where_no_cache_can_be_written() -> None:
    # A function numba cannot place a cache for (here: no source file) still compiles.
    namespace: dict[str, Callable[[int], int]] = {}
    exec("def twice(x):\n    return 2 * x\n", namespace)
    assert jit(namespace["twice"])(21) == 42
