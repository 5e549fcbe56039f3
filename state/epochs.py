"""Epoch-versioned state: a shard's RocksDB writes land at bytewax snapshots, with undo logs.

Bytewax recovery snapshots operator state at the end of each epoch and, after a
crash, rewinds the inputs to the last epoch committed by the whole cluster.
State in RocksDB is outside those snapshots, so each shard keeps it in step:

- During an epoch a shard's writes go to an in-memory overlay; its reads see
  the overlay first, then RocksDB. Nothing reaches RocksDB mid-epoch.
- At the epoch's snapshot, :meth:`EpochStore.commit` applies the overlay in
  one atomic RocksDB batch together with the shard's new version number and
  an undo record (the previous value of every key it changes). The version
  goes into the bytewax snapshot.
- On resume, bytewax hands back the version of the snapshot it resumes from.
  :meth:`EpochStore.attach` rolls RocksDB back to exactly that version with
  the undo records of the newer ones (epochs that reached RocksDB but not the
  cluster's recovery commit). A shard that bytewax resumes without a snapshot
  starts empty. A version RocksDB cannot produce (state dir deleted, WAL tail
  lost, undo records already dropped) is a :class:`schemas.errors.StateError`
  naming the shard and both versions: never a silent mix.

Undo records older than ``keep`` versions are dropped in the same batch that
writes a new one, so the log stays bounded.

Cost: a commit writes every key the shard changed in the epoch twice (the
value and its undo), all at the epoch's end, and reads the previous value of
each it had not read; a writer names the keys it creates (``absent``), whose
undo is a delete with no read. Without
recovery there is nothing to resume, so ``versioned=False`` writes through
at once (no overlay, no versions, no undo) and spreads that cost over the
batches instead.

Keys: every key of a shard is stored under ``S`` + shard, so shards sharing a
process's database never collide and a shard can be wiped by range; the
shard's version under ``V`` + shard and its undo records under ``U`` + shard +
version.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import pickle
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence

from schemas.errors import REBUILD_HINT, StateError
from state.store import Ranges, StateStore

log = logging.getLogger(__name__)

_DATA, _VERSION, _UNDO = b"S", b"V", b"U"
_U64 = struct.Struct(">Q")
DEFAULT_KEEP = 8
# The version an unversioned store puts in snapshots: nothing can be resumed from it.
UNVERSIONED = -1
_WIPE_BATCH = 10_000

_MISSING = object()


def _prefix(namespace: bytes, shard: str) -> bytes:
    raw = shard.encode()
    if not 0 < len(raw) < 256:
        raise ValueError(f"shard name must be 1..255 bytes, got {shard!r}")
    return namespace + bytes([len(raw)]) + raw


def shard_data_prefix(shard: str) -> bytes:
    """The prefix under which ``shard``'s own keys lie in the process store."""
    return _prefix(_DATA, shard)


def _after(prefix: bytes) -> bytes:
    """The smallest key above every key that starts with ``prefix``."""
    head = prefix.rstrip(b"\xff")
    return head[:-1] + bytes([head[-1] + 1])


