"""Prometheus metrics and health endpoints, served on loopback or a unix socket.

Off by default (``--metrics-listen``): a hypervisor's controller should expose nothing it
was not asked to. When on, one small HTTP server answers:

- ``/metrics``: reconciles by kind and result, their durations, retries, the queue depth,
  drifted objects, whether libvirt and OVSDB are connected, the last successful resync;
- ``/healthz``: 200 while the worker threads live (the process is worth keeping);
- ``/readyz``: 200 once the manifests are loaded and libvirt answers (worth relying on).

Values that live elsewhere (queue depth, connections, drift) are read when scraped, so
nothing runs between scrapes.
"""

from __future__ import annotations

import os
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "kvmrec_reconciles",
            "Reconciles by kind and result",
            ["kind", "result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "kvmrec_reconcile_duration_seconds",
            "Duration of successful reconciles",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.retries = Counter(
            "kvmrec_retries",
            "Reconciles that failed and were queued again",
            ["kind"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "kvmrec_queue_depth", "Keys ready to be reconciled", registry=self.registry
        )
        self.drifted = Gauge(
            "kvmrec_drifted_objects",
            "Objects whose live state differs from the manifest",
            registry=self.registry,
        )
        self.up = Gauge(
            "kvmrec_backend_up",
            "Whether a backend is connected",
            ["backend"],
            registry=self.registry,
        )
        self.last_resync = Gauge(
            "kvmrec_last_resync_timestamp_seconds",
            "When the last periodic resync ran",
            registry=self.registry,
        )
        # The labelled series, by label values: prometheus_client looks each one up under a
        # lock, and every reconcile counts in two or three.
        self._series: dict[tuple[object, ...], Any] = {}

    def _labelled(self, metric: Any, *values: str) -> Any:
        key = (metric, *values)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(*values)
        return series

    def observe(self, kind: str, result: str, duration: float | None) -> None:
        self._labelled(self.reconciles, kind, result).inc()
        if result == "error":
            self._labelled(self.retries, kind).inc()
        if duration is not None:
            self._labelled(self.duration, kind).observe(duration)

    def bind(
        self,
        *,
        queue_depth: Callable[[], float],
        drifted: Callable[[], float],
        backends: dict[str, Callable[[], bool]],
    ) -> None:
        """Read these when scraped."""
        self.queue_depth.set_function(queue_depth)
        self.drifted.set_function(drifted)
        for name, connected in backends.items():
            self.up.labels(name).set_function(_as_number(connected))


def _as_number(flag: Callable[[], bool]) -> Callable[[], float]:
    return lambda: 1.0 if flag() else 0.0


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:
        server = self.server
        if self.path == "/metrics":
            self._send(200, generate_latest(server.metrics.registry), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            ok = server.healthy()
            self._send(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n", "text/plain")
        elif self.path == "/readyz":
            ok = server.ready()
            self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every few seconds would drown the service's own log


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self) -> tuple[Any, Any]:
        request, _ = super().get_request()
        return request, ("local", 0)  # BaseHTTPRequestHandler wants a (host, port)


class Endpoint:
    """The HTTP server, on ``127.0.0.1:PORT`` (or ``HOST:PORT``) or ``unix:/path``."""

    def __init__(
        self,
        listen: str,
        metrics: Metrics,
        *,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
    ) -> None:
        self.listen = listen
        server: Any
        if listen.startswith("unix:"):
            path = Path(listen.removeprefix("unix:"))
            path.unlink(missing_ok=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            server = _UnixHTTPServer(str(path), _Handler)
            os.chmod(path, 0o660)
        else:
            host, _, port = listen.rpartition(":")
            server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), _Handler)
            server.daemon_threads = True
        server.metrics = metrics
        server.healthy = healthy
        server.ready = ready
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="kvmrec-metrics", daemon=True
        )

    @property
    def address(self) -> str:
        if self.listen.startswith("unix:"):
            return self.listen
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self.listen.startswith("unix:"):
            Path(self.listen.removeprefix("unix:")).unlink(missing_ok=True)
