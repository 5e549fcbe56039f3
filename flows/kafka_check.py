"""Kafka at startup and for ``/readyz``: client settings, broker, credentials, topics, ACLs.

librdkafka reports a wrong password, an untrusted certificate and a broker that
is down alike: a metadata request that times out. Its error callback says which
it was, so :func:`await_kafka` turns each into a
:class:`~schemas.errors.ConfigError` naming the setting to fix: credentials and
certificates fail at once (waiting cannot fix them); a broker that does not
answer is waited for, up to ``STREAMSCORE_STARTUP_WAIT_S``, as are missing
topics. Then the topics' ACLs are checked (KIP-430's authorized operations): a
principal that may not read an input or write an output stops the process here,
not at its first delivery. Every message has the settings' secrets redacted.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import AclOperation, AdminClient, ClusterMetadata

from operators.kafka_io import PRODUCER_SETTINGS
from schemas.errors import ConfigError
from schemas.settings import ENV_PREFIX, Settings

log = logging.getLogger(__name__)

# librdkafka's properties that come from StreamScore's security settings.
_PROPERTY_SETTINGS = {
    "security.protocol": "SECURITY_PROTOCOL",
    "sasl.mechanism": "SASL_MECHANISM",
    "sasl.username": "SASL_USERNAME",
    "sasl.password": "SASL_PASSWORD",
    "ssl.ca.location": "SSL_CA_FILE",
    "ssl.certificate.location": "SSL_CERT_FILE",
    "ssl.key.location": "SSL_KEY_FILE",
    "ssl.key.password": "SSL_KEY_PASSWORD",
}
# "sasl_ssl://host:port/bootstrap: " before, "(after 12ms in state X)" after librdkafka's text.
# What librdkafka's terse OpenSSL errors about a TLS file usually mean.
_FILE_HINTS = {
    "SSL_CA_FILE": " (it must hold PEM certificates)",
    "SSL_CERT_FILE": " (it must hold a PEM certificate)",
    "SSL_KEY_FILE": (
        f" (it must hold a PEM private key; an encrypted one needs {ENV_PREFIX}SSL_KEY_PASSWORD"
        " or _FILE, and that password)"
    ),
}
_BROKER_PREFIX = re.compile(r"^\S+://\S+?: |^\S+:\d+/\S+: ")
_AFTER = re.compile(r"\s*\(after \d+ms in state [^)]*\)$")
ATTEMPT_TIMEOUT_S = 3.0


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``***``.

    >>> redact("bad value 'hunter2' for sasl.password", ["hunter2"])
    "bad value '***' for sasl.password"
    """
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def input_topics(settings: Settings) -> list[str]:
    """Topics the flow reads."""
    return [settings.topics.transactions, settings.topics.chargebacks]


def output_topics(settings: Settings) -> list[str]:
    """Topics the flow writes."""
    t = settings.topics
    return [t.scores, t.window_aggregates, t.drift, t.dead_letters, t.quality]


def _topic_setting(settings: Settings, topic: str) -> str:
    names = [k for k, v in settings.topics.model_dump().items() if v == topic]
    return f"{ENV_PREFIX}TOPICS__{names[0].upper()}" if names else f"{ENV_PREFIX}TOPICS__*"


def _setting_of(message: str, fallback: str) -> str:
    """The StreamScore setting behind the librdkafka property a message names."""
    for prop, name in _PROPERTY_SETTINGS.items():
        if f'"{prop}"' in message or f"{prop} " in message or f"{prop}:" in message:
            return ENV_PREFIX + name
    return fallback


def check_client_settings(settings: Settings) -> None:
    """Create (and drop) each kind of client: librdkafka checks every property and opens
    the TLS files before it connects. ConfigError naming the setting, never a traceback."""
    brokers = {"bootstrap.servers": settings.bootstrap_servers}
    secrets = settings.secrets()
    security = settings.kafka_security()
    brokers["log_level"] = "0"  # dropped at once; a connection attempt need not log
    attempts: list[tuple[str, Callable[[], object]]] = [
        (f"{ENV_PREFIX}SECURITY_PROTOCOL", lambda: Producer({**brokers, **security})),
        (
            f"{ENV_PREFIX}CONSUMER_CONFIG",
            lambda: Consumer(
                {**brokers, "group.id": "streamscore-check", **settings.consumer_client_config()}
            ),
        ),
        (
            f"{ENV_PREFIX}PRODUCER_CONFIG",
            lambda: Producer({**brokers, **PRODUCER_SETTINGS, **settings.producer_client_config()}),
        ),
    ]
    for fallback, make in attempts:
        try:
            client = make()
        except (KafkaException, ValueError, TypeError) as exc:
            text = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
            text = text.removeprefix("Failed to create producer: ").removeprefix(
                "Failed to create consumer: "
            )
            setting = fallback
            if fallback == f"{ENV_PREFIX}SECURITY_PROTOCOL":
                setting = _setting_of(text, fallback)
            hint = _FILE_HINTS.get(setting.removeprefix(ENV_PREFIX), "")
            raise ConfigError(setting, redact(text, secrets) + hint) from None
        if isinstance(client, Consumer):
            client.close()


