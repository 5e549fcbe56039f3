"""Shard keys that bytewax spreads evenly over a cluster's workers.

bytewax 0.21 sends a stateful step's key to worker ``hash(key) % workers``,
where the hash is Rust's ``DefaultHasher``: SipHash-1-3 with zero keys over
the key's UTF-8 bytes and a ``0xff`` terminator (``src/timely.rs``,
``PartitionFn``; ``src/operators.rs``, ``stateful_batch``). Plain names spread
unevenly: ``c0``..``c15`` on two workers land 10 and 6, ``m0``..``m15`` 5 and
11, so one worker would do two thirds of the merchant windows, scoring and
quality while the other waited.

:func:`shard_keys` names shard ``i`` so that it lands on worker ``i % workers``:
``c{i}`` when it does already (always, with one worker), otherwise ``c{i}.{n}``
with the smallest ``n`` that does. This is placement only: every record of a
card or merchant still goes to one shard whatever the names, so a bytewax that
hashed differently would only place shards less evenly, never split one.
"""

from __future__ import annotations

from functools import lru_cache

_MASK = (1 << 64) - 1
# Names tried per shard before giving up on an even spread (each try lands on a
# given worker with probability 1/workers, so this is never reached in practice).
_MAX_TRIES = 10_000


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & _MASK


def siphash13(data: bytes, k0: int = 0, k1: int = 0) -> int:
    """SipHash-1-3 of ``data`` as an unsigned 64-bit integer (Rust's ``SipHasher13``).

    >>> hex(siphash13(b""))
    '0xd1fba762150c532c'
    """
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(count: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(count):
            v0 = (v0 + v1) & _MASK
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    tail = len(data) % 8
    for offset in range(0, len(data) - tail, 8):
        m = int.from_bytes(data[offset : offset + 8], "little")
        v3 ^= m
        rounds(1)
        v0 ^= m
    last = ((len(data) & 0xFF) << 56) | int.from_bytes(data[len(data) - tail :], "little")
    v3 ^= last
    rounds(1)
    v0 ^= last
    v2 ^= 0xFF
    rounds(3)
    return v0 ^ v1 ^ v2 ^ v3


def bytewax_worker(key: str, workers: int) -> int:
    """The worker bytewax 0.21 routes a stateful step's ``key`` to, of ``workers``."""
    return siphash13(key.encode() + b"\xff") % workers


@lru_cache(maxsize=16)
def shard_keys(prefix: str, shards: int, workers: int) -> tuple[str, ...]:
    """Keys of ``shards`` shards named ``prefix``: shard ``i`` on worker ``i % workers``.

    >>> shard_keys("c", 4, 1)
    ('c0', 'c1', 'c2', 'c3')
    >>> [bytewax_worker(k, 2) for k in shard_keys("m", 4, 2)]
    [0, 1, 0, 1]
    """
    if shards < 1 or workers < 1:
        raise ValueError(f"need at least one shard and one worker, got {shards} and {workers}")
    keys = []
    for i in range(shards):
        want = i % workers
        for n in range(_MAX_TRIES):
            key = f"{prefix}{i}" if n == 0 else f"{prefix}{i}.{n}"
            if bytewax_worker(key, workers) == want:
                break
        else:  # pragma: no cover - 1 in workers**10000
            key = f"{prefix}{i}"
        keys.append(key)
    return tuple(keys)
