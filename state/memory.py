"""In-memory state store: the reference implementation of the contract, for tests and replays."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence

from schemas.errors import StateError
from state.store import Ranges


class MemoryStore:
    """A sorted in-memory map with the :class:`state.store.StateStore` behaviour."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self._closed = False

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """See StateStore."""
        self._check()
        return [self._data.get(k) for k in keys]

    def write(self, changes: Mapping[bytes, bytes | None], *, cleared: Ranges = ()) -> None:
        """See StateStore."""
        self._check()
        for start, end in cleared:
            lo = bisect.bisect_left(self._keys, start)
            hi = max(lo, bisect.bisect_left(self._keys, end))
            for key in self._keys[lo:hi]:
                del self._data[key]
            del self._keys[lo:hi]
        for key, value in changes.items():
            if value is None:
                if self._data.pop(key, None) is not None:
                    del self._keys[bisect.bisect_left(self._keys, key)]
            else:
                if key not in self._data:
                    bisect.insort(self._keys, key)
                self._data[key] = bytes(value)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """See StateStore."""
        self._check()
        lo = bisect.bisect_left(self._keys, start)
        hi = bisect.bisect_left(self._keys, end)
        for key in self._keys[lo:hi]:
            yield key, self._data[key]

    def approximate_keys(self) -> int:
        """See StateStore."""
        return len(self._keys)

    def close(self) -> None:
        """See StateStore."""
        self._closed = True

    def _check(self) -> None:
        if self._closed:
            raise StateError("the store is closed")