def _admin(settings: Settings, on_error: Callable[[KafkaError], None]) -> AdminClient:
    return AdminClient(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            **settings.consumer_client_config(),
            "error_cb": on_error,
            # Its failures are reported through error_cb, named and worded here;
            # librdkafka's own log lines of them would only repeat them.
            "log_level": 0,
        }
    )


def _refusal(settings: Settings, err: KafkaError) -> ConfigError | None:
    """The ConfigError for an error no wait can fix (credentials, TLS), else None."""
    text = redact(_AFTER.sub("", _BROKER_PREFIX.sub("", err.str())), settings.secrets())
    brokers = settings.bootstrap_servers
    if err.code() == KafkaError._AUTHENTICATION:
        if "mechanism" in text.lower() and "unsupported" in text.lower():
            setting = f"{ENV_PREFIX}SASL_MECHANISM"
        else:
            file = settings.sasl_password_file is not None
            setting = f"{ENV_PREFIX}SASL_PASSWORD{'_FILE' if file else ''}"
        user = settings.sasl_username
        problem = (
            f"Kafka at {brokers} refused the SASL login of user {user!r} "
            f"({settings.sasl_mechanism}): {text}; check {ENV_PREFIX}SASL_USERNAME, "
            f"{ENV_PREFIX}SASL_PASSWORD (or _FILE) and {ENV_PREFIX}SASL_MECHANISM"
        )
        return ConfigError(setting, problem)
    if err.code() == KafkaError._SSL:
        verify = "certificate verify failed" in text
        setting = f"{ENV_PREFIX}SSL_CA_FILE" if verify else f"{ENV_PREFIX}SSL_CERT_FILE"
        if not verify and settings.ssl_cert_file is None:
            setting = f"{ENV_PREFIX}SECURITY_PROTOCOL"
        problem = f"TLS handshake with Kafka at {brokers} failed: {text}"
        return ConfigError(setting, problem)
    return None


def _principal_setting(settings: Settings) -> str:
    if settings.security_protocol.startswith("SASL_"):
        return f"{ENV_PREFIX}SASL_USERNAME"
    if settings.ssl_cert_file is not None:
        return f"{ENV_PREFIX}SSL_CERT_FILE"
    return f"{ENV_PREFIX}SECURITY_PROTOCOL"


def _principal(settings: Settings) -> str:
    if settings.security_protocol.startswith("SASL_"):
        return f"User:{settings.sasl_username}"
    if settings.ssl_cert_file is not None:
        return f"the principal of {settings.ssl_cert_file}"
    return "User:ANONYMOUS"


def missing_topics(settings: Settings, cluster: ClusterMetadata) -> list[str]:
    """Configured topics the metadata lacks (or this principal may not see)."""
    missing = []
    for topic in input_topics(settings) + output_topics(settings):
        meta = cluster.topics.get(topic)
        if meta is None or meta.error is not None:
            missing.append(topic)
    return missing


def check_access(settings: Settings, admin: AdminClient) -> None:
    """ConfigError unless this principal may read every input and write every output."""
    needs = [(t, AclOperation.READ, "read") for t in input_topics(settings)]
    needs += [(t, AclOperation.WRITE, "write to") for t in output_topics(settings)]
    topics = sorted({t for t, _, _ in needs})
    futures = admin.describe_topics(
        TopicCollection(topics), include_authorized_operations=True, request_timeout=10
    )
    allowed: dict[str, list[AclOperation] | None] = {}
    for topic, future in futures.items():
        try:
            allowed[topic] = future.result().authorized_operations
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                allowed[topic] = []
            else:
                raise
    for topic, operation, verb in needs:
        ops = allowed.get(topic)
        if ops is None or operation in ops or AclOperation.ALL in ops:
            continue  # a broker that does not report operations is not second-guessed
        raise _denied(settings, topic, operation, verb)


