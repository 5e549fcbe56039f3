"""Online model quality from delayed labels: chargebacks joined back to scored transactions.

Time rules: a scored, non-late transaction is judged in the event-time tumbling
window ``[s, e)`` (``window_ms``, epoch-aligned) containing its event time.
Chargebacks may arrive until ``label_horizon_ms`` after the window's end: the
window is final on a shard once the shard's watermark is ``>= e +
label_horizon_ms``; the shard then reports it once, as a :class:`Partial`.
A transaction is labelled at most once, however many chargebacks name it. A
chargeback whose transaction is unknown (never scored on this shard, or its
window already final) is ignored; so is a decision for an event id already
stored (a replay) or for a window already final on its shard.

Across shards: a shard reports only windows where it had decisions, so each
``advance`` also returns ``final_through``, the end of the shard's newest final
window (never decreasing). :class:`QualityAggregator` sums partials per window
and emits a window once the minimum ``final_through`` over every registered
shard has reached its end: exactly once, never before every shard is final.

State lifetime: per shard, in the store under ``keys.QUALITY`` + shard id (the
process's store is shared by its shards): one entry per scored transaction
(decision, labelled) keyed by its window's start and then its event id, one
entry per window and batch listing the window's members of that batch, one
counter per window with decisions (ordered by window start, so the counters are
their own timer index), and the shard's ``final_through``. Since every entry of
a window lies under its start, a window that becomes final is deleted as a few
key ranges (one range delete each in RocksDB when the store is not versioned)
rather than a delete per transaction; the store holds about ``window_ms +
label_horizon_ms`` (plus watermark lag) of decisions. State written before
decisions were keyed by window (an entry per event id alone, and members listed
an index entry each or a batch an entry) is still read, and deleted as its
windows become final.

In memory, a shard keeps Bloom filters of the event ids it stores, per window
(2-4 bytes a live id, at most 16 MiB: past that, a window's ids are all looked
up, as without a filter), rebuilt from the members at start. An id (a decision,
to tell a replay, or a chargeback's transaction) is looked up only in the
windows whose filters cannot rule it out. The aggregator holds the sums of
windows not yet final everywhere and one integer per shard: plain data, for
bytewax snapshots.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypedDict

import bytewax.operators as op
import msgspec
import numpy as np
import numpy.typing as npt
from bytewax.dataflow import Stream

from operators.messages import OutMessage, json_value
from operators.score_records import DECISION_NAMES
from operators.watermarks import NO_WATERMARK
from schemas.timefmt import format_ms, parse_event_time
from state import keys
from state.epochs import DEFAULT_KEEP, EpochStore
from state.store import StateStore

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_COUNTS = struct.Struct(">qqqq")  # scored, declined, labelled, true_positives
_DECISION = struct.Struct(">QBB")  # window start, decision code, labelled
_FINAL = struct.Struct(">q")  # the shard's final_through
# Decision codes: the score records' (an index into DECISION_NAMES), also stored in state.
_CODES = {name: code for code, name in enumerate(DECISION_NAMES)}
_DECLINE = _CODES["decline"]
# Sub-namespaces after the shard prefix: ``e`` decisions by window start and event id.
# Read, not written: ``d`` decisions by event id alone, and ``m`` one index entry per
# member (the layout before ``b``, a batch's members an entry).
_WINDOW, _BY_WINDOW, _BATCH, _FINAL_KEY = b"w", b"e", b"b", b"f"
_DECIDED, _MEMBER = b"d", b"m"
_MAX_START = (1 << 64) - 1
_IDS = msgspec.msgpack.Encoder()
_IDS_DECODER = msgspec.msgpack.Decoder(list[str])

Sums = tuple[int, int, int, int, int]  # window_end, scored, declined, labelled, true_positives
AggregatorState = tuple[dict[int, Sums], dict[str, int | None]]


@dataclass(frozen=True, kw_only=True)
class QualityConfig:
    """Where quality records go, the judging window and how long labels may take."""

    topic: str
    window_ms: int = 3_600_000
    label_horizon_ms: int = 3_600_000

    def __post_init__(self) -> None:
        if self.window_ms <= 0:
            raise ValueError("window_ms must be positive")
        if self.label_horizon_ms < 0:
            raise ValueError("label_horizon_ms must not be negative")


@dataclass(frozen=True, slots=True)
class Partial:
    """One shard's counts for one final window."""

    window_start: int
    window_end: int
    scored: int
    declined: int
    labelled: int
    true_positives: int


