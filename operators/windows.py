"""The windowing stages as bytewax stateful operators: card shards, then merchant shards.

Time rules: each stage's watermark is the minimum over all of its inputs,
which are registered up front (every input partition, every card shard), so a
window never closes before every input has spoken; idle inputs are left out.
Watermarks travel in-band with the batches, and a stage tells every
downstream shard when its watermark moved by a second or more, so shards with
no traffic still close their windows. Records that reach a shard in one
batch from several inputs are applied in ingest order (Kafka timestamp, then
partition and offset), so a single-process run applies a log in its order
(:mod:`flows.testing`).

State: the window contents live in the RocksDB store (see
:mod:`operators.card_features` and :mod:`operators.merchant_windows`), one
:class:`state.epochs.EpochStore` per shard: writes are buffered for the epoch
and committed at the shard's bytewax snapshot, which carries the shard's input
watermarks and its state version, so a resumed shard rolls RocksDB back to
exactly the point its inputs resume from.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream

from operators.card_features import CardConfig, CardFeatureEngine
from operators.card_kernel import compile_kernels
from operators.columns import BLOCK_COLUMNS
from operators.decode import DeadLetters
from operators.merchant_windows import MerchantConfig, MerchantWindowEngine
from operators.messages import (
    CbEnvelope,
    FeatureBlock,
    OutMessage,
    PartitionBatch,
    RawRecord,
    ShardInput,
    Tick,
    ToScore,
    TxnColumns,
    empty_block,
)
from operators.placement import shard_keys
from operators.quality import Labels, ShardWatermark
from operators.quarantine import PoisonRecordError
from operators.watermarks import NO_WATERMARK, MinWatermark
from schemas.errors import StreamScoreError
from state.epochs import DEFAULT_KEEP, EpochStore
from state.store import StateStore

BROADCAST_EVERY_MS = 1_000
DEAD = "dead"  # the key of dead letters on their way out

Routed = tuple[str, Any]


@dataclass(frozen=True, kw_only=True)
class WindowsConfig:
    """Shard counts, expected inputs and the per-stage configs."""

    shards: int
    txn_sources: tuple[str, ...]
    cb_sources: tuple[str, ...]
    card: CardConfig
    merchant: MerchantConfig
    undo_keep: int = DEFAULT_KEEP
    # Recovery on: shard state is committed at snapshots and rolled back on resume.
    versioned: bool = True
    # Write cached cards and windows back to the store at the end of the input: only
    # when something reads the store after the run (a resume, or a caller keeping it).
    # A fresh store without recovery is discarded at the next start.
    write_back_at_eof: bool = True
    # bytewax workers in the cluster (processes x workers each): shards are named to
    # spread evenly over them (:mod:`operators.placement`).
    workers: int = 1

    @property
    def card_keys(self) -> tuple[str, ...]:
        """Every card shard's key, by shard index."""
        return shard_keys("c", self.shards, self.workers)

    @property
    def merchant_keys(self) -> tuple[str, ...]:
        """Every merchant shard's key, by shard index."""
        return shard_keys("m", self.shards, self.workers)


def card_shard(card_id: str, shards: int, workers: int = 1) -> str:
    """Shard key of a card (crc32: the same in every process, unlike ``hash``).

    The shard is ``crc32 % shards``; ``workers`` only names it (see
    :mod:`operators.placement`).

    >>> card_shard("c-42", 16) == card_shard("c-42", 16)
    True
    """
    return shard_of(shard_keys("c", shards, workers), card_id)


def merchant_shard(merchant_id: str, shards: int, workers: int = 1) -> str:
    """Shard key of a merchant."""
    return shard_of(shard_keys("m", shards, workers), merchant_id)


def shard_of(keys: tuple[str, ...], entity_id: str) -> str:
    """The key, of a stage's shard ``keys``, that owns a card or merchant id."""
    return keys[zlib.crc32(entity_id.encode()) % len(keys)]


