"""``kvmrec run``: the long-running service, or one converging pass with ``--once``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kvmrec.backends.hypervisor import Unavailable
from kvmrec.cli import report
from kvmrec.cli.progress import Progress
from kvmrec.service import Service
from kvmrec.settings import Settings, default_uri
from kvmrec.store.base import StoreError

log = logging.getLogger(__name__)


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "run", help="watch the manifests and keep the host converged"
    )
    parser.add_argument("--manifests", type=Path, default=Settings.manifests)
    parser.add_argument(
        "--connect",
        default=None,
        help="libvirt URI (default $LIBVIRT_DEFAULT_URI or qemu:///system)",
    )
    parser.add_argument("--state", type=Path, default=Settings.state, help="sqlite state file")
    parser.add_argument("--resync", type=float, default=Settings.resync, metavar="SECONDS")
    parser.add_argument("--ovsdb", default=Settings.ovsdb, help="OVSDB socket")
    parser.add_argument("--workers", type=int, default=Settings.workers)
    parser.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="let one pass delete most managed objects at once",
    )
    # Also accepted before the command (`kvmrec --log-format json run`); SUPPRESS keeps this
    # parser from overwriting that value with a default of its own.
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=argparse.SUPPRESS,
        help="log lines for people (text) or for log pipelines (json)",
    )
    parser.add_argument(
        "--metrics-listen",
        default=None,
        metavar="ADDR",
        help="serve /metrics, /healthz, /readyz on 127.0.0.1:PORT or unix:/PATH (off by default)",
    )
    parser.add_argument(
        "--once", action="store_true", help="converge once, print the status and exit with its code"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="with --once: how long to wait for convergence (default 300)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.resync <= 0 or args.workers < 1:
        print("kvmrec run: --resync must be positive and --workers at least 1", file=sys.stderr)
        return 1
    settings = Settings(
        manifests=args.manifests,
        connect=args.connect or default_uri(),
        state=args.state,
        ovsdb=args.ovsdb,
        resync=args.resync,
        workers=args.workers,
        allow_mass_delete=args.allow_mass_delete,
        metrics_listen=args.metrics_listen,
    )
    try:
        service = Service(settings)
    except StoreError as exc:
        print(f"kvmrec run: {exc}", file=sys.stderr)
        return 1
    if args.once:
        return _once(service, args.timeout)
    return _forever(service)


def _once(service: Service, timeout: float) -> int:
    try:
        service.start(watch=False)
    except Unavailable as exc:
        print(f"kvmrec run: {exc}", file=sys.stderr)
        service.stop()
        return 1
    progress = Progress("converging")
    converged = service.converge(timeout, progress.update)
    progress.close()
    result = report.build(service.store)
    service.stop()
    print(report.table(result))
    if not converged:
        print(f"kvmrec run: not converged after {timeout:g}s", file=sys.stderr)
    return report.exit_code(result)


def _forever(service: Service) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start(watch=True)
    log.info(
        "kvmrec running: manifests %s, libvirt %s, state %s",
        service.settings.manifests,
        service.settings.connect,
        service.settings.state,
    )
    while not stop.wait(3600):
        pass
    started = time.monotonic()
    drained = service.stop()
    log.info(
        "stopped in %.1fs%s",
        time.monotonic() - started,
        "" if drained else " (some reconciles did not finish; the next start resumes them)",
    )
    return 0
