"""Key encoding: a one-byte namespace, then the entity key, then big-endian time.

Entity keys are length-prefixed, so keys of one entity are contiguous and, within
it, ordered by time; ids may hold any character (even NUL) without colliding.

>>> window_key("m-7", 300_000) < window_key("m-7", 600_000)
True
>>> parse_timer_key(timer_key(b"T", 600_000, "m-7"))
(600000, 'm-7')
"""

from __future__ import annotations

import struct

CARD = b"C"
CARD_EXPIRY = b"E"
WINDOW = b"W"
CLOSE_TIMER = b"T"
PURGE_TIMER = b"P"
QUALITY = b"Q"

_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")


def card_key(card_id: str) -> bytes:
    """Key of a card's state blob."""
    return CARD + card_id.encode()


def window_key(merchant_id: str, start_ms: int) -> bytes:
    """Key of a merchant's tumbling window starting at ``start_ms`` (at or after the epoch)."""
    raw = merchant_id.encode()
    return WINDOW + _U16.pack(len(raw)) + raw + _U64.pack(start_ms)


def timer_key(namespace: bytes, at_ms: int, entity: str) -> bytes:
    """A timer index entry: due at ``at_ms`` for ``entity``; scans find due ones in order."""
    return namespace + _U64.pack(at_ms) + entity.encode()


def timer_range_end(namespace: bytes, up_to_ms: int) -> bytes:
    """Exclusive end of a scan over timers due at or before ``up_to_ms``.

    Timers are never due before the epoch, so a negative ``up_to_ms`` (a
    watermark just after 1970) gives an empty range rather than an error.

    >>> timer_range_end(b"T", -5_000) == timer_range_end(b"T", -1)
    True
    """
    return namespace + _U64.pack(max(up_to_ms + 1, 0))


def parse_timer_key(key: bytes, namespace_len: int = 1) -> tuple[int, str]:
    """(due time, entity) of a timer key whose namespace is ``namespace_len`` bytes."""
    return _U64.unpack_from(key, namespace_len)[0], key[namespace_len + 8 :].decode()


def shard_namespace(namespace: bytes, shard: str) -> bytes:
    """A timer namespace private to one shard, for stores shared by several shards.

    >>> shard_namespace(CLOSE_TIMER, "m3")
    b'T\\x02m3'
    """
    raw = shard.encode()
    return namespace + bytes([len(raw)]) + raw
