"""Run the real flow in this process over a log of records, like ``bytewax.testing``.

:func:`run_log` builds :func:`flows.dataflow.build_flow` with an in-memory
source (:class:`LogSource`) and sink (:class:`MemorySink`) in place of Kafka,
runs it with ``bytewax.testing.run_main`` and hands back every output parsed
(:class:`LogResult`). Training, the tests and the stage profile run the flow
this way: ``build_flow`` stays the only place that wires the stages.

Ordering rule: the log is delivered in its given order, as one global order
across partitions (each partition's records must be in offset order). Each
poll of the source emits one run of consecutive records of one partition, at
most ``batch_size`` long and cut where the Kafka timestamp goes back, and in
one worker bytewax carries a poll through every step before the next, so
stages that apply a step's records in ingest order (Kafka timestamp, then
partition and offset) apply them in log order: results do not depend on
``batch_size``. A partition joins the flow's watermarks with its first
accepted record (event time is the minimum over the partitions seen so far;
until then it counts as idle). With ``flush``, every partition's watermark
then moves to the end of time: every window closes and its aggregate is
emitted, and card state expires. ``polls="partitions"`` instead polls every
partition for its next batch in turn, as the Kafka source does (the stage
profile), and gives up the order across partitions.

Time: the wall clock is fixed (``clock_ms``; by default the last instant the
contract's times can name, so the absolute far-future bound never applies
and results depend on the log alone). Dead letters come back in log order;
everything else in the order the flow emitted it.
"""

from __future__ import annotations

import functools
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic
from typing import Any, Literal

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main
from prometheus_client import CollectorRegistry

from flows.dataflow import build_flow
from models.registry import DeploymentConfig, ModelRegistry
from operators.decode import PartitionDecoder
from operators.kafka_io import DecoderFactory
from operators.messages import OutMessage, PartitionBatch, RawRecord, TxnColumns
from operators.metrics import ServiceMetrics
from operators.placement import shard_keys
from operators.watermarks import TimeConfig
from schemas.settings import DEFAULT_MODEL, Settings
from schemas.timefmt import parse_event_time
from state.epochs import shard_data_prefix
from state.memory import MemoryStore
from state.store import StateStore

Kind = Literal["transaction", "chargeback"]
# 9999-12-31T23:59:59.999Z: the latest time the contract accepts.
END_OF_TIME_MS = 253_402_300_799_999
# The watermark every partition reaches at the end of a flushed log.
FLUSH_WATERMARK = 2**62
DEFAULT_BATCH = 1_000
CARD_SHARD, MERCHANT_SHARD = shard_keys("c", 1, 1)[0], shard_keys("m", 1, 1)[0]


@dataclass(frozen=True)
class ReplayRecord:
    """One input record of a log: what Kafka would hold at ``partition``/``offset``."""

    kind: Kind
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


@dataclass(frozen=True)
class FeatureRow:
    """What the flow scored one transaction with: every feature, transaction ones included."""

    event_id: str
    card_id: str
    merchant_id: str
    event_time: int
    late: bool
    features: dict[str, float]


@dataclass(frozen=True)
class LogResult:
    """A run's outputs: parsed JSON by topic, and the scored feature rows.

    ``rows`` and ``scores`` are in scoring order, ``dead_letters`` in log order
    (topic, partition, offset), the rest as emitted; ``messages`` holds every
    output message, by topic, as the sink received it.
    """

    rows: list[FeatureRow]
    scores: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    window_aggregates: list[dict[str, Any]]
    drift: list[dict[str, Any]]
    quality: list[dict[str, Any]]
    messages: dict[str, list[OutMessage]] = field(repr=False)


