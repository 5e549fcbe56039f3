"""Fixtures shared by every test folder: the real local Kafka broker (scripts/kafka).

The broker is started once per session unless one already answers, and stopped
at the end only if this session started it.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests check results, never time: no per-example deadline on shared, noisy machines.
settings.register_profile("streamscore", deadline=None)
settings.load_profile("streamscore")

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP = os.environ.get("STREAMSCORE_TEST_BOOTSTRAP", "127.0.0.1:9092")


def _answers(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of a running broker, started here when none answers."""
    started = False
    if not _answers(BOOTSTRAP):
        port = BOOTSTRAP.rpartition(":")[2]
        env = {**os.environ, "KAFKA_PORT": port}
        subprocess.run([str(ROOT / "scripts" / "kafka"), "start"], check=True, env=env)
        started = True
    yield BOOTSTRAP
    if started:
        subprocess.run([str(ROOT / "scripts" / "kafka"), "stop"], check=False)
