"""Memory stores that record how they are used, for tests that check reads and writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from state.memory import MemoryStore
from state.store import Ranges


class RecordingStore(MemoryStore):
    """A memory store that records the keys read and the ranges each write clears."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[bytes] = []
        self.cleared: list[tuple[bytes, bytes]] = []

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self.read.extend(keys)
        return super().get_many(keys)

    def write(self, changes: Mapping[bytes, bytes | None], *, cleared: Ranges = ()) -> None:
        self.cleared.extend(cleared)
        super().write(changes, cleared=cleared)