class EpochStore:
    """One shard's view of the process store: overlay writes, committed per epoch.

    It is a :class:`state.store.StateStore` for the engines (keys are the
    engine's own; the shard prefix is added underneath), plus :meth:`attach`
    (once, before use) and :meth:`commit` (at every snapshot).
    """

    def __init__(
        self, base: StateStore, shard: str, *, keep: int = DEFAULT_KEEP, versioned: bool = True
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self._versioned = versioned
        self._base = base
        self._shard = shard
        self._keep = keep
        self._data = _prefix(_DATA, shard)
        self._version_key = _prefix(_VERSION, shard)
        self._undo = _prefix(_UNDO, shard)
        self._overlay: dict[bytes, bytes | None] = {}
        # The overlay's keys per first byte (the engines' namespaces), sorted only when a
        # scan needs them: card blobs are never scanned, timer indexes are.
        self._index: dict[int, list[bytes]] = {}
        self._unsorted: set[int] = set()
        # RocksDB's value of each key read this epoch: the undo record needs no re-read.
        self._before: dict[bytes, bytes | None] = {}
        self._version: int | None = None
        self._closed = False

    @property
    def shard(self) -> str:
        """The shard this view belongs to."""
        return self._shard

    @property
    def version(self) -> int:
        """The committed version (0: nothing committed yet)."""
        if self._closed:
            raise StateError(f"state of shard {self._shard} is closed")
        if self._version is None:
            raise StateError(f"state of shard {self._shard} used before attach()")
        return self._version

    def attach(self, resume_version: int | None) -> None:
        """Bring RocksDB to ``resume_version`` (None: bytewax has no snapshot, start empty)."""
        if resume_version is not None and (resume_version == UNVERSIONED or not self._versioned):
            raise StateError(
                f"bytewax resumes shard {self._shard} from a recovery snapshot, but its "
                "state was not kept for recovery: run with STREAMSCORE_RECOVERY_DIR "
                "(--recovery-dir) set to bytewax's recovery dir from the first start on, or "
                "start with an empty recovery dir"
            )
        stored = self._stored_version()
        if resume_version is None:
            if stored is not None:
                self._wipe()
            self._version = 0
            return
        current = stored or 0
        if current < resume_version:
            raise StateError(
                f"state of shard {self._shard} is at version {current} but the recovery "
                f"snapshot needs version {resume_version}: the state dir was deleted or "
                "replaced, lost its WAL tail, or belongs to a cluster of another size. "
                + REBUILD_HINT
            )
        if current > resume_version:
            self._roll_back(current, resume_version)
            log.info(
                "shard %s: rolled RocksDB back from version %d to %d (the resume point)",
                self._shard,
                current,
                resume_version,
            )
        self._version = resume_version

    def commit(self) -> int:
        """Write this epoch's changes, the new version and its undo record atomically."""
        version = self.version
        if not self._versioned:
            return UNVERSIONED
        if not self._overlay:
            return version
        before = self._before
        unread = [k for k in self._overlay if k not in before]
        if unread:
            values = self._base.get_many([self._data + k for k in unread])
            before.update(zip(unread, values, strict=True))
        undo = {k: before[k] for k in self._overlay}
        new = version + 1
        data = self._data
        changes: dict[bytes, bytes | None] = {data + k: v for k, v in self._overlay.items()}
        changes[self._undo + _U64.pack(new)] = pickle.dumps(undo, pickle.HIGHEST_PROTOCOL)
        if new > self._keep:
            changes[self._undo + _U64.pack(new - self._keep)] = None
        changes[self._version_key] = _U64.pack(new)
        self._base.write(changes)
        self._reset()
        self._version = new
        return new

    # StateStore -------------------------------------------------------------------

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """See StateStore: this epoch's writes first, then RocksDB."""
        self.version  # noqa: B018  (refuses use before attach or after close)
        overlay = self._overlay
        out: list[bytes | object | None] = [overlay.get(k, _MISSING) for k in keys]
        missing = [i for i, v in enumerate(out) if v is _MISSING]
        if missing:
            got = self._base.get_many([self._data + keys[i] for i in missing])
            for i, value in zip(missing, got, strict=True):
                out[i] = value
            if self._versioned:  # cleared at each commit; unversioned stores never commit
                self._before.update((keys[i], got[n]) for n, i in enumerate(missing))
        return out  # type: ignore[return-value]

    def write(
        self,
        changes: Mapping[bytes, bytes | None],
        *,
        absent: Iterable[bytes] = (),
        cleared: Ranges = (),
    ) -> None:
        """See StateStore: buffered until :meth:`commit` (unversioned: written at once).

        ``absent`` names keys of ``changes`` the caller knows this view lacks (keys it
        creates): their undo record is a delete, known without reading RocksDB.
        Unversioned, a cleared range reaches RocksDB as one range delete; versioned, it
        becomes a delete of each key the view holds in it, so the undo record can
        restore them.
        """
        self.version  # noqa: B018  (refuses use before attach)
        data = self._data
        if not self._versioned:
            self._base.write(
                {data + k: v for k, v in changes.items()},
                cleared=[(data + lo, data + hi) for lo, hi in cleared],
            )
            return
        if cleared:
            doomed: dict[bytes, bytes | None] = {
                k: None for lo, hi in cleared for k, _ in self.scan(lo, hi)
            }
            doomed.update(changes)
            changes = doomed
        overlay = self._overlay
        before = self._before
        for key in absent:
            # Outside the overlay the view is RocksDB: a key the view lacks is not there.
            if key not in overlay:
                before.setdefault(key, None)
        index = self._index
        for key in changes:
            if key not in overlay:
                index.setdefault(key[0], []).append(key)
                self._unsorted.add(key[0])
        overlay.update(changes)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """See StateStore: RocksDB merged with this epoch's writes (deletes hide entries)."""
        self.version  # noqa: B018
        cut = len(self._data)
        overlay = self._overlay
        pending = [(k, overlay[k]) for k in self._pending_keys(start, end)]
        stored = ((k[cut:], v) for k, v in self._base.scan(self._data + start, self._data + end))
        if not pending:
            yield from stored
            return
        shadowed = {k for k, _ in pending}
        merged = heapq.merge(pending, ((k, v) for k, v in stored if k not in shadowed))
        for key, value in merged:
            if value is not None:
                yield key, value

    def approximate_keys(self) -> int:
        """See StateStore (the whole process store's estimate)."""
        return self._base.approximate_keys()

    def close(self) -> None:
        """Refuse further use; uncommitted writes are dropped (the process store stays open)."""
        self._closed = True
        self._reset()

    # internals --------------------------------------------------------------------

    def _reset(self) -> None:
        self._overlay.clear()
        self._index.clear()
        self._unsorted.clear()
        self._before.clear()

    def _pending_keys(self, start: bytes, end: bytes) -> list[bytes]:
        """Overlay keys in ``[start, end)``, in order."""
        if not self._overlay or start >= end:
            return []
        first, last = start[0] if start else 0, end[0] if end else 0
        out: list[bytes] = []
        for namespace in range(first, last + 1):
            keys = self._index.get(namespace)
            if not keys:
                continue
            if namespace in self._unsorted:
                keys.sort()
                self._unsorted.discard(namespace)
            out.extend(keys[bisect.bisect_left(keys, start) : bisect.bisect_left(keys, end)])
        return out

    def _stored_version(self) -> int | None:
        (raw,) = self._base.get_many([self._version_key])
        return None if raw is None else int(_U64.unpack(raw)[0])

    def _roll_back(self, current: int, target: int) -> None:
        undo_keys = [self._undo + _U64.pack(v) for v in range(current, target, -1)]
        records = self._base.get_many(undo_keys)
        restored: dict[bytes, bytes | None] = {}
        for version, record in zip(range(current, target, -1), records, strict=True):
            if record is None:
                raise StateError(
                    f"state of shard {self._shard} is at version {current} and must roll "
                    f"back to {target}, but the undo record of version {version} is gone "
                    "(more epochs were lost than undo records are kept). " + REBUILD_HINT
                )
            # Newest first: an older epoch's previous value overrides a newer one's.
            restored.update(pickle.loads(record))
        changes: dict[bytes, bytes | None] = {self._data + k: v for k, v in restored.items()}
        changes.update(dict.fromkeys(undo_keys))
        changes[self._version_key] = _U64.pack(target)
        self._base.write(changes)

    def _wipe(self) -> None:
        for namespace in (self._data, self._undo):
            while True:
                doomed = [k for k, _ in _take(self._base.scan(namespace, _after(namespace)))]
                if not doomed:
                    break
                self._base.write(dict.fromkeys(doomed))
        self._base.write({self._version_key: None})


def _take(entries: Iterator[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for entry in entries:
        out.append(entry)
        if len(out) >= _WIPE_BATCH:
            break
    return out
