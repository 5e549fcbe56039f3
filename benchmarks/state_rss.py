"""Peak RSS and throughput of the card-feature stage with N distinct cards: RocksDB vs memory.

Runs the card operator (duplicates, sliding windows, sessions, z-score) over N
transactions of N distinct cards, in batches, once on the RocksDB store and
once on the in-memory store (the baseline, measured in the same run), each in
a child process so their peak RSS is separate, with the flow's default card
cache (``--card-cache``; the cached cards are written back at the end).
Prints the figures and their ratios as JSON.

    .venv/bin/python -m benchmarks.state_rss --cards 1000000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path

from operators.card_features import CardConfig, CardFeatureEngine
from operators.messages import OutMessage, RawRecord, TxnColumns
from operators.watermarks import MinWatermark, TimeConfig
from schemas.settings import Settings
from state.memory import MemoryStore
from state.rocksdb import RocksStore
from state.store import StateStore

T0 = 1_795_392_000_000


def _no_dead(raw: RawRecord, error: str) -> OutMessage:
    raise AssertionError(f"unexpected duplicate at offset {raw.offset}: {error}")


def _run(kind: str, cards: int, batch: int, cache: int, queue: mp.Queue[dict[str, float]]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="streamscore-bench-"))
    store: StateStore = RocksStore(tmp / "db") if kind == "rocksdb" else MemoryStore()
    engine = CardFeatureEngine(CardConfig(time=TimeConfig(), cache_cards=cache), store, _no_dead)
    wm = MinWatermark()
    started = time.perf_counter()
    for lo in range(0, cards, batch):
        span = range(lo, min(cards, lo + batch))
        # One event per card, a millisecond apart.
        rows = [
            (f"e{i}", f"card-{i:07d}", f"m{i % 5000}", T0 + i, float(i % 500), False, False)
            for i in span
        ]
        raws = [RawRecord("transactions", 0, i, None, None, T0 + i) for i in span]
        txns = TxnColumns.from_rows(rows, raws, [False] * len(span), [T0 + i - 5000 for i in span])
        engine.process(txns, wm)
    engine.flush()
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    queue.put({"events_per_s": cards / elapsed, "peak_rss_mib": peak_kib / 1024})


def measure(kind: str, cards: int, batch: int, cache: int) -> dict[str, float]:
    """Run one store kind in a child process; return its throughput and peak RSS."""
    queue: mp.Queue[dict[str, float]] = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_run, args=(kind, cards, batch, cache, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    """Print RocksDB and in-memory figures and their ratios as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cards", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--card-cache", type=int, default=Settings().card_cache)
    args = parser.parse_args()
    print(
        f"card stage over {args.cards:,} distinct cards, batches of {args.batch}, "
        f"{args.card_cache:,} cards cached ...",
        flush=True,
    )
    rocks = measure("rocksdb", args.cards, args.batch, args.card_cache)
    print(f"rocksdb: {rocks}", flush=True)
    memory = measure("memory", args.cards, args.batch, args.card_cache)
    print(f"memory (baseline): {memory}", flush=True)
    report = {
        "cards": args.cards,
        "card_cache": args.card_cache,
        "rocksdb": rocks,
        "memory": memory,
        "rss_ratio_rocksdb_over_memory": rocks["peak_rss_mib"] / memory["peak_rss_mib"],
        "speed_ratio_rocksdb_over_memory": rocks["events_per_s"] / memory["events_per_s"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
