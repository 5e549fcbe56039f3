"""Quarantine: a record that crashes a stateful step is skipped after it has done so N times.

Every failure a record can cause on purpose is a dead letter with a reason
(:mod:`operators.decode`). A record that still makes a step raise has found a
bug. The step's logic turns that exception into :class:`PoisonRecordError`,
which names the record's topic, partition and offset; the process exits 1 and
:func:`record_crash` counts the crash in a ledger file in the state dir. A
restart replays from the last snapshot (or from the beginning without
recovery), so a deterministic bug crashes on the same record again. Once a
record has crashed ``quarantine_after`` starts, its partition's decoder turns
it into a ``quarantined`` dead letter instead of decoding it, and the flow
goes on. One crash alone never skips a record by default (2): a crash that
does not repeat was not the record's doing.

State lifetime: the ledger (``<state dir>/quarantine.json``) keeps every entry
until an operator deletes it; each entry is one record's coordinates, its
crash count and the last error. It is small and written only on a crash.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from operators.messages import RawRecord
from schemas.errors import StreamScoreError

LEDGER = "quarantine.json"


class PoisonRecordError(StreamScoreError):
    """A stateful step raised while it processed one record: a bug, attributed to the record."""

    def __init__(self, step: str, record: RawRecord, cause: BaseException) -> None:
        self.step = step
        self.topic = record.topic
        self.partition = record.partition
        self.offset = record.offset
        self.cause = f"{type(cause).__name__}: {cause}"
        super().__init__(
            f"step {step!r} raised on {self.topic}#{self.partition}@{self.offset}: {self.cause}"
        )


@dataclass(frozen=True)
class Entry:
    """One record in the ledger."""

    crashes: int
    step: str
    error: str


def _key(topic: str, partition: int, offset: int) -> str:
    return f"{topic}#{partition}@{offset}"


def read_ledger(state_dir: Path) -> dict[str, Entry]:
    """The ledger's entries by ``topic#partition@offset``; empty when there is none."""
    path = state_dir / LEDGER
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {k: Entry(int(v["crashes"]), str(v["step"]), str(v["error"])) for k, v in raw.items()}


def record_crash(state_dir: Path, error: PoisonRecordError) -> int:
    """Count one more crash of the record ``error`` names; return its crash count."""
    ledger = read_ledger(state_dir)
    key = _key(error.topic, error.partition, error.offset)
    old = ledger.get(key)
    ledger[key] = Entry((old.crashes if old else 0) + 1, error.step, error.cause)
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / (LEDGER + ".tmp")
    tmp.write_text(json.dumps({k: asdict(e) for k, e in ledger.items()}, indent=1, sort_keys=True))
    tmp.replace(state_dir / LEDGER)
    return ledger[key].crashes


def quarantined(state_dir: Path, after: int) -> dict[tuple[str, int, int], Entry]:
    """Records that crashed at least ``after`` times, by (topic, partition, offset)."""
    out: dict[tuple[str, int, int], Entry] = {}
    for key, entry in read_ledger(state_dir).items():
        if entry.crashes < after:
            continue
        source, _, offset = key.rpartition("@")
        topic, _, partition = source.rpartition("#")
        out[(topic, int(partition), int(offset))] = entry
    return out
