"""Decode, validate and time-judge raw Kafka records of one input partition.

Every rejected record becomes a dead letter: ``oversize`` (value longer than
the limit), ``json`` (missing value, not UTF-8, not JSON, a key named twice),
``schema`` (JSON that breaks the contract), ``timestamp`` (far ahead of the
partition's watermark and of its own Kafka timestamp, or of the wall clock;
see :mod:`operators.watermarks`) and ``quarantined`` (a record that crashed a
step before, see :mod:`operators.quarantine`, or that made decoding itself
raise). pydantic (:func:`validate`) decides what a record is and every
dead letter's error; :mod:`operators.decode_fast` reads the plain records it
is sure pydantic would accept, with the same values, with msgspec, and hands
every other value to pydantic. Accepted transactions are appended to one
:class:`operators.messages.TxnColumns` per batch, from either path; a batch
of transactions that all take the fast path is judged by its watermark in
one call (:meth:`PartitionWatermark.observe_many`). Time
rules: the partition's watermark advances when accepted records agree; a
transaction behind it by more than the allowed lateness is marked late.
State: the partition's two largest accepted event times, snapshotted with the
source offset.

Dead letters (:class:`DeadLetters`, used by every stage that rejects records)
are counted once where they are born and stamped with the injected clock.
Payloads and keys are kept verbatim (UTF-8 text, or base64 when not UTF-8,
which ``payload_encoding`` and ``key_encoding`` say). An oversize payload is
cut to the size limit, and a dead letter that would not fit the producer's
message limit is cut, key included, and marked ``truncated``; its topic,
partition and offset still point at the original.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError

from operators.decode_fast import (
    fast_chargebacks,
    fast_transaction_columns,
    fast_transactions,
    txn_rows,
)
from operators.messages import (
    CbEnvelope,
    OutMessage,
    PartitionBatch,
    RawRecord,
    TxnColumns,
    TxnRow,
    TxnRowColumns,
    json_value,
    txn_row,
)
from operators.watermarks import PartitionWatermark, TimeConfig, WatermarkState
from schemas.records import Chargeback, DeadLetterReason, Transaction
from schemas.timefmt import format_ms

Kind = Literal["transaction", "chargeback"]
# (values, size limit) -> what the fast path read of each value; None: ask pydantic.
FastRead = Callable[[list[bytes | None], int], Sequence[TxnRow | Chargeback | None]]
FastColumns = Callable[[list[bytes | None], int], tuple[TxnRowColumns, list[int]]]
log = logging.getLogger(__name__)
BROADCAST_EVERY_MS = 1_000


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    """Where dead letters go, how large a record may be, and the time bounds."""

    dead_letter_topic: str
    max_message_bytes: int
    time: TimeConfig = field(default_factory=TimeConfig)


class PartitionDecoder:
    """Turns raw batches of one partition into decoded, time-judged batches."""

    def __init__(
        self,
        config: DecodeConfig,
        *,
        source: str,
        kind: Kind,
        resume: WatermarkState,
        dead_letters: DeadLetters,
        wall_clock: Callable[[], int] | None,
        quarantined: Mapping[int, str] | None = None,
    ) -> None:
        self._config = config
        # Offsets of this partition to skip (the reason for each): see operators.quarantine.
        self._skip = dict(quarantined or {})
        self._source = source
        self._kind = kind
        self._wm = PartitionWatermark(config.time, resume)
        self._dead = dead_letters
        self._wall_clock = wall_clock
        self._broadcast_wm: int | None = None
        self._idle = False
        self._model = Transaction if kind == "transaction" else Chargeback
        # (values, size limit) -> what the fast path read of each value; None: ask pydantic.
        self._fast: FastRead = fast_transactions if kind == "transaction" else fast_chargebacks
        # The same for a batch of transactions, as columns and the positions declined.
        self._fast_columns: FastColumns | None = (
            fast_transaction_columns if kind == "transaction" else None
        )

    def snapshot(self) -> WatermarkState:
        """Resume state: the partition's two largest accepted event times."""
        return self._wm.snapshot()

    def decode(self, batch: list[RawRecord]) -> PartitionBatch:
        """Decode a batch in offset order."""
        now = None if self._wall_clock is None else self._wall_clock()
        limit, skip = self._config.max_message_bytes, self._skip
        skipping = bool(skip) and any(rec.offset in skip for rec in batch)
        # A quarantined record is never decoded: the fast path sees no value for it.
        values = [None if skipping and rec.offset in skip else rec.value for rec in batch]
        columns: TxnRowColumns | None = None
        fast: Sequence[TxnRow | Chargeback | None] | None = None
        try:
            if self._fast_columns is not None and not skipping:
                columns, declined = self._fast_columns(values, limit)
                if declined:
                    fast, columns = txn_rows(columns, declined), None
            else:
                fast = self._fast(values, limit)
        except Exception:
            # A bug: each record is read alone below, so only the one that raises is lost.
            columns = fast = None
        if columns is not None:
            return self._decode_plain(batch, columns, now)
        return self._decode_each(batch, fast, now)

    def _decode_plain(
        self, batch: list[RawRecord], columns: TxnRowColumns, now: int | None
    ) -> PartitionBatch:
        """Transactions the fast path read, every one: judged by the watermark in one call."""
        times = columns[3]
        stamps = [rec.timestamp_ms for rec in batch]
        lates, marks, future = self._wm.observe_many(times, stamps, now)
        raws = list(batch)
        dead: list[OutMessage] = []
        if future:
            dead = [self._future(batch[i], times[i]) for i in future]
            kept = sorted(set(range(len(batch))).difference(future))
            columns, raws = _take(columns, kept), [raws[i] for i in kept]
        return self._batch(TxnColumns(*columns, lates, marks, raws), [], dead)

    def _decode_each(
        self,
        batch: list[RawRecord],
        fast: Sequence[TxnRow | Chargeback | None] | None,
        now: int | None,
    ) -> PartitionBatch:
        """Any batch, one record after the other; ``fast``: what the fast path read of each
        value (None: it raised, so it reads each one again here)."""
        # The accepted transactions' rows and their other columns, made columns at the end.
        rows: list[TxnRow] = []
        raws: list[RawRecord] = []
        lates: list[bool] = []
        marks: list[int] = []
        cbs: list[CbEnvelope] = []
        dead: list[OutMessage] = []
        parse, observe, to_dead = self._parse, self._wm.observe, self._dead
        read_one, limit = self._fast, self._config.max_message_bytes
        skip = self._skip
        for i, rec in enumerate(batch):
            if skip and rec.offset in skip:
                dead.append(to_dead(rec, "quarantined", skip[rec.offset]))
                continue
            try:
                record = read_one([rec.value], limit)[0] if fast is None else fast[i]
                parsed = parse(rec) if record is None else None
                if isinstance(parsed, Transaction):
                    record = txn_row(parsed)
                elif isinstance(parsed, Chargeback):
                    record = parsed
            except Exception as exc:
                # Every failure a record can cause on purpose is classified above; this
                # one is a bug. Nothing was changed yet, so the record is skipped now.
                log.exception("decoding %s#%s@%s raised", rec.topic, rec.partition, rec.offset)
                error = f"decoding raised {type(exc).__name__}: {exc}; skipped"
                dead.append(to_dead(rec, "quarantined", error))
                continue
            if isinstance(parsed, tuple):
                reason, error = parsed
                if reason == "oversize":
                    rec = _cut(rec, self._config.max_message_bytes)
                dead.append(to_dead(rec, reason, error))
                continue
            assert record is not None  # the fast path's values, or pydantic's record
            event_time = record[3] if isinstance(record, tuple) else record.event_time
            verdict = observe(event_time, rec.timestamp_ms, now)
            if verdict == "future":
                dead.append(self._future(rec, event_time))
            elif isinstance(record, tuple):
                rows.append(record)
                raws.append(rec)
                lates.append(verdict == "late")
                marks.append(self._wm.watermark)
            else:
                cbs.append(CbEnvelope(record, rec, self._wm.watermark))
        return self._batch(TxnColumns.from_rows(rows, raws, lates, marks), cbs, dead)

    def _future(self, rec: RawRecord, event_time: int) -> OutMessage:
        """The dead letter of a record whose event time is too far ahead."""
        error = (
            f"event_time {format_ms(event_time)} is more than "
            f"{self._config.time.max_future_ms} ms ahead of the partition's watermark "
            "and of the record's Kafka timestamp, or of the wall clock"
        )
        return self._dead(rec, "timestamp", error)

    def _batch(
        self, txns: TxnColumns, cbs: list[CbEnvelope], dead: list[OutMessage]
    ) -> PartitionBatch:
        """The decoded batch, broadcast to every shard when the watermark moved enough."""
        wm = self._wm.watermark
        broadcast = self._idle or (
            self._broadcast_wm is None or wm - self._broadcast_wm >= BROADCAST_EVERY_MS
        )
        if broadcast:
            self._broadcast_wm = wm
        self._idle = False
        return PartitionBatch(self._source, self._kind, wm, False, txns, cbs, dead, broadcast)

    def idle(self) -> PartitionBatch:
        """The batch that tells every shard this partition is idle."""
        self._idle = True
        watermark = self._wm.watermark
        return PartitionBatch(self._source, self._kind, watermark, True, TxnColumns(), [], [], True)

    def _parse(self, rec: RawRecord) -> Transaction | Chargeback | tuple[DeadLetterReason, str]:
        """A record the fast path declined: pydantic's verdict, after the size checks."""
        value = rec.value
        if value is None:
            return "json", "message has no value"
        limit = self._config.max_message_bytes
        if len(value) > limit:
            return "oversize", (
                f"value is {len(value)} bytes, limit is {limit}; "
                f"payload cut to the first {limit} bytes"
            )
        return validate(self._model, value)


