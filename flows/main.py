"""Process entry point: settings, metrics endpoint, models, state, then the dataflow.

``streamscore run`` calls :func:`start_service`; bytewax's own runner works too::

    python -m bytewax.run "flows.main:get_flow()"

reading settings from ``STREAMSCORE_*`` env vars.
"""

from __future__ import annotations

import atexit
import gc
import logging
import signal
import threading
import time
from types import FrameType

from bytewax.dataflow import Dataflow
from prometheus_client import CollectorRegistry, Gauge, GCCollector, ProcessCollector

from flows.dataflow import build_flow
from flows.health import Readiness, serve
from flows.kafka_check import KafkaProbe, await_kafka, check_client_settings
from flows.malloc import tune_malloc
from models.onnx_scorer import OnnxModel
from models.registry import DeploymentConfig, ModelRegistry, RegistryEvents, Role
from operators.metrics import ServiceMetrics
from schemas.errors import ConfigError, DiskFullError, StateError
from schemas.settings import Settings, load_settings
from state.rocksdb import ProcessStore, check_writable, is_disk_full

log = logging.getLogger(__name__)


class MetricEvents(RegistryEvents):
    """Reports model loads and refusals as metrics."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics
        self._serving: dict[Role, str] = {}

    def loaded(self, role: Role, model: OnnxModel | None) -> None:
        """``streamscore_model_info{role, model_version}`` is 1 for what serves now."""
        old = self._serving.pop(role, None)
        if old is not None:
            self._metrics.model_info.remove(role, old)
        if model is not None:
            self._serving[role] = model.manifest.model_version
            self._metrics.model_info.labels(role, model.manifest.model_version).set(1)

    def refused(self, role: Role, reason: str, error: str) -> None:
        """Count the refusal by reason."""
        self._metrics.model_load_failures.labels(reason).inc()


def load_models(settings: Settings, metrics: ServiceMetrics) -> ModelRegistry:
    """The model registry for the settings' deployment, reporting to ``metrics``."""
    deployment = DeploymentConfig(
        active=settings.model_dir,
        shadow=settings.shadow_model_dir,
        canary=settings.canary_model_dir,
        canary_share=settings.canary_share,
        reload_interval_s=settings.model_reload_interval_s,
    )
    return ModelRegistry(deployment, clock=time.monotonic, events=MetricEvents(metrics))


# Python's default (700, 10, 10) collects generation 0 every 700 net allocations.
# The flow allocates short-lived, acyclic objects by the million (records, feature
# rows, unpickled card state) that reference counting frees anyway, so collections
# that often would cost a noticeable share of its CPU and find nothing.
GC_THRESHOLDS = (100_000, 50, 100)
# How often :class:`Tenure` moves what survived out of the collector's reach.
TENURE_EVERY_S = 0.1


def tune_gc() -> None:
    """Freeze what startup allocated (models, modules) and collect far less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Tenure:
    """Every ``every_s``, moves all tracked objects out of the cyclic collector's generations.

    Window state lives for hours in cached cards, merchant windows and monitors,
    all of it containers the collector tracks. A generation-0 collection walks
    every young object that survived since the last one, and updates of old
    state keep adding young objects without raising the allocation count that
    triggers it, so its pauses would grow with the card cache (and show in the
    latency tail), and collections of the older generations would walk the
    whole state. ``gc.freeze()`` moves every tracked
    object to the permanent generation in constant time, so a collection only
    ever sees what the last ``every_s`` allocated. Frozen objects are still
    freed by reference counting; what is lost is the collection of reference
    cycles that outlive one interval, and the flow's per-record paths make
    none (``tests/unit/flows/test_main.py`` holds it to that).
    """

    def __init__(self, every_s: float = TENURE_EVERY_S) -> None:
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamscore-tenure", daemon=True)

    def start(self) -> Tenure:
        """Start tenuring in a daemon thread; returns ``self``."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop tenuring (what is frozen stays frozen)."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            gc.freeze()


def process_metrics(registry: CollectorRegistry) -> None:
    """Register the process's own figures: CPU, memory, collections, tenured objects.

    prometheus-client's process and GC collectors (``process_*``, ``python_gc_*``),
    and ``streamscore_gc_tenured_objects``: what :class:`Tenure` has frozen. It
    follows the window state up and down; if it only ever grows while the state
    does not, something makes reference cycles that are never collected.
    """
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    tenured = Gauge(
        "streamscore_gc_tenured_objects",
        "Objects moved out of the cyclic collector's generations (gc.get_freeze_count())",
        registry=registry,
    )
    tenured.set_function(gc.get_freeze_count)