class QualityRecord(TypedDict):
    """A window's quality, as published."""

    window_start: str
    window_end: str
    scored: int
    declined: int
    labelled: int
    true_positives: int
    decline_precision: float | None
    decline_recall: float | None


class QualityEngine:
    """One merchant shard's decisions and labels per window, kept in the store."""

    def __init__(self, config: QualityConfig, store: StateStore, *, shard: str = "") -> None:
        self._window = config.window_ms
        self._horizon = config.label_horizon_ms
        self._store = store
        raw = shard.encode()
        self._prefix = keys.QUALITY + _U16.pack(len(raw)) + raw
        self._decided_prefix = self._prefix + _DECIDED
        self._seen = _SeenIds()
        # An epoch store learns a created key's undo (a delete) without a read.
        self._epochs = store if isinstance(store, EpochStore) else None
        for start, ids in self._stored_members(0, _MAX_START):
            self._seen.add(start, _hashes(ids))
        self._legacy = self._holds_decisions_by_id()

    def decisions(self, items: Sequence[tuple[str, int, str]]) -> None:
        """Store ``(event_id, event_time_ms, decision)`` rows: :meth:`decide` of their columns."""
        if not items:
            return
        ids, times, names = zip(*items, strict=True)
        if not set(names) <= _CODES.keys():
            _reject(items)
        codes = np.fromiter(map(_CODES.__getitem__, names), dtype=np.intp, count=len(names))
        self.decide(list(ids), np.asarray(times, dtype=np.int64), codes)

    def decide(
        self,
        ids: list[str],
        times: npt.NDArray[np.int64],
        codes: npt.NDArray[np.intp],
    ) -> None:
        """Store scored, non-late transactions: event ids, event times (ms) and decision codes."""
        n = len(ids)
        if not n:
            return
        if times.min() < 0 or codes.min() < 0 or codes.max() >= len(_CODES):
            _reject(list(zip(ids, times.tolist(), codes.tolist(), strict=True)))
        starts = times - times % self._window
        hashes = _hashes(ids)
        first, last = int(starts.min()), int(starts.max())
        windows = [first] if first == last else np.unique(starts).tolist()
        known = set(self._lookup(ids, hashes))
        got = self._store.get_many([self._final_key(), *map(self._window_key, windows)])
        final = _final(got[0])
        counts = _counts(windows, got[1:])
        # Take records whose window is not final yet, once each, unless already stored.
        keep = np.ones(n, dtype=bool) if final is None else starts + self._window > final
        if known or len(set(ids)) != n:  # replays: one record at a time
            for i in np.flatnonzero(keep).tolist():
                if ids[i] in known:
                    keep[i] = False
                else:
                    known.add(ids[i])
        if not keep.any():
            return
        changes: dict[bytes, bytes | None] = {}
        for start in windows:
            if len(windows) == 1 and keep.all():
                mine, members, verdicts = hashes, ids, codes
            else:
                rows = np.flatnonzero(keep & (starts == start))
                if not len(rows):
                    continue
                mine = hashes[rows]
                members = [ids[i] for i in rows.tolist()]
                verdicts = codes[rows]
            # A decision's entry depends only on its window and decision.
            entry = [_DECISION.pack(start, code, 0) for code in range(len(_CODES))]
            changes.update(
                zip(
                    map(self._by_window_prefix(start).__add__, map(str.encode, members)),
                    map(entry.__getitem__, verdicts.tolist()),
                    strict=True,
                )
            )
            # A window's members of this batch in one entry, numbered by the window's
            # scored count before it (which only grows): a new process rebuilds its
            # filters from them.
            count = counts[start]
            changes[self._batch_key(start, count[0])] = _IDS.encode(members)
            count[0] += len(members)
            count[1] += int(np.count_nonzero(verdicts == _DECLINE))
            changes[self._window_key(start)] = _COUNTS.pack(*count)
            self._seen.add(start, mine)
        if self._epochs is None:
            self._store.write(changes)
            return
        # Every entry but the counters is new: decisions of ids the store lacks, and
        # members entries numbered past the window's count.
        window = len(self._prefix)
        created = (k for k in changes if k[window] != _WINDOW[0])
        self._epochs.write(changes, absent=created)

    def chargebacks(self, txn_event_ids: Sequence[str]) -> None:
        """Label the stored transactions these chargebacks name; others are ignored."""
        ids = sorted(set(txn_event_ids))
        found = self._lookup(ids, _hashes(ids))
        if not found:
            return
        starts = sorted({entry[0] for _key, entry in found.values()})
        counts = _counts(starts, self._store.get_many([self._window_key(s) for s in starts]))
        changes: dict[bytes, bytes | None] = {}
        touched: set[int] = set()
        for event_id in txn_event_ids:
            hit = found.get(event_id)
            if hit is None or hit[1][2]:
                continue
            key, entry = hit
            start, code, _ = entry
            entry[2] = 1
            changes[key] = _DECISION.pack(*entry)
            counts[start][2] += 1
            counts[start][3] += int(code == _DECLINE)
            touched.add(start)
        changes.update({self._window_key(s): _COUNTS.pack(*counts[s]) for s in touched})
        self._store.write(changes)

    def advance(self, watermark: int) -> tuple[list[Partial], int | None]:
        """Report and delete windows with ``end + label_horizon_ms <= watermark``.

        Returns the partials of newly final windows that had decisions, and
        ``final_through``: the end of the newest final window (``None`` before
        any watermark); it never decreases, even when the watermark does.
        """
        (stored,) = self._store.get_many([self._final_key()])
        previous = _final(stored)
        if watermark == NO_WATERMARK:
            return [], previous
        limit = watermark - self._horizon
        final = limit - limit % self._window
        if previous is not None and final <= previous:
            return [], previous
        partials: list[Partial] = []
        changes: dict[bytes, bytes | None] = {self._final_key(): _FINAL.pack(final)}
        cleared: list[tuple[bytes, bytes]] = []
        if final - self._window >= 0:
            last = final - self._window + 1  # above the newest final window's start
            lo, hi = self._window_key(0), self._window_key(last)
            for key, value in self._store.scan(lo, hi):
                start = _U64.unpack_from(key, len(self._prefix) + 1)[0]
                partials.append(Partial(start, start + self._window, *_COUNTS.unpack(value)))
                changes[key] = None
            if self._legacy:
                ids = [i for _s, window_ids in self._stored_members(0, last) for i in window_ids]
                decided = map(self._decided_prefix.__add__, map(str.encode, ids))
                changes.update(dict.fromkeys(decided, None))
            # Every other entry of a final window lies under its start.
            cleared = [
                (self._by_window_prefix(0), self._by_window_prefix(last)),
                (self._batch_key(0, 0), self._batch_key(last, 0)),
                (self._member_key(0, ""), self._member_key(last, "")),
            ]
            self._seen.drop_before(last)
        self._store.write(changes, cleared=cleared)
        if self._legacy:
            self._legacy = self._holds_decisions_by_id()
        return partials, final

    def _lookup(self, ids: Sequence[str], hashes: np.ndarray) -> dict[str, tuple[bytes, list[int]]]:
        """Each stored id's entry: its key and ``[window start, decision code, labelled]``.

        An id is looked up only in the windows whose filters cannot rule it out (a
        replay or a chargeback's transaction, or under 1% by chance), and by its id
        alone while decisions of the older layout are stored.
        """
        asked: dict[bytes, str] = {}
        maybe = np.zeros(len(ids), dtype=bool)
        for start, mask in self._seen.candidates(hashes):
            head = self._by_window_prefix(start)
            rows = np.flatnonzero(mask).tolist()
            asked.update((head + ids[i].encode(), ids[i]) for i in rows)
            maybe |= mask
        if self._legacy:
            rows = np.flatnonzero(maybe).tolist()
            asked.update((self._decided_prefix + ids[i].encode(), ids[i]) for i in rows)
        if not asked:
            return {}
        got = self._store.get_many(list(asked))
        return {
            event_id: (key, list(_DECISION.unpack(value)))
            for (key, event_id), value in zip(asked.items(), got, strict=True)
            if value is not None
        }

    def _holds_decisions_by_id(self) -> bool:
        """Whether decisions of the older layout (keyed by event id alone) are stored."""
        lo = self._decided_prefix
        hi = self._prefix + bytes([_DECIDED[0] + 1])
        return next(iter(self._store.scan(lo, hi)), None) is not None

    def _stored_members(self, lo: int, hi: int) -> Iterator[tuple[int, list[str]]]:
        """Each window's stored event ids, for windows starting in ``[lo, hi)``.

        Members are stored a batch an entry; state written before that layout has one
        index entry per member (the event id after the window's index prefix), still read.
        """
        at = len(self._prefix) + 1
        windows: dict[int, list[str]] = {}
        for key, value in self._store.scan(self._batch_key(lo, 0), self._batch_key(hi, 0)):
            windows.setdefault(_U64.unpack_from(key, at)[0], []).extend(_IDS_DECODER.decode(value))
        cut = at + _U64.size
        for key, _ in self._store.scan(self._member_key(lo, ""), self._member_key(hi, "")):
            windows.setdefault(_U64.unpack_from(key, at)[0], []).append(key[cut:].decode())
        for start in sorted(windows):
            yield start, windows[start]

    def _final_key(self) -> bytes:
        return self._prefix + _FINAL_KEY

    def _window_key(self, start: int) -> bytes:
        return self._prefix + _WINDOW + _U64.pack(start)

    def _by_window_prefix(self, start: int) -> bytes:
        """Where the decisions of the window starting at ``start`` lie (the event id follows)."""
        return self._prefix + _BY_WINDOW + _U64.pack(start)

    def _batch_key(self, start: int, number: int) -> bytes:
        return self._prefix + _BATCH + _U64.pack(start) + _U64.pack(number)

    def _member_key(self, start: int, event_id: str) -> bytes:
        return self._prefix + _MEMBER + _U64.pack(start) + event_id.encode()