def route_partition_batch(batch: PartitionBatch, shards: int, workers: int = 1) -> list[Routed]:
    """Split a source batch: transactions to card shards, chargebacks to merchant shards.

    The batch's dead letters are not routed: they leave the flow at the source
    (see :func:`windows`).
    """
    card_keys, merchant_keys = shard_keys("c", shards, workers), shard_keys("m", shards, workers)
    txns = batch.txns
    by_card: dict[str, TxnColumns] = {}
    if len(card_keys) == 1:
        if txns:
            by_card[card_keys[0]] = txns
    else:
        rows: dict[str, list[int]] = {}
        for r, card_id in enumerate(txns.card_id):
            rows.setdefault(shard_of(card_keys, card_id), []).append(r)
        by_card = {key: txns.take(mine) for key, mine in rows.items()}
    by_merchant: dict[str, list[CbEnvelope]] = {}
    for cb in batch.chargebacks:
        by_merchant.setdefault(shard_of(merchant_keys, cb.cb.merchant_id), []).append(cb)
    stage_keys = card_keys if batch.kind == "transaction" else merchant_keys
    targets: tuple[str, ...] = stage_keys if batch.broadcast else ()
    routed = dict.fromkeys([*by_card, *by_merchant, *targets])
    return [
        (
            key,
            ShardInput(
                origin=batch.source,
                watermark=batch.watermark,
                idle=batch.idle,
                txns=by_card.get(key) or TxnColumns(),
                featured=None,
                chargebacks=by_merchant.get(key, []),
                target=key,
            ),
        )
        for key in routed
    ]


class _CardLogic(op.StatefulBatchLogic[ShardInput, Routed, Any]):
    def __init__(
        self,
        config: WindowsConfig,
        store: StateStore,
        resume: tuple[Any, ...] | None,
        on_state_size: Callable[[int], None],
        dead_letters: DeadLetters,
    ) -> None:
        self._config = config
        self._dead_letters = dead_letters
        self._base = store
        self._on_state_size = on_state_size
        self._wm = MinWatermark(config.txn_sources, resume[0] if resume else None)
        self._sent = resume[1] if resume else NO_WATERMARK
        self._state: EpochStore | None = None
        self._engine: CardFeatureEngine | None = None
        self._shard = ""  # this logic's key: the origin of what it sends on
        if resume:
            self._open(resume[2], resume[3])

    def _open(self, shard: str, version: int | None) -> CardFeatureEngine:
        self._shard = shard
        self._state = _shard_state(self._base, shard, version, self._config)
        self._engine = CardFeatureEngine(self._config.card, self._state, self._dead, shard=shard)
        return self._engine

    def _engine_for(self, values: list[ShardInput]) -> CardFeatureEngine:
        return self._engine or self._open(values[0].target, None)

    def _dead(self, raw: RawRecord, error: str) -> OutMessage:
        return self._dead_letters(raw, "duplicate", error)

    def on_batch(self, values: list[ShardInput]) -> tuple[list[Routed], bool]:
        merchant_keys = self._config.merchant_keys
        engine = self._engine_for(values)
        per_merchant: dict[str, FeatureBlock] = {}
        dead: list[OutMessage] = []
        txns = _txns_in_ingest_order([shard_input.txns for shard_input in values])
        if txns:
            with _blame(f"{self._shard} cards", engine):
                block, dups = engine.process(txns, self._wm)
            dead.extend(dups)
            per_merchant = _split(block, merchant_keys)
        for shard_input in values:
            self._wm.update(shard_input.origin, shard_input.watermark, idle=shard_input.idle)
        wm = self._wm.current()
        targets: list[str] | tuple[str, ...] = list(per_merchant)
        if wm - self._sent >= BROADCAST_EVERY_MS:
            engine.expire(wm)
            self._on_state_size(self._base.approximate_keys())
            self._sent = wm
            targets = merchant_keys
        idle = self._wm.all_idle()
        origin = self._shard
        out: list[Routed] = [
            (key, ShardInput(origin, wm, idle, TxnColumns(), per_merchant.get(key), [], key))
            for key in dict.fromkeys([*per_merchant, *targets])
        ]
        if dead:
            out.append((DEAD, dead))  # duplicates leave the flow here, not through the merchants
        return out, op.StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Routed], bool]:
        # The input ended (read to the end, or a graceful stop): leave the store
        # complete, if anything reads it after this run.
        if self._engine is not None and self._config.write_back_at_eof:
            self._engine.flush()
        return [], op.StatefulBatchLogic.RETAIN

    def snapshot(self) -> tuple[Any, ...]:
        state = self._state
        assert state is not None and self._engine is not None  # built with resume state or a batch
        if self._config.versioned:
            # The epoch's state must be complete in RocksDB. Without recovery bytewax
            # still snapshots every epoch, but nothing resumes from it: cached cards
            # are written back when evicted (and at the end of the input if the
            # store outlives the run).
            self._engine.flush()
        return (self._wm.snapshot(), self._sent, state.shard, state.commit())


