"""A merchant window's amount sum is exact: the same for every arrival order, as ``math.fsum``."""

from __future__ import annotations

import json
import math
import random
import struct
from fractions import Fraction

import pytest

from flows.testing import ReplayRecord, run_log
from operators.merchant_windows import (
    amount_sum,
    exact_units,
    pack_window,
    unpack_window,
)

T0 = 1_795_392_000_000
# Summed left to right these give 0.6000000000000001; the exact sum rounds to 0.6.
AMOUNTS = (0.1, 0.2, 0.3, 1e6, 0.07, 12.34, 1e-3, 99.99)


def _log(amounts: list[float], partitions: int) -> list[ReplayRecord]:
    """One merchant's transactions a second apart, dealt over ``partitions`` in turn."""
    records = []
    offsets = [0] * partitions
    for i, amount in enumerate(amounts):
        body = {
            "event_id": f"e{i}",
            "card_id": f"c{i}",
            "merchant_id": "m1",
            "amount": amount,
            "currency": "EUR",
            "event_time": T0 + 1_000 * i,
        }
        p = i % partitions
        value = json.dumps(body).encode()
        records.append(ReplayRecord("transaction", p, offsets[p], None, value, T0 + 1_000 * i))
        offsets[p] += 1
    return records


def _sums(records: list[ReplayRecord], batch_size: int) -> dict[str, float]:
    result = run_log(records, batch_size=batch_size)
    return {a["window_start"]: a["amount_sum"] for a in result.window_aggregates}


def test_the_sum_is_the_correctly_rounded_one() -> None:
    assert sum(AMOUNTS[:3]) != math.fsum(AMOUNTS[:3])  # the case the exact sum is for
    (got,) = _sums(_log(list(AMOUNTS), 1), 1).values()
    assert got == math.fsum(AMOUNTS)


@pytest.mark.parametrize("seed", range(4))
def test_the_sum_does_not_depend_on_arrival_order(seed: int) -> None:
    rng = random.Random(seed)
    amounts = [round(rng.uniform(0, 500), 2) for _ in range(60)]
    want = math.fsum(amounts)
    # One partition in event order, batch by batch; three partitions interleaved
    # differently by the poll size: the window's transactions arrive in other orders.
    for partitions, batch in ((1, 1), (3, 7), (3, 64)):
        sums = _sums(_log(amounts, partitions), batch)
        assert list(sums.values()) == [want]  # the minute's transactions share one window


def test_a_stored_window_round_trips_exactly() -> None:
    units = sum(map(exact_units, AMOUNTS))
    assert unpack_window(pack_window((8, units, 2))) == (8, units, 2)
    assert unpack_window(pack_window((0, 0, 1))) == (0, 0, 1)
    assert amount_sum(units) == math.fsum(AMOUNTS)


def test_a_window_stored_with_a_float_sum_is_still_read() -> None:
    # The format before sums were exact: txn_count, amount_sum, chargeback_count.
    old = struct.pack(">qdq", 3, 12.75, 1)
    assert unpack_window(old) == (3, exact_units(12.75), 1)


@pytest.mark.parametrize("amount", [0.0, 5e-324, 2.2250738585072014e-308, 0.1, 1e9, 123456.789])
def test_every_finite_amount_converts_exactly(amount: float) -> None:
    units = exact_units(amount)
    assert amount_sum(units) == amount
    assert Fraction(units, 1 << 1074) == Fraction(amount)
