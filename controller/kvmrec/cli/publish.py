"""``kvmrec publish --manifests DIR --store URL``: a directory feeds a store; nothing else.

A long-running service (sources/publishing.py) for the management host of a fleet: it
watches the directory exactly as ``kvmrec run`` does and writes what it finds into the
store, but reconciles nothing. ``--once`` publishes one scan and exits: 0 when every file
was taken, 2 when a file is invalid (it keeps its last good state, as in the service) or
the mass-delete guard held deletions back, 1 when the store cannot be used.

As a service: ``READY=1`` to systemd once the first scan is published (``Type=notify``),
a ``STATUS=`` line, ``WATCHDOG=1`` when the unit asks for it; SIGHUP rescans (what
``kvmrec prune`` sends to the holder of a state file); SIGTERM and SIGINT end it, exit 0.
On a state file it holds the file's lock, as ``run`` does: one writer of desired state.
The signals are taken synchronously (blocked, then waited for), so no handler ever runs
in the middle of the main thread's work, and the watch's threads never see them.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from kvmrec import config, early_stop, logs, systemd
from kvmrec.cli import safety, where
from kvmrec.sources.manifests import GUARD_SOURCE, SyncResult
from kvmrec.sources.publishing import Publisher
from kvmrec.store.base import StoreError
from kvmrec.store.lock import StateLock

log = logging.getLogger(__name__)

STATUS_EVERY = 10.0  # seconds, as the daemon of `run`
_STOP = (signal.SIGTERM, signal.SIGINT)
_HANDLED = (*_STOP, signal.SIGHUP)


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "publish",
        help="keep a store's desired state from a manifest directory (reconciles nothing)",
    )
    where.add_manifests(parser)
    where.add_state(parser, store=True)
    parser.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="let one pass delete most published objects at once",
    )
    safety.add_insecure_manifests(parser)
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=argparse.SUPPRESS,
        help="log lines for people (text) or for log pipelines (json)",
    )
    parser.add_argument(
        "--once", action="store_true", help="publish one scan and exit (2 if a file is invalid)"
    )
    config.add_option(parser)  # last: it tracks the flags added above
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.once:
        early_stop.release()  # a command: the signals end it as they end any other
    if _stop_requested():
        return 0
    try:
        resolved = where.cli_config(args)
    except config.ConfigError as exc:
        print(f"kvmrec publish: {exc}", file=sys.stderr)
        return 1
    settings = resolved.settings
    logs.setup(resolved.log_level, resolved.log_format)
    try:
        lock: AbstractContextManager[object] = (
            StateLock.acquire(settings.state) if settings.store is None else nullcontext()
        )
        with lock:
            store = where.open_store(args, settings)
            if store is None:
                return 1
            try:
                publisher = Publisher(settings, store)
                return _once(publisher) if args.once else _serve(publisher)
            finally:
                store.close()
    except StoreError as exc:
        print(f"kvmrec publish: {exc}", file=sys.stderr)
        return 1


def _stop_requested() -> bool:
    signum = early_stop.requested()
    if signum is not None:
        early_stop.log_stop(signum)
    return signum is not None


def _once(publisher: Publisher) -> int:
    result = publisher.once()
    for source, message in sorted(result.errors.items()):
        print(f"kvmrec publish: {source}: {message}", file=sys.stderr)
    print(_summary(publisher, result))
    return 2 if result.errors else 0


def _summary(publisher: Publisher, result: SyncResult) -> str:
    objects = len(publisher.store.keys())
    files = sum(1 for source in result.errors if source != GUARD_SOURCE)
    held = f", {result.refused} deletions held back" if result.refused else ""
    return (
        f"{objects} objects published from {publisher.settings.manifests}: "
        f"{len(result.changed)} changed, {len(result.deleting)} to delete, "
        f"{files} files in error{held}"
    )


def _serve(publisher: Publisher) -> int:
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
    try:
        if _stop_requested():  # noted by early_stop before the signals were blocked
            return 0
        publisher.start()
        settings = publisher.settings
        log.info(
            "kvmrec publishing: manifests %s into %s", settings.manifests, settings.store_location
        )
        status = _status(publisher)
        systemd.notify(f"READY=1\nSTATUS={status}")
        if early_stop.reload_requested():
            publisher.rescan()
        watchdog = systemd.watchdog_interval()
        every = min(STATUS_EVERY, watchdog / 2) if watchdog else STATUS_EVERY
        while True:
            if watchdog:
                systemd.notify("WATCHDOG=1")
            received = signal.sigtimedwait(_HANDLED, every)
            if received is not None and received.si_signo in _STOP:
                log.info("%s: stopping", signal.Signals(received.si_signo).name)
                systemd.notify("STOPPING=1\nSTATUS=stopping")
                return 0
            if received is not None:
                log.info("SIGHUP: rescanning the manifests")
                publisher.rescan()
            now = _status(publisher)
            if now != status:
                status = now
                systemd.notify(f"STATUS={status}")
    finally:
        publisher.stop()
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _status(publisher: Publisher) -> str:
    try:
        objects = len(publisher.store.keys())
        errors = len(publisher.store.source_errors())
    except StoreError as exc:  # the store is briefly unavailable: say so, go on
        return f"status unavailable: {exc}"
    return f"{objects} objects published, {errors} manifest errors"
