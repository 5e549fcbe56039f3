"""The state-store contract every implementation passes (``tests/contract``).

A store maps byte keys to byte values, ordered by key. Reads are batched
(``get_many``) and every write is one atomic batch (``write``: a value puts, a
``None`` deletes, and ``cleared`` ranges are deleted whole), so an operator
applies a whole input batch's changes at once or not at all. ``scan`` walks
``[start, end)`` in key order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

# Half-open key ranges ``[start, end)`` a write deletes whole.
Ranges = Sequence[tuple[bytes, bytes]]


class StateStore(Protocol):
    """Ordered byte key-value state with atomic batched writes."""

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values of ``keys`` in the same order; ``None`` where a key is absent."""
        ...

    def write(self, changes: Mapping[bytes, bytes | None], *, cleared: Ranges = ()) -> None:
        """Delete the ``cleared`` ranges, then apply puts (bytes) and deletes (None), atomically.

        A put into a cleared range survives: ranges go first.
        """
        ...

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``start <= key < end`` in key order."""
        ...

    def approximate_keys(self) -> int:
        """Roughly how many keys the store holds (for metrics and tests)."""
        ...

    def close(self) -> None:
        """Release the store; later calls are errors."""
        ...
