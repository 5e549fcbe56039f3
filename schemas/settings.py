"""Service settings: one pydantic-settings object read from flags and ``STREAMSCORE_*`` env vars.

Precedence: CLI flags, then environment, then defaults. Nested names use ``__``
(``STREAMSCORE_TOPICS__SCORES=scores-v2``). :func:`load_settings` turns every
validation failure into a :class:`~schemas.errors.ConfigError` naming the setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from schemas.errors import ConfigError

ENV_PREFIX = "STREAMSCORE_"
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "artifacts" / "fraud-gbt-1"


class TopicNames(BaseModel):
    """Topic names; defaults are the contract's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    transactions: str = "transactions"
    chargebacks: str = "chargebacks"
    scores: str = "scores"
    window_aggregates: str = "window-aggregates"
    drift: str = "drift"
    dead_letters: str = "dead-letters"
    quality: str = "quality"

    @field_validator("*")
    @classmethod
    def _legal_topic(cls, value: str) -> str:
        if not value or len(value) > 249 or not all(c.isalnum() or c in "._-" for c in value):
            raise ValueError("a Kafka topic name is 1-249 of [a-zA-Z0-9._-]")
        return value


# Records per poll of a partition far behind, unless set (and at least the batch size).
DEFAULT_BACKLOG_BATCH_SIZE = 4000


