"""The one error tree of StreamScore.

::

    StreamScoreError
    ├── ConfigError          a setting is missing or wrong; names the setting (startup)
    ├── ModelError           a model artifact cannot be loaded or trusted
    │   └── ModelIntegrityError   sha256 of the ONNX file differs from its manifest
    ├── TrainingError        training history unreadable, too short or unlabelled
    └── StateError           the state store is unusable (damaged, wrong layout)
        └── DiskFullError    its device is out of space; the state itself is intact

Bad input records are not errors: they are data, routed to the dead-letter topic.
"""

from __future__ import annotations


class StreamScoreError(Exception):
    """Root of every error StreamScore raises on purpose."""


class ConfigError(StreamScoreError):
    """A setting is missing or invalid; the message names the setting."""

    def __init__(self, setting: str, problem: str, *more: tuple[str, str]) -> None:
        problems = [(setting, problem), *more]
        super().__init__("; ".join(f"invalid setting {s}: {p}" for s, p in problems))
        self.setting = setting
        self.problems = problems


class ModelError(StreamScoreError):
    """A model artifact is missing, malformed or does not match its manifest."""


class ModelIntegrityError(ModelError):
    """The ONNX file's sha256 differs from the one its manifest records."""


class TrainingError(StreamScoreError):
    """The training history cannot be read or cannot give a model; says what is missing."""


# How to recover from state that cannot be served: the one fix every refusal names.
REBUILD_HINT = (
    "Rebuild it by replay: stop every process, delete the recovery dir and the state dir, "
    "and start again (or start with --rebuild-state)"
)


class StateError(StreamScoreError):
    """The state store cannot be opened or trusted."""


class DiskFullError(StateError):
    """The state's device is out of space: free space and restart; nothing is damaged."""