def _denied(settings: Settings, topic: str, operation: AclOperation, verb: str) -> ConfigError:
    principal = _principal(settings)
    grant = principal if principal.startswith("User:") else "the principal"
    problem = (
        f"{principal} may not {verb} topic {topic!r} ({_topic_setting(settings, topic)}) "
        f"on {settings.bootstrap_servers}; grant {grant} {operation.name} on it "
        f"(kafka-acls.sh --add --allow-principal {grant} --operation "
        f"{operation.name.capitalize()} --topic {topic}) or log in as one that has it"
    )
    return ConfigError(_principal_setting(settings), problem)


def _check_unauthorized(settings: Settings, admin: AdminClient, topics: list[str]) -> None:
    """ConfigError if the broker says this principal may not see one of ``topics``.

    A metadata listing leaves out topics the principal may not describe, so they
    look missing; asking for them by name tells the two apart (without creating
    them, as a metadata request for a topic can on brokers that auto-create).
    """
    futures = admin.describe_topics(TopicCollection(topics), request_timeout=10)
    for topic, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                reading = topic in input_topics(settings)
                operation = AclOperation.READ if reading else AclOperation.WRITE
                raise _denied(
                    settings, topic, operation, "read" if reading else "write to"
                ) from None


def await_kafka(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Wait until the broker answers and the topics exist, then check the ACLs.

    ConfigError at once for refused credentials or certificates and missing
    access; after ``startup_wait_s`` for a broker that does not answer or topics
    that do not exist. Setting ``stop`` ends the wait early, without an error.
    """
    stop = stop or threading.Event()
    check_client_settings(settings)
    errors: list[KafkaError] = []
    admin = _admin(settings, errors.append)
    brokers = settings.bootstrap_servers
    deadline = clock() + settings.startup_wait_s
    delay = 0.5
    while True:
        setting, problem = _attempt(settings, admin, errors)
        if setting is None:
            check_access(settings, admin)
            return
        if clock() + delay > deadline:
            wait = f"{settings.startup_wait_s:.0f} s"
            raise ConfigError(setting, f"{problem}; gave up after {wait}")
        log.warning("waiting for Kafka at %s: %s", brokers, problem)
        if stop.wait(delay):
            return
        delay = min(delay * 2, 10.0)


def _attempt(
    settings: Settings, admin: AdminClient, errors: list[KafkaError]
) -> tuple[str | None, str]:
    """One metadata request: (None, "") when all is there, else (setting, problem)."""
    brokers = settings.bootstrap_servers
    try:
        cluster = admin.list_topics(timeout=ATTEMPT_TIMEOUT_S)
    except KafkaException as exc:
        admin.poll(0)  # serves the error callback
        for err in errors:
            refused = _refusal(settings, err)
            if refused is not None:
                raise refused from None
        detail = [e for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
        why = redact((detail[-1] if detail else exc.args[0]).str(), settings.secrets())
        errors.clear()
        hint = ""
        if settings.security_protocol == "PLAINTEXT":
            hint = f" (a TLS or SASL listener looks the same: check {ENV_PREFIX}SECURITY_PROTOCOL)"
        return f"{ENV_PREFIX}BOOTSTRAP_SERVERS", f"Kafka at {brokers} did not answer ({why}){hint}"
    missing = missing_topics(settings, cluster)
    if missing:
        _check_unauthorized(settings, admin, missing)
        topic = missing[0]
        problem = (
            f"topic {topic!r} does not exist on {brokers}, or {_principal(settings)} may not "
            "describe it (create the topics with `streamscore topics`)"
        )
        return _topic_setting(settings, topic), problem
    return None, ""


class KafkaProbe:
    """``/readyz``'s Kafka checks: the broker answers, every configured topic exists."""

    def __init__(self, settings: Settings, timeout_s: float = 2.0) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._admin: AdminClient | None = None

    def __call__(self) -> dict[str, str | None]:
        """``{"broker": problem, "topics": problem}``, None where it passes."""
        if self._admin is None:  # on first use: startup has its own client
            self._admin = _admin(self._settings, lambda _err: None)
        try:
            cluster = self._admin.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            why = redact(exc.args[0].str(), self._settings.secrets())
            return {"broker": f"no answer from Kafka ({why})", "topics": "unknown"}
        missing = missing_topics(self._settings, cluster)
        return {"broker": None, "topics": f"missing: {', '.join(missing)}" if missing else None}
