"""Wire models for every topic in the data contract (``docs/contract.md``).

Inputs (:class:`Transaction`, :class:`Chargeback`) validate what producers send;
outputs (:class:`Score`, :class:`WindowAggregate`, :class:`Drift`,
:class:`DeadLetter`) define what consumers may rely on. All are frozen. Event
times are integer epoch milliseconds inside the service and RFC 3339 strings on
output topics.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from schemas.timefmt import parse_event_time

Identifier = Annotated[str, Field(min_length=1, max_length=128, strict=True)]
EventTimeMs = Annotated[int, BeforeValidator(parse_event_time)]
OptionalText = Annotated[str | None, Field(default=None, max_length=128, strict=True)]


class _Input(BaseModel):
    # Unknown fields are ignored so producers can add fields before we read them.
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Output(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Transaction(_Input):
    """A card transaction published to ``transactions``."""

    event_id: Identifier
    card_id: Identifier
    merchant_id: Identifier
    amount: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False, strict=True)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", strict=True)]
    event_time: EventTimeMs
    country: OptionalText = None
    channel: OptionalText = None
    device_id: OptionalText = None


class Chargeback(_Input):
    """A chargeback for an earlier transaction, published to ``chargebacks``."""

    event_id: Identifier
    txn_event_id: Identifier
    merchant_id: Identifier
    card_id: OptionalText = None
    event_time: EventTimeMs


Decision = Literal["approve", "review", "decline"]


class ShadowScore(_Output):
    """What a shadow model said; never affects the decision."""

    model_version: str
    score: Annotated[float, Field(ge=0, le=1)]


class Score(_Output):
    """One per valid transaction, on ``scores``, keyed by ``card_id``."""

    event_id: str
    card_id: str
    merchant_id: str
    event_time: str
    score: Annotated[float, Field(ge=0, le=1)]
    decision: Decision
    model_version: str
    fallback: bool
    late: bool
    features: dict[str, float]
    shadow: ShadowScore | None
    processed_at: str


class WindowAggregate(_Output):
    """A closed 5-minute tumbling window of one merchant, on ``window-aggregates``."""

    merchant_id: str
    window_start: str
    window_end: str
    txn_count: int
    amount_sum: float
    chargeback_count: int
    chargeback_rate: float


class Drift(_Output):
    """One drift statistic of a feature or of the score, on ``drift``."""

    signal: str
    kind: Literal["feature", "score"]
    model_version: str
    window_start: str
    window_end: str
    n: int
    mean: float
    reference_mean: float
    psi: float
    ks: float
    detector: str
    drift: bool
    # True while the signal's longest feature window has not yet been filled in
    # event time since the monitor's first event; such a record never flags drift.
    warming_up: bool = False


DeadLetterReason = Literal["json", "schema", "timestamp", "oversize", "duplicate", "quarantined"]


class DeadLetter(_Output):
    """One per rejected record, on ``dead-letters``, keyed by the original key."""

    reason: DeadLetterReason
    error: str
    topic: str
    partition: int
    offset: int
    key: str | None
    # How ``key`` is written: ``utf-8`` text, or ``base64`` for bytes that are not UTF-8.
    key_encoding: Literal["utf-8", "base64"] | None = None
    payload: str
    payload_encoding: Literal["utf-8", "base64"]
    received_at: str
    # The dead letter was cut to fit the producer's message limit, key included.
    truncated: bool = False


WIRE_MODELS: dict[str, type[BaseModel]] = {
    "transaction": Transaction,
    "chargeback": Chargeback,
    "score": Score,
    "window_aggregate": WindowAggregate,
    "drift": Drift,
    "dead_letter": DeadLetter,
}
