"""Route transactions to shards by card, so one card's events always meet the same state.

A shard is a stable hash of ``card_id`` (crc32, identical in every process and
run; Python's ``hash`` is salted per process). Bytewax assigns shard keys to
workers, so a batch is split into at most ``shards`` sub-batches that keep
their input order.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import bytewax.operators as op
from bytewax.dataflow import Stream

from operators.messages import TxnEnvelope


@dataclass(frozen=True, kw_only=True)
class ShardConfig:
    """How many shards the card key space is cut into."""

    shards: int


def shard_of(card_id: str, shards: int) -> str:
    """The shard key of a card.

    >>> shard_of("c-42", 16) == shard_of("c-42", 16)
    True
    """
    return f"s{zlib.crc32(card_id.encode()) % shards}"


def split_by_shard(batch: list[TxnEnvelope], shards: int) -> list[tuple[str, list[TxnEnvelope]]]:
    """Split one batch into per-shard batches, each in input order."""
    out: dict[str, list[TxnEnvelope]] = {}
    for env in batch:
        out.setdefault(shard_of(env.txn.card_id, shards), []).append(env)
    return list(out.items())


def key_by_card(
    step_id: str, up: Stream[list[TxnEnvelope]], config: ShardConfig
) -> Stream[tuple[str, list[TxnEnvelope]]]:
    """Keyed stream of per-shard batches."""
    return op.flat_map(step_id, up, lambda batch: split_by_shard(batch, config.shards))
