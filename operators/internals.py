"""Every reliance on a dependency's private behaviour, in one place, each behind a version guard.

StreamScore uses five things its dependencies do not promise:

- **bytewax worker placement**: which worker a stateful step's key goes to
  (:func:`bytewax_worker`), so that shards spread evenly over a cluster
  (:mod:`operators.placement`);
- **bytewax's recovery store**: the tables of its SQLite partitions, read and
  pruned at startup (:mod:`flows.recovery`);
- **prometheus-client histogram internals**: a batch ``observe``
  (:func:`observe_many`);
- **pydantic's instance slots**: building a record whose values are already
  validated without validating them again (:func:`rebuild_model`), when
  msgspec has read a chargeback (:mod:`operators.decode_fast`);
- **river's module layout**: its ADWIN and PageHinkley detectors loaded from
  their own modules without ``river.drift``'s package init
  (:func:`river_detectors`), which also imports KSWIN (scipy.stats) and
  river's datasets (scikit-learn): about 0.8 s of CPU at every start of a
  service that uses neither (:mod:`operators.drift`).

Each was verified against the version in :data:`VERIFIED` (the versions
``pyproject.toml`` pins), and ``tests/unit/operators/test_internals.py``
checks each against the installed library. With another version installed,
the ones with a public equivalent fall back to it (slower, same result);
placement still works but may spread shards unevenly (logged once); the
recovery store refuses to be read (:class:`InternalsError`), because guessing
at its tables could lose or double-count state.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from prometheus_client import Histogram
from pydantic import BaseModel

from schemas.errors import StreamScoreError

log = logging.getLogger(__name__)

# The versions each reliance below was verified against (the project's pins).
VERIFIED = {
    "bytewax": "0.21.1",
    "prometheus-client": "0.26.0",
    "pydantic": "2.13.5",
    "river": "0.26.1",
}
M = TypeVar("M", bound=BaseModel)


class InternalsError(StreamScoreError):
    """A dependency's private behaviour is needed, but not the version it was verified on."""


@cache
def installed(dist: str) -> str:
    """The installed version of the distribution ``dist``."""
    return version(dist)


def verified(dist: str) -> bool:
    """Whether ``dist`` is installed at the version its reliance here was verified on."""
    return installed(dist) == VERIFIED[dist]


# Whether each library is at its verified version, decided once: the hot paths read this.
fast = {dist: verified(dist) for dist in VERIFIED}


def require(dist: str, what: str) -> None:
    """Raise :class:`InternalsError` unless ``dist`` is at its verified version."""
    if not verified(dist):
        msg = (
            f"{what} relies on {dist} {VERIFIED[dist]} internals, but {installed(dist)} is "
            "installed: install the pinned version (pyproject.toml), or re-verify with "
            "tests/unit/operators/test_internals.py and update operators/internals.py"
        )
        raise InternalsError(msg)


@cache
def _warn_once(dist: str, what: str) -> None:
    log.warning(
        "%s relies on %s %s internals, but %s is installed: %s",
        what,
        dist,
        VERIFIED[dist],
        installed(dist),
        "falling back to the public API" if dist != "bytewax" else "placement may be uneven",
    )


# --- bytewax: worker placement ---------------------------------------------------------

_MASK = (1 << 64) - 1


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & _MASK


