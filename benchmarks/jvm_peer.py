"""The Kafka Streams peer: built by ``scripts/kafka-streams-peer``, run as its own JVM process.

The peer (``benchmarks/kafka_streams/CountSumPeer.java``) runs the Quix peer's
job (per-card tumbling 5-minute count + sum) and prints the same JSON result
line as :mod:`benchmarks.peers`. Its jars come from Maven Central (pinned in
``scripts/kafka-streams-pom.xml``, the broker's Kafka version) and are cached
with the compiled class outside the work tree, so only the first build fetches.

>>> peer_argv(["--events", "10"])[1:]
['run', '--events', '10']
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from benchmarks.kafka_load import BenchError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "kafka-streams-peer"
# The first build fetches about 20 MB of jars with Maven; later ones find them cached.
BUILD_TIMEOUT_S = 600.0


def build(timeout_s: float = BUILD_TIMEOUT_S) -> Path:
    """Fetch the jars and compile the peer unless cached; the folder of its class.

    Raises :class:`BenchError` with the script's output when Java, Maven or the
    fetch fail, or when it takes longer than ``timeout_s``.
    """
    try:
        done = subprocess.run(
            [str(SCRIPT), "build"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env={**os.environ, "KAFKA_STREAMS_FETCH_TIMEOUT_S": str(int(timeout_s))},
        )
    except subprocess.TimeoutExpired:
        msg = f"building the Kafka Streams peer took over {timeout_s:.0f} s ({SCRIPT} build)"
        raise BenchError(msg) from None
    except OSError as exc:
        raise BenchError(f"cannot run {SCRIPT}: {exc}") from None
    if done.returncode != 0:
        msg = f"{SCRIPT} build failed ({done.returncode}):\n{done.stderr[-3000:]}"
        raise BenchError(msg)
    return Path(done.stdout.strip().splitlines()[-1])


def peer_argv(flags: Sequence[str]) -> list[str]:
    """The command line that runs the built peer with ``flags`` (those of benchmarks.peers)."""
    return [str(SCRIPT), "run", *flags]
