"""Decode and validate raw Kafka records; every rejected record becomes a dead letter.

Time rules: none here. Decoding is stateless and looks at one record at a time;
``received_at`` on a dead letter comes from the injected clock. Reasons:
``oversize`` (value longer than the configured limit), ``json`` (missing value,
not UTF-8 or not JSON) and ``schema`` (JSON that breaks the contract). The
payload is kept verbatim (UTF-8 text, or base64 when it is not UTF-8), except
that an oversize payload is cut to the size limit, so the dead letter itself
stays producible; its topic, partition and offset still point at the original.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from operators.messages import OutMessage, RawRecord, TxnEnvelope
from schemas.records import DeadLetterReason, Transaction
from schemas.timefmt import format_ms


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    """Where dead letters go and how large a record may be."""

    dead_letter_topic: str
    max_message_bytes: int


@dataclass(frozen=True, slots=True)
class Decoded:
    """One batch split into valid transactions and dead letters, in input order."""

    valid: list[TxnEnvelope]
    dead: list[OutMessage]
    reasons: list[DeadLetterReason]


def decode_batch(
    config: DecodeConfig, batch: list[RawRecord], now_ms: Callable[[], int]
) -> Decoded:
    """Validate every record of a batch against the Transaction contract."""
    valid: list[TxnEnvelope] = []
    dead: list[OutMessage] = []
    reasons: list[DeadLetterReason] = []
    reason: DeadLetterReason
    for rec in batch:
        value = rec.value
        if value is None:
            reason, error = "json", "message has no value"
        elif len(value) > config.max_message_bytes:
            reason = "oversize"
            error = (
                f"value is {len(value)} bytes, limit is {config.max_message_bytes}; "
                f"payload cut to the first {config.max_message_bytes} bytes"
            )
            rec = _cut(rec, config.max_message_bytes)
        else:
            try:
                txn = Transaction.model_validate_json(value)
            except ValidationError as exc:
                reason, error = _classify(exc)
            else:
                valid.append(
                    TxnEnvelope(txn, rec.topic, rec.partition, rec.offset, rec.timestamp_ms)
                )
                continue
        dead.append(dead_letter(config.dead_letter_topic, rec, reason, error, now_ms()))
        reasons.append(reason)
    return Decoded(valid, dead, reasons)


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
    return OutMessage(topic, rec.key, json.dumps(body).encode())


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
