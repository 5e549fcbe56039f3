"""The model registry: which models serve, and hot reload when their artifacts change.

Three roles: ``active`` decides; ``shadow`` (optional) is scored beside it and
never affects the decision; ``canary`` (optional) decides for a stable share
of cards, chosen by crc32 of ``card_id``, so a card always meets the same
model. Every ``reload_interval_s`` (injected monotonic clock) the registry
looks at each role's directory (every file's mtime and size, the manifest and
the ONNX file included); when anything changed, it loads and verifies the new
version. The check runs on the scoring path, so it happens when there is
something to score. A version that fails to load (wrong sha256, malformed ONNX,
wrong input shape) is refused: the previous one keeps serving, and a log line
and ``streamscore_model_load_failures_total{reason}`` say why.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.manifest import MANIFEST_FILE
from models.onnx_scorer import OnnxModel, load_model
from schemas.errors import ModelError, ModelIntegrityError

log = logging.getLogger(__name__)

Role = Literal["active", "shadow", "canary"]
ROLES: tuple[Role, ...] = ("active", "shadow", "canary")
_SHARE_BUCKETS = 10_000


@dataclass(frozen=True, kw_only=True)
class DeploymentConfig:
    """Where each role's model directory is, the canary share, and how often to look."""

    active: Path
    shadow: Path | None = None
    canary: Path | None = None
    canary_share: float = 0.0
    reload_interval_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.canary_share <= 1.0:
            msg = "canary_share must be within [0, 1]"
            raise ValueError(msg)


class RegistryEvents:
    """What the registry reports; the entry point wires these to metrics."""

    def loaded(self, role: Role, model: OnnxModel | None) -> None:
        """A role now serves ``model`` (None: the role is empty)."""

    def refused(self, role: Role, reason: str, error: str) -> None:
        """A new version for ``role`` was refused; the old one keeps serving."""


class ModelRegistry:
    """Holds the serving models and reloads changed ones."""

    def __init__(
        self,
        config: DeploymentConfig,
        *,
        clock: Callable[[], float],
        events: RegistryEvents | None = None,
        loader: Callable[[Path], OnnxModel] = load_model,
    ) -> None:
        self._config = config
        self._clock = clock
        self._events = events or RegistryEvents()
        self._loader = loader
        self._models: dict[Role, OnnxModel | None] = dict.fromkeys(ROLES)
        self._seen: dict[Role, _Stamp | None] = dict.fromkeys(ROLES)
        self._next_check = clock() + config.reload_interval_s
        for role in ROLES:
            path = self._path(role)
            if path is not None:
                # At startup a bad model is fatal: there is nothing older to keep serving.
                self._seen[role] = _stamp(path)
                self._models[role] = loader(path)
            self._events.loaded(role, self._models[role])
        self._canary_cut = round(config.canary_share * _SHARE_BUCKETS)

    @property
    def active(self) -> OnnxModel:
        """The model that decides (for cards outside the canary share)."""
        model = self._models["active"]
        assert model is not None
        return model

    @property
    def shadow(self) -> OnnxModel | None:
        """The shadow model, if one is deployed."""
        return self._models["shadow"]

    def for_card(self, card_id: str) -> tuple[Role, OnnxModel]:
        """The role and model that decide for ``card_id``."""
        canary = self._models["canary"]
        if canary is not None and self.in_canary(card_id):
            return "canary", canary
        return "active", self.active

    def deciders(self, card_ids: Sequence[str]) -> dict[Role, tuple[OnnxModel, list[int]]]:
        """Which role and model decide each card: role -> (model, positions in ``card_ids``)."""
        if not card_ids:
            return {}
        if self._models["canary"] is None:  # the active model decides for every card
            return {"active": (self.active, list(range(len(card_ids))))}
        groups: dict[Role, tuple[OnnxModel, list[int]]] = {}
        for i, card_id in enumerate(card_ids):
            role, model = self.for_card(card_id)
            groups.setdefault(role, (model, []))[1].append(i)
        return groups

    def in_canary(self, card_id: str) -> bool:
        """Whether the card falls in the canary share (stable across processes and runs)."""
        return zlib.crc32(card_id.encode()) % _SHARE_BUCKETS < self._canary_cut

    def maybe_reload(self) -> None:
        """Reload any role whose manifest changed, at most once per interval."""
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + self._config.reload_interval_s
        for role in ROLES:
            self.reload(role)

    def reload(self, role: Role) -> bool:
        """Load ``role`` again if its manifest changed; True when a new version serves."""
        path = self._path(role)
        if path is None:
            return False
        stamp = _stamp(path)
        if stamp == self._seen[role]:
            return False
        self._seen[role] = stamp
        try:
            model = self._loader(path)
        except ModelIntegrityError as exc:
            self._refuse(role, "sha256", exc)
            return False
        except ModelError as exc:
            self._refuse(role, "malformed", exc)
            return False
        old = self._models[role]
        self._models[role] = model
        log.info(
            "%s model %s -> %s",
            role,
            old.manifest.model_version if old else None,
            model.manifest.model_version,
        )
        self._events.loaded(role, model)
        return True

    def _refuse(self, role: Role, reason: str, exc: Exception) -> None:
        current = self._models[role]
        log.error(
            "refusing new %s model in %s (%s): %s; %s keeps serving",
            role,
            self._path(role),
            reason,
            exc,
            current.manifest.model_version if current else "nothing",
        )
        self._events.refused(role, reason, str(exc))

    def _path(self, role: Role) -> Path | None:
        path: Path | None = getattr(self._config, role)
        return path


_Stamp = tuple[tuple[str, int, int], ...]


def _stamp(model_dir: Path) -> _Stamp | None:
    """Name, mtime and size of every file of a model directory; None without a manifest.

    Any file counts, not only the manifest: an ONNX file replaced under an
    unchanged manifest is a change too (and is refused when its sha256 no
    longer matches).
    """
    try:
        if not (model_dir / MANIFEST_FILE).is_file():
            return None
        stats = [(p.name, p.stat()) for p in model_dir.iterdir() if p.is_file()]
    except OSError:
        return None
    return tuple(sorted((name, st.st_mtime_ns, st.st_size) for name, st in stats))