class LogSource(FixedPartitionedSource[PartitionBatch, None]):
    """A log of records as one bytewax partition, decoded by the flow's own decoders.

    The Kafka partitions of the log keep their names and their own decoders
    and watermarks. ``polls="log"`` delivers the log in its order (see the
    module docstring). ``polls="partitions"`` polls every partition in turn for
    its next ``batch_size`` records, as the Kafka source does, and ignores the
    order across partitions; a partition read to its end turns idle. Records
    are turned into :class:`RawRecord` here, before the flow runs.
    """

    def __init__(
        self,
        records: Sequence[ReplayRecord],
        decoder: DecoderFactory,
        *,
        topics: dict[Kind, str],
        batch_size: int = DEFAULT_BATCH,
        flush: bool = True,
        polls: Literal["log", "partitions"] = "log",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._raws = [
            RawRecord(topics[r.kind], r.partition, r.offset, r.key, r.value, r.timestamp_ms)
            for r in records
        ]
        self._kinds = {topic: kind for kind, topic in topics.items()}
        self._decoder = decoder
        self._batch_size = batch_size
        self._flush = flush
        self._polls = polls

    def list_parts(self) -> list[str]:
        """One partition: the whole log."""
        return ["log"]

    def build_part(self, step_id: str, for_part: str, resume: None) -> _LogPartition:
        """The log's reader (there is nothing to resume)."""
        if self._polls == "partitions":
            return _PartitionsReader(self._raws, self._decoder, self._kinds, self._batch_size)
        return _LogReader(self._raws, self._decoder, self._kinds, self._batch_size, self._flush)


class _LogPartition(StatefulSourcePartition[PartitionBatch, None]):
    def __init__(self, decoder: DecoderFactory, kinds: dict[str, Kind], batch_size: int) -> None:
        self._factory = decoder
        self._kinds = kinds
        self._batch_size = batch_size
        self._decoders: dict[str, tuple[Kind, PartitionDecoder]] = {}

    def _decoder(self, rec: RawRecord) -> tuple[Kind, PartitionDecoder]:
        source = rec.source
        known = self._decoders.get(source)
        if known is None:
            known = (self._kinds[rec.topic], self._factory(source, rec.topic, None))
            self._decoders[source] = known
        return known

    def snapshot(self) -> None:
        return None


class _LogReader(_LogPartition):
    """One run of one partition per poll, in log order."""

    def __init__(
        self,
        raws: list[RawRecord],
        decoder: DecoderFactory,
        kinds: dict[str, Kind],
        batch_size: int,
        flush: bool,
    ) -> None:
        super().__init__(decoder, kinds, batch_size)
        self._raws = raws
        self._flush = flush
        self._next = 0
        self._joined: set[str] = set()

    def next_batch(self) -> list[PartitionBatch]:
        raws, start = self._raws, self._next
        if start >= len(raws):
            if not self._flush:
                raise StopIteration
            self._flush = False
            return [
                PartitionBatch(source, kind, FLUSH_WATERMARK, False, TxnColumns(), [], [], True)
                for source, (kind, _) in self._decoders.items()
            ]
        first = raws[start]
        source = first.source
        end, limit = start + 1, min(len(raws), start + self._batch_size)
        # A run stops where the partition changes or the Kafka timestamp goes back:
        # within it, ingest order (the order stages apply a step in) is log order.
        while end < limit and raws[end].source == source:
            if raws[end].timestamp_ms < raws[end - 1].timestamp_ms:
                break
            end += 1
        self._next = end
        batch = self._decoder(first)[1].decode(raws[start:end])
        if source not in self._joined:
            if batch.txns or batch.chargebacks:
                self._joined.add(source)
            else:
                batch.idle = True  # dead letters only: the partition has not joined yet
        return [batch]


class _PartitionsReader(_LogPartition):
    """Every partition's next batch per poll, as Kafka polls deliver them."""

    def __init__(
        self, raws: list[RawRecord], decoder: DecoderFactory, kinds: dict[str, Kind], batch: int
    ) -> None:
        super().__init__(decoder, kinds, batch)
        self._parts: dict[str, list[RawRecord]] = {}
        for rec in raws:
            self._parts.setdefault(rec.source, []).append(rec)
        self._next = dict.fromkeys(self._parts, 0)

    def next_batch(self) -> list[PartitionBatch]:
        out = []
        for source, records in self._parts.items():
            start = self._next.get(source)
            if start is None:
                continue
            decoder = self._decoder(records[0])[1]
            if start >= len(records):
                del self._next[source]
                out.append(decoder.idle())  # read to its end: it must not hold watermarks
                continue
            self._next[source] = start + self._batch_size
            out.append(decoder.decode(records[start : start + self._batch_size]))
        if not out:
            raise StopIteration
        return out


class MemorySink(DynamicSink[tuple[str, list[OutMessage]]]):
    """Counts every output message by topic and, with ``keep``, collects it in emission order."""

    def __init__(self, *, keep: bool = True) -> None:
        self.messages: dict[str, list[OutMessage]] = defaultdict(list)
        self.counts: dict[str, int] = defaultdict(int)
        self._keep = keep

    def build(self, step_id: str, worker_index: int, worker_count: int) -> MemorySinkPartition:
        """The (only) worker's writer."""
        return MemorySinkPartition(self.messages if self._keep else None, self.counts)


class MemorySinkPartition(StatelessSinkPartition[tuple[str, list[OutMessage]]]):
    """A worker's writer into a :class:`MemorySink`."""

    def __init__(
        self, messages: dict[str, list[OutMessage]] | None, counts: dict[str, int]
    ) -> None:
        self._messages = messages
        self._counts = counts

    def write_batch(self, items: list[tuple[str, list[OutMessage]]]) -> None:
        """Count (and keep) each message of each item."""
        out, counts = self._messages, self._counts
        for _key, batch in items:
            for m in batch:
                counts[m.topic] += 1
                if out is not None:
                    out[m.topic].append(m)


def shard_state(store: StateStore, shard: str) -> MemoryStore:
    """A copy of the keys ``shard`` holds in ``store``, as its engine sees them (unprefixed).

    A :func:`run_log` run has one card shard (:data:`CARD_SHARD`) and
    one merchant shard (:data:`MERCHANT_SHARD`).
    """
    prefix = shard_data_prefix(shard)
    view = MemoryStore()
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    view.write({k[len(prefix) :]: v for k, v in store.scan(prefix, end)})
    return view


@functools.cache
def default_models() -> ModelRegistry:
    """The committed model (the default ``model_dir``), loaded once per process.

    Features do not depend on the model, so training and feature tests use
    this one whatever model they are about to produce.
    """
    return ModelRegistry(DeploymentConfig(active=DEFAULT_MODEL), clock=monotonic)


def log_settings(
    base: Settings | None = None,
    *,
    time: TimeConfig | None = None,
    card_cache: int | None = None,
    merchant_cache: int | None = None,
) -> Settings:
    """``base`` (default: the defaults) with the given event-time bounds and cache sizes.

    Not validated again: offline logs may use time bounds the service refuses.
    """
    settings = base or Settings()
    update: dict[str, Any] = {}
    if time is not None:
        update.update(
            out_of_orderness_ms=time.out_of_orderness_ms,
            allowed_lateness_ms=time.allowed_lateness_ms,
            max_future_ms=time.max_future_ms,
            idle_timeout_ms=time.idle_timeout_ms,
            watermark_agreement=time.watermark_agreement,
        )
    if card_cache is not None:
        update["card_cache"] = card_cache
    if merchant_cache is not None:
        update["merchant_cache"] = merchant_cache
    return settings.model_copy(update=update)


def run_log(
    records: Iterable[ReplayRecord],
    *,
    settings: Settings | None = None,
    time: TimeConfig | None = None,
    models: ModelRegistry | None = None,
    store: StateStore | None = None,
    batch_size: int = DEFAULT_BATCH,
    flush: bool = True,
    polls: Literal["log", "partitions"] = "log",
    card_cache: int | None = None,
    merchant_cache: int | None = None,
    clock_ms: int = END_OF_TIME_MS,
    state_kept: bool | None = True,
) -> LogResult:
    """Run ``build_flow`` over ``records`` in this process; collect and parse its outputs.

    ``settings`` (default: ``Settings()``) apply with
    ``time``, ``card_cache`` and ``merchant_cache`` laid over them (see
    :func:`log_settings`); there is no recovery, and one worker runs one card
    and one merchant shard (the ordering rule needs them). ``store`` (default: a fresh
    :class:`MemoryStore`) holds the shards' state, complete when this returns
    (``state_kept``; None: as the service without recovery, which leaves cached
    cards and windows unwritten at the end of the input, see
    :func:`flows.dataflow.build_flow`); ``models`` default to :func:`default_models`.
    """
    records = list(records)
    base = log_settings(settings, time=time, card_cache=card_cache, merchant_cache=merchant_cache)
    state = store if store is not None else MemoryStore()
    sink = MemorySink()
    with tempfile.TemporaryDirectory(prefix="streamscore-log-") as tmp:
        # The state directory holds only the quarantine ledger here: none.
        config = base.model_copy(update={"state_dir": Path(tmp), "recovery_dir": None, "shards": 1})
        kinds: dict[Kind, str] = {
            "transaction": config.topics.transactions,
            "chargeback": config.topics.chargebacks,
        }
        flow = build_flow(
            config,
            models=models if models is not None else default_models(),
            metrics=ServiceMetrics.create(CollectorRegistry()),
            store=lambda: state,
            clock=lambda: clock_ms,
            make_source=lambda decoder: LogSource(
                records, decoder, topics=kinds, batch_size=batch_size, flush=flush, polls=polls
            ),
            sink=sink,
            state_kept=state_kept,
        )
        run_main(flow)  # type: ignore[no-untyped-call]
    return _result(sink.messages, records, kinds, config)


def _result(
    messages: dict[str, list[OutMessage]],
    records: list[ReplayRecord],
    kinds: dict[Kind, str],
    config: Settings,
) -> LogResult:
    topics = config.topics
    position = {(kinds[r.kind], r.partition, r.offset): i for i, r in enumerate(records)}

    def parsed(topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(m.value) for m in messages.get(topic, [])]

    scores = parsed(topics.scores)
    dead = parsed(topics.dead_letters)
    dead.sort(key=lambda d: position[(d["topic"], d["partition"], d["offset"])])
    rows = [
        FeatureRow(
            event_id=s["event_id"],
            card_id=s["card_id"],
            merchant_id=s["merchant_id"],
            event_time=parse_event_time(s["event_time"]),
            late=s["late"],
            features=s["features"],
        )
        for s in scores
    ]
    return LogResult(
        rows=rows,
        scores=scores,
        dead_letters=dead,
        window_aggregates=parsed(topics.window_aggregates),
        drift=parsed(topics.drift),
        quality=parsed(topics.quality),
        messages=dict(messages),
    )