# What a merchant shard emits: transactions to score, its chargeback labels and
# watermark for quality, or messages for the sink (dead letters, window aggregates).
MerchantOutput = ToScore | Labels | ShardWatermark | list[OutMessage]


class _MerchantLogic(op.StatefulBatchLogic[ShardInput, MerchantOutput, Any]):
    def __init__(
        self,
        config: WindowsConfig,
        store: StateStore,
        resume: tuple[Any, ...] | None,
        dead_letters: DeadLetters,
        on_chargebacks: Callable[[int], None],
        on_aggregates: Callable[[int], None],
    ) -> None:
        expected = (*config.card_keys, *config.cb_sources)
        self._config = config
        self._dead_letters = dead_letters
        self._on_chargebacks = on_chargebacks
        self._on_aggregates = on_aggregates
        self._base = store
        self._wm = MinWatermark(expected, resume[0] if resume else None)
        self._state: EpochStore | None = None
        self._engine: MerchantWindowEngine | None = None
        self._reported_wm = NO_WATERMARK
        if resume:
            self._open(resume[1], resume[2])

    def _open(self, shard: str, version: int | None) -> MerchantWindowEngine:
        self._state = _shard_state(self._base, shard, version, self._config)
        self._engine = MerchantWindowEngine(
            self._config.merchant, self._state, self._dead, shard=shard
        )
        return self._engine

    def _engine_for(self, values: list[ShardInput]) -> MerchantWindowEngine:
        return self._engine or self._open(values[0].target, None)

    def _dead(self, env: CbEnvelope, error: str) -> OutMessage:
        return self._dead_letters(env.raw, "timestamp", error)

    def on_batch(self, values: list[ShardInput]) -> tuple[list[MerchantOutput], bool]:
        block, steps = _in_ingest_order(values)
        engine = self._engine_for(values)
        with _blame(f"{values[0].target} merchants", engine):
            dead = engine.process(block, steps, self._wm)
        labels = [item.cb.txn_event_id for _, item in steps if isinstance(item, CbEnvelope)]
        if labels:
            self._on_chargebacks(len(labels) - len(dead))  # the others were dead letters
        for shard_input in values:
            self._wm.update(shard_input.origin, shard_input.watermark, idle=shard_input.idle)
        wm = self._wm.current()
        aggregates = engine.advance(wm)
        shard = self._state.shard if self._state else ""
        out: list[MerchantOutput] = []
        if labels:
            out.append(Labels(shard, labels))
        if wm != self._reported_wm:
            self._reported_wm = wm
            out.append(ShardWatermark(shard, wm))
        if len(block):
            out.append(ToScore(block))
        if dead:
            out.append(dead)
        if aggregates:
            self._on_aggregates(len(aggregates))
            out.append(aggregates)
        return out, op.StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[MerchantOutput], bool]:
        # The input ended (read to the end, or a graceful stop): leave the store
        # complete, if anything reads it after this run.
        if self._engine is not None and self._config.write_back_at_eof:
            self._engine.flush()
        return [], op.StatefulBatchLogic.RETAIN

    def snapshot(self) -> tuple[Any, ...]:
        state = self._state
        assert state is not None and self._engine is not None  # built with resume state or a batch
        if self._config.versioned:
            self._engine.flush()  # the epoch's state must be complete in RocksDB
        return (self._wm.snapshot(), state.shard, state.commit())


@contextmanager
def _blame(step: str, engine: CardFeatureEngine | MerchantWindowEngine) -> Iterator[None]:
    """Turn a bug a record triggers in ``engine`` into a PoisonRecordError naming the record.

    StreamScore's own errors (damaged state, a full disk) are not the record's
    doing and pass through as they are.
    """
    engine.at = None
    try:
        yield
    except StreamScoreError:
        raise
    except Exception as exc:
        if engine.at is None:
            raise
        raise PoisonRecordError(step, engine.at, exc) from exc


