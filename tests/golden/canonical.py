"""Canonical output records, their identities and digests, and the committed fixture file.

A record's canonical form is its topic, its Kafka key (text, or ``base64:``
and the bytes' base64) and its JSON value parsed and written again with sorted
keys: field order is not part of the contract, every value is. Each record
has an identity that does not depend on the order shards or batches emit in:

- ``score <topic>#<partition>@<offset>``: the input transaction it scores
  (the message's origin and position);
- ``dead-letter <topic>#<partition>@<offset>``: the rejected input (its own
  ``topic``, ``partition`` and ``offset`` fields);
- ``aggregate <merchant_id>@<window_start>``: a closed merchant window.

Drift and quality records depend on how the input is batched, so they are only
counted. An aggregate's ``amount_sum`` is compared to 6 decimal places: the
pinned engine added a window's amounts in arrival order, today's engine gives
their exact sum rounded once, and the inputs' amounts are whole cents. The
fixture (``outputs.npz``) keeps each identity and a 6-byte blake2b digest of
the canonical form: input identities as sorted, delta-coded integers,
aggregate identities as sorted text, plus a JSON header.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tests.golden.inputs import SOURCES
from tests.golden.runner import Output

FIXTURE = Path(__file__).with_name("outputs.npz")
# 48 bits: a changed record keeps its digest with probability 2**-48, and ~210,000
# of them fit the fixture in about 1.3 MB.
DIGEST_BYTES = 6
SCORE, DEAD_LETTER, AGGREGATE = "score", "dead-letter", "aggregate"
_INPUT_KINDS = (SCORE, DEAD_LETTER)
_SOURCE_BITS, _OFFSET_BITS = 8, 40
FORMAT = 1
AMOUNT_SUM_PLACES = 6


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode("ascii")


def canonical_json(out: Output, value: Any) -> bytes:
    """The canonical form of one output message whose value parses to ``value``."""
    body = {"topic": out.topic, "key": _text(out.key), "value": value}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def digest(canonical: bytes) -> bytes:
    """The record's digest as kept in the fixture."""
    return hashlib.blake2b(canonical, digest_size=DIGEST_BYTES).digest()


@dataclass
class Canonical:
    """A run's outputs: canonical records by identity, and what is only counted."""

    records: dict[str, bytes] = field(default_factory=dict)
    repeated: list[str] = field(default_factory=list)  # identities emitted more than once
    counted: Counter[str] = field(default_factory=Counter)  # drift and quality, by topic


def identity(out: Output, value: dict[str, Any], topics: dict[str, str]) -> str | None:
    """The record's identity, or None for a record that is only counted."""
    kind = topics.get(out.topic)
    if kind == SCORE:
        return f"{SCORE} {out.origin}@{out.position}"
    if kind == DEAD_LETTER:
        return f"{DEAD_LETTER} {value['topic']}#{value['partition']}@{value['offset']}"
    if kind == AGGREGATE:
        return f"{AGGREGATE} {value['merchant_id']}@{value['window_start']}"
    return None


def canonicalize(outputs: list[Output]) -> Canonical:
    """Canonical records of a run, keyed by identity."""
    topics = {"scores": SCORE, "dead-letters": DEAD_LETTER, "window-aggregates": AGGREGATE}
    result = Canonical()
    for out in outputs:
        value = orjson.loads(out.value)
        key = identity(out, value, topics)
        if key is None:
            result.counted[out.topic] += 1
            continue
        if key.startswith(AGGREGATE):
            # The pinned engine summed a window's amounts in arrival order; today's sum is
            # exact (correctly rounded). Amounts are whole cents, so to 6 places both agree.
            value["amount_sum"] = round(value["amount_sum"], AMOUNT_SUM_PLACES)
        if key in result.records:
            result.repeated.append(key)
        result.records[key] = canonical_json(out, value)
    return result


@dataclass
class Fixture:
    """The committed outputs: a digest per identity and a header."""

    digests: dict[str, bytes]
    meta: dict[str, Any]


def _input_number(key: str) -> int:
    kind, _, rest = key.partition(" ")
    source, _, offset = rest.rpartition("@")
    number = (_INPUT_KINDS.index(kind) << _SOURCE_BITS) | SOURCES.index(source)
    return (number << _OFFSET_BITS) | int(offset)


def _input_key(number: int) -> str:
    offset = number & ((1 << _OFFSET_BITS) - 1)
    source = (number >> _OFFSET_BITS) & ((1 << _SOURCE_BITS) - 1)
    kind = number >> (_OFFSET_BITS + _SOURCE_BITS)
    return f"{_INPUT_KINDS[kind]} {SOURCES[source]}@{offset}"