class Settings(BaseSettings):
    """Everything the service reads at startup."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    bootstrap_servers: str = "127.0.0.1:9092"
    topics: TopicNames = TopicNames()
    topic_partitions: Annotated[int, Field(ge=1, le=1024)] = 4
    state_dir: Path = Path(".local/state")
    # Bytewax recovery: snapshots at every epoch end, resume after a crash
    # (docs/operations.md). None: no recovery; a restart starts from scratch.
    recovery_dir: Path | None = None
    recovery_partitions: Annotated[int, Field(ge=1, le=1024)] = 1
    # Output delivery (docs/delivery.md): identical copies after a crash, or Kafka
    # transactions per epoch that a read_committed consumer sees exactly once.
    delivery: Literal["at-least-once", "exactly-once"] = "at-least-once"
    # Names the consumer group (streamscore-<flow_name>) the source's offsets are
    # committed to, and in exactly-once mode the transactional ids and commit topic.
    flow_name: str = "scoring"
    # Undo records kept per shard: how many epochs RocksDB may run ahead of the
    # recovery store's last commit and still be rolled back.
    state_undo_epochs: Annotated[int, Field(ge=1, le=1000)] = 8
    # Decoded cards kept in memory per process, split over the shards (0: none).
    card_cache: Annotated[int, Field(ge=0, le=100_000_000)] = 200_000
    # Merchant windows kept in memory per process, split over the shards (0: none).
    merchant_cache: Annotated[int, Field(ge=0, le=100_000_000)] = 100_000
    model_dir: Path = DEFAULT_MODEL
    shadow_model_dir: Path | None = None
    canary_model_dir: Path | None = None
    canary_share: Annotated[float, Field(ge=0, le=1)] = 0.0
    model_reload_interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    inference_budget_ms: Annotated[float, Field(gt=0, le=10_000)] = 50.0
    breaker_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    breaker_cooldown_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    drift_window_events: Annotated[int, Field(ge=100, le=1_000_000)] = 2_000
    drift_every_events: Annotated[int, Field(ge=10, le=1_000_000)] = 500
    drift_psi_threshold: Annotated[float, Field(gt=0, le=10)] = 0.25
    quality_window_ms: Annotated[int, Field(ge=1_000, le=30 * 86_400_000)] = 600_000
    label_horizon_ms: Annotated[int, Field(ge=0, le=365 * 86_400_000)] = 1_800_000
    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9100
    # A dead letter repeats the payload JSON-escaped (up to 6 bytes a byte for control
    # characters); 128 KiB keeps even that under the broker's 1 MB message limit.
    max_message_bytes: Annotated[int, Field(ge=256, le=128 * 1024)] = 64 * 1024
    source_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # Records per poll of an input partition at least this many records behind (a
    # backlog: a restart, a burst): larger batches cost less a record, above all in
    # a cluster. Not below ``source_batch_size``; None: see :meth:`backlog_batch_size`.
    source_backlog_batch_size: Annotated[int, Field(ge=1, le=100_000)] | None = None
    # Milliseconds between polls of an input partition that is not behind (its last
    # poll did not fill a batch): fewer, larger steps at moderate load, for at most
    # this much added latency. 0: poll again as soon as the flow is free.
    source_linger_ms: Annotated[int, Field(ge=0, le=1000)] = 10
    startup_wait_s: Annotated[float, Field(ge=0, le=86_400)] = 300.0
    # Card and merchant shards; None: one per bytewax worker of the cluster (see
    # :meth:`shard_count`). Each shard a worker holds costs it a logic call and state
    # reads and writes per step, so more than one per worker only adds overhead.
    shards: Annotated[int, Field(ge=1, le=4096)] | None = None
    out_of_orderness_ms: Annotated[int, Field(ge=0, le=86_400_000)] = 5_000
    allowed_lateness_ms: Annotated[int, Field(ge=0, le=86_400_000)] = 60_000
    max_future_ms: Annotated[int, Field(ge=1_000, le=7 * 86_400_000)] = 3_600_000
    # Accepted records of a partition that must reach a time before its watermark
    # does: 2 keeps one outlier from moving it; 1 trusts every record.
    watermark_agreement: Annotated[int, Field(ge=1, le=2)] = 2
    idle_timeout_ms: Annotated[int, Field(ge=100, le=3_600_000)] = 10_000
    session_gap_ms: Annotated[int, Field(ge=1_000, le=86_400_000)] = 1_800_000
    # Crashes of one record (a bug it triggers in a step) before it is skipped as a
    # ``quarantined`` dead letter.
    quarantine_after: Annotated[int, Field(ge=1, le=100)] = 2
    consumer_config: dict[str, str] = {}
    producer_config: dict[str, str] = {}
    # Kafka security (docs/security.md), for every Kafka client of the service. Secrets
    # come from the environment or from files; they are SecretStr, so a repr or a log of
    # the settings shows ********** instead.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_key_password_file: Path | None = None

    @field_validator("source_backlog_batch_size")
    @classmethod
    def _backlog_not_below_batch(cls, value: int | None, info: ValidationInfo) -> int | None:
        batch = info.data.get("source_batch_size")
        if value is not None and batch is not None and value < batch:
            raise ValueError(f"must be at least {_env('source_batch_size')} ({batch})")
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port...], got {server.strip()!r}")
        return value

    @field_validator("flow_name")
    @classmethod
    def _legal_flow_name(cls, value: str) -> str:
        # It becomes part of a topic name and of transactional ids.
        if not value or len(value) > 200 or not all(c.isalnum() or c in "._-" for c in value):
            raise ValueError("a flow name is 1-200 of [a-zA-Z0-9._-]")
        return value

    @field_validator("model_dir", "shadow_model_dir", "canary_model_dir")
    @classmethod
    def _model_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not (value / "manifest.json").is_file():
            raise ValueError(f"no manifest.json in {value}")
        return value

    @field_validator(
        "sasl_password_file",
        "ssl_ca_file",
        "ssl_cert_file",
        "ssl_key_file",
        "ssl_key_password_file",
    )
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @property
    def brokers(self) -> list[str]:
        """Bootstrap servers as a list."""
        return [s.strip() for s in self.bootstrap_servers.split(",")]

    @property
    def consumer_group(self) -> str:
        """The consumer group the source's progress is committed to (monitoring only).

        >>> Settings(flow_name="fraud").consumer_group
        'streamscore-fraud'
        """
        return f"streamscore-{self.flow_name}"

    def backlog_batch_size(self) -> int:
        """Records per poll of a partition this far behind: as set, else 4000 or the batch size.

        >>> Settings().backlog_batch_size(), Settings(source_batch_size=5000).backlog_batch_size()
        (4000, 5000)
        """
        if self.source_backlog_batch_size is not None:
            return self.source_backlog_batch_size
        return max(DEFAULT_BACKLOG_BATCH_SIZE, self.source_batch_size)

    def shard_count(self, workers: int) -> int:
        """Card and merchant shards of a cluster of ``workers`` bytewax workers in all.

        ``shards`` when set, else one per worker.

        >>> Settings(shards=None).shard_count(2), Settings(shards=16).shard_count(2)
        (2, 16)
        """
        return self.shards if self.shards is not None else workers

    def kafka_security(self) -> dict[str, str]:
        """librdkafka's security properties for these settings; ConfigError if inconsistent.

        Reads the password files. The result holds secrets: hand it to a Kafka
        client, never to a log line or an error message.

        >>> Settings().kafka_security()
        {'security.protocol': 'plaintext'}
        """
        protocol = self.security_protocol
        config = {"security.protocol": protocol.lower()}
        sasl = protocol.startswith("SASL_")
        tls = protocol.endswith("SSL")
        sasl_set = [
            f
            for f in ("sasl_mechanism", "sasl_username", "sasl_password", "sasl_password_file")
            if getattr(self, f) is not None
        ]
        tls_set = [
            f
            for f in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file", "ssl_key_password")
            if getattr(self, f) is not None
        ] + (["ssl_key_password_file"] if self.ssl_key_password_file is not None else [])
        if sasl_set and not sasl:
            _mismatch(sasl_set[0], protocol, "SASL_SSL or SASL_PLAINTEXT")
        if tls_set and not tls:
            _mismatch(tls_set[0], protocol, "SSL or SASL_SSL")
        if sasl:
            if self.sasl_mechanism is None:
                raise ConfigError(_env("sasl_mechanism"), f"required with {protocol}")
            if not self.sasl_username:
                raise ConfigError(_env("sasl_username"), f"required with {protocol}")
            password = _secret(self, "sasl_password", required=True)
            assert password is not None
            config |= {
                "sasl.mechanism": self.sasl_mechanism,
                "sasl.username": self.sasl_username,
                "sasl.password": password,
            }
        if tls:
            if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
                given, missing = (
                    ("ssl_cert_file", "ssl_key_file")
                    if self.ssl_key_file is None
                    else ("ssl_key_file", "ssl_cert_file")
                )
                raise ConfigError(
                    _env(missing), f"required with {_env(given)} (a client certificate)"
                )
            key_password = _secret(self, "ssl_key_password", required=False)
            if key_password is not None and self.ssl_key_file is None:
                raise ConfigError(
                    _env("ssl_key_password"), f"set, but {_env('ssl_key_file')} is not"
                )
            for name, prop in (
                ("ssl_ca_file", "ssl.ca.location"),
                ("ssl_cert_file", "ssl.certificate.location"),
                ("ssl_key_file", "ssl.key.location"),
            ):
                path = getattr(self, name)
                if path is not None:
                    config[prop] = str(path)
            if key_password is not None:
                config["ssl.key.password"] = key_password
        return config

    def kafka_python_security(self) -> dict[str, str]:
        """The same security as kafka-python keyword arguments (the CLI's topics and produce).

        >>> Settings().kafka_python_security()
        {'security_protocol': 'PLAINTEXT'}
        """
        names = {
            "security.protocol": "security_protocol",
            "sasl.mechanism": "sasl_mechanism",
            "sasl.username": "sasl_plain_username",
            "sasl.password": "sasl_plain_password",
            "ssl.ca.location": "ssl_cafile",
            "ssl.certificate.location": "ssl_certfile",
            "ssl.key.location": "ssl_keyfile",
            "ssl.key.password": "ssl_password",
        }
        config = {names[k]: v for k, v in self.kafka_security().items()}
        config["security_protocol"] = self.security_protocol
        return config

    def consumer_client_config(self) -> dict[str, str]:
        """Security properties, then ``consumer_config`` (which may override them)."""
        return {**self.kafka_security(), **self.consumer_config}

    def producer_client_config(self) -> dict[str, str]:
        """Security properties, then ``producer_config`` (which may override them)."""
        return {**self.kafka_security(), **self.producer_config}

    def secrets(self) -> list[str]:
        """Every secret value in these settings, to redact from text that leaves the process."""
        found = [
            p
            for k, p in self.kafka_security().items()
            if k in ("sasl.password", "ssl.key.password")
        ]
        for config in (self.consumer_config, self.producer_config):
            found += [v for k, v in config.items() if "password" in k or "secret" in k]
        return [s for s in found if s]


# Settings read from the environment only: no CLI flag, so a secret never shows in `ps`.
ENV_ONLY = frozenset(
    {
        "security_protocol",
        "sasl_mechanism",
        "sasl_username",
        "sasl_password",
        "sasl_password_file",
        "ssl_ca_file",
        "ssl_cert_file",
        "ssl_key_file",
        "ssl_key_password",
        "ssl_key_password_file",
    }
)


def _env(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _mismatch(field: str, protocol: str, needs: str) -> None:
    problem = f"set, but {_env('security_protocol')} is {protocol} (it needs {needs})"
    raise ConfigError(_env(field), problem)


def _secret(settings: Settings, field: str, *, required: bool) -> str | None:
    """A secret from its env var or from the file named by ``<field>_FILE``; never both."""
    value: SecretStr | None = getattr(settings, field)
    path: Path | None = getattr(settings, f"{field}_file")
    if value is not None and path is not None:
        raise ConfigError(_env(field), f"set twice: give it or {_env(field + '_file')}, not both")
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                _env(f"{field}_file"), f"cannot read {path}: {exc.__class__.__name__}"
            ) from None
        if not text:
            raise ConfigError(_env(f"{field}_file"), f"{path} is empty")
        return text
    if value is None or not value.get_secret_value():
        if required:
            raise ConfigError(_env(field), f"required (or {_env(field + '_file')})")
        return None
    return value.get_secret_value()


def load_settings(**overrides: Any) -> Settings:
    """Build settings from overrides (flags) and the environment, or raise ConfigError."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        problems = [(_setting_name(e["loc"]), e["msg"]) for e in exc.errors()]
        raise ConfigError(*problems[0], *problems[1:]) from None
    except SettingsError as exc:
        # An environment value that must be JSON (a dict or nested model) is not.
        field = _unparsed_field(str(exc))
        name = _setting_name((field,)) if field else f"a {ENV_PREFIX}* variable"
        raise ConfigError(
            name, 'is not valid JSON; write it as a JSON object, e.g. {"fetch.min.bytes": "1"}'
        ) from None
    settings.kafka_security()  # fail at startup, not when the first client connects
    return settings


def _unparsed_field(message: str) -> str | None:
    """The field pydantic-settings names in ``error parsing value for field "x" ...``."""
    _, quote, rest = message.partition('field "')
    return rest.partition('"')[0] or None if quote else None


def _setting_name(loc: tuple[int | str, ...]) -> str:
    """Name a setting as its env var and, for top-level ones, its CLI flag."""
    env = ENV_PREFIX + "__".join(str(p) for p in loc).upper()
    if len(loc) != 1 or loc[0] in ENV_ONLY:
        return env
    return f"{env} (--{str(loc[0]).replace('_', '-')})"
