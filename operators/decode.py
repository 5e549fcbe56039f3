"""Decode, validate and time-judge raw Kafka records of one input partition.

Every rejected record becomes a dead letter: ``oversize`` (value longer than
the limit), ``json`` (missing value, not UTF-8, not JSON), ``schema`` (JSON that
breaks the contract) and ``timestamp`` (far ahead of the partition's
watermark; see :mod:`operators.watermarks`). Time rules: the partition's
watermark advances with accepted records; a transaction behind it by more than
the allowed lateness is marked late. State: the partition's largest accepted
event time, snapshotted with the source offset. ``received_at`` comes from the
injected clock. Payloads are kept verbatim (UTF-8 text, or base64 when not
UTF-8), except an oversize payload, cut to the size limit so the dead letter
stays producible; its topic, partition and offset still point at the original.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError

from operators.messages import CbEnvelope, OutMessage, PartitionBatch, RawRecord, TxnEnvelope
from operators.watermarks import PartitionWatermark, TimeConfig
from schemas.records import Chargeback, DeadLetterReason, Transaction
from schemas.timefmt import format_ms

Kind = Literal["transaction", "chargeback"]
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
        resume: int | None,
        now_ms: Callable[[], int],
        on_dead: Callable[[DeadLetterReason], None] = lambda _r: None,
    ) -> None:
        self._config = config
        self._source = source
        self._kind = kind
        self._wm = PartitionWatermark(config.time, resume)
        self._now_ms = now_ms
        self._on_dead = on_dead
        self._broadcast_wm: int | None = None
        self._idle = False

    def snapshot(self) -> int | None:
        """Resume state: the partition's largest accepted event time."""
        return self._wm.snapshot()

    def decode(self, batch: list[RawRecord]) -> PartitionBatch:
        """Decode a batch in offset order."""
        txns: list[TxnEnvelope] = []
        cbs: list[CbEnvelope] = []
        dead: list[OutMessage] = []
        parse, observe = self._parse, self._wm.observe
        for rec in batch:
            parsed = parse(rec)
            if isinstance(parsed, tuple):
                dead.append(self._dead(rec, *parsed))
                continue
            verdict = observe(parsed.event_time, rec.timestamp_ms)
            if verdict == "future":
                error = (
                    f"event_time {format_ms(parsed.event_time)} is more than "
                    f"{self._config.time.max_future_ms} ms ahead of the partition's watermark"
                )
                dead.append(self._dead(rec, "timestamp", error))
            elif isinstance(parsed, Transaction):
                txns.append(TxnEnvelope(parsed, rec, verdict == "late", self._wm.watermark))
            else:
                cbs.append(CbEnvelope(parsed, rec, self._wm.watermark))
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
        return PartitionBatch(self._source, self._kind, self._wm.watermark, True, [], [], [], True)

    def _parse(self, rec: RawRecord) -> Transaction | Chargeback | tuple[DeadLetterReason, str]:
        value = rec.value
        if value is None:
            return "json", "message has no value"
        limit = self._config.max_message_bytes
        if len(value) > limit:
            return "oversize", (
                f"value is {len(value)} bytes, limit is {limit}; "
                f"payload cut to the first {limit} bytes"
            )
        model = Transaction if self._kind == "transaction" else Chargeback
        try:
            return model.model_validate_json(value)
        except ValidationError as exc:
            return _classify(exc)

    def _dead(self, rec: RawRecord, reason: DeadLetterReason, error: str) -> OutMessage:
        self._on_dead(reason)
        if reason == "oversize":
            rec = _cut(rec, self._config.max_message_bytes)
        return dead_letter(self._config.dead_letter_topic, rec, reason, error, self._now_ms())


def dead_letter(
    topic: str, rec: RawRecord, reason: DeadLetterReason, error: str, received_ms: int
) -> OutMessage:
    """The contract's DeadLetter for a raw record, keyed by the record's original key."""
    payload, encoding = _payload_text(rec.value or b"")
    body = {
        "reason": reason,
        "error": error,
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "key": None if rec.key is None else _payload_text(rec.key)[0],
        "payload": payload,
        "payload_encoding": encoding,
        "received_at": format_ms(received_ms),
    }
    return OutMessage(topic, rec.key, json.dumps(body).encode(), rec.source, rec.offset)


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


def _payload_text(raw: bytes) -> tuple[str, str]:
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"
