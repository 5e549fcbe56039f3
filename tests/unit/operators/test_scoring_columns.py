"""The columnar scoring step against a per-record oracle: the same bytes, decisions and samples.

The oracle is the per-record reading of the contract: each record's card and
merchant features (a dict, in block order) completed with its transaction
features, its deciding model (canary by card, else active; the rules with the
active thresholds when the model fails), one ``orjson.dumps`` of the record's
dict. Batches are random (seeded): edge float values (NaN, infinities),
strings that need escaping, late records, times past 2100, several shards cut
into small model calls.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from prometheus_client import CollectorRegistry

from models.onnx_scorer import OnnxModel, load_model
from models.registry import DeploymentConfig, ModelRegistry
from models.rules import RULES_VERSION, rules_score
from operators import score_records, scoring
from operators.breaker import BreakerConfig
from operators.columns import BLOCK_COLUMNS
from operators.drift import DRIFT_KEY, DriftSample
from operators.features import txn_features
from operators.messages import OutMessage, RawRecord
from operators.metrics import ServiceMetrics
from operators.quality import Decisions
from operators.scoring import Scorer, ScoreStep, ScoringConfig
from schemas.records import Transaction
from schemas.timefmt import MAX_MS, format_ms
from tests.unit.operators.blocks import UPSTREAM, Featured, TxnRecord, block_of

COMMITTED = Path(__file__).resolve().parents[3] / "models" / "artifacts" / "fraud-gbt-1"
NOW = 1_795_392_999_123
EDGE_VALUES = (
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.1,
    1e-7,
    1e-5,
    5e-324,
    2.2250738585072014e-308,
    3.4028234663852886e38,  # the largest float32: model inputs are float32
    1e16,
    1e21,
    123456789.123,
    0.30000000000000004,
    float("nan"),  # not finite: written as null
    float("inf"),
)
CHARS = 'abcXYZ019-_ ,:"\\/\n\t\x00\x1f\x7fé€😀%{}[]'


@dataclass(frozen=True)
class FlakyModel(OnnxModel):
    """A model that fails on every call."""

    def predict(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        raise RuntimeError("inference failed")


def _model_dir(tmp_path: Path, name: str, version: int, thresholds: dict[str, float]) -> Path:
    path = tmp_path / name
    shutil.copytree(COMMITTED, path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["version"] = version
    manifest["thresholds"] = thresholds
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def _loader(path: Path) -> OnnxModel:
    model = load_model(path)
    if path.name.startswith("broken"):
        return FlakyModel(model.manifest, model.session, model.input_name, model.output_name)
    return model


def _text(rng: random.Random, plain: bool) -> str:
    if plain:
        return f"id-{rng.randrange(10**9)}"
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(1, 12)))


def _value(rng: random.Random) -> float:
    if rng.random() < 0.3:
        return rng.choice(EDGE_VALUES)
    return rng.choice([rng.uniform(-5, 5), rng.expovariate(0.01), float(rng.randrange(50))])


def _featured(rng: random.Random, i: int, plain: bool) -> Featured:
    features = {n: _value(rng) for n in UPSTREAM}
    time_ms = rng.choice([rng.randrange(0, MAX_MS + 1), NOW - rng.randrange(10**8)])
    txn = Transaction(
        event_id=_text(rng, plain),
        card_id=_text(rng, plain),
        merchant_id=_text(rng, plain),
        amount=rng.choice([0.0, -0.0, 0.01, 1e9, rng.uniform(0, 3000)]),
        currency="EUR",
        event_time=time_ms,
        channel=rng.choice(["ecom", "pos", None, "ECOM"]),
        device_id=rng.choice([None, "d-1"]),
    )
    raw = RawRecord(
        rng.choice(["transactions", "tx-b"]),
        rng.randrange(4),
        i,
        None,
        b"{}",
        rng.choice([NOW - rng.randrange(10**7), NOW + 5, -1]),
    )
    return Featured(TxnRecord(txn, raw, rng.random() < 0.2, 0), features)


def _shards(rng: random.Random, plain: bool) -> list[tuple[str, list[Featured]]]:
    return [
        (f"m{s}", [_featured(rng, 1000 * s + i, plain) for i in range(rng.randint(0, 12))])
        for s in range(rng.randint(1, 4))
    ]


def _predict(model: OnnxModel, rows: list[dict[str, Any]]) -> list[float]:
    names = model.manifest.feature_names
    matrix = np.array([[f[n] for n in names] for f in rows], dtype=np.float32)
    return [float(p) for p in model.predict(matrix).tolist()]


def _oracle(
    registry: ModelRegistry, broken: set[str], chunk: list[Featured], topic: str
) -> tuple[list[OutMessage], list[str], list[str]]:
    """Messages, decisions and deciding versions of one model call, record by record."""
    feats = [{**item.features, **txn_features(item.rec.txn)} for item in chunk]
    active = registry.active
    groups: dict[str, list[int]] = {}
    models: dict[str, OnnxModel] = {}
    for i, item in enumerate(chunk):
        role, model = registry.for_card(item.rec.txn.card_id)
        groups.setdefault(role, []).append(i)
        models[role] = model
    outcome: dict[int, tuple[float, str, str, bool]] = {}
    for name, idx in groups.items():
        model = models[name]
        if model.manifest.model_version in broken:
            for i in idx:
                p = rules_score(feats[i])
                outcome[i] = (p, active.manifest.thresholds.decide(p), RULES_VERSION, True)
        else:
            probs = _predict(model, [feats[i] for i in idx])
            for i, p in zip(idx, probs, strict=True):
                decision = model.manifest.thresholds.decide(p)
                outcome[i] = (p, decision, model.manifest.model_version, False)
    shadow: list[dict[str, object] | None] = [None] * len(chunk)
    if registry.shadow is not None and registry.shadow.manifest.model_version not in broken:
        version = registry.shadow.manifest.model_version
        shadow = [{"model_version": version, "score": p} for p in _predict(registry.shadow, feats)]
    messages = []
    for i, (item, f) in enumerate(zip(chunk, feats, strict=True)):
        txn, (score, decision, version, fallback) = item.rec.txn, outcome[i]
        body = {
            "event_id": txn.event_id,
            "card_id": txn.card_id,
            "merchant_id": txn.merchant_id,
            "event_time": format_ms(txn.event_time),
            "score": score,
            "decision": decision,
            "model_version": version,
            "fallback": fallback,
            "late": item.rec.late,
            "features": f,
            "shadow": shadow[i],
            "processed_at": format_ms(NOW),
        }
        raw = item.rec.raw
        messages.append(
            OutMessage(topic, txn.card_id.encode(), orjson.dumps(body), raw.source, raw.offset)
        )
    ordered = [outcome[i] for i in range(len(chunk))]
    return messages, [o[1] for o in ordered], [o[2] for o in ordered]


SCENARIOS: dict[str, dict[str, Any]] = {
    "active": {},
    "shadow": {"shadow": ("shadow", 7, {"review": 0.0, "decline": 0.5})},
    "canary": {"canary": ("canary", 2, {"review": 0.001, "decline": 0.01}), "share": 0.5},
    "fallback": {"active": ("broken-active", 3, {"review": 0.001, "decline": 0.01})},
    "all": {
        "active": ("broken-active", 3, {"review": 0.001, "decline": 0.01}),
        "canary": ("canary", 2, {"review": 0.001, "decline": 0.01}),
        "shadow": ("shadow", 7, {"review": 0.0, "decline": 0.5}),
        "share": 0.3,
    },
    "broken shadow": {"shadow": ("broken-shadow", 8, {"review": 0.0, "decline": 0.5})},
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("plain", [True, False], ids=["plain ids", "escaped ids"])
def test_step_equals_the_per_record_oracle(
    scenario: str, plain: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SCENARIOS[scenario]
    dirs = {
        role: _model_dir(tmp_path, *spec[role])
        for role in ("active", "shadow", "canary")
        if role in spec
    }
    broken = {f"fraud-gbt-{spec[r][1]}" for r in dirs if spec[r][0].startswith("broken")}
    config = DeploymentConfig(
        active=dirs.get("active", COMMITTED),
        shadow=dirs.get("shadow"),
        canary=dirs.get("canary"),
        canary_share=spec.get("share", 0.0),
    )
    registry = ModelRegistry(config, clock=lambda: 0.0, loader=_loader)
    metrics = ServiceMetrics.create(CollectorRegistry())
    # A breaker that never opens: every call tries the model, as the oracle assumes.
    breaker = BreakerConfig(failure_threshold=10**9, slow_call_s=60.0, cooldown_s=1.0)
    scoring_config = ScoringConfig(scores_topic="scores", breaker=breaker)
    scorer = Scorer(scoring_config, registry, monotonic=lambda: 0.0, metrics=metrics)
    step = ScoreStep(scoring_config, scorer, clock=lambda: NOW, metrics=metrics)
    monkeypatch.setattr(scoring, "MAX_MODEL_BATCH", 16)
    rng = random.Random(f"{scenario}-{plain}")
    active = registry.active.manifest.model_version
    for _ in range(12):
        shards = _shards(rng, plain)
        out = step([(shard, block_of(featured)) for shard, featured in shards])
        batch = [item for _shard, featured in shards for item in featured]
        expected: list[tuple[str, Any]] = []
        decided: list[str] = []
        for lo in range(0, len(batch), 16):
            chunk = batch[lo : lo + 16]
            messages, decisions, versions = _oracle(registry, broken, chunk, "scores")
            expected.append((shards[0][0], messages))
            decided.extend(decisions)
            rows = [i for i, v in enumerate(versions) if v == active]
            if rows:
                expected.append((DRIFT_KEY, (chunk, rows, messages)))
        first = 0
        for shard, featured in shards:
            mine = [
                (item.rec.txn.event_id, item.rec.txn.event_time, d)
                for item, d in zip(featured, decided[first : first + len(featured)], strict=True)
                if not item.rec.late
            ]
            first += len(featured)
            if mine:
                expected.append((shard, mine))
        assert len(out) == len(expected)
        for (key, got), (want_key, want) in zip(out, expected, strict=True):
            assert key == want_key
            if isinstance(got, DriftSample):
                chunk, rows, messages = want
                _check_sample(got, active, chunk, rows, messages)
            elif isinstance(got, Decisions):
                assert (got.shard, got.rows()) == (key, want)
            else:
                assert got == want


def _check_sample(
    sample: DriftSample,
    active: str,
    chunk: list[Featured],
    rows: list[int],
    messages: list[OutMessage],
) -> None:
    """The drift sample holds the active model's rows: features, scores and event times."""
    assert sample.model_version == active
    assert sample.names == BLOCK_COLUMNS
    feats = [{**chunk[i].features, **txn_features(chunk[i].rec.txn)} for i in rows]
    expected = np.array([[f[n] for n in BLOCK_COLUMNS] for f in feats], dtype=np.float64)
    assert sample.values.tobytes() == expected.tobytes()
    scores = [json.loads(messages[i].value)["score"] for i in rows]
    assert sample.scores.tolist() == scores
    assert sample.event_times.tolist() == [chunk[i].rec.txn.event_time for i in rows]