def _take(columns: TxnRowColumns, rows: list[int]) -> TxnRowColumns:
    """The rows ``rows`` of ``columns``."""
    ids, cards, merchants, times, amounts, ecom, devices = columns
    return (
        [ids[i] for i in rows],
        [cards[i] for i in rows],
        [merchants[i] for i in rows],
        [times[i] for i in rows],
        [amounts[i] for i in rows],
        [ecom[i] for i in rows],
        [devices[i] for i in rows],
    )


def validate(
    model: type[Transaction] | type[Chargeback], value: bytes
) -> Transaction | Chargeback | tuple[DeadLetterReason, str]:
    """pydantic's verdict on a value: the record, or the dead letter's reason and error."""
    try:
        record = model.model_validate_json(value)
    except ValidationError as exc:
        return _classify(exc)
    duplicate = _duplicate_key(value, len(record.model_fields_set))
    if duplicate is not None:
        return "json", f"duplicate key {duplicate!r}: a record names each field once"
    return record


def _duplicate_key(value: bytes, fields_present: int) -> str | None:
    """A key named twice at the top level of a JSON object pydantic accepted, or None.

    Fast path: when no key is followed by white space before its colon, every key
    makes one ``":``; as many of them as distinct contract fields pydantic read
    means no key is repeated (and there are no unknown keys). Otherwise the
    object's pairs are read in order.
    """
    if (
        value.count(b'":') == fields_present
        and b" :" not in value
        and b"\t:" not in value
        and b"\n:" not in value
        and b"\r:" not in value
    ):
        return None
    try:
        pairs = json.loads(value, object_pairs_hook=lambda kv: kv)
    except ValueError:
        return None  # pydantic's parser accepted it; leave the verdict to pydantic
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            return str(name)
        seen.add(name)
    return None


