"""``/healthz`` and ``/readyz`` of a running flow; the metrics port's startup error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from benchmarks.replay import pipeline_env
from schemas.settings import Settings
from tests.conftest import ROOT
from tests.integration.kafka_helpers import free_port

pytestmark = pytest.mark.integration


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _stop(proc: subprocess.Popen[bytes]) -> bytes:
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    return err


def _until(proc: subprocess.Popen[bytes], port: int, path: str, status: int) -> dict[str, Any]:
    """Poll ``path`` until it answers ``status``; the last body."""
    deadline = time.monotonic() + 90
    last: tuple[int, dict[str, Any]] | None = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the flow exited"
        try:
            last = _get(port, path)
        except OSError:
            last = None  # not listening yet
        if last is not None and last[0] == status:
            return last[1]
        time.sleep(0.5)
    pytest.fail(f"{path} never answered {status}; last: {last}")


def test_ready_once_it_consumes_alive_before(settings: Settings) -> None:
    port = free_port()
    env = pipeline_env(settings.bootstrap_servers, settings.topics, settings.state_dir)
    env["STREAMSCORE_METRICS_PORT"] = str(port)
    proc = _start(env)
    try:
        assert _until(proc, port, "/healthz", 200) == {"alive": True}
        body = _until(proc, port, "/readyz", 200)
        assert body == {
            "ready": True,
            "checks": {"broker": None, "topics": None, "model": None, "consuming": None},
        }
    finally:
        err = _stop(proc)
    assert proc.returncode == 0, err.decode()[-2000:]


def test_alive_but_not_ready_while_the_broker_does_not_answer(settings: Settings) -> None:
    port = free_port()
    env = pipeline_env(f"127.0.0.1:{free_port()}", settings.topics, settings.state_dir)
    env.update(STREAMSCORE_METRICS_PORT=str(port), STREAMSCORE_STARTUP_WAIT_S="120")
    proc = _start(env)
    try:
        assert _until(proc, port, "/healthz", 200) == {"alive": True}
        body = _until(proc, port, "/readyz", 503)
        assert not body["ready"]
        assert body["checks"]["broker"].startswith("no answer from Kafka")
        assert body["checks"]["consuming"] == "the source has not polled Kafka yet"
    finally:
        _stop(proc)


def test_a_metrics_port_in_use_is_one_line_naming_the_setting(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = pipeline_env(settings.bootstrap_servers, settings.topics, settings.state_dir)
        done = subprocess.run(
            [sys.executable, "-m", "flows.cli", "run"],
            env={**os.environ, **env, "STREAMSCORE_METRICS_PORT": str(port)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"streamscore: invalid setting STREAMSCORE_METRICS_PORT (--metrics-port): 127.0.0.1:{port}"
        " is already in use by another process; choose a free port, stop the other process,"
        " or 0 for no endpoint"
    ]
