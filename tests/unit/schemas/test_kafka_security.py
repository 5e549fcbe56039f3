"""Kafka security settings: librdkafka properties, consistency checks, secrets from files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas.errors import ConfigError
from schemas.settings import Settings, load_settings

SASL: dict[str, Any] = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "u",
}


def _error(**given: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**given)
    return str(caught.value)


def test_sasl_ssl_properties(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = load_settings(**SASL, sasl_password="pw", ssl_ca_file=ca)
    assert settings.kafka_security() == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "pw",
        "ssl.ca.location": str(ca),
    }
    assert settings.secrets() == ["pw"]


def test_passthrough_overrides_the_security_properties() -> None:
    settings = load_settings(
        **SASL, sasl_password="pw", consumer_config={"sasl.mechanism": "PLAIN"}
    )
    assert settings.consumer_client_config()["sasl.mechanism"] == "PLAIN"
    assert settings.producer_client_config()["sasl.mechanism"] == "SCRAM-SHA-512"


def test_password_from_a_file_without_its_newline(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    settings = load_settings(**SASL, sasl_password_file=secret)
    assert settings.kafka_security()["sasl.password"] == "from-a-file"
    assert "from-a-file" not in repr(settings)


def test_mtls_with_an_encrypted_key(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem", "key-password"):
        (tmp_path / name).write_text("k3y\n")
    settings = load_settings(
        security_protocol="SSL",
        ssl_cert_file=tmp_path / "cert.pem",
        ssl_key_file=tmp_path / "key.pem",
        ssl_key_password_file=tmp_path / "key-password",
    )
    assert settings.kafka_security() == {
        "security.protocol": "ssl",
        "ssl.certificate.location": str(tmp_path / "cert.pem"),
        "ssl.key.location": str(tmp_path / "key.pem"),
        "ssl.key.password": "k3y",
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"security_protocol": "SASL_SSL"},
            "invalid setting STREAMSCORE_SASL_MECHANISM: required with SASL_SSL",
        ),
        (
            {**SASL},
            "invalid setting STREAMSCORE_SASL_PASSWORD: required"
            " (or STREAMSCORE_SASL_PASSWORD_FILE)",
        ),
        (
            {"sasl_username": "u"},
            "invalid setting STREAMSCORE_SASL_USERNAME: set, but STREAMSCORE_SECURITY_PROTOCOL is"
            " PLAINTEXT (it needs SASL_SSL or SASL_PLAINTEXT)",
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT", "ssl_ca_file": Path(__file__)},
            "invalid setting STREAMSCORE_SSL_CA_FILE: set, but STREAMSCORE_SECURITY_PROTOCOL is"
            " SASL_PLAINTEXT (it needs SSL or SASL_SSL)",
        ),
        (
            {"security_protocol": "SSL", "ssl_cert_file": Path(__file__)},
            "invalid setting STREAMSCORE_SSL_KEY_FILE: required with STREAMSCORE_SSL_CERT_FILE",
        ),
        (
            {**SASL, "sasl_password": "pw", "sasl_password_file": Path(__file__)},
            "invalid setting STREAMSCORE_SASL_PASSWORD: set twice",
        ),
        (
            {"security_protocol": "SSL", "ssl_ca_file": Path("/no/such/ca.pem")},
            "invalid setting STREAMSCORE_SSL_CA_FILE: Value error, no such file: /no/such/ca.pem",
        ),
        (
            {"security_protocol": "TLS"},
            "invalid setting STREAMSCORE_SECURITY_PROTOCOL: Input should be",
        ),
    ],
)
def test_inconsistent_settings_name_the_setting(given: dict[str, Any], message: str) -> None:
    assert _error(**given).startswith(message)


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "password"
    empty.write_text("\n")
    assert _error(**SASL, sasl_password_file=empty) == (
        f"invalid setting STREAMSCORE_SASL_PASSWORD_FILE: {empty} is empty"
    )


def test_a_wrong_value_never_echoes_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_SASL_PASSWORD", "hunter2-secret")
    message = _error(**{**SASL, "sasl_mechanism": "GSSAPI"})
    assert "STREAMSCORE_SASL_MECHANISM" in message and "hunter2-secret" not in message
    assert "hunter2-secret" not in repr(Settings(**SASL))