# librdkafka's default ``message.max.bytes``: what the producer accepts, key and value
# together, unless the producer settings raise or lower it.
PRODUCER_MAX_BYTES = 1_000_000
# Room for the record batch's own headers under that limit.
_HEADROOM = 512
# A dead letter's key (and its ``key`` field) is cut to this when the whole would not fit.
KEY_KEEP_BYTES = 1024


def dead_letter_limit(producer_config: dict[str, str]) -> int:
    """The bytes a dead letter (key plus value) may take under the producer's limit."""
    return int(producer_config.get("message.max.bytes", PRODUCER_MAX_BYTES)) - _HEADROOM


class DeadLetters:
    """Builds the contract's dead letters: each one counted, stamped and cut to fit.

    ``now_ms`` stamps ``received_at``; ``on_dead`` is told each reason once (the
    dead-letter counter). A dead letter whose key and value together exceed
    ``max_bytes`` is cut, key included, and marked ``truncated``; its topic,
    partition and offset still point at the original.
    """

    def __init__(
        self,
        topic: str,
        *,
        max_bytes: int = PRODUCER_MAX_BYTES - _HEADROOM,
        now_ms: Callable[[], int] = lambda: 0,
        on_dead: Callable[[DeadLetterReason], None] = lambda _r: None,
    ) -> None:
        self.topic = topic
        self._max_bytes = max_bytes
        self._now_ms = now_ms
        self._on_dead = on_dead

    def __call__(self, rec: RawRecord, reason: DeadLetterReason, error: str) -> OutMessage:
        """The dead letter of ``rec``, counted under ``reason``."""
        self._on_dead(reason)
        return dead_letter(
            self.topic, rec, reason, error, self._now_ms(), max_bytes=self._max_bytes
        )