def siphash13(data: bytes, k0: int = 0, k1: int = 0) -> int:
    """SipHash-1-3 of ``data`` as an unsigned 64-bit integer (Rust's ``SipHasher13``).

    >>> hex(siphash13(b""))
    '0xd1fba762150c532c'
    """
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(count: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(count):
            v0 = (v0 + v1) & _MASK
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    tail = len(data) % 8
    for offset in range(0, len(data) - tail, 8):
        m = int.from_bytes(data[offset : offset + 8], "little")
        v3 ^= m
        rounds(1)
        v0 ^= m
    last = ((len(data) & 0xFF) << 56) | int.from_bytes(data[len(data) - tail :], "little")
    v3 ^= last
    rounds(1)
    v0 ^= last
    v2 ^= 0xFF
    rounds(3)
    return v0 ^ v1 ^ v2 ^ v3


def bytewax_worker(key: str, workers: int) -> int:
    """The worker bytewax routes a stateful step's ``key`` to, of ``workers``.

    bytewax 0.21 sends a key to worker ``hash(key) % workers``, where the hash is
    Rust's ``DefaultHasher``: SipHash-1-3 with zero keys over the key's UTF-8
    bytes and a ``0xff`` terminator (``src/timely.rs``, ``PartitionFn``).
    """
    if not fast["bytewax"]:
        _warn_once("bytewax", "shard placement")
    return siphash13(key.encode() + b"\xff") % workers


# --- bytewax: the recovery store's tables ----------------------------------------------


def _read_only(part: Path) -> sqlite3.Connection:
    require("bytewax", "reading the recovery store")
    return sqlite3.connect(f"file:{part}?mode=ro", uri=True)


def snapshot_count(part: Path) -> int:
    """State snapshots in one recovery partition."""
    with _read_only(part) as db:
        (rows,) = db.execute("SELECT COUNT(*) FROM snaps").fetchone()
    return int(rows)


def partition_counts(part: Path) -> set[int]:
    """The partition count(s) a recovery partition records (none before its tables exist).

    Raises ``sqlite3.Error`` while the partition's tables are not there yet.
    """
    with _read_only(part) as db:
        counts = {int(c) for (c,) in db.execute("SELECT part_count FROM parts")}
        db.execute("SELECT COUNT(*) FROM snaps").fetchone()
    return counts


def resume_epoch(parts: Sequence[Path]) -> int | None:
    """The epoch the next run resumes from, as bytewax computes it; None when unknown.

    That is the smallest, over the workers of the latest execution, of the
    frontier each one recorded (the execution's own resume epoch for a worker
    that recorded none). None when no run has started yet, or when ``parts``
    is not every partition (a cluster whose hosts keep their own).
    """
    executions: list[tuple[int, int, int]] = []
    fronts: list[tuple[int, int, int]] = []
    counts: set[int] = set()
    for part in parts:
        with _read_only(part) as db:
            counts.update(c for (c,) in db.execute("SELECT part_count FROM parts"))
            executions += db.execute("SELECT ex_num, worker_count, resume_epoch FROM exs")
            fronts += db.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts")
    if not executions or counts != {len(parts)}:
        return None
    ex, workers, resumed_at = max(executions)
    frontier = dict.fromkeys(range(workers), resumed_at)
    for ex_num, worker, front in fronts:
        if ex_num == ex and worker in frontier:
            frontier[worker] = max(frontier[worker], front)
    return min(frontier.values())


def delete_snapshots_from(parts: Iterable[Path], epoch: int) -> int:
    """Delete every snapshot of ``epoch`` or later from ``parts``; return how many."""
    require("bytewax", "pruning the recovery store")
    deleted = 0
    for part in parts:
        with sqlite3.connect(part) as db:
            deleted += db.execute("DELETE FROM snaps WHERE snap_epoch >= ?", (epoch,)).rowcount
    return deleted


# --- prometheus-client: a batch observe ------------------------------------------------


def observe_many(histogram: Histogram, amounts: npt.NDArray[np.float64]) -> None:
    """``histogram.observe(a)`` for each amount, with one update per bucket hit.

    prometheus-client has no batch observe, and a per-event ``observe`` (lock,
    linear bucket search) would add that cost to every scored event. This uses
    the histogram's ``_upper_bounds``, ``_buckets`` and ``_sum``, and finds
    every amount's bucket in one ``searchsorted``. The sum may differ from
    per-amount additions in the last bits of its float.
    """
    if not len(amounts):
        return
    if not fast["prometheus-client"]:
        _warn_once("prometheus-client", "the batch histogram observe")
        for amount in amounts.tolist():
            histogram.observe(amount)
        return
    bounds = histogram._upper_bounds
    # observe() counts an amount in the first bucket with amount <= bound: the left
    # insertion point. NaN sorts after every bound, +Inf included: counted in none.
    at = np.searchsorted(np.asarray(bounds, dtype=np.float64), amounts, side="left")
    hits = np.bincount(at, minlength=len(bounds) + 1)[: len(bounds)].tolist()
    histogram._raise_if_not_observable()  # type: ignore[no-untyped-call]
    histogram._sum.inc(float(np.sum(amounts)))
    for bucket, n in zip(histogram._buckets, hits, strict=True):
        if n:
            bucket.inc(n)


# --- pydantic: rebuilding a validated model --------------------------------------------


_set = object.__setattr__


def rebuild_model(cls: type[M], values: dict[str, Any], fields_set: set[str]) -> M:
    """A ``cls`` instance with ``values`` (validated before) and ``fields_set``, unvalidated.

    Sets the four instance slots that validation or unpickling fills, as
    pydantic's own ``__setstate__`` does: cheaper than ``model_construct``
    (which also fills defaults, which ``values`` holds already), the fallback.
    """
    if not fast["pydantic"]:
        _warn_once("pydantic", "rebuilding validated records")
        return cls.model_construct(fields_set, **values)
    model = cls.__new__(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", fields_set)
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


# --- river: the drift detectors without the drift package's init ----------------------


def river_detectors() -> tuple[type[Any], type[Any]]:
    """river's ``ADWIN`` and ``PageHinkley`` classes (those ``river.drift`` exports).

    At the verified version ``river.drift`` is made from its spec without
    running its init, which is deferred to the first attribute the package
    lacks; its ``adwin`` and ``page_hinkley`` modules are then imported as
    usual. Whoever uses ``river.drift`` later gets the whole package, and these
    same classes (the init finds the two modules loaded). Otherwise, or when
    ``river.drift`` is already imported, they come from the package as it is.
    """
    name = "river.drift"
    if not fast["river"] or name in sys.modules:
        if not fast["river"]:
            _warn_once("river", "loading the drift detectors")
        drift = importlib.import_module(name)
        return drift.ADWIN, drift.PageHinkley
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        msg = f"river {installed('river')} has no {name} package"
        raise InternalsError(msg)
    loader = spec.loader
    package = importlib.util.module_from_spec(spec)

    def complete(attr: str) -> Any:
        # Once: the package's own init fills it in, then the attribute is looked up again.
        delattr(package, "__getattr__")
        loader.exec_module(package)
        return getattr(package, attr)

    setattr(package, "__getattr__", complete)  # noqa: B010 (a module's own __getattr__)
    sys.modules[name] = package
    setattr(sys.modules["river"], "drift", package)  # noqa: B010
    adwin = importlib.import_module(f"{name}.adwin")
    page_hinkley = importlib.import_module(f"{name}.page_hinkley")
    return adwin.ADWIN, page_hinkley.PageHinkley
