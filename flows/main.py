"""Process entry point: settings, metrics endpoint, model, then the dataflow.

``streamscore run`` calls :func:`start_service`; bytewax's own runner works too::

    python -m bytewax.run "flows.main:get_flow()"

reading settings from ``STREAMSCORE_*`` env vars.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from bytewax.dataflow import Dataflow
from prometheus_client import CollectorRegistry, start_http_server

from flows.dataflow import build_flow
from models.onnx_scorer import load_model
from schemas.settings import Settings, load_settings
from state.rocksdb import ProcessStore

log = logging.getLogger(__name__)


def start_service(
    settings: Settings, *, process_id: int = 0, stop_at_eof: bool = False
) -> Dataflow:
    """Load the model, serve metrics (port + process id), trap SIGINT/SIGTERM, build the flow.

    The first signal ends the input so the flow finishes its epoch and exits;
    a second one interrupts at once.
    """
    model = load_model(settings.model_dir)
    registry = CollectorRegistry()
    if settings.metrics_port:
        port = settings.metrics_port + process_id
        start_http_server(port, addr=settings.metrics_host, registry=registry)
        log.info("metrics at http://%s:%d/metrics", settings.metrics_host, port)
    log.info(
        "model %s (%s features), reading %s from %s",
        model.manifest.model_version,
        len(model.manifest.feature_names),
        settings.topics.transactions,
        settings.bootstrap_servers,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("%s: finishing the current epoch, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    store = ProcessStore(settings.state_dir, process_id, fresh=True)
    return build_flow(
        settings, model=model, registry=registry, store=store, stop_at_eof=stop_at_eof, stop=stop
    )


def get_flow() -> Dataflow:
    """Build the flow from environment settings, for ``python -m bytewax.run``."""
    logging.basicConfig(level=logging.INFO)
    return start_service(load_settings())