def _shard_state(
    base: StateStore, shard: str, version: int | None, config: WindowsConfig
) -> EpochStore:
    """The shard's view of the process store, rolled to the version bytewax resumes from."""
    state = EpochStore(base, shard, keep=config.undo_keep, versioned=config.versioned)
    state.attach(version)
    return state


_FIRST = (NO_WATERMARK, "", -1)  # before every record's ingest order


def _split(block: FeatureBlock, merchant_keys: tuple[str, ...]) -> dict[str, FeatureBlock]:
    """A card shard's block cut per merchant shard: each its rows (taken by index) and ticks.

    A tick (a duplicate's watermark) goes to every merchant shard, at its place
    among that shard's rows. Shards are listed in order of their first row or tick.
    """
    rows: dict[str, list[int]] = {}
    ticks = iter(block.ticks)
    tick = next(ticks, None)
    for r, merchant_id in enumerate(block.txns.merchant_id):
        while tick is not None and tick[0] <= r:
            for key in merchant_keys:
                rows.setdefault(key, [])
            tick = next(ticks, None)
        key = shard_of(merchant_keys, merchant_id)
        mine = rows.get(key)
        if mine is None:
            rows[key] = [r]
        else:
            mine.append(r)
    if tick is not None:
        for key in merchant_keys:
            rows.setdefault(key, [])
    return {key: block.take(mine) for key, mine in rows.items()}


# One step of the merchant stage: a row of its block (by index, ascending), a
# chargeback, or a duplicate's tick; each with the input that sent it.
MerchantStep = tuple[str, int | CbEnvelope | Tick]


def _in_ingest_order(values: list[ShardInput]) -> tuple[FeatureBlock, list[MerchantStep]]:
    """The merchant stage's inputs merged in ingest order: one block, and the steps over it.

    The block holds every card shard's rows in processing order; the steps
    interleave them (by index) with the chargebacks and ticks. A tick (a
    duplicate's place in its sender's order) keeps that place: it sorts with
    the record before it, and the sort is stable, so its watermark applies
    after that record and before the ones after it, never to records it came
    after.

    A single block and no chargebacks (one card shard's step, the common case)
    need no sort: the card stage emits its rows in ingest order, so the sort
    would keep every row and tick where it is.
    """
    featured = [(si.origin, si.featured) for si in values if si.featured is not None]
    if len(featured) == 1 and not any(si.chargebacks for si in values):
        return _in_block_order(*featured[0])
    keyed: list[tuple[tuple[int, str, int], tuple[int, int] | CbEnvelope | Tick, str]] = []
    blocks: list[FeatureBlock] = []
    for shard_input in values:
        origin = shard_input.origin
        for cb in shard_input.chargebacks:
            keyed.append((_ingest_order(cb.raw), cb, origin))
        block = shard_input.featured
        if block is None:
            continue
        at = len(blocks)
        blocks.append(block)
        last = _FIRST
        ticks = iter(block.ticks)
        tick = next(ticks, None)
        for r, raw in enumerate(block.txns.raw):
            while tick is not None and tick[0] <= r:
                keyed.append((last, Tick(tick[1]), origin))
                tick = next(ticks, None)
            last = _ingest_order(raw)
            keyed.append((last, (at, r), origin))
        while tick is not None:
            keyed.append((last, Tick(tick[1]), origin))
            tick = next(ticks, None)
    keyed.sort(key=itemgetter(0))
    # Each block's first row in the concatenation of all of them.
    first = [0]
    for block in blocks:
        first.append(first[-1] + len(block))
    order: list[int] = []
    steps: list[MerchantStep] = []
    for _, item, origin in keyed:
        if isinstance(item, tuple):
            steps.append((origin, len(order)))
            order.append(first[item[0]] + item[1])
        else:
            steps.append((origin, item))
    if not blocks:
        return empty_block(len(BLOCK_COLUMNS)), steps
    whole = FeatureBlock.concat(blocks)
    if order != list(range(len(order))):
        whole = FeatureBlock(
            whole.txns.take(order),
            whole.features[order],
            whole.watermarks[order],
            [],
        )
    return whole, steps