def dead_letter(
    topic: str,
    rec: RawRecord,
    reason: DeadLetterReason,
    error: str,
    received_ms: int,
    *,
    max_bytes: int = PRODUCER_MAX_BYTES - _HEADROOM,
) -> OutMessage:
    """The contract's DeadLetter for a raw record, keyed by the record's original key.

    When key and value would exceed ``max_bytes``, the key is cut to
    ``KEY_KEEP_BYTES`` (at most a quarter of ``max_bytes``) and the payload to
    what fits, and ``truncated`` is set.
    """
    key, value = rec.key, rec.value or b""
    msg = _dead_letter(topic, rec, key, value, reason, error, received_ms, truncated=False)
    if _size(msg) <= max_bytes:
        return msg
    # The key is written twice (message key and ``key`` field): a quarter of the room at most.
    cut_key = None if key is None else key[: min(KEY_KEEP_BYTES, max_bytes // 4)]
    note = (
        f"{error}; dead letter cut to fit {max_bytes} bytes "
        f"(key {len(key or b'')} bytes, payload {len(value)} bytes as received)"
    )
    empty = _dead_letter(topic, rec, cut_key, b"", reason, note, received_ms, truncated=True)
    room = max_bytes - _size(empty)
    # JSON escapes (or base64) make the payload longer than its bytes: scale the cut by
    # how much longer, until it fits.
    keep = min(len(value), max(room, 0))
    while True:
        msg = _dead_letter(
            topic, rec, cut_key, value[:keep], reason, note, received_ms, truncated=True
        )
        if _size(msg) <= max_bytes or keep == 0:
            return msg
        written = _size(msg) - _size(empty)  # what the kept payload takes in the JSON
        keep = max(0, min(keep - 1, keep * room // written - 4))


def _size(msg: OutMessage) -> int:
    return len(msg.value) + (0 if msg.key is None else len(msg.key))


def _dead_letter(
    topic: str,
    rec: RawRecord,
    key: bytes | None,
    value: bytes,
    reason: DeadLetterReason,
    error: str,
    received_ms: int,
    *,
    truncated: bool,
) -> OutMessage:
    payload, encoding = _payload_text(value, cut=truncated)
    key_text, key_encoding = (None, None) if key is None else _payload_text(key, cut=truncated)
    body = {
        "reason": reason,
        "error": error,
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "key": key_text,
        "key_encoding": key_encoding,
        "payload": payload,
        "payload_encoding": encoding,
        "received_at": format_ms(received_ms),
        "truncated": truncated,
    }
    return OutMessage(topic, key, json_value(body), rec.source, rec.offset)


def _cut(rec: RawRecord, size: int) -> RawRecord:
    value = rec.value or b""
    return RawRecord(rec.topic, rec.partition, rec.offset, rec.key, value[:size], rec.timestamp_ms)


def _classify(exc: ValidationError) -> tuple[DeadLetterReason, str]:
    errors = exc.errors(include_url=False, include_input=False)
    if errors[0]["type"] in ("json_invalid", "json_type"):
        return "json", errors[0]["msg"]
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "schema", "; ".join(parts)


def _payload_text(raw: bytes, *, cut: bool = False) -> tuple[str, str]:
    """Text of raw bytes: UTF-8 when they are, else base64; ``cut`` bytes may end mid-character."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if cut and exc.start >= len(raw) - 3 and exc.reason == "unexpected end of data":
            return raw[: exc.start].decode("utf-8"), "utf-8"
        return base64.b64encode(raw).decode("ascii"), "base64"
