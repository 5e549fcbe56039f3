"""The metrics port: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (ready to score).

``/healthz`` answers 200 while the process serves HTTP at all: an orchestrator
restarts the process when it stops answering. ``/readyz`` answers 200 only when
every check of :class:`Readiness` passes -- the broker answers, every configured
topic exists, the active model is loaded and the source polled Kafka within
``CONSUMING_WITHIN_S`` -- and 503 otherwise; both bodies are JSON naming each check.
A process is not ready while it waits for the broker at startup, while the broker
is away, or while its worker is stuck (no poll).

A port that cannot be bound is a :class:`~schemas.errors.ConfigError` naming
``STREAMSCORE_METRICS_PORT``/``STREAMSCORE_METRICS_HOST``, not a traceback.
"""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from prometheus_client import CollectorRegistry, make_wsgi_app

from schemas.errors import ConfigError

# bytewax polls each source partition many times a second, idle or not; this long
# without a poll means the worker is stuck (or busy elsewhere for that long).
CONSUMING_WITHIN_S = 10.0

# (name, problem or None) for each check.
Check = Callable[[], dict[str, str | None]]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Readiness:
    """The checks behind ``/readyz``; the source reports polls through :meth:`polled`."""

    def __init__(
        self,
        *,
        kafka: Check,
        model_loaded: Callable[[], str | None],
        clock: Callable[[], float] = time.monotonic,
        consuming_within_s: float = CONSUMING_WITHIN_S,
    ) -> None:
        self._kafka = kafka
        self._model_loaded = model_loaded
        self._clock = clock
        self._within = consuming_within_s
        self._last_poll: float | None = None

    def polled(self) -> None:
        """The source has just polled Kafka."""
        self._last_poll = self._clock()

    def check(self) -> dict[str, str | None]:
        """Each check's problem, or None where it passes."""
        checks = dict(self._kafka())
        checks["model"] = self._model_loaded()
        if self._last_poll is None:
            checks["consuming"] = "the source has not polled Kafka yet"
        else:
            ago = self._clock() - self._last_poll
            stale = ago > self._within
            checks["consuming"] = f"no poll of Kafka for {ago:.0f} s" if stale else None
        return checks


class PolledSource(FixedPartitionedSource[Any, Any]):
    """A source whose partitions call ``on_poll`` whenever bytewax polls them."""

    def __init__(self, inner: FixedPartitionedSource[Any, Any], on_poll: Callable[[], None]):
        self._inner = inner
        self._on_poll = on_poll

    def list_parts(self) -> list[str]:
        """The wrapped source's partitions."""
        return self._inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _PolledPartition:
        """The wrapped source's partition, reporting its polls."""
        return _PolledPartition(
            self._inner.build_part(step_id, for_part, resume_state), self._on_poll
        )


class _PolledPartition(StatefulSourcePartition[Any, Any]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any], on_poll: Callable[[], None]):
        self._inner = inner
        self._on_poll = on_poll

    def next_batch(self) -> Iterable[Any]:
        self._on_poll()
        return self._inner.next_batch()

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: Prometheus and the orchestrator call every few seconds."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def _json(start: StartResponse, status: str, body: dict[str, Any]) -> Iterable[bytes]:
    data = json.dumps(body, sort_keys=True).encode() + b"\n"
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def health_app(
    registry: CollectorRegistry, readiness: Readiness
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI app of the metrics port."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            result: Iterable[bytes] = metrics(environ, start)
            return result
        if path == "/healthz":
            return _json(start, "200 OK", {"alive": True})
        if path == "/readyz":
            checks = readiness.check()
            ready = all(problem is None for problem in checks.values())
            status = "200 OK" if ready else "503 Service Unavailable"
            return _json(start, status, {"ready": ready, "checks": checks})
        return _json(start, "404 Not Found", {"error": "try /metrics, /healthz or /readyz"})

    return app


def serve(
    registry: CollectorRegistry, readiness: Readiness, *, host: str, port: int, base_port: int
) -> WSGIServer:
    """Serve the metrics port from a daemon thread; ConfigError if it cannot be bound.

    ``base_port`` is ``STREAMSCORE_METRICS_PORT`` (``port`` adds the process id).
    """
    where = f"{host}:{port}"
    if port != base_port:
        where += f" (STREAMSCORE_METRICS_PORT {base_port} + process id {port - base_port})"
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except OSError as exc:
        problem = f"cannot resolve {host!r} ({exc.strerror}); give an address of this host"
        raise ConfigError("STREAMSCORE_METRICS_HOST (--metrics-host)", problem) from None

    class Server(_Server):
        address_family = family

    try:
        httpd = make_server(
            host, port, health_app(registry, readiness), Server, handler_class=_Quiet
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            problem = (
                f"{where} is already in use by another process; "
                "choose a free port, stop the other process, or 0 for no endpoint"
            )
            raise ConfigError("STREAMSCORE_METRICS_PORT (--metrics-port)", problem) from None
        if exc.errno == errno.EACCES:
            problem = f"no permission to listen on {where}; use a port above 1023"
            raise ConfigError("STREAMSCORE_METRICS_PORT (--metrics-port)", problem) from None
        problem = f"cannot listen on {where}: {exc.strerror or exc}"
        raise ConfigError("STREAMSCORE_METRICS_HOST (--metrics-host)", problem) from None
    threading.Thread(target=httpd.serve_forever, name="streamscore-http", daemon=True).start()
    return httpd