def _in_block_order(origin: str, block: FeatureBlock) -> tuple[FeatureBlock, list[MerchantStep]]:
    """One sender's block as the merchant stage's steps: its rows, its ticks in their places."""
    n = len(block)
    steps: list[MerchantStep] = []
    last = 0
    for pos, wm in block.ticks:
        steps.extend(zip(repeat(origin), range(last, pos)))
        steps.append((origin, Tick(wm)))
        last = max(last, pos)
    steps.extend(zip(repeat(origin), range(last, n)))
    return FeatureBlock(block.txns, block.features, block.watermarks, []), steps


def _ingest_order(raw: RawRecord) -> tuple[int, str, int]:
    """Records from several inputs are applied in ingest order: Kafka timestamp, then position."""
    return raw.timestamp_ms, raw.source, raw.offset


def _txns_in_ingest_order(parts: list[TxnColumns]) -> TxnColumns:
    """The transactions of ``parts`` in ingest order (a stable sort: ties keep their order)."""
    parts = [part for part in parts if part]
    if not parts:
        return TxnColumns()
    whole = TxnColumns.concat(parts)
    order_keys = list(map(_ingest_order, whole.raw))
    order = sorted(range(len(order_keys)), key=order_keys.__getitem__)
    return whole if order == list(range(len(order))) else whole.take(order)


def windows(
    step_id: str,
    up: Stream[PartitionBatch],
    *,
    config: WindowsConfig,
    store: Callable[[], StateStore],
    dead_letters: DeadLetters,
    on_state_size: Callable[[int], None] = lambda _n: None,
    on_input: Callable[[PartitionBatch], None] = lambda _b: None,
    on_chargebacks: Callable[[int], None] = lambda _n: None,
    on_aggregates: Callable[[int], None] = lambda _n: None,
) -> tuple[Stream[tuple[str, MerchantOutput]], Stream[tuple[str, list[OutMessage]]]]:
    """Source batches -> ``(merchant shard, MerchantOutput)``, and the dead letters.

    A merchant shard emits :class:`ToScore` (its featured transactions),
    :class:`operators.quality.Labels` and
    :class:`operators.quality.ShardWatermark` for quality, and lists of
    :class:`OutMessage` for the sink (closed-window chargebacks as dead
    letters, window aggregates). The shard key spreads output over the sink's
    partitions. ``on_input`` sees each source batch first (the input
    counters); ``on_chargebacks`` and ``on_aggregates`` are told how many
    chargebacks were counted in windows and how many aggregates were emitted.

    Dead letters leave where they are born: the decoder's with the source
    batch, the card shards' duplicates from the card stage; the second stream
    carries both, as ``("dead", [OutMessage])``, straight to the output.
    """

    # The card kernels compile (or load from numba's cache) now, before any input is read.
    compile_kernels()

    def route(batch: PartitionBatch) -> list[tuple[str, Any]]:
        on_input(batch)
        routed: list[tuple[str, Any]] = route_partition_batch(batch, config.shards, config.workers)
        if batch.dead:
            routed.append((DEAD, batch.dead))
        return routed

    routed = op.flat_map(f"{step_id}-route", up, route)
    # Dead letters first, then the card shards' inputs (keys "c..."), then the merchants'.
    decode_dead = op.branch(f"{step_id}-decode-dead", routed, lambda kv: kv[0] == DEAD)
    split = op.branch(f"{step_id}-split", decode_dead.falses, lambda kv: kv[0][0] == "c")
    cards = op.stateful_batch(
        f"{step_id}-cards",
        split.trues,
        lambda resume: _CardLogic(config, store(), resume, on_state_size, dead_letters),
    )
    # A card shard's output is keyed by the card shard: re-key it to its target.
    card_out = op.map(f"{step_id}-card-out", cards, lambda kv: kv[1])
    card_dead = op.branch(f"{step_id}-card-dead", card_out, lambda kv: kv[0] == DEAD)
    merchants = op.stateful_batch(
        f"{step_id}-merchants",
        op.merge(f"{step_id}-merchant-in", card_dead.falses, split.falses),
        lambda resume: _MerchantLogic(
            config, store(), resume, dead_letters, on_chargebacks, on_aggregates
        ),
    )
    dead: Stream[tuple[str, list[OutMessage]]] = op.merge(
        f"{step_id}-dead", decode_dead.trues, card_dead.trues
    )
    return merchants, dead
