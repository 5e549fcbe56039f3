"""Runs the golden inputs through the real flow in this process and collects every output message.

The one place that knows how to drive the engine: ``flows.dataflow.build_flow``
with an in-memory source (the flow's own per-partition decoders) and a sink
that keeps what it is given, a fixed clock and monotonic clock, the committed
model, a fresh state directory and ``bytewax.testing.run_main``. It uses
``build_flow``'s keyword interface, the decoder factory it hands to
``make_source`` (``decode`` a list of ``RawRecord``, ``idle``) and the output
messages' ``topic``, ``key``, ``value``, ``origin`` and ``position``; an engine
that changes those changes this module, which must still drive the pinned
commit (``tests/golden/regenerate.py`` runs it there).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from tests.golden.inputs import NOW_MS, GoldenInputs, Record, quarantine_ledger

BATCH = 1000  # records per source batch, as the Kafka source's default poll
SHARDS = 2  # card and merchant shards (one worker): routing between shards is exercised


@dataclass(frozen=True, slots=True)
class Output:
    """One produced message, as the sink saw it."""

    topic: str
    key: bytes | None
    value: bytes
    origin: str
    position: int


class _Source(FixedPartitionedSource[Any, None]):
    def __init__(self, inputs: GoldenInputs, decoder: Any) -> None:
        self._inputs, self._decoder = inputs, decoder

    def list_parts(self) -> list[str]:
        return list(self._inputs.parts)

    def build_part(self, step_id: str, for_part: str, resume: None) -> _Partition:
        decoder = self._decoder(for_part, for_part.rpartition("#")[0], None)
        return _Partition(for_part, self._inputs.parts[for_part], decoder)


class _Partition(StatefulSourcePartition[Any, None]):
    def __init__(self, source: str, records: list[Record], decoder: Any) -> None:
        from operators.messages import RawRecord

        topic, _, partition = source.rpartition("#")
        self._raw = [
            RawRecord(topic, int(partition), r.offset, r.key, r.value, r.timestamp_ms)
            for r in records
        ]
        self._decoder, self._next, self._idle_sent = decoder, 0, False

    def next_batch(self) -> list[Any]:
        if self._next >= len(self._raw):
            if self._idle_sent:
                raise StopIteration
            self._idle_sent = True  # a finished partition must not hold the watermark back
            return [self._decoder.idle()]
        chunk = self._raw[self._next : self._next + BATCH]
        self._next += len(chunk)
        return [self._decoder.decode(chunk)]

    def snapshot(self) -> None:
        return None


class _Sink(DynamicSink[Any]):
    def __init__(self) -> None:
        self.outputs: list[Output] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SinkPartition:
        return _SinkPartition(self.outputs)


class _SinkPartition(StatelessSinkPartition[Any]):
    def __init__(self, outputs: list[Output]) -> None:
        self._outputs = outputs

    def write_batch(self, items: list[Any]) -> None:
        for _key, messages in items:
            self._outputs.extend(
                Output(m.topic, m.key, m.value, m.origin, m.position) for m in messages
            )


@contextmanager
def _defaults_only() -> Iterator[None]:
    """No ``STREAMSCORE_*`` variable of the caller's environment reaches the settings."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("STREAMSCORE_")}
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)


def run_flow(inputs: GoldenInputs) -> list[Output]:
    """Every message the flow produces for ``inputs``, in the order the sink got them."""
    from prometheus_client import CollectorRegistry

    from flows.dataflow import build_flow
    from flows.main import load_models
    from operators.metrics import ServiceMetrics
    from schemas.settings import Settings
    from state.rocksdb import ProcessStore

    with tempfile.TemporaryDirectory(prefix="streamscore-golden-") as tmp:
        state_dir = Path(tmp)
        (state_dir / "quarantine.json").write_text(json.dumps(quarantine_ledger()))
        with _defaults_only():
            settings = Settings(state_dir=state_dir, metrics_port=0, shards=SHARDS)
        metrics = ServiceMetrics.create(CollectorRegistry())
        store = ProcessStore(state_dir, 0, fresh=True)
        sink = _Sink()
        flow = build_flow(
            settings,
            models=load_models(settings, metrics),
            metrics=metrics,
            store=store,
            clock=lambda: NOW_MS,
            monotonic=lambda: 0.0,
            stop_at_eof=True,
            make_source=lambda decoder: _Source(inputs, decoder),
            sink=sink,
        )
        try:
            run_main(flow)  # type: ignore[no-untyped-call]
        finally:
            store.close()
        return sink.outputs
