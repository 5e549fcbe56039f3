"""The metrics port's endpoints, served for real on a free port with fake checks."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from flows.health import Readiness, serve
from schemas.errors import ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def kafka() -> dict[str, str | None]:
    return {"broker": None, "topics": None}


@pytest.fixture
def served(kafka: dict[str, str | None]) -> Iterator[tuple[int, Readiness, Clock]]:
    registry = CollectorRegistry()
    Counter("streamscore_test_things", "things", registry=registry).inc(3)
    clock = Clock()
    readiness = Readiness(kafka=lambda: dict(kafka), model_loaded=lambda: None, clock=clock)
    port = _free_port()
    httpd = serve(registry, readiness, host="127.0.0.1", port=port, base_port=port)
    yield port, readiness, clock
    httpd.shutdown()
    httpd.server_close()


def _ready(port: int) -> tuple[int, dict[str, Any]]:
    status, body = _get(port, "/readyz")
    parsed: dict[str, Any] = json.loads(body)
    return status, parsed


def test_metrics_and_liveness(served: tuple[int, Readiness, Clock]) -> None:
    port, _, _ = served
    status, body = _get(port, "/metrics")
    assert status == 200 and b"streamscore_test_things_total 3.0" in body
    assert _get(port, "/healthz") == (200, b'{"alive": true}\n')
    assert _get(port, "/nope")[0] == 404


def test_ready_only_while_the_source_polls(served: tuple[int, Readiness, Clock]) -> None:
    port, readiness, clock = served
    status, body = _ready(port)
    assert status == 503 and body["checks"]["consuming"] == "the source has not polled Kafka yet"
    readiness.polled()
    clock.now += 9
    assert _ready(port) == (
        200,
        {
            "ready": True,
            "checks": {"broker": None, "topics": None, "model": None, "consuming": None},
        },
    )
    clock.now += 2
    status, body = _ready(port)
    assert status == 503 and body["checks"]["consuming"] == "no poll of Kafka for 11 s"
    assert _get(port, "/healthz")[0] == 200  # alive all the same


def test_not_ready_while_kafka_is_away(
    served: tuple[int, Readiness, Clock], kafka: dict[str, str | None]
) -> None:
    port, readiness, _ = served
    readiness.polled()
    kafka.update(broker="no answer from Kafka (timed out)", topics="unknown")
    status, body = _ready(port)
    assert status == 503 and not body["ready"]
    assert body["checks"]["broker"] == "no answer from Kafka (timed out)"


def test_a_port_in_use_is_a_config_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        readiness = Readiness(kafka=dict, model_loaded=lambda: None)
        with pytest.raises(ConfigError) as caught:
            serve(
                CollectorRegistry(), readiness, host="127.0.0.1", port=port + 0, base_port=port - 1
            )
    message = str(caught.value)
    assert message.startswith(
        "invalid setting STREAMSCORE_METRICS_PORT (--metrics-port): 127.0.0.1:"
    )
    assert f"(STREAMSCORE_METRICS_PORT {port - 1} + process id 1) is already in use" in message
    assert "choose a free port" in message


def test_an_address_of_another_host_is_a_config_error_naming_the_host() -> None:
    readiness = Readiness(kafka=dict, model_loaded=lambda: None)
    with pytest.raises(ConfigError) as caught:
        serve(CollectorRegistry(), readiness, host="192.0.2.1", port=_free_port(), base_port=1)
    assert str(caught.value).startswith("invalid setting STREAMSCORE_METRICS_HOST (--metrics-host)")