def test_an_empty_step_and_empty_shards() -> None:
    registry = ModelRegistry(DeploymentConfig(active=COMMITTED), clock=lambda: 0.0)
    metrics = ServiceMetrics.create(CollectorRegistry())
    config = ScoringConfig(scores_topic="scores")
    scorer = Scorer(config, registry, monotonic=lambda: 0.0, metrics=metrics)
    step = ScoreStep(config, scorer, clock=lambda: NOW, metrics=metrics)
    assert step([]) == []
    assert step([("m0", block_of([])), ("m1", block_of([]))]) == []
    assert scorer.score(block_of([])) == ([], [])


def test_float_columns_are_written_as_orjson_writes_each_python_float() -> None:
    """Any float64 bit pattern (subnormals, both zeros, NaN, infinities) reads as orjson's float."""
    rng = np.random.default_rng(11)
    values = rng.integers(0, 2**64, 50_000, dtype=np.uint64).view(np.float64)
    edges = [0.0, -0.0, 5e-324, 1e16, 1e-7, 0.1 + 0.2, float("nan"), float("inf"), -float("inf")]
    table = np.concatenate([values, edges]).reshape(-1, 1)
    assert score_records._dumped_floats(table) == orjson.dumps(table.ravel().tolist())
    small = np.array([[0.1, 1.5], [3.3e-3, 0.7]], dtype=np.float32)  # read as Python floats
    assert score_records._dumped_floats(small) == orjson.dumps(small.ravel().tolist())
    assert score_records._dumped_floats(np.zeros((0, 17))) == b"[]"
