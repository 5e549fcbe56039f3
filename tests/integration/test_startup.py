"""Startup against Kafka: wait for a broker that is not up yet; fail fast on wrong settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.tooling import contract_topics, create_topics
from schemas.settings import Settings, TopicNames
from tests.conftest import ROOT
from tests.integration.kafka_helpers import free_port, produce, read_all

pytestmark = pytest.mark.integration


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", *args],
        env={**os.environ, "STREAMSCORE_METRICS_PORT": "0", **env},
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_broker_that_never_answers_is_a_config_error_naming_the_setting() -> None:
    started = time.monotonic()
    done = _run(
        {
            "STREAMSCORE_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "STREAMSCORE_STARTUP_WAIT_S": "2",
        }
    )
    assert done.returncode == 2
    assert b"STREAMSCORE_BOOTSTRAP_SERVERS" in done.stderr
    assert b"did not answer" in done.stderr and b"gave up after 2 s" in done.stderr
    assert time.monotonic() - started < 60


def test_missing_topic_fails_after_the_startup_wait_naming_it(settings: Settings) -> None:
    done = _run(
        {
            "STREAMSCORE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "STREAMSCORE_TOPICS__TRANSACTIONS": "no-such-topic-for-streamscore",
            "STREAMSCORE_STARTUP_WAIT_S": "2",
        }
    )
    assert done.returncode == 2
    assert b"no-such-topic-for-streamscore" in done.stderr
    assert b"does not exist" in done.stderr and b"STREAMSCORE_TOPICS__" in done.stderr


def test_flow_waits_for_a_broker_that_starts_later(tmp_path: Path, settings: Settings) -> None:
    port, controller = free_port(), free_port()
    bootstrap = f"127.0.0.1:{port}"
    kafka_env = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller),
        "KAFKA_HOME_DIR": str(tmp_path / "kafka"),
    }
    env = {
        **os.environ,
        "STREAMSCORE_BOOTSTRAP_SERVERS": bootstrap,
        "STREAMSCORE_METRICS_PORT": "0",
        "STREAMSCORE_STATE_DIR": str(settings.state_dir),
    }
    flow = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", "--until-eof"], env=env, stderr=subprocess.PIPE
    )
    try:
        time.sleep(3)  # the flow is up and waiting; the broker is not
        assert flow.poll() is None
        subprocess.run([str(ROOT / "scripts" / "kafka"), "start"], env=kafka_env, check=True)
        create_topics(bootstrap, contract_topics(TopicNames()), 1)  # a fresh broker: defaults
        body = (
            b'{"event_id": "e1", "card_id": "c1", "merchant_id": "m1", "amount": 1.0,'
            b' "currency": "EUR", "event_time": "2026-11-23T10:00:00Z"}'
        )
        produce(bootstrap, "transactions", [(b"c1", body)])
        _, err = flow.communicate(timeout=120)
        assert flow.returncode == 0, err.decode()[-2000:]
        assert b"waiting for Kafka" in err
        scores = read_all(bootstrap, "scores", expect=1)
        assert [s["event_id"] for s in scores] == ["e1"]
    finally:
        if flow.poll() is None:
            flow.kill()
            flow.wait()
        subprocess.run([str(ROOT / "scripts" / "kafka"), "stop"], env=kafka_env, check=False)


@pytest.mark.parametrize("problem", ["a file", "under a file"])
def test_unusable_state_dir_fails_at_startup_naming_the_setting(
    tmp_path: Path, settings: Settings, problem: str
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    state_dir = blocker if problem == "a file" else blocker / "state"
    done = _run(
        {
            "STREAMSCORE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "STREAMSCORE_STATE_DIR": str(state_dir),
        }
    )
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "Traceback" not in err
    assert "STREAMSCORE_STATE_DIR (--state-dir)" in err and str(state_dir) in err
    assert "writable directory" in err


def test_consumer_config_that_is_not_json_fails_naming_the_setting() -> None:
    done = _run({"STREAMSCORE_CONSUMER_CONFIG": '{"fetch.min.bytes": 1'})
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "Traceback" not in err
    assert "STREAMSCORE_CONSUMER_CONFIG" in err and "not valid JSON" in err
