"""The version guards of ``operators/internals.py``, and each reliance's fallback.

What each reliance does against the real library is checked where it is used:
placement against a real bytewax cluster (``test_placement.py``), the batch
observe against per-amount ``observe`` (``test_scoring.py``), the rebuilt
records against pydantic's own (``test_messages.py``), and the recovery store
against bytewax's own partitions (``tests/unit/flows/test_recovery.py``).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from bytewax.recovery import init_db_dir
from prometheus_client import CollectorRegistry

from operators import internals
from operators.metrics import LATENCY_BUCKETS, ServiceMetrics
from schemas.records import Transaction

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def other_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every guarded library reports a version other than the one verified."""
    monkeypatch.setattr(internals, "installed", lambda dist: "999.0")
    monkeypatch.setattr(internals, "fast", dict.fromkeys(internals.VERIFIED, False))
    internals._warn_once.cache_clear()


def test_verified_versions_are_the_pinned_and_installed_ones() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        name, _, pinned = dep.partition("==")
        pins[name] = pinned
    for dist, verified_at in internals.VERIFIED.items():
        assert pins[dist] == verified_at, dist
        assert internals.verified(dist), dist


def test_require_names_the_library_and_both_versions(other_versions: None) -> None:
    with pytest.raises(internals.InternalsError, match=r"bytewax 0\.21\.1 internals, but 999\.0"):
        internals.require("bytewax", "reading the recovery store")


def test_recovery_store_is_not_read_with_another_bytewax(
    tmp_path: Path, other_versions: None
) -> None:
    init_db_dir(tmp_path, 1)  # type: ignore[no-untyped-call]
    (part,) = tmp_path.glob("part-*.sqlite3")
    for read in (
        lambda: internals.snapshot_count(part),
        lambda: internals.partition_counts(part),
        lambda: internals.resume_epoch([part]),
        lambda: internals.delete_snapshots_from([part], 0),
    ):
        with pytest.raises(internals.InternalsError, match="recovery store"):
            read()


def test_recovery_store_reads_with_the_verified_bytewax(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 2)  # type: ignore[no-untyped-call]
    parts = sorted(tmp_path.glob("part-*.sqlite3"))
    assert [internals.partition_counts(p) for p in parts] == [{2}, {2}]
    assert [internals.snapshot_count(p) for p in parts] == [0, 0]
    assert internals.resume_epoch(parts) is None  # no run yet
    assert internals.delete_snapshots_from(parts, 0) == 0


def test_observe_many_falls_back_to_observe(
    other_versions: None, caplog: pytest.LogCaptureFixture
) -> None:
    amounts = [0.0005, 0.001, 0.02, 0.02, 3.0, 11.0]
    fast, slow = CollectorRegistry(), CollectorRegistry()
    with caplog.at_level(logging.WARNING, logger="operators.internals"):
        internals.observe_many(ServiceMetrics.create(slow).e2e_latency, np.asarray(amounts))
    assert "falling back to the public API" in caplog.text
    hist = ServiceMetrics.create(fast).e2e_latency
    for a in amounts:
        hist.observe(a)
    name = "streamscore_e2e_latency_seconds"
    for le in [*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"]:
        labels = {"le": le}
        assert fast.get_sample_value(f"{name}_bucket", labels) == slow.get_sample_value(
            f"{name}_bucket", labels
        )
    assert fast.get_sample_value(f"{name}_sum") == slow.get_sample_value(f"{name}_sum")


def _txn_values() -> tuple[dict[str, object], set[str]]:
    txn = Transaction.model_validate_json(
        b'{"event_id": "e-1", "card_id": "c-1", "merchant_id": "m-1", "amount": 12.5,'
        b' "currency": "EUR", "event_time": 1795392000000, "country": "FR"}'
    )
    return dict(txn.__dict__), set(txn.model_fields_set)


def test_rebuild_model_equals_the_validated_record() -> None:
    values, fields_set = _txn_values()
    want = Transaction.model_validate(values)
    got = internals.rebuild_model(Transaction, dict(values), set(fields_set))
    assert got == want and type(got) is Transaction
    assert got.model_fields_set == fields_set
    assert got.model_dump() == want.model_dump()


def test_rebuild_model_falls_back_to_model_construct(other_versions: None) -> None:
    values, fields_set = _txn_values()
    fast = Transaction.model_validate(values)
    got = internals.rebuild_model(Transaction, dict(values), set(fields_set))
    assert got == fast and got.model_fields_set == fields_set


def test_placement_keeps_its_hash_with_another_bytewax(
    other_versions: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="operators.internals"):
        worker = internals.bytewax_worker("c0", 2)
    assert worker == internals.siphash13(b"c0\xff") % 2
    assert "placement may be uneven" in caplog.text


# Run in a fresh interpreter: whether river.drift's init ran is per process.
_DETECTORS_ALONE = """
import pickle, sys
from operators.internals import river_detectors
adwin, page_hinkley = river_detectors()
assert "scipy.stats" not in sys.modules and "sklearn" not in sys.modules, "init ran"
detector = adwin(delta=0.002)
detector.update(0.5)
assert type(pickle.loads(pickle.dumps(detector))) is adwin
import river.drift
import river.drift.adwin
from river.drift import KSWIN
assert river.drift.ADWIN is adwin and river.drift.adwin.ADWIN is adwin
assert river.drift.PageHinkley is page_hinkley and "KSWIN" in river.drift.__all__
print("ok")
"""

_SERVICE_IMPORTS = """
import sys
import flows.cli, flows.main
flows.cli.build_parser()
print(sorted(m for m in ("sklearn", "scipy.stats", "river.datasets") if m in sys.modules))
"""


def _fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_river_detectors_load_without_the_drift_init_and_stay_river_s_own() -> None:
    assert _fresh(_DETECTORS_ALONE) == "ok"


def test_the_service_imports_neither_scikit_learn_nor_scipy_stats() -> None:
    assert _fresh(_SERVICE_IMPORTS) == "[]"


def test_river_detectors_fall_back_to_the_drift_package(other_versions: None) -> None:
    import river.drift

    assert internals.river_detectors() == (river.drift.ADWIN, river.drift.PageHinkley)
