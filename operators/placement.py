"""Shard keys that bytewax spreads evenly over a cluster's workers.

bytewax sends a stateful step's key to a worker by a hash of the key
(:func:`operators.internals.bytewax_worker`, an engine internal). Plain names spread
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

from operators.internals import bytewax_worker

# Names tried per shard before giving up on an even spread (each try lands on a
# given worker with probability 1/workers, so this is never reached in practice).
_MAX_TRIES = 10_000


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
