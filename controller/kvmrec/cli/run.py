"""``kvmrec run``: the long-running service, or one converging pass with ``--once``.

Settings come from the flags over the environment over the configuration file
(kvmrec/config.py), as every other command finds them (cli/where.py). Before the
store is opened, the state file's lock is taken (store/lock.py): a second ``run`` on the
same state exits 1 at once. The service itself runs under kvmrec/daemon.py (signals,
systemd notifications, watchdog, reload on SIGHUP); a SIGTERM before the daemon listens
ends start-up cleanly between its steps (kvmrec/early_stop.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from kvmrec import config, early_stop, logs
from kvmrec.backends.errors import Unavailable
from kvmrec.cli import fleet_host, report, safety, where
from kvmrec.cli.progress import Progress
from kvmrec.daemon import Daemon
from kvmrec.service import Service
from kvmrec.settings import Settings
from kvmrec.store.base import StoreError
from kvmrec.store.lock import StateLock

log = logging.getLogger(__name__)


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "run", help="watch the manifests and keep the host converged"
    )
    where.add_manifests(parser)
    parser.add_argument(
        "--connect",
        default=None,
        help="libvirt URI (default $LIBVIRT_DEFAULT_URI or qemu:///system)",
    )
    where.add_state(parser, "sqlite state file", store=True)
    fleet_host.add_options(parser)
    parser.add_argument("--resync", type=float, default=Settings.resync, metavar="SECONDS")
    parser.add_argument("--ovsdb", default=Settings.ovsdb, help="OVSDB socket")
    parser.add_argument("--workers", type=int, default=Settings.workers)
    parser.add_argument(
        "--stop-grace-period",
        type=float,
        default=Settings.stop_grace_period,
        metavar="SECONDS",
        help="how long a guest asked to power off gets before it is destroyed (default "
        f"{Settings.stop_grace_period:g}; a Domain's terminationGracePeriodSeconds overrides)",
    )
    parser.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="let one pass delete most managed objects at once",
    )
    safety.add_insecure_manifests(parser)
    safety.add_disk_options(parser)
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
    config.add_option(parser)  # last: it tracks the flags added above
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.once:
        early_stop.release()  # a command: SIGTERM and Ctrl-C end it as they end any other
    if _stop_requested():
        return 0
    flags = where.flags_of(args)
    try:
        resolved = config.resolve(args, flags)
    except config.ConfigError as exc:
        print(f"kvmrec run: {exc}", file=sys.stderr)
        return 1
    settings = resolved.settings
    problem = fleet_host.problem(settings)
    if problem is not None:
        print(f"kvmrec run: {problem}", file=sys.stderr)
        return 1
    if settings.resync <= 0 or settings.workers < 1 or settings.stop_grace_period < 0:
        print(
            "kvmrec run: resync must be positive, workers at least 1 and the stop grace "
            "period not negative",
            file=sys.stderr,
        )
        return 1
    logs.setup(resolved.log_level, resolved.log_format)
    if _stop_requested():
        return 0
    try:
        # A state file has one controller; a fleet's store fences its hosts by their leases.
        lock: AbstractContextManager[object] = (
            StateLock.acquire(settings.state) if settings.store is None else nullcontext()
        )
    except StoreError as exc:
        print(f"kvmrec run: {exc}", file=sys.stderr)
        return 1
    with lock:
        if _stop_requested():
            return 0
        try:
            service = Service(settings)
        except StoreError as exc:
            print(f"kvmrec run: {exc}", file=sys.stderr)
            return 1
        if args.once:
            return _once(service, args.timeout)
        return Daemon(service, resolved, lambda: config.resolve(args, flags)).run()


def _stop_requested() -> bool:
    """Whether SIGTERM or SIGINT came before the daemon listens (kvmrec/early_stop.py):
    then start-up ends here, having written nothing."""
    signum = early_stop.requested()
    if signum is not None:
        early_stop.log_stop(signum)
    return signum is not None


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
