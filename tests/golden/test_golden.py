"""The flow's outputs for the golden inputs equal the pinned commit's, record by record.

``outputs.npz`` holds a digest of every score, dead letter and window
aggregate the pinned commit produced for the golden inputs
(:mod:`tests.golden.inputs`); these tests run today's flow over the same inputs
and compare. On a difference the failure names the first differing records
with their new content, and the old content when git and the pinned commit
are at hand (set ``STREAMSCORE_GOLDEN_OLD=0`` to skip that slower step).
docs/testing.md says how to regenerate the fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from typing import Any

import orjson
import pytest

from tests.golden.canonical import (
    AGGREGATE,
    DEAD_LETTER,
    SCORE,
    SHOWN,
    Canonical,
    Fixture,
    canonicalize,
    describe,
    differences,
    read_fixture,
    write_fixture,
)
from tests.golden.inputs import CB_TOPIC, SOURCES, TXN_TOPIC, GoldenInputs, generate
from tests.golden.regenerate import PINNED, ROOT, pinned_records
from tests.golden.runner import run_flow

REASONS = ("json", "schema", "oversize", "timestamp", "duplicate", "quarantined")


@pytest.fixture(scope="module")
def inputs() -> GoldenInputs:
    return generate()


@pytest.fixture(scope="module")
def outputs(inputs: GoldenInputs) -> Canonical:
    return canonicalize(run_flow(inputs))


@pytest.fixture(scope="module")
def fixture() -> Fixture:
    return read_fixture()


@pytest.fixture(scope="module")
def values(outputs: Canonical) -> dict[str, list[dict[str, Any]]]:
    """The outputs' JSON values by kind of record."""
    by_kind: dict[str, list[dict[str, Any]]] = {SCORE: [], DEAD_LETTER: [], AGGREGATE: []}
    for key, record in outputs.records.items():
        by_kind[key.partition(" ")[0]].append(orjson.loads(record)["value"])
    return by_kind


def _pinned_available() -> bool:
    if os.environ.get("STREAMSCORE_GOLDEN_OLD") == "0" or shutil.which("git") is None:
        return False
    probe = ["git", "-C", str(ROOT), "cat-file", "-e", f"{PINNED}^{{commit}}"]
    return subprocess.run(probe, check=False, capture_output=True).returncode == 0


def test_the_inputs_are_those_the_fixture_was_made_from(
    inputs: GoldenInputs, fixture: Fixture
) -> None:
    assert inputs.digest() == fixture.meta["inputs"], (
        "the golden inputs changed (tests/golden/inputs.py or the simulator): "
        "regenerate the fixture from the pinned commit (docs/testing.md)"
    )


def test_outputs_equal_the_pinned_commits(outputs: Canonical, fixture: Fixture) -> None:
    diffs = differences(fixture, outputs)
    if any(diffs.values()):
        shown = [k for keys in diffs.values() for k in keys[:SHOWN]]
        old, note = None, ""
        if _pinned_available():
            try:
                old = pinned_records(shown)
            except (OSError, subprocess.CalledProcessError) as exc:
                note = f"\n(running the pinned commit for the old records failed: {exc})"
        pytest.fail(describe(diffs, outputs, old) + note, pytrace=False)


def test_the_inputs_exercise_every_rule(
    outputs: Canonical, values: dict[str, list[dict[str, Any]]]
) -> None:
    dead = values[DEAD_LETTER]
    reasons = Counter(d["reason"] for d in dead)
    assert all(reasons[r] > 0 for r in REASONS), reasons
    assert any(d["truncated"] for d in dead)
    assert any(d["payload_encoding"] == "base64" for d in dead)
    assert any(d["key_encoding"] == "base64" for d in dead)
    assert {d["topic"] for d in dead} == {TXN_TOPIC, CB_TOPIC}
    # Chargebacks into closed windows, besides far-future records.
    assert any(d["reason"] == "timestamp" and d["error"].startswith("window") for d in dead)
    scores = values[SCORE]
    late = sum(s["late"] for s in scores)
    assert 0 < late < len(scores) // 100, late
    assert len({s["decision"] for s in scores}) == 3
    assert len(values[AGGREGATE]) > 1_000
    assert outputs.counted["drift"] > 0 and outputs.counted["quality"] > 0
    assert not outputs.repeated


def test_every_transaction_ends_as_one_score_or_one_dead_letter(
    inputs: GoldenInputs, outputs: Canonical
) -> None:
    ended: Counter[str] = Counter()
    for key in outputs.records:
        kind, _, where = key.partition(" ")
        if kind in (SCORE, DEAD_LETTER):
            ended[where] += 1
    expected = {
        f"{source}@{r.offset}"
        for source in SOURCES
        if source.startswith(TXN_TOPIC)
        for r in inputs.parts[source]
    }
    transactions = {w for w in ended if w.startswith(TXN_TOPIC)}
    assert transactions == expected
    assert max(ended.values()) == 1


def test_the_fixture_holds_every_kind_of_record(fixture: Fixture) -> None:
    kinds = Counter(key.partition(" ")[0] for key in fixture.digests)
    assert kinds[SCORE] > 190_000 and kinds[DEAD_LETTER] > 1_000 and kinds[AGGREGATE] > 1_000
    assert fixture.meta["records"] == dict(kinds)


def test_a_changed_feature_is_reported(outputs: Canonical, fixture: Fixture) -> None:
    key = next(k for k in outputs.records if k.startswith(SCORE + " "))
    record = json.loads(outputs.records[key])
    record["value"]["features"]["card_count_1h"] += 1
    changed = Canonical({**outputs.records, key: json.dumps(record).encode()})
    diffs = differences(fixture, changed)
    assert diffs["changed"] == [key]
    assert not diffs["missing"] and not diffs["unexpected"]
    report = describe(diffs, changed, {key: outputs.records[key].decode()})
    assert f"changed: {key}" in report
    assert '"card_count_1h":' in report and "old: " in report
    assert "value.features.card_count_1h: " in report


def test_the_fixture_file_round_trips(outputs: Canonical, tmp_path: Any) -> None:
    path = tmp_path / "outputs.npz"
    write_fixture(path, outputs, {"records": {}})
    again = read_fixture(path)
    assert not any(differences(again, outputs).values())
    assert again.meta["digest_bytes"] == 6