STATE_DIR_SETTING = "STREAMSCORE_STATE_DIR (--state-dir)"


def open_state(settings: Settings, process_id: int) -> ProcessStore:
    """The process's state store, opened and write-checked now rather than at the first record.

    It is closed when the interpreter exits: RocksDB's background threads must
    stop before the process's C++ objects are destroyed, or a flush still
    running then crashes the process (SIGSEGV) after the flow has finished.

    A state dir that cannot be used is a configuration error naming the setting;
    a full disk is reported as such (:class:`~schemas.errors.DiskFullError`).
    """
    store = ProcessStore(settings.state_dir, process_id, fresh=settings.recovery_dir is None)
    atexit.register(_close_at_exit, store)
    try:
        check_writable(settings.state_dir)
        store()
    except DiskFullError:
        raise
    except (OSError, StateError) as exc:
        if is_disk_full(exc):
            raise DiskFullError(
                f"no space left on the device holding the state dir {settings.state_dir}: "
                "free space there and start again"
            ) from None
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            STATE_DIR_SETTING,
            f"cannot write RocksDB state under {settings.state_dir} ({cause}); "
            "point it at a writable directory",
        ) from None
    return store


def _close_at_exit(store: ProcessStore) -> None:
    # Closing flushes the memtable, which on a full disk fails after the flow has
    # already reported why it stopped: no second report with a traceback. A resumable
    # store has its writes in the WAL; a fresh one is discarded at the next start.
    try:
        store.close()
    except Exception as exc:  # rocksdict raises plain Exception for RocksDB errors
        log.warning("the state store was not closed cleanly: %s", exc)


def start_service(
    settings: Settings, *, process_id: int = 0, workers: int = 1, stop_at_eof: bool = False
) -> Dataflow:
    """Serve metrics and health (port + process id), load models, await Kafka, build the flow.

    Before the flow is built, Kafka is checked (:func:`flows.kafka_check.await_kafka`):
    client settings, credentials, certificates, topics and ACLs, each failure a
    ConfigError naming the setting.

    ``workers`` is the cluster's bytewax worker count (processes x workers each).

    The first signal ends the input so the flow finishes its epoch and exits (before
    the flow is built: the process exits 0); a second one interrupts at once.
    """
    stop = threading.Event()
    tune_malloc()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("%s: finishing the current epoch, then stopping", signal.Signals(signum).name)
        stop.set()

    # First: a signal before the flow runs (say, while the broker is awaited) ends the
    # process with status 0, as one during the run does after its epoch.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    registry = CollectorRegistry()
    metrics = ServiceMetrics.create(registry)
    process_metrics(registry)
    check_client_settings(settings)
    store = open_state(settings, process_id)
    loaded: list[ModelRegistry] = []
    readiness = Readiness(
        kafka=KafkaProbe(settings),
        model_loaded=lambda: None if loaded else "the active model is loading",
    )
    if settings.metrics_port:
        # Before the model and the broker: /healthz answers while they are awaited.
        port = settings.metrics_port + process_id
        serve(
            registry,
            readiness,
            host=settings.metrics_host,
            port=port,
            base_port=settings.metrics_port,
        )
        log.info("metrics, /healthz and /readyz at http://%s:%d", settings.metrics_host, port)
    models = load_models(settings, metrics)
    loaded.append(models)
    await_kafka(settings, stop=stop)
    if stop.is_set():
        log.info("stopped before the flow started")
        raise SystemExit(0)
    log.info(
        "model %s, reading %s and %s from %s (%s)",
        models.active.manifest.model_version,
        settings.topics.transactions,
        settings.topics.chargebacks,
        settings.bootstrap_servers,
        settings.security_protocol,
    )
    tune_gc()
    Tenure().start()
    return build_flow(
        settings,
        models=models,
        metrics=metrics,
        store=store,
        stop_at_eof=stop_at_eof,
        stop=stop,
        process_id=process_id,
        workers=workers,
        on_poll=readiness.polled,
    )


def get_flow() -> Dataflow:
    """Build the flow from environment settings, for ``python -m bytewax.run``."""
    logging.basicConfig(level=logging.INFO)
    return start_service(load_settings())
