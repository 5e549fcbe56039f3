"""Scoring operator: batched scores, decisions, shadow, canary, breaker and rules fallback."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from flows.testing import ReplayRecord, run_log
from models.onnx_scorer import OnnxModel, load_model
from models.registry import DeploymentConfig, ModelRegistry
from models.rules import RULES_VERSION, rules_score
from operators import scoring
from operators.breaker import BreakerConfig
from operators.columns import BLOCK_COLUMNS, TXN_FEATURES
from operators.drift import DRIFT_KEY, DriftSample
from operators.features import txn_features
from operators.internals import observe_many
from operators.messages import RawRecord
from operators.metrics import LATENCY_BUCKETS, ServiceMetrics
from operators.quality import Decisions
from operators.scoring import Scorer, ScoringConfig
from schemas.records import Transaction
from tests.unit.operators.blocks import Featured, TxnRecord, block_of

COMMITTED = Path(__file__).resolve().parents[3] / "models" / "artifacts" / "fraud-gbt-1"
T0 = 1_795_392_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _featured(n: int) -> list[Featured]:
    records = []
    for i in range(n):
        body = {
            "event_id": f"e{i}",
            "card_id": f"c{i % 17}",
            "merchant_id": f"m{i % 5}",
            "amount": float(1 + (i * 37) % 400),
            "currency": "EUR",
            "event_time": T0 + i * 20_000,
            "channel": "ecom" if i % 3 else "pos",
        }
        records.append(
            ReplayRecord("transaction", 0, i, None, json.dumps(body).encode(), T0 + i * 20_000)
        )
    # What the merchant stage hands to scoring: the flow's rows before transaction features.
    by_id = {json.loads(r.value)["event_id"]: r for r in records}
    out = []
    for row in run_log(records, flush=False).rows:
        r = by_id[row.event_id]
        raw = RawRecord("transactions", r.partition, r.offset, r.key, r.value, r.timestamp_ms)
        env = TxnRecord(Transaction.model_validate_json(r.value), raw, row.late, 0)
        features = {k: v for k, v in row.features.items() if k not in TXN_FEATURES}
        out.append(Featured(env, features))
    return out


def _scorer(
    registry: ModelRegistry, clock: Clock, failures: int = 3
) -> tuple[Scorer, ServiceMetrics]:
    metrics = ServiceMetrics.create(CollectorRegistry())
    config = ScoringConfig(
        scores_topic="scores",
        breaker=BreakerConfig(failure_threshold=failures, slow_call_s=60.0, cooldown_s=10.0),
    )
    return Scorer(config, registry, monotonic=clock, metrics=metrics), metrics


@dataclass(frozen=True)
class FlakyModel(OnnxModel):
    """The committed model, failing while ``broken[0]`` is true; counts its calls."""

    broken: list[bool]
    calls: list[int]

    def predict(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        self.calls[0] += 1
        if self.broken[0]:
            raise RuntimeError("inference failed")
        return super().predict(features)


def _flaky(broken: bool) -> FlakyModel:
    real = load_model(COMMITTED)
    return FlakyModel(real.manifest, real.session, real.input_name, real.output_name, [broken], [0])


def test_scores_decisions_and_features_per_transaction() -> None:
    clock = Clock()
    registry = ModelRegistry(DeploymentConfig(active=COMMITTED), clock=clock)
    scorer, _ = _scorer(registry, clock)
    batch = _featured(40)
    feats, outcomes = scorer.score(block_of(batch))
    model = registry.active
    names = model.manifest.feature_names
    expected = model.predict(np.array([[f[n] for n in names] for f in feats], dtype=np.float32))
    assert [o.score for o in outcomes] == expected.tolist()
    for item, f, o in zip(batch, feats, outcomes, strict=True):
        assert f == {**item.features, **txn_features(item.rec.txn)}
        assert list(f) == list(BLOCK_COLUMNS)  # a score record's order
        assert o.decision == model.manifest.thresholds.decide(o.score)
        assert (o.model_version, o.fallback, o.shadow) == ("fraud-gbt-1", False, None)


def test_scores_do_not_depend_on_batching() -> None:
    clock = Clock()
    scorer, _ = _scorer(ModelRegistry(DeploymentConfig(active=COMMITTED), clock=clock), clock)
    batch = _featured(30)
    whole = [o.score for o in scorer.score(block_of(batch))[1]]
    one_by_one = [scorer.score(block_of([item]))[1][0].score for item in batch]
    assert whole == one_by_one


def test_shadow_score_is_reported_and_never_changes_the_decision(tmp_path: Path) -> None:
    shadow_dir = tmp_path / "shadow"
    shutil.copytree(COMMITTED, shadow_dir)
    manifest = json.loads((shadow_dir / "manifest.json").read_text())
    manifest["version"] = 7
    manifest["thresholds"] = {"review": 0.0, "decline": 0.0}  # would decline everything
    (shadow_dir / "manifest.json").write_text(json.dumps(manifest))
    clock = Clock()
    plain, _ = _scorer(ModelRegistry(DeploymentConfig(active=COMMITTED), clock=clock), clock)
    with_shadow, _ = _scorer(
        ModelRegistry(DeploymentConfig(active=COMMITTED, shadow=shadow_dir), clock=clock), clock
    )
    batch = _featured(25)
    base = plain.score(block_of(batch))[1]
    shadowed = with_shadow.score(block_of(batch))[1]
    assert [o.decision for o in shadowed] == [o.decision for o in base]
    for o in shadowed:
        assert o.shadow == {"model_version": "fraud-gbt-7", "score": o.score}


def test_canary_share_one_routes_every_card_to_the_canary(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    shutil.copytree(COMMITTED, canary)
    manifest = json.loads((canary / "manifest.json").read_text())
    manifest["version"] = 2
    (canary / "manifest.json").write_text(json.dumps(manifest))
    clock = Clock()
    config = DeploymentConfig(active=COMMITTED, canary=canary, canary_share=1.0)
    scorer, metrics = _scorer(ModelRegistry(config, clock=clock), clock)
    outcomes = scorer.score(block_of(_featured(10)))[1]
    assert {o.model_version for o in outcomes} == {"fraud-gbt-2"}
    assert metrics.scored.labels("fraud-gbt-2")._value.get() == 10


def test_failing_model_falls_back_to_rules_then_breaker_opens_and_recovers() -> None:
    clock = Clock()
    model = _flaky(broken=True)
    registry = ModelRegistry(
        DeploymentConfig(active=COMMITTED), clock=clock, loader=lambda _path: model
    )
    scorer, metrics = _scorer(registry, clock, failures=3)
    batch = _featured(5)

    for _ in range(3):
        feats, outcomes = scorer.score(block_of(batch))
        assert all(o.fallback and o.model_version == RULES_VERSION for o in outcomes)
        assert [o.score for o in outcomes] == [rules_score(f) for f in feats]
    assert model.calls[0] == 3
    assert metrics.breaker_open.labels("active")._value.get() == 1

    scorer.score(block_of(batch))  # open: the model is not even tried
    assert model.calls[0] == 3
    assert metrics.fallback._value.get() == 4 * len(batch)

    model.broken[0] = False
    clock.now = 10.5  # cool-down over: one trial, which succeeds and closes the breaker
    outcomes = scorer.score(block_of(batch))[1]
    assert model.calls[0] == 4
    assert not any(o.fallback for o in outcomes)
    assert metrics.breaker_open.labels("active")._value.get() == 0


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_batches(n: int) -> None:
    clock = Clock()
    scorer, _ = _scorer(ModelRegistry(DeploymentConfig(active=COMMITTED), clock=clock), clock)
    assert len(scorer.score(block_of(_featured(n)))[1]) == n


def _histograms_after(amounts: list[float]) -> tuple[CollectorRegistry, CollectorRegistry]:
    """Registries whose e2e histogram observed ``amounts``: one at a time, and in one batch."""
    each, many = CollectorRegistry(), CollectorRegistry()
    one = ServiceMetrics.create(each).e2e_latency
    for a in amounts:
        one.observe(a)
    observe_many(ServiceMetrics.create(many).e2e_latency, np.asarray(amounts, dtype=np.float64))
    return each, many


def _same_buckets(each: CollectorRegistry, many: CollectorRegistry) -> None:
    name = "streamscore_e2e_latency_seconds"
    for le in [*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"]:
        labels = {"le": le}
        assert each.get_sample_value(f"{name}_bucket", labels) == many.get_sample_value(
            f"{name}_bucket", labels
        )
    assert each.get_sample_value(f"{name}_count") == many.get_sample_value(f"{name}_count")


@given(st.lists(st.floats(min_value=-1, max_value=20, allow_nan=False), max_size=50))
def test_observe_many_matches_observe_per_amount(amounts: list[float]) -> None:
    amounts = [*amounts, 0.001, 0.0015, 10.0, 11.0, 0.0]  # bucket bounds and beyond
    each, many = _histograms_after(amounts)
    _same_buckets(each, many)
    name = "streamscore_e2e_latency_seconds"
    assert each.get_sample_value(f"{name}_sum") == pytest.approx(
        many.get_sample_value(f"{name}_sum")
    )


def test_observe_many_counts_nan_and_infinities_as_observe_does() -> None:
    """NaN lands in no bucket; -inf in the first; +inf only in +Inf."""
    each, many = _histograms_after([float("nan"), float("-inf"), float("inf"), 0.5])
    _same_buckets(each, many)


def test_one_step_is_scored_together_in_bounded_model_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several shards' batches in one step: chunked model calls, decisions kept per shard."""
    monkeypatch.setattr(scoring, "MAX_MODEL_BATCH", 8)
    clock = Clock()
    model = _flaky(broken=False)
    registry = ModelRegistry(
        DeploymentConfig(active=COMMITTED), clock=clock, loader=lambda _path: model
    )
    scorer, metrics = _scorer(registry, clock)
    featured = _featured(10)
    featured[3].rec.late = True  # scored, but never a decision for quality
    shards = [
        ("m0", block_of(featured[:3])),
        ("m1", block_of(featured[3:7])),
        ("m2", block_of(featured[7:])),
    ]

    step = scoring.ScoreStep(
        ScoringConfig(scores_topic="scores"),
        scorer,
        clock=lambda: T0 + 999_000,
        metrics=metrics,
    )
    out = step(shards)

    # Three kinds of keyed output, told apart by the value's type as the flow does.
    messages = [(k, v) for k, v in out if isinstance(v, list)]
    samples = [v for k, v in out if isinstance(v, DriftSample) and k == DRIFT_KEY]
    decisions = [(k, v) for k, v in out if isinstance(v, Decisions)]
    assert len(messages) + len(samples) + len(decisions) == len(out)
    assert model.calls[0] == 2  # 10 rows of three shards, in calls of at most 8
    got = [json.loads(m.value)["event_id"] for _key, msgs in messages for m in msgs]
    assert got == [f.rec.txn.event_id for f in featured]
    assert len(samples) == 2
    by_shard = {shard: payload for shard, payload in decisions}
    assert sorted(by_shard) == ["m0", "m1", "m2"]
    assert all(payload.shard == shard for shard, payload in decisions)
    assert [d[0] for d in by_shard["m1"].rows()] == ["e4", "e5", "e6"]
    assert metrics.late._value.get() == 1
