"""Kafka startup checks that need no broker: client properties, files, an absent broker."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from flows.kafka_check import await_kafka, check_client_settings
from schemas.errors import ConfigError
from schemas.settings import load_settings


def _refused(**given: object) -> str:
    with pytest.raises(ConfigError) as caught:
        check_client_settings(load_settings(**given))
    return str(caught.value)


def test_good_settings_pass() -> None:
    check_client_settings(load_settings(consumer_config={"fetch.wait.max.ms": "5"}))


def test_an_unknown_consumer_property_names_the_passthrough() -> None:
    assert _refused(consumer_config={"fetch.wait.max": "5"}) == (
        "invalid setting STREAMSCORE_CONSUMER_CONFIG: "
        'No such configuration property: "fetch.wait.max"'
    )


def test_an_unknown_producer_property_names_the_passthrough() -> None:
    message = _refused(producer_config={"lingerms": "5"})
    assert message.startswith("invalid setting STREAMSCORE_PRODUCER_CONFIG: ")
    assert '"lingerms"' in message


def test_a_bad_value_is_refused_without_echoing_a_secret() -> None:
    message = _refused(
        consumer_config={"sasl.password": "p4ss-w0rd", "auto.offset.reset": "p4ss-w0rd"}
    )
    assert message.startswith("invalid setting STREAMSCORE_CONSUMER_CONFIG: ")
    assert "p4ss-w0rd" not in message and 'Invalid value "***"' in message


def test_a_ca_file_that_is_no_certificate_names_the_ca_setting(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    message = _refused(security_protocol="SSL", ssl_ca_file=ca)
    assert message.startswith("invalid setting STREAMSCORE_SSL_CA_FILE: ssl.ca.location failed")


def test_an_absent_broker_is_named_after_the_startup_wait() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(bootstrap_servers=f"127.0.0.1:{port}", startup_wait_s=0)
    with pytest.raises(ConfigError) as caught:
        await_kafka(settings)
    message = str(caught.value)
    assert message.startswith(
        f"invalid setting STREAMSCORE_BOOTSTRAP_SERVERS: Kafka at 127.0.0.1:{port} did not answer"
    )
    assert "check STREAMSCORE_SECURITY_PROTOCOL" in message and "gave up after 0 s" in message


def test_a_key_with_the_wrong_password_names_the_key_and_the_password(tmp_path: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", "key.pem", "-out",
         "cert.pem", "-days", "1", "-subj", "/CN=client", "-passout", "pass:right-one"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    message = _refused(
        security_protocol="SSL",
        ssl_cert_file=tmp_path / "cert.pem",
        ssl_key_file=tmp_path / "key.pem",
        ssl_key_password="wrong-one",
    )
    assert message.startswith("invalid setting STREAMSCORE_SSL_KEY_FILE: ssl.key.location failed")
    assert "an encrypted one needs STREAMSCORE_SSL_KEY_PASSWORD" in message
    assert "wrong-one" not in message
