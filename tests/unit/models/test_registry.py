"""Model registry: hot reload, refusal of bad versions, shadow and canary roles."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from models.onnx_scorer import OnnxModel
from models.registry import DeploymentConfig, ModelRegistry, RegistryEvents, Role
from schemas.errors import ModelIntegrityError

COMMITTED = Path(__file__).resolve().parents[3] / "models" / "artifacts" / "fraud-gbt-1"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder(RegistryEvents):
    def __init__(self) -> None:
        self.loaded_versions: list[tuple[Role, str | None]] = []
        self.refusals: list[tuple[Role, str]] = []

    def loaded(self, role: Role, model: OnnxModel | None) -> None:
        self.loaded_versions.append((role, model.manifest.model_version if model else None))

    def refused(self, role: Role, reason: str, error: str) -> None:
        self.refusals.append((role, reason))


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(COMMITTED, target)
    return target


def _rewrite_manifest(model_dir: Path, **changes: object) -> None:
    path = model_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_new_version_is_loaded_after_the_reload_interval(tmp_path: Path) -> None:
    active = _copy(tmp_path, "active")
    clock, events = Clock(), Recorder()
    config = DeploymentConfig(active=active, reload_interval_s=5)
    registry = ModelRegistry(config, clock=clock, events=events)
    assert registry.active.manifest.model_version == "fraud-gbt-1"

    _rewrite_manifest(active, version=2)
    clock.now = 4.9
    registry.maybe_reload()
    assert registry.active.manifest.model_version == "fraud-gbt-1"  # not yet
    clock.now = 5.0
    registry.maybe_reload()
    assert registry.active.manifest.model_version == "fraud-gbt-2"
    assert events.loaded_versions[-1] == ("active", "fraud-gbt-2")
    assert events.refusals == []


def test_wrong_sha256_is_refused_and_the_old_model_keeps_serving(tmp_path: Path) -> None:
    active = _copy(tmp_path, "active")
    events = Recorder()
    registry = ModelRegistry(DeploymentConfig(active=active), clock=Clock(), events=events)
    _rewrite_manifest(active, version=3, sha256="0" * 64)
    assert registry.reload("active") is False
    assert registry.active.manifest.model_version == "fraud-gbt-1"
    assert events.refusals == [("active", "sha256")]


def test_truncated_onnx_is_refused_as_malformed(tmp_path: Path) -> None:
    active = _copy(tmp_path, "active")
    events = Recorder()
    registry = ModelRegistry(DeploymentConfig(active=active), clock=Clock(), events=events)
    blob = (active / "model.onnx").read_bytes()[:500]
    (active / "model.onnx").write_bytes(blob)
    _rewrite_manifest(active, version=4, sha256=hashlib.sha256(blob).hexdigest())
    assert registry.reload("active") is False
    assert registry.active.manifest.model_version == "fraud-gbt-1"
    assert events.refusals == [("active", "malformed")]


def test_a_bad_model_at_startup_is_fatal(tmp_path: Path) -> None:
    active = _copy(tmp_path, "active")
    _rewrite_manifest(active, sha256="1" * 64)
    with pytest.raises(ModelIntegrityError):
        ModelRegistry(DeploymentConfig(active=active), clock=Clock())


def test_an_onnx_file_replaced_under_the_same_manifest_is_noticed(tmp_path: Path) -> None:
    active = _copy(tmp_path, "active")
    events = Recorder()
    registry = ModelRegistry(DeploymentConfig(active=active), clock=Clock(), events=events)
    (active / "model.onnx").write_bytes((active / "model.onnx").read_bytes() + b"\0")
    assert registry.reload("active") is False  # its sha256 no longer matches the manifest
    assert registry.active.manifest.model_version == "fraud-gbt-1"
    assert events.refusals == [("active", "sha256")]


def test_unchanged_manifest_is_not_reloaded(tmp_path: Path) -> None:
    active = _copy(tmp_path, "active")
    registry = ModelRegistry(DeploymentConfig(active=active), clock=Clock())
    assert registry.reload("active") is False


def test_canary_share_is_stable_by_card_and_close_to_the_setting(tmp_path: Path) -> None:
    config = DeploymentConfig(
        active=_copy(tmp_path, "active"), canary=_copy(tmp_path, "canary"), canary_share=0.1
    )
    first = ModelRegistry(config, clock=Clock())
    second = ModelRegistry(config, clock=Clock())
    cards = [f"c-{i}" for i in range(20_000)]
    roles = [first.for_card(c)[0] for c in cards]
    assert roles == [second.for_card(c)[0] for c in cards]
    share = roles.count("canary") / len(cards)
    assert 0.09 < share < 0.11


def test_no_canary_model_means_every_card_is_active(tmp_path: Path) -> None:
    config = DeploymentConfig(active=_copy(tmp_path, "active"), canary_share=0.5)
    registry = ModelRegistry(config, clock=Clock())
    assert {registry.for_card(f"c-{i}")[0] for i in range(1000)} == {"active"}
    assert registry.deciders(["c-1", "c-2", "c-3"]) == {"active": (registry.active, [0, 1, 2])}
    assert registry.deciders([]) == {}


def test_deciders_group_cards_as_for_card_decides_them(tmp_path: Path) -> None:
    config = DeploymentConfig(
        active=_copy(tmp_path, "active"), canary=_copy(tmp_path, "canary"), canary_share=0.3
    )
    registry = ModelRegistry(config, clock=Clock())
    cards = [f"c-{i}" for i in range(200)]
    groups = registry.deciders(cards)
    assert set(groups) == {"active", "canary"}
    for role, (model, positions) in groups.items():
        assert all(registry.for_card(cards[i]) == (role, model) for i in positions)
    assert sorted(i for _model, positions in groups.values() for i in positions) == list(range(200))


def test_shadow_role_is_loaded(tmp_path: Path) -> None:
    shadow = _copy(tmp_path, "shadow")
    _rewrite_manifest(shadow, version=9)
    config = DeploymentConfig(active=_copy(tmp_path, "active"), shadow=shadow)
    registry = ModelRegistry(config, clock=Clock())
    assert registry.shadow is not None
    assert registry.shadow.manifest.model_version == "fraud-gbt-9"


def test_canary_share_outside_unit_interval_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="canary_share"):
        DeploymentConfig(active=tmp_path, canary_share=1.5)