class _Filter:
    """One blocked Bloom filter: a power of two of 64-bit words, and how many ids it holds."""

    __slots__ = ("capacity", "held", "words")

    def __init__(self, capacity: int) -> None:
        need = max(capacity * _BITS_AN_ID // 64, 1)
        self.words = np.zeros(max(_MIN_WORDS, 1 << (need - 1).bit_length()), dtype=np.uint64)
        self.capacity = len(self.words) * 64 // _BITS_AN_ID  # ids it takes at its bits an id
        self.held = 0

    def probes(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each hash's word (low bits) and the bits it sets there (6 high bits a probe)."""
        word = hashes & np.uint64(len(self.words) - 1)
        bits = (hashes >> _PROBE_SHIFTS) & np.uint64(63)
        return word, np.bitwise_or.reduce(np.left_shift(np.uint64(1), bits), axis=0)

    def add(self, hashes: np.ndarray) -> None:
        word, mask = self.probes(hashes)
        np.bitwise_or.at(self.words, word, mask)
        self.held += len(hashes)

    def may_hold(self, hashes: np.ndarray) -> np.ndarray:
        word, mask = self.probes(hashes)
        return np.asarray((self.words[word] & mask) == mask)


class _SeenIds:
    """Bloom filters over the hashes of the event ids a shard stores, a chain per window.

    It answers "maybe stored" or "not stored" with no false negatives: every id
    stored in a live window is in one of that window's filters, or the window
    is unfiltered and every id is "maybe". Each filter is blocked (an id sets
    ``_PROBES`` bits of one 64-bit word, so a lookup reads one word) and holds up
    to one id a ``_BITS_AN_ID`` bits, under 0.5% false positives when full; a
    window's first filter is sized for as many ids as the window before it held,
    and a full one is followed by one twice its size. A final window's filters are
    dropped whole, so memory follows the live ids: 2-4 bytes an id. Past
    ``max_words`` of filters a window takes none and stays unfiltered until it is
    final: the stage then looks every id up, as without a filter, rather than
    grow. A new process rebuilds the filters from the stored members.
    """

    def __init__(self, max_words: int = 1 << 21) -> None:
        self._max_words = max_words  # 16 MiB of filters by default: 4-8M live ids
        self._windows: dict[int, list[_Filter]] = {}
        self._unfiltered: set[int] = set()
        self._words = 0
        self._last_size = 0  # ids the newest window's filters hold

    def may_hold(self, hashes: np.ndarray) -> np.ndarray:
        """Per hash: whether its id may be stored (False: it certainly is not)."""
        out = np.zeros(len(hashes), dtype=bool)
        for _start, mask in self.candidates(hashes):
            out |= mask
        return out

    def candidates(self, hashes: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Each live window that may hold any of the ids: its start, and which it may hold."""
        for start in sorted(self._unfiltered):
            yield start, np.ones(len(hashes), dtype=bool)
        for start, chain in self._windows.items():
            mask = np.zeros(len(hashes), dtype=bool)
            for bloom in chain:
                mask |= bloom.may_hold(hashes)
            if mask.any():
                yield start, mask

    def add(self, start: int, hashes: np.ndarray) -> None:
        """Record the ids (by hash) stored in the window starting at ``start``."""
        if not len(hashes) or start in self._unfiltered:
            return
        chain = self._windows.setdefault(start, [])
        if not chain or chain[-1].capacity - chain[-1].held < len(hashes):
            grown = 2 * chain[-1].capacity if chain else self._last_size
            bloom = _Filter(max(grown, 2 * len(hashes)))
            if self._words + len(bloom.words) > self._max_words:
                self._words -= sum(len(b.words) for b in self._windows.pop(start))
                self._unfiltered.add(start)
                return
            self._words += len(bloom.words)
            chain.append(bloom)
        chain[-1].add(hashes)
        if start == max(self._windows):
            self._last_size = sum(b.held for b in chain)

    def drop_before(self, start: int) -> None:
        """Forget the windows starting before ``start`` (final: their ids were deleted)."""
        for s in [s for s in self._windows if s < start]:
            self._words -= sum(len(b.words) for b in self._windows.pop(s))
        self._unfiltered = {s for s in self._unfiltered if s >= start}


_PROBES = 4
_BITS_AN_ID = 16
_MIN_WORDS = 1 << 8
# Where each probe's 6 bits lie in a hash (above the bits that pick the word).
_PROBE_SHIFTS = np.arange(58, 58 - 6 * _PROBES, -6, dtype=np.uint64)[:, None]


def _hashes(ids: Sequence[str]) -> np.ndarray:
    """Python's hash of each id, as unsigned 64-bit (str caches its hash)."""
    return np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids)).view(np.uint64)


class QualityAggregator:
    """Merges every shard's partials; emits a window once all shards are final past it.

    >>> agg = QualityAggregator(QualityConfig(topic="quality", window_ms=10), ["m0", "m1"])
    >>> agg.add("m0", [Partial(0, 10, 4, 2, 1, 1)], 10)
    []
    >>> [(r["scored"], r["decline_precision"]) for r in agg.add("m1", [], 20)]
    [(4, 0.5)]
    """

    def __init__(
        self,
        config: QualityConfig,
        shards: Sequence[str],
        *,
        resume: AggregatorState | None = None,
    ) -> None:
        if not shards:
            raise ValueError("QualityAggregator needs at least one shard")
        if len(set(shards)) != len(shards):
            raise ValueError(f"duplicate shard ids in {list(shards)!r}")
        self._topic = config.topic
        self._final: dict[str, int | None] = dict.fromkeys(shards, None)
        self._pending: dict[int, Sums] = {}
        if resume is not None:
            pending, final = resume
            self._pending = dict(pending)
            # A shard that is new since the snapshot starts unknown, so it holds windows back.
            self._final.update({s: f for s, f in final.items() if s in self._final})

    def add(
        self, shard: str, partials: Iterable[Partial], final_through: int | None
    ) -> list[QualityRecord]:
        """Merge one shard's ``advance`` result; return the windows now final everywhere."""
        if shard not in self._final:
            raise ValueError(f"unknown quality shard {shard!r}")
        partials = list(partials)
        for p in partials:
            if final_through is None or p.window_end > final_through:
                raise ValueError(f"shard {shard!r} reported a window it has not finalized: {p}")
        floor = self._through()
        for p in partials:
            if floor is not None and p.window_end <= floor:
                continue  # already emitted; a window goes out once
            end, scored, declined, labelled, tps = self._pending.get(
                p.window_start, (p.window_end, 0, 0, 0, 0)
            )
            self._pending[p.window_start] = (
                end,
                scored + p.scored,
                declined + p.declined,
                labelled + p.labelled,
                tps + p.true_positives,
            )
        old = self._final[shard]
        if final_through is not None and (old is None or final_through > old):
            self._final[shard] = final_through
        through = self._through()
        if through is None:
            return []
        ready = sorted(s for s, sums in self._pending.items() if sums[0] <= through)
        return [_record(s, self._pending.pop(s)) for s in ready]

    def message(self, record: QualityRecord) -> OutMessage:
        """The record as a message to the quality topic, keyed by its window start."""
        # Windows go out once each, in order of their start.
        start = record["window_start"]
        return OutMessage(
            self._topic,
            start.encode(),
            json_value(record),
            self._topic,
            parse_event_time(start),
        )

    def snapshot(self) -> AggregatorState:
        """Copy of the state (pending sums by window start, final_through by shard)."""
        return dict(self._pending), dict(self._final)

    def _through(self) -> int | None:
        finals = list(self._final.values())
        if any(f is None for f in finals):
            return None
        return min(f for f in finals if f is not None)


def _record(start: int, sums: Sums) -> QualityRecord:
    end, scored, declined, labelled, tps = sums
    return {
        "window_start": format_ms(start),
        "window_end": format_ms(end),
        "scored": scored,
        "declined": declined,
        "labelled": labelled,
        "true_positives": tps,
        "decline_precision": tps / declined if declined else None,
        "decline_recall": tps / labelled if labelled else None,
    }


def _reject(items: Sequence[tuple[str, int, str | int]]) -> None:
    """Raise for the first item with an unknown decision (name or code) or a negative time."""
    for event_id, event_time, decision in items:
        if decision not in _CODES and decision not in _CODES.values():
            raise ValueError(f"unknown decision {decision!r} for {event_id!r}")
        if event_time < 0:
            raise ValueError(f"negative event time {event_time} for {event_id!r}")


def _final(value: bytes | None) -> int | None:
    return None if value is None else int(_FINAL.unpack(value)[0])


def _counts(starts: Sequence[int], values: Sequence[bytes | None]) -> dict[int, list[int]]:
    return {
        s: list(_COUNTS.unpack(v)) if v is not None else [0, 0, 0, 0]
        for s, v in zip(starts, values, strict=True)
    }


@dataclass(slots=True, eq=False)
class Decisions:
    """A merchant shard's scored, non-late transactions, as columns."""

    shard: str  # each input names its shard: a bytewax logic does not see its own key
    event_ids: list[str]
    event_times: npt.NDArray[np.int64]
    codes: npt.NDArray[np.intp]  # index into score_records.DECISION_NAMES

    def rows(self) -> list[tuple[str, int, str]]:
        """``(event_id, event_time, decision)`` of each transaction."""
        names = map(DECISION_NAMES.__getitem__, self.codes.tolist())
        return list(zip(self.event_ids, self.event_times.tolist(), names, strict=True))


@dataclass(slots=True)
class Labels:
    """The transactions a merchant shard's chargebacks name."""

    shard: str
    event_ids: list[str]


@dataclass(slots=True)
class ShardWatermark:
    """A merchant shard's watermark moved."""

    shard: str
    watermark: int


QualityInput = Decisions | Labels | ShardWatermark
QUALITY_INPUTS = (Decisions, Labels, ShardWatermark)
_ShardReport = tuple[str, list[Partial], int | None]


# A quality shard's bytewax snapshot: (merchant shard, state version).
_ShardSnapshot = tuple[str, int]


class _ShardLogic(op.StatefulBatchLogic[QualityInput, _ShardReport, _ShardSnapshot]):
    def __init__(
        self,
        config: QualityConfig,
        store: StateStore,
        resume: _ShardSnapshot | None,
        keep: int,
        versioned: bool,
    ) -> None:
        self._config = config
        self._base = store
        self._keep = keep
        self._versioned = versioned
        self._state: EpochStore | None = None
        self._engine: QualityEngine | None = None
        if resume is not None:
            self._open(*resume)

    def _open(self, shard: str, version: int | None) -> QualityEngine:
        # Named apart from the merchant shard of the same id, which shares the store.
        self._state = EpochStore(
            self._base, f"quality-{shard}", keep=self._keep, versioned=self._versioned
        )
        self._state.attach(version)
        self._engine = QualityEngine(self._config, self._state, shard=shard)
        return self._engine

    def on_batch(self, values: list[QualityInput]) -> tuple[list[_ShardReport], bool]:
        shard = values[0].shard
        if self._engine is None:
            self._engine = self._open(shard, None)
        watermark: int | None = None
        for item in values:
            if isinstance(item, Decisions):
                self._engine.decide(item.event_ids, item.event_times, item.codes)
            elif isinstance(item, Labels):
                self._engine.chargebacks(item.event_ids)
            else:
                watermark = item.watermark
        if watermark is None:
            return [], op.StatefulBatchLogic.RETAIN
        partials, final_through = self._engine.advance(watermark)
        return [(shard, partials, final_through)], op.StatefulBatchLogic.RETAIN

    def snapshot(self) -> _ShardSnapshot:
        state = self._state
        assert state is not None  # a logic is built with resume state or for a batch
        return (state.shard.removeprefix("quality-"), state.commit())


class _AggregatorLogic(op.StatefulBatchLogic[_ShardReport, list[OutMessage], AggregatorState]):
    def __init__(
        self,
        config: QualityConfig,
        shards: Sequence[str],
        on_record: Callable[[QualityRecord], None],
        resume: AggregatorState | None,
    ) -> None:
        self._aggregator = QualityAggregator(config, shards, resume=resume)
        self._on_record = on_record

    def on_batch(self, values: list[_ShardReport]) -> tuple[list[list[OutMessage]], bool]:
        out: list[OutMessage] = []
        for shard, partials, final_through in values:
            for record in self._aggregator.add(shard, partials, final_through):
                self._on_record(record)
                out.append(self._aggregator.message(record))
        return ([out] if out else []), op.StatefulBatchLogic.RETAIN

    def snapshot(self) -> AggregatorState:
        return self._aggregator.snapshot()


def quality(
    step_id: str,
    up: Stream[tuple[str, QualityInput]],
    *,
    config: QualityConfig,
    store: Callable[[], StateStore],
    shards: Sequence[str],
    on_record: Callable[[QualityRecord], None] = lambda _r: None,
    undo_keep: int = DEFAULT_KEEP,
    versioned: bool = True,
) -> Stream[tuple[str, list[OutMessage]]]:
    """Per-merchant-shard decisions, labels and watermarks -> quality records.

    Each shard's store writes are committed at its bytewax snapshot
    (:class:`state.epochs.EpochStore`), like the window shards'.
    """
    reports = op.stateful_batch(
        f"{step_id}-shards",
        up,
        lambda resume: _ShardLogic(config, store(), resume, undo_keep, versioned),
    )
    to_one = op.map(f"{step_id}-to-aggregator", reports, lambda kv: ("quality", kv[1]))
    return op.stateful_batch(
        f"{step_id}-aggregate",
        to_one,
        lambda resume: _AggregatorLogic(config, shards, on_record, resume),
    )