def write_fixture(path: Path, canonical: Canonical, meta: dict[str, Any]) -> None:
    """Write the run's identities and digests with ``meta`` as the header."""
    by_input = sorted(
        (_input_number(k), digest(v))
        for k, v in canonical.records.items()
        if not k.startswith(AGGREGATE)
    )
    aggregates = sorted(
        (k, digest(v)) for k, v in canonical.records.items() if k.startswith(AGGREGATE)
    )
    numbers = np.array([n for n, _ in by_input], dtype=np.uint64)
    header = {**meta, "format": FORMAT, "digest_bytes": DIGEST_BYTES}
    arrays = {
        "meta": np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8),
        "input_keys": np.diff(numbers, prepend=np.uint64(0)),
        "input_digests": np.frombuffer(b"".join(d for _, d in by_input), dtype=np.uint8),
        "aggregate_keys": np.frombuffer("\n".join(k for k, _ in aggregates).encode(), np.uint8),
        "aggregate_digests": np.frombuffer(b"".join(d for _, d in aggregates), dtype=np.uint8),
    }
    # np.savez_compressed's layout, with fixed member times: the same outputs give the
    # same bytes, so regenerating an unchanged fixture leaves git with nothing to commit.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w") as f:
                np.lib.format.write_array(f, array, allow_pickle=False)


def read_fixture(path: Path = FIXTURE) -> Fixture:
    """The fixture at ``path``."""
    with np.load(path) as data:
        meta = json.loads(data["meta"].tobytes())
        size = int(meta["digest_bytes"])
        numbers = np.cumsum(data["input_keys"], dtype=np.uint64).tolist()
        keys = [_input_key(int(n)) for n in numbers]
        text = data["aggregate_keys"].tobytes().decode()
        keys += text.split("\n") if text else []
        blob = data["input_digests"].tobytes() + data["aggregate_digests"].tobytes()
    digests = {k: blob[i * size : (i + 1) * size] for i, k in enumerate(keys)}
    return Fixture(digests, meta)


def differences(fixture: Fixture, canonical: Canonical) -> dict[str, list[str]]:
    """Identities that differ from the fixture, by how: missing, unexpected, changed, repeated."""
    expected, actual = fixture.digests, canonical.records
    return {
        "missing": sorted(expected.keys() - actual.keys(), key=_order),
        "unexpected": sorted(actual.keys() - expected.keys(), key=_order),
        "changed": sorted(
            (k for k in expected.keys() & actual.keys() if digest(actual[k]) != expected[k]),
            key=_order,
        ),
        "repeated": sorted(set(canonical.repeated), key=_order),
    }


def _order(key: str) -> tuple[str, str, int]:
    """Identities in input order (by partition, then offset) within each kind."""
    kind, _, rest = key.partition(" ")
    where, _, position = rest.rpartition("@")
    return (kind, where, int(position)) if position.lstrip("-").isdigit() else (kind, rest, 0)


SHOWN = 5  # identities shown per kind of difference
_SHOWN_CHARS = 2_000


def describe(
    diffs: dict[str, list[str]],
    canonical: Canonical,
    old: dict[str, str] | None = None,
) -> str:
    """A report of ``diffs``: counts, then the first identities of each kind with their records.

    ``old`` holds the reference engine's canonical records where they could be made.
    """

    def shown(record: str) -> str:
        return record if len(record) <= _SHOWN_CHARS else record[:_SHOWN_CHARS] + " ..."

    counts = ", ".join(f"{len(keys)} {how}" for how, keys in diffs.items() if keys)
    lines = [f"outputs differ from the fixture: {counts}"]
    for how, keys in diffs.items():
        for key in keys[:SHOWN]:
            lines.append(f"{how}: {key}")
            new = canonical.records[key].decode() if key in canonical.records else None
            if new is not None:
                lines.append(f"  new: {shown(new)}")
            if old is not None:
                lines.append(f"  old: {shown(old.get(key, '(none)'))}")
                if new is not None and key in old:
                    lines.extend(f"  {d}" for d in field_changes(old[key], new)[:SHOWN])
    if old is None:
        lines.append("(old records not shown: git or the pinned commit is not available)")
    return "\n".join(lines)


def field_changes(old: str, new: str) -> list[str]:
    """The fields that differ between two canonical records, as ``path: old -> new``.

    >>> field_changes('{"v": {"a": 1, "b": [1, 2]}}', '{"v": {"a": 1.0, "b": [1, 3], "c": 0}}')
    ['v.a: 1 -> 1.0', 'v.b.1: 2 -> 3', 'v.c: (none) -> 0']
    """
    changes: list[str] = []

    def walk(path: str, a: Any, b: Any) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(a.keys() | b.keys()):
                walk(f"{path}.{name}" if path else name, a.get(name, _NONE), b.get(name, _NONE))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(f"{path}.{i}", x, y)
        elif type(a) is not type(b) or a != b:
            changes.append(f"{path}: {_repr(a)} -> {_repr(b)}")

    walk("", orjson.loads(old), orjson.loads(new))
    return changes


_NONE = object()


def _repr(value: Any) -> str:
    return "(none)" if value is _NONE else orjson.dumps(value).decode()[:200]
