"""Independent verification through kafka-python: publish inputs, read every output.

Also the in-process way to run the flow over what is in the topics, to the end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bytewax.testing import run_main
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from flows.dataflow import build_flow
from flows.main import load_models
from models.registry import ModelRegistry
from operators.metrics import ServiceMetrics
from schemas.settings import Settings
from state.rocksdb import ProcessStore
from tests.conftest import ROOT


def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> list[tuple[int, int]]:
    """Publish (key, value) pairs; return each one's (partition, offset) in order."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in records]
        producer.flush()
        return [(md.partition, md.offset) for md in (f.get(timeout=30) for f in futures)]
    finally:
        producer.close()


def read_all(
    bootstrap: str, topic: str, *, expect: int | None = None, timeout_s: float = 30
) -> list[Any]:
    """Every record of ``topic`` as parsed JSON (key included under ``_key``).

    Reads to the end offsets; with ``expect``, keeps polling until that many
    arrived or the timeout passes (then returns what there is).
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            end = consumer.end_offsets(parts)
            for batch in consumer.poll(timeout_ms=200).values():
                for m in batch:
                    value = json.loads(m.value)
                    value["_key"] = None if m.key is None else m.key.decode(errors="replace")
                    out.append(value)
            at_end = all(consumer.position(p) >= end[p] for p in parts)
            if at_end and (expect is None or len(out) >= expect):
                break
        return out
    finally:
        consumer.close()


def run_flow_to_end(
    settings: Settings, *, state_kept: bool | None = None
) -> tuple[ModelRegistry, ServiceMetrics]:
    """Run the flow in this process until every input partition is read; return its models.

    ``state_kept``: leave the state store complete for the caller to read (see ``build_flow``).
    """
    metrics = ServiceMetrics.create(CollectorRegistry())
    models = load_models(settings, metrics)
    store = ProcessStore(settings.state_dir, 0, fresh=True)
    flow = build_flow(
        settings,
        models=models,
        metrics=metrics,
        store=store,
        stop_at_eof=True,
        state_kept=state_kept,
    )
    try:
        run_main(flow)  # type: ignore[no-untyped-call]
    finally:
        store.close()
    return models, metrics


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OwnBroker:
    """A broker of a test's own (``scripts/kafka`` on free ports, data under ``home``).

    For the tests that stop a broker mid-run: the session's broker stays up.
    """

    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self._env = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(free_port()),
            "KAFKA_HOME_DIR": str(home),
        }

    @property
    def bootstrap(self) -> str:
        """host:port of the broker."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and wait until it answers."""
        subprocess.run([str(ROOT / "scripts" / "kafka"), "start"], env=self._env, check=True)

    def stop(self, *, check: bool = True) -> None:
        """Stop it (``check=False``: whatever state it is in, as in a finally)."""
        subprocess.run([str(ROOT / "scripts" / "kafka"), "stop"], env=self._env, check=check)
